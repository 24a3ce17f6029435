"""The per-event layer: exact labels in event time, and a correction that learns what the base model misses."""

from __future__ import annotations

import asyncio
import math
import pickle

import numpy as np

from preftrack_gateway.config import GatewayConfig
from preftrack_gateway.features import FEATURE_NAMES, NUM_FEATURES, FeatureSpec, FeatureState, LabelSpec, influence
from preftrack_gateway.learner import OnlineLearner
from preftrack_gateway.online import AUTO_ALPHAS, Correction, Labeller, OnlineConfig, logit, sigmoid
from preftrack_gateway.schema import Event, Item
from preftrack_trainer.preprocess import build_examples

T0 = 1.8e9
SHOP = FeatureSpec()  # add_to_cart / purchase are positive
VIEWS = LabelSpec(example_types=("view",), attribution_window_s=3600.0)


def _event(n: int, user: str, item: str, kind: str, dt: float, value: float = 1.0) -> Event:
    return Event(event_id=str(n), user_id=user, item_id=item, event_type=kind, value=value, timestamp_s=T0 + dt)


def test_a_view_is_negative_only_once_its_window_has_closed() -> None:
    labeller = Labeller(SHOP, VIEWS)
    assert labeller.observe([_event(1, "u", "a", "view", 0)]) == []
    assert labeller.observe([_event(2, "v", "b", "view", 3000)]) == []  # window of the first still open
    done = labeller.observe([_event(3, "v", "c", "view", 3601)])
    assert [(e.item_id, y) for e, y in done] == [("a", 0.0)]
    assert labeller.pending == 2


def test_a_later_purchase_inside_the_window_makes_the_view_positive_at_once() -> None:
    labeller = Labeller(SHOP, VIEWS)
    labeller.observe([_event(1, "u", "a", "view", 0)])
    done = labeller.observe([_event(2, "u", "a", "purchase", 1800)])
    assert [(e.item_id, y) for e, y in done] == [("a", 1.0)]
    # A purchase after the window does not count, and one arriving before its (late) view does.
    labeller.observe([_event(3, "u", "b", "view", 2000)])
    assert [(e.item_id, y) for e, y in labeller.observe([_event(4, "u", "b", "purchase", 2000 + 3601)])] == [("b", 0.0)]
    labeller.observe([_event(5, "w", "c", "purchase", 9000)])
    assert [(e.item_id, y) for e, y in labeller.observe([_event(6, "w", "c", "view", 8000)])] == [("c", 1.0)]


def test_ratings_are_labelled_at_once_by_the_threshold() -> None:
    labeller = Labeller(FeatureSpec(positive_types=()), LabelSpec(example_types=("rating",), attribution_window_s=0))
    done = labeller.observe([_event(1, "u", "a", "rating", 0, 5.0), _event(2, "u", "b", "rating", 1, 2.0)])
    assert [(e.item_id, y) for e, y in done] == [("a", 1.0), ("b", 0.0)]
    assert labeller.pending == 0


def test_served_lists_become_examples_with_the_versions_logit() -> None:
    labeller = Labeller(SHOP, VIEWS)
    labeller.expose("u", ["a", "b"], T0, logit(np.array([0.2, 0.7])))
    done = labeller.observe([_event(1, "u", "b", "add_to_cart", 60)])
    assert [(e.item_id, y, round(e.base_logit, 3)) for e, y in done] == [("b", 1.0, round(float(logit(0.7)), 3))]


def test_pending_examples_are_bounded() -> None:
    labeller = Labeller(SHOP, VIEWS, max_pending=10)
    labeller.observe([_event(k, f"u{k}", "a", "view", k) for k in range(100)])
    assert labeller.pending == 10 and labeller.dropped == 90


def test_the_correction_learns_a_users_taste_the_base_model_does_not_know() -> None:
    rng = np.random.default_rng(0)
    correction = Correction(OnlineConfig(bits=16))
    items = {f"i{k}": Item(item_id=f"i{k}", categories=("horror" if k % 2 else "comedy",)) for k in range(40)}
    # The base model says 0.5 for everything; user "fan" likes horror, user "hater" does not.
    late = []
    for step in range(2000):
        user = "fan" if step % 2 else "hater"
        item = items[f"i{rng.integers(40)}"]
        y = float((item.categories[0] == "horror") == (user == "fan"))
        p = correction.learn(correction.coordinates(user, item), 0.0, y)
        if step >= 1500:
            late.append(abs(p - y))
    assert np.mean(late) < 0.2
    horror, comedy = items["i1"], items["i2"]
    fan = sigmoid(np.array([correction.value(correction.coordinates("fan", horror), 0.0)]))[0]
    assert fan > 0.8 and sigmoid(np.array([correction.value(correction.coordinates("fan", comedy), 0.0)]))[0] < 0.2
    fan_offsets = correction.offsets("fan", [horror, comedy], [[0.0] * NUM_FEATURES] * 2, np.zeros(2))
    assert fan_offsets[0] > 0 > fan_offsets[1]
    assert np.isclose(
        fan_offsets[0], correction.value(correction.coordinates("fan", horror, [0.0] * NUM_FEATURES), 0.0)
    )


def test_the_order_of_events_in_one_commit_does_not_change_a_label() -> None:
    # A late-uploaded client buffer: the view and the purchase arrive together, after the window's end was seen.
    labels = []
    for batch in (
        [_event(1, "u", "a", "view", 0), _event(2, "u", "a", "purchase", 600)],
        [_event(2, "u", "a", "purchase", 600), _event(1, "u", "a", "view", 0)],
    ):
        labeller = Labeller(SHOP, VIEWS)
        labeller.observe([_event(0, "other", "z", "view", 7200)])  # the horizon is past the view's window
        labels.append([(e.item_id, y) for e, y in labeller.observe(batch)])
    assert labels[0] == labels[1] == [("a", 1.0)]


def test_when_another_version_serves_the_correction_is_learned_again_on_its_logits() -> None:
    """The correction is a residual on the serving version: what version 2 absorbed is not counted twice."""
    spec, labels = FeatureSpec(positive_types=()), LabelSpec(example_types=("rating",), attribution_window_s=0.0)
    features = FeatureState(spec)
    items = [Item(item_id=f"i{k}", categories=("horror" if k % 2 else "comedy",)) for k in range(10)]
    for item in items:
        features.upsert_item(item)
    learner = OnlineLearner(features, labels, OnlineConfig(bits=16))
    serving = {"version": 1}
    scored_by: list[int] = []
    scored_items: list[tuple[int, tuple[str, ...]]] = []

    async def version_scores(users, item_ids, rows, version):  # v1 knows nothing; v2 knows the fans' taste
        scored_by.append(version)
        scored_items.append((version, tuple(item_ids)))
        fan = np.array(
            [u == "fan" and features.item(i).categories[0] == "horror" for u, i in zip(users, item_ids, strict=True)]
        )
        return np.where(fan, 0.9, 0.5) if version == 2 else np.full(len(users), 0.5)

    async def wait_for(condition) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the learner did not get there")

    async def run() -> None:
        learner.start(version_scores, lambda: serving["version"])
        events = [_event(k, "fan", f"i{k % 10}", "rating", k, 5.0 if k % 2 else 1.0) for k in range(200)] + [
            _event(1000 + k, "other", f"i{k % 10}", "rating", k, 3.0) for k in range(50)
        ]
        learner.fold(sorted(events, key=lambda e: e.timestamp_s))
        await wait_for(lambda: learner.correction.updates == 250)
        horror = learner.correction.coordinates("fan", items[1])
        on_v1 = learner.correction.value(horror, 0.0)
        assert learner.base_version == 1 and on_v1 > 1.0
        learner.forget("other", [e for e in events if e.user_id == "other"], [])
        serving["version"] = 2
        await wait_for(lambda: learner.rebases == 1)
        assert learner.base_version == 2 and scored_by[-1] == 2
        # Exactly what learning the kept examples from zero on version 2's logits gives, the forgotten user's gone.
        again = Correction(learner.config)  # ratings: calibration on
        for example, label, weight in learner.history.examples():
            base = logit(await version_scores([example.user], [example.item_id], None, 2))[0]
            coordinates = again.coordinates(example.user, features.item(example.item_id), example.row)
            again.learn(coordinates, base, label, weight)
        assert len(learner.history) == 200 and again.updates == 200
        assert learner.correction.value(horror, 0.0) < on_v1
        fan_on_v2 = float(logit(np.array([0.9]))[0])  # the logit weights (ratings: calibration on) are the same too
        assert learner.correction.value(horror, fan_on_v2) == again.value(horror, fan_on_v2)
        assert learner.correction.config.calibration
        # A list version 1 served, labelled after the switch: learned on version 2's logit, not on the one it was
        # served with (which would count again what version 2 absorbed).
        row = features.rows("fan", ["i3"], T0 + 500)
        learner.expose("fan", ["i3"], T0 + 500, np.array([0.5]), row, version=1)
        learner.fold([_event(2000, "fan", "i5", "rating", 501, 5.0)])
        await wait_for(lambda: learner.correction.updates == 202)
        assert (2, ("i3",)) in scored_items
        await learner.close()

    asyncio.run(run())


def test_calibration_is_on_only_where_every_label_is_final_at_once() -> None:
    assert OnlineConfig().resolved(LabelSpec(example_types=("rating",), attribution_window_s=0.0)).calibration
    assert not OnlineConfig().resolved(LabelSpec()).calibration  # views, negatives known an hour later
    assert OnlineConfig(calibration=True).resolved(LabelSpec()).calibration  # an explicit setting stands


def test_the_mixture_takes_the_behaviour_buckets_where_a_signal_means_the_opposite_and_leaves_them_elsewhere() -> None:
    """A re-buy shop served by a version that learned "bought before" means "will not buy": the member with
    behaviour buckets learns what the signal means here and the mixture moves to it, beating the members without
    them; where the version reads the signal right, the buckets' member gains nothing and the mixture stays
    within a little of the best member (no setting says which kind of shop this is)."""
    rng = np.random.default_rng(3)
    items = [Item(item_id=f"x{k}", categories=(f"c{k % 5}",)) for k in range(200)]
    width = len(FEATURE_NAMES)
    bought = FEATURE_NAMES.index("user_item_log_count")
    for flipped in (True, False):
        auto = Correction(OnlineConfig(bits=16, behaviour_buckets=None))
        plain = Correction(OnlineConfig(bits=16, behaviour_buckets=False))
        losses = {"auto": 0.0, "plain": 0.0}
        for step in range(6000):
            user, item = f"u{rng.integers(2000)}", items[rng.integers(len(items))]
            row = np.zeros(width)
            row[bought] = float(rng.integers(0, 3))  # 0, 1 or 2 (log) purchases of this item before
            truth = -1.5 + 1.5 * row[bought]  # this shop re-buys: the more bought before, the likelier
            label = float(rng.random() < 1 / (1 + math.exp(-truth)))
            base = -truth if flipped else truth  # the serving version's logit
            for name, c in (("auto", auto), ("plain", plain)):
                p = c.learn(c.coordinates(user, item, row), base, label)
                if step >= 3000:
                    losses[name] -= math.log(p if label else 1.0 - p)
        shares = auto.mixture()
        assert set(shares) == {"0.1", "0.3", "0.3+buckets"}
        if flipped:
            assert shares["0.3+buckets"] > 0.9, shares
            assert losses["auto"] < 0.9 * losses["plain"], losses
        else:
            assert losses["auto"] < 1.02 * losses["plain"], losses


def test_without_a_set_step_the_correction_follows_the_step_that_predicts_better() -> None:
    """Two users whose tastes flip every 40 examples: a large step follows them, a small one lags. The mixture
    moves its weight to the large step, and predicts at least as well as the better of the two alone."""
    shop = [Item(item_id=f"x{k}", categories=(f"c{k % 2}",)) for k in range(2)]
    mixed, small, large = (
        Correction(OnlineConfig(bits=14, alpha=a, behaviour_buckets=False)) for a in (None, 0.1, 0.3)
    )
    assert set(mixed.mixture()) == {f"{a:g}" for a in AUTO_ALPHAS} and small.mixture() == {"0.1": 1.0}
    losses = {id(c): 0.0 for c in (mixed, small, large)}
    for step in range(400):
        liked = (step // 40) % 2
        for user in ("a", "b"):
            for k, item in enumerate(shop):
                label = 1.0 if k == liked else 0.0
                for c in (mixed, small, large):
                    p = c.learn(c.coordinates(user, item), 0.0, label)
                    losses[id(c)] -= math.log(p if label else 1.0 - p)
    assert mixed.mixture()["0.3"] > 0.9
    assert losses[id(large)] < losses[id(small)]
    assert losses[id(mixed)] < losses[id(large)] + 0.05 * losses[id(large)]
    key = {"PREFTRACK_PSEUDONYM_KEY": "k" * 16}
    assert GatewayConfig.from_env({**key, "PREFTRACK_ONLINE_ALPHA": "auto"}).online_config().alpha is None
    assert GatewayConfig.from_env({**key, "PREFTRACK_ONLINE_ALPHA": "0.2"}).online_config().alpha == 0.2


def test_calibration_learns_how_far_to_trust_the_version_for_each_user() -> None:
    """The version is sure about both users; it is right about "reader" and a coin toss for "guesser". With
    calibration, the guesser's own weight on the version's logit takes the sureness out of their scores."""
    rng = np.random.default_rng(1)
    items = [Item(item_id=f"i{k}", categories=(f"c{k % 50}",)) for k in range(2000)]
    calibrated = Correction(OnlineConfig(bits=18, calibration=True))
    plain = Correction(OnlineConfig(bits=18, calibration=False))
    for step in range(6000):
        user = "reader" if step % 2 else "guesser"
        item = items[rng.integers(len(items))]  # mostly new items: crosses cannot carry it
        base = float(rng.choice([-3.0, 3.0]))
        y = float(base > 0) if user == "reader" else float(rng.random() < 0.5)
        for correction in (calibrated, plain):
            correction.learn(correction.coordinates(user, item), base, y)
    fresh = Item(item_id="never-seen", categories=("c-new",))
    guesser = [
        float(sigmoid(np.array(3.0 + c.value(c.coordinates("guesser", fresh), 3.0)))) for c in (calibrated, plain)
    ]
    reader = float(sigmoid(np.array(3.0 + calibrated.value(calibrated.coordinates("reader", fresh), 3.0))))
    assert guesser[0] < 0.7 < guesser[1]  # plain: only a bias, which cannot tell a sure "yes" from a sure "no"
    assert reader > 0.9
    # Scoring many items at once (Recommend) gives what scoring each gives, the scaled weights included.
    shown = [items[5], fresh, Item(item_id="i5-twin", categories=("c5", "c5"), attributes=(("brand", "b"),))]
    rows = [[float(k)] * NUM_FEATURES for k in range(3)]
    base = np.array([2.0, -1.0, 0.5])
    one_by_one = [
        calibrated.value(calibrated.coordinates("guesser", i, r), b) for i, r, b in zip(shown, rows, base, strict=True)
    ]
    assert np.allclose(calibrated.offsets("guesser", shown, rows, base), one_by_one)


def test_many_items_are_corrected_from_the_table_as_one_by_one() -> None:
    # From _TABLE_FROM items on, offsets() gathers the items' coordinates from a table; the same corrections as the
    # item-by-item path, with and without calibration, after an item's catalogue entry changed, and after a snapshot.
    rng = np.random.default_rng(0)
    items = [
        Item(
            item_id=f"i{k}",
            categories=tuple(f"c{c}" for c in rng.integers(0, 5, size=1 + k % 3)),  # repeats included
            attributes=tuple((f"a{j}", f"v{rng.integers(0, 3)}") for j in range(k % 3)),
        )
        for k in range(300)  # more than the table's first 256 rows: it grows
    ] + [Item(item_id=f"unknown-{k}") for k in range(10)]
    rows = rng.normal(size=(len(items), NUM_FEATURES))
    base = rng.normal(size=len(items))
    for calibration in (False, True):
        correction = Correction(OnlineConfig(calibration=calibration, bits=12))
        for _ in range(400):
            user, k = f"u{rng.integers(0, 8)}", int(rng.integers(0, len(items)))
            coordinates = correction.coordinates(user, items[k], rows[k])
            correction.learn(coordinates, float(rng.normal()), float(rng.random() < 0.3))

        def one_by_one(user: str, correction: Correction = correction) -> np.ndarray:
            return np.array(
                [
                    correction.offsets(user, items[k : k + 1], rows[k : k + 1], base[k : k + 1])[0]
                    for k in range(len(items))
                ]
            )

        for user in ("u1", "u5", "never-seen"):
            table = correction.offsets(user, items, rows, base)
            assert np.abs(table).max() > 0.1
            np.testing.assert_allclose(table, one_by_one(user), atol=1e-12)
        items[3] = Item(item_id="i3", categories=("c9",), attributes=(("a0", "new"), ("a1", "v0"), ("a2", "v1")))
        correction.forget_items(["i3"])
        np.testing.assert_allclose(correction.offsets("u1", items, rows, base), one_by_one("u1"), atol=1e-12)
        loaded = pickle.loads(pickle.dumps(correction))
        np.testing.assert_allclose(loaded.offsets("u1", items, rows, base), one_by_one("u1"), atol=1e-12)
        # An item with more categories than the table takes is corrected item by item, and the table stays narrow.
        items[5] = Item(item_id="wide", categories=tuple(f"c{k}" for k in range(40)))
        np.testing.assert_allclose(correction.offsets("u1", items, rows, base), one_by_one("u1"), atol=1e-12)
        assert correction._table.own.shape[1] <= 16 and correction._table.text.shape[1] <= 16


def test_a_flood_teaches_the_shared_weights_nothing_and_its_ids_their_own_weights_all_of_it() -> None:
    """Shoppers at a human pace (a view every 20 s) and two ids streaming a view and a purchase every 10 ms,
    folded in chunks of 100 with the learner running in between, as the gateway does. The shoppers' examples teach
    the shared weights fully and the bots' not at all: the bias and the categories end exactly where the shoppers
    alone leave them, while each bot's own weights learn its taste. The trainer's examples (``build_examples``)
    carry the same influence, each as the gateway counts it."""
    items = [Item(item_id=f"i{k}", categories=(f"c{k % 3}",)) for k in range(30)]
    people = [_event(n, f"p{n % 10}", f"i{n % 30}", "purchase" if n % 3 == 0 else "view", 20.0 * n) for n in range(300)]
    bots = []
    for n in range(2000):
        user, item, t = f"bot{n % 2}", f"i{n // 2 % 30}", 6000.0 + 0.01 * n
        bots += [
            _event(10_000 + 2 * n, user, item, "view", t),
            _event(10_001 + 2 * n, user, item, "purchase", t + 0.005),
        ]
    closer = [_event(99_999, "clock", "i0", "click", 30_000.0)]  # every window after this is over

    async def learn(events: list[Event]) -> OnlineLearner:
        features = FeatureState(SHOP)
        for item in items:
            features.upsert_item(item)
        learner = OnlineLearner(features, VIEWS, OnlineConfig(bits=16))

        async def base(users, item_ids, rows, version):
            return np.full(len(users), 0.3)

        learner.start(base, lambda: 1)
        for start in range(0, len(events), 100):
            learner.fold(events[start : start + 100])
            await asyncio.sleep(0)
        for _ in range(500):
            if not learner._ready and not learner._held:
                break
            await asyncio.sleep(0.01)
        await learner.close()
        assert not learner._held
        return learner

    people_only = asyncio.run(learn([*people, *closer]))
    flooded = asyncio.run(learn([*people, *bots, *closer]))
    shared = [0, *(people_only.correction._hash(f"c\x1fc{k}") for k in range(3))]  # the bias, the categories
    np.testing.assert_array_equal(flooded.correction._w[:, shared], people_only.correction._w[:, shared])
    assert np.abs(people_only.correction._w[:, shared]).max() > 0.1  # the shoppers did teach them
    bot_bias = flooded.correction._hash("u\x1fbot0")
    assert flooded.correction._w[:, bot_bias].min() > 0.5  # a bot's own weights learned that it buys what it views
    # The trainer weighs the same examples alike.
    examples, _ = build_examples([*people, *bots, *closer], {i.item_id: i for i in items}, spec=SHOP, labels=VIEWS)
    triples = zip(examples.users, examples.timestamp_s - T0, examples.weights(), strict=True)
    offline = {(u, round(float(t), 3)): float(w) for u, t, w in triples}
    online = {(e.user, round(e.timestamp_s - T0, 3)): w for e, _, w in flooded.history.examples()}
    assert offline == online
    assert {w for (u, _), w in online.items() if u.startswith("p")} == {1.0}
    assert {w for (u, _), w in online.items() if u.startswith("bot")} == {0.0}
    assert influence(0) == 1.0 and influence(float("inf")) == 0.0
