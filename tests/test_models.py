"""Model hosting through the real server: models load once per process and are shared, pooled
instances are leased per utterance (never mixed up, never a hang), a busy pool ends in
RESOURCE_LIMIT with a retry delay, and preloaded models hold health at NOT_SERVING until ready."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import speech_data
from conftest import REPO, SERVER_BIN, RunningServer, assert_stops_before_serving, server_env, start_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from speech import CHUNK, RATE, pipeline, pocketsphinx_direct, run, settles, stream_chunks

from remotemedia_client import AudioBuffer, Client, GainNode, Node, ResourceLimitError, ResourceLimits, Result

MODEL_PLUGINS = REPO / "tests" / "model_plugins"
ASR = pipeline(Node("SpeechRecognitionNode", id="asr"))
RECOGNISER = "pocketsphinx-en-us"


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    return speech_data.load_16k("beckett.wav")


@pytest.fixture(scope="module")
def expected(beckett: np.ndarray) -> list[str]:
    return [t for t in pocketsphinx_direct(beckett) if t]


def finals(results: list[Result]) -> list[str]:
    return [u.text for r in results for t in r.transcripts.values() for u in t.utterances if u.text]


def rss(s: RunningServer) -> int:
    for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_idle(s: RunningServer) -> None:
    """No session left open, no model instance left leased."""
    settles(lambda: s.metric("remotemedia_active_streams") == 0, "the streams to be freed")
    settles(lambda: s.metric("remotemedia_active_executions") == 0, "the executions to end")
    settles(lambda: s.metric("remotemedia_model_instances_in_use", model=RECOGNISER) == 0, "the recognisers to be returned")


def open_utterance(client: Client, speech: np.ndarray) -> tuple[object, list[Result], int]:
    """Opens a stream and sends `speech` until the recogniser reports a partial hypothesis: the
    stream then holds a leased recogniser until its utterance ends. Returns the open stream
    (entered), its results so far and the next sample to send."""
    s = client.stream(ASR, sample_rate=RATE).__enter__()
    results = []
    for start in range(0, len(speech), CHUNK):
        s.send(speech[start : start + CHUNK])
        results.append(next(s))
        if results[-1].transcripts.get("asr") and results[-1].transcripts["asr"].partial:
            return s, results, start + CHUNK
    raise AssertionError("no utterance opened")


def finish(s: object, speech: np.ndarray, start: int, results: list[Result]) -> list[Result]:
    for i in range(start, len(speech), CHUNK):
        s.send(speech[i : i + CHUNK])  # type: ignore[attr-defined]
        results.append(next(s))  # type: ignore[call-overload]
    s.close()  # type: ignore[attr-defined]
    results.extend(s)  # type: ignore[call-overload]
    s.__exit__(None, None, None)  # type: ignore[attr-defined]
    return results


# --- loaded once ------------------------------------------------------------------------------


def in_thread(call: Callable[[], object], answers: queue.Queue[object]) -> threading.Thread:
    """Starts `call` on a thread of its own; its result, or what it raised, goes to `answers`."""

    def target() -> None:
        try:
            answers.put(call())
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            answers.put(e)

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_requests_load_the_recogniser_once_and_memory_stays_flat(beckett: np.ndarray) -> None:
    s = start_server()
    phrase = beckett[: int(1.4 * RATE)]  # the first phrase
    try:
        with Client(s.address, timeout=120) as client:
            texts = {run(client, ASR, phrase).transcripts["asr"].text for _ in range(50)}
            assert s.metric("remotemedia_model_loads_total", model=RECOGNISER) == 1
            after_50 = rss(s)
            for _ in range(450):
                texts.add(run(client, ASR, phrase).transcripts["asr"].text)
            after_500 = rss(s)
        assert s.metric("remotemedia_model_loads_total", model=RECOGNISER) == 1
        assert len(texts) == 1, f"the same audio gave different texts: {texts}"
        assert abs(after_500 - after_50) <= 0.10 * after_50, (
            f"RSS {after_50 / 2**20:.0f} MiB after 50, {after_500 / 2**20:.0f} MiB after 500"
        )
        assert_idle(s)
    finally:
        assert s.stop() == 0


def test_concurrent_streams_load_at_most_the_pool_and_each_hears_its_own_speech() -> None:
    # Eight streams share two recognisers on two cores: a chunk that catches up on held-back
    # speech, or a close that waits for a recogniser, takes longer than the 5 s default.
    s = start_server("--model-pools", f"{RECOGNISER}=2", "--model-wait-ms", "120000", "--default-timeout-ms", "30000")
    recordings = [speech_data.load_16k(n) for n in ("beckett.wav", "clone-test.wav")]
    expected = [[t for t in pocketsphinx_direct(r) if t] for r in recordings]
    failures: queue.Queue[BaseException] = queue.Queue()
    heard: dict[int, list[str]] = {}

    def one(i: int) -> None:
        try:
            with Client(s.address, timeout=300) as client:
                heard[i] = finals(list(stream_chunks(client, ASR, recordings[i % 2])))
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            failures.put(e)

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures.empty(), failures.get()
        for i in range(8):
            assert heard[i] == expected[i % 2], f"stream {i}"
        loads = s.metric("remotemedia_model_loads_total", model=RECOGNISER)
        assert 1 <= loads <= 2, loads
        assert s.metric("remotemedia_model_instances", model=RECOGNISER) == loads
        assert_idle(s)
    finally:
        assert s.stop() == 0


def test_concurrent_first_uses_of_a_shared_model_load_it_once() -> None:
    """Two requests ask for a shared model that is not loaded yet, at the same time (on the two
    Python workers): its load waits for a second load of it to start, and none does."""
    s = start_server("--python-nodes-path", str(MODEL_PLUGINS))
    first_use = pipeline(Node("SharedFirstUseNode", id="m"))
    answers: queue.Queue[object] = queue.Queue()
    try:
        with Client(s.address, timeout=60) as client:
            threads = [in_thread(lambda: client.run(first_use, data={"m": {}}, timeout=60), answers) for _ in range(2)]
            for t in threads:
                t.join()
        results = [answers.get() for _ in range(2)]
        assert all(isinstance(r, Result) for r in results), results
        assert len({r.data["m"]["data"]["model"] for r in results}) == 1, "both got the one instance"  # type: ignore[union-attr]
        assert s.metric("remotemedia_model_loads_total", model="first-use-test-model") == 1
        assert s.metric("remotemedia_model_instances", model="first-use-test-model") == 1
    finally:
        assert s.stop() == 0


# --- concurrency -------------------------------------------------------------------------------


def test_inferences_on_different_instances_run_in_parallel_and_native_requests_go_on() -> None:
    """Each inference waits inside the model, without the GIL, until three are inside: they end
    only if the server runs them at once, on three Python workers and three instances. While
    two of them wait, a native-only request is answered."""
    s = start_server("--python-nodes-path", str(MODEL_PLUGINS), "--python-workers", "3", "--default-timeout-ms", "30000")
    meet = pipeline(Node("RendezvousNode", id="r", parties=3))
    answers: queue.Queue[object] = queue.Queue()
    try:
        with Client(s.address, timeout=60) as client:

            def one() -> object:
                return client.run(meet, data={"r": {}}, limits=ResourceLimits(max_timeout_ms=30_000), timeout=60)

            threads = [in_thread(one, answers) for _ in range(2)]
            settles(lambda: s.metric("remotemedia_model_instances_in_use", model="rendezvous-test-model") == 2, "two inferences to wait")
            tone = AudioBuffer.from_numpy(np.full(16_000, 0.5, dtype=np.float32), 16_000)
            quieter = client.run(pipeline(GainNode("g", gain_db=-6.0206)), tone, timeout=10)
            np.testing.assert_allclose(quieter.audio["g"].to_numpy(), 0.25, atol=1e-4)
            assert all(t.is_alive() for t in threads), "the inferences still wait while the native request is answered"
            threads.append(in_thread(one, answers))
            for t in threads:
                t.join()
        results = [answers.get() for _ in range(3)]
        assert all(isinstance(r, Result) for r in results), results
        assert all(r.data["r"]["data"] == {"met": 3} for r in results)  # type: ignore[union-attr]
        assert s.metric("remotemedia_model_loads_total", model="rendezvous-test-model") == 3
        assert (
            s.metric("remotemedia_model_inference_duration_seconds_count", model="rendezvous-test-model", node_type="RendezvousNode") == 3
        )
        assert_idle(s)
    finally:
        assert s.stop() == 0


# --- leases ------------------------------------------------------------------------------------


@pytest.fixture()
def one_recogniser(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    wait_ms = getattr(request, "param", 25_000)
    s = start_server("--model-pools", f"{RECOGNISER}=1", "--model-wait-ms", str(wait_ms), "--default-timeout-ms", "30000")
    yield s
    assert s.stop() == 0


def test_with_one_recogniser_a_second_stream_waits_for_the_first_utterance(
    one_recogniser: RunningServer, beckett: np.ndarray, expected: list[str]
) -> None:
    s = one_recogniser
    with Client(s.address, timeout=120) as client:
        first, first_results, resume = open_utterance(client, beckett)
        # The second stream's speech is held back while the first holds the recogniser.
        with client.stream(ASR, sample_rate=RATE) as second:
            second_results = []
            for start in range(0, RATE * 2, CHUNK):
                second.send(beckett[start : start + CHUNK])
                second_results.append(next(second))
            assert not any(r.transcripts for r in second_results), "no recogniser, no words yet"
            assert s.metric("remotemedia_model_instances_in_use", model=RECOGNISER) == 1
            first_results = finish(first, beckett, resume, first_results)
            for start in range(RATE * 2, len(beckett), CHUNK):
                second.send(beckett[start : start + CHUNK])
                second_results.append(next(second))
            second.close()
            second_results.extend(second)
    assert finals(first_results) == expected
    assert finals(second_results) == expected, "the second stream's held speech was decoded in order, from a clean state"
    assert s.metric("remotemedia_model_loads_total", model=RECOGNISER) == 1
    assert s.metric("remotemedia_model_wait_duration_seconds_count", model=RECOGNISER) >= 1
    assert_idle(s)


@pytest.mark.parametrize("one_recogniser", [300], indirect=True)
def test_a_stream_that_cannot_get_a_recogniser_in_time_ends_with_retry_info(
    one_recogniser: RunningServer, beckett: np.ndarray, expected: list[str]
) -> None:
    s = one_recogniser
    with Client(s.address, timeout=120) as client:
        first, first_results, resume = open_utterance(client, beckett)
        looped = np.resize(beckett, len(beckett) * 6)
        with client.stream(ASR, sample_rate=RATE) as second, pytest.raises(ResourceLimitError) as e:
            for start in range(0, len(looped), CHUNK):
                second.send(looped[start : start + CHUNK])
                next(second)
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.retry_delay is not None and e.value.retry_delay > 0, "RetryInfo"
        assert e.value.context.get("retry_after_ms", 0) > 0, "the in-band error carries the delay too"
        assert RECOGNISER in e.value.message and "model_wait_ms" in e.value.message
        # Worded as the unary call's refusal below, with no Python exception name in it.
        assert f"model {RECOGNISER}: all 1 instances stayed in use" in e.value.message and "ModelPoolExhausted" not in e.value.message
        # The first stream never noticed.
        assert finals(finish(first, beckett, resume, first_results)) == expected
    assert s.metric("remotemedia_model_pool_exhausted_total", model=RECOGNISER) == 1
    assert s.metric("remotemedia_limit_rejections_total", limit="model_wait_ms") == 1
    assert_idle(s)


@pytest.mark.parametrize("one_recogniser", [300], indirect=True)
def test_a_request_that_cannot_get_a_recogniser_in_time_gets_resource_limit(
    one_recogniser: RunningServer, beckett: np.ndarray, expected: list[str]
) -> None:
    s = one_recogniser
    with Client(s.address, timeout=120) as client:
        first, first_results, resume = open_utterance(client, beckett)
        with pytest.raises(ResourceLimitError) as e:
            run(client, ASR, beckett)
        assert e.value.error_type == "RESOURCE_LIMIT" and e.value.node_id == "asr"
        assert e.value.retry_delay is not None and e.value.retry_delay > 0
        assert e.value.limit == "model_wait_ms"
        assert e.value.context["retryable"] is True, "it may pass after retry_after_ms"
        assert f"model {RECOGNISER}: all 1 instances stayed in use" in e.value.message
        assert finals(finish(first, beckett, resume, first_results)) == expected
        # Once the recogniser is free, the same request succeeds.
        assert [u.text for u in run(client, ASR, beckett).transcripts["asr"].utterances if u.text] == expected
    assert_idle(s)


def test_a_request_waiting_for_the_recogniser_gets_it_when_a_stream_lets_go(
    one_recogniser: RunningServer, beckett: np.ndarray, expected: list[str]
) -> None:
    s = one_recogniser
    answers: queue.Queue[object] = queue.Queue()
    with Client(s.address, timeout=120) as client:
        first, first_results, resume = open_utterance(client, beckett)
        waiter = in_thread(lambda: run(client, ASR, beckett), answers)
        first_results = finish(first, beckett, resume, first_results)
        waiter.join()
    answer = answers.get()
    assert isinstance(answer, Result), answer
    assert [u.text for u in answer.transcripts["asr"].utterances if u.text] == expected
    assert finals(first_results) == expected
    assert_idle(s)


def test_a_request_waiting_for_a_recogniser_holds_no_python_worker(beckett: np.ndarray, expected: list[str]) -> None:
    """With one Python worker, a request parked until a recogniser is free leaves the worker to
    other Python requests (a synthesis here) and to the stream it waits for."""
    s = start_server(
        "--python-workers", "1", "--model-pools", f"{RECOGNISER}=1", "--model-wait-ms", "25000", "--default-timeout-ms", "30000"
    )
    answers: queue.Queue[object] = queue.Queue()
    try:
        with Client(s.address, timeout=120) as client:
            first, first_results, resume = open_utterance(client, beckett)
            waiter = in_thread(lambda: run(client, ASR, beckett), answers)
            spoken = client.run(pipeline(Node("TextToSpeechNode", id="tts")), data={"tts": "still serving"}, timeout=20)
            assert spoken.audio["tts"].duration > 0.3
            assert waiter.is_alive(), "the recognition request still waits for the recogniser"
            first_results = finish(first, beckett, resume, first_results)
            waiter.join()
        answer = answers.get()
        assert isinstance(answer, Result), answer
        assert [u.text for u in answer.transcripts["asr"].utterances if u.text] == expected
        assert finals(first_results) == expected
        assert_idle(s)
    finally:
        assert s.stop() == 0


# --- preloading --------------------------------------------------------------------------------


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [str(SERVER_BIN), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_env(env))


def _next_record(proc: subprocess.Popen[str], message: str) -> dict[str, object]:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(record.get("message", "")).startswith(message):
            return record
    raise AssertionError(f"the server exited ({proc.wait()}) before logging {message!r}: {proc.stderr.read() if proc.stderr else ''}")


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status


def _metrics(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_health_is_not_serving_until_the_preloaded_models_are_ready(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    proc = _start(
        ["--python-nodes-path", str(MODEL_PLUGINS), "--preload-models", f"gated-test-model,{RECOGNISER}"],
        {"MODEL_GATE_FIFO": str(gate)},
    )
    try:
        bound = _next_record(proc, "preloading models before serving")
        address = str(bound["address"])
        assert _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        with open(gate, "w") as g:  # lets the gated model finish loading
            g.write("go")
        ready = _next_record(proc, "remotemedia-server listening")
        assert _health(address) == health_pb2.HealthCheckResponse.SERVING
        text = _metrics(str(ready["metrics_address"]))
        assert f'remotemedia_model_loads_total{{model="{RECOGNISER}"}} 2' in text, "the whole pool, before any request"
        assert 'remotemedia_model_loads_total{model="gated-test-model"} 1' in text
        assert f'remotemedia_model_load_duration_seconds_count{{model="{RECOGNISER}"}} 2' in text, "each load timed"
        assert f'remotemedia_model_instances{{model="{RECOGNISER}"}} 2' in text
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_while_models_preload_stops_the_server_before_it_serves(tmp_path: Path, signal_name: str) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)  # never opened here: the model stays loading
    proc = _start(["--python-nodes-path", str(MODEL_PLUGINS), "--preload-models", "gated-test-model"], {"MODEL_GATE_FIFO": str(gate)})
    _next_record(proc, "preloading models before serving")
    assert_stops_before_serving(proc, getattr(signal, signal_name), "shutdown requested while preloading models; stopped before serving")


def test_a_misspelled_preloaded_model_stops_start_up_naming_it() -> None:
    proc = _start(["--preload-models", "pocketsphinx-en-uss"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, "a configuration error, as other bad settings are"
    assert "preload_models names unknown model `pocketsphinx-en-uss`" in err, err
    assert RECOGNISER in err, "the known models are listed"


def test_a_model_that_fails_to_load_stops_start_up_with_its_name_and_cause() -> None:
    proc = _start(["--python-nodes-path", str(MODEL_PLUGINS), "--preload-models", "broken-test-model"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "model broken-test-model failed to load: OSError: weights file /nonexistent/broken.bin is missing" in err, err
