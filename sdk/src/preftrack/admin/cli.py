"""``preftrack-admin``: ship, watch and roll back model versions from a terminal.

    preftrack-admin versions                       # what is registered, in which state
    preftrack-admin start 7 --fraction 0.1         # canary version 7 on 10% of users (--shadow, --direct)
    preftrack-admin status                         # per-arm outcomes and the sequential comparison
    preftrack-admin promote | rollback             # decide by hand (automatic decisions do it otherwise)
    preftrack-admin report --version 7 --png r.png # per-arm positive rate over time, decisions marked
    preftrack-admin evaluate 7                     # version 7 judged before any user sees it

The gateway is ``--target`` (or PREFTRACK_ADMIN_TARGET, default localhost:50051); the admin key is
PREFTRACK_ADMIN_KEY.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from preftrack.admin import AdminClient, JournalEntry
from preftrack.errors import PreftrackError


def _when(seconds: float) -> str:
    utc = datetime.timezone.utc  # noqa: UP017 - the SDK supports Python 3.10 (no datetime.UTC)
    return datetime.datetime.fromtimestamp(seconds, utc).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _dict(value: object) -> dict[str, Any]:
    """A JSON object from the journal's details, or an empty one."""
    return value if isinstance(value, dict) else {}


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _versions(admin: AdminClient, args: argparse.Namespace) -> None:
    rows = []
    for v in admin.versions():
        auc = _dict(v.metrics.get("candidate")).get("auc")
        rows.append(
            (
                v.version,
                v.state,
                v.parent or "-",
                _num(auc) if auc is not None else "-",
                _when(v.updated_at),
                v.note[:70],
            )
        )
    print(_table(("version", "state", "parent", "offline AUC", "updated (UTC)", "note"), rows))


def _evaluate(admin: AdminClient, args: argparse.Namespace) -> None:
    """What the trainer measured when it registered the version: its holdout against the serving version's, and
    the off-policy estimate of its first positions from the explored lists of that holdout."""
    found = next((v for v in admin.versions() if v.version == args.version), None)
    if found is None:
        raise PreftrackError(f"version {args.version} is not in the registry", "NOT_FOUND")
    candidate, serving = _dict(found.metrics.get("candidate")), _dict(found.metrics.get("serving"))
    print(f"version {found.version}: {found.state} ({found.note})")
    print(
        f"holdout AUC {_num(candidate.get('auc'))} vs {_num(serving.get('auc'))} for version {found.parent or '-'} "
        f"(log loss {_num(candidate.get('log_loss'))} vs {_num(serving.get('log_loss'))})"
    )
    judged = _dict(found.metrics.get("offpolicy"))
    if not judged.get("n"):
        print(
            "off-policy: no explored lists in its holdout; set PREFTRACK_EXPLORATION (e.g. 0.1) on the gateways so "
            "that served lists can judge the next versions"
        )
        return
    rows = [
        (
            name.upper(),
            _num(_dict(judged.get(name)).get("value")),
            _num(_dict(judged.get(name)).get("low")),
            _num(_dict(judged.get(name)).get("high")),
        )
        for name in ("ips", "snips", "dr", "serving", "lead", "logged")
    ]
    print(f"off-policy, first positions of {judged['n']} explored lists ({judged.get('matches', 0)} picks agreed):")
    print(_table(("estimate", "reward", "95% low", "95% high"), rows))
    print(
        "(SERVING: the serving version's own first choices, by DR; LEAD: DR minus SERVING, list by list; LOGGED: what"
    )
    print(" the explored lists earned, exploration included)")
    print(f"verdict: {judged.get('verdict', '-')} ({judged.get('why', '')})")


def _status(admin: AdminClient, args: argparse.Namespace) -> None:
    r = admin.rollout()
    print(f"stable version:    {r.stable_version or '-'}")
    pinned = f"  (pinned {r.pinned_version})" if r.pinned_version else ""
    print(f"candidate version: {r.candidate_version or '-'}{pinned}")
    if r.candidate_version:
        share = f", {r.fraction:.1%} of users" if r.mode == "canary" else ""
        print(f"mode:              {r.mode}{share}; automatic decisions {'paused' if r.paused else 'on'}")
        print()
        print(
            _table(
                ("arm", "outcomes", "positives", "positive rate", "log loss", "AUC"),
                [
                    (a.arm, a.outcomes, a.positives, _num(a.positive_rate), _num(a.log_loss), _num(a.auc))
                    for a in r.arms
                ],
            )
        )
        if r.shadow["outcomes"]:
            print(
                f"\nshadow, paired on {r.shadow['outcomes']} shown items: log loss stable "
                f"{_num(r.shadow['stable_log_loss'])}, candidate {_num(r.shadow['candidate_log_loss'])}"
            )
        if r.comparison:
            c = r.comparison
            print(
                f"\n{c['metric']}: candidate − stable {c['difference']:+.4f}, always-valid interval "
                f"[{c['low']:+.4f}, {c['high']:+.4f}], margin {c['margin']:.4f} → {c['decision']} ({c['reason']})"
            )
        print(
            f"candidate calls here: {r.candidate_calls}, errors {r.candidate_errors}, "
            f"p99 {_num(r.candidate_p99_ms, 1)} ms"
        )


def _journal(admin: AdminClient, args: argparse.Namespace) -> None:
    entries = admin.journal(version=args.version, kind=args.kind or "", limit=args.limit)
    rows = []
    for e in entries:
        what = e.message
        if e.kind == "transition":
            what = f"{e.details.get('from') or 'new'} → {e.details.get('to')}: {e.message}"
        rows.append((_when(e.at), e.version, e.kind, e.actor, what[:90]))
    print(_table(("at (UTC)", "version", "kind", "by", "what"), rows))


def _start(admin: AdminClient, args: argparse.Namespace) -> None:
    mode = "shadow" if args.shadow else "direct" if args.direct else "canary"
    version = admin.start_rollout(args.version, mode=mode, fraction=args.fraction or 0.0, reason=args.reason)
    print(f"version {version.version}: {version.state}")


def _forget(admin: AdminClient, args: argparse.Namespace) -> None:
    e = admin.forget_user(args.user_id)
    print(f"erased: ticket {e.ticket}, {e.events_deleted} events and {e.impressions_deleted} served lists deleted")


def _erasures(admin: AdminClient, args: argparse.Namespace) -> None:
    rows = [
        (e.position, _when(e.erased_at), e.ticket, e.actor, e.events_deleted, e.impressions_deleted)
        for e in admin.erasures(after=args.after)
    ]
    print(_table(("#", "at (UTC)", "ticket", "by", "events", "served lists"), rows))


def _report(admin: AdminClient, args: argparse.Namespace) -> None:
    version = args.version or admin.rollout().candidate_version
    if not version:
        raise SystemExit("name the rollout's version with --version (no rollout is in progress)")
    entries = admin.journal(version=version, limit=10_000)
    checks = [e for e in entries if e.kind == "check"]
    decisions = [e for e in entries if e.kind == "transition"]
    rows = []
    for e in checks:
        arms = _dict(e.details.get("arms"))
        comparison = _dict(e.details.get("comparison"))
        rate = {arm: _dict(arms.get(arm)).get("positive_rate", float("nan")) for arm in ("stable", "canary")}
        rows.append(
            (
                _when(e.at),
                _dict(arms.get("stable")).get("outcomes", 0),
                _num(rate["stable"]),
                _dict(arms.get("canary")).get("outcomes", 0),
                _num(rate["canary"]),
                comparison.get("decision", "-"),
            )
        )
    print(_table(("at (UTC)", "stable n", "stable rate", "canary n", "canary rate", "decision"), rows[-20:]))
    for e in decisions:
        print(f"{_when(e.at)}  {e.details.get('from') or 'new'} → {e.details.get('to')} by {e.actor}: {e.message}")
    if args.png:
        _plot(version, checks, decisions, args.png)
        print(f"plot: {args.png}")


def _plot(version: int, checks: list[JournalEntry], decisions: list[JournalEntry], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--png needs matplotlib: pip install matplotlib") from exc
    if not checks:
        raise SystemExit(f"version {version} has no recorded checks to plot")
    start = checks[0].at
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for arm, colour in (("stable", "tab:blue"), ("canary", "tab:orange")):
        xs, ys, lo, hi = [], [], [], []
        for e in checks:
            data = _dict(_dict(e.details.get("arms")).get(arm))
            n, rate = data.get("outcomes", 0), data.get("positive_rate", float("nan"))
            if n and not math.isnan(rate):
                half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-9) / n)
                xs.append((e.at - start) / 60)
                ys.append(rate)
                lo.append(rate - half)
                hi.append(rate + half)
        if xs:
            ax.plot(xs, ys, color=colour, label=f"{arm} arm")
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.15)
    for e in decisions:
        if e.details.get("to") in ("serving", "rolled_back", "canary", "shadow"):
            x = (e.at - start) / 60
            ax.axvline(x, color="black", linestyle=":", linewidth=1)
            ax.annotate(str(e.details.get("to")), (x, ax.get_ylim()[1]), rotation=90, va="top", ha="right", fontsize=8)
    ax.set_xlabel("minutes since the first check")
    ax.set_ylabel("attributed positive rate of shown items")
    ax.set_title(f"rollout of version {version}: per-arm outcomes (95% pointwise bands) and decisions")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no labelled outcomes yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="preftrack-admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=os.environ.get("PREFTRACK_ADMIN_TARGET", "localhost:50051"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("versions", help="registered versions and their states").set_defaults(run=_versions)
    sub.add_parser("status", help="the rollout in progress, per arm").set_defaults(run=_status)
    start = sub.add_parser("start", help="roll out a version (canary by default)")
    start.add_argument("version", type=int)
    start.add_argument("--fraction", type=float, default=None, help="canary share of users (default: gateway's)")
    start.add_argument("--shadow", action="store_true", help="score it off the answer path instead")
    start.add_argument("--direct", action="store_true", help="serve it to everyone at once (no live test)")
    start.add_argument("--reason", default="")
    start.set_defaults(run=_start)
    fraction = sub.add_parser("fraction", help="change the canary's share of users")
    fraction.add_argument("fraction", type=float)
    fraction.set_defaults(run=lambda a, n: a.set_fraction(n.fraction))
    for name, helptext in (("promote", "make the candidate stable"), ("rollback", "end the candidate, or revert")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--reason", default="")
        p.set_defaults(
            run=(lambda a, n: print(f"stable version: {a.promote(n.reason)}"))
            if name == "promote"
            else (lambda a, n: print(f"stable version: {a.roll_back(n.reason)}"))
        )
    sub.add_parser("pause", help="pause automatic decisions").set_defaults(run=lambda a, n: a.pause(True))
    sub.add_parser("resume", help="resume automatic decisions").set_defaults(run=lambda a, n: a.pause(False))
    pin = sub.add_parser("pin", help="serve a version as stable and ship nothing automatically")
    pin.add_argument("version", type=int)
    pin.set_defaults(run=lambda a, n: a.pin(n.version))
    sub.add_parser("unpin", help="let exported versions roll out again").set_defaults(run=lambda a, n: a.pin(None))
    journal = sub.add_parser("journal", help="transitions, changes and checks, with who and why")
    journal.add_argument("--version", type=int, default=None)
    journal.add_argument("--kind", default="", help="transition, check, fraction, pause or pin")
    journal.add_argument("--limit", type=int, default=50)
    journal.set_defaults(run=_journal)
    forget = sub.add_parser("forget", help="erase a user's events, served lists and real-time state")
    forget.add_argument("user_id", help="the id the shop sends for this user")
    forget.set_defaults(run=_forget)
    erasures = sub.add_parser("erasures", help="recorded erasures (they name no one)")
    erasures.add_argument("--after", type=int, default=0, help="only those after this position")
    erasures.set_defaults(run=_erasures)
    report = sub.add_parser("report", help="a rollout's checks over time and its decisions")
    report.add_argument("--version", type=int, default=None, help="default: the rollout in progress")
    report.add_argument("--png", default=None, help="also plot per-arm outcomes with the decisions marked")
    report.set_defaults(run=_report)
    evaluate = sub.add_parser("evaluate", help="a version judged offline: holdout and off-policy estimates")
    evaluate.add_argument("version", type=int)
    evaluate.set_defaults(run=_evaluate)
    args = parser.parse_args(argv)
    try:
        with AdminClient(args.target, api_key=os.environ.get("PREFTRACK_ADMIN_KEY")) as admin:
            args.run(admin, args)
    except PreftrackError as exc:
        print(f"preftrack-admin: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
