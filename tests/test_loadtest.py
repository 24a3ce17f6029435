"""A short, bounded, loopback-only headless Locust run against the real stack fails on any error."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

LOCUSTFILE = Path(__file__).resolve().parents[1] / "loadtests" / "locustfile.py"


def test_locust_smoke_run_has_no_failures(gateway, tmp_path: Path) -> None:
    prefix = tmp_path / "stats"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            gateway.target,
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "6s",
            "--stop-timeout",
            "5",
            "--csv",
            str(prefix),
            "--only-summary",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    for name in ("Score", "Recommend", "StreamFeedback"):
        assert int(rows[name]["Request Count"]) > 0, rows.keys()
        assert int(rows[name]["Failure Count"]) == 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
