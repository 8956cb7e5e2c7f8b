"""The real grpcurl against the real server, with no proto files: reflection, health, GetVersion."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import GRPCURL, REPO, RunningServer


def grpcurl(*args: str, data: str | None = None) -> str:
    cmd = [str(GRPCURL), "-plaintext"]
    if data is not None:
        cmd += ["-d", data]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"grpcurl {' '.join(args)} failed: {out.stderr}"
    return out.stdout


@pytest.fixture(scope="module", autouse=True)
def _grpcurl_installed() -> None:
    assert GRPCURL.exists(), f"{GRPCURL} is missing; `make tools` installs it"


def test_list_shows_the_pipeline_and_health_services(server: RunningServer) -> None:
    services = grpcurl(server.address, "list").split()
    assert "remotemedia.v1.PipelineService" in services
    assert "grpc.health.v1.Health" in services
    methods = grpcurl(server.address, "list", "remotemedia.v1.PipelineService").split()
    assert methods == [
        "remotemedia.v1.PipelineService.ExecutePipeline",
        "remotemedia.v1.PipelineService.GetVersion",
        "remotemedia.v1.PipelineService.StreamPipeline",
    ]


def test_describe_shows_messages_with_their_field_numbers(server: RunningServer) -> None:
    text = grpcurl(server.address, "describe", "remotemedia.v1.ExecuteRequest")
    assert "map<string, .remotemedia.v1.AudioBuffer> audio_inputs = 2;" in text
    assert "repeated string output_nodes = 6;" in text
    stream = grpcurl(server.address, "describe", "remotemedia.v1.PipelineService.StreamPipeline")
    assert "stream .remotemedia.v1.StreamRequest" in stream and "stream .remotemedia.v1.StreamResponse" in stream


def test_health_reports_serving(server: RunningServer) -> None:
    assert json.loads(grpcurl(server.address, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}
    named = grpcurl(server.address, "grpc.health.v1.Health/Check", data='{"service": "remotemedia.v1.PipelineService"}')
    assert json.loads(named) == {"status": "SERVING"}


def test_get_version_lists_protocols_and_node_types(server: RunningServer) -> None:
    v = json.loads(grpcurl(server.address, "remotemedia.v1.PipelineService/GetVersion", data='{"client_version": "v1"}'))
    assert v["compatible"] is True
    info = v["versionInfo"]
    assert info["protocolVersion"] == "v1"
    assert info["supportedProtocols"] == ["v1"]
    assert {
        "AudioResampleNode", "VADNode", "FormatConverterNode", "ChannelMixerNode", "AudioChunkerNode", "GainNode", "PassThroughNode"
    } <= set(info["supportedNodeTypes"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["buildTimestamp"])
    # The catalogue: each node type's parameters as JSON Schema, its ports and runtimes.
    types = {t["name"]: t for t in info["nodeTypes"]}
    assert sorted(types) == sorted(info["supportedNodeTypes"])
    resample = types["AudioResampleNode"]
    assert json.loads(resample["paramsSchema"])["properties"]["output_rate"]["x-unit"] == "Hz"
    assert resample["runtimes"] == ["RUNTIME_HINT_RUST", "RUNTIME_HINT_CPYTHON"]
    assert [(p["name"], p["kind"]) for p in types["VADNode"]["outputs"]] == [("output", "PORT_KIND_AUDIO"), ("segments", "PORT_KIND_DATA")]


def readme_grpcurl_commands() -> list[str]:
    """The grpcurl commands of the README's quickstart, joined across line continuations."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip().startswith("grpcurl "):
                commands.append(cmd.strip())
    return commands


def test_the_readme_grpcurl_examples_work_as_written(server: RunningServer, tmp_path: Path) -> None:
    commands = readme_grpcurl_commands()
    assert len(commands) >= 4, commands
    port = server.address.rsplit(":", 1)[1]
    for cmd in commands:
        real = cmd.replace("grpcurl ", f"{GRPCURL} ", 1).replace("localhost:50051", f"localhost:{port}")
        out = subprocess.run(real, shell=True, capture_output=True, text=True, timeout=30, cwd=REPO)
        assert out.returncode == 0, f"{cmd}\n{out.stderr}"
        assert out.stdout.strip(), cmd


def grpcurl_error(*args: str, data: str) -> str:
    out = subprocess.run([str(GRPCURL), "-plaintext", "-d", data, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out.stdout
    return out.stdout + out.stderr


def test_grpcurl_decodes_the_error_details_with_no_proto_files(server: RunningServer) -> None:
    text = grpcurl_error(
        "-H", "remotemedia-protocol-version: v2", server.address, "remotemedia.v1.PipelineService/ExecutePipeline", data="{}"
    )
    assert "is not recognized" not in text, text
    assert "FailedPrecondition" in text
    assert '"@type": "type.googleapis.com/google.rpc.ErrorInfo"' in text and '"reason": "VERSION_MISMATCH"' in text


def test_grpcurl_decodes_bad_request_violations(server: RunningServer) -> None:
    manifest = {"manifest": {"version": "v1", "nodes": [{"id": "a", "node_type": "NoSuchNode"}]}}
    text = grpcurl_error(server.address, "remotemedia.v1.PipelineService/StreamPipeline", data=json.dumps(manifest))
    assert "is not recognized" not in text, text
    assert '"@type": "type.googleapis.com/google.rpc.BadRequest"' in text
    assert "unknown node type `NoSuchNode`" in text


@pytest.mark.parametrize("symbol", ["google.rpc.ErrorInfo", "google.rpc.RetryInfo", "google.rpc.BadRequest", "google.rpc.Status"])
def test_reflection_describes_the_error_detail_types(server: RunningServer, symbol: str) -> None:
    assert f"{symbol} is a message" in grpcurl(server.address, "describe", symbol)
