"""A flood from a few ids: how far it moves the scores of users and items it never touched.

Three measurements, in-process (no servers; the base model is a constant probability, so every move is the
per-event layer's or the trainer's):

- ``locust``: the README's Locust run as `make up` meets it: an empty shop, 16 ids each streaming batches of 200
  random events (views, clicks, carts, purchases) over 500 items, folded in time-ordered chunks of 100 with the
  learner running in between, as the gateway does. Scores of two new users on the catalogue, a new item of a
  known category and one of a new category, before and after.
- ``shop``: a shop of 200 shoppers at a human pace (a view every ~20 s), then 4 ids streaming 20,000 views each
  followed by a purchase. Scores of known and new users on the flooded items, untouched ones and a new category's.
- ``trainer`` (``--trainer``, TensorFlow): version 1 trained on 6 hours of 400 shoppers, then one continual round
  (warm start, one epoch, as many replayed examples as new ones) on the next hours with the flood in them,
  weighted as the trainer weighs them, unweighted (as before the weights), and without the flood at all.

    .venv/bin/python bench/bench_flood.py [--trainer]

Prints one ``bench_flood`` line (largest moves of the untouched scores).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from preftrack_gateway.features import FeatureSpec, FeatureState, LabelSpec
from preftrack_gateway.learner import OnlineLearner
from preftrack_gateway.online import OnlineConfig
from preftrack_gateway.schema import Event, Item

T0 = 1.8e9
BASE_P = 0.2
KINDS = ("view", "view", "view", "click", "add_to_cart", "purchase")  # the locustfile's mix


class _Events:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, user: str, item: str, kind: str, t: float) -> Event:
        self.n += 1
        return Event(event_id=str(self.n), user_id=user, item_id=item, event_type=kind, value=1.0, timestamp_s=t)


def _shoppers(make: _Events, rng: np.random.Generator, users: int, hours: float) -> list[Event]:
    """Shoppers at a human pace: a view every ~20 s, a purchase of 40% of their favourite category's views and 5%
    of the others', a few seconds to two minutes later."""
    out = []
    for u in range(users):
        t, favourite = T0 + rng.uniform(0, hours * 3600), rng.integers(12)
        for _ in range(int(rng.integers(5, 30))):
            k = int(rng.integers(500))
            t += rng.exponential(20.0)
            out.append(make(f"shopper-{u}", f"item-{k}", "view", t))
            if rng.random() < (0.4 if k % 12 == favourite else 0.05):
                out.append(make(f"shopper-{u}", f"item-{k}", "purchase", t + rng.uniform(5, 120)))
    return sorted(out, key=lambda e: e.timestamp_s)


def _catalogue() -> list[Item]:
    return [
        *(Item(item_id=f"item-{k}", categories=(f"cat-{k % 12}",), price=5.0 + k % 50) for k in range(500)),
        *(Item(item_id=f"untouched-{k}", categories=(f"cat-{k % 12}",), price=10.0) for k in range(24)),
        Item(item_id="new-category-item", categories=("cat-new",), price=10.0),
    ]


async def _run_layer(events_before: list[Event], flood: list[Event], probes: dict[str, list[str]]) -> dict:
    """Scores of ``probes`` (user -> items) before and after the flood, with the gateway's learner."""
    features = FeatureState(FeatureSpec())
    for item in _catalogue():
        features.upsert_item(item)
    learner = OnlineLearner(features, LabelSpec(), OnlineConfig())

    async def base(users, item_ids, rows, version):
        return np.full(len(users), BASE_P)

    async def settle() -> None:
        while learner.status()["ready"]:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)  # a turn of the learner's loop: held shared steps whose minute is over

    def scores(t: float) -> dict[str, np.ndarray]:
        return {
            user: learner.adjust(user, items, np.full(len(items), BASE_P, np.float32), features.matrix(user, items, t))
            for user, items in probes.items()
        }

    learner.start(base, lambda: 1)
    for start in range(0, len(events_before), 500):
        learner.fold(events_before[start : start + 500])
    await settle()
    t = max([e.timestamp_s for e in events_before], default=T0)
    before = scores(t + 1)
    for start in range(0, len(flood), 100):  # the gateway folds a commit in time-ordered chunks of 100
        learner.fold(flood[start : start + 100])
        await asyncio.sleep(0)
    end = flood[-1].timestamp_s
    learner.fold([Event(event_id="clock", user_id="clock", item_id="x", event_type="click", timestamp_s=end + 120)])
    await settle()
    after = scores(end + 121)
    await learner.close()
    return {"before": before, "after": after, "status": learner.status()}


def _locust() -> float:
    rng, make = np.random.default_rng(0), _Events()
    flood, t = [], T0
    for _ in range(22_000 // 200):  # ~350,000 events, as the 75 s run
        for u in range(16):
            batch = []
            for _ in range(200):
                t += 2e-4
                batch.append(make(f"load-user-{u}", f"item-{int(rng.integers(500))}", KINDS[int(rng.integers(6))], t))
            flood += batch
    untouched = [f"untouched-{k}" for k in range(24)] + ["new-category-item"]
    probes = {user: untouched for user in ("new-user", "another-new-user")}
    result = asyncio.run(_run_layer([], flood, probes))
    worst = 0.0
    for user in probes:
        move = result["after"][user] - result["before"][user]
        worst = max(worst, float(np.abs(move).max()))
        print(
            f"locust: {user}: untouched items {result['before'][user].mean():.4f} -> {result['after'][user].mean():.4f}"
        )
    print(f"locust: {len(flood)} events, {result['status']['updates']} updates; largest move {worst:.4f}")
    return worst


def _shop() -> float:
    rng, make = np.random.default_rng(0), _Events()
    shoppers = _shoppers(make, rng, 200, 6)
    shoppers.append(make("closer", "item-0", "click", shoppers[-1].timestamp_s + 4000))  # windows closed
    start, flood = shoppers[-1].timestamp_s + 10, []
    for k in range(20_000):
        user, item, t = f"bot-{k % 4}", f"item-{int(rng.integers(500))}", start + k * 1e-4
        flood += [make(user, item, "view", t), make(user, item, "purchase", t + 5e-5)]
    untouched = [f"untouched-{k}" for k in range(24)] + ["new-category-item"]
    probes = {f"shopper-{u}": untouched for u in range(0, 200, 20)} | {"new-user": untouched}
    result = asyncio.run(_run_layer(shoppers, flood, probes))
    moves = np.concatenate([result["after"][u] - result["before"][u] for u in probes])
    before = np.concatenate([result["before"][u] for u in probes])
    print(
        f"shop: untouched scores of known and new users: mean {before.mean():.4f} -> {(before + moves).mean():.4f}, "
        f"largest move {np.abs(moves).max():.4f}"
    )
    return float(np.abs(moves).max())


def _trainer() -> tuple[float, float, float]:
    from preftrack_trainer import model
    from preftrack_trainer.preprocess import Examples, build_examples, model_inputs

    rng, make = np.random.default_rng(0), _Events()
    events = _shoppers(make, rng, 400, 8)
    for k in range(20_000):
        user, item, t = f"bot-{k % 4}", f"item-{k // 4 % 500}", T0 + 7 * 3600 + k * 1e-3
        events += [make(user, item, "view", t), make(user, item, "purchase", t + 5e-4)]
    events.append(make("closer", "item-0", "click", T0 + 12 * 3600))
    events.sort(key=lambda e: e.timestamp_s)
    catalogue = {item.item_id: item for item in _catalogue()}
    examples, state = build_examples(events, catalogue, spec=FeatureSpec(), labels=LabelSpec())
    old = examples.timestamp_s < T0 + 6 * 3600
    first = examples.take(old)
    v1 = model.build_model(model.ModelConfig(epochs=2), *model.fit_normalisation(first.features))
    model.train(v1, first, model.ModelConfig(epochs=2))
    users = [f"shopper-{u}" for u in range(0, 400, 40)] + ["new-user"]
    items = [catalogue[f"untouched-{k}"] for k in range(24)] + [catalogue["new-category-item"]]
    rows = np.concatenate([state.matrix(u, [i.item_id for i in items], T0 + 12 * 3600 + 10) for u in users])
    pairs = [(u, i) for u in users for i in items]
    inputs = model_inputs([u for u, _ in pairs], [i for _, i in pairs], rows)
    blank = {"label": np.zeros(len(pairs), np.float32), "timestamp_s": np.zeros(len(pairs))}
    probe = Examples(**inputs, **blank, users=[u for u, _ in pairs], items=[i.item_id for _, i in pairs])
    p1 = model.predict(v1, probe)
    new = examples.take(~old)
    people = np.array([not u.startswith("bot") for u in new.users])
    replay = first.take(rng.choice(len(first), min(len(first), len(new)), replace=False))
    moves = []
    for name, train_set in (
        ("weighted", Examples.concat([new, replay])),
        ("unweighted", Examples.concat([dataclasses.replace(e, influence=None) for e in (new, replay)])),
        ("without the flood", Examples.concat([new.take(people), replay])),
    ):
        candidate = model.keras.models.clone_model(v1)
        candidate.set_weights(v1.get_weights())
        candidate.compile(optimizer=model.keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        model.train(candidate, train_set, model.ModelConfig(epochs=1, seed=1))
        move = model.predict(candidate, probe) - p1
        moves.append(float(np.abs(move).max()))
        print(
            f"trainer, {name}: untouched scores {p1.mean():.4f} -> {p1.mean() + move.mean():.4f}, mean move "
            f"{np.abs(move).mean():.4f}, largest {moves[-1]:.4f}"
        )
    return moves[0], moves[1], moves[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", action="store_true", help="also a continual round (TensorFlow, ~20 s)")
    args = parser.parse_args()
    line = f"bench_flood locust_max_move={_locust():.4f} shop_max_move={_shop():.4f}"
    if args.trainer:
        weighted, unweighted, without = _trainer()
        line += f" trainer_max_move={weighted:.4f} unweighted={unweighted:.4f} without_flood={without:.4f}"
    print(line)


if __name__ == "__main__":
    main()
