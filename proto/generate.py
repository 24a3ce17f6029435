"""Regenerate the Python code of the public API into the SDK (``sdk/src/preftrack/v1``).

    python proto/generate.py          # regenerate
    python proto/generate.py --check  # fail if the committed code differs from a fresh generation

Uses the pinned grpcio-tools from requirements-dev.txt; writes ``*_pb2.py``, ``*_pb2.pyi`` (type stubs) and
``*_pb2_grpc.py``. The generated package is excluded from lint and type checks.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
OUTPUT_ROOT = ROOT / "sdk" / "src"
PACKAGE = Path("preftrack") / "v1"


def generate(output_root: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (output_root / PACKAGE / "__init__.py").write_text('"""Generated from proto/preftrack/v1; do not edit."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the committed code is current")
    args = parser.parse_args()
    if not args.check:
        target = OUTPUT_ROOT / PACKAGE
        for old in target.glob("*_pb2*.py*"):
            old.unlink()
        generate(OUTPUT_ROOT)
        print(f"generated {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = Path(tmp) / PACKAGE, OUTPUT_ROOT / PACKAGE
        names = sorted({p.name for p in fresh.iterdir()} | {p.name for p in committed.glob("*.py*")})
        stale = [
            n
            for n in names
            if not (committed / n).exists()
            or not (fresh / n).exists()
            or not filecmp.cmp(fresh / n, committed / n, shallow=False)
        ]
        if stale:
            print(f"generated code is out of date: {', '.join(stale)}; run python proto/generate.py", file=sys.stderr)
            return 1
    print("generated code is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
