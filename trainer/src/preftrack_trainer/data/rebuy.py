"""A deterministic re-buy shop: households buying the same consumables again and again, with its ground truth.

Each category (coffee, detergent, ...) has a few brands, one item per brand. A household shops in a few
categories and comes back to each on a purchase cycle of weeks, over months. On each occasion it views every
brand of the category (the shelf, in a random order) and buys one of them:

- most of the time a brand it is loyal to: one favourite, or two it alternates between;
- now and then another brand of the category (variety seeking), without changing its loyalty;
- once in a while it switches for good: another brand becomes its favourite.

Brands differ in appeal (a category's market shares), which decides the households' first favourites and their
switches. The ground truth keeps every household's loyal brands, every switch, and every occasion as a choice set
(:class:`~preftrack_trainer.data.choices.ChoiceSet`), so a replay can rank the candidates as a Recommend would.
Examples are the views; the chosen brand's view is positive (its purchase follows within the attribution window).
The records are clean: the synthetic shop exercises cleaning.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from preftrack_gateway.schema import Event, Item
from preftrack_trainer.data.choices import ChoiceSet
from preftrack_trainer.data.synthetic import BRANDS, START_S

_DAY_S = 86_400.0
#: Consumables, one per category (cycled with a number, "coffee2", when there are more categories).
CATEGORIES: tuple[str, ...] = (
    "coffee", "detergent", "toothpaste", "cereal", "shampoo", "ketchup", "yogurt", "tea", "crackers", "tissues",
)  # fmt: skip
#: Purchase cycles are gamma-distributed with this shape: regular, but not clockwork.
_CYCLE_SHAPE = 4.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RebuyConfig:
    """Size and habits of the re-buy shop.

    Attributes:
        n_households / n_categories / brands_per_category: the shop's size (brands: 2 to 12).
        days: how long the shop is watched.
        categories_per_household: mean number of categories a household buys in (at least one).
        cycle_days: mean days between a household's two purchases in one category.
        second_brand_fraction: share of (household, category) pairs loyal to two brands instead of one.
        second_brand_share: how often such a household buys its second brand rather than its favourite.
        variety: the chance that an occasion goes to a brand the household is not loyal to.
        switch_rate: the chance, per occasion, that the household's favourite changes for good before it chooses.
    """

    n_households: int = 300
    n_categories: int = 6
    brands_per_category: int = 4
    days: float = 180.0
    categories_per_household: float = 3.0
    cycle_days: float = 21.0
    second_brand_fraction: float = 0.35
    second_brand_share: float = 0.35
    variety: float = 0.12
    switch_rate: float = 0.03
    seed: int = 11

    def __post_init__(self) -> None:
        if self.n_households < 1 or self.n_categories < 1:
            raise ValueError("need n_households >= 1 and n_categories >= 1")
        if not 2 <= self.brands_per_category <= len(BRANDS):
            raise ValueError(f"brands_per_category must lie in [2, {len(BRANDS)}]")
        if self.days <= 0 or self.cycle_days <= 0 or self.categories_per_household < 1:
            raise ValueError("days and cycle_days must be > 0, categories_per_household >= 1")
        shares = (self.second_brand_fraction, self.second_brand_share, self.variety, self.switch_rate)
        if not all(0.0 <= s <= 1.0 for s in shares):
            raise ValueError("second_brand_fraction, second_brand_share, variety and switch_rate must lie in [0, 1]")


@dataclasses.dataclass(frozen=True)
class Switch:
    """A household's favourite brand in a category changed for good, just before an occasion at ``timestamp_s``."""

    user_id: str
    category: str
    timestamp_s: float
    before: str
    after: str


@dataclasses.dataclass(frozen=True)
class RebuyTruth:
    """What the generator knows.

    Attributes:
        categories: the category names.
        brands: each category's items (one per brand), by category.
        loyal_at_start: each (household, category) pair's loyal items when the shop opens, favourite first.
        switches: every change of favourite, in time order.
        choice_sets: every occasion, in time order.
        reasons: why each occasion's item was chosen (``loyal`` or ``variety``), in ``choice_sets``' order.
    """

    categories: tuple[str, ...]
    brands: dict[str, tuple[str, ...]]
    loyal_at_start: dict[tuple[str, str], tuple[str, ...]]
    switches: tuple[Switch, ...]
    choice_sets: tuple[ChoiceSet, ...]
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RebuyShop:
    """The generated events (time-ordered), catalogue and ground truth."""

    events: list[Event]
    items: dict[str, Item]
    truth: RebuyTruth
    config: RebuyConfig


def _category_name(index: int) -> str:
    """The name of a category.

    >>> _category_name(0), _category_name(len(CATEGORIES) + 1)
    ('coffee', 'detergent2')
    """
    rounds, k = divmod(index, len(CATEGORIES))
    return CATEGORIES[k] + (str(rounds + 1) if rounds else "")


def _catalogue(rng: np.random.Generator, cfg: RebuyConfig) -> tuple[dict[str, Item], list[list[str]]]:
    """One item per (category, brand), each category's brands drawn among :data:`BRANDS`; the items by category."""
    items: dict[str, Item] = {}
    by_category: list[list[str]] = []
    for c in range(cfg.n_categories):
        noun = _category_name(c)
        base_price = float(rng.lognormal(1.2, 0.5))
        own: list[str] = []
        for b in rng.choice(len(BRANDS), size=cfg.brands_per_category, replace=False):
            brand = BRANDS[int(b)]
            item_id = f"{noun}-{brand.lower()}"
            price = round(base_price * float(rng.lognormal(0.0, 0.25)), 2)
            items[item_id] = Item(
                item_id=item_id,
                categories=(noun,),
                price=price,
                title=f"{brand} {noun}",
                attributes=(("brand", brand),),
            )
            own.append(item_id)
        by_category.append(own)
    return items, by_category


def _plan(rng: np.random.Generator, cfg: RebuyConfig) -> list[tuple[float, int, int]]:
    """Every occasion's (time offset in seconds, household, category), in time order."""
    planned: list[tuple[float, int, int]] = []
    end_s = cfg.days * _DAY_S
    for k in range(cfg.n_households):
        n = min(cfg.n_categories, 1 + int(rng.poisson(cfg.categories_per_household - 1)))
        for c in rng.choice(cfg.n_categories, size=n, replace=False):
            t = float(rng.uniform(0.0, cfg.cycle_days)) * _DAY_S
            while t < end_s:
                planned.append((t, k, int(c)))
                t += float(rng.gamma(_CYCLE_SHAPE, cfg.cycle_days / _CYCLE_SHAPE)) * _DAY_S
    planned.sort()
    return planned


def _pick(rng: np.random.Generator, options: list[str], appeal: dict[str, float]) -> str:
    """One of ``options``, drawn in proportion to their appeal."""
    weights = np.array([appeal[o] for o in options])
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def _choose(rng: np.random.Generator, cfg: RebuyConfig, loyal: tuple[str, ...], shelf: list[str]) -> tuple[str, str]:
    """The item bought on one occasion and why (``loyal`` or ``variety``)."""
    others = [i for i in shelf if i not in loyal]
    if others and rng.random() < cfg.variety:
        return others[int(rng.integers(len(others)))], "variety"
    if len(loyal) > 1 and rng.random() < cfg.second_brand_share:
        return loyal[1], "loyal"
    return loyal[0], "loyal"


def generate(config: RebuyConfig | None = None) -> RebuyShop:
    """Generate the shop. The same config always yields the same events."""
    cfg = config or RebuyConfig()
    rng = np.random.default_rng(cfg.seed)
    items, by_category = _catalogue(rng, cfg)
    categories = tuple(_category_name(c) for c in range(cfg.n_categories))
    appeal = {
        item: float(share)
        for shelf in by_category
        for item, share in zip(shelf, rng.dirichlet(np.full(len(shelf), 2.0)), strict=True)
    }
    loyal: dict[tuple[int, int], tuple[str, ...]] = {}
    for k in range(cfg.n_households):
        for c, shelf in enumerate(by_category):
            favourite = _pick(rng, shelf, appeal)
            rest = [i for i in shelf if i != favourite]
            second = (_pick(rng, rest, appeal),) if rng.random() < cfg.second_brand_fraction else ()
            loyal[(k, c)] = (favourite, *second)
    at_start = {(f"h-{k}", categories[c]): brands for (k, c), brands in loyal.items()}

    events: list[Event] = []
    choice_sets: list[ChoiceSet] = []
    reasons: list[str] = []
    switches: list[Switch] = []
    t_free = START_S  # an occasion starts after the previous one ends: each occasion's events stay contiguous
    for offset, k, c in _plan(rng, cfg):
        user, shelf = f"h-{k}", by_category[c]
        t = max(START_S + offset, t_free)
        if rng.random() < cfg.switch_rate:
            before = loyal[(k, c)]
            after = _pick(rng, [i for i in shelf if i != before[0]], appeal)
            loyal[(k, c)] = (after, *(i for i in before[1:] if i != after))
            switches.append(Switch(user, categories[c], t, before[0], after))
        chosen, why = _choose(rng, cfg, loyal[(k, c)], shelf)
        order = [shelf[int(j)] for j in rng.permutation(len(shelf))]
        first = len(events)
        for item in order:
            events.append(
                Event(event_id=f"e-{len(events)}", user_id=user, item_id=item, event_type="view", timestamp_s=t)
            )
            t += float(rng.exponential(8.0)) + 1.0
        t += float(rng.exponential(20.0)) + 2.0
        events.append(
            Event(
                event_id=f"e-{len(events)}",
                user_id=user,
                item_id=chosen,
                event_type="purchase",
                value=items[chosen].price,
                timestamp_s=t,
            )
        )
        t_free = t + 1.0
        ids = tuple(e.event_id for e in events[first:])
        choice_sets.append(ChoiceSet(user, events[first].timestamp_s, tuple(order), chosen, ids[:-1], ids))
        reasons.append(why)
    truth = RebuyTruth(
        categories=categories,
        brands={categories[c]: tuple(shelf) for c, shelf in enumerate(by_category)},
        loyal_at_start=at_start,
        switches=tuple(switches),
        choice_sets=tuple(choice_sets),
        reasons=tuple(reasons),
    )
    return RebuyShop(events=events, items=items, truth=truth, config=cfg)
