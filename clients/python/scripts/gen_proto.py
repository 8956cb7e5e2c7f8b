"""Generate the Python stubs for proto/remotemedia/v1, or check that the committed ones match.

    python scripts/gen_proto.py           # regenerate src/remotemedia_client/_proto
    python scripts/gen_proto.py --check   # exit 1 if the committed stubs differ from proto/

The stubs are generated with grpcio-tools (pinned in requirements-dev.txt, so the output is
reproducible) and their imports are rewritten to live under ``remotemedia_client._proto``.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "src" / "remotemedia_client"
OUT = PACKAGE / "_proto"
PROTO_ROOT = HERE.parents[2] / "proto"
IMPORT = re.compile(r"\b(from|import) remotemedia\.v1\b")
HEADER = "# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.\n"


def generate(dest: Path) -> None:
    files = sorted(PROTO_ROOT.glob("remotemedia/v1/*.proto"))
    if not files:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={dest}",
        f"--pyi_out={dest}",
        f"--grpc_python_out={dest}",
        *(str(f.relative_to(PROTO_ROOT)) for f in files),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in sorted(dest.rglob("*.py*")):
        text = IMPORT.sub(r"\1 remotemedia_client._proto.remotemedia.v1", path.read_text())
        path.write_text(HEADER + text)
    for pkg in (dest, dest / "remotemedia", dest / "remotemedia" / "v1"):
        (pkg / "__init__.py").write_text(HEADER)


def differences(a: Path, b: Path) -> list[str]:
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names |= {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return sorted(str(n) for n in names if not ((a / n).is_file() and (b / n).is_file() and filecmp.cmp(a / n, b / n, shallow=False)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        fresh.mkdir()
        generate(fresh)
        if opts.check:
            diff = differences(fresh, OUT)
            if diff:
                print("generated Python stubs are out of date with proto/: " + ", ".join(diff), file=sys.stderr)
                print("run `make proto` and commit the result", file=sys.stderr)
                return 1
            print("Python stubs match proto/")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
