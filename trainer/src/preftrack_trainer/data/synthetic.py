"""A deterministic synthetic shop whose users' preferences drift, with its ground truth kept.

Users hold latent preferences over categories. In each session a user views items (mostly from the
categories they like, sometimes at random), and each view may go down the funnel view → click →
add_to_cart → purchase with probabilities that grow with the user's preference for the item's category.
Halfway through (by default) some users' preferences are redrawn: the drift a lifelong learner must follow.
Some records are dirty on purpose (duplicates, missing fields, impossible timestamps, a bot), so cleaning is
exercised on every run.

Every item has a title and attributes ("Acme red shoe Kavoru": brand, colour, its category's noun and a made-up
model word naming that one item). With ``search_fraction > 0`` some visits start with a search: the user types a
few words of the title of the item they are after, views it, and is likelier to buy it than a browser would be.

The item text and the searches draw from random streams of their own, so a config without searches yields
exactly the events it yielded before searches existed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from preftrack_gateway.schema import Event, Item, query_terms

_DAY_S = 86_400.0
#: 2026-01-01T00:00:00Z: where the synthetic clock starts.
START_S = 1_767_225_600.0
BOT_USER_ID = "u-bot"

#: One product noun per category (cycled with a number, "shoe2", when there are more categories).
NOUNS: tuple[str, ...] = (
    "shoe", "lamp", "kettle", "backpack", "jacket", "blender", "headphone", "watch", "chair", "mug",
    "towel", "candle", "scarf", "bicycle", "tent", "pillow", "umbrella", "drill", "blanket", "wallet",
)  # fmt: skip
BRANDS: tuple[str, ...] = (
    "Acme", "Borealis", "Corvid", "Dunmore", "Elkhorn", "Fennec",
    "Grindle", "Halcyon", "Ironbark", "Juniper", "Kestrel", "Lumen",
)  # fmt: skip
COLOURS: tuple[str, ...] = ("red", "blue", "green", "black", "white", "grey", "yellow", "pink")
#: Model words are made of these syllables; none of the nouns, brands or colours is spelt like one.
_SYLLABLES = tuple(c + v for c in "bdfgklmnprtvz" for v in "aeiou")
#: Which random stream (with the seed) draws what: the events themselves use the bare seed.
_TEXT_STREAM, _SEARCH_STREAM, _USER_STREAM = 1, 2, 3
#: A searcher knows what they want: added to the click and add-to-cart logits (and to purchase's, from 0).
_SEARCH_INTENT = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Size and shape of the synthetic shop.

    ``search_fraction`` is the probability that a visit to an item starts with a search for it (0: no searches,
    and the events are exactly those of a shop without search).
    """

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
    search_fraction: float = 0.0
    seed: int = 7

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < self.n_categories or self.n_categories < 2:
            raise ValueError("need n_users >= 1, n_categories >= 2 and n_items >= n_categories")
        if not 0.0 <= self.drift_at <= 1.0 or not 0.0 <= self.drift_fraction <= 1.0:
            raise ValueError("drift_at and drift_fraction must lie in [0, 1]")
        if not 0.0 <= self.repeat_after_drift <= 1.0:
            raise ValueError("repeat_after_drift must lie in [0, 1]")
        if not 0.0 <= self.search_fraction <= 1.0:
            raise ValueError("search_fraction must lie in [0, 1]")
        if self.days <= 0 or self.sessions_per_user <= 0 or self.views_per_session <= 0:
            raise ValueError("days, sessions_per_user and views_per_session must be > 0")


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """What the generator knows and a model should recover.

    ``queries`` maps each search event's id to the text the user typed (events keep only its hashed terms; a
    benchmark sends the text to the gateway), and ``search_targets`` maps it to the item the user was after.
    """

    categories: tuple[str, ...]
    preferences_before: np.ndarray  # (n_users, n_categories), rows sum to 1
    preferences_after: np.ndarray
    drift_time_s: float
    drifted_users: frozenset[str]
    user_ids: tuple[str, ...]
    queries: dict[str, str] = dataclasses.field(default_factory=dict)
    search_targets: dict[str, str] = dataclasses.field(default_factory=dict)
    brands: tuple[str, ...] = ()

    def preferences_at(self, t: float) -> np.ndarray:
        """The users' category preferences at time ``t`` (rows in ``user_ids`` order)."""
        return self.preferences_after if t >= self.drift_time_s else self.preferences_before

    def favourite_category(self, user_id: str, t: float) -> str:
        """The category the user likes most at time ``t``."""
        row = self.preferences_at(t)[self.user_ids.index(user_id)]
        return self.categories[int(np.argmax(row))]

    def top_categories(self, user_id: str, t: float, k: int = 3) -> tuple[str, ...]:
        """The user's ``k`` most liked categories at time ``t``, most liked first (ties in category order)."""
        row = self.preferences_at(t)[self.user_ids.index(user_id)]
        return tuple(self.categories[int(c)] for c in np.argsort(-row, kind="stable")[:k])


@dataclasses.dataclass(frozen=True)
class SyntheticShop:
    """The generated events (time-ordered, dirty records included), catalogue and ground truth."""

    events: list[Event]
    items: dict[str, Item]
    truth: GroundTruth
    config: SyntheticConfig
    #: Users' attributes, as a shop would send them with UpsertUsers: a ``segment`` that names the user's
    #: favourite category before the drift for 70% of users (a random one for the rest), and a ``device`` that
    #: says nothing about taste.
    users: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclasses.dataclass(frozen=True)
class _ItemWords:
    """The words of one item's title; a search names some of them."""

    brand: str
    colour: str
    noun: str
    model: str

    @property
    def title(self) -> str:
        return f"{self.brand} {self.colour} {self.noun} {self.model}"


def _noun(category: int) -> str:
    """The product noun of a category.

    >>> _noun(0), _noun(len(NOUNS)), _noun(2 * len(NOUNS) + 1)
    ('shoe', 'shoe2', 'lamp3')
    """
    rounds, index = divmod(category, len(NOUNS))
    return NOUNS[index] + (str(rounds + 1) if rounds else "")


def _item_words(rng: np.random.Generator, item_category: np.ndarray) -> list[_ItemWords]:
    """Draw every item's brand, colour and model word; the model words are all different."""
    n_items = len(item_category)
    length = 3
    while len(_SYLLABLES) ** length < 2 * n_items:
        length += 1
    codes = rng.choice(len(_SYLLABLES) ** length, size=n_items, replace=False)
    brands = rng.integers(0, len(BRANDS), n_items)
    colours = rng.integers(0, len(COLOURS), n_items)
    words: list[_ItemWords] = []
    for j in range(n_items):
        code, syllables = int(codes[j]), []
        for _ in range(length):
            code, s = divmod(code, len(_SYLLABLES))
            syllables.append(_SYLLABLES[s])
        words.append(
            _ItemWords(
                brand=BRANDS[brands[j]],
                colour=COLOURS[colours[j]],
                noun=_noun(int(item_category[j])),
                model="".join(syllables).capitalize(),
            )
        )
    return words


def _query(rng: np.random.Generator, words: _ItemWords) -> str:
    """What a user looking for an item types: its model word alone, or its noun with one or two more of its words.

    Typed in lower case, the noun sometimes in the plural (the gateway's normalisation makes "shoes" "shoe").
    """
    if rng.random() < 0.15:
        return words.model.lower()
    noun = words.noun
    if rng.random() < 0.3 and noun.isalpha() and not noun.endswith(("s", "x", "y", "ch", "sh")):
        noun += "s"
    named = set(rng.choice(("brand", "colour", "model"), size=1 + int(rng.random() < 0.4), replace=False).tolist())
    parts = [
        words.brand if "brand" in named else "",
        words.colour if "colour" in named else "",
        noun,
        words.model if "model" in named else "",
    ]
    return " ".join(p for p in parts if p).lower()


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
    words = _item_words(np.random.default_rng([cfg.seed, _TEXT_STREAM]), item_category)
    items = {
        f"i-{j}": Item(
            item_id=f"i-{j}",
            categories=(categories[item_category[j]],),
            price=round(float(price[j]), 2),
            title=words[j].title,
            attributes=(("brand", words[j].brand), ("colour", words[j].colour)),
        )
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

    def emit(
        user: str,
        item: str,
        kind: str,
        t: float,
        value: float = 1.0,
        context: dict[str, str] | None = None,
        terms: tuple[str, ...] = (),
    ) -> str:
        nonlocal counter
        event_id = f"e-{counter}"
        events.append(
            Event(
                event_id=event_id,
                user_id=user,
                item_id=item,
                event_type=kind,
                value=value,
                timestamp_s=t,
                context=context or {},
                query_terms=terms,
            )
        )
        counter += 1
        return event_id

    search_rng = np.random.default_rng([cfg.seed, _SEARCH_STREAM])
    item_terms = [items[f"i-{j}"].terms() for j in range(cfg.n_items)] if cfg.search_fraction > 0 else []
    queries: dict[str, str] = {}
    search_targets: dict[str, str] = {}

    def glance(user: str, others: list[int], t: float, ctx: dict[str, str]) -> float:
        """Emit views of items the user looks at and leaves; return the time after them."""
        for d in others:
            emit(user, f"i-{d}", "view", t, context=ctx)
            t += float(search_rng.exponential(15.0)) + 1.0
        return t

    def search(user: str, j: int, t: float, ctx: dict[str, str]) -> tuple[float, list[int]]:
        """Emit a search for item ``j`` (and the glances at other results before it).

        Returns:
            The time of the view of item ``j``, and the other results the user will glance at after it.
        """
        text = _query(search_rng, words[j])
        terms = query_terms(text)
        event_id = emit(user, "", "search", t, context=ctx, terms=terms)
        queries[event_id] = text
        search_targets[event_id] = f"i-{j}"
        t += float(search_rng.exponential(4.0)) + 2.0
        # The results also list items of the category that do not match; the user may look at one or two,
        # before or after the one they came for.
        others: list[int] = []
        if search_rng.random() < 0.5:
            same = items_by_category[int(item_category[j])]
            unmatched = [int(d) for d in same if d != j and not item_terms[d].issuperset(terms)]
            n = min(1 + int(search_rng.random() < 0.5), len(unmatched))
            others = [int(d) for d in search_rng.choice(unmatched, size=n, replace=False)] if n else []
        if others and search_rng.random() < 0.5:
            return glance(user, others, t, ctx), []
        return t, others

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
                searched = cfg.search_fraction > 0 and search_rng.random() < cfg.search_fraction
                glance_after: list[int] = []
                if searched:
                    t, glance_after = search(user, j, t, ctx)
                intent = _SEARCH_INTENT if searched else 0.0
                emit(user, item, "view", t, context=ctx)
                affinity = math.log(pref[c] * cfg.n_categories + 0.05)
                t += float(rng.exponential(20.0)) + 1.0
                if restock or rng.random() < _sigmoid(-1.6 + 1.1 * affinity + quality[j] + intent):
                    emit(user, item, "click", t, context=ctx)
                    t += float(rng.exponential(30.0)) + 1.0
                    p_cart = 0.9 if restock else _sigmoid(-0.6 + 0.9 * affinity - 0.4 * price_z[j] + intent)
                    if rng.random() < p_cart:
                        emit(user, item, "add_to_cart", t, context=ctx)
                        t += float(rng.exponential(60.0)) + 1.0
                        # sigmoid(0) is 0.5: a browser buys half of what they put in the cart.
                        if rng.random() < (0.9 if restock else _sigmoid(intent)):
                            emit(user, item, "purchase", t, value=float(items[item].price), context=ctx)
                            bought[k].append(j)
                            t += 1.0
                t = glance(user, glance_after, t, ctx)

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
        queries=queries,
        search_targets=search_targets,
        brands=BRANDS,
    )
    return SyntheticShop(events=events, items=items, truth=truth, config=cfg, users=_user_attributes(cfg, before))


def _user_attributes(cfg: SyntheticConfig, preferences: np.ndarray) -> dict[str, dict[str, str]]:
    """Drawn from their own random stream, so the events are the same with or without them."""
    rng = np.random.default_rng([cfg.seed, _USER_STREAM])
    out = {}
    for k in range(cfg.n_users):
        segment = int(np.argmax(preferences[k])) if rng.random() < 0.7 else int(rng.integers(cfg.n_categories))
        out[f"u-{k}"] = {"segment": f"s{segment}", "device": ("ios", "android", "web")[int(rng.integers(3))]}
    return out


def _add_dirt(events: list[Event], rng: np.random.Generator, fraction: float) -> list[Event]:
    """Sprinkle the dirty records a real tracker produces: re-sent duplicates, empty fields, broken clocks.

    A search gets the same dirt; its copies stay searches (no item, the same query terms).
    """
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
