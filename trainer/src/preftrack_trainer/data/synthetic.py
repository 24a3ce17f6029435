"""A deterministic synthetic shop whose users' preferences drift, with its ground truth kept.

Users hold latent preferences over categories. In each session a user views items (mostly from the
categories they like, sometimes at random), and each view may go down the funnel view → click →
add_to_cart → purchase with probabilities that grow with the user's preference for the item's category.
Halfway through (by default) some users' preferences are redrawn: the drift a lifelong learner must follow.
Some records are dirty on purpose (duplicates, missing fields, impossible timestamps, a bot), so cleaning is
exercised on every run.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from preftrack_gateway.schema import Event, Item

_DAY_S = 86_400.0
#: 2026-01-01T00:00:00Z: where the synthetic clock starts.
START_S = 1_767_225_600.0
BOT_USER_ID = "u-bot"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Size and shape of the synthetic shop."""

    n_users: int = 600
    n_items: int = 300
    n_categories: int = 8
    days: float = 30.0
    sessions_per_user: float = 8.0
    views_per_session: float = 6.0
    drift_at: float = 0.5
    drift_fraction: float = 0.5
    preference_concentration: float = 0.3
    dirty_fraction: float = 0.01
    repeat_after_drift: float = 0.0
    seed: int = 7

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < self.n_categories or self.n_categories < 2:
            raise ValueError("need n_users >= 1, n_categories >= 2 and n_items >= n_categories")
        if not 0.0 <= self.drift_at <= 1.0 or not 0.0 <= self.drift_fraction <= 1.0:
            raise ValueError("drift_at and drift_fraction must lie in [0, 1]")
        if not 0.0 <= self.repeat_after_drift <= 1.0:
            raise ValueError("repeat_after_drift must lie in [0, 1]")
        if self.days <= 0 or self.sessions_per_user <= 0 or self.views_per_session <= 0:
            raise ValueError("days, sessions_per_user and views_per_session must be > 0")


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """What the generator knows and a model should recover."""

    categories: tuple[str, ...]
    preferences_before: np.ndarray  # (n_users, n_categories), rows sum to 1
    preferences_after: np.ndarray
    drift_time_s: float
    drifted_users: frozenset[str]
    user_ids: tuple[str, ...]

    def preferences_at(self, t: float) -> np.ndarray:
        """The users' category preferences at time ``t`` (rows in ``user_ids`` order)."""
        return self.preferences_after if t >= self.drift_time_s else self.preferences_before

    def favourite_category(self, user_id: str, t: float) -> str:
        """The category the user likes most at time ``t``."""
        row = self.preferences_at(t)[self.user_ids.index(user_id)]
        return self.categories[int(np.argmax(row))]


@dataclasses.dataclass(frozen=True)
class SyntheticShop:
    """The generated events (time-ordered, dirty records included), catalogue and ground truth."""

    events: list[Event]
    items: dict[str, Item]
    truth: GroundTruth
    config: SyntheticConfig


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def generate(config: SyntheticConfig | None = None) -> SyntheticShop:
    """Generate the shop. The same config always yields the same events."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    categories = tuple(f"cat-{c}" for c in range(cfg.n_categories))
    item_category = np.concatenate(
        [np.arange(cfg.n_categories), rng.integers(0, cfg.n_categories, cfg.n_items - cfg.n_categories)]
    )
    base_price = rng.lognormal(3.0, 0.6, cfg.n_categories)
    price = base_price[item_category] * rng.lognormal(0.0, 0.3, cfg.n_items)
    quality = rng.normal(0.0, 0.4, cfg.n_items)
    items = {
        f"i-{j}": Item(item_id=f"i-{j}", categories=(categories[item_category[j]],), price=round(float(price[j]), 2))
        for j in range(cfg.n_items)
    }
    items_by_category = [np.flatnonzero(item_category == c) for c in range(cfg.n_categories)]
    price_z = (np.log(price) - np.log(price).mean()) / np.log(price).std()

    user_ids = tuple(f"u-{k}" for k in range(cfg.n_users))
    alpha = np.full(cfg.n_categories, cfg.preference_concentration)
    before = rng.dirichlet(alpha, cfg.n_users)
    after = before.copy()
    drifted = rng.random(cfg.n_users) < cfg.drift_fraction
    after[drifted] = rng.dirichlet(alpha, int(drifted.sum()))
    drift_time = START_S + cfg.drift_at * cfg.days * _DAY_S

    events: list[Event] = []
    counter = 0

    def emit(user: str, item: str, kind: str, t: float, value: float = 1.0, context: dict[str, str] | None = None):
        nonlocal counter
        events.append(
            Event(
                event_id=f"e-{counter}",
                user_id=user,
                item_id=item,
                event_type=kind,
                value=value,
                timestamp_s=t,
                context=context or {},
            )
        )
        counter += 1

    bought: list[list[int]] = [[] for _ in user_ids]
    for k, user in enumerate(user_ids):
        n_sessions = 1 + rng.poisson(cfg.sessions_per_user - 1)
        for start in np.sort(rng.uniform(0, cfg.days * _DAY_S, n_sessions)):
            t = START_S + float(start)
            pref = after[k] if t >= drift_time else before[k]
            device = "mobile" if rng.random() < 0.6 else "desktop"
            for _ in range(1 + rng.poisson(cfg.views_per_session - 1)):
                # After the drift the shop sells consumables: users come back to what they bought, and buy it again.
                restock = cfg.repeat_after_drift > 0 and t >= drift_time and bool(bought[k])
                restock = restock and rng.random() < cfg.repeat_after_drift
                if restock:
                    j = int(rng.choice(bought[k]))
                    c = int(item_category[j])
                elif rng.random() < 0.7:
                    c = int(rng.choice(cfg.n_categories, p=pref))
                    j = int(rng.choice(items_by_category[c]))
                else:
                    j = int(rng.integers(cfg.n_items))
                    c = int(item_category[j])
                item = f"i-{j}"
                ctx = {"device": device}
                emit(user, item, "view", t, context=ctx)
                affinity = math.log(pref[c] * cfg.n_categories + 0.05)
                t += float(rng.exponential(20.0)) + 1.0
                if restock or rng.random() < _sigmoid(-1.6 + 1.1 * affinity + quality[j]):
                    emit(user, item, "click", t, context=ctx)
                    t += float(rng.exponential(30.0)) + 1.0
                    if rng.random() < (0.9 if restock else _sigmoid(-0.6 + 0.9 * affinity - 0.4 * price_z[j])):
                        emit(user, item, "add_to_cart", t, context=ctx)
                        t += float(rng.exponential(60.0)) + 1.0
                        if rng.random() < (0.9 if restock else 0.5):
                            emit(user, item, "purchase", t, value=float(items[item].price), context=ctx)
                            bought[k].append(j)
                            t += 1.0

    # A bot: thousands of views in one hour, nothing else.
    bot_start = START_S + 0.3 * cfg.days * _DAY_S
    for n in range(max(500, cfg.n_users * 3)):
        emit(BOT_USER_ID, f"i-{n % cfg.n_items}", "view", bot_start + n * 0.5)

    events.sort(key=lambda e: e.timestamp_s)
    events = _add_dirt(events, rng, cfg.dirty_fraction)
    truth = GroundTruth(
        categories=categories,
        preferences_before=before,
        preferences_after=after,
        drift_time_s=drift_time,
        drifted_users=frozenset(u for u, d in zip(user_ids, drifted, strict=True) if d),
        user_ids=user_ids,
    )
    return SyntheticShop(events=events, items=items, truth=truth, config=cfg)


def _add_dirt(events: list[Event], rng: np.random.Generator, fraction: float) -> list[Event]:
    """Sprinkle the dirty records a real tracker produces: re-sent duplicates, empty fields, broken clocks."""
    dirty: list[Event] = []
    for event in events:
        dirty.append(event)
        roll = rng.random()
        if roll < fraction:
            dirty.append(event)  # re-sent by a retrying client: same event_id
        elif roll < 1.5 * fraction:
            dirty.append(dataclasses.replace(event, event_id=event.event_id + "-m", user_id=""))
        elif roll < 1.8 * fraction:
            dirty.append(dataclasses.replace(event, event_id=event.event_id + "-t", timestamp_s=0.0))
        elif roll < 2.0 * fraction:
            dirty.append(dataclasses.replace(event, event_id=event.event_id + "-f", timestamp_s=4_102_444_800.0))
    return dirty
