"""Resolves every production image's ``pip install`` for the image's own Python and platform, without Docker.

    .venv/bin/python docker/check_images.py [DOCKERFILE ...]     # default: docker/*.Dockerfile

Each Dockerfile declares its interpreter on one line the checker reads::

    # install-check: python=3.12 glibc=2.39 externally-managed EXTRA=cpu,gpu

``python`` and ``glibc`` are the base image's (wheels are accepted up to that manylinux level), ``externally-managed``
says the base's Python is marked so (PEP 668: every ``pip install`` must then say ``--break-system-packages``), and
``NAME=a,b`` tries each value of a build ARG. The checker reads the Dockerfile's ARGs, WORKDIR and COPYs and the
``pip install`` commands of its RUN instructions, maps the image paths they install back to this repository, and
asks pip to resolve exactly those requirements, wheels only (``pip install --dry-run --only-binary=:all:
--python-version ... --platform ...``). The pins are the Dockerfile's own, so the two cannot drift.

Exits 1 naming the Dockerfile and the requirements when one has no wheel for that Python, they conflict, or the
Dockerfile cannot be read; 3 when the package index could not be reached at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = 3

_DIRECTIVE = "# install-check:"
# pip options that only say where or how quietly to install: they do not change what resolves.
_IGNORED_FLAGS = {
    "--no-cache-dir", "--break-system-packages", "-q", "--quiet", "-qq", "-v", "--verbose", "-U", "--upgrade",
    "-I", "--ignore-installed", "--no-warn-script-location", "--disable-pip-version-check", "--user",
    "--compile", "--no-compile", "--force-reinstall", "--no-build-isolation", "--no-input",
}  # fmt: skip
_IGNORED_WITH_VALUE = {"--progress-bar", "--root-user-action", "-t", "--target", "--prefix", "--root", "--timeout"}
# pip options that change the resolution: passed on as they are.
_PASSED_FLAGS = {"--pre", "--no-deps"}
_PASSED_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
_FILE_OPTIONS = {"-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c"}
# What pip prints when it never reached the index (as opposed to reaching it and finding no wheel).
_NETWORK_ERRORS = (
    "NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
    "Network is unreachable", "ConnectTimeoutError", "Read timed out", "ProxyError", "Could not fetch URL",
)  # fmt: skip
_SHOWN = {"tensorflow", "tensorflow-cpu", "numpy", "protobuf", "grpcio"}
_NOISE = re.compile(r"WARNING: Location '.*' is ignored")


class DockerfileError(ValueError):
    """The Dockerfile cannot be checked as written; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Target:
    """The interpreter an image installs into."""

    python: str
    glibc: str
    externally_managed: bool

    def platforms(self) -> list[str]:
        """Every manylinux tag a wheel may carry for this glibc on x86_64, newest first.

        pip does not widen a ``--platform`` it is given, so the older levels are listed too.

        >>> Target("3.12", "2.19", False).platforms()[:2], Target("3.12", "2.19", False).platforms()[-3:]
        (['manylinux_2_19_x86_64', 'manylinux_2_18_x86_64'], ['manylinux2014_x86_64', 'manylinux2010_x86_64', \
'manylinux1_x86_64'])
        """
        major, minor = (int(p) for p in self.glibc.split("."))
        tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
        aliases = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
        return tags + [tag for level, tag in aliases.items() if minor >= level]

    def describe(self) -> str:
        return f"Python {self.python}, glibc {self.glibc} (x86_64)"


@dataclasses.dataclass(frozen=True)
class Install:
    """One ``pip install`` command of a Dockerfile, with its paths mapped back to this repository."""

    line: int
    requirements: tuple[str, ...]  # as pip takes them: pins, local folders (with extras), ``-r file``
    options: tuple[str, ...]  # options that change the resolution
    build_args: tuple[tuple[str, str], ...]  # the ARG values this variant was read with

    def pins(self) -> str:
        return " ".join(shlex.quote(r) for r in self.requirements)


@dataclasses.dataclass(frozen=True)
class Image:
    """What one Dockerfile installs, for one interpreter."""

    dockerfile: Path
    target: Target
    installs: tuple[Install, ...]
    problems: tuple[str, ...]  # found by reading alone (PEP 668, a FROM that disagrees with the declared Python)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their continuation lines joined (comment lines inside one are dropped, as Docker does)."""
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not parts:
            start = number
        elif line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        joined = " ".join(p.strip() for p in parts).strip()
        parts = []
        if joined:
            yield start, joined


def _directive(text: str, path: Path) -> tuple[Target, dict[str, list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith(_DIRECTIVE)]
    if len(lines) != 1:
        raise DockerfileError(f"{path}: needs exactly one '{_DIRECTIVE} python=X.Y glibc=X.Y' line")
    values: dict[str, str] = {}
    flags: set[str] = set()
    for token in lines[0][len(_DIRECTIVE) :].split():
        name, sep, value = token.partition("=")
        if sep:
            values[name] = value
        else:
            flags.add(name)
    unknown = flags - {"externally-managed"}
    if (
        unknown
        or not re.fullmatch(r"3\.\d+", values.get("python", ""))
        or not re.fullmatch(r"2\.\d+", values.get("glibc", ""))
    ):
        raise DockerfileError(f"{path}: cannot read '{lines[0]}' (python=3.N glibc=2.N [externally-managed] [ARG=a,b])")
    target = Target(values.pop("python"), values.pop("glibc"), "externally-managed" in flags)
    return target, {name: value.split(",") for name, value in values.items()}


def _substitute(text: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name, default = match.group(1) or match.group(3), match.group(2)
        return variables.get(name) or (default or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", value, text)


def _commands(shell: str) -> Iterator[list[str]]:
    """The simple commands of a shell line, split at ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def _pip_arguments(command: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """The arguments after ``pip install`` (and the command's own environment), or None for another command."""
    env: dict[str, str] = {}
    while command and re.fullmatch(r"\w+=.*", command[0]):
        name, _, value = command[0].partition("=")
        env[name] = value
        command = command[1:]
    for i, word in enumerate(command):
        name = os.path.basename(word)
        if re.fullmatch(r"pip(3(\.\d+)?)?", name):
            rest = command[i + 1 :]
        elif re.fullmatch(r"python(3(\.\d+)?)?", name) and command[i + 1 : i + 3] == ["-m", "pip"]:
            rest = command[i + 3 :]
        else:
            continue
        return (rest[1:], env) if rest[:1] == ["install"] else None
    return None


class _Reader:
    """Walks one Dockerfile for one set of build ARG values."""

    def __init__(self, path: Path, target: Target, build_args: dict[str, str]) -> None:
        self.path = path
        self.target = target
        self.build_args = build_args
        self.variables: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.copies: list[tuple[str, Path]] = []  # (image path, repository path)
        self.installs: list[Install] = []
        self.problems: list[str] = []

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def read(self, text: str) -> None:
        for line, instruction in _logical_lines(text):
            if instruction.startswith("#"):
                continue
            keyword, _, rest = instruction.partition(" ")
            handler = getattr(self, f"_{keyword.lower()}", None)
            if handler is not None:
                handler(line, rest.strip())

    def _arg(self, line: int, rest: str) -> None:
        name, _, default = rest.partition("=")
        self.variables[name] = self.build_args.get(name, self.variables.get(name) or default.strip("\"'"))

    def _env(self, line: int, rest: str) -> None:
        words = shlex.split(_substitute(rest, self.variables))
        pairs = [w.partition("=")[::2] for w in words] if "=" in words[0] else [(words[0], " ".join(words[1:]))]
        for name, value in pairs:
            self.env[name] = value
            self.variables[name] = value

    def _from(self, line: int, rest: str) -> None:
        image = _substitute(rest.split()[0], self.variables)
        match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(3\.\d+)[.\-\w]*", image)
        if match and match.group(1) != self.target.python:
            self.problems.append(
                f"{self.where(line)}: FROM {image} is Python {match.group(1)}, but the install-check line says "
                f"python={self.target.python}"
            )

    def _workdir(self, line: int, rest: str) -> None:
        self.workdir = os.path.join(self.workdir, _substitute(rest, self.variables))

    def _copy(self, line: int, rest: str) -> None:
        words = [w for w in shlex.split(_substitute(rest, self.variables)) if not w.startswith("--chown")]
        if any(w.startswith("--from") for w in words):
            return  # from another stage or image, not from this repository
        words = [w for w in words if not w.startswith("--")]
        *sources, dest = words
        dest = os.path.join(self.workdir, dest)
        for source in sources:
            into = os.path.join(dest, os.path.basename(source.rstrip("/"))) if dest.endswith("/") else dest
            self.copies.append((os.path.normpath(into), ROOT / source))

    _add = _copy

    def _repository_path(self, line: int, image_path: str) -> str:
        """The repository folder or file a path inside the image was copied from."""
        path, bracket, extras = image_path.partition("[")
        path = os.path.normpath(os.path.join(self.workdir, path))
        for copied, source in sorted(self.copies, key=lambda c: -len(c[0])):
            if path == copied or path.startswith(copied + "/"):
                local = source / os.path.relpath(path, copied)
                if not local.exists():
                    raise DockerfileError(f"{self.where(line)}: {image_path} comes from {local}, which does not exist")
                return f"{local}{bracket}{extras}"
        raise DockerfileError(f"{self.where(line)}: {image_path} is installed but never copied from this repository")

    def _run(self, line: int, rest: str) -> None:
        if rest.startswith("["):
            shell = " ".join(shlex.quote(w) for w in json.loads(rest))
        else:
            shell = " ".join(w for w in rest.split() if not w.startswith("--mount="))
        for command in _commands(_substitute(shell, self.variables)):
            parsed = _pip_arguments(command)
            if parsed is not None:
                self._pip_install(line, *parsed)

    def _pip_install(self, line: int, arguments: list[str], command_env: dict[str, str]) -> None:
        requirements: list[str] = []
        options: list[str] = []
        words = iter(arguments)
        for word in words:
            option, equals, inline = word.partition("=")
            if not word.startswith("-"):
                local = word.startswith((".", "/")) or "/" in word.partition("[")[0]
                requirements.append(self._repository_path(line, word) if local else word)
            elif option in _IGNORED_FLAGS and not equals:
                continue
            elif option in _IGNORED_WITH_VALUE:
                _ = inline or next(words, "")
            elif option in _PASSED_FLAGS and not equals:
                options.append(option)
            elif option in _PASSED_WITH_VALUE:
                options += [option, inline or next(words, "")]
            elif option in _FILE_OPTIONS:
                requirements += [_FILE_OPTIONS[option], self._repository_path(line, inline or next(words, ""))]
            elif option in {"-e", "--editable"}:
                requirements.append(self._repository_path(line, inline or next(words, "")))
            else:
                raise DockerfileError(
                    f"{self.where(line)}: pip option {word} is unknown to docker/check_images.py: say there whether "
                    "it changes what resolves"
                )
        if not requirements:
            raise DockerfileError(f"{self.where(line)}: a pip install with nothing to install")
        k = "PIP_BREAK_SYSTEM_PACKAGES"
        allowed = "--break-system-packages" in arguments or {command_env.get(k), self.env.get(k)} & {"1", "true"}
        if self.target.externally_managed and not allowed:
            self.problems.append(
                f"{self.where(line)}: this image's Python {self.target.python} is externally managed (PEP 668), so pip "
                "refuses this install as root: say --break-system-packages (and why), or install into a venv"
            )
        build_args = tuple(sorted(self.build_args.items()))
        self.installs.append(Install(line, tuple(requirements), tuple(options), build_args))


def read_dockerfile(path: Path) -> Image:
    """Everything the Dockerfile's ``pip install`` commands ask for, once per combination of declared ARG values."""
    text = path.read_text()
    target, variants = _directive(text, path)
    installs: list[Install] = []
    problems: list[str] = []
    names = sorted(variants)
    for values in itertools.product(*(variants[n] for n in names)):
        reader = _Reader(path, target, dict(zip(names, values, strict=True)))
        reader.read(text)
        installs += [i for i in reader.installs if i not in installs]
        problems += [p for p in reader.problems if p not in problems]
    if not installs:
        raise DockerfileError(f"{path}: no pip install found (the install-check line says it has one)")
    return Image(path, target, tuple(installs), tuple(problems))


@dataclasses.dataclass(frozen=True)
class Resolution:
    """pip's answer for one install."""

    image: Image
    install: Install
    ok: bool
    unreachable: bool
    resolved: dict[str, str]  # name → version, when ok
    shown: dict[str, str]  # the ones asked for, and the ones that decide whether a model loads
    errors: str  # pip's own account, when not ok

    def title(self) -> str:
        variant = "".join(f" {k}={v}" for k, v in self.install.build_args)
        return f"{_relative(self.image.dockerfile)}:{self.install.line}{variant} ({self.image.target.describe()})"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def resolve(image: Image, install: Install, timeout_s: float = 30.0) -> Resolution:
    """Ask pip, without installing anything, what ``install`` would install into ``image``'s interpreter."""
    with tempfile.TemporaryDirectory(prefix="check-images-") as tmp:
        report = Path(tmp) / "report.json"
        platforms = [arg for tag in image.target.platforms() for arg in ("--platform", tag)]
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
            "--python-version", image.target.python, "--implementation", "cp", *platforms,
            "--report", str(report), "--disable-pip-version-check",
            "--timeout", str(int(timeout_s)), "--retries", "2",
            *install.options, *install.requirements,
        ]  # fmt: skip
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, cwd=ROOT
        )
        output = done.stdout
        if done.returncode == 0 and report.exists():
            entries = json.loads(report.read_text())["install"]
            resolved = {e["metadata"]["name"]: e["metadata"]["version"] for e in entries}
            shown = {
                e["metadata"]["name"]: e["metadata"]["version"]
                for e in entries
                if e.get("requested") or e["metadata"]["name"].lower().replace("_", "-") in _SHOWN
            }
            return Resolution(image, install, True, False, resolved, shown, "")
    # pip's account of the failure: from its first error on (its progress lines before that say nothing), after
    # the first sign that it never reached the index, if any.
    lines = [line for line in output.splitlines() if line.strip() and not _NOISE.search(line)]
    first = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), 0)
    network = [line for line in lines[:first] if any(marker in line for marker in _NETWORK_ERRORS)][:1]
    return Resolution(image, install, False, bool(network), {}, {}, "\n".join(network + lines[first:]))


def _summary(result: Resolution) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in result.shown.items())
    return f"{result.title()}: {len(result.resolved)} packages resolve ({versions})"


def _failure(result: Resolution) -> str:
    culprits = re.findall(r"No matching distribution found for (\S+)", result.errors)
    conflict = "ResolutionImpossible" in result.errors or "conflict is caused by" in result.errors
    if culprits:
        why = f"no wheel of {', '.join(culprits)} for {result.image.target.describe()}"
    elif conflict:
        why = "the requirements conflict"
    else:
        why = "pip could not resolve them"
    return f"{result.title()}: pip install {result.install.pins()}\n  fails: {why}\n" + "\n".join(
        f"  | {line}" for line in result.errors.splitlines()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dockerfiles", nargs="*", type=Path, help="default: docker/*.Dockerfile")
    args = parser.parse_args(argv)
    paths = args.dockerfiles or sorted((ROOT / "docker").glob("*.Dockerfile"))
    problems: list[str] = []
    jobs: list[tuple[Image, Install]] = []
    for path in paths:
        try:
            image = read_dockerfile(path)
        except (DockerfileError, OSError, ValueError) as exc:
            problems.append(str(exc))
            continue
        problems += image.problems
        jobs += [(image, install) for install in image.installs]
    # pip spends most of its time waiting for the index: a few at once.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda job: resolve(*job), jobs))
    unreachable = [r for r in results if r.unreachable]
    for result in results:
        if result.ok:
            print(_summary(result))
        elif not result.unreachable:
            problems.append(_failure(result))
    for problem in problems:
        print(problem, file=sys.stderr)
    if unreachable and not problems:
        print(
            f"the package index could not be reached; {len(unreachable)} install(s) not checked:\n"
            + unreachable[0].errors,
            file=sys.stderr,
        )
        return UNREACHABLE
    return 1 if problems or unreachable else 0


if __name__ == "__main__":
    sys.exit(main())
