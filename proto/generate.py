"""Regenerate the Python code of the public APIs into the SDK (``sdk/src/preftrack/v1``, ``.../admin/v1``,
``.../insights/v1``).

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
#: The proto packages, each generated into the same folder under the SDK.
PACKAGES = (Path("preftrack") / "v1", Path("preftrack") / "admin" / "v1", Path("preftrack") / "insights" / "v1")


def generate(output_root: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for pkg in PACKAGES for p in (PROTO_ROOT / pkg).glob("*.proto"))
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
    for package in PACKAGES:
        (output_root / package / "__init__.py").write_text(f'"""Generated from proto/{package}; do not edit."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the committed code is current")
    args = parser.parse_args()
    if not args.check:
        for package in PACKAGES:
            for old in (OUTPUT_ROOT / package).glob("*_pb2*.py*"):
                old.unlink()
        generate(OUTPUT_ROOT)
        print(f"generated {', '.join(str(OUTPUT_ROOT / p) for p in PACKAGES)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for package in PACKAGES:
            fresh, committed = Path(tmp) / package, OUTPUT_ROOT / package
            names = sorted({p.name for p in fresh.iterdir()} | {p.name for p in committed.glob("*.py*")})
            stale += [
                str(package / n)
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
