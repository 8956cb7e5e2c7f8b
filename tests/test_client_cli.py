"""The ``remotemedia`` command line (installed by the Python client) against the real binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from conftest import RunningServer, start_server

from remotemedia_client import AudioResampleNode, GainNode, Node, PassThroughNode, Pipeline, VADNode

CLI = Path(sys.executable).parent / "remotemedia"
TOKEN = "cli-test-token-91ab"


def remotemedia(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env={**clean, **(env or {})}, timeout=120, check=False)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def tone(seconds: float, rate: int, *, start: float, stop: float) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t) * ((t >= start) & (t < stop))).astype(np.float32)


@pytest.fixture(scope="module")
def secured() -> Iterator[RunningServer]:
    s = start_server("--auth-tokens", TOKEN)
    yield s
    assert s.stop() == 0


def test_version_health_and_nodes(server: RunningServer) -> None:
    version = remotemedia("--address", server.address, "--json", "version")
    assert version.returncode == 0, version.stderr
    assert as_json(version)["compatible"] is True and as_json(version)["supported_protocols"] == ["v1"]

    health = remotemedia("--address", server.address, "--json", "health")
    assert health.returncode == 0 and as_json(health) == {"service": "", "status": "SERVING"}
    unknown = remotemedia("--address", server.address, "health", "--service", "no.such.Service")
    assert unknown.returncode == 3 and unknown.stdout.strip() == "SERVICE_UNKNOWN"

    nodes = remotemedia("--address", server.address, "--json", "nodes")
    assert nodes.returncode == 0 and {"GainNode", "VADNode", "LoudnessNode"} <= set(as_json(nodes))
    plain = remotemedia("nodes", env={"REMOTEMEDIA_ADDRESS": server.address})
    assert plain.returncode == 0 and plain.stdout.splitlines() == as_json(nodes)


def test_run_writes_each_requested_output(server: RunningServer, tmp_path: Path) -> None:
    p = Pipeline("down")
    vad = p.add(AudioResampleNode("rs", output_rate=16_000)) >> VADNode("vad")
    vad >> GainNode("quiet", gain_db=-20)
    p.save(tmp_path / "down.json")
    stereo = np.stack([tone(1.0, 48_000, start=0.2, stop=0.6)] * 2, axis=1)
    soundfile.write(tmp_path / "in.wav", stereo, 48_000, subtype="PCM_16")

    done = remotemedia(
        "--address", server.address, "--json", "run", str(tmp_path / "down.json"),
        "--input", str(tmp_path / "in.wav"), "--output", str(tmp_path / "quiet.flac"), "--output", f"vad={tmp_path / 'vad.wav'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = as_json(done)
    assert summary["audio"]["quiet"]["path"] == str(tmp_path / "quiet.flac")
    assert [round(s["start_s"], 1) for s in summary["data"]["vad"]["segments"]] == [0.2]
    assert summary["metrics"]["nodes"]["rs"]["runtime"] == "rust"
    for name in ("quiet.flac", "vad.wav"):
        info = soundfile.info(str(tmp_path / name))
        assert (info.samplerate, info.channels, info.frames) == (16_000, 2, 16_000), name

    text = remotemedia("--address", server.address, "run", str(tmp_path / "down.json"), "-i", str(tmp_path / "in.wav"))
    assert text.returncode == 0 and "quiet: 16000 frames × 2 ch at 16000 Hz" in text.stdout


def test_stream_writes_a_minute_long_wav_that_reads_back_whole(server: RunningServer, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "minute.wav", tone(60.0, 16_000, start=10, stop=20), 16_000, subtype="PCM_16")
    Pipeline.chain(AudioResampleNode("rs", output_rate=8_000), VADNode("vad")).save(tmp_path / "vad.json")

    done = remotemedia(
        "--address", server.address, "--json", "stream", str(tmp_path / "vad.json"),
        "--input", str(tmp_path / "minute.wav"), "--output", str(tmp_path / "out.wav"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = as_json(done)
    assert summary["chunks"] == 3_000 and summary["results"] == 3_001
    assert [(round(s["start_s"]), round(s["end_s"])) for s in summary["segments"]["vad"]] == [(10, 20)]
    out, rate = soundfile.read(str(tmp_path / "out.wav"), dtype="float32")
    assert rate == 8_000 and out.shape == (480_000,)
    assert np.abs(out[: 9 * 8_000]).max() == 0 and np.abs(out[11 * 8_000 : 19 * 8_000]).max() > 0.4


def test_a_long_stream_shows_progress_on_a_terminal(server: RunningServer, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "long.wav", np.zeros(12 * 8_000, np.float32), 8_000)
    Pipeline.chain(PassThroughNode("p")).save(tmp_path / "p.json")
    args = ("--address", server.address, "stream", str(tmp_path / "p.json"), "--input", str(tmp_path / "long.wav"))
    shown = remotemedia(*args, env={"TTY_COMPATIBLE": "1", "COLUMNS": "100"})
    assert shown.returncode == 0, shown.stderr
    assert "streaming long.wav" in shown.stderr and "600 chunks" in shown.stdout
    hidden = remotemedia(*args, "--no-progress", env={"TTY_COMPATIBLE": "1"})
    assert hidden.returncode == 0 and "streaming long.wav" not in hidden.stderr


def test_exit_codes_tell_usage_connection_refusal_and_pipeline_errors_apart(
    server: RunningServer, secured: RunningServer, tmp_path: Path
) -> None:
    good = tmp_path / "gain.json"
    Pipeline.chain(GainNode("g", gain_db=-1)).save(good)
    soundfile.write(tmp_path / "in.wav", np.zeros(160, np.float32), 16_000)
    wav = str(tmp_path / "in.wav")

    assert remotemedia("--address", server.address, "run").returncode == 2  # argparse: the manifest is missing
    missing = remotemedia("--address", server.address, "--json", "run", str(tmp_path / "nope.json"), "-i", wav)
    assert missing.returncode == 2 and as_json(missing)["error"]["kind"] == "usage"
    unreadable = remotemedia("--address", server.address, "run", str(good), "-i", str(good))
    assert unreadable.returncode == 2 and "cannot read" in unreadable.stderr

    unreachable = remotemedia("--address", "127.0.0.1:9", "--json", "run", str(good), "-i", wav)
    assert unreachable.returncode == 3 and as_json(unreachable)["error"]["type"] == "ServiceUnavailableError"

    no_token = remotemedia("--address", secured.address, "--json", "run", str(good), "-i", wav)
    assert no_token.returncode == 4 and as_json(no_token)["error"]["type"] == "AuthenticationError"
    with_token = remotemedia("--address", secured.address, "--token", TOKEN, "run", str(good), "-i", wav)
    assert with_token.returncode == 0, with_token.stderr

    bad = tmp_path / "bad.json"
    Pipeline.chain(Node("NoSuchNode", "x")).save(bad)
    failed = remotemedia("--address", server.address, "--json", "run", str(bad), "-i", wav)
    assert failed.returncode == 5
    error = as_json(failed)["error"]
    assert error["type"] == "ValidationError" and error["violations"][0]["field"] == "nodes[0].node_type"


def test_a_ten_minute_16_bit_file_stays_16_bit_and_an_over_limit_run_names_the_ways_out(server: RunningServer, tmp_path: Path) -> None:
    ten = tmp_path / "ten.wav"
    soundfile.write(ten, np.full(600 * 48_000, 1_000, np.int16), 48_000, subtype="PCM_16")
    Pipeline.chain(GainNode("g", gain_db=-6)).save(tmp_path / "gain.json")
    args = ("--address", server.address, "--json", "run", str(tmp_path / "gain.json"), "-i", str(ten), "-o", str(tmp_path / "out.wav"))

    # 28.8 M int16 samples fit in one message (float32 would not), but not in the samples limit.
    refused = remotemedia(*args)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    error = as_json(refused)["error"]
    assert error["type"] == "ResourceLimitError" and error["limit"] == "max_audio_samples"
    assert f"remotemedia stream {tmp_path / 'gain.json'} --input {ten}" in error["hint"]
    assert "--max-audio-samples N" in error["hint"]

    done = remotemedia(*args, "--max-audio-samples", "30000000", "--max-memory-bytes", "400000000", "--max-timeout-ms", "30000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert as_json(done)["audio"]["g"]["format"] == "i16"
    info = soundfile.info(str(tmp_path / "out.wav"))
    assert (info.subtype, info.frames) == ("PCM_16", 600 * 48_000)
    assert np.all(soundfile.read(str(tmp_path / "out.wav"), dtype="int16", frames=1_000)[0] == 501)  # 1000 × 10^(-6/20)


def test_bad_settings_and_arguments_are_usage_errors_naming_them_not_tracebacks(server: RunningServer, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "in.wav", np.zeros(1_600, np.float32), 16_000)
    wav = str(tmp_path / "in.wav")
    gain = tmp_path / "gain.json"
    Pipeline.chain(GainNode("g", gain_db=-1)).save(gain)
    two = tmp_path / "two.json"
    Pipeline.from_dict(
        {
            "version": "v1",
            "nodes": [
                {"id": "a", "node_type": "PassThroughNode"},
                {"id": "b", "node_type": "PassThroughNode"},
                {"id": "m", "node_type": "GainNode"},
            ],
            "edges": [{"from": "a", "to": "m"}, {"from": "b", "to": "m"}],
        }
    ).save(two)
    typed = tmp_path / "typed.json"
    typed.write_text(
        '{"version": "v1", "nodes": [{"id": "g", "node_type": "GainNode", "runtime_hint": true}], "config": {"max_retries": "3"}}'
    )
    cases = [
        (("--timeout", "-1", "nodes"), "timeout"),
        (("--timeout", "nan", "nodes"), "timeout"),
        (("--address", "127.0.0.1:99999", "nodes"), "port"),
        (("--token", "two words", "nodes"), "token"),
        (("stream", str(gain), "--input", wav, "--chunk-ms", "nan"), "--chunk-ms"),
        (("stream", str(two), "--input", wav), "--node"),
        (("run", str(typed), "-i", wav), "runtime_hint"),
        # A misspelt node in NODE=PATH is named, not taken for a file called "nope=out.wav";
        # stream writes one output, so a second --output is refused rather than dropped.
        (("run", str(gain), "-i", wav, "-o", f"nope={tmp_path / 'out.wav'}"), "no node 'nope'"),
        (("stream", str(gain), "-i", wav, "-o", str(tmp_path / "a.wav"), "-o", str(tmp_path / "b.wav")), "--output is given 2 times"),
    ]
    for args, named in cases:
        done = remotemedia("--address", server.address, *args) if "--address" not in args else remotemedia(*args)
        assert done.returncode == 2 or (named == "runtime_hint" and done.returncode == 5), (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and named in done.stderr, (args, done.stderr)


def test_an_empty_file_streams_as_it_runs(server: RunningServer, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 48_000)
    manifest = tmp_path / "rs.json"
    Pipeline.chain(AudioResampleNode("rs", output_rate=16_000)).save(manifest)
    for command in ("run", "stream"):
        out = tmp_path / f"{command}.wav"
        flags = ("-i", str(tmp_path / "empty.wav")) if command == "run" else ("--input", str(tmp_path / "empty.wav"))
        done = remotemedia("--address", server.address, command, str(manifest), *flags, "-o", str(out))
        assert done.returncode == 0, (command, done.stderr)
        info = soundfile.info(out)
        assert (info.frames, info.samplerate) == (0, 16_000), command
        if command == "stream":
            assert "streamed 1 chunks" in done.stdout, "the one empty chunk sent is counted"


def test_output_files_take_any_format_and_subtype_soundfile_writes(server: RunningServer, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "in.wav", tone(0.5, 16_000, start=0, stop=0.5), 16_000, subtype="PCM_16")
    Pipeline.chain(GainNode("g", gain_db=-6)).save(tmp_path / "gain.json")
    base = ("--address", server.address, "run", str(tmp_path / "gain.json"), "-i", str(tmp_path / "in.wav"))

    for output, options, subtype in [
        ("out.ogg", (), "VORBIS"),
        ("out.flac", (), "PCM_16"),
        ("f32.wav", ("--sample-format", "f32"), "FLOAT"),
        ("24.wav", ("--subtype", "PCM_24"), "PCM_24"),
    ]:
        done = remotemedia(*base, "-o", str(tmp_path / output), *options)
        assert done.returncode == 0, done.stderr
        assert soundfile.info(str(tmp_path / output)).subtype == subtype, output

    streamed = remotemedia(
        "--address", server.address, "stream", str(tmp_path / "gain.json"), "-i", str(tmp_path / "in.wav"),
        "-o", str(tmp_path / "streamed.wav"), "--subtype", "PCM_U8",
    )  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    assert soundfile.info(str(tmp_path / "streamed.wav")).subtype == "PCM_U8"

    # Impossible outputs are usage errors before anything runs, naming the choices.
    wrong_subtype = remotemedia(*base, "-o", str(tmp_path / "x.ogg"), "--subtype", "PCM_16")
    assert wrong_subtype.returncode == 2 and "OGG takes: VORBIS, OPUS" in " ".join(wrong_subtype.stderr.split())
    unknown = remotemedia(*base, "-o", str(tmp_path / "x.sound"))
    said = " ".join(unknown.stderr.split())
    assert unknown.returncode == 2 and "cannot tell which sound file format" in said and "FLAC" in said


@pytest.mark.parametrize("args", [("nodes",), ("--json", "nodes"), ("version",), ("health",)])
def test_a_reader_that_goes_away_ends_the_command_quietly(server: RunningServer, args: tuple[str, ...]) -> None:
    read, write = os.pipe()
    os.close(read)  # `remotemedia nodes | head -1` once head has exited: every write fails with EPIPE
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")}
    try:
        done = subprocess.run(
            [str(CLI), "--address", server.address, *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=clean,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_stream_reports_transcripts_and_other_data_as_run_does(server: RunningServer, tmp_path: Path) -> None:
    # A recogniser's utterances are its transcript, not "0 speech segments", and data outputs
    # of other nodes are reported too, not dropped.
    speech = Path(__file__).parent / "data" / "speech" / "beckett.wav"
    Pipeline.chain(Node("SpeechRecognitionNode", "asr")).save(tmp_path / "asr.json")
    ran = remotemedia("--address", server.address, "--json", "run", str(tmp_path / "asr.json"), "--input", str(speech))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    streamed = remotemedia("--address", server.address, "--json", "stream", str(tmp_path / "asr.json"), "--input", str(speech))
    assert streamed.returncode == 0, streamed.stdout + streamed.stderr
    summary = as_json(streamed)
    assert "asr" not in summary["segments"], summary["segments"]
    assert summary["transcripts"]["asr"]["text"] == as_json(ran)["data"]["asr"]["text"] != ""
    assert all(u["text"] for u in summary["transcripts"]["asr"]["utterances"])
    shown = remotemedia("--address", server.address, "stream", str(tmp_path / "asr.json"), "--input", str(speech), "--no-progress")
    assert "utterances" in shown.stdout and summary["transcripts"]["asr"]["utterances"][0]["text"] in shown.stdout, shown.stdout

    Pipeline.chain(Node("LoudnessNode", "loud")).save(tmp_path / "loud.json")
    loud = as_json(remotemedia("--address", server.address, "--json", "stream", str(tmp_path / "loud.json"), "--input", str(speech)))
    assert len(loud["data"]["loud"]) > 0 and loud["segments"] == {} and loud["transcripts"] == {}


def test_verbose_logs_each_call_on_stderr(server: RunningServer) -> None:
    quiet = remotemedia("--address", server.address, "nodes")
    loud = remotemedia("--address", server.address, "-v", "nodes")
    assert quiet.returncode == loud.returncode == 0
    assert "call finished" not in quiet.stderr
    assert "call finished" in loud.stderr and "rpc=GetVersion" in loud.stderr, loud.stderr
    assert loud.stdout == quiet.stdout, "the log goes to stderr only"
