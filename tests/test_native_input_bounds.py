"""Native nodes on input a client chose to be awkward: a stream whose layout changes, rates
whose work is unbounded, a tiny input whose setup is long. Each is refused or bounded the way
the contract promises (VALIDATION, or RESOURCE_LIMIT at the time limit), never run blindly."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from conftest import RunningServer, start_server
from helpers import f32, manifest, node
from remotemedia_client import Client, Pipeline, ResourceLimitError, pb
from remotemedia_client import Node as ClientNode


def stream_errors(server: RunningServer, nodes: list[pb.NodeManifest], *buffers: pb.AudioBuffer) -> list[pb.ErrorResponse]:
    """Streams `buffers` into the first node, then closes; the in-band errors. The first chunk
    fixes the layout, so its result must come back."""
    requests = [pb.StreamRequest(manifest=manifest(nodes, [(a.id, b.id) for a, b in zip(nodes, nodes[1:])]))]
    requests += [pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=nodes[0].id, buffer=b, sequence=i)) for i, b in enumerate(buffers)]
    requests.append(pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE)))
    errors, results = [], []
    with Client(server.address) as client:
        for resp in client.stream_call(iter(requests), timeout=30):
            if resp.WhichOneof("response") == "error":
                errors.append(resp.error)
            elif resp.WhichOneof("response") == "result":
                results.append(resp.result.sequence)
    assert results == [0], results
    return errors


@pytest.mark.parametrize(
    "stage",
    [
        node("n", "GainNode", gain_db=-6.0),
        node("n", "FormatConverterNode", target_format="i16"),
        node("n", "ChannelMixerNode", output_channels=1),
    ],
    ids=lambda n: n.node_type,
)
@pytest.mark.parametrize("change", ["rate", "channels"])
def test_a_chunk_of_another_layout_is_a_validation_error(server: RunningServer, stage: pb.NodeManifest, change: str) -> None:
    first = f32(np.zeros(320), rate=16_000)
    other = f32(np.zeros(320), rate=8_000) if change == "rate" else f32(np.zeros(640), rate=16_000, channels=2)
    errors = stream_errors(server, [stage], first, other)
    assert len(errors) == 1, errors
    err = errors[0]
    assert err.error_type == pb.ERROR_TYPE_VALIDATION, err
    assert err.failing_node_id == "n"
    expected = "sample_rate changed from 16000 Hz to 8000 Hz" if change == "rate" else "channels changed from 1 to 2"
    assert expected in err.message, err.message


def test_vad_refuses_audio_above_768_khz_and_takes_it_at_768_khz(server: RunningServer) -> None:
    with Client(server.address) as client:
        for rate, ok in [(4_294_967_295, False), (768_001, False), (768_000, True)]:
            req = pb.ExecuteRequest(manifest=manifest([node("v", "VADNode")]), audio_inputs={"v": f32(np.full(2, 0.1), rate=rate)})
            resp = client.execute(req)
            if ok:
                assert resp.WhichOneof("outcome") == "result", resp
            else:
                assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION, resp
                assert f"input sample_rate {rate} Hz is above the 768000 Hz" in resp.error.message
                assert resp.error.failing_node_id == "v"


def test_a_tiny_input_whose_resampler_takes_long_to_build_still_meets_the_time_limit(server: RunningServer) -> None:
    # 767 881 Hz and 1 000 Hz share no factor, so the resampler's block is 767 881 frames and
    # planning its FFTs takes about a second, whatever the input's length. That setup runs off
    # the async runtime, so the 100 ms limit ends the call (it used to run to completion inline
    # and answer SUCCESS long after the limit, holding up every other call on that thread).
    req = pb.ExecuteRequest(
        manifest=manifest([node("r", "AudioResampleNode", output_rate=1_000)]),
        audio_inputs={"r": f32(np.zeros(200), rate=767_881)},
        resource_limits=pb.ResourceLimits(max_timeout_ms=100),
    )
    with Client(server.address) as client:
        resp = client.execute(req)
        assert resp.error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, resp
        assert "time limit" in resp.error.message or "timeout" in resp.error.message, resp.error.message
        # The server is still answering (the abandoned build finishes on the blocking pool).
        ok = client.execute(pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(4))}))
        assert ok.WhichOneof("outcome") == "result"


def peak_rss_growth_kib(pid: int, call: Callable[[], pb.ExecuteResponse]) -> tuple[pb.ExecuteResponse, int]:
    """Runs `call`; its answer and how far the server's peak resident size rose above its
    resident size before it (writing 5 to clear_refs resets the peak)."""

    def kib(field: str) -> int:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1])

    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = kib("VmRSS")
    resp = call()
    return resp, kib("VmHWM") - before


def i16(n: int) -> pb.AudioBuffer:
    return pb.AudioBuffer(samples=bytes(2 * n), sample_rate=16_000, channels=1, format=pb.AUDIO_FORMAT_I16, num_samples=n)


@pytest.mark.parametrize("runtime", [pb.RUNTIME_HINT_RUST, pb.RUNTIME_HINT_CPYTHON], ids=["native", "python"])
@pytest.mark.parametrize(
    ("node_type", "params", "audio", "limit_mb", "output_mb"),
    [
        # 1 M mono samples to 256 channels: 1 GB of output.
        ("ChannelMixerNode", {"output_channels": 256}, f32(np.zeros(1_000_000)), 100, 1_000),
        # 100 000 samples at 1 kHz to 768 kHz: 76.8 M samples, 600 MB collected and written.
        ("AudioResampleNode", {"output_rate": 768_000}, f32(np.zeros(100_000), rate=1_000), 100, 600),
        # 8 M i16 samples (16 MB) to f32: 32 MB more, under a 40 MB limit.
        ("FormatConverterNode", {"target_format": "f32"}, i16(8_000_000), 40, 32),
    ],
    ids=["upmix to 256 channels", "upsample 768x", "widen i16 to f32"],
)
def test_an_output_over_the_memory_limit_is_refused_before_it_is_allocated(
    server: RunningServer, runtime: int, node_type: str, params: dict, audio: pb.AudioBuffer, limit_mb: int, output_mb: int
) -> None:
    req = pb.ExecuteRequest(
        manifest=manifest([node("n", node_type, runtime=runtime, **params)]),
        audio_inputs={"n": audio},
        resource_limits=pb.ResourceLimits(max_memory_bytes=limit_mb * 1_000_000),
    )
    with Client(server.address) as client:
        resp, grown_kib = peak_rss_growth_kib(server.proc.pid, lambda: client.execute(req))
    assert resp.error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, resp
    assert f"memory limit of {limit_mb * 1_000_000} bytes" in resp.error.message, resp.error.message
    context = json.loads(resp.error.context)
    assert context["limit"] == "max_memory_bytes" and context["needed_bytes"] > output_mb * 1_000_000, context
    assert resp.error.failing_node_id == "n"
    # Refused before the output was made: the server's peak grew by far less than the output
    # (telling only where the output is many times the request, which is decoded too).
    if output_mb >= 10 * len(audio.samples) / 1_000_000:
        assert grown_kib < output_mb * 1_000 / 4, f"the server's peak resident size grew by {grown_kib} KiB"


def test_branches_of_different_rates_joined_at_one_port_are_a_validation_error(server: RunningServer) -> None:
    # 16 kHz straight through and 8 kHz through a resampler, mixed at `join`'s input: audio the
    # join cannot take, named as such with the nodes that fix it, not a node failure.
    nodes = [
        node("src", "PassThroughNode"),
        node("down", "AudioResampleNode", output_rate=8_000),
        node("join", "PassThroughNode"),
    ]
    m = manifest(nodes, [("src", "down"), ("src", "join"), ("down", "join")])
    with Client(server.address) as client:
        resp = client.execute(pb.ExecuteRequest(manifest=m, audio_inputs={"src": f32(np.zeros(1_600), rate=16_000)}))
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION, resp
    assert resp.error.failing_node_id == "join"
    assert "cannot merge port `input`" in resp.error.message
    assert "put an AudioResampleNode or a ChannelMixerNode on the branch that differs" in resp.error.message
    assert json.loads(resp.error.context).get("field") == "input"


def test_resamplers_at_rate_pairs_with_long_filters_are_bounded_server_wide() -> None:
    # 383 997 → 384 000 Hz reduces to 127 999:128 000: a filter of tens of MB, which no request's
    # memory limit sees. Streams at such pairs, each its own, took the server's RSS up by about
    # 40 MiB each without bound; now the resamplers' memory is capped server-wide, and the stream
    # that would pass the cap ends with RESOURCE_LIMIT naming it, the others unharmed.
    def rss_mib() -> float:
        return int(Path(f"/proc/{s.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    def odd(i: int) -> Pipeline:
        return Pipeline.chain(ClientNode("AudioResampleNode", id=f"r{i}", output_rate=384_000))

    def chunk(rate: int) -> np.ndarray:
        return np.zeros(rate // 50, np.float32)

    s = start_server()
    try:
        idle = rss_mib()
        with Client(s.address, timeout=120) as client:
            with ExitStack() as open_streams:
                taken, refused = [], None
                for i in range(40):
                    rate = 383_999 - 2 * i
                    stream = open_streams.enter_context(client.stream(odd(i), sample_rate=rate))
                    stream.send(chunk(rate))
                    try:
                        next(stream)
                    except ResourceLimitError as e:
                        refused = (i, rate, e)
                        break
                    taken.append((stream, rate))
                assert refused is not None, "forty streams at distinct long-filter rate pairs were all taken"
                i, rate, e = refused
                assert len(taken) >= 2, "a few such streams fit"
                assert e.limit == "resampler_memory_bytes" and e.node_id == f"r{i}", e
                assert "simpler ratio" in e.message, e.message
                assert rss_mib() - idle < 800, f"RSS {idle:.0f} → {rss_mib():.0f} MiB"
                assert s.metric("remotemedia_limit_rejections_total", limit="resampler_memory_bytes") == 1
                # The streams taken before go on.
                first, first_rate = taken[0]
                first.send(chunk(first_rate))
                assert next(first).sequence == 1
            # Their memory is given back when they end: the refused pair is taken now.
            with client.stream(odd(99), sample_rate=rate) as again:
                again.send(chunk(rate))
                assert next(again).sequence == 0
        assert s.metric("remotemedia_active_streams") == 0
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("runtime", ["rust", "cpython"])
def test_audio_a_chunker_holds_between_chunks_counts_against_the_memory_limit(runtime: str) -> None:
    # chunk_ms may be ten minutes: 230 MB of 48 kHz stereo f32 held per stream, which no limit
    # saw. The audio held counts against the stream's memory limit (4 MiB here), so the stream
    # is refused with RESOURCE_LIMIT once it holds that much, not after holding everything.
    s = start_server("--default-memory-bytes", str(4 << 20))
    try:
        chunker = Pipeline.chain(ClientNode("AudioChunkerNode", id="c", runtime=runtime, chunk_ms=600_000))
        second = np.zeros((48_000, 2), np.float32)  # 384 KB
        with Client(s.address, timeout=120) as client, client.stream(chunker, sample_rate=48_000) as stream:
            sent = 0
            with pytest.raises(ResourceLimitError) as e:
                for _ in range(100):
                    stream.send(second)
                    next(stream)
                    sent += 1
            assert e.value.limit == "max_memory_bytes", e.value
            assert 5 <= sent <= 11, f"refused after {sent} seconds of audio, at 4 MiB"
        assert s.metric("remotemedia_active_streams") == 0
    finally:
        assert s.stop() == 0
