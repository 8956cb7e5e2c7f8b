"""The Python client as a user gets it: a wheel built with ``python -m build``, installed into a
fresh virtual environment (its dependencies from the package index), used outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO, RunningServer

CLIENT = REPO / "clients" / "python"


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTEMEDIA_", "PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_builds_installs_into_a_fresh_venv_and_works_without_the_repository(server: RunningServer, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, CLIENT, cwd=tmp_path)
    [wheel] = dist.glob("remotemedia_client-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"remotemedia_client/py.typed", "remotemedia_client/_proto/remotemedia/v1/service_pb2_grpc.py"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "remotemedia = remotemedia_client.cli:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=tmp_path)

    code = f"""
import pathlib, numpy as np, remotemedia_client as rm
print(pathlib.Path(rm.__file__).resolve())
with rm.Client({server.address!r}) as client:
    result = client.run(rm.Pipeline.chain(rm.GainNode("g", gain_db=-6)), np.ones(4, np.float32), sample_rate=8000)
print(round(float(result.output().to_numpy()[0]), 3))
"""
    lines = run(python, "-c", code, cwd=tmp_path).stdout.splitlines()
    assert Path(lines[0]).is_relative_to(venv.resolve()) and not Path(lines[0]).is_relative_to(REPO)
    assert lines[1] == "0.501"

    version = json.loads(run(venv / "bin" / "remotemedia", "--address", server.address, "--json", "version", cwd=tmp_path).stdout)
    assert version["compatible"] is True and version["client_version"] == "0.1.0"
