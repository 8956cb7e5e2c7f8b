"""Checks of a deployed service: the probes of docs/operations.md, auth, pipeline runs with a
native and a Python node, metrics.

Run three ways: against the release binary started exactly as the image's entrypoint would (by
`make test-python`); against the composed container (tests/test_container.py collects these
tests and gives them its `target`, under `make test-docker`); against any deployed service
named by REMOTEMEDIA_TARGET, REMOTEMEDIA_TARGET_METRICS and REMOTEMEDIA_TARGET_TOKENS_FILE
(`docker compose --profile tests run --rm tests` sets them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyloudnorm
import pytest

from conftest import GRPCURL, REPO
from deploy_files import start_like_the_image
from helpers import f32, manifest, node, samples
from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc


@dataclass
class Target:
    address: str
    metrics_address: str
    token: str


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    if os.environ.get("REMOTEMEDIA_TARGET"):
        token = Path(os.environ["REMOTEMEDIA_TARGET_TOKENS_FILE"]).read_text().split()[0]
        yield Target(os.environ["REMOTEMEDIA_TARGET"], os.environ["REMOTEMEDIA_TARGET_METRICS"], token)
        return
    with tempfile.TemporaryDirectory() as d:
        Path(d).chmod(0o755)
        tokens = Path(d) / "tokens"
        tokens.write_text("deployed-check-token\n")
        tokens.chmod(0o644)
        s = start_like_the_image(tokens)
        port = s.address.rsplit(":", 1)[1]
        metrics_port = s.metrics_address.rsplit(":", 1)[1]
        yield Target(f"localhost:{port}", f"127.0.0.1:{metrics_port}", "deployed-check-token")
        assert s.stop() == 0


def operations_probe_commands() -> list[str]:
    """The grpcurl commands of the Probes section of docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Probes", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line.strip() for line in block.splitlines() if line.strip().startswith("grpcurl ")]


def test_the_documented_probes_work_against_the_service(target: Target) -> None:
    commands = operations_probe_commands()
    assert len(commands) >= 5, commands
    for cmd in commands:
        real = cmd.replace("grpcurl ", f"{GRPCURL} ", 1).replace("localhost:50051", target.address)
        out = subprocess.run(real, shell=True, capture_output=True, text=True, timeout=30, env={**os.environ, "TOKEN": target.token})
        assert out.returncode == 0, f"{cmd}\n{out.stderr}"
        assert out.stdout.strip(), cmd
        if "Health/Check" in cmd:
            assert '"status": "SERVING"' in out.stdout


def test_pipelines_need_the_token(target: Target) -> None:
    request = pb.ExecuteRequest(
        manifest=manifest([node("g", "GainNode", gain=2.0)]),
        audio_inputs={"g": f32(np.array([0.25, -0.5], dtype=np.float32))},
    )
    with grpc.insecure_channel(target.address) as channel:
        stub = service_pb2_grpc.PipelineServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ExecutePipeline(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ExecutePipeline(request, timeout=30, metadata=[("authorization", f"Bearer {target.token}")])
    np.testing.assert_allclose(samples(reply.result.audio_outputs["g"]), [0.5, -1.0])


def test_a_python_node_runs_in_the_embedded_interpreter(target: Target) -> None:
    rate = 16_000
    tone = (0.5 * np.sin(2 * np.pi * 997 * np.arange(rate) / rate)).astype(np.float32)
    request = pb.ExecuteRequest(manifest=manifest([node("loudness", "LoudnessNode")]), audio_inputs={"loudness": f32(tone, rate)})
    with grpc.insecure_channel(target.address) as channel:
        stub = service_pb2_grpc.PipelineServiceStub(channel)
        reply = stub.ExecutePipeline(request, timeout=30, metadata=[("authorization", f"Bearer {target.token}")])
    assert reply.WhichOneof("outcome") == "result", reply.error
    # LoudnessNode exists only in Python: pyloudnorm in the server's venv measured this.
    assert json.loads(reply.result.metrics.node_metrics["loudness"].custom_metrics)["runtime"] == "python"
    expected = pyloudnorm.Meter(rate).integrated_loudness(tone.astype(np.float64))
    assert json.loads(reply.result.data_outputs["loudness"])["lufs"] == pytest.approx(expected, abs=0.01)


def test_metrics_are_served_and_count_requests(target: Target) -> None:
    with grpc.insecure_channel(target.address) as channel:
        service_pb2_grpc.PipelineServiceStub(channel).GetVersion(pb.VersionRequest(client_version="v1"), timeout=30)
    with urllib.request.urlopen(f"http://{target.metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    series = 'remotemedia_requests_total{rpc="GetVersion",code="OK",outcome="success"} '
    counted = [float(line[len(series) :]) for line in text.splitlines() if line.startswith(series)]
    assert counted and counted[0] >= 1, "the GetVersion call above is counted"
    assert "remotemedia_active_executions 0" in text
