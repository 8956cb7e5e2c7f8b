"""StreamPipeline session life cycle through grpc.aio against the real binary."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
from google.rpc import error_details_pb2, status_pb2

from conftest import RunningServer
from helpers import f32, manifest, node, samples
from remotemedia_client import AsyncClient, pb


def gain_manifest() -> pb.PipelineManifest:
    return manifest([node("src", "PassThroughNode"), node("gain", "GainNode", gain=2.0)], [("src", "gain")])


def chunk(seq: int, x: np.ndarray) -> pb.StreamRequest:
    return pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="src", buffer=f32(x), sequence=seq))


def control(cmd: int) -> pb.StreamRequest:
    return pb.StreamRequest(control=pb.StreamControl(command=cmd))


async def drain(call: grpc.aio.StreamStreamCall) -> list[pb.StreamResponse]:
    """Reads responses until the server ends the stream (read/write style, never iteration)."""
    out = []
    try:
        while (resp := await call.read()) is not grpc.aio.EOF:
            out.append(resp)
    except grpc.aio.AioRpcError:
        pass  # the status is read with call.code()
    return out


async def wait_gauge_zero(server: RunningServer, name: str) -> None:
    for _ in range(1_000):
        if server.metric(name) == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} stayed at {server.metric(name)}")


async def test_a_hundred_chunks_in_order_then_close_returns_final_metrics(server: RunningServer) -> None:
    async with AsyncClient(server.address) as client:
        call = client.stream_call()
        await call.write(pb.StreamRequest(manifest=gain_manifest()))
        ready = await call.read()
        assert ready.WhichOneof("response") == "ready" and ready.ready.session_id

        async def send() -> None:
            for seq in range(100):
                await call.write(chunk(seq, np.full(320, seq / 1000, dtype=np.float32)))
            await call.write(control(pb.StreamControl.COMMAND_CLOSE))
            await call.done_writing()

        sender = asyncio.create_task(send())
        results, metrics = [], []
        for resp in await drain(call):
            kind = resp.WhichOneof("response")
            if kind == "result":
                results.append(resp.result)
            elif kind == "metrics":
                metrics.append(resp.metrics)
        await sender
        assert await call.code() == grpc.StatusCode.OK
    assert [r.sequence for r in results] == list(range(100))
    for r in results:
        np.testing.assert_allclose(samples(r.audio_outputs["gain"]), 2 * r.sequence / 1000, rtol=1e-6)
    assert metrics[-1].chunks_processed == 100
    assert metrics[-1].total_samples == 32_000


async def test_cancel_ends_with_cancelled_and_frees_the_session(server: RunningServer) -> None:
    async with AsyncClient(server.address) as client:
        call = client.stream_call()
        await call.write(pb.StreamRequest(manifest=gain_manifest()))
        await call.read()
        await call.write(chunk(1, np.zeros(160, dtype=np.float32)))
        assert (await call.read()).result.sequence == 1
        await call.write(control(pb.StreamControl.COMMAND_CANCEL))
        await drain(call)
        assert await call.code() == grpc.StatusCode.CANCELLED
    await wait_gauge_zero(server, "remotemedia_active_streams")


async def test_a_vanishing_client_leaves_no_session(server: RunningServer) -> None:
    client = AsyncClient(server.address)
    call = client.stream_call()
    await call.write(pb.StreamRequest(manifest=gain_manifest()))
    await call.read()
    await call.write(chunk(0, np.zeros(160, dtype=np.float32)))
    await call.read()
    assert server.metric("remotemedia_active_streams") == 1
    await client.close()
    await wait_gauge_zero(server, "remotemedia_active_streams")


async def test_a_chunk_before_the_manifest_is_refused(server: RunningServer) -> None:
    async with AsyncClient(server.address) as client:
        call = client.stream_call()
        await call.write(chunk(0, np.zeros(4, dtype=np.float32)))
        errors = [r.error for r in await drain(call) if r.WhichOneof("response") == "error"]
        assert await call.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "must be the manifest" in errors[0].message


async def test_a_chunk_for_a_node_that_takes_no_audio_ends_the_stream_like_a_wrong_node_id(server: RunningServer) -> None:
    # TextToSpeechNode takes text on `data` only: its chunk cannot be run, so the stream ends
    # with INVALID_ARGUMENT naming the node's ports, as a chunk for an unknown node does.
    for node_id, says in [
        ("tts", "node `tts` (TextToSpeechNode) has no input port `input`; its input ports are: data"),
        ("ghost", "not a node of this pipeline"),
    ]:
        async with AsyncClient(server.address) as client:
            call = client.stream_call()
            await call.write(pb.StreamRequest(manifest=manifest([node("tts", "TextToSpeechNode")])))
            await call.write(pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=node_id, buffer=f32(np.zeros(160)), sequence=0)))
            errors = [r.error for r in await drain(call) if r.WhichOneof("response") == "error"]
            assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT, node_id
        assert len(errors) == 1 and says in errors[0].message, errors
    await wait_gauge_zero(server, "remotemedia_active_streams")


async def test_the_last_sequence_number_is_kept_for_the_flush_and_refused_on_a_chunk(server: RunningServer) -> None:
    # The close's result answers the number after the last chunk's; after 2^64 - 1 it would wrap
    # to 0 and be taken for chunk 0's. The largest number a chunk may carry is 2^64 - 2.
    last = 2**64 - 1
    async with AsyncClient(server.address) as client:
        call = client.stream_call()
        await call.write(pb.StreamRequest(manifest=gain_manifest()))
        await call.write(chunk(last - 1, np.zeros(160, dtype=np.float32)))
        await call.write(control(pb.StreamControl.COMMAND_CLOSE))
        responses = await drain(call)
        assert await call.code() == grpc.StatusCode.OK
        assert [r.result.sequence for r in responses if r.WhichOneof("response") == "result"] == [last - 1]

        call = client.stream_call()
        await call.write(pb.StreamRequest(manifest=gain_manifest()))
        await call.write(chunk(last, np.zeros(160, dtype=np.float32)))
        errors = [r.error for r in await drain(call) if r.WhichOneof("response") == "error"]
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(errors) == 1 and "sequence 2^64 - 1 is kept for the result of the close" in errors[0].message, errors
    await wait_gauge_zero(server, "remotemedia_active_streams")


async def test_tiny_chunks_sent_faster_than_the_pipeline_runs_are_slowed_not_disconnected(server: RunningServer) -> None:
    # 20-sample chunks (100-byte HTTP/2 DATA frames) through a Python node, written as fast as
    # flow control lets them: the unread frames used to exceed h2's allowance for small frames
    # after about 1 500 chunks, and the server closed the connection (GOAWAY ENHANCE_YOUR_CALM,
    # "too_many_data_frames"), so the client saw UNAVAILABLE.
    count = 8_000
    python_gain = manifest([node("src", "GainNode", runtime=pb.RUNTIME_HINT_CPYTHON, gain=2.0)])
    async with AsyncClient(server.address) as client:
        call = client.stream_call()
        await call.write(pb.StreamRequest(manifest=python_gain))

        async def send() -> None:
            for seq in range(count):
                await call.write(chunk(seq, np.full(20, 0.25, dtype=np.float32)))
            await call.write(control(pb.StreamControl.COMMAND_CLOSE))
            await call.done_writing()

        sender = asyncio.create_task(send())
        responses = await drain(call)
        await sender
        assert await call.code() == grpc.StatusCode.OK, await call.details()
    results = [r.result for r in responses if r.WhichOneof("response") == "result"]
    assert [r.sequence for r in results] == list(range(count))


async def test_a_request_that_ends_a_stream_names_its_field_in_band_and_in_bad_request(server: RunningServer) -> None:
    # As a bad manifest does: the in-band context lists the violation, the status's BadRequest too.
    zeros = np.zeros(160, dtype=np.float32)
    torn = pb.AudioBuffer(samples=b"abc", sample_rate=16_000, channels=1, format=pb.AUDIO_FORMAT_F32, num_samples=1)
    unformatted = pb.AudioBuffer(samples=b"\0" * 4, sample_rate=16_000, channels=1, num_samples=1)
    cases = [
        ([chunk(0, zeros)], grpc.StatusCode.FAILED_PRECONDITION, "manifest"),
        ([pb.StreamRequest(manifest=gain_manifest())] * 2, grpc.StatusCode.FAILED_PRECONDITION, "manifest"),
        ([pb.StreamRequest(manifest=gain_manifest()), pb.StreamRequest()], grpc.StatusCode.INVALID_ARGUMENT, "request"),
        (
            [pb.StreamRequest(manifest=gain_manifest()), pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="ghost", buffer=f32(zeros)))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "audio_chunk.node_id",
        ),
        (
            [pb.StreamRequest(manifest=gain_manifest()), pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="src"))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "audio_chunk.buffer",
        ),
        ([pb.StreamRequest(manifest=gain_manifest()), chunk(2**64 - 1, zeros)], grpc.StatusCode.INVALID_ARGUMENT, "audio_chunk.sequence"),
        (
            [pb.StreamRequest(manifest=gain_manifest()), pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="src", buffer=torn))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "audio_chunk.buffer",
        ),
        (
            [pb.StreamRequest(manifest=gain_manifest()), pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="src", buffer=unformatted))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "audio_chunk.buffer.format",
        ),
        ([pb.StreamRequest(manifest=gain_manifest()), control(99)], grpc.StatusCode.INVALID_ARGUMENT, "control.command"),
    ]
    async with AsyncClient(server.address) as client:
        for requests, code, field in cases:
            call = client.stream_call()
            for r in requests:
                await call.write(r)
            errors = [r.error for r in await drain(call) if r.WhichOneof("response") == "error"]
            assert await call.code() == code, field
            assert len(errors) == 1 and errors[0].error_type == pb.ERROR_TYPE_VALIDATION, errors
            assert [v["field"] for v in json.loads(errors[0].context)["violations"]] == [field]
            assert not errors[0].message.startswith("invalid pipeline"), errors[0].message
            details = dict(await call.trailing_metadata())["grpc-status-details-bin"]
            bad = error_details_pb2.BadRequest()
            assert [d.Unpack(bad) for d in status_pb2.Status.FromString(details).details if d.Is(bad.DESCRIPTOR)] == [True], field
            assert [v.field for v in bad.field_violations] == [field]
    await wait_gauge_zero(server, "remotemedia_active_streams")
