"""Off-policy evaluation where the truth is known: owns the simulated shop's true reward rule, the lists it logs
through the gateway's exploration policy, and each version's true online value beside its estimates.

The product pieces under test are used as they are: :func:`preftrack_gateway.lists.explore` decides what is shown
first and gives the propensities, :func:`preftrack_gateway.offpolicy.estimate` turns the log into IPS, SNIPS and
DR estimates. Everything else here is the simulated world they are measured in:

- **The shop's structure** comes from the synthetic shop (:func:`preftrack_trainer.data.synthetic.generate`): its
  items and their categories, its users' category preferences over time (:class:`GroundTruth`), and item
  popularity (views in its events, the bot and user-less records left out).
- **The true reward rule**: the probability that a user clicks the item shown first is the generator's own click
  rule on a view, ``sigmoid(-1.6 + 1.1 * log(pref * n_categories + 0.05) + quality)``, with the user's preference
  for the item's category at the occasion's time. The generator keeps that rule inline and its item quality
  private, so the constants are restated here (:data:`CLICK_BIAS`, :data:`CLICK_AFFINITY`) and each item's quality
  is drawn from a stream of this module's own, with the generator's spread (N(0, 0.4)).
- **Occasions**: a user of the shop at a uniform time in its span, with ``k`` (uniform in ``min_k..max_k``)
  candidates drawn as a shop's retrieval would: each slot, with probability ``category_share``, a uniform item of
  a category drawn from the user's preferences, else an item drawn by popularity (without repeats).
- **Scores** are true logits plus Gaussian noise, drawn per occasion and item: the LOGGING version has
  ``logging_noise`` (a mediocre model), each candidate :class:`Version` its own. A version's probability for an
  item (``target_scores``, which DR uses as its reward model) is ``sigmoid(score + shift)``: ``shift`` 0 is
  roughly calibrated, a positive one is overconfident; the shift never changes which item the version picks.
- **Serving**: the logging version ranks the list, ``explore`` with share ε decides what is shown first, and the
  click on the item shown first is drawn from the true rule. Each occasion becomes one
  :class:`~preftrack_gateway.offpolicy.LoggedChoice` per version, read from the impression as the gateway logs it:
  the items in the order shown, the first position's propensity, ``shown`` = 0.
- **Truth**: a version's true online value is the exact expected click rate of the item it would put first, on the
  same occasions (the mean of the true probabilities of its picks, no sampling). The logging version's own value
  is given twice: greedy (as it would serve without exploration) and with exploration (its expected served
  click rate: ``(1 - ε) p(first) + ε mean p(others)``); their difference is the cost of exploration in hit rate.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

import numpy as np

from preftrack_gateway import lists, offpolicy
from preftrack_trainer.data import synthetic

#: The synthetic generator's click rule on a view: ``sigmoid(CLICK_BIAS + CLICK_AFFINITY * affinity + quality)``.
CLICK_BIAS, CLICK_AFFINITY = -1.6, 1.1
#: The spread of the generator's item quality (it draws N(0, 0.4) and keeps it private).
QUALITY_SD = 0.4
#: This module's random streams, beside the seed (the shop's own streams use 1 to 3).
_QUALITY_STREAM, _OCCASION_STREAM, _SCORE_STREAM, _SERVE_STREAM = 101, 102, 103, 104
_DAY_S = 86_400.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogConfig:
    """How many lists are logged and how they are drawn; ``shop`` is the synthetic shop they are drawn from."""

    n_lists: int = 10_000
    min_k: int = 5
    max_k: int = 10
    category_share: float = 0.6
    logging_noise: float = 1.0
    shop: synthetic.SyntheticConfig = dataclasses.field(
        default_factory=lambda: synthetic.SyntheticConfig(n_items=2000, n_users=300, sessions_per_user=4.0)
    )

    def __post_init__(self) -> None:
        if self.n_lists < 2 or not 2 <= self.min_k <= self.max_k:
            raise ValueError("need n_lists >= 2 and 2 <= min_k <= max_k")
        if not 0.0 <= self.category_share <= 1.0 or self.logging_noise < 0:
            raise ValueError("category_share must lie in [0, 1] and logging_noise be >= 0")


@dataclasses.dataclass(frozen=True)
class Version:
    """A candidate version: ``sign`` times the true logits plus N(0, ``noise``) (None: the logging version's own
    scores), turned into probabilities by ``sigmoid(score + shift)``. A negative sign is a model that learnt the
    taste backwards."""

    name: str
    noise: float | None
    shift: float = 0.0
    sign: float = 1.0


#: The three candidates of issue 26's acceptance, and the logging version itself as a reference.
VERSIONS: tuple[Version, ...] = (
    Version("better", 0.5),
    Version("equal", 1.0),
    Version("worse", 2.0),
    Version("logging", None),
)
#: The same candidates with overconfident probabilities (odds x e^2): the same picks, a poor reward model for DR.
OVERCONFIDENT: tuple[Version, ...] = tuple(dataclasses.replace(v, name=v.name + "+2", shift=2.0) for v in VERSIONS)


@dataclasses.dataclass(frozen=True)
class Shop:
    """What the simulation needs of a synthetic shop: per item its category, quality and popularity."""

    truth: synthetic.GroundTruth
    item_category: np.ndarray  # (n_items,) category index
    quality: np.ndarray  # (n_items,)
    popularity: np.ndarray  # (n_items,) probabilities
    items_by_category: tuple[np.ndarray, ...]
    start_s: float
    end_s: float


def make_shop(config: synthetic.SyntheticConfig) -> Shop:
    """Generate the synthetic shop and keep its structure; item quality comes from this module's own stream."""
    generated = synthetic.generate(config)
    truth = generated.truth
    index = {name: c for c, name in enumerate(truth.categories)}
    ids = list(generated.items)
    position = {item_id: j for j, item_id in enumerate(ids)}
    item_category = np.array([index[generated.items[i].categories[0]] for i in ids])
    views = np.ones(len(ids))  # +1: an item nobody viewed can still be retrieved
    for event in generated.events:
        if event.user_id and event.user_id != synthetic.BOT_USER_ID and event.item_id in position:
            views[position[event.item_id]] += 1
    quality = np.random.default_rng([config.seed, _QUALITY_STREAM]).normal(0.0, QUALITY_SD, len(ids))
    return Shop(
        truth=truth,
        item_category=item_category,
        quality=quality,
        popularity=views / views.sum(),
        items_by_category=tuple(np.flatnonzero(item_category == c) for c in range(len(truth.categories))),
        start_s=synthetic.START_S,
        end_s=synthetic.START_S + config.days * _DAY_S,
    )


def true_logits(shop: Shop, preferences: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The true click logit of each item for a user with these category ``preferences``."""
    n_categories = len(shop.truth.categories)
    affinity = np.log(preferences[shop.item_category[items]] * n_categories + 0.05)
    return CLICK_BIAS + CLICK_AFFINITY * affinity + shop.quality[items]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass(frozen=True)
class Occasions:
    """The lists to serve, padded to ``max_k`` columns (``valid`` marks the real ones)."""

    valid: np.ndarray  # (n, max_k) bool
    logits: np.ndarray  # (n, max_k) true click logits, 0 on padding
    p_true: np.ndarray  # (n, max_k) true click probabilities, 0 on padding


def draw_occasions(shop: Shop, config: LogConfig, seed: int) -> Occasions:
    """``config.n_lists`` occasions: a user at a time, and the candidates a shop's retrieval would list for them."""
    rng = np.random.default_rng([seed, _OCCASION_STREAM])
    n, width, n_cat = config.n_lists, config.max_k, len(shop.truth.categories)
    valid = np.zeros((n, width), dtype=bool)
    logits = np.zeros((n, width))
    n_users = len(shop.truth.user_ids)
    popularity_cdf = np.cumsum(shop.popularity)
    for row in range(n):
        user = int(rng.integers(n_users))
        preferences = shop.truth.preferences_at(float(rng.uniform(shop.start_s, shop.end_s)))[user]
        preference_cdf = np.cumsum(preferences)
        k = int(rng.integers(config.min_k, config.max_k + 1))
        chosen: dict[int, None] = {}
        while len(chosen) < k:
            # Slots drawn in a batch (inverse CDFs: far cheaper than a Generator.choice call per slot).
            slots = 2 * k
            from_category = rng.random(slots) < config.category_share
            category = np.minimum(np.searchsorted(preference_cdf, rng.random(slots) * preference_cdf[-1]), n_cat - 1)
            member = rng.random(slots)
            popular = np.searchsorted(popularity_cdf, rng.random(slots) * popularity_cdf[-1])
            for slot in range(slots):
                if from_category[slot]:
                    members = shop.items_by_category[int(category[slot])]
                    item = int(members[int(member[slot] * len(members))])
                else:
                    item = int(popular[slot])
                chosen.setdefault(item)
                if len(chosen) == k:
                    break
        items = np.fromiter(chosen, dtype=np.int64, count=k)
        valid[row, :k] = True
        logits[row, :k] = true_logits(shop, preferences, items)
    return Occasions(valid=valid, logits=logits, p_true=np.where(valid, _sigmoid(logits), 0.0))


def version_scores(occasions: Occasions, noise: float, rng: np.random.Generator, sign: float = 1.0) -> np.ndarray:
    """``sign`` times the true logits plus N(0, ``noise``) per occasion and item; -inf on padding."""
    scores = sign * occasions.logits + rng.normal(0.0, noise, occasions.logits.shape)
    return np.where(occasions.valid, scores, -np.inf)


def probabilities(occasions: Occasions, scores: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """A version's probability for each item, ``sigmoid(score + shift)``; 0 on padding."""
    return np.where(occasions.valid, _sigmoid(np.where(occasions.valid, scores, 0.0) + shift), 0.0)


def true_value(occasions: Occasions, probabilities: np.ndarray) -> tuple[float, np.ndarray]:
    """A version's true online value (the mean true click probability of the items it would put first) and, per
    list, the column it would put first. ``estimate`` takes the same argmax, in the order shown: the scores are
    continuous, so the two orders never break a tie differently."""
    picks = np.argmax(np.where(occasions.valid, probabilities, -1.0), axis=1)
    return float(occasions.p_true[np.arange(len(picks)), picks].mean()), picks


@dataclasses.dataclass(frozen=True)
class Served:
    """One share's log: per occasion the order shown (column indices), the first position's propensity, the click."""

    share: float
    orders: list[list[int]]
    propensities: np.ndarray
    rewards: np.ndarray
    serving: list[int]  # per occasion, where the logging version's first choice was shown


def serve(occasions: Occasions, logging_scores: np.ndarray, share: float, seed: int) -> Served:
    """The logging version ranks each list, :func:`lists.explore` reorders it, the user clicks (or not) the first."""
    rng = random.Random(f"{seed}-{share}")
    clicks = np.random.default_rng([seed, _SERVE_STREAM, round(share * 1000)])
    orders, propensities, rewards = [], np.empty(len(logging_scores)), np.empty(len(logging_scores))
    serving: list[int] = []
    for row, scores in enumerate(logging_scores):
        k = int(occasions.valid[row].sum())
        top = [int(i) for i in np.argsort(-scores[:k], kind="stable")]
        order, placed = lists.explore(top, share, rng)
        orders.append(order)
        propensities[row] = placed[0]
        serving.append(offpolicy.serving_position(placed))
        rewards[row] = float(clicks.random() < occasions.p_true[row, order[0]])
    return Served(share, orders, propensities, rewards, serving)


def logged_choices(served: Served, probabilities: np.ndarray) -> list[offpolicy.LoggedChoice]:
    """Each logged list as the gateway's log has it (the items in the order shown, the first one's propensity),
    scored by a version's ``probabilities``."""
    return [
        offpolicy.LoggedChoice(propensity, reward, 0, tuple(probabilities[row, order].tolist()), serving)
        for row, (order, propensity, reward, serving) in enumerate(
            zip(served.orders, served.propensities.tolist(), served.rewards.tolist(), served.serving, strict=True)
        )
    ]


@dataclasses.dataclass(frozen=True)
class Judged:
    """One version on one share's log: its true online value, ``estimate``'s answer, the share of lists where it
    would put another item first than the logging version does (only explored lists inform those), and what it
    believes it would earn (the mean of its own probabilities for its picks: DR's reward model alone)."""

    version: str
    share: float
    truth: float
    estimate: dict[str, object]
    disagree: float
    believed: float


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """Everything one seed measured, per share: each version judged, and the logging version's values."""

    seed: int
    judged: list[Judged]
    greedy: float  # the logging version's true value without exploration
    explored: dict[float, float]  # its expected served click rate with each share
    n_lists: int


def run_seed(
    seed: int, shares: Sequence[float], config: LogConfig, versions: Sequence[Version] = VERSIONS + OVERCONFIDENT
) -> SeedResult:
    """Draw the shop and the occasions for ``seed``, serve them at each share, and judge every version."""
    shop = make_shop(dataclasses.replace(config.shop, seed=seed))
    occasions = draw_occasions(shop, config, seed)
    score_rng = np.random.default_rng([seed, _SCORE_STREAM])
    logging_scores = version_scores(occasions, config.logging_noise, score_rng)
    # One draw of noise per noise level, so "better" and "better+2" are one model with two calibrations.
    noisy = {}
    for v in versions:
        if v.noise is not None and (v.noise, v.sign) not in noisy:
            noisy[v.noise, v.sign] = version_scores(occasions, v.noise, score_rng, v.sign)
    scores = {v.name: logging_scores if v.noise is None else noisy[v.noise, v.sign] for v in versions}
    first = np.argmax(logging_scores, axis=1)
    greedy_p = occasions.p_true[np.arange(config.n_lists), first]
    k = occasions.valid.sum(axis=1)
    others_p = (occasions.p_true.sum(axis=1) - greedy_p) / (k - 1)
    judged, explored = [], {}
    for share in shares:
        served = serve(occasions, logging_scores, share, seed)
        explored[share] = float(np.mean((1.0 - share) * greedy_p + share * others_p))
        for version in versions:
            target = probabilities(occasions, scores[version.name], version.shift)
            truth, picks = true_value(occasions, target)
            choices = logged_choices(served, target)
            disagree = float(np.mean(picks != first))
            believed = float(target[np.arange(config.n_lists), picks].mean())
            judged.append(Judged(version.name, share, truth, offpolicy.estimate(choices), disagree, believed))
    return SeedResult(seed, judged, float(greedy_p.mean()), explored, config.n_lists)


def covers(estimate: dict[str, object], estimator: str, truth: float) -> bool:
    """Whether ``truth`` lies inside the estimator's 95% interval."""
    interval = estimate[estimator]
    assert isinstance(interval, dict)
    return bool(interval["low"] <= truth <= interval["high"])


def value(estimate: dict[str, object], estimator: str) -> float:
    """The estimator's point value (NaN when there is none)."""
    interval = estimate.get(estimator)
    return float(interval["value"]) if isinstance(interval, dict) else math.nan
