"""The production images' pip installs, as `make compose-check` reads and resolves them (docker/check_images.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "docker" / "check_images.py"

_spec = importlib.util.spec_from_file_location("check_images", CHECKER)
assert _spec is not None and _spec.loader is not None
check_images = importlib.util.module_from_spec(_spec)
sys.modules["check_images"] = check_images  # dataclasses look their module up by name
_spec.loader.exec_module(check_images)


def _dockerfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "made-up.Dockerfile"
    path.write_text(text)
    return path


def test_a_pin_with_no_wheel_for_the_images_python_fails_with_its_name(tmp_path: Path) -> None:
    # numpy 1.19 predates Python 3.12: PyPI has its source but no cp312 wheel, and the image would have to build it.
    dockerfile = _dockerfile(
        tmp_path,
        "# install-check: python=3.12 glibc=2.39 externally-managed\n"
        "FROM ubuntu:24.04\n"
        'RUN python3 -m pip install --no-cache-dir --break-system-packages "numpy==1.19.0" six\n',
    )
    done = subprocess.run(
        [sys.executable, str(CHECKER), str(dockerfile)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode == check_images.UNREACHABLE:
        pytest.skip(f"the package index is unreachable from here:\n{done.stderr[-500:]}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no wheel of numpy==1.19.0 for Python 3.12" in done.stderr, done.stderr
    assert f"{dockerfile}:3" in done.stderr


def test_the_checker_reads_each_images_pins_python_and_copied_folders() -> None:
    triton = check_images.read_dockerfile(ROOT / "docker" / "triton.Dockerfile")
    assert (triton.target.python, triton.target.externally_managed, triton.problems) == ("3.12", True, ())
    assert [i.requirements for i in triton.installs] == [("tensorflow[and-cuda]==2.21.0", "numpy<2")]
    assert "manylinux_2_27_x86_64" in triton.target.platforms()  # TensorFlow 2.21's wheels

    trainer = check_images.read_dockerfile(ROOT / "docker" / "trainer.Dockerfile")
    assert trainer.target.python == "3.11" and not trainer.problems
    assert {i.build_args: i.requirements[-1] for i in trainer.installs} == {
        (("EXTRA", "cpu"),): f"{ROOT / 'trainer'}[cpu]",
        (("EXTRA", "gpu"),): f"{ROOT / 'trainer'}[gpu]",
    }
    gateway = check_images.read_dockerfile(ROOT / "docker" / "gateway.Dockerfile")
    assert [i.requirements for i in gateway.installs] == [(str(ROOT / "sdk"), str(ROOT / "gateway"))]


def test_a_root_install_into_an_externally_managed_python_must_say_so(tmp_path: Path) -> None:
    image = check_images.read_dockerfile(
        _dockerfile(
            tmp_path,
            "# install-check: python=3.12 glibc=2.39 externally-managed\n"
            "FROM ubuntu:24.04\n"
            "RUN apt-get update && python3 -m pip install numpy==1.26.4\n",
        )
    )
    assert len(image.problems) == 1 and "PEP 668" in image.problems[0], image.problems
    allowed = "# install-check: python=3.12 glibc=2.39 externally-managed\nFROM ubuntu:24.04\n"
    allowed += "ENV PIP_BREAK_SYSTEM_PACKAGES=1\nRUN pip3 install numpy==1.26.4\n"
    assert check_images.read_dockerfile(_dockerfile(tmp_path, allowed)).problems == ()


def test_a_base_image_that_disagrees_with_the_declared_python_is_named(tmp_path: Path) -> None:
    image = check_images.read_dockerfile(
        _dockerfile(tmp_path, "# install-check: python=3.11 glibc=2.36\nFROM python:3.12-slim\nRUN pip install six\n")
    )
    assert image.problems and "FROM python:3.12-slim is Python 3.12" in image.problems[0]


def test_an_installed_folder_that_was_never_copied_is_refused(tmp_path: Path) -> None:
    text = "# install-check: python=3.11 glibc=2.36\nFROM python:3.11-slim\nRUN pip install /src/sdk\n"
    with pytest.raises(check_images.DockerfileError, match="never copied"):
        check_images.read_dockerfile(_dockerfile(tmp_path, text))
