"""The Triton image's model-loading path under the image's own Python (3.12) and pins, without Docker.

    .venv/bin/python docker/check_image_python.py [--python /path/to/python3.12] [--repository REPO]

1. Finds a CPython of the version docker/triton.Dockerfile declares (its install-check line): ``--python``, else
   ``python3.12`` on PATH, else pyenv's (``$PYENV_ROOT/versions/3.12.*``). Debian 12 has no 3.12 package.
2. Makes a venv from it in ``var/image-python/`` with the Dockerfile's own pins, read from it: TensorFlow's CPU
   build of the same release (``tensorflow[and-cuda]==X`` becomes ``tensorflow-cpu==X``: there is no GPU here) and
   the same numpy pin.
3. Without ``--repository``, trains a version with the trainer's CLI (``preftrack-trainer train --epochs 1``, about a
   minute) into a temporary repository. The trainer runs in this project's venv (Python 3.11).
4. Starts Triton from the nvidia-pytriton wheel with its python backend's 3.12 stub and that venv's packages, so
   the version's ``model.py`` loads the SavedModel under Python 3.12 as in the image, and scores a batch of 1,024
   random rows of the model's contract through gRPC.
5. Scores the same rows with the trainer's own TensorFlow (3.11, in process) and compares.

Prints one result line; exits 0 when the scores are in [0, 1] and match, 1 when they do not or a step fails, 2 when
no Python of that version can be found (what was tried is printed).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import check_images
import numpy as np
import tritonclient.grpc as grpcclient

from preftrack_dev.triton_launcher import TritonConfig, TritonServer, find_triton
from preftrack_gateway import contract

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "triton.Dockerfile"
ROWS = 1024
TOLERANCE = 1e-5


class ImagePythonError(RuntimeError):
    """A step of the check failed; the message says which."""


def _version_of(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(version: str, explicit: str | None) -> tuple[str | None, list[str]]:
    """A working interpreter of ``version``, and what was tried."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [explicit] if explicit else []
    candidates += [shutil.which(f"python{version}") or f"python{version} (not on PATH)"]
    candidates += sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"), reverse=True) or [
        f"{pyenv}/versions/{version}.* (none)"
    ]
    tried = []
    for candidate in candidates:
        found = _version_of(candidate) if " " not in candidate else None
        tried.append(f"{candidate}: {found or 'not a working Python'}")
        if found == version:
            return candidate, tried
    return None, tried


def image_pins() -> tuple[str, list[str]]:
    """The Triton image's Python version and its pip install's requirements, CPU build of TensorFlow."""
    image = check_images.read_dockerfile(DOCKERFILE)
    pins = []
    for requirement in (r for install in image.installs for r in install.requirements):
        pins.append(re.sub(r"^tensorflow(\[[^\]]*\])?(?=[=<>!~ ]|$)", "tensorflow-cpu", requirement))
    return image.target.python, pins


def ensure_venv(python: str, version: str, pins: list[str]) -> Path:
    """A venv of ``python`` with exactly ``pins`` installed (rebuilt when the pins change)."""
    venv = ROOT / "var" / "image-python" / f"py{version}"
    stamp = venv / ".installed"
    wanted = "\n".join([python, *pins])
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ImagePythonError(f"pip install {' '.join(pins)} into {venv} failed:\n{done.stdout}{done.stderr}")
    print(f"installed {' '.join(pins)} into {venv} in {time.monotonic() - started:.0f} s")
    stamp.write_text(wanted)
    return venv


def _venv_facts(venv: Path) -> dict[str, str]:
    code = (
        "import sys, sysconfig, numpy, tensorflow as tf; "
        "print(sys.version.split()[0]); print(sysconfig.get_config_var('LIBDIR')); "
        "print(tf.__version__); print(numpy.__version__)"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if done.returncode != 0:
        raise ImagePythonError(f"{venv} cannot import TensorFlow:\n{done.stderr[-2000:]}")
    python, libdir, tensorflow, numpy = done.stdout.split()
    return {"python": python, "libdir": libdir, "tensorflow": tensorflow, "numpy": numpy}


class ImagePythonTriton(TritonServer):
    """The development launcher's Triton, with the python backend's stub and packages of another interpreter."""

    def __init__(self, config: TritonConfig, venv: Path, version: str, libdir: str) -> None:
        super().__init__(config)
        self._venv = venv
        self._version = version
        self._libdir = libdir

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        args, env = super()._prepare()
        assert self.config.work_dir is not None
        stub = find_triton().stub.parent.parent / self._version / "triton_python_backend_stub"
        if not stub.exists():
            raise ImagePythonError(f"nvidia-pytriton has no python backend stub for Python {self._version}: {stub}")
        shutil.copy2(stub, self.config.work_dir / "backends" / "python" / "triton_python_backend_stub")
        # The stub links libpython of that version and finds its packages through the first python3 on PATH.
        env["LD_LIBRARY_PATH"] = os.pathsep.join((self._libdir, env["LD_LIBRARY_PATH"]))
        env["PATH"] = os.pathsep.join((str(self._venv / "bin"), env["PATH"]))
        return args, env


def _train(repository: Path) -> None:
    trainer = Path(sys.executable).parent / "preftrack-trainer"
    command = [str(trainer), "train", "--dataset", "synthetic", "--repository", str(repository), "--epochs", "1"]
    done = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImagePythonError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _rows(metadata: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in metadata["inputs"]:
        dims = [ROWS, *(int(d) for d in spec["shape"][1:])]
        if spec["datatype"] == "INT64":
            arrays[spec["name"]] = rng.integers(0, 2**62, size=dims, dtype=np.int64)
        else:
            arrays[spec["name"]] = rng.standard_normal(dims).astype(np.float32)
    return arrays


def _score_in_process(repository: Path, version: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    import tensorflow as tf

    path = repository / contract.MODEL_NAME / version / "model.savedmodel"
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    # As model.py feeds it: lower-case names, scalar-per-row inputs flattened.
    feeds = {name.lower(): tf.constant(a.reshape(-1) if a.shape[1:] == (1,) else a) for name, a in arrays.items()}
    return next(iter(signature(**feeds).values())).numpy().reshape(-1)


def _stub_libpython(stub: Path) -> set[str]:
    """The libpython each running copy of ``stub`` has mapped: which Python the python backend really runs."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "exe")).resolve() == stub.resolve():
                found |= set(re.findall(r"libpython3\.\d+\.so[.\d]*", (proc / "maps").read_text()))
        except OSError:
            continue
    return found


def check(python: str, repository: Path | None) -> str:
    version, pins = image_pins()
    venv = ensure_venv(python, version, pins)
    facts = _venv_facts(venv)
    with tempfile.TemporaryDirectory(prefix="image-python-") as tmp:
        if repository is None:
            repository = Path(tmp) / "repo"
            started = time.monotonic()
            _train(repository)
            print(f"trained version 1 with preftrack-trainer (Python 3.11) in {time.monotonic() - started:.0f} s")
        work = Path(tmp) / "triton"
        config = TritonConfig(repository=repository, work_dir=work)
        started = time.monotonic()
        with ImagePythonTriton(config, venv, version, facts["libdir"]) as server:
            ready_s = time.monotonic() - started
            client = grpcclient.InferenceServerClient(server.grpc_url)
            metadata = client.get_model_metadata(contract.MODEL_NAME, as_json=True)
            served = str(max(int(v) for v in metadata["versions"]))
            arrays = _rows(metadata)
            inputs = []
            for name, array in arrays.items():
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            result = client.infer(contract.MODEL_NAME, inputs, model_version=served)
            scores = result.as_numpy(contract.SCORE).reshape(-1)
            client.close()
            libpython = _stub_libpython(work / "backends" / "python" / "triton_python_backend_stub")
        reference = _score_in_process(repository, served, arrays)
    difference = float(np.max(np.abs(scores - reference)))
    line = (
        f"image Python check: Python {facts['python']} (venv {venv.relative_to(ROOT)}), tensorflow-cpu "
        f"{facts['tensorflow']}, numpy {facts['numpy']}: Triton's python backend (stub for Python {version}) loaded "
        f"version {served} exported by the trainer on Python {sys.version_info.major}.{sys.version_info.minor} "
        f"(ready in {ready_s:.0f} s) and scored {ROWS:,} rows, scores {scores.min():.4f}..{scores.max():.4f}, "
        f"max |difference| from the trainer's own TensorFlow {difference:.1e}; the stub mapped {sorted(libpython)}"
    )
    if not libpython or any(not name.startswith(f"libpython{version}.") for name in libpython):
        raise ImagePythonError(f"the python backend did not run Python {version}: {line}")
    if scores.shape != (ROWS,) or not np.all((scores >= 0) & (scores <= 1)) or difference > TOLERANCE:
        raise ImagePythonError(f"scores out of [0, 1] or off by more than {TOLERANCE}: {line}")
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="the interpreter to use (default: found as above)")
    parser.add_argument("--repository", type=Path, help="a model repository the trainer exported (default: train one)")
    args = parser.parse_args()
    version, _ = image_pins()
    python, tried = find_python(version, args.python)
    if python is None:
        print(f"no Python {version} here; tried:\n  " + "\n  ".join(tried), file=sys.stderr)
        return 2
    try:
        print(check(python, args.repository))
    except (ImagePythonError, subprocess.CalledProcessError) as exc:
        print(f"image Python check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
