"""The Python nodes refuse audio as the native nodes do: a stream chunk whose rate, channels (or,
where the node keeps samples, format) differ from the first chunk's, rates outside what a node
takes, a band-pass edge at or above Nyquist: all ERROR_TYPE_VALIDATION, in the native nodes'
words (after the Python twins' `NodeType: ` prefix). And the Python AudioResampleNode gives
exactly the native output length, round(frames × out / in) with halves rounded up."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import RunningServer
from helpers import f32, manifest, node, samples

from remotemedia_client import Client, pb

RUST, CPYTHON = pb.RUNTIME_HINT_RUST, pb.RUNTIME_HINT_CPYTHON
RNG = np.random.default_rng(7)

#: Every Python node that reads samples, with parameters that take 16 and 8 kHz, mono and stereo.
READERS: list[tuple[str, dict[str, Any]]] = [
    ("GainNode", {"gain_db": -6.0}),
    ("FormatConverterNode", {"target_format": "i16"}),
    ("ChannelMixerNode", {"output_channels": 1}),
    ("VADNode", {}),
    ("LoudnessNode", {}),
    ("BandpassFilterNode", {"low_hz": 300.0, "high_hz": 3_400.0}),
    ("AudioResampleNode", {"output_rate": 16_000}),
    ("AudioChunkerNode", {"chunk_samples": 100}),
]
#: The nodes with both a native and a Python implementation that check a stream's layout: those
#: that read samples, and PassThroughNode, which would pass a change on.
NATIVE_CHECKED = ["VADNode", "AudioResampleNode", "AudioChunkerNode", "GainNode", "FormatConverterNode", "ChannelMixerNode", "PassThroughNode"]

#: (first chunk's rate and channels, second chunk's, the native message for the change).
CHANGES = [
    ((16_000, 1), (8_000, 1), "input sample_rate changed from 16000 Hz to 8000 Hz within the stream"),
    ((16_000, 1), (16_000, 2), "input channels changed from 1 to 2 within the stream"),
]


def noise(frames: int, channels: int = 1) -> np.ndarray:
    return RNG.uniform(-0.5, 0.5, frames * channels).astype(np.float32)


def i16(x: np.ndarray, rate: int = 16_000, channels: int = 1) -> pb.AudioBuffer:
    a = np.ascontiguousarray(np.round(x * 32767), dtype="<i2")
    return pb.AudioBuffer(samples=a.tobytes(), sample_rate=rate, channels=channels, format=pb.AUDIO_FORMAT_I16, num_samples=a.size)


def execute(server: RunningServer, n: pb.NodeManifest, buf: pb.AudioBuffer) -> pb.ExecuteResponse:
    with Client(server.address) as client:
        return client.execute(pb.ExecuteRequest(manifest=manifest([n]), audio_inputs={n.id: buf}))


def stream(server: RunningServer, n: pb.NodeManifest, bufs: list[pb.AudioBuffer]) -> tuple[list[pb.StreamResponse], grpc.StatusCode]:
    """Streams `bufs` to node `n`, closes, and returns the responses and the final status."""
    reqs = [pb.StreamRequest(manifest=manifest([n]))]
    reqs += [pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=n.id, buffer=b, sequence=i)) for i, b in enumerate(bufs)]
    reqs.append(pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE)))
    out: list[pb.StreamResponse] = []
    with Client(server.address) as client:
        try:
            out.extend(client.stream_call(iter(reqs), timeout=60))
        except grpc.RpcError as e:
            return out, e.code()  # type: ignore[attr-defined]
    return out, grpc.StatusCode.OK


def errors(responses: list[pb.StreamResponse]) -> list[pb.ErrorResponse]:
    return [r.error for r in responses if r.WhichOneof("response") == "error"]


def results(responses: list[pb.StreamResponse]) -> list[pb.ExecutionResult]:
    return [r.result for r in responses if r.WhichOneof("response") == "result"]


def node_message(node_type: str, text: str) -> str:
    """An in-band node error's message, the same from both runtimes: the node's own errors come
    without the Python exception's class name (that is in `context.exception_type`)."""
    return f"node `n` ({node_type}) failed: {text}"


# --- 1. a stream's layout is fixed by its first chunk ------------------------------------------


@pytest.mark.parametrize(("first", "second", "text"), CHANGES, ids=["rate", "channels"])
@pytest.mark.parametrize(("node_type", "params"), READERS, ids=[r[0] for r in READERS])
def test_a_python_node_refuses_a_chunk_of_another_layout_as_validation(
    server: RunningServer, node_type: str, params: dict[str, Any], *, first: tuple[int, int], second: tuple[int, int], text: str
) -> None:
    (r1, c1), (r2, c2) = first, second
    bufs = [f32(noise(1_600, c1), r1, c1), f32(noise(1_600, c2), r2, c2), f32(noise(1_600, c1), r1, c1)]
    responses, code = stream(server, node("n", node_type, runtime=CPYTHON, **params), bufs)
    assert code == grpc.StatusCode.OK, responses
    errs = errors(responses)
    assert len(errs) == 1, errs
    err = errs[0]
    assert err.error_type == pb.ERROR_TYPE_VALIDATION, err
    assert err.message == node_message(node_type, text)
    assert err.failing_node_id == "n" and json.loads(err.context)["sequence"] == 1
    assert [r.sequence for r in results(responses)][:2] == [0, 2], "the stream goes on with chunks of its layout"


def test_loudness_flushes_the_audio_of_the_streams_layout_after_refusing_another(server: RunningServer) -> None:
    # It used to keep the stereo chunk and fail its flush with numpy's ValueError (ABORTED).
    x = 0.25 * np.sin(2 * np.pi * 1_000 * np.arange(16_000) / 16_000).astype(np.float32)
    bufs = [f32(x), f32(noise(1_600, 2), 16_000, 2)]
    responses, code = stream(server, node("n", "LoudnessNode", runtime=CPYTHON), bufs)
    assert code == grpc.StatusCode.OK, responses
    assert [e.error_type for e in errors(responses)] == [pb.ERROR_TYPE_VALIDATION]
    lufs = [json.loads(r.data_outputs["n"])["lufs"] for r in results(responses) if "n" in r.data_outputs]
    assert len(lufs) == 1 and lufs[0] is not None and -20 < lufs[0] < -5


@pytest.mark.parametrize(("first", "second", "text"), CHANGES, ids=["rate", "channels"])
@pytest.mark.parametrize("node_type", NATIVE_CHECKED)
def test_both_runtimes_refuse_a_layout_change_in_the_same_words(
    server: RunningServer, node_type: str, first: tuple[int, int], second: tuple[int, int], text: str
) -> None:
    params = dict(READERS).get(node_type, {})
    (r1, c1), (r2, c2) = first, second
    found = {}
    for runtime in (RUST, CPYTHON):
        responses, code = stream(
            server, node("n", node_type, runtime=runtime, **params), [f32(noise(1_600, c1), r1, c1), f32(noise(1_600, c2), r2, c2)]
        )
        assert code == grpc.StatusCode.OK
        (err,) = errors(responses)
        found[runtime] = (err.error_type, err.message, json.loads(err.context).get("field"))
    field = "input.sample_rate" if "sample_rate" in text else "input.channels"
    assert found[RUST] == found[CPYTHON] == (pb.ERROR_TYPE_VALIDATION, node_message(node_type, text), field)


@pytest.mark.parametrize("node_type", NATIVE_CHECKED)
def test_both_runtimes_refuse_a_format_change_in_the_same_words(server: RunningServer, node_type: str) -> None:
    # A stream's format is its first chunk's, as its rate and channels are (docs/errors.md); a
    # node that passes its input on would otherwise change its results' format mid-stream.
    params = dict(READERS).get(node_type, {})
    found = {}
    for runtime in (RUST, CPYTHON):
        n = node("n", node_type, runtime=runtime, **params)
        responses, code = stream(server, n, [i16(noise(1_600)), f32(noise(1_600)), i16(noise(1_600))])
        assert code == grpc.StatusCode.OK
        (err,) = errors(responses)
        found[runtime] = (err.error_type, err.message, json.loads(err.context).get("field"))
        # The session goes on: the chunk after the refused one has its result.
        assert 2 in [r.sequence for r in results(responses)], responses
    expected = node_message(node_type, "input format changed from i16 to f32 within the stream")
    assert found[RUST] == found[CPYTHON] == (pb.ERROR_TYPE_VALIDATION, expected, "input.format")


@pytest.mark.parametrize(
    ("node_type", "second", "text"),
    [
        ("SileroVADNode", f32(noise(1_600), 16_000, 1), "input format changed from i16 to f32 within the stream"),
        ("SileroVADNode", i16(noise(1_600, 2), 16_000, 2), "SileroVADNode needs mono audio, got 2 channels; put a ChannelMixerNode"),
        ("SileroVADNode", i16(noise(800), 8_000, 1), "SileroVADNode needs 16000 Hz audio, got 8000 Hz; put an AudioResampleNode"),
        ("SpeechRecognitionNode", i16(noise(1_600, 2), 16_000, 2), "SpeechRecognitionNode needs mono audio, got 2 channels"),
        ("SpeechRecognitionNode", i16(noise(800), 8_000, 1), "SpeechRecognitionNode needs 16000 Hz audio, got 8000 Hz"),
        ("SpeechRecognitionNode", f32(noise(1_600), 16_000, 1), "input format changed from i16 to f32 within the stream"),
    ],
    ids=["silero-format", "silero-channels", "silero-rate", "recognition-channels", "recognition-rate", "recognition-format"],
)
def test_model_nodes_refuse_a_layout_change_as_validation(server: RunningServer, node_type: str, second: pb.AudioBuffer, text: str) -> None:
    responses, code = stream(server, node("n", node_type), [i16(noise(1_600)), second, i16(noise(1_600))])
    assert code == grpc.StatusCode.OK, responses
    (err,) = errors(responses)
    assert err.error_type == pb.ERROR_TYPE_VALIDATION, err
    assert text in err.message
    assert [r.sequence for r in results(responses)][:2] == [0, 2]


# --- 2. rates a node cannot take ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 999, 768_001, 4_294_967_295])
def test_both_resamplers_refuse_an_input_rate_outside_1000_to_768000_hz(server: RunningServer, rate: int) -> None:
    found = {}
    for runtime in (RUST, CPYTHON):
        resp = execute(server, node("n", "AudioResampleNode", runtime=runtime, output_rate=16_000), f32(np.ones(2, np.float32), rate))
        assert resp.WhichOneof("outcome") == "error", f"runtime {runtime} resampled {rate} Hz"
        found[runtime] = (
            resp.error.error_type,
            resp.error.message,
            json.loads(resp.error.context).get("field"),
        )
    expected = node_message("AudioResampleNode", f"input sample_rate {rate} Hz is outside 1000..=768000 Hz")
    assert found[RUST] == found[CPYTHON] == (pb.ERROR_TYPE_VALIDATION, expected, "input.sample_rate")


@pytest.mark.parametrize("output_rate", [999, 768_001])
def test_the_python_resamplers_output_rate_is_bounded_by_the_native_declaration(server: RunningServer, output_rate: int) -> None:
    resp = execute(server, node("n", "AudioResampleNode", runtime=CPYTHON, output_rate=output_rate), f32(noise(160)))
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION
    assert f"parameter `output_rate` must be an integer between 1000 and 768000, got {output_rate}" in resp.error.message


@pytest.mark.parametrize("rate", [1_000, 768_000])
def test_the_python_resampler_takes_the_edge_rates(server: RunningServer, rate: int) -> None:
    resp = execute(server, node("n", "AudioResampleNode", runtime=CPYTHON, output_rate=16_000), f32(noise(rate // 100), rate))
    assert resp.WhichOneof("outcome") == "result", resp.error
    assert resp.result.audio_outputs["n"].num_samples == 160


@pytest.mark.parametrize("rate", [768_001, 4_294_967_295])
def test_the_python_vad_refuses_input_above_768000_hz(server: RunningServer, rate: int) -> None:
    # 2 samples at 4294967295 Hz used to make it plan a 2 GB frame.
    resp = execute(server, node("n", "VADNode", runtime=CPYTHON), f32(np.ones(2, np.float32), rate))
    assert resp.WhichOneof("outcome") == "error"
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION
    assert resp.error.message == node_message(
        "VADNode",
        f"input sample_rate {rate} Hz is above the 768000 Hz a VADNode takes; "
        "put an AudioResampleNode with output_rate 768000 or less before it",
    )


def test_the_python_vad_takes_768000_hz(server: RunningServer) -> None:
    resp = execute(server, node("n", "VADNode", runtime=CPYTHON), f32(noise(76_800), 768_000))
    assert resp.WhichOneof("outcome") == "result", resp.error


def test_a_refused_first_chunk_does_not_fix_a_streams_rate(server: RunningServer) -> None:
    bufs = [f32(np.ones(2, np.float32), 4_294_967_295), f32(noise(1_600)), f32(noise(1_600))]
    for node_type, params in [("VADNode", {}), ("AudioResampleNode", {"output_rate": 8_000})]:
        responses, code = stream(server, node("n", node_type, runtime=CPYTHON, **params), bufs)
        assert code == grpc.StatusCode.OK
        assert [json.loads(e.context)["sequence"] for e in errors(responses)] == [0]
        assert [r.sequence for r in results(responses)][:2] == [1, 2]


# --- 3. resampled length -------------------------------------------------------------------------

LENGTH_CASES = [(16_000, 8_000, n) for n in (1, 5, 9)] + [(8_000, 12_000, n) for n in (1, 3)] + [(48_000, 16_000, 4_801)]


def expected_frames(n: int, rate_in: int, rate_out: int) -> int:
    """round(n × out / in), halves rounded up."""
    return (2 * n * rate_out + rate_in) // (2 * rate_in)


@pytest.mark.parametrize(("rate_in", "rate_out", "frames"), LENGTH_CASES)
def test_both_resamplers_give_the_same_length_in_one_call(server: RunningServer, rate_in: int, rate_out: int, frames: int) -> None:
    lengths = []
    for runtime in (RUST, CPYTHON):
        resp = execute(server, node("n", "AudioResampleNode", runtime=runtime, output_rate=rate_out), f32(noise(frames), rate_in))
        assert resp.WhichOneof("outcome") == "result", resp.error
        lengths.append(len(samples(resp.result.audio_outputs["n"])))
    assert lengths == [expected_frames(frames, rate_in, rate_out)] * 2


@pytest.mark.parametrize(("rate_in", "rate_out", "frames"), LENGTH_CASES)
def test_both_resamplers_give_the_same_length_in_a_stream(server: RunningServer, rate_in: int, rate_out: int, frames: int) -> None:
    x = noise(frames)
    chunks = [f32(x[i : i + 2], rate_in) for i in range(0, frames, 2)]
    lengths = []
    for runtime in (RUST, CPYTHON):
        responses, code = stream(server, node("n", "AudioResampleNode", runtime=runtime, output_rate=rate_out), chunks)
        assert code == grpc.StatusCode.OK and not errors(responses), errors(responses)
        lengths.append(sum(len(samples(r.audio_outputs["n"])) for r in results(responses) if "n" in r.audio_outputs))
    assert lengths == [expected_frames(frames, rate_in, rate_out)] * 2


# --- 4. band-pass edges at or above Nyquist ------------------------------------------------------


@pytest.mark.parametrize(("rate", "high_hz"), [(6_000, 3_400.0), (6_800, 3_400.0), (1_000, 3_400.0)])
def test_a_band_pass_edge_at_or_above_nyquist_is_a_validation_error_naming_it(server: RunningServer, rate: int, high_hz: float) -> None:
    resp = execute(server, node("n", "BandpassFilterNode", low_hz=300.0, high_hz=high_hz), f32(noise(1_600), rate))
    assert resp.WhichOneof("outcome") == "error"
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION, resp.error
    message = resp.error.message
    assert "failed: high_hz 3400.0 Hz" in message and f"Nyquist frequency of {rate} Hz audio ({rate / 2} Hz)" in message, (
        message
    )


def test_a_band_pass_edge_below_nyquist_filters(server: RunningServer) -> None:
    resp = execute(server, node("n", "BandpassFilterNode", low_hz=300.0, high_hz=3_400.0), f32(noise(1_600), 6_801))
    assert resp.WhichOneof("outcome") == "result", resp.error
