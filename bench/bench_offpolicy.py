"""Off-policy evaluation (issue 26, step 5): the gateway's exploration policy and its IPS, SNIPS and DR estimates
against each version's true online value, on the synthetic shop where the truth is known.

    .venv/bin/python bench/bench_offpolicy.py [--seeds 20] [--lists 10000] [--shares 0.1 0.2]

The world (:mod:`preftrack_dev.offpolicy_eval`): the synthetic shop (2,000 items, 300 users; its categories,
its users' preferences over time, its items' popularity), a true click rule for the item shown first (the
generator's own click rule on a view), and per seed ``--lists`` occasions of 5 to 10 candidates drawn from the
user's categories and from popular items. A LOGGING version (true logits + N(0, 1)) ranks each list; the gateway's
``lists.explore`` with share ε decides what is shown first and logs its propensity; the click is drawn from the
truth. Three candidates are judged from that log with ``offpolicy.estimate``: BETTER (true logits + N(0, 0.5)),
EQUAL (+ N(0, 1), the logging version's noise drawn afresh) and WORSE (+ N(0, 2)), and as references the logging
version itself; each with its probabilities ``sigmoid(score)`` (roughly calibrated: DR's reward model) and again
with ``sigmoid(score + 2)`` (overconfident; the same picks). A version's true value is the exact expected click
rate of the items it would put first on the same occasions.

Reported, per share: each estimator's coverage (how often the true value lies in its 95% interval, of the seeds),
mean absolute error, mean error and mean half-width; how often each estimator orders BETTER > EQUAL > WORSE as
their true values do; what ``offpolicy.verdict`` (the rollout's use of the estimate) says of each; and the cost of
exploration: the logging version's expected click rate at the first position without and with exploration.

Exits 1, with a ``bench_offpolicy FAILED`` line, when the measurement did not happen (a log with no usable list,
a version never matching the item shown, a NaN). Issue 26's acceptance (DR ranks the three as the truth does in
every seed; each true value inside DR's interval in >= 90% of the seeds) is reported met or MISSED, never failed.
The default run takes about 40 s on a 2-core machine (one process; 45 s of CPU), ``--lists 40000 --shares 0.2``
about 3 minutes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Sequence

from preftrack_dev import offpolicy_eval as sim
from preftrack_gateway import offpolicy

ESTIMATORS = ("dr", "ips", "snips")
#: The acceptance's three candidates, best first by design.
RANKED = ("better", "equal", "worse")
COVERAGE_GOAL = 0.9


class BenchError(SystemExit):
    """Something the benchmark measures did not happen; exits 1 with the message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bench_offpolicy FAILED: {message}")


def check(results: Sequence[sim.SeedResult]) -> None:
    """Fail loudly when an estimate is missing or not a number."""
    for result in results:
        for judged in result.judged:
            estimate, where = judged.estimate, f"seed {result.seed}, share {judged.share}, {judged.version}"
            if estimate.get("n") != result.n_lists:
                raise BenchError(f"{where}: {estimate.get('n')} of {result.n_lists} lists used")
            if not estimate.get("matches"):
                raise BenchError(f"{where}: the version never picked the item shown first")
            numbers = [judged.truth] + [
                float(estimate[e][part])  # type: ignore[index]
                for e in (*ESTIMATORS, "logged")
                for part in ("value", "low", "high")
            ]
            if not all(math.isfinite(x) for x in numbers):
                raise BenchError(f"{where}: a value is not finite: {estimate}")


def _by(results: Sequence[sim.SeedResult], share: float) -> dict[str, list[sim.Judged]]:
    by_version: dict[str, list[sim.Judged]] = collections.defaultdict(list)
    for result in results:
        for judged in result.judged:
            if judged.share == share:
                by_version[judged.version].append(judged)
    return by_version


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """One estimator on one version over the seeds."""

    coverage: float
    mae: float
    bias: float
    half: float


def accuracy(judged: Sequence[sim.Judged], estimator: str) -> Accuracy:
    errors = [sim.value(j.estimate, estimator) - j.truth for j in judged]
    halves = [(j.estimate[estimator]["high"] - j.estimate[estimator]["low"]) / 2 for j in judged]  # type: ignore[index]
    return Accuracy(
        coverage=statistics.fmean(sim.covers(j.estimate, estimator, j.truth) for j in judged),
        mae=statistics.fmean(abs(e) for e in errors),
        bias=statistics.fmean(errors),
        half=statistics.fmean(halves),
    )


def ranked_right(judged: dict[str, list[sim.Judged]], estimator: str, suffix: str = "") -> tuple[int, dict[str, int]]:
    """Seeds where the estimator orders better, equal and worse as their true values do; and per pair, seeds
    where it orders that pair as the truth does."""
    seeds = len(judged["better" + suffix])
    full, pairs = 0, {f"{a}>{b}": 0 for a, b in (("better", "worse"), ("better", "equal"), ("equal", "worse"))}
    for s in range(seeds):
        truth = {v: judged[v + suffix][s].truth for v in RANKED}
        guess = {v: sim.value(judged[v + suffix][s].estimate, estimator) for v in RANKED}
        full += sorted(RANKED, key=truth.__getitem__) == sorted(RANKED, key=guess.__getitem__)
        for pair in pairs:
            a, b = pair.split(">")
            pairs[pair] += (truth[a] > truth[b]) == (guess[a] > guess[b])
    return full, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 1..N (default 20)")
    parser.add_argument("--lists", type=int, default=10_000, help="logged lists per seed and share (default 10000)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.2], help="exploration shares")
    args = parser.parse_args()
    if args.seeds < 2 or args.lists < 2:
        parser.error("--seeds and --lists must be >= 2")
    config = sim.LogConfig(n_lists=args.lists)
    started = time.monotonic()
    results = []
    for seed in range(1, args.seeds + 1):
        results.append(sim.run_seed(seed, args.shares, config))
        print(f"  seed {seed}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    check(results)
    elapsed = time.monotonic() - started
    seeds = len(results)
    print(
        f"Off-policy evaluation on the synthetic shop: {seeds} seeds x {args.lists} lists, exploration shares "
        f"{', '.join(map(str, args.shares))} ({elapsed:.0f} s)\n"
    )
    fields: list[str] = []
    goals: list[str] = []

    print("The cost of exploration: the logging version's expected click rate at the first position (mean of seeds)\n")
    print("| share | greedy (no exploration) | with exploration | cost | relative | realised in the log |")
    print("|---:|---:|---:|---:|---:|---:|")
    greedy = statistics.fmean(r.greedy for r in results)
    for share in args.shares:
        explored = statistics.fmean(r.explored[share] for r in results)
        realised = statistics.fmean(sim.value(_by([r], share)["logging"][0].estimate, "logged") for r in results)
        cost = greedy - explored
        print(f"| {share} | {greedy:.4f} | {explored:.4f} | {cost:.4f} | {cost / greedy:.1%} | {realised:.4f} |")
        fields += [f"e{share}_hit_rate_greedy={greedy:.4f}", f"e{share}_hit_rate_explored={explored:.4f}"]
        fields.append(f"e{share}_exploration_cost={cost:.4f}")

    for share in args.shares:
        judged = _by(results, share)
        print(
            f"\nShare {share}: coverage of the true value by the 95% interval (of {seeds} seeds), mean |error|, "
            "mean error, mean half-width\n"
        )
        print(
            "| version | true value | own belief | disagrees with logging | matches "
            "| DR cover | DR abs err | DR bias | DR half | IPS cover | IPS abs err | IPS half "
            "| SNIPS cover | SNIPS abs err | SNIPS half |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for version, rows in judged.items():
            acc = {e: accuracy(rows, e) for e in ESTIMATORS}
            truth = statistics.fmean(j.truth for j in rows)
            disagree = statistics.fmean(j.disagree for j in rows)
            believed = statistics.fmean(j.believed for j in rows)
            matches = statistics.fmean(int(j.estimate["matches"]) for j in rows)  # type: ignore[call-overload]
            dr, ips, snips = acc["dr"], acc["ips"], acc["snips"]
            print(
                f"| {version} | {truth:.4f} | {believed:.4f} | {disagree:.0%} | {matches:.0f} | "
                f"{dr.coverage:.2f} | {dr.mae:.4f} | {dr.bias:+.4f} | {dr.half:.4f} | "
                f"{ips.coverage:.2f} | {ips.mae:.4f} | {ips.half:.4f} | "
                f"{snips.coverage:.2f} | {snips.mae:.4f} | {snips.half:.4f} |"
            )
            for e in ESTIMATORS:
                key = f"e{share}_{version.replace('+', '_over')}_{e}"
                fields += [f"{key}_coverage={acc[e].coverage:.2f}", f"{key}_mae={acc[e].mae:.4f}"]

        print(f"\nShare {share}: seeds (of {seeds}) where the estimate orders better, equal, worse as the truth does\n")
        truth_order = sum(
            judged["better"][s].truth > judged["equal"][s].truth > judged["worse"][s].truth for s in range(seeds)
        )
        gaps = {
            pair: statistics.fmean(judged[a][s].truth - judged[b][s].truth for s in range(seeds))
            for pair, (a, b) in {"better-equal": ("better", "equal"), "equal-worse": ("equal", "worse")}.items()
        }
        print(
            f"(the truth itself is better > equal > worse in {truth_order} of {seeds} seeds; mean true gaps "
            + ", ".join(f"{p} {g:+.4f}" for p, g in gaps.items())
            + ")\n"
        )
        print("| probabilities | estimator | all three | better vs worse | better vs equal | equal vs worse |")
        print("|---|---|---:|---:|---:|---:|")
        for label, suffix in (("sigmoid(score)", ""), ("sigmoid(score + 2)", "+2")):
            for e in ESTIMATORS:
                full, pairs = ranked_right(judged, e, suffix)
                print(f"| {label} | {e.upper()} | {full} | " + " | ".join(str(n) for n in pairs.values()) + " |")
                fields.append(f"e{share}_{e}{suffix.replace('+', '_over')}_ranked={full}/{seeds}")

        print(f"\nShare {share}: offpolicy.verdict (the paired DR lead over the logging version's own first choices)\n")
        print("| version | ahead | unclear | behind | truth above the greedy logging value in |")
        print("|---|---:|---:|---:|---:|")
        for version in (*RANKED, "logging"):
            said = collections.Counter(offpolicy.verdict(j.estimate)[0] for j in judged[version])
            above = sum(j.truth > r.greedy for j, r in zip(judged[version], results, strict=True))
            print(f"| {version} | {said['ahead']} | {said['unclear']} | {said['behind']} | {above} |")
            fields.append(f"e{share}_{version}_verdict_ahead={said['ahead']}")

        full, _ = ranked_right(judged, "dr")
        goals.append(
            f"goal share {share}: DR ranks better, equal, worse as the truth does in every seed: "
            f"{'met' if full == seeds else 'MISSED'} ({full}/{seeds})"
        )
        cover = {v: accuracy(judged[v], "dr").coverage for v in RANKED}
        met = all(c >= COVERAGE_GOAL for c in cover.values())
        goals.append(
            f"goal share {share}: each true value inside DR's 95% interval in >= 90% of seeds: "
            f"{'met' if met else 'MISSED'} (" + ", ".join(f"{v} {c:.2f}" for v, c in cover.items()) + ")"
        )
        if full < seeds:
            half = statistics.fmean(accuracy(judged[v], "dr").half for v in RANKED)
            goals.append(
                f"  why: DR's mean half-width {half:.4f} against true gaps of {gaps['better-equal']:+.4f} and "
                f"{gaps['equal-worse']:+.4f}; a list where a version picks another item than the logging version "
                f"informs the estimate only when that item was explored first (probability {share}/(k-1))"
            )

    print()
    for line in goals:
        print(line)
    fields.append(f"elapsed_s={elapsed:.0f}")
    print("\nbench_offpolicy " + " ".join(fields))


if __name__ == "__main__":
    main()
