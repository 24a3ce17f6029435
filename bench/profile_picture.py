"""Draw the README's profile picture: a drifted user of the synthetic shop, their category shares over time and
the shifts the detector found, with the same profile code the gateway runs (``preftrack_gateway.profile``) and
the same plot as ``preftrack-insights profile --png``. Prints the user, the true drift time and the shifts.

    .venv/bin/python bench/profile_picture.py [--out docs/images/profile.png] [--seed 7]
"""

from __future__ import annotations

import argparse
import datetime

from preftrack.insights import Affinity, Profile, Shift
from preftrack.insights.cli import _plot_profile
from preftrack_gateway import profile as profiles
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images/profile.png")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    shop = synthetic.generate(synthetic.SyntheticConfig(seed=args.seed, sessions_per_user=16))
    events, _ = clean(shop.events)
    by_user: dict[str, list] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    end = max(e.timestamp_s for e in events) + 1.0
    # The drifted user with the most events whose profile found exactly one shift after the drift.
    chosen = None
    for user in sorted(shop.truth.drifted_users, key=lambda u: (-len(by_user.get(u, ())), u)):
        found = profiles.build_profile(by_user[user], shop.items, as_of_s=end)
        if len(found.shifts) == 1 and found.shifts[0].at_s > shop.truth.drift_time_s:
            chosen = (user, found)
            break
    assert chosen is not None, "no drifted user with one detected shift"
    user, found = chosen
    history = profiles.category_history(by_user[user], shop.items, points=200)

    def affinity(a: profiles.Affinity) -> Affinity:
        return Affinity(a.key, a.score, a.short, a.long, a.trend, a.direction)

    def shift(s: profiles.Shift) -> Shift:
        return Shift(s.at_s, s.event_index, s.before, s.after)

    sdk_profile = Profile(
        as_of_s=found.as_of_s,
        events_used=found.events_used,
        categories=tuple(affinity(a) for a in found.categories),
        attributes=tuple(affinity(a) for a in found.attributes),
        items=tuple(affinity(a) for a in found.items),
        shifts=tuple(shift(s) for s in found.shifts),
        last_shift=shift(found.last_shift) if found.last_shift else None,
        history=tuple(history),
    )
    _plot_profile(user, sdk_profile, args.out)
    utc = datetime.timezone.utc  # noqa: UP017 - the SDK's plot code supports Python 3.10
    when = datetime.datetime.fromtimestamp(shop.truth.drift_time_s, utc)
    print(f"user {user}: {found.events_used} events; preferences redrawn at {when:%Y-%m-%d %H:%M} (ground truth)")
    for s in found.shifts:
        at = datetime.datetime.fromtimestamp(s.at_s, utc)
        print(f"  shift detected {at:%Y-%m-%d %H:%M}: {s.before} -> {s.after}")
    print(f"  top categories now: {[(a.key, round(a.score, 2), a.direction) for a in found.categories]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
