"""Quality on MovieLens-100k, temporal split: our MLP beside item popularity and Vowpal Wabbit.

The first ``--train-fraction`` of the time span trains, the rest tests; label: rating >= 4. All models see
the same split. Our MLP's weights are frozen after training, but its behaviour features keep updating through
the test slice exactly as the gateway's real-time features would (each row still only sees its past).
Vowpal Wabbit is shown two ways: frozen after the training slice (same protocol as ours) and learning after
every test event (the per-event online learner the lifelong loop must beat). The per-user rules of
:mod:`preftrack_dev.rules` are scored prequentially on the same stream (each test rating from the ratings before
it; AUC only: their scores are ranks).

    .venv/bin/python bench/bench_quality.py [--epochs 3] [--train-fraction 0.8] [--l2 1e-6] [--embedding-dim 16]
        [--without-attributes]

The MLP reads the users' attributes (age band, gender, occupation, zip region) and the movies' (genres after
the first, release year and decade) as the gateway would give them; ``--without-attributes`` leaves every
attribute slot empty, for the comparison.

Prints a markdown table and a final ``name=value`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from preftrack_dev import rules
from preftrack_gateway.features import FeatureState
from preftrack_gateway.online import logit
from preftrack_trainer import metrics, model
from preftrack_trainer.data import movielens
from preftrack_trainer.online_eval import prequential_correction
from preftrack_trainer.pipeline import dataset_specs, popularity_scores, user_tokens
from preftrack_trainer.preprocess import build_examples, clean

VW_ARGS = "--loss_function logistic --link logistic -l 0.5 -q ui -q uu -b 22 --quiet"


def _vw_line(data: movielens.MovieLens, user: str, item: str, label: float | None) -> str:
    """The same information preftrack's model gets: user and item ids, the user's attributes (age band, gender,
    occupation, region), the item's genres and release year."""
    u = " ".join(f"{name}={value}" for name, value in sorted(data.users.get(user, {}).items()))
    genres = " ".join(f"g={g.replace(':', '_')}" for g in data.items[item].categories)
    year = data.item_attributes.get(item, {}).get("year", "") or "none"
    head = "" if label is None else ("1 " if label > 0 else "-1 ")
    return f"{head}|u user={user} {u} |i item={item} {genres} year={year}"


def vowpal_wabbit(data, train_rows, test_rows, *, online: bool) -> np.ndarray:
    """Train VW on the training rows (time order), then score the test rows (learning after each if online)."""
    from vowpalwabbit import Workspace

    ws = Workspace(VW_ARGS)
    for user, item, y in train_rows:
        ws.learn(_vw_line(data, user, item, y))
    scores = []
    for user, item, y in test_rows:
        scores.append(float(ws.predict(_vw_line(data, user, item, None))))
        if online:
            ws.learn(_vw_line(data, user, item, y))
    ws.finish()
    return np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-fraction", type=float, default=0.8)
    parser.add_argument("--l2", type=float, default=model.ModelConfig.l2, help="L2 on embeddings and weights")
    parser.add_argument("--embedding-dim", type=int, default=model.ModelConfig.embedding_dim)
    parser.add_argument("--without-attributes", action="store_true", help="empty attribute slots (for comparison)")
    args = parser.parse_args()

    data = movielens.load()
    events, _ = clean(data.events, bot_events_per_hour=None)
    spec, labels = dataset_specs("movielens")
    state = FeatureState(spec, data.items, users=user_tokens(data.users))  # plain tokens: an offline run
    examples, _ = build_examples(events, data.items, spec=spec, labels=labels, state=state)
    if args.without_attributes:
        examples = dataclasses.replace(examples, attributes=np.zeros_like(examples.attributes))
    train, test = examples.split_by_time(args.train_fraction)
    results: dict[str, dict[str, float]] = {}

    start = time.perf_counter()
    cfg = model.ModelConfig(epochs=args.epochs, l2=args.l2, embedding_dim=args.embedding_dim)
    mean, std = model.fit_normalisation(train.features)
    mlp = model.build_model(cfg, mean, std)
    model.train(mlp, train, cfg)
    results["preftrack MLP (frozen weights, real-time features)"] = metrics.evaluate(
        test.label, model.predict(mlp, test), test.users
    )
    mlp_s = time.perf_counter() - start
    # The gateway's per-event layer on top of the frozen MLP: it learns the training slice, then each test
    # example right after scoring it (ratings are labelled at once), as the live system does.
    base = logit(model.predict(mlp, examples))  # examples are in time order; the test slice is their tail
    layer = prequential_correction(examples, base, len(examples) - len(test), data.items, labels=labels)
    results["preftrack MLP + per-event layer (learns per test event)"] = metrics.evaluate(test.label, layer, test.users)

    results["item popularity"] = metrics.evaluate(test.label, popularity_scores(train, test), test.users)
    train_rows = list(zip(train.users, train.items, train.label, strict=True))
    test_rows = list(zip(test.users, test.items, test.label, strict=True))
    results["Vowpal Wabbit (frozen after train)"] = metrics.evaluate(
        test.label, vowpal_wabbit(data, train_rows, test_rows, online=False), test.users
    )
    results["Vowpal Wabbit (learns per test event)"] = metrics.evaluate(
        test.label, vowpal_wabbit(data, train_rows, test_rows, online=True), test.users
    )
    print(
        f"MovieLens-100k, temporal split {args.train_fraction:.0%}/{1 - args.train_fraction:.0%}: "
        f"{len(train)} train, {len(test)} test examples, positive rate {test.label.mean():.3f}\n"
    )
    rule_aucs = {
        rule: metrics.auc(test.label, scores[len(examples) - len(test) :])
        for rule, scores in rules.prequential_scores(events, data.items, spec, labels).items()
    }
    table = {**results, **{name: {"auc": auc} for name, auc in rule_aucs.items()}}
    print(metrics.format_table(table, ("auc", "log_loss", "accuracy", "f1", "hr@10", "ndcg@10")))
    names = ["mlp", "mlp_per_event", "popularity", "vw_frozen", "vw_online"]
    pairs = " ".join(f"{n}_auc={r['auc']:.4f}" for n, r in zip(names, results.values(), strict=True))
    pairs += "".join(f" {rule.key}_auc={rule_aucs[rule.name]:.4f}" for rule in rules.RULES)
    print(
        f"\nbench_quality {pairs} mlp_train_s={mlp_s:.1f} epochs={args.epochs} attributes={not args.without_attributes}"
    )


if __name__ == "__main__":
    main()
