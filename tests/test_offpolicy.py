"""Exploration's propensities and the off-policy estimates (issue 26, step 5) against a known truth: a small version
of ``bench/bench_offpolicy.py`` (a few seeds, a few thousand lists of a small synthetic shop), asserting what the
estimates must do to be of use: say what the log holds exactly, and land near each version's true online value."""

from __future__ import annotations

import collections
import dataclasses
import random
import statistics

import numpy as np
import pytest

from preftrack_dev import offpolicy_eval as sim
from preftrack_gateway import lists, offpolicy
from preftrack_trainer.data import synthetic

SEEDS = (1, 2, 3, 4)
SHARE = 0.2
CONFIG = sim.LogConfig(
    n_lists=3000, shop=synthetic.SyntheticConfig(n_items=400, n_users=120, sessions_per_user=2.0, n_categories=8)
)
#: A clearly better and a clearly worse version than the logging one (true logits + N(0, 1)), the logging version
#: itself, and the better one with overconfident probabilities (the same picks; a poor reward model for DR).
VERSIONS = (
    sim.Version("oracle", 0.0),
    sim.Version("better", 0.5),
    sim.Version("backwards", 0.5, sign=-1.0),
    sim.Version("logging", None),
    sim.Version("better+2", 0.5, shift=2.0),
)


def test_explore_logs_the_probability_of_each_placement() -> None:
    """Over many lists, how often an item lands at a position is the propensity ``explore`` logged for it there."""
    top, share, draws = [10, 11, 12, 13, 14, 15], 0.3, 20_000
    rng = random.Random(5)
    counts: collections.Counter[tuple[int, int]] = collections.Counter()
    logged: dict[tuple[int, int], set[float]] = collections.defaultdict(set)
    for _ in range(draws):
        order, propensities = lists.explore(list(top), share, rng)
        assert sorted(order) == top
        for position, (item, propensity) in enumerate(zip(order, propensities, strict=True)):
            counts[position, item] += 1
            logged[position, item].add(round(propensity, 12))
    for placement, seen in logged.items():
        assert len(seen) == 1, f"{placement} logged with several propensities: {seen}"
        assert counts[placement] / draws == pytest.approx(next(iter(seen)), abs=0.01), placement
    # The first position's propensities over the items a list can show first sum to one.
    assert sum(next(iter(logged[0, item])) for item in top if (0, item) in logged) == pytest.approx(1.0)


@dataclasses.dataclass(frozen=True)
class _Seed:
    served: sim.Served
    truth: dict[str, float]
    estimates: dict[str, dict[str, object]]


@pytest.fixture(scope="module")
def seeds() -> list[_Seed]:
    out = []
    for seed in SEEDS:
        shop = sim.make_shop(dataclasses.replace(CONFIG.shop, seed=seed))
        occasions = sim.draw_occasions(shop, CONFIG, seed)
        rng = np.random.default_rng([seed, 9])
        logging_scores = sim.version_scores(occasions, CONFIG.logging_noise, rng)
        served = sim.serve(occasions, logging_scores, SHARE, seed)
        truth, estimates = {}, {}
        for version in VERSIONS:
            # One noise draw for all: "better+2" is "better" overconfident, "backwards" its mirror image.
            scores = (
                logging_scores
                if version.noise is None
                else sim.version_scores(occasions, version.noise, np.random.default_rng([seed, 10]), version.sign)
            )
            target = sim.probabilities(occasions, scores, version.shift)
            truth[version.name], _ = sim.true_value(occasions, target)
            estimates[version.name] = offpolicy.estimate(sim.logged_choices(served, target))
        out.append(_Seed(served, truth, estimates))
    return out


def test_estimates_say_exactly_what_the_log_holds(seeds: list[_Seed]) -> None:
    """Every explored list is used; for the logging version itself (it picks the greedy item, shown first unless
    explored) IPS is the unexplored lists' clicks over (1 - share) of all lists and SNIPS their mean."""
    for s in seeds:
        rewards, unexplored = s.served.rewards, np.isclose(s.served.propensities, 1 - SHARE)
        assert 0.6 < unexplored.mean() < 0.95
        estimate = s.estimates["logging"]
        assert estimate["n"] == CONFIG.n_lists
        assert estimate["matches"] == int(unexplored.sum())
        assert sim.value(estimate, "logged") == pytest.approx(rewards.mean())
        assert sim.value(estimate, "ips") == pytest.approx(rewards[unexplored].sum() / ((1 - SHARE) * len(rewards)))
        assert sim.value(estimate, "snips") == pytest.approx(rewards[unexplored].mean())


def test_estimates_land_near_the_true_online_value(seeds: list[_Seed]) -> None:
    """DR and IPS are unbiased when the propensities are right: pooled over seeds and versions their error is small
    beside the versions' spread, DR's interval holds the truth in most cases, and it is not so wide as to say
    nothing."""
    cases = [(s, name) for s in seeds for name in s.truth]
    for estimator in ("dr", "ips"):
        errors = [sim.value(s.estimates[name], estimator) - s.truth[name] for s, name in cases]
        assert abs(statistics.fmean(errors)) < 0.04, (estimator, errors)
    covered = [sim.covers(s.estimates[name], "dr", s.truth[name]) for s, name in cases]
    assert statistics.fmean(covered) >= 0.8
    for s in seeds:
        for name, estimate in s.estimates.items():
            half = (estimate["dr"]["high"] - estimate["dr"]["low"]) / 2  # type: ignore[index]
            assert 0.005 < half < 0.3, (name, half)
    spread = statistics.fmean(s.truth["oracle"] - s.truth["backwards"] for s in seeds)
    assert spread > 0.25


def test_dr_ranks_a_clearly_better_and_a_clearly_worse_version(seeds: list[_Seed]) -> None:
    """In every seed DR puts the oracle above the logging version and that above the backwards model, as their true
    values are; and with the true probabilities as its reward model, DR is tighter than IPS (by about sqrt(1 - p)
    where the oracle's pick was shown: its residual's spread against IPS's reward's)."""
    for s in seeds:
        assert s.truth["oracle"] > s.truth["logging"] > s.truth["backwards"]
        dr = {name: sim.value(e, "dr") for name, e in s.estimates.items()}
        assert dr["oracle"] > dr["logging"] > dr["backwards"], dr
        width = {e: s.estimates["oracle"][e]["high"] - s.estimates["oracle"][e]["low"] for e in ("dr", "ips")}  # type: ignore[index]
        assert width["dr"] < 0.85 * width["ips"], width


def test_a_log_without_exploration_judges_nothing() -> None:
    """Lists served greedily (share 0) carry no propensity below 1: ``estimate`` uses none of them."""
    order, propensities = lists.explore([3, 1, 2], 0.0, random.Random(0))
    choice = offpolicy.LoggedChoice(propensities[0], 1.0, 0, (0.2, 0.9, 0.1))
    assert order == [3, 1, 2]
    assert offpolicy.estimate([choice] * 50) == {"n": 0}
    assert offpolicy.verdict(offpolicy.estimate([choice] * 50))[0] == "unclear"
