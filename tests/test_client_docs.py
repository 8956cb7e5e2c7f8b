"""The Python documentation runs as written: the READMEs' client examples and the files in
clients/python/examples, against a started server found through REMOTEMEDIA_ADDRESS, and the
plug-in nodes of docs/python-nodes.md, loaded by a server. (The TypeScript blocks are run by
clients/typescript/test/docs.test.ts.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pocketsphinx  # type: ignore[import-untyped]
import pytest
import soundfile
import speech_data
from conftest import REPO, RunningServer, start_server

from remotemedia_client import Client, Node, Pipeline, ResourceLimits, ValidationError

EXAMPLES = REPO / "clients" / "python" / "examples"


def readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def run_python(code: str, server: RunningServer, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")}
    env["REMOTEMEDIA_ADDRESS"] = server.address
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_readme_has_the_examples_this_file_runs() -> None:
    blocks = readme_python_blocks()
    assert len(blocks) == 2
    assert "Client()" in blocks[0] and "AsyncClient()" in blocks[1]


def test_the_readme_example_runs_unchanged(server: RunningServer, tmp_path: Path) -> None:
    done = run_python(readme_python_blocks()[0], server, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "speech 0.48-1.50 s at -9.0 dB"
    assert lines[1].endswith("ms on the server")


def test_the_readme_streaming_example_runs_unchanged(server: RunningServer, tmp_path: Path) -> None:
    done = run_python(readme_python_blocks()[1], server, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    # 50 chunks of 20 ms at 48 kHz, resampled to 16 kHz: one result per chunk and the flushed tail.
    assert [int(sequence) for sequence, _ in rows] == list(range(51))
    assert sum(int(frames) for _, frames in rows) == 16_000


def test_the_package_readme_example_runs_unchanged(server: RunningServer, tmp_path: Path) -> None:
    [block] = python_blocks(REPO / "clients" / "python" / "README.md")
    done = run_python(block, server, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(16000,) []"]


def test_the_plug_in_node_of_the_python_nodes_guide_loads_and_runs(tmp_path: Path) -> None:
    block, _ = python_blocks(REPO / "docs" / "python-nodes.md")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "invert.py").write_text(block)
    s = start_server("--python-nodes-path", str(plugins))
    try:
        with Client(s.address) as client:
            invert = client.catalogue().get("InvertNode")
            assert invert is not None and invert.properties["strength"]["maximum"] == 4.0
            audio = np.array([0.5, -0.25, 1.0, 0.5], np.float32)
            full = client.run(Pipeline.chain(Node("InvertNode", "inv", strength=0.5)), audio, sample_rate=8_000)
            half = client.run(Pipeline.chain(Node("InvertNode", "inv", strength=0.5, mode="half")), audio, sample_rate=8_000)
        np.testing.assert_array_equal(full.output().to_numpy(), np.array([-0.25, 0.125, -0.5, -0.25], np.float32))
        # "half" inverts every other sample and keeps the polarity of the rest.
        np.testing.assert_array_equal(half.output().to_numpy(), np.array([-0.25, -0.125, -0.5, 0.25], np.float32))
    finally:
        assert s.stop() == 0


def test_the_model_node_of_the_python_nodes_guide_recognises_speech(tmp_path: Path) -> None:
    _, block = python_blocks(REPO / "docs" / "python-nodes.md")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "transcribe.py").write_text(block)
    speech, rate = soundfile.read(speech_data.path("beckett.wav"), dtype="int16")
    decoder = pocketsphinx.Decoder(loglevel="ERROR")
    # Twice, as the node's one decoder hears it below: its noise estimate carries across utterances.
    expected = []
    for _ in range(2):
        decoder.start_utt()
        decoder.process_raw(speech.tobytes(), full_utt=True)
        decoder.end_utt()
        expected.append(decoder.hyp().hypstr)
    s = start_server("--python-nodes-path", str(plugins))
    try:
        with Client(s.address, timeout=60) as client:
            asr = Pipeline.chain(Node("Transcribe", "asr"))
            result = client.run(asr, speech, sample_rate=rate, limits=ResourceLimits(max_timeout_ms=30_000))
            assert result.data["asr"]["text"] == expected[0]
            # The same speech as float32 is converted to the 16-bit samples pocketsphinx reads.
            floats = client.run(asr, speech / np.float32(32768), sample_rate=rate, limits=ResourceLimits(max_timeout_ms=30_000))
            assert floats.data["asr"]["text"] == expected[1]
            with pytest.raises(ValidationError, match="Transcribe needs 16 kHz mono audio"):
                client.run(asr, speech, sample_rate=8_000)
        assert s.metric("remotemedia_model_loads_total", model="my-pocketsphinx") == 1
        assert s.metric("remotemedia_model_inference_duration_seconds_count", model="my-pocketsphinx", node_type="Transcribe") == 2
    finally:
        assert s.stop() == 0


def test_the_manifest_of_the_pipelines_guide_loads_and_runs(server: RunningServer, tmp_path: Path) -> None:
    [block] = re.findall(r"```json\n(.*?)```", (REPO / "docs" / "pipelines.md").read_text(), flags=re.DOTALL)
    (tmp_path / "denoise.json").write_text(block)
    pipeline = Pipeline.load(tmp_path / "denoise.json")
    with Client(server.address) as client:
        result = client.run(pipeline, np.full(4, 0.5, np.float32), sample_rate=16_000)
    np.testing.assert_allclose(result.output("gain").to_numpy(), 0.5 * 10 ** (-3 / 20), rtol=1e-6)


@pytest.mark.parametrize("name", ["speech_segments.py", "stream_async.py"])
def test_the_examples_run_as_written(server: RunningServer, tmp_path: Path, name: str) -> None:
    done = run_python((EXAMPLES / name).read_text(), server, tmp_path)
    assert done.returncode == 0, done.stderr
    expected = {
        "speech_segments.py": "speech 0.48-1.50 s at -9.0 dB",
        "stream_async.py": "500 chunks, 160000 frames at 16 kHz back",
    }[name]
    assert expected in done.stdout.splitlines()


def test_the_example_manifest_runs_from_the_command_line(server: RunningServer, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "speech.wav", np.zeros(48_000, np.float32), 48_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")}
    env["REMOTEMEDIA_ADDRESS"] = server.address
    cli = Path(sys.executable).parent / "remotemedia"
    command = [str(cli), "run", str(EXAMPLES / "vad.json"), "--input", "speech.wav", "--output", "speech-16k.wav"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    info = soundfile.info(str(tmp_path / "speech-16k.wav"))
    assert (info.samplerate, info.frames) == (16_000, 16_000)
