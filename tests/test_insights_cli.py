"""``preftrack-insights`` without a gateway: argument parsing, user files, tables, plots and the error line.

The subcommands against a live gateway belong with the insights service's end-to-end tests.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from preftrack.insights import Affinity, Profile, Shift, Trend, Trends
from preftrack.insights.cli import (
    _affinity_table,
    _duration,
    _parser,
    _plot_profile,
    _plot_trends,
    _trend_table,
    _user_ids,
    main,
)

DAY_S = 86_400.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 604_800),
        ("24h", 86_400),
        ("90m", 5_400),
        ("45s", 45),
        ("3600", 3_600),
        ("1.5h", 5_400),
        (" 2D ", 172_800),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    assert _duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "7 days", "0", "0h", "-1d", "1e3", "inf"])
def test_a_bad_window_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["trends", f"--window={text}"])
    assert exit_.value.code == 2
    assert "--window: expected a duration" in capsys.readouterr().err


def test_defaults_and_times() -> None:
    args = _parser().parse_args(["trends"])
    assert (args.window, args.top, args.as_of, args.png) == (7 * DAY_S, 10, None, None)
    args = _parser().parse_args(["profile", "u-42", "--as-of", "2024-05-01T00:00:00Z", "--top", "3"])
    assert (args.user_id, args.as_of, args.top, args.points) == ("u-42", 1_714_521_600.0, 3, 200)
    assert _parser().parse_args(["profile", "u-42", "--as-of", "2024-05-01T02:00:00+02:00"]).as_of == 1_714_521_600
    assert _parser().parse_args(["profile", "u-42", "--as-of", "2024-05-01"]).as_of == 1_714_521_600  # naive: UTC
    assert _parser().parse_args(["profile", "u-42", "--as-of", "1714521600.5"]).as_of == 1_714_521_600.5


def test_a_bad_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["profile", "u-42", "--as-of", "yesterday"])
    assert exit_.value.code == 2
    assert "--as-of: expected an ISO 8601 time" in capsys.readouterr().err


def test_user_file(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# campaign 12\nu-1\n\n  u-2  \n   # not a user\nu-3\n", encoding="utf-8")
    args = _parser().parse_args(["audience", "--item", "i-7", "--users", str(users), "--k", "5", "--out", "a.csv"])
    assert args.users == ["u-1", "u-2", "u-3"]
    assert (args.item, args.category, args.k, args.min_score, args.out) == ("i-7", None, 5, 0.0, "a.csv")


def test_user_ids_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("u-9\n# end\n"))
    assert _user_ids("-") == ["u-9"]


@pytest.mark.parametrize(
    ("contents", "message"), [(None, "cannot read"), ("", "no user ids"), ("# only a comment\n\n", "no user ids")]
)
def test_a_bad_user_file_is_a_usage_error(
    contents: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = tmp_path / "users.txt"
    if contents is not None:
        users.write_text(contents, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["audience", "--category", "shoes", "--users", str(users)])
    assert exit_.value.code == 2
    assert f"--users: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("target", [[], ["--item", "i-7", "--category", "shoes"]])
def test_an_audience_names_one_target(target: list[str], tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("u-1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["audience", *target, "--users", str(users)])
    assert exit_.value.code == 2


def test_tables() -> None:
    table = _affinity_table("category", [Affinity("shoes", 0.5, 0.7, 0.4, 0.3, "rising")])
    assert table.splitlines()[2].split() == ["shoes", "50.0%", "70.0%", "40.0%", "+30.0", "pp", "↑"]
    table = _trend_table([Trend("colour=red", "attribute", 0.12, 0.2, -0.08, 30, 70)])
    assert table.splitlines()[2].split() == ["colour=red", "attribute", "12.0%", "20.0%", "-8.0", "pp", "30/70"]


def test_an_unreachable_gateway_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--target", f"127.0.0.1:{port}", "trends"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("preftrack-insights: UNAVAILABLE: ") and err.count("\n") == 1


def _profile(start_s: float) -> Profile:
    history = []
    for i in range(60):
        shoes = 0.6 if i < 30 else 0.2
        shares = {"shoes": shoes, "bags": 0.8 - shoes, "hats": 0.1, "belts": 0.1}
        shares.update({f"tail-{j}": 0.01 * j for j in range(8)})  # more categories than are drawn
        history.append((start_s + i * DAY_S, shares))
    shift = Shift(start_s + 30 * DAY_S, 120, ("shoes", "bags"), ("bags", "shoes"))
    falling = Affinity("shoes", 0.2, 0.2, 0.4, -0.2, "falling")
    return Profile(start_s + 60 * DAY_S, 240, (falling,), (), (), (shift,), shift, tuple(history))


def test_plot_profile(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "profile.png"
    _plot_profile("u-42", _profile(1_714_521_600.0), str(path))
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000


def test_plot_profile_without_history(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit, match="no history"):
        _plot_profile("u-42", Profile(0.0, 0, (), (), (), (), None), str(tmp_path / "p.png"))


def test_plot_trends(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rising = (
        Trend("shoes", "category", 0.3, 0.1, 0.2, 300, 100),
        Trend("colour=red", "attribute", 0.2, 0.1, 0.1, 9, 4),
    )
    falling = (Trend("hats", "category", 0.05, 0.2, -0.15, 50, 200),)
    path = tmp_path / "trends.png"
    _plot_trends(Trends(rising, falling, 1_714_521_600.0, 1_714_521_600.0 + 7 * DAY_S, 1000, 1000), str(path))
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5_000
    with pytest.raises(SystemExit, match="no rising or falling"):
        _plot_trends(Trends((), (), 0.0, 1.0, 0, 0), str(tmp_path / "none.png"))
