"""Readers for the deployment files (docker/Dockerfile, docker-compose.yml, deploy/kubernetes)
and a way to start the server exactly as the image's entrypoint does, outside a container."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conftest import REPO, RunningServer, start_process

DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
KUBERNETES = REPO / "deploy" / "kubernetes"
RELEASE_BIN = Path(os.environ.get("REMOTEMEDIA_RELEASE_BIN", REPO / "service" / "target" / "release" / "remotemedia-server"))
IMAGE_USER_UID = 10001


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    expose: list[int] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""
    parent: str = ""  # the stage this one is FROM, if it is one


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for item in logical:
        word, _, rest = item.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    return list(json.loads(args)) if args.startswith("[") else ["/bin/sh", "-c", args]


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    args: dict[str, str] = {}
    stage: Stage | None = None
    for word, rest in _instructions(path.read_text()):
        if word == "ARG" and stage is None:
            key, _, value = rest.partition("=")
            args[key] = value
        elif word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.I)
            assert m, rest
            base = re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), ""), m.group(1))
            stage = Stage(name=m.group(2) or base, base=stages[base].base if base in stages else base)
            if base in stages:  # FROM an earlier stage inherits its image configuration
                parent = stages[base]
                stage.parent = parent.name
                stage.env, stage.expose = dict(parent.env), list(parent.expose)
                stage.entrypoint, stage.cmd = list(parent.entrypoint), list(parent.cmd)
                stage.healthcheck, stage.user = list(parent.healthcheck), parent.user
            stages[stage.name] = stage
        elif stage is None:
            continue
        elif word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                stage.env[key] = value
        elif word == "EXPOSE":
            stage.expose += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "RUN":
            stage.run.append(rest)
        elif word == "COPY":
            stage.copies.append(rest)
        elif word == "ENTRYPOINT":
            stage.entrypoint = _exec_form(rest)
        elif word == "CMD":
            stage.cmd = _exec_form(rest)
        elif word == "HEALTHCHECK":
            stage.healthcheck = _exec_form(rest.split("CMD", 1)[1].strip())
        elif word == "USER":
            stage.user = rest
    return stages


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def kubernetes() -> dict[str, dict[str, Any]]:
    """Every object under deploy/kubernetes, by `Kind/name`."""
    objects = {}
    for f in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def server_env_names() -> set[str]:
    """The REMOTEMEDIA_* variables the server reads, as its --help lists them."""
    import subprocess

    out = subprocess.run([str(RELEASE_BIN), "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"env: (REMOTEMEDIA_[A-Z_]+)", out)) | {"REMOTEMEDIA_CONFIG"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readable_by_others(path: Path) -> bool:
    """Whether an unprivileged user could reach and read `path`."""
    path = path.resolve()
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


def start_like_the_image(tokens_file: Path, extra_env: dict[str, str] | None = None) -> RunningServer:
    """Starts the release binary the way the composed `remotemedia` service runs it: the
    runtime stage's ENTRYPOINT + CMD and ENV, the compose environment, the compose volumes
    and secrets mapped to the files they name here, and (when run as root, and the binary,
    the Python installation and the files are readable by others) the image's unprivileged uid. Only the two ports are moved to free ones."""
    runtime = dockerfile_stages()["runtime"]
    service = compose()["services"]["remotemedia"]
    env = {**runtime.env, **{k: str(v) for k, v in service.get("environment", {}).items()}}

    container_paths = {"/opt/remotemedia/venv": str(REPO / ".venv")}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        container_paths[container] = str((REPO / host).resolve())
    for secret in service.get("secrets", []):
        container_paths[f"/run/secrets/{secret}"] = str(tokens_file)
    for key, value in env.items():
        env[key] = container_paths.get(value, value)

    grpc_port, metrics_port = free_port(), free_port()
    env["REMOTEMEDIA_LISTEN"] = env["REMOTEMEDIA_LISTEN"].replace(":50051", f":{grpc_port}")
    env["REMOTEMEDIA_METRICS_LISTEN"] = env["REMOTEMEDIA_METRICS_LISTEN"].replace(":9464", f":{metrics_port}")
    env.update(extra_env or {})

    argv = [str(RELEASE_BIN) if a == "remotemedia-server" else a for a in runtime.entrypoint + runtime.cmd]
    preexec = None
    needed = [RELEASE_BIN, tokens_file, REPO / ".venv" / "bin" / "python3", REPO / "docker" / "server.toml"]
    if os.geteuid() == 0 and all(readable_by_others(p) for p in needed):

        def preexec() -> None:
            os.setgid(IMAGE_USER_UID)
            os.setgroups([])
            os.setuid(IMAGE_USER_UID)

    # tini, not PID 1 here, registers as a child subreaper instead.
    return start_process(argv, {**env, "TINI_SUBREAPER": "1"}, preexec_fn=preexec)
