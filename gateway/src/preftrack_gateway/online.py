"""Learning at event speed: a per-event correction on top of the serving model version's logit.

Between model versions the gateway already learns from every labelled event, the way a per-event learner
does. The served score is ``sigmoid(base_logit + correction)``, where ``base_logit`` is the serving version's
logit and ``correction`` a sparse logistic model over hashed crosses (user, item, user x item, user x category,
user x item attribute; with ``calibration``, weights on the base logit and on the item's behaviour features:
:class:`Correction`), trained online with FTRL-Proximal (McMahan et al., 2013) on the *residual*: its gradient
is taken through the sum, so it learns only what the version does not already know. Its steps on the coordinates
every user shares are scaled by the example's influence (:func:`~preftrack_gateway.features.influence`), so a few
hyperactive ids cannot move everyone's scores; each user's own coordinates learn from all their examples.

Labels are exact (:class:`Labeller`): an example (an event of the deployment's example types, or an item of a
served list) is positive when it is positive itself or when the same user does a positive event on the same
item inside the attribution window; it is a negative only once that window has closed in event time (the
newest event timestamp seen), so a label is never guessed. The learner is state owned by one gateway process:
it is rebuilt from the event log when the gateway starts, and the next model version, trained on the same
events, absorbs what it learned.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import math
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from preftrack_gateway.features import FEATURE_NAMES, NUM_FEATURES, FeatureSpec, LabelSpec
from preftrack_gateway.schema import Event, Item

_MAX_LOGIT = 16.0
_BUCKET_SPAN = 40  # behaviour buckets: quarters of a unit, from -10 to +10
_FEATURES = range(NUM_FEATURES)
_LATE_EXAMPLE_S = 6 * 3600.0  # how late an example can arrive and still be learned from (the features' retention)

#: The value of a user x item attribute cross (the others are 1): FTRL's steps on a weight scale with its value,
#: so these learn at half the rate. An attribute is a broader cue than the item or its category, and where tastes
#: do not follow it, it is noise: at 1 it cost 0.003 AUC (offline) and 0.007 (live) on the synthetic shop's taste
#: drift, whose tastes follow categories only; at 0.5 0.0006 offline. On MovieLens-100k (user x the film's release
#: decade and year) they gain +0.001 at 1 on three splits, and at 0.5 stay within 0.0003 of that.
_ATTRIBUTE_CROSS = 0.5

#: The FTRL steps (``alpha``) the correction learns with side by side when none is set; its prediction mixes
#: theirs, each weighted by how well it predicted the examples learned so far (:class:`Correction`). No single step
#: was best everywhere: 0.3 on MovieLens-100k (0.05 0.768, 0.1 0.771, 0.3 0.776, 0.8 0.773 AUC) and on the
#: consumables shop (0.8762 against 0.8611 with 0.1), 0.1 on the synthetic taste drifts (`bench/bench_drift.py`:
#: the layer on the continual versions, last third of the stream, 0.7157 / 0.7226 / 0.7284 against 0.7096 /
#: 0.7153 / 0.7213 with 0.3). The mixture matched the better one on each (docs/benchmarks.md).
AUTO_ALPHAS = (0.1, 0.3)

#: The step of the mixture's member with behaviour buckets when none is set (``OnlineConfig.behaviour_buckets``
#: None): on the consumables shop the buckets gained most at 0.3 (0.9064 against 0.9079 at 0.1, where the member
#: without them is far behind; docs/benchmarks.md).
BUCKET_MEMBER_ALPHA = 0.3

#: The most a step's log-weight may trail the best one's, in nats of log loss: the mixture can still move to it
#: when the data changes (a few dozen examples on which it predicts clearly better). Gateway snapshots record the
#: steps (:meth:`OnlineConfig.steps`) but not this: bump ``snapshot.FORMAT`` when it changes.
_MIXTURE_FLOOR = 5.0

#: The item's own behaviour features, each given one shared weight by the correction (``calibration``).
ITEM_SIGNALS: tuple[int, ...] = tuple(
    FEATURE_NAMES.index(name)
    for name in (
        "item_popularity_short",
        "item_popularity_long",
        "item_positive_rate",
        "item_rating_mean",
        "item_log_price",
    )
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OnlineConfig:
    """Settings of the per-event correction.

    Attributes:
        enabled: whether scores carry the correction at all (off: the version's scores as they are).
        bits: log2 of the number of hashed weights.
        alpha / beta: FTRL per-coordinate learning rate ``alpha / (beta + sqrt(sum of squared gradients))``.
            ``alpha`` None (the default): learn with each of :data:`AUTO_ALPHAS` side by side and mix their
            predictions by how well each has predicted so far. Each member of the mixture (:meth:`members`) keeps
            its own state: three arrays of ``2**bits`` float64 (FTRL's two and the weights they imply; 48 MiB at
            the default 20 bits with the default two members, 72 MiB with three, twice that while a rebase builds
            the next correction).
        l1 / l2: FTRL regularisation (l1 makes rarely useful weights exactly zero).
        max_pending: most examples waiting for their label window to close (the oldest are dropped beyond).
        rebuild_examples: most labelled examples the correction is learned from again, on the logits of the
            version serving then: the newest ones of the event log when the gateway starts, and the newest ones
            learned from when another version starts serving (:class:`History`).
        calibration: also learn weights that re-calibrate the serving version: one on its logit, shared and per
            user (how far to trust it), and one shared weight on each of the item's own behaviour features
            (:data:`ITEM_SIGNALS`: what an item's track record says drifts as the catalogue ages, while a version
            keeps the weight it learned). None (the default) turns them on where every label is final at once (an
            attribution window of 0, as with ratings; MovieLens-100k: the logit weights +0.0035 to +0.005 AUC, the
            item ones +0.002 more, on three splits) and off where a negative is known only when its window
            closes, as with views and purchases: on the synthetic shop's taste drifts they cost 0.02 to 0.03 AUC,
            also when learned only at each window's close (so that a user's positives and negatives come
            together), and forced on where every negative came an hour after the positives they drove every score
            towards 0. The rule is what was measured, on these two kinds of data; :meth:`resolved` settles it.
        behaviour_buckets: also learn a weight per bucket of each behaviour feature. They re-weight what a
            signal means ("bought this before" becomes the strongest one on a re-buy shop: +0.03 AUC on the
            consumables shop) but cost where signals keep their meaning (MovieLens-100k 0.7729 against 0.7758, the
            taste drifts 0.01), see docs/benchmarks.md. None (``auto``): no one has to know which kind of shop
            this is; a member with buckets (:data:`BUCKET_MEMBER_ALPHA`) learns beside the members without them and
            the mixture weighs each by how well it has predicted this shop's examples (beats every per-user rule on
            the consumables shop, costs 0.004 AUC on taste drifts). True / False: every member with / without
            them. False is still the default: with auto, the drifting shop's live replay missed one of its margins
            once (the new versions' lead over the layer alone, +0.0026 against +0.003), and there was no time left
            in the session to tell noise from cost (docs/benchmarks.md).
    """

    enabled: bool = True
    bits: int = 20
    alpha: float | None = None
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 1.0
    max_pending: int = 200_000
    rebuild_examples: int = 200_000
    calibration: bool | None = None
    behaviour_buckets: bool | None = False

    def __post_init__(self) -> None:
        if not 10 <= self.bits <= 26:
            raise ValueError("online bits must lie in [10, 26]")
        if (self.alpha is not None and self.alpha <= 0) or self.beta < 0 or self.l1 < 0 or self.l2 < 0:
            raise ValueError("online alpha must be > 0; beta, l1, l2 >= 0")
        if self.max_pending < 1 or self.rebuild_examples < 0:
            raise ValueError("online max_pending must be >= 1 and rebuild_examples >= 0")
        if self.calibration not in (None, True, False) or self.behaviour_buckets not in (None, True, False):
            raise ValueError("online calibration and behaviour_buckets must be True, False or None (auto)")

    def steps(self) -> tuple[float, ...]:
        """The FTRL steps learned with side by side: ``alpha``, or :data:`AUTO_ALPHAS` when it is None."""
        return AUTO_ALPHAS if self.alpha is None else (self.alpha,)

    def members(self) -> tuple[tuple[float, bool], ...]:
        """The mixture's members: (FTRL step, whether it learns behaviour buckets), one row of state each.

        >>> OnlineConfig(behaviour_buckets=None).members()
        ((0.1, False), (0.3, False), (0.3, True))
        >>> OnlineConfig(alpha=0.2, behaviour_buckets=True).members()
        ((0.2, True),)
        """
        plain = tuple((alpha, bool(self.behaviour_buckets)) for alpha in self.steps())
        if self.behaviour_buckets is not None:
            return plain
        return (*plain, (self.alpha if self.alpha is not None else BUCKET_MEMBER_ALPHA, True))

    def resolved(self, labels: LabelSpec | None) -> OnlineConfig:
        """These settings with ``calibration`` settled for ``labels`` (no labels: off)."""
        if self.calibration is not None:
            return self
        final_at_once = labels is not None and labels.attribution_window_s == 0
        return dataclasses.replace(self, calibration=final_at_once)


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped so that 0 and 1 stay finite.

    >>> [round(float(x), 3) for x in logit(np.array([0.5, 0.9]))]
    [0.0, 2.197]
    """
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`logit`."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -_MAX_LOGIT, _MAX_LOGIT)))


@dataclasses.dataclass(frozen=True, slots=True)
class Coordinates:
    """The features of one (user, item) example for the correction: weight indices and their values; the last
    ``scaled`` of them are multiplied by the base logit; ``shared`` marks those every user shares (the bias, the
    item, its categories, the item signals, the behaviour buckets, the shared logit scale), the others are the
    user's own. An index may repeat (a category listed twice, a hash collision): scoring counts each occurrence
    and learning adds them up, so both see the same weight."""

    index: np.ndarray  # int64
    value: np.ndarray  # float64
    scaled: int
    shared: np.ndarray  # bool
    #: Which are behaviour buckets (None: none): only the mixture's members with buckets learn them.
    buckets: np.ndarray | None = None

    def x(self, base_logit: float) -> np.ndarray:
        if not self.scaled:
            return self.value
        x = self.value.copy()
        x[len(x) - self.scaled :] *= base_logit
        return x


class _CrossTable:
    """Per item, its coordinates in the correction as arrays, for scoring many items at once (owned by one
    :class:`Correction`, made again after a snapshot is loaded): its own hashes (the global bias, the item, its
    categories), the texts of the user's crosses with it (numbered; hashed with the user once per call), their
    values, and the tail of its user x item cross. Columns past an item's own count hold index 0 with value 0.
    At most :data:`_MAX_TABLE_ROWS` rows; when full it starts again (rows are made again on demand)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.own: np.ndarray = np.zeros((256, 3), dtype=np.int64)
        self.own_value: np.ndarray = np.zeros((256, 3))
        self.text: np.ndarray = np.zeros((256, 2), dtype=np.intp)  # text 0 pads
        self.text_value: np.ndarray = np.zeros((256, 2))
        self.tails: list[bytes] = []
        self.texts: dict[str, int] = {"": 0}
        self.text_list: list[str] = [""]

    def add(self, own: Sequence[int], tail: bytes, texts: Sequence[str], values: Sequence[float]) -> int:
        """A new row for an item, widening the arrays if it has more categories or attributes than any before."""
        row = len(self.tails)
        if row == len(self.own):  # room for twice as many (a new row is cleared before it is filled)
            self.own, self.own_value, self.text, self.text_value = (
                np.resize(array, (2 * row, array.shape[1]))
                for array in (self.own, self.own_value, self.text, self.text_value)
            )
        if len(own) > self.own.shape[1]:
            more = ((0, 0), (0, len(own) - self.own.shape[1]))
            self.own, self.own_value = np.pad(self.own, more), np.pad(self.own_value, more)
        if len(texts) > self.text.shape[1]:
            more = ((0, 0), (0, len(texts) - self.text.shape[1]))
            self.text, self.text_value = np.pad(self.text, more), np.pad(self.text_value, more)
        numbers = []
        for text in texts:
            number = self.texts.get(text)
            if number is None:
                number = self.texts[text] = len(self.text_list)
                self.text_list.append(text)
            numbers.append(number)
        self.own[row], self.own_value[row], self.text[row], self.text_value[row] = 0, 0.0, 0, 0.0
        self.own[row, : len(own)], self.own_value[row, : len(own)] = own, 1.0
        self.text[row, : len(texts)], self.text_value[row, : len(texts)] = numbers, values
        self.tails.append(tail)
        return row


#: Most items :class:`_CrossTable` keeps rows for (about 30 MB at 4 categories and attributes an item).
_MAX_TABLE_ROWS = 1 << 18

#: The most columns :class:`_CrossTable` gives an item's own hashes or its user's crosses (an item's categories and
#: attributes): the table is as wide as its widest item, so a call over an item wider than this is corrected item
#: by item instead of widening every row.
_TABLE_WIDTH = 16

#: From this many items on, :meth:`Correction.offsets` reads the items' coordinates from its table (below, numpy's
#: fixed cost per call is more than it saves).
_TABLE_FROM = 25


class Correction:
    """FTRL-Proximal logistic regression over hashed features, learning a residual on a base logit.

    Its features, for a user and an item (:meth:`coordinates`):
    - biases and crosses: the global bias, the item, its categories, the user, user x item, user x category,
      and user x each of the item's attributes (a taste for a brand, a decade; at half the step);
    - optionally a weight per bucket of each behaviour feature (``behaviour_buckets``);
    - with ``calibration``, the item's own behaviour features (:data:`ITEM_SIGNALS`), each with one shared
      weight: what an item's track record says drifts as the catalogue ages, while a version keeps the weight
      it learned then; and the base logit itself, once with a shared weight and once with the user's own: how
      far to trust the serving version, overall and for this user.

    Unless ``alpha`` is set, it learns with each step of :data:`AUTO_ALPHAS` side by side, and unless
    ``behaviour_buckets`` is set, with one more member that also learns the buckets (:meth:`OnlineConfig.members`;
    one set of FTRL state per member, the same features, the buckets' weights staying 0 in the members without
    them): the probability it predicts is the mixture of theirs, weighted by ``exp(-their log loss so far)`` (the
    Bayesian mixture of the members, with a floor so that a member left behind can come back), and the correction
    it returns is that mixture's logit minus the base logit.
    """

    def __init__(self, config: OnlineConfig | None = None) -> None:
        self.config = (config or OnlineConfig()).resolved(None)  # settled already where labels are known
        members = self.config.members()
        alphas = [alpha for alpha, _ in members]
        self._alphas = np.array(alphas, dtype=np.float64)[:, None]  # one row of state per member
        self._bucketed = np.array([buckets for _, buckets in members], dtype=bool)
        self._names = [f"{alpha:g}{'+buckets' if buckets else ''}" for alpha, buckets in members]
        # A member with buckets beside one without at the same step is stacked on it: it shares that member's
        # weights for every other feature (it takes the same steps on them) and learns the buckets on what that
        # member leaves unexplained, so choosing it never loses what the ids and crosses learned (a newcomer's
        # share of the crowd's tastes, say).
        self._stacked = [
            (row, members.index((alpha, False)))
            for row, (alpha, buckets) in enumerate(members)
            if buckets and (alpha, False) in members
        ]
        self._log_weights = np.zeros(len(alphas))  # minus each member's log loss so far (floored, see _MIXTURE_FLOOR)
        size = 1 << self.config.bits
        self._mask = size - 1
        self._z = np.zeros((len(alphas), size), dtype=np.float64)
        self._n = np.zeros((len(alphas), size), dtype=np.float64)
        self._w = np.zeros((len(alphas), size), dtype=np.float64)  # the weights z and n imply (see _weights)
        self._item_cache: dict[str, tuple[tuple[int, ...], bytes, tuple[str, ...], int]] = {}  # see _parts
        self._table = _CrossTable()  # see offsets
        # The hashed coordinate of each behaviour feature's value buckets (quarters of a unit, clipped to ±10).
        self._bucket_index = np.array(
            [
                [self._hash(f"f\x1f{k}\x1f{b}") for b in range(-_BUCKET_SPAN, _BUCKET_SPAN + 1)]
                for k in range(NUM_FEATURES)
            ],
            dtype=np.int64,
        )
        self._scale = self._hash("s")
        self._signals = tuple(self._hash(f"is\x1f{k}") for k in ITEM_SIGNALS)
        self._scaled = 2 if self.config.calibration else 0  # the last features, scaled by the base logit
        self.updates = 0

    def __getstate__(self) -> dict[str, object]:
        """What a snapshot keeps: everything but the items' cached hashes and table, which are made again from the
        catalogue as it is when the snapshot is loaded (an item may have changed since it was written), and the
        weights, which are made again from the FTRL state."""
        return {**self.__dict__, "_item_cache": {}, "_table": None, "_w": None}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._table = _CrossTable()
        self._w = self._weights_of(self._z, self._n)

    def _hash(self, text: str) -> int:
        return zlib.crc32(text.encode()) & self._mask

    def _features(
        self, user: str, item: Item, row: Sequence[float] | None, memo: dict[str, int]
    ) -> tuple[list[int], list[float]]:
        """Indices and values of (user, item): first the shared ones of the item (the bias, the item, its
        categories), then the user's crosses with it, then the behaviour buckets and item signals (shared), then the
        scaled ones (the shared logit scale, the user's). ``memo`` keeps the user's hashes across the items of one
        call (the same categories and attributes come back)."""
        parts = self._parts(item)
        own, _, _, n_attributes = parts
        index = [0, *own, *self._personal(user, parts, memo)]  # 0: the global bias
        # The user's crosses with the item's attributes come last, at half the step of the others.
        value = [1.0] * (len(index) - n_attributes) + [_ATTRIBUTE_CROSS] * n_attributes
        if row is not None and self._bucketed.any():
            buckets = self._buckets_of(np.asarray(row, dtype=np.float64)[None, :])[0]
            index += buckets.tolist()
            value += [1.0] * len(buckets)
        if self.config.calibration:
            if row is not None:
                index += self._signals
                value += [float(row[k]) for k in ITEM_SIGNALS]
            scale = memo.get("\x00us")
            if scale is None:
                scale = memo["\x00us"] = self._hash(f"us\x1f{user}")
            index += (self._scale, scale)
            value += (1.0, 1.0)
        return index, value

    def coordinates(self, user: str, item: Item, row: Sequence[float] | None = None) -> Coordinates:
        """The features of (user, item), with the behaviour feature ``row`` (the item signals and buckets need
        it; without it they are left out)."""
        index, value = self._features(user, item, row, {})
        own, _, texts, _ = self._parts(item)
        shared = np.ones(len(index), dtype=bool)
        shared[1 + len(own) : 2 + len(own) + len(texts)] = False  # the user's crosses (see _personal)
        if self._scaled:
            shared[-1] = False  # the user's own logit scale
        buckets = None
        if row is not None and self._bucketed.any():
            buckets = np.zeros(len(index), dtype=bool)
            start = 2 + len(own) + len(texts)  # after the bias, the item's own and the user's crosses
            buckets[start : start + len(row)] = True
        return Coordinates(np.array(index, dtype=np.int64), np.array(value), self._scaled, shared, buckets)

    def offsets(
        self, user: str, items: Sequence[Item], rows: np.ndarray | Sequence[Sequence[float]], base_logits: np.ndarray
    ) -> np.ndarray:
        """The corrections of one user's scores for several items (their base logits given), in one pass (from
        :data:`_TABLE_FROM` items on, from the items' rows in a table: :meth:`_table_offsets`)."""
        if not items:
            return np.zeros(0)
        if len(items) >= _TABLE_FROM:
            table_offsets = self._table_offsets(user, items, rows, np.asarray(base_logits, dtype=np.float64))
            if table_offsets is not None:
                return table_offsets
        memo: dict[str, int] = {}
        flat_index: list[int] = []
        flat_value: list[float] = []
        lengths = []
        for item, row in zip(items, rows, strict=True):
            index, value = self._features(user, item, row, memo)
            flat_index += index
            flat_value += value
            lengths.append(len(index))
        x = np.array(flat_value)
        base = np.asarray(base_logits, dtype=np.float64)
        if self._scaled:  # the last of each item's features are scaled by its base logit
            ends = np.cumsum(lengths)
            for back in range(1, self._scaled + 1):
                x[ends - back] *= base
        w = self._weights(np.array(flat_index, dtype=np.int64))
        starts = np.concatenate(([0], np.cumsum(lengths[:-1]))).astype(np.intp)
        return self._mixed(np.add.reduceat(w * x, starts, axis=1), base)

    def forget_items(self, item_ids: Iterable[str]) -> None:
        """Drop cached hashes of items whose catalogue entry changed (their categories may have)."""
        for item_id in item_ids:
            self._item_cache.pop(item_id, None)
            self._table.rows.pop(item_id, None)  # its row is left unused; a new one is made when it is next read

    def _table_offsets(
        self, user: str, items: Sequence[Item], rows: np.ndarray | Sequence[Sequence[float]], base: np.ndarray
    ) -> np.ndarray | None:
        """:meth:`offsets` from the items' rows in :class:`_CrossTable`: the same coordinates as :meth:`_features`
        gives each item (checked by a test), gathered as arrays; the user's crosses are hashed once per distinct
        text and once per item for the user x item cross. None when an item is wider than the table takes
        (:data:`_TABLE_WIDTH`): the call is then corrected item by item."""
        table = self._table
        if len(table.tails) + len(items) > _MAX_TABLE_ROWS:
            table = self._table = _CrossTable()
        found = table.rows
        numbers = [found.get(item.item_id, -1) for item in items]
        if -1 in numbers:
            for k, item in enumerate(items):
                if numbers[k] < 0:
                    number = found.get(item.item_id)
                    if number is None:
                        own, tail, texts, n_attributes = self._parts(item)
                        if len(own) >= _TABLE_WIDTH or len(texts) > _TABLE_WIDTH:
                            return None
                        values = [1.0] * (len(texts) - n_attributes) + [_ATTRIBUTE_CROSS] * n_attributes
                        number = found[item.item_id] = table.add((0, *own), tail, texts, values)
                    numbers[k] = number
        n = len(items)
        at = np.array(numbers, dtype=np.intp)
        user_part, tails = zlib.crc32(f"ui\x1f{user}".encode()), table.tails
        ui = np.array([zlib.crc32(tails[k], user_part) for k in numbers], dtype=np.int64) & self._mask
        text = table.text[at]
        hashed = np.zeros(len(table.text_list), dtype=np.int64)
        for number in np.unique(text).tolist():
            hashed[number] = self._hash(f"{table.text_list[number]}\x1f{user}")
        index = [table.own[at], ui[:, None], hashed[text]]
        value = [table.own_value[at], np.ones((n, 1)), table.text_value[at]]
        if self._bucketed.any():
            buckets = self._buckets_of(np.asarray(rows, dtype=np.float64))
            index.append(buckets)
            value.append(np.ones(buckets.shape))
        if self.config.calibration:
            scale = (self._scale, self._hash(f"us\x1f{user}"))
            index += [np.broadcast_to(np.array(self._signals), (n, len(self._signals))), np.tile(scale, (n, 1))]
            value += [np.asarray(rows, dtype=np.float64)[:, ITEM_SIGNALS], np.repeat(base[:, None], 2, axis=1)]
        w = self._w[:, np.concatenate(index, axis=1)]  # (steps, items, coordinates)
        return self._mixed((w * np.concatenate(value, axis=1)).sum(axis=2), base)

    def _parts(self, item: Item) -> tuple[tuple[int, ...], bytes, tuple[str, ...], int]:
        """What an item contributes, made once per item: the hashes of the item and its categories, the end of
        its user x item cross's text, the texts of the user's crosses with it (the user's bias, its categories,
        its attributes), and how many attributes it has."""
        cached = self._item_cache.get(item.item_id)
        if cached is None:
            own = (self._hash(f"i\x1f{item.item_id}"), *(self._hash(f"c\x1f{c}") for c in item.categories))
            texts = (
                "u",
                *(f"uc\x1f{c}" for c in item.categories),
                *(f"ua\x1f{name}={value}" for name, value in item.attributes),
            )
            cached = (own, f"\x1f{item.item_id}".encode(), texts, len(item.attributes))
            if len(self._item_cache) < 1_000_000:
                self._item_cache[item.item_id] = cached
        return cached

    def _personal(
        self, user: str, parts: tuple[tuple[int, ...], bytes, tuple[str, ...], int], memo: dict[str, int]
    ) -> list[int]:
        """The user's own crosses with an item (its :meth:`_parts`): the user's bias, and with the item, its
        categories and its attributes (``memo``: the user's hashes already made, by the text hashed; inline, as
        Recommend makes them for every candidate). The user x item cross hashes ``ui<US>user<US>item`` as a CRC
        continued from the user's part, made once per call."""
        _, item_tail, texts, _ = parts
        user_part = memo.get("\x00ui")
        if user_part is None:
            user_part = memo["\x00ui"] = zlib.crc32(f"ui\x1f{user}".encode())
        found = [zlib.crc32(item_tail, user_part) & self._mask]
        for text in texts:
            hashed = memo.get(text)
            if hashed is None:
                hashed = memo[text] = self._hash(f"{text}\x1f{user}")
            found.append(hashed)
        return found

    def forget(self, user: str, items: Iterable[Item]) -> None:
        """Reset the user's own weights (bias, logit scale, and crosses with these items: what :meth:`learn` moved
        for the user's examples) to those of a user never seen; shared weights (items, categories, item signals,
        behaviour buckets, the shared logit scale) keep what they learned."""
        index = {self._hash(f"us\x1f{user}")}
        memo: dict[str, int] = {}
        for item in items:
            index.update(self._personal(user, self._parts(item), memo))
        index.add(self._hash(f"u\x1f{user}"))
        where = np.fromiter(index, dtype=np.int64)
        self._z[:, where] = 0.0
        self._n[:, where] = 0.0
        self._w[:, where] = 0.0

    def _buckets_of(self, rows: np.ndarray) -> np.ndarray:
        """The bucket coordinates of behaviour feature rows (one row of coordinates per row of features)."""
        bins = np.rint(4.0 * np.clip(rows, -10.0, 10.0)).astype(np.intp) + _BUCKET_SPAN
        return self._bucket_index[np.arange(rows.shape[1]), bins]

    def _weights(self, index: np.ndarray) -> np.ndarray:
        """The weights at ``index``, one row per step: kept up to date by :meth:`learn` and :meth:`forget` (a read
        of 1,000 items gathers one array instead of computing from two)."""
        return self._w[:, index]

    def _weights_of(self, z: np.ndarray, n: np.ndarray) -> np.ndarray:
        """FTRL-Proximal's weights for its state ``z`` and ``n`` (a row per step)."""
        cfg = self.config
        w = -(z - np.sign(z) * cfg.l1) / ((cfg.beta + np.sqrt(n)) / self._alphas + cfg.l2)
        w[np.abs(z) <= cfg.l1] = 0.0
        return w

    def _shares(self) -> np.ndarray:
        """Each step's share of the prediction now, from its log-weight."""
        shares = np.exp(self._log_weights - self._log_weights.max())
        return shares / shares.sum()

    def mixture(self) -> dict[str, float]:
        """Each member's share of the prediction now, by member (its step, and ``+buckets`` if it learns them)."""
        return {name: float(s) for name, s in zip(self._names, self._shares(), strict=True)}

    def _mixed(self, offsets: np.ndarray, base: np.ndarray | float) -> np.ndarray:
        """The correction, from each step's (rows of ``offsets``) on top of ``base``."""
        if len(offsets) == 1:
            return offsets[0]
        p = self._shares() @ sigmoid(base + offsets)
        return logit(p) - base

    def value(self, coordinates: Coordinates, base_logit: float) -> float:
        """The correction (a logit offset) of one example whose base logit is ``base_logit``."""
        return float(self._mixed(self._weights(coordinates.index) @ coordinates.x(base_logit), base_logit))

    def learn(self, coordinates: Coordinates, base_logit: float, label: float, influence: float = 1.0) -> float:
        """One FTRL step (per step size) on an example; returns the prediction made before learning from it.

        ``influence`` (:func:`~preftrack_gateway.features.influence`) scales the steps of the shared coordinates and
        the example's say in the mixture of steps; the user's own coordinates learn from it fully.
        """
        p, index, g, shared, fit = self._gradient(coordinates, base_logit, label)
        if influence < 1.0:
            g[:, shared] *= influence
        self._step(index, g)
        self._mix(fit, influence)
        self.updates += 1
        return p

    def learn_own(self, coordinates: Coordinates, base_logit: float, label: float) -> tuple[float, SharedStep]:
        """:meth:`learn`'s step on the user's own coordinates only; the rest of it (the shared coordinates', the
        mixture's) is returned, for :meth:`learn_shared` once the example's influence is known. Together they make
        the same step as :meth:`learn`."""
        p, index, g, shared, fit = self._gradient(coordinates, base_logit, label)
        own = ~shared
        self._step(index[own], g[:, own])
        self.updates += 1
        return p, SharedStep(index[shared], g[:, shared], fit)

    def learn_shared(self, step: SharedStep, influence: float) -> None:
        """Take the rest of a :meth:`learn_own` step, scaled by the example's ``influence``."""
        if influence > 0.0:
            self._step(step.index, step.gradient * influence if influence < 1.0 else step.gradient)
            self._mix(step.fit, influence)

    def _gradient(
        self, coordinates: Coordinates, base_logit: float, label: float
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """The prediction, the distinct coordinates, each step's gradient on them, which are shared, and each step's
        log-likelihood of the label (None with one step)."""
        index, x, shared = coordinates.index, coordinates.x(base_logit), coordinates.shared
        buckets = coordinates.buckets
        if len(set(index.tolist())) < len(index):  # a repeated index: one coordinate, its values added up
            index, where = np.unique(index, return_inverse=True)
            x = np.bincount(where, weights=x, minlength=len(index))
            shared = np.bincount(where, weights=shared, minlength=len(index)) > 0  # shared wins a collision
            if buckets is not None:  # a bucket only if every occurrence is one: the others are every member's
                buckets = np.bincount(where, weights=~buckets, minlength=len(index)) == 0
        each = sigmoid(base_logit + self._weights(index) @ x)  # each step's prediction
        p = float(self._shares() @ each)
        fit = None
        if len(each) > 1:
            q = np.clip(each, 1e-7, 1 - 1e-7)
            fit = label * np.log(q) + (1.0 - label) * np.log(1.0 - q)
        g = (each - label)[:, None] * x
        if buckets is not None and not self._bucketed.all():
            g[np.ix_(~self._bucketed, buckets)] = 0.0  # the members without buckets never learn them
        if self._stacked:
            other = ~buckets if buckets is not None else np.ones(len(index), dtype=bool)
            for row, partner in self._stacked:  # the same steps as its partner on every other feature
                g[row, other] = g[partner, other]
        return p, index, g, shared, fit

    def _step(self, index: np.ndarray, g: np.ndarray) -> None:
        """FTRL-Proximal's update of the coordinates ``index`` with each step's gradient ``g`` on them."""
        n = self._n[:, index]
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / self._alphas
        self._z[:, index] += g - sigma * self._w[:, index]
        self._n[:, index] = n + g * g
        self._w[:, index] = self._weights_of(self._z[:, index], self._n[:, index])

    def _mix(self, fit: np.ndarray | None, influence: float) -> None:
        """Each step's log-weight moves by its log-likelihood of an example, times the example's influence."""
        if fit is not None:
            self._log_weights += influence * fit
            self._log_weights = np.maximum(self._log_weights - self._log_weights.max(), -_MIXTURE_FLOOR)


@dataclasses.dataclass(frozen=True, slots=True)
class SharedStep:
    """The part of an example's step that :meth:`Correction.learn_own` left for :meth:`Correction.learn_shared`."""

    index: np.ndarray  # the shared coordinates
    gradient: np.ndarray  # each step's gradient on them
    fit: np.ndarray | None  # each step's log-likelihood of the label (None with one step)


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """A (user, item) at a time, to be labelled: an example event or an item of a served list."""

    user: str
    item_id: str
    timestamp_s: float
    base_logit: float | None = None  # known for served lists: the version's logit when it was served
    row: Sequence[float] | None = None  # the behaviour features at its time (for the version's logit)
    version: int | None = None  # the version whose logit ``base_logit`` is


class Labeller:
    """Turns the event stream into exactly labelled examples, in event time.

    Feed every committed event to :meth:`observe` (in any order) and every served list to :meth:`expose`;
    :meth:`observe` returns the examples whose label became final, with the label. Labels match the
    trainer's: positive if the example is itself positive, or if the same user does a positive event on the
    same item strictly after it and at most ``attribution_window_s`` later; negative once the window has
    closed, i.e. once an event later than the window's end has been seen.
    """

    def __init__(self, spec: FeatureSpec, labels: LabelSpec, *, max_pending: int = 500_000) -> None:
        self.spec = spec
        self.labels = labels
        self._example_types = frozenset(labels.example_types)
        self._max_pending = max_pending
        self._pending: dict[int, Example] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap of (window end, key)
        self._by_pair: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
        self._positives: dict[tuple[str, str], list[float]] = {}  # recent positive times, for late examples
        self._next = 0
        self._labelled_on_exposure: list[tuple[Example, float]] = []  # returned by the next observe()
        self._observed = 0
        self.horizon_s = -math.inf  # the newest event time seen: windows close against it
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Examples whose label window is still open."""
        return len(self._pending)

    def _later_positive(self, example: Example) -> bool:
        window = self.labels.attribution_window_s
        times = self._positives.get((example.user, example.item_id))
        if not times:
            return False
        return any(example.timestamp_s < t <= example.timestamp_s + window for t in times)

    def _arrive(self, example: Example, positive: bool, final: list[tuple[Example, float]]) -> None:
        window = self.labels.attribution_window_s
        if positive or self._later_positive(example):
            final.append((example, 1.0))
        elif window <= 0:
            final.append((example, 0.0))
        else:  # even if its window has closed already: a positive later in the same batch may still resolve it
            key = self._next
            self._next += 1
            self._pending[key] = example
            heapq.heappush(self._deadlines, (example.timestamp_s + window, key))
            self._by_pair[(example.user, example.item_id)].add(key)
            if len(self._pending) > self._max_pending:  # shed the example whose window ends first
                while self._deadlines:
                    _, old = heapq.heappop(self._deadlines)
                    if self._take(old) is not None:
                        self.dropped += 1
                        break

    def _take(self, key: int) -> Example | None:
        example = self._pending.pop(key, None)
        if example is not None:
            pair = (example.user, example.item_id)
            keys = self._by_pair[pair]
            keys.discard(key)
            if not keys:
                del self._by_pair[pair]
        return example

    def expose(
        self,
        user: str,
        item_ids: Sequence[str],
        timestamp_s: float,
        base_logits: Iterable[float],
        rows: Sequence[Sequence[float]] | None = None,
        *,
        version: int | None = None,
    ) -> None:
        """A served list: each item is an example at the time it was served, with the logit of the ``version``
        that served it (and its feature row, so that another version can score it again)."""
        final: list[tuple[Example, float]] = []
        for k, (item_id, base) in enumerate(zip(item_ids, base_logits, strict=True)):
            row = rows[k] if rows is not None else None
            self._arrive(Example(user, item_id, timestamp_s, float(base), row, version), False, final)
        self._labelled_on_exposure.extend(final)

    def is_example(self, event: Event) -> bool:
        """Whether an event is an example (its type is one of the deployment's example types)."""
        return event.event_type in self._example_types

    def observe(
        self, events: Sequence[Event], rows: Sequence[Sequence[float] | None] | None = None
    ) -> list[tuple[Example, float]]:
        """Fold committed events in; return the examples labelled by them (positives at once, negatives late).

        ``rows`` (optional, one per event) are the example events' feature rows at their own time.
        """
        window = self.labels.attribution_window_s
        final, self._labelled_on_exposure = self._labelled_on_exposure, []
        for index, event in enumerate(events):
            t = event.timestamp_s
            self.horizon_s = max(self.horizon_s, t)
            positive = self.spec.is_positive(event.event_type, event.value)
            pair = (event.user_id, event.item_id)
            if positive and window > 0:
                self._positives.setdefault(pair, []).append(t)
                for key in list(self._by_pair.get(pair, ())):
                    example = self._pending[key]
                    if example.timestamp_s < t <= example.timestamp_s + window:
                        self._take(key)
                        final.append((example, 1.0))
            if event.event_type in self._example_types:
                row = rows[index] if rows is not None else None
                self._arrive(Example(event.user_id, event.item_id, t, row=row), positive, final)
        while self._deadlines and self._deadlines[0][0] < self.horizon_s:
            _, key = heapq.heappop(self._deadlines)
            closed = self._take(key)
            if closed is not None:
                final.append((closed, 0.0))
        self._observed += 1
        if len(self._positives) > 4 * self._max_pending or self._observed % 1024 == 0:
            self._prune_positives(window)
        return final

    def forget(self, user: str) -> set[str]:
        """Drop everything kept about a user (waiting examples, recent positives); returns the items involved."""
        items: set[str] = set()
        for pair in [pair for pair in self._by_pair if pair[0] == user]:
            for key in list(self._by_pair.get(pair, ())):
                self._take(key)
            items.add(pair[1])
        for pair in [pair for pair in self._positives if pair[0] == user]:
            del self._positives[pair]
            items.add(pair[1])
        items.update(e.item_id for e, _ in self._labelled_on_exposure if e.user == user)
        self._labelled_on_exposure = [(e, label) for e, label in self._labelled_on_exposure if e.user != user]
        return items

    def _prune_positives(self, window: float) -> None:
        # Kept as long as a late example could still be read exactly (the features keep 6 h per key).
        oldest = self.horizon_s - window - _LATE_EXAMPLE_S
        for pair in [p for p, times in self._positives.items() if times[-1] < oldest]:
            del self._positives[pair]


class History:
    """The newest labelled examples the correction learned from (at most ``size``), with their feature rows and
    influence, so that it can learn them again on the logits of another version: the correction is a residual on
    the version that serves, and a residual on an old version counts twice what the new one has absorbed."""

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self.width = width
        self._rows: np.ndarray | None = None  # allocated on the first example: size x width float32
        self._labels = np.zeros(0, dtype=np.float32)
        self._influence = np.zeros(0)
        self._users: list[str | None] = []
        self._items: list[str] = []
        self._times = np.zeros(0)
        self._added = 0

    def __len__(self) -> int:
        return sum(1 for user in self._users if user is not None)

    def add(self, example: Example, label: float, influence: float = 1.0) -> int:
        """Keep an example learned from (one without a feature row cannot be scored again: it is not kept); returns
        its number for :meth:`reweigh` (-1: not kept)."""
        if self.size == 0 or example.row is None:
            return -1
        if self._rows is None:
            self._rows = np.zeros((self.size, self.width), dtype=np.float32)
            self._labels = np.zeros(self.size, dtype=np.float32)
            self._influence = np.zeros(self.size)
            self._times = np.zeros(self.size)
        slot = self._added % self.size
        if slot == len(self._users):
            self._users.append(example.user)
            self._items.append(example.item_id)
        else:
            self._users[slot], self._items[slot] = example.user, example.item_id
        self._rows[slot] = example.row
        self._labels[slot] = label
        self._influence[slot] = influence
        self._times[slot] = example.timestamp_s
        self._added += 1
        return self._added - 1

    def reweigh(self, number: int, influence: float) -> None:
        """Set the influence of the example :meth:`add` numbered ``number``, if it is still kept."""
        if number >= 0 and self._added - number <= self.size and self._users[number % self.size] is not None:
            self._influence[number % self.size] = influence

    def examples(self) -> list[tuple[Example, float, float]]:
        """The kept examples with their labels and influence, oldest first (the order they were learned in)."""
        if self._rows is None:
            return []
        count = min(self._added, self.size)
        first = self._added - count
        out = []
        for n in range(first, self._added):
            slot = n % self.size
            user = self._users[slot]
            if user is not None:
                example = Example(user, self._items[slot], float(self._times[slot]), row=self._rows[slot])
                out.append((example, float(self._labels[slot]), float(self._influence[slot])))
        return out

    def forget(self, user: str) -> None:
        """Drop the user's examples: their rows, items, times and labels are overwritten, not only unlinked."""
        for slot, kept in enumerate(self._users):
            if kept == user:
                self._users[slot] = None
                self._items[slot] = ""
                if self._rows is not None:
                    self._rows[slot] = 0.0
                    self._labels[slot] = 0.0
                    self._influence[slot] = 0.0
                    self._times[slot] = 0.0
