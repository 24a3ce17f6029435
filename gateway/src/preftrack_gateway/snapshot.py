"""Snapshots of a gateway's real-time state at a log position, so a restart reads the snapshot and the log's
tail instead of the whole log.

A snapshot holds the feature sums and the per-event layer (its weights, the version they are a residual on, the
examples waiting for a label and those kept to be learned again on another version),
the sequence number they were folded up to, and what they depend on: the deployment's settings (as their
DeploymentSettings JSON) and the erasures already applied. A snapshot taken before a later erasure is never
used (it may hold the forgotten user): the gateway rebuilds from the store and takes a new one.

The file is a pickle, written atomically (temporary file, fsync, rename) with mode 0600. Pickles run code when
loaded: keep ``PREFTRACK_SNAPSHOT_DIR`` writable by the gateway's user only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
from pathlib import Path

from preftrack_gateway.features import FeatureState
from preftrack_gateway.identities import Identities
from preftrack_gateway.online import Correction, History, Labeller

_LOGGER = logging.getLogger(__name__)

#: Bumped whenever what a snapshot holds changes shape; older snapshots are then ignored.
FORMAT = 11
FILE_NAME = "gateway-state.pickle"


@dataclasses.dataclass
class Snapshot:
    """The real-time state folded up to ``folded_seq``."""

    settings: str
    folded_seq: int
    erasures_seen: int
    features: FeatureState
    correction: Correction
    labeller: Labeller
    history: History
    base_version: int | None
    identities: Identities = dataclasses.field(default_factory=Identities)  # the merges folded into it
    format: int = FORMAT


def save(directory: Path, snapshot: Snapshot) -> Path:
    """Write ``snapshot`` into ``directory`` atomically; returns the file."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / FILE_NAME
    descriptor, temporary = tempfile.mkstemp(prefix=".snapshot-", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as out:
            pickle.dump(snapshot, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load(directory: Path, *, settings: str, erasures_seen: int, last_seq: int) -> Snapshot | None:
    """The snapshot in ``directory`` if it can stand in for the log up to its position, else None (and why, in
    the log): it must be of this format and these settings, have seen every erasure, and not be ahead of the
    store (a store restored from an older backup)."""
    path = directory / FILE_NAME
    if not path.exists():
        return None
    try:
        with open(path, "rb") as source:
            snapshot = pickle.load(source)
    except Exception as exc:  # a torn or foreign file: rebuild from the log instead
        _LOGGER.warning("ignoring the snapshot %s: cannot read it (%s)", path, exc)
        return None
    reasons = []
    if not isinstance(snapshot, Snapshot) or snapshot.format != FORMAT:
        reasons.append("it is of another format")
    elif snapshot.settings != settings:
        reasons.append("it was taken with other settings (the deployment's or the per-event layer's)")
    elif snapshot.erasures_seen != erasures_seen:
        reasons.append("a user was forgotten since it was taken")
    elif snapshot.folded_seq > last_seq:
        reasons.append(f"it is ahead of the store (seq {snapshot.folded_seq} > {last_seq})")
    if reasons:
        _LOGGER.info("not using the snapshot %s: %s; rebuilding from the event log", path, reasons[0])
        return None
    return snapshot
