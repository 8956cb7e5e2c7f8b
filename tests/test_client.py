"""The Python client against the real binary. Every test body runs twice, with the blocking
``Client`` and with ``AsyncClient`` (the ``api`` fixture), through :mod:`client_api`."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from client_api import KINDS, Api, Kind
from conftest import PLUGINS, RunningServer, start_server

from remotemedia_client import (
    AudioBuffer,
    AudioResampleNode,
    AuthenticationError,
    ChannelMixerNode,
    DeadlineExceededError,
    FormatConverterNode,
    GainNode,
    InternalError,
    Node,
    NodeExecutionError,
    PassThroughNode,
    Pipeline,
    PipelineCancelledError,
    RemoteMediaError,
    ResourceLimitError,
    ResourceLimits,
    RetryPolicy,
    Segment,
    ServiceUnavailableError,
    VADNode,
    ValidationError,
    VersionMismatchError,
)
from remotemedia_client import errors as errors_module

TOKEN = "client-test-token-5d2c"
RATE = 16_000


def tone(seconds: float, rate: int = RATE, *, start: float = 0.0, stop: float | None = None) -> npt.NDArray[np.float32]:
    """A 440 Hz tone at half scale between `start` and `stop` seconds, silence elsewhere."""
    t = np.arange(round(seconds * rate)) / rate
    on = (t >= start) & (t < (seconds if stop is None else stop))
    return (0.5 * np.sin(2 * np.pi * 440 * t) * on).astype(np.float32)


def speech_pipeline() -> Pipeline:
    p = Pipeline("speech")
    p.add(PassThroughNode("in")) >> VADNode("vad") >> GainNode("gain", gain_db=-6)
    return p


class Gate:
    """A GateNode's files: the node writes `marker` when it starts and waits for `release`."""

    def __init__(self, tmp: Path) -> None:
        self.marker = tmp / "gate-entered"
        self.release_file = tmp / "gate-release"

    def node(self, id: str = "gate") -> Node:
        return Node("GateNode", id, marker=str(self.marker), release=str(self.release_file))

    async def entered(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            assert time.monotonic() < deadline, "the gate node never started"
            await asyncio.sleep(0.005)

    def release(self) -> None:
        self.release_file.touch()


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def main_server() -> Iterator[RunningServer]:
    """Plug-in nodes and a bearer token."""
    s = start_server("--python-nodes-path", str(PLUGINS), "--auth-tokens", TOKEN)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def one_slot_server() -> Iterator[RunningServer]:
    """One execution and one stream at a time, so a second one is refused with RetryInfo."""
    s = start_server("--python-nodes-path", str(PLUGINS), "--max-concurrent-executions", "1", "--max-concurrent-streams", "1")
    yield s
    assert s.stop() == 0


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    k: Kind = request.param
    return k


@pytest.fixture()
async def api(kind: Kind, main_server: RunningServer) -> AsyncIterator[Api]:
    a = Api(kind, main_server.address, token=TOKEN)
    yield a
    await a.close()


@pytest.fixture()
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path)
    yield g
    g.release()  # never leave a node waiting on the server


# --- pipelines, audio and results --------------------------------------------------------------


async def test_run_returns_audio_as_numpy_vad_segments_and_metrics(api: Api) -> None:
    x = tone(2.0, start=0.5, stop=1.5)
    result = await api.call("run", speech_pipeline(), x, sample_rate=RATE)

    out = result.output("gain")
    assert out.sample_rate == RATE and out.channels == 1 and out.format == "f32"
    np.testing.assert_allclose(out.to_numpy(), x * 10 ** (-6 / 20), atol=1e-6)
    [segment] = result.segments["vad"]
    assert isinstance(segment, Segment)
    assert segment.start_s == pytest.approx(0.5, abs=0.05) and segment.end_s == pytest.approx(1.5, abs=0.05)
    assert result.data["vad"]["segments"][0]["start_s"] == segment.start_s
    assert result.status == "success"
    assert set(result.nodes) == {"in", "vad", "gain"} and all(n.status == "success" for n in result.nodes.values())
    assert set(result.metrics.nodes) == {"in", "vad", "gain"}
    assert result.metrics.nodes["vad"].runtime == "rust" and result.metrics.nodes["vad"].samples_processed == x.size
    assert result.metrics.wall_time_ms > 0


async def test_numpy_formats_and_layouts_come_back_as_sent(api: Api) -> None:
    stereo = (np.arange(2 * 480, dtype=np.int16).reshape(480, 2) * 7) - 3000
    result = await api.call("run", Pipeline.chain(PassThroughNode("p")), stereo, sample_rate=48_000)
    back = result.output().to_numpy()
    assert back.dtype == np.int16 and back.shape == (480, 2)
    np.testing.assert_array_equal(back, stereo)

    mono = np.linspace(-1, 1, 100, dtype=np.float32)
    convert = Pipeline.chain(ChannelMixerNode("mix", output_channels=2), FormatConverterNode("fmt", target_format="i32"))
    result = await api.call("run", convert, AudioBuffer.from_numpy(mono, 8_000))
    out = result.output("fmt")
    assert out.to_numpy().dtype == np.int32 and out.to_numpy().shape == (100, 2) and out.sample_rate == 8_000
    np.testing.assert_array_equal(out.to_numpy()[:, 0], np.round(mono.astype(np.float64) * 2**31).clip(-(2**31), 2**31 - 1))


async def test_plain_lists_run_and_channels_first_arrays_are_refused_before_any_call(api: Api) -> None:
    result = await api.call("run", Pipeline.chain(GainNode("g", gain=2)), [0.25, -0.125], sample_rate=8_000)
    np.testing.assert_array_equal(result.output().to_numpy(), np.array([0.5, -0.25], np.float32))
    stereo = np.stack([tone(0.01), tone(0.01)])  # (2, 160): channels first
    with pytest.raises(ValidationError) as info:
        await api.call("run", Pipeline.chain(PassThroughNode("p")), stereo, sample_rate=RATE)
    assert info.value.code is None and "look channels-first" in info.value.violations[0].description


async def test_output_nodes_return_intermediate_audio(api: Api) -> None:
    x = tone(0.1)
    result = await api.call("run", speech_pipeline(), {"in": x}, sample_rate=RATE, output_nodes=["vad"])
    assert set(result.audio) == {"vad", "gain"}
    np.testing.assert_array_equal(result.audio["vad"].to_numpy(), x)


async def test_a_manifest_file_runs_like_the_pipeline_it_was_saved_from(api: Api, tmp_path: Path) -> None:
    p = Pipeline.chain(AudioResampleNode("rs", output_rate=8_000, quality="medium"), GainNode("g", gain=0.5), name="down")
    p.save(tmp_path / "down.json")
    loaded = Pipeline.load(tmp_path / "down.json")
    assert loaded == p
    x = tone(0.5)
    built, from_file, from_pb = (
        await api.call("run", p, x, sample_rate=RATE),
        await api.call("run", loaded, x, sample_rate=RATE),
        await api.call("run", p.to_manifest(), x, sample_rate=RATE),
    )
    assert built.output().frames == 4_000
    np.testing.assert_array_equal(built.output().to_numpy(), from_file.output().to_numpy())
    np.testing.assert_array_equal(built.output().to_numpy(), from_pb.output().to_numpy())


async def test_gzip_requests_are_served(kind: Kind, main_server: RunningServer) -> None:
    a = Api(kind, main_server.address, token=TOKEN, compression="gzip")
    try:
        result = await a.call("run", Pipeline.chain(GainNode("g", gain_db=0)), np.zeros(48_000, np.float32), sample_rate=RATE)
        assert result.output().frames == 48_000
    finally:
        await a.close()


async def test_version_compatibility_nodes_and_health(api: Api) -> None:
    v = await api.call("version")
    assert v.compatible and "v1" in v.version_info.supported_protocols
    assert (await api.call("check_compatibility")).compatible
    nodes = await api.call("nodes")
    assert nodes == sorted(nodes)
    assert {"GainNode", "VADNode", "BandpassFilterNode", "GateNode"} <= set(nodes)
    assert await api.call("health") == "SERVING"
    assert await api.call("health", "remotemedia.v1.PipelineService") == "SERVING"
    assert await api.call("health", "no.such.Service") == "SERVICE_UNKNOWN"


# --- streaming ---------------------------------------------------------------------------------


async def test_a_stream_answers_every_chunk_in_sequence_order(api: Api) -> None:
    x = tone(2.0, start=0.5, stop=1.5)
    p = Pipeline.chain(AudioResampleNode("rs", output_rate=8_000), VADNode("vad"))
    async with api.stream(p, sample_rate=RATE) as s:
        assert s.session_id
        sequences = [await s.send(x[i : i + 320]) for i in range(0, x.size, 320)]
        await s.close()
        results = await s.results()
    assert sequences == list(range(100))
    # One result per chunk, then the flushed remainder numbered after the last chunk.
    assert [r.sequence for r in results] == list(range(101))
    streamed = AudioBuffer.concatenate([r.audio["vad"] for r in results if "vad" in r.audio])
    one_shot = (await api.call("run", p, x, sample_rate=RATE)).output("vad")
    assert streamed.frames == one_shot.frames == 16_000
    np.testing.assert_allclose(streamed.to_numpy(), one_shot.to_numpy(), atol=1e-5)
    segments = [seg for r in results for seg in r.segments.get("vad", [])]
    assert len(segments) == 1 and segments[0].start_s == pytest.approx(0.5, abs=0.05)
    assert s.stats.chunks_processed == 100 and s.stats.total_samples == x.size


async def test_sending_waits_while_the_pipeline_is_busy(api: Api, gate: Gate) -> None:
    """Backpressure: with the server stuck on the first chunk, `send` stops returning long
    before the input is used up; once the node moves on, everything arrives in order."""
    chunk = np.zeros(48_000, np.float32)  # 192 kB per chunk, 200 chunks in all
    async with api.stream(Pipeline.chain(gate.node()), sample_rate=48_000, max_pending=4) as s:

        async def feed() -> None:
            for _ in range(200):
                await s.send(chunk)
            await s.close()

        feeder = asyncio.create_task(feed())
        await gate.entered()
        done, _ = await asyncio.wait({feeder}, timeout=2)
        assert not done, f"all {s.sent} chunks were accepted while the server processed none"
        assert s.sent < 50
        gate.release()
        results = await s.results()
        await feeder
    assert [r.sequence for r in results] == list(range(200))


async def test_cancel_ends_the_stream_at_once_and_frees_the_session(api: Api, gate: Gate, main_server: RunningServer) -> None:
    async with api.stream(Pipeline.chain(gate.node()), sample_rate=RATE) as s:
        await s.send(np.zeros(160, np.float32))
        await gate.entered()
        assert main_server.metric("remotemedia_active_streams") == 1
        await s.cancel()
        with pytest.raises(PipelineCancelledError, match="the stream was cancelled"):  # in both clients' words
            await s.next()
    await until(lambda: main_server.metric("remotemedia_active_streams") == 0, "the session to be freed")


async def test_a_node_failing_on_a_chunk_is_reported_and_the_stream_goes_on(api: Api) -> None:
    p = Pipeline("branches")
    src = p.add(PassThroughNode("in"))
    src >> [Node("RaiseNode", "boom", kind="InvalidInput", message="bad chunk"), GainNode("g", gain_db=0)]
    async with api.stream(p, sample_rate=RATE) as s:
        for _ in range(2):
            await s.send(np.zeros(160, np.float32))
        await s.close()
        for sequence in (0, 1):
            with pytest.raises(NodeExecutionError) as info:
                await s.next()
            assert info.value.sequence == sequence and info.value.node_id == "boom"
            assert "bad chunk" in str(info.value)
        assert await s.results() == []  # the nodes hold nothing back, so closing adds no result
    assert s.stats.chunks_processed == 2


async def test_stream_file_returns_a_minute_of_audio_in_order(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "minute.wav"
    soundfile.write(path, tone(60.0, start=10, stop=20), RATE, subtype="PCM_16")
    p = Pipeline.chain(AudioResampleNode("rs", output_rate=8_000), VADNode("vad"))
    results = await api.stream_file(path, p, chunk_ms=20)
    assert [r.sequence for r in results] == list(range(3_001))
    out = AudioBuffer.concatenate([r.audio["vad"] for r in results if "vad" in r.audio])
    assert out.sample_rate == 8_000 and out.frames == 480_000
    segments = [seg for r in results for seg in r.segments.get("vad", [])]
    assert [(round(seg.start_s), round(seg.end_s)) for seg in segments] == [(10, 20)]


async def test_a_ten_minute_file_too_large_for_one_request_names_both_ways_out(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "ten-minutes.wav"
    soundfile.write(path, np.zeros(600 * 48_000, np.int16), 48_000, subtype="PCM_16")
    p = Pipeline.chain(GainNode("g", gain_db=-6))
    with pytest.raises(ResourceLimitError) as info:
        await api.call("run", p, AudioBuffer.from_file(path))  # 28.8 M float32 samples: 110 MiB
    e = info.value
    assert e.limit == "max_message_bytes" and e.hint is not None
    assert str(e) == f"{e.message}\n{e.hint}"
    assert "client.stream_file(path, pipeline)" in e.hint and "limits=ResourceLimits(" in e.hint
    # The first way out: the same file, streamed.
    results = await api.stream_file(path, p, chunk_ms=1_000, dtype=AudioBuffer.file_format(path))
    out = AudioBuffer.concatenate([r.audio["g"] for r in results if "g" in r.audio])
    assert (out.frames, out.format) == (600 * 48_000, "i16")

    # Four minutes as int16 fit in one message but not in the default samples limit; the second
    # way out: a higher limit for the request.
    four = AudioBuffer.from_file(path, dtype="i16").samples[: 240 * 48_000]
    with pytest.raises(ResourceLimitError) as info:
        await api.call("run", p, four, sample_rate=48_000)
    assert info.value.limit == "max_audio_samples" and "limits=ResourceLimits(max_audio_samples=...)" in str(info.value)
    result = await api.call("run", p, four, sample_rate=48_000, limits=ResourceLimits(max_audio_samples=12_000_000))
    assert result.output().frames == 240 * 48_000


# --- errors: every class from a real server answer ---------------------------------------------

PRODUCED: set[type[RemoteMediaError]] = set()


def produces(*classes: type[RemoteMediaError]) -> Callable[[Any], Any]:
    """Marks a test that makes the server answer with each of `classes`."""
    PRODUCED.update(classes)
    return lambda f: f


produces(PipelineCancelledError)(test_cancel_ends_the_stream_at_once_and_frees_the_session)


@produces(ValidationError)
async def test_validation_errors_list_every_violation(api: Api) -> None:
    p = Pipeline.chain(Node("NoSuchNode", "a"), Node("NorThisOne", "b"))
    with pytest.raises(ValidationError) as info:
        await api.call("run", p, tone(0.01), sample_rate=RATE)
    e = info.value
    assert e.code is None and e.error_type == "VALIDATION"
    assert [v.field for v in e.violations] == ["nodes[0].node_type", "nodes[1].node_type"]
    # The available types are listed once, in the message, not in every violation.
    assert str(e).count("GainNode") == 1 and "GainNode" not in e.violations[0].description

    # A stream refuses its manifest in-band, then ends with INVALID_ARGUMENT and BadRequest.
    with pytest.raises(ValidationError) as info:
        async with api.stream(p, sample_rate=RATE):
            pass
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(info.value.violations) == 2

    # A cycle beside an unknown type: the client alone would list the cycle only; every
    # violation comes back at once, from the service.
    looped = Pipeline("looped")
    a, b = looped.add(GainNode("a")), looped.add(GainNode("b"))
    a >> b >> a
    looped.add(PassThroughNode("in")) >> looped.add(Node("NoSuchNode", "ghost"))
    with pytest.raises(ValidationError) as info:
        await api.call("run", looped, {"in": tone(0.01), "a": tone(0.01)}, sample_rate=RATE)
    found = " | ".join(f"{v.field}: {v.description}" for v in info.value.violations)
    assert "NoSuchNode" in found and "a → b → a" in found, found
    # The same with a bare array for a pipeline of two sources: it has no node to go to, and the
    # service still lists every problem.
    two = Pipeline("two")
    two.add(Node("NoSuchNode", "ghost"))
    two.add(GainNode("g", gain_db=500))
    with pytest.raises(ValidationError) as info:
        await api.call("run", two, tone(0.01), sample_rate=RATE)
    found = " | ".join(f"{v.field}: {v.description}" for v in info.value.violations)
    assert "NoSuchNode" in found and "gain_db" in found, found


@produces(NodeExecutionError)
async def test_a_failing_python_node_names_itself_and_carries_its_traceback(api: Api) -> None:
    p = Pipeline.chain(Node("RaiseNode", "boom", kind="RuntimeError", message="it broke"))
    with pytest.raises(NodeExecutionError) as info:
        await api.call("run", p, tone(0.01), sample_rate=RATE)
    e = info.value
    assert e.node_id == "boom" and e.node_type == "RaiseNode" and e.exception_type == "RuntimeError"
    assert e.traceback is not None and "helper_that_fails" in e.traceback and "RuntimeError: it broke" in e.traceback


@produces(ResourceLimitError)
async def test_a_limit_above_the_servers_cap_names_the_cap(api: Api) -> None:
    with pytest.raises(ResourceLimitError) as info:
        await api.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE, limits=ResourceLimits(max_timeout_ms=10**7))
    assert info.value.limit == "max_timeout_ms" and info.value.retry_delay is None
    assert info.value.hint is None  # the request's own limit is the problem, not its length


@produces(ResourceLimitError)
async def test_the_concurrency_cap_is_retried_after_the_servers_delay(
    kind: Kind, one_slot_server: RunningServer, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="remotemedia_client")
    a = Api(kind, one_slot_server.address)
    x = tone(0.01)
    rejected = one_slot_server.metric("remotemedia_limit_rejections_total", limit="max_concurrent_executions")
    try:
        holder = asyncio.create_task(a.call("run", Pipeline.chain(gate.node()), x, sample_rate=RATE))
        await gate.entered()
        with pytest.raises(ResourceLimitError) as info:
            await a.call("run", Pipeline.chain(GainNode("g")), x, sample_rate=RATE, retry=RetryPolicy.none())
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.retry_delay == pytest.approx(0.25)
        assert info.value.limit == "max_concurrent_executions", "the cap is named, as the metrics name it"

        waiting = asyncio.create_task(
            a.call("run", Pipeline.chain(GainNode("g")), x, sample_rate=RATE, retry=RetryPolicy(max_attempts=100))
        )
        await until(
            lambda: one_slot_server.metric("remotemedia_limit_rejections_total", limit="max_concurrent_executions") >= rejected + 2,
            "the retried call to be refused",
        )
        gate.release()
        assert (await holder).output().frames == x.size
        assert (await waiting).output().frames == x.size
    finally:
        await a.close()
    retries = [r for r in caplog.records if r.getMessage() == "retrying"]
    assert retries and all(r.__dict__["delay_s"] >= 0.25 for r in retries)


async def test_a_stream_over_the_cap_opens_once_a_slot_frees(kind: Kind, one_slot_server: RunningServer) -> None:
    a = Api(kind, one_slot_server.address)
    p = Pipeline.chain(GainNode("g", gain_db=-6))
    x = np.full(160, 0.5, np.float32)
    rejected = one_slot_server.metric("remotemedia_limit_rejections_total", limit="max_concurrent_streams")
    try:
        async with a.stream(p, sample_rate=RATE) as first:
            with pytest.raises(ResourceLimitError) as info:
                async with a.stream(p, sample_rate=RATE, retry=RetryPolicy.none()):
                    pass
            assert info.value.retry_delay == pytest.approx(0.25)
            assert info.value.limit == "max_concurrent_streams"

            async def second() -> list[float]:
                async with a.stream(p, sample_rate=RATE, retry=RetryPolicy(max_attempts=100)) as s:
                    await s.send(x)
                    await s.close()
                    return [float(r.output().to_numpy()[0]) for r in await s.results()]

            waiting = asyncio.create_task(second())
            await until(
                lambda: one_slot_server.metric("remotemedia_limit_rejections_total", limit="max_concurrent_streams") >= rejected + 2,
                "the retried stream to be refused",
            )
            await first.send(x)
            await first.close()
            assert len(await first.results()) == 1
        assert await waiting == [pytest.approx(0.25, abs=1e-3)]
    finally:
        await a.close()


@produces(AuthenticationError)
async def test_a_missing_or_wrong_token_is_an_authentication_error(kind: Kind, main_server: RunningServer) -> None:
    for token in ("", "not-the-token"):
        a = Api(kind, main_server.address, token=token)
        try:
            with pytest.raises(AuthenticationError) as info:
                await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(AuthenticationError):
                async with a.stream(Pipeline.chain(GainNode("g")), sample_rate=RATE):
                    pass
            assert (await a.call("version")).compatible  # GetVersion needs no token
        finally:
            await a.close()


async def test_a_token_read_with_its_newline_works_and_one_a_header_cannot_carry_is_refused(kind: Kind, main_server: RunningServer) -> None:
    a = Api(kind, main_server.address, token=TOKEN + "\n")  # as read from a file
    try:
        assert (await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE)).output().frames > 0
    finally:
        await a.close()
    with pytest.raises(ValueError, match="only visible ASCII") as info:
        Api(kind, main_server.address, token="sec\x00ret")
    assert "sec" not in str(info.value), "the token is never shown"


async def test_bad_timeout_and_retry_arguments_are_refused_naming_them(kind: Kind, main_server: RunningServer) -> None:
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None, got str"):
        Api(kind, main_server.address, timeout="1")
    with pytest.raises(TypeError, match=r"retry must be a RetryPolicy or None \(RetryPolicy.none\(\) for no retries\), got 'x'"):
        Api(kind, main_server.address, retry="x")
    a = Api(kind, main_server.address, token=TOKEN)
    try:
        for timeout in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="timeout must be a finite number of seconds, 0 or more"):
                await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE, timeout=timeout)
        with pytest.raises(TypeError, match="retry must be a RetryPolicy or None"):
            await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE, retry="x")
    finally:
        await a.close()


async def test_arguments_of_the_wrong_kind_are_refused_naming_them(kind: Kind, main_server: RunningServer) -> None:
    with pytest.raises(TypeError, match="address must be a 'host:port' string or None, got int"):
        Api(kind, 50051)  # type: ignore[arg-type]
    bad: Any
    for bad in (-1, 1.5, True, 2**64):
        with pytest.raises(ValidationError, match=r"resource_limits\.max_timeout_ms") as info:
            ResourceLimits(max_timeout_ms=bad)
        assert repr(bad) in str(info.value)
    ResourceLimits(max_memory_bytes=0, max_timeout_ms=2**64 - 1)  # both ends of the range are fine
    g = GainNode("g")
    pipeline = Pipeline.chain(g)
    a = Api(kind, main_server.address, token=TOKEN)
    try:
        with pytest.raises(TypeError, match=r"pipeline must be a remotemedia_client\.Pipeline or a PipelineManifest, got str"):
            await a.call("run", "not a pipeline", tone(0.01), sample_rate=RATE)
        with pytest.raises(TypeError, match=r"limits must be a remotemedia_client\.ResourceLimits, got dict"):
            await a.call("run", pipeline, tone(0.01), sample_rate=RATE, limits={"max_timeout_ms": 5})
        with pytest.raises(TypeError, match="data must be a mapping of node id"):
            await a.call("run", pipeline, tone(0.01), sample_rate=RATE, data=["x"])
        for one in ("g", g):
            with pytest.raises(TypeError, match=r"output_nodes must be a sequence of nodes or node ids, got one \w+: wrap it in a list"):
                await a.call("run", pipeline, tone(0.01), sample_rate=RATE, output_nodes=one)
        with pytest.raises(TypeError, match=r"pipeline must be a remotemedia_client\.Pipeline"):
            a.client.stream("not a pipeline", sample_rate=RATE)  # type: ignore[arg-type]
        for rate in (-3, 2**32):
            with pytest.raises(
                ValidationError, match=rf"sample_rate must be None or a positive integer \(Hz, at most 4294967295\), got {rate}"
            ):
                a.client.stream(pipeline, sample_rate=rate)
        with pytest.raises(ValidationError, match="at most 4294967295"):
            await a.call("run", pipeline, tone(0.01), sample_rate=2**32)
        # A correct call still runs after the refusals.
        assert (await a.call("run", pipeline, tone(0.01), sample_rate=RATE, output_nodes=["g"])).output("g").frames > 0
    finally:
        await a.close()
    settings_errors: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"tls": "yes"}, TypeError, "tls must be a TLS, True, False or None, got str"),
        ({"protocol_version": 3}, TypeError, "protocol_version must be a string, got int"),
        ({"protocol_version": "v\n1"}, ValueError, "protocol_version must be visible ASCII"),
        ({"channel_options": "x"}, TypeError, "channel_options must be a sequence of"),
    ]
    for settings, error, says in settings_errors:
        with pytest.raises(error, match=re.escape(says)):
            Api(kind, main_server.address, **settings)
    with pytest.raises(ValueError, match="address must not be empty"):
        Api(kind, "")
    for address in ("127.0.0.1:99999", "127.0.0.1:0", "localhost:", "localhost:notaport"):
        with pytest.raises(ValueError, match="must end in a port from 1 to 65535"):
            Api(kind, address)
    for fine in ("[::1]:50051", "unix:/tmp/remotemedia.sock", "dns:///localhost:50051"):
        await Api(kind, fine).close()
    with pytest.raises(TypeError, match=r"max_attempts must be a whole number, got 2\.5"):
        RetryPolicy(max_attempts=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="initial_backoff must be a finite number, got nan"):
        RetryPolicy(initial_backoff=float("nan"))
    b = Api(kind, main_server.address, token=TOKEN)
    try:
        with pytest.raises(TypeError, match="client_version must be a string, got int"):
            await b.call("version", 5)
        with pytest.raises(TypeError, match="service must be a string, got int"):
            await b.call("health", 5)
        with pytest.raises(TypeError, match="retry must be a RetryPolicy or None"):
            await b.call("run", pipeline, tone(0.01), sample_rate=RATE, retry=False)
        with pytest.raises(TypeError, match="retry must be a RetryPolicy or None"):
            b.client.stream(pipeline, sample_rate=RATE, retry=False)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_pending must be 1 or more, got 0"):
            b.client.stream(pipeline, sample_rate=RATE, max_pending=0)
        with pytest.raises(FileNotFoundError, match="no such sound file"):
            await b.stream_file("/nonexistent/speech.wav", pipeline)
        # A chunk's own sample_rate=0 is refused, not replaced by the stream's rate.
        async with b.stream(pipeline, sample_rate=RATE) as st:
            with pytest.raises(ValidationError, match="sample_rate must be a positive integer"):
                await st.send(tone(0.01), sample_rate=0)
    finally:
        await b.close()
    with pytest.raises(TypeError, match="only a Node can be added to a pipeline, got str"):
        Pipeline("p").add("GainNode")  # type: ignore[type-var]
    with pytest.raises(TypeError, match="runtime must be a Runtime, its name or its RuntimeHint number, got True"):
        GainNode("g", runtime=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a node id must be a string or None, got int"):
        GainNode(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a pipeline's name must be a string, got int"):
        Pipeline(5)  # type: ignore[arg-type]


@produces(VersionMismatchError)
async def test_an_unsupported_protocol_version_lists_the_supported_ones(kind: Kind, main_server: RunningServer) -> None:
    a = Api(kind, main_server.address, token=TOKEN, protocol_version="v2")
    try:
        with pytest.raises(VersionMismatchError) as info:
            await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and info.value.supported_versions == ["v1"]
        with pytest.raises(VersionMismatchError) as info:
            await a.call("check_compatibility")
        assert info.value.supported_versions == ["v1"]
    finally:
        await a.close()


@produces(ServiceUnavailableError)
async def test_a_draining_server_refuses_new_work_and_cuts_what_outlives_the_grace_period(kind: Kind, gate: Gate) -> None:
    s = start_server("--python-nodes-path", str(PLUGINS), "--grace-period-ms", "300")
    a = Api(kind, s.address, retry=RetryPolicy.none())
    try:
        held = asyncio.create_task(a.call("run", Pipeline.chain(gate.node()), tone(0.01), sample_rate=RATE))
        await gate.entered()
        s.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(s.wait_for, lambda rec: rec.get("message") == "shutdown started; draining")
        with pytest.raises(ServiceUnavailableError) as refused:
            await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in str(refused.value)
        # Cut by the shutdown, not cancelled by its client: UNAVAILABLE, to be retried elsewhere.
        with pytest.raises(ServiceUnavailableError) as cut:
            await held
        assert cut.value.code == grpc.StatusCode.UNAVAILABLE
        # Said as what happened to it (its work cancelled), and logged so, not as a refusal.
        assert "shut down before this call finished" in str(cut.value), str(cut.value)
        await asyncio.to_thread(s.wait_for, lambda rec: rec.get("message") == "ExecutePipeline cut short by the shutdown")
    finally:
        await a.close()
        assert s.stop() == 0


@produces(DeadlineExceededError)
async def test_a_call_past_its_deadline_raises_deadline_exceeded(api: Api, gate: Gate) -> None:
    with pytest.raises(DeadlineExceededError) as info:
        await api.call("run", Pipeline.chain(gate.node()), tone(0.01), sample_rate=RATE, timeout=0.5)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gate.marker.exists()  # the server had started the work


@produces(ValidationError)
async def test_a_compression_the_server_does_not_take_is_a_validation_error(kind: Kind, main_server: RunningServer) -> None:
    a = Api(kind, main_server.address, token=TOKEN, compression="deflate")
    try:
        with pytest.raises(ValidationError) as info:
            await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE)
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED and "`deflate` is not supported" in str(info.value)
        assert [v.field for v in info.value.violations] == ["grpc-encoding"]
    finally:
        await a.close()


@produces(InternalError)
async def test_a_call_the_server_cannot_serve_at_all_is_an_internal_error(kind: Kind) -> None:
    # Another gRPC service at the address: it knows no RemoteMedia method.
    foreign = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = foreign.add_insecure_port("127.0.0.1:0")
    foreign.start()
    a = Api(kind, f"127.0.0.1:{port}", token=TOKEN)
    try:
        with pytest.raises(InternalError) as info:
            await a.call("run", Pipeline.chain(GainNode("g")), tone(0.01), sample_rate=RATE)
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED, info.value
    finally:
        await a.close()
        foreign.stop(None)


def test_every_exception_class_is_produced_by_a_test_above() -> None:
    exported = {
        c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, RemoteMediaError) and c is not RemoteMediaError
    }
    assert exported == PRODUCED
