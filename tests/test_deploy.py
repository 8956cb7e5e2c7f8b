"""The deployment files agree with the server and with CI, and the image's entrypoint works.

Without an engine: the compose files go through a real parser, the Dockerfile, compose file and
Kubernetes manifests are read and cross-checked against `remotemedia-server --help`, and the
release binary is started exactly as the image's entrypoint would start it. The image itself is
built and run under docker-compose by tests/test_container.py (`make test-docker`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from deploy_files import (
    COMPOSE,
    RELEASE_BIN,
    compose,
    dockerfile_stages,
    kubernetes,
    server_env_names,
    start_like_the_image,
)


@pytest.fixture(scope="module", autouse=True)
def _release_binary() -> None:
    if not RELEASE_BIN.exists():
        raise AssertionError(f"{RELEASE_BIN} is missing; run `make build-release` (make test does)")


def env_entries_of(container: dict) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


def test_docker_compose_config_accepts_the_compose_files() -> None:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing; run `make deploy-tools` (make test does)"
    out = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    services = subprocess.run([exe, "-f", str(COMPOSE), "config", "--services"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert set(services.stdout.split()) == {"remotemedia", "prometheus", "tests"}
    # With the test's override, as tests/test_container.py composes the service.
    override = REPO / "tests" / "docker-compose.test.yml"
    env = {
        **os.environ,
        "REMOTEMEDIA_PUBLISH_GRPC": "127.0.0.1:50051",
        "REMOTEMEDIA_PUBLISH_METRICS": "127.0.0.1:9464",
        "REMOTEMEDIA_TEST_TOKENS_FILE": "/dev/null",
        "REMOTEMEDIA_TEST_GATE_DIR": "/tmp",
    }
    out = subprocess.run([exe, "-f", str(COMPOSE), "-f", str(override), "config"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    service = yaml.safe_load(out.stdout)["services"]["remotemedia"]
    published = {tuple(p.split("/")[0].rsplit(":", 2)[:2]) for p in service["ports"]}
    assert published == {("127.0.0.1", "50051"), ("127.0.0.1", "9464")}, service["ports"]


def make_rule(makefile: str, target: str) -> tuple[list[str], str]:
    """The prerequisites and the recipe of `target` in the Makefile (continued lines joined)."""
    m = re.search(rf"^{re.escape(target)}:([^#\n]*)(?:##[^\n]*)?\n((?:\t[^\n]*\n)*)", makefile, flags=re.M)
    assert m, f"the Makefile has no {target} target"
    return m.group(1).split(), re.sub(r"\\\n\s*", " ", m.group(2))


def test_both_routes_build_one_image_with_the_make_targets_ci_runs() -> None:
    stages = dockerfile_stages()
    names = list(stages)
    # `runtime` (compiled in the builder) and `prebuilt` (from the build machine's docker/dist):
    # the base stage's settings plus the venv and the binary, installed by one script from what
    # `make docker-dist` made.
    for final, installer in (("prebuilt", "prebuilt-install"), ("runtime", "builder")):
        assert stages[final].parent == stages[installer].parent == "base"
        assert sorted(c.split()[-1] for c in stages[final].copies) == ["/opt/remotemedia/venv", "/usr/local/bin/remotemedia-server"]
        assert all(c.startswith(f"--from={installer} ") for c in stages[final].copies)
        installs = " ".join(stages[installer].run)
        assert "install-dist.sh venv" in installs and "install-dist.sh server" in installs, installer
        assert stages[final].user == "remotemedia"
    runtime, prebuilt = stages["runtime"], stages["prebuilt"]
    assert (runtime.env, runtime.expose, runtime.entrypoint, runtime.healthcheck) == (prebuilt.env, prebuilt.expose, prebuilt.entrypoint, prebuilt.healthcheck)
    assert {c.split()[0] for c in stages["prebuilt-install"].copies} >= {"docker/dist/wheels/", "docker/dist/remotemedia-server"}
    builder_targets = [t for cmd in stages["builder"].run for t in re.findall(r"(?:^|&&)\s*make\s+([a-z-]+)", cmd)]
    assert builder_targets == ["docker-dist"], stages["builder"].run

    # The legacy builder builds every stage before its target: up to `prebuilt`, only the base
    # image is pulled, which is Debian bookworm, public or made by `make docker-base`.
    assert all(stages[n].base == "debian:bookworm-slim" for n in names[: names.index("prebuilt") + 1])
    makefile = (REPO / "Makefile").read_text()
    _, base_recipe = make_rule(makefile, "docker-base")
    assert re.search(r"mmdebstrap .*\bbookworm\b", base_recipe) and "$(DOCKER) import" in base_recipe

    # CI (`make test`) runs test-docker, which builds the `prebuilt` image from docker-dist,
    # made from the release binary `make test` builds.
    test_prereqs, _ = make_rule(makefile, "test")
    assert {"build-release", "test-docker"} <= set(test_prereqs)
    assert "build-release" in make_rule(makefile, "docker-dist")[0]
    image_prereqs, image_recipe = make_rule(makefile, "docker-image")
    assert "docker-dist" in image_prereqs and "--target prebuilt" in image_recipe
    assert "docker-image" in make_rule(makefile, "test-docker")[1]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_dockerfile_compose_and_kubernetes_agree_with_the_server() -> None:
    known = server_env_names()
    runtime = dockerfile_stages()["runtime"]
    service = compose()["services"]["remotemedia"]
    objects = kubernetes()
    deployment = objects["Deployment/remotemedia"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    # Every REMOTEMEDIA_* variable set anywhere is one the server reads.
    for where, names in {
        "Dockerfile": runtime.env,
        "docker-compose.yml": service["environment"],
        "deployment.yaml": env_entries_of(container),
    }.items():
        unknown = {n for n in names if n.startswith("REMOTEMEDIA_")} - known
        assert not unknown, f"{where} sets variables the server does not read: {unknown}"

    # Ports: the image listens where it EXPOSEs, compose publishes those, Kubernetes declares them.
    grpc_port = int(runtime.env["REMOTEMEDIA_LISTEN"].rsplit(":", 1)[1])
    metrics_port = int(runtime.env["REMOTEMEDIA_METRICS_LISTEN"].rsplit(":", 1)[1])
    assert sorted(runtime.expose) == sorted([grpc_port, metrics_port])
    published = {int(p.rsplit(":", 1)[1]) for p in service["ports"]}
    assert published == {grpc_port, metrics_port}
    k8s_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert k8s_ports == {"grpc": grpc_port, "metrics": metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    assert container["readinessProbe"]["grpc"]["service"] == "remotemedia.v1.PipelineService"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    prometheus = (REPO / "docker" / "prometheus.yml").read_text()
    assert f"remotemedia:{metrics_port}" in prometheus

    # Services route to the declared container ports; the HPA scales the Deployment.
    for name in ("Service/remotemedia", "Service/remotemedia-headless"):
        svc = objects[name]["spec"]
        assert svc["selector"] == deployment["spec"]["selector"]["matchLabels"]
        for p in svc["ports"]:
            assert p["targetPort"] in k8s_ports and p["port"] == k8s_ports[p["targetPort"]]
    target = objects["HorizontalPodAutoscaler/remotemedia"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "remotemedia")

    # One image name; the health checks are the server's own probe.
    assert container["image"] == service["image"]
    assert runtime.healthcheck == ["remotemedia-server", "probe"]
    assert service["healthcheck"]["test"] == ["CMD", "remotemedia-server", "probe"]
    assert runtime.entrypoint[-1] == "remotemedia-server"

    # Paths: the tokens file the server is told about is where the secret is mounted.
    tokens_path = env_entries_of(container)["REMOTEMEDIA_AUTH_TOKENS_FILE"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(tokens_path).parent == Path(mounts["tokens"])
    secret = next(v for v in pod["volumes"] if v["name"] == "tokens")["secret"]["secretName"]
    assert secret == "remotemedia-tokens"
    assert service["environment"]["REMOTEMEDIA_AUTH_TOKENS_FILE"] == f"/run/secrets/{service['secrets'][0]}"
    config_mount = next(v for v in service["volumes"] if v.endswith(":ro") and "server.toml" in v)
    assert config_mount.split(":")[1] == service["environment"]["REMOTEMEDIA_CONFIG"]
    assert (REPO / config_mount.split(":")[0]).is_file()
    assert pod["securityContext"]["runAsUser"] == 10001 and runtime.user == "remotemedia"

    # Draining: the grace period ends before compose or the kubelet kill the process.
    grace_ms = int(env_entries_of(container)["REMOTEMEDIA_GRACE_PERIOD_MS"])
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > grace_ms / 1000 + pre_stop
    toml_grace = re.search(r"^grace_period_ms\s*=\s*(\d+)", (REPO / "docker" / "server.toml").read_text(), flags=re.M)
    assert toml_grace and int(service["stop_grace_period"].rstrip("s")) > int(toml_grace.group(1)) / 1000

    # Memory requests match limits.
    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_the_entrypoint_serves_answers_probe_and_stops_on_sigterm() -> None:
    # A directory the image's unprivileged user can read, as the secret mount is.
    with tempfile.TemporaryDirectory() as d:
        Path(d).chmod(0o755)
        tokens = Path(d) / "tokens"
        tokens.write_text("# bearer tokens\nimage-entrypoint-token\n")
        tokens.chmod(0o644)
        run_like_the_image(tokens)


def run_like_the_image(tokens: Path) -> None:
    s = start_like_the_image(tokens)
    try:
        ready = next(r for r in s.records() if str(r.get("message", "")).startswith("remotemedia-server listening"))
        assert ready["address"].startswith("0.0.0.0:")
        assert ready["auth"] == "bearer"
        # The image's HEALTHCHECK: `remotemedia-server probe` with the container's environment.
        probe = subprocess.run([str(RELEASE_BIN), "probe"], capture_output=True, text=True, timeout=30, env=s.env)
        assert probe.returncode == 0, probe.stderr
    finally:
        code = s.stop(signal.SIGTERM)
    assert code == 0
    messages = [r.get("message") for r in s.records()]
    assert "shutdown started; draining" in messages
    assert messages[-1] == "shutdown complete"


def test_every_setting_and_metric_is_documented() -> None:
    configuration = (REPO / "docs" / "configuration.md").read_text()
    for name in server_env_names() - {"REMOTEMEDIA_CONFIG"}:
        assert f"`{name}`" in configuration, f"{name} is missing from docs/configuration.md"
    sources = [REPO / "service" / "src" / "grpc" / "observe.rs", REPO / "service" / "src" / "python" / "models.rs"]
    families = {name for src in sources for name in re.findall(r'pub const \w+: &str = "(remotemedia_\w+)"', src.read_text())}
    operations = (REPO / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(remotemedia_\w+)`", operations, flags=re.M))
    assert families and documented == families


def test_make_docker_tokens_writes_one_token_readable_by_the_container_user_only(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"

    def make() -> str:
        done = subprocess.run(
            ["make", "-s", "-C", str(REPO), "docker-tokens", f"DOCKER_TOKENS={tokens}"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    said = make()
    token = tokens.read_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", token), token
    mode = tokens.stat().st_mode & 0o777
    if os.geteuid() == 0:
        # The compose secret is mounted with the host file's owner and mode; the container's
        # user (uid and gid 10001) reads it through its group, nobody else can.
        assert (mode, tokens.stat().st_gid) == (0o640, 10001), (oct(mode), tokens.stat().st_gid)
    else:
        assert mode == 0o644 and "readable by all" in said, (oct(mode), said)
    make()
    assert tokens.read_text() == token, "an existing token is kept"
