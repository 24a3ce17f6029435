"""``preftrack-insights``: what users prefer and how it changes, from a terminal.

    preftrack-insights profile u-42                          # top categories, attributes, items; shifts
    preftrack-insights profile u-42 --png u42.png            # also their category shares over time
    preftrack-insights audience --item i-7 --users ids.txt --k 1000 --out best.csv   # who wants item i-7
    preftrack-insights audience --category shoes --users - < ids.txt                  # ids from stdin
    preftrack-insights trends --window 7d --png trends.png   # rising and falling categories and attributes

The gateway is ``--target`` (or PREFTRACK_INSIGHTS_TARGET, default localhost:50051); the analyst key is
PREFTRACK_ANALYST_KEY. ``--as-of`` is ISO 8601 (UTC unless it names a zone) or epoch seconds; ``--window`` is
a number with d, h, m or s (``7d``, ``24h``, ``90m``), or plain seconds.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from preftrack.admin.cli import _table, _when
from preftrack.errors import PreftrackError
from preftrack.insights import Affinity, InsightsClient, Profile, Trend, Trends

_UTC = datetime.timezone.utc  # noqa: UP017 - the SDK supports Python 3.10 (no datetime.UTC)
_ARROWS = {"rising": "↑", "falling": "↓", "steady": "→"}
_UNITS_S = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([dhms]?)")
_SHOWN = 20  # audience members printed; --out has them all
_PLOTTED = 8  # categories drawn in a profile's history


def _duration(text: str) -> float:
    """Seconds in a window written as ``7d``, ``24h``, ``90m``, ``45s`` or plain seconds.

    >>> _duration("7d"), _duration("90m"), _duration("3600")
    (604800.0, 5400.0, 3600.0)
    """
    match = _DURATION.fullmatch(text.strip().lower())
    seconds = float(match[1]) * _UNITS_S[match[2]] if match else 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 7d, 24h, 90m or seconds, got {text!r}")
    return seconds


def _instant(text: str) -> float:
    """Epoch seconds of an ISO 8601 time (UTC unless it names a zone) or of epoch seconds.

    >>> _instant("2024-05-01T00:00:00Z"), _instant("2024-05-01 02:00+02:00"), _instant("1714521600")
    (1714521600.0, 1714521600.0, 1714521600.0)
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        # Python 3.10's fromisoformat does not read a trailing "Z".
        when = datetime.datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time (2024-05-01T12:00:00Z) or epoch seconds, got {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=_UTC)).timestamp()


def _parse_user_ids(lines: Iterable[str]) -> list[str]:
    """User ids, one a line; blank lines and ``#`` comments are skipped.

    >>> _parse_user_ids(["# campaign 12", "u-1", "", "  u-2  "])
    ['u-1', 'u-2']
    """
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _user_ids(source: str) -> list[str]:
    """The user ids in a file, or on stdin for ``-`` (an argparse type, so a bad file is a usage error)."""
    try:
        if source == "-":
            ids = _parse_user_ids(sys.stdin)
        else:
            with open(source, encoding="utf-8") as lines:
                ids = _parse_user_ids(lines)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {source}: {exc.strerror}") from None
    if not ids:
        raise argparse.ArgumentTypeError(f"no user ids in {'stdin' if source == '-' else source}")
    return ids


def _share(value: float) -> str:
    return f"{value:.1%}"


def _points(value: float) -> str:
    """A change of share in percentage points."""
    return f"{value * 100:+.1f} pp"


def _affinity_table(kind: str, affinities: Sequence[Affinity]) -> str:
    return _table(
        (kind, "score", "short", "long", "trend", ""),
        [
            (a.key, _share(a.score), _share(a.short_term), _share(a.long_term), _points(a.trend), _ARROWS[a.direction])
            for a in affinities
        ],
    )


def _profile(insights: InsightsClient, args: argparse.Namespace) -> None:
    p = insights.profile(args.user_id, as_of_s=args.as_of, top=args.top, history_points=args.points if args.png else 0)
    if not p.events_used:
        print(f"user {args.user_id}: no events before {_when(p.as_of_s)} UTC (unknown, or erased)")
        return
    print(f"user {args.user_id} as of {_when(p.as_of_s)} UTC, from {p.events_used} events")
    for kind, affinities in (("category", p.categories), ("attribute", p.attributes), ("item", p.items)):
        if affinities:
            print()
            print(_affinity_table(kind, affinities))
    print()
    if p.shifts:
        print(
            _table(
                ("shift at (UTC)", "events before", "top categories"),
                [
                    (_when(s.at_s), s.event_index, f"{', '.join(s.before) or '-'} → {', '.join(s.after) or '-'}")
                    for s in p.shifts
                ],
            )
        )
    else:
        print("no preference shifts detected")
    if args.png:
        _plot_profile(args.user_id, p, args.png)
        print(f"plot: {args.png}")


def _audience(insights: InsightsClient, args: argparse.Namespace) -> None:
    ranking = insights.iter_audience(
        args.users, item_id=args.item, category=args.category, k=args.k, min_score=args.min_score, as_of_s=args.as_of
    )
    # At most max_audience_users (100,000 by default) come back: small enough to hold, and a CSV is written
    # only once the whole ranking has arrived, so a broken stream cannot leave one that looks complete.
    ranked = list(ranking)
    target = f"item {args.item}" if args.item is not None else f"category {args.category}"
    print(_table(("#", "user", "score"), [(i, u, f"{s:.4f}") for i, (u, s) in enumerate(ranked[:_SHOWN], 1)]))
    more = f" (first {_SHOWN} shown)" if len(ranked) > _SHOWN else ""
    print(f"\n{len(ranked)} of {len(set(args.users))} users ranked for {target}{more}")
    if args.out:
        _write_csv(ranked, args.out)
        print(f"csv: {args.out}")


def _write_csv(ranked: Iterable[tuple[str, float]], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(("user_id", "score"))
        writer.writerows((user_id, f"{score:.6f}") for user_id, score in ranked)


def _trend_table(trends: Sequence[Trend]) -> str:
    return _table(
        ("key", "kind", "recent share", "before share", "change", "events (recent/before)"),
        [
            (
                t.key,
                t.kind,
                _share(t.share_recent),
                _share(t.share_before),
                _points(t.change),
                f"{t.events_recent}/{t.events_before}",
            )
            for t in trends
        ],
    )


def _trends(insights: InsightsClient, args: argparse.Namespace) -> None:
    t = insights.trends(window_s=args.window, top=args.top, as_of_s=args.as_of)
    print(
        f"recent window {_when(t.start_s)} → {_when(t.end_s)} UTC: {t.events_recent} events, "
        f"against {t.events_before} in the window before"
    )
    for name, trends in (("rising", t.rising), ("falling", t.falling)):
        print(f"\n{name}")
        print(_trend_table(trends) if trends else "  none")
    if args.png:
        _plot_trends(t, args.png)
        print(f"plot: {args.png}")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--png needs matplotlib: pip install matplotlib") from exc
    return plt


def _plot_profile(user_id: str, profile: Profile, path: str) -> None:
    """Each of the user's top categories' share over time (by peak share), shifts dashed and labelled."""
    plt = _pyplot()
    if not profile.history:
        raise SystemExit(f"user {user_id} has no history to plot")
    times = [datetime.datetime.fromtimestamp(at, _UTC) for at, _ in profile.history]
    peaks: dict[str, float] = {}
    for _, shares in profile.history:
        for category, share in shares.items():
            peaks[category] = max(share, peaks.get(category, 0.0))
    plotted = sorted(peaks, key=lambda c: (-peaks[c], c))[:_PLOTTED]
    fig, ax = plt.subplots(figsize=(10, 5))
    for category in plotted:
        ax.plot(times, [shares.get(category, 0.0) for _, shares in profile.history], label=category)
    for shift in profile.shifts:
        at = datetime.datetime.fromtimestamp(shift.at_s, _UTC)
        ax.axvline(at, color="black", linestyle="--", linewidth=1)
        label = "→ " + (", ".join(shift.after[:2]) or "-")
        ax.annotate(
            label,
            (ax.xaxis.convert_units(at), 1),  # offset text does not convert dates itself
            xycoords=ax.get_xaxis_transform(),
            xytext=(-3, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
        )
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("share of the user's engagement")
    ax.set_title(f"user {user_id}: category shares over time, preference shifts dashed")
    if plotted:
        ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_trends(trends: Trends, path: str) -> None:
    """Change of share per key: rising (green) above falling (red), largest first."""
    plt = _pyplot()
    rows = [*trends.rising, *trends.falling]
    if not rows:
        raise SystemExit("no rising or falling categories or attributes to plot")
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.35 * len(rows) + 1.5)))
    ax.barh(
        range(len(rows)),
        [t.change * 100 for t in rows],
        color=["tab:green"] * len(trends.rising) + ["tab:red"] * len(trends.falling),
    )
    ax.set_yticks(range(len(rows)), [f"{t.key} ({t.kind})" for t in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("change in share of engagement (percentage points)")
    ax.set_title(
        f"recent window {_when(trends.start_s)} → {_when(trends.end_s)} UTC against the one before", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preftrack-insights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=os.environ.get("PREFTRACK_INSIGHTS_TARGET", "localhost:50051"))
    sub = parser.add_subparsers(dest="command", required=True)
    profile = sub.add_parser("profile", help="a user's top categories, attributes and items, and shifts")
    profile.add_argument("user_id", help="the id the shop sends for this user")
    profile.add_argument("--top", type=int, default=5, help="how many of each (1 to 100)")
    profile.add_argument("--png", default=None, help="also plot the category shares over time")
    profile.add_argument("--points", type=int, default=200, help="times sampled for --png (at most 500)")
    profile.set_defaults(run=_profile)

    audience = sub.add_parser("audience", help="rank users by how likely each is to want an item or category")
    target = audience.add_mutually_exclusive_group(required=True)
    target.add_argument("--item", default=None, help="a catalogue item id")
    target.add_argument("--category", default=None, help="a category (its most popular items)")
    audience.add_argument("--users", type=_user_ids, required=True, metavar="FILE|-", help="user ids, one a line")
    audience.add_argument("--k", type=int, default=0, help="keep the best k (default 0: all)")
    audience.add_argument("--min-score", type=float, default=0.0, help="drop users scoring below this")
    audience.add_argument("--out", default=None, metavar="FILE.csv", help="write every ranked user (user_id,score)")
    audience.set_defaults(run=_audience)

    trends = sub.add_parser("trends", help="categories and attributes rising or falling in the shop")
    trends.add_argument("--window", type=_duration, default=7 * 86_400.0, help="7d, 24h, 90m or seconds (7d)")
    trends.add_argument("--top", type=int, default=10, help="how many rising and falling (1 to 100)")
    trends.add_argument("--png", default=None, help="also draw the changes as bars")
    trends.set_defaults(run=_trends)
    for command in (profile, audience, trends):
        command.add_argument("--as-of", type=_instant, default=None, help="ISO 8601 or epoch seconds (default: now)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with InsightsClient(args.target, api_key=os.environ.get("PREFTRACK_ANALYST_KEY")) as insights:
            args.run(insights, args)
    except PreftrackError as exc:
        print(f"preftrack-insights: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
