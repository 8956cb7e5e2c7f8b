"""The image, deployed with docker-compose.

`make test-docker` builds the image (docker/Dockerfile, target `prebuilt`) and runs this module
with REMOTEMEDIA_IMAGE naming it; elsewhere the module is skipped. The service is the
repository's docker-compose.yml with tests/docker-compose.test.yml on top: both ports published
on 127.0.0.1 only, the test's own tokens file as the compose secret, the test-only plug-ins.
Once the container's own health check reports healthy, the deployed checks of
tests/test_deployed.py run against it, then the checks of the container itself; the last test
stops it with `docker-compose stop` while a request is in flight.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from conftest import REPO
from deploy_files import COMPOSE, IMAGE_USER_UID, free_port
from helpers import f32, manifest, node, samples
from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc

# The deployed checks, collected in this module too so that they run against the container.
# Collection follows the module's namespace, so they come first; the last test stops the service.
from test_deployed import (  # noqa: F401
    Target,
    test_a_python_node_runs_in_the_embedded_interpreter,
    test_metrics_are_served_and_count_requests,
    test_pipelines_need_the_token,
    test_the_documented_probes_work_against_the_service,
)

IMAGE = os.environ.get("REMOTEMEDIA_IMAGE", "")
OVERRIDE = REPO / "tests" / "docker-compose.test.yml"
PROJECT = "remotemedia-test"
SERVICE = "remotemedia"
# The compose health check's start period (30 s) and interval (10 s), with room to spare.
HEALTHY_WITHIN_S = 120.0
# The image's size budget (389 MB measured, BENCHMARKS.md): outgrowing it is a decision to make
# when adding a dependency, not something to find out later.
IMAGE_SIZE_BUDGET = 500_000_000

pytestmark = pytest.mark.skipif(not IMAGE, reason="needs the built image and a Docker engine: make test-docker")


def pinned_version(package: str) -> str:
    text = (REPO / "service" / "python" / "requirements.txt").read_text()
    m = re.search(rf"^{re.escape(package)}==(\S+)", text, flags=re.M)
    assert m, f"{package} is not pinned in service/python/requirements.txt"
    return m.group(1)


def grace_period_s() -> float:
    m = re.search(r"^grace_period_ms\s*=\s*(\d+)", (REPO / "docker" / "server.toml").read_text(), flags=re.M)
    assert m
    return int(m.group(1)) / 1000


@dataclass
class Composed:
    """The composed service: its address, the compose command line and the container."""

    target: Target
    gate: Path
    env: dict[str, str]
    container: str = ""

    def argv(self, *args: str) -> list[str]:
        """A compose command line for this project; deploy.resources apply as Compose v2 applies them."""
        exe = shutil.which("docker-compose")
        return [
            *([exe] if exe else ["docker", "compose"]),
            "--project-name",
            PROJECT,
            "--compatibility",
            "-f",
            str(COMPOSE),
            "-f",
            str(OVERRIDE),
            *args,
        ]

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=self.env, timeout=timeout, check=False)
        assert out.returncode == 0, f"{' '.join(argv)}\n{out.stdout}\n{out.stderr}"
        return out

    def state(self) -> dict[str, Any]:
        out = subprocess.run(["docker", "inspect", self.container], capture_output=True, text=True, check=True, timeout=30)
        return dict(json.loads(out.stdout)[0]["State"])

    def records(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far."""
        out = subprocess.run(["docker", "logs", self.container], capture_output=True, text=True, check=True, timeout=30)
        records = []
        for line in out.stdout.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return records

    def log_tail(self) -> str:
        out = subprocess.run(["docker", "logs", "--tail", "40", self.container], capture_output=True, text=True, timeout=30, check=False)
        return out.stdout + out.stderr

    def exec(self, *argv: str) -> str:
        out = subprocess.run(["docker", "exec", self.container, *argv], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def wait_healthy(self) -> None:
        """Polls the container's own health check (the image's HEALTHCHECK as compose sets it)."""
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while True:
            state = self.state()
            health = state.get("Health", {})
            if health.get("Status") == "healthy":
                return
            if not state["Running"] or health.get("Status") == "unhealthy" or time.monotonic() > deadline:
                raise AssertionError(
                    f"the container never turned healthy: {state['Status']}, health {health.get('Status')}, "
                    f"checks {health.get('Log')}\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def wait_for_record(self, message: str, within_s: float = 30) -> None:
        deadline = time.monotonic() + within_s
        while not any(r.get("message") == message for r in self.records()):
            state = self.state()
            assert state["Running"], f"the container exited ({state['ExitCode']}) before logging {message!r}\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no log line {message!r} within {within_s} s\n{self.log_tail()}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def composed() -> Iterator[Composed]:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        root.chmod(0o755)
        token = secrets.token_urlsafe(24)
        tokens = root / "tokens"
        tokens.write_text(token + "\n")
        tokens.chmod(0o644)
        gate = root / "gate"
        gate.mkdir()
        gate.chmod(0o777)  # the container's user writes the gate's marker here
        grpc_port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "REMOTEMEDIA_PUBLISH_GRPC": f"127.0.0.1:{grpc_port}",
            "REMOTEMEDIA_PUBLISH_METRICS": f"127.0.0.1:{metrics_port}",
            "REMOTEMEDIA_TEST_TOKENS_FILE": str(tokens),
            "REMOTEMEDIA_TEST_GATE_DIR": str(gate),
        }
        target = Target(f"127.0.0.1:{grpc_port}", f"127.0.0.1:{metrics_port}", token)
        c = Composed(target, gate, env)
        c.compose("down", "--volumes", "--remove-orphans")  # what an interrupted run left
        try:
            c.compose("up", "--detach", "--no-build", SERVICE)
            c.container = c.compose("ps", "-q", SERVICE).stdout.strip()
            assert c.container, "docker-compose started no container"
            c.wait_healthy()
            yield c
        finally:
            c.compose("down", "--volumes", "--remove-orphans")


@pytest.fixture(scope="module")
def target(composed: Composed) -> Target:
    """The deployed checks' target: the composed container."""
    return composed.target


def call_metadata(target: Target) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {target.token}")]


def test_the_container_runs_the_built_image_with_its_settings(composed: Composed) -> None:
    container = json.loads(subprocess.run(["docker", "inspect", composed.container], capture_output=True, text=True, check=True).stdout)[0]
    image = json.loads(subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, text=True, check=True).stdout)[0]
    assert container["Image"] == image["Id"]
    assert image["Config"]["User"] == "remotemedia"
    assert image["Config"]["Healthcheck"]["Test"] == ["CMD", "remotemedia-server", "probe"]
    assert image["Config"]["Entrypoint"] == ["/usr/bin/tini", "--", "remotemedia-server"]
    assert image["Size"] < IMAGE_SIZE_BUDGET, f"the image is {image['Size'] / 1e6:.0f} MB"
    host = container["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]


def test_every_process_in_the_container_runs_as_the_unprivileged_user(composed: Composed) -> None:
    script = (
        "import json, pathlib\n"
        "procs = {}\n"
        "for p in pathlib.Path('/proc').iterdir():\n"
        "    if p.name.isdigit():\n"
        "        try:\n"
        "            lines = (p / 'status').read_text().splitlines()\n"
        "        except FileNotFoundError:\n"
        "            continue\n"
        "        procs[p.name] = dict(line.split(':\\t', 1) for line in lines if ':\\t' in line)\n"
        "print(json.dumps(procs))\n"
    )
    procs: dict[str, dict[str, str]] = json.loads(composed.exec("python3.11", "-c", script))
    assert procs["1"]["Name"] == "tini"
    names = {p["Name"] for p in procs.values()}
    assert "remotemedia-ser" in names, names  # the kernel keeps 15 characters of the name
    for pid, p in procs.items():
        assert set(p["Uid"].split()) == {str(IMAGE_USER_UID)}, f"{pid} {p['Name']}: uid {p['Uid']}"
        assert set(p["Gid"].split()) == {str(IMAGE_USER_UID)}, f"{pid} {p['Name']}: gid {p['Gid']}"
        assert int(p["CapEff"], 16) == 0, f"{pid} {p['Name']} has capabilities {p['CapEff']}"
        assert p["NoNewPrivs"] == "1"
    assert composed.exec("id", "-u").strip() == str(IMAGE_USER_UID)


def test_the_server_embeds_the_image_python_and_its_venv(composed: Composed) -> None:
    ready = next(r for r in composed.records() if r.get("message") == "python runtime ready")
    assert ready["python_version"].startswith("3.11."), ready
    assert ready["sys_prefix"] == "/opt/remotemedia/venv"
    assert ready["numpy_version"] == pinned_version("numpy")

    request = pb.ExecuteRequest(manifest=manifest([node("info", "InterpreterInfoNode")]), audio_inputs={"info": f32(np.zeros(16))})
    with grpc.insecure_channel(composed.target.address) as channel:
        reply = service_pb2_grpc.PipelineServiceStub(channel).ExecutePipeline(request, timeout=30, metadata=call_metadata(composed.target))
    assert reply.WhichOneof("outcome") == "result", reply.error
    info = json.loads(reply.result.data_outputs["info"])["info"]
    # One libpython in the process: Debian's, which the image's venv is made from.
    assert len(info["libpython"]) == 1 and re.fullmatch(r"/usr/lib/[^/]+/libpython3\.11\.so\.1\.0", info["libpython"][0]), info
    assert (info["prefix"], info["base_prefix"]) == ("/opt/remotemedia/venv", "/usr")
    assert (info["numpy"], info["scipy"]) == (pinned_version("numpy"), pinned_version("scipy"))


def test_compose_stop_lets_the_request_in_flight_finish_and_the_container_exits_0(composed: Composed) -> None:
    """Runs last: it stops the service."""
    marker, release = composed.gate / "marker", composed.gate / "release"
    audio = np.full(32, 0.25, dtype=np.float32)
    request = pb.ExecuteRequest(
        manifest=manifest([node("gate", "GateNode", marker="/gate/marker", release="/gate/release")]),
        audio_inputs={"gate": f32(audio)},
        resource_limits=pb.ResourceLimits(max_timeout_ms=30_000),
    )
    outcome: list[pb.ExecuteResponse] = []

    def call() -> None:
        with grpc.insecure_channel(composed.target.address) as channel:
            stub = service_pb2_grpc.PipelineServiceStub(channel)
            outcome.append(stub.ExecutePipeline(request, timeout=60, metadata=call_metadata(composed.target)))

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the gated request never reached its node"
        time.sleep(0.01)

    stop_started = time.monotonic()
    stop = subprocess.Popen(
        composed.argv("stop", SERVICE),
        cwd=REPO,
        env=composed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    composed.wait_for_record("shutdown started; draining")
    assert composed.state()["Running"], "the server quit with a request in flight"
    release.write_text("go")
    caller.join(timeout=60)
    stop_output, _ = stop.communicate(timeout=60)
    stopped_after_s = time.monotonic() - stop_started

    assert stop.returncode == 0, stop_output
    assert outcome and outcome[0].WhichOneof("outcome") == "result", outcome
    np.testing.assert_array_equal(samples(outcome[0].result.audio_outputs["gate"]), audio)
    state = composed.state()
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False), state
    assert stopped_after_s < grace_period_s(), f"stopping took {stopped_after_s:.1f} s"
    messages = [r.get("message") for r in composed.records()]
    assert messages[-1] == "shutdown complete", messages[-5:]
