"""The harsh taste drift offline: what the continual versions and the per-event layer each add over version 1.

The shop of ``tests/test_replay.py``'s drift test (250 users, every user's taste redrawn where the live half
starts). Version 1 is trained on the first half of the events, as the replay does; then, in the stream's order:

- version 1 frozen;
- version 1 with the per-event layer (what the live system is if no new version ever ships);
- continual versions: every ``--round`` examples, the examples of the round are scored by the model of the
  moment and then trained on (warm start, ``--epochs``, with ``--replay-fraction`` past examples per new one),
  as the continual trainer does; no gate, labels taken as known at the round's end;
- the continual versions with the per-event layer learned again on each new version's logits from every example
  so far (what the gateway does when another version starts serving), then scoring and learning through the
  round.

Beside them, the per-user rules of :mod:`preftrack_dev.rules` on the same stream (they learn nothing from a seed:
printed once, seed ``-``). Prints AUC over the live half, over its last third, and per sixth. A seed changes only
the models' initial weights and shuffling (the shop stays the same): version 1's luck is most of the spread
between seeds.

``--dataset movielens`` runs the same on MovieLens-100k with the replay's settings for ratings (version 1: one
epoch; rounds of 4,000 examples, one epoch at Adam 3e-4): the offline analogue of
``preftrack-dev replay --dataset movielens --rate 300 --learning-rate 3e-4``, in about 3 minutes per seed
against 8 for the replay.

    .venv/bin/python bench/bench_drift.py [--dataset synthetic|movielens] [--seeds 0 1 2] [--alpha 0.1]
        [--replay-fraction 1.0] [--epochs 2] [--round 1000] [--learning-rate 1e-3]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Callable

import numpy as np

from preftrack_dev import rules
from preftrack_gateway.features import FeatureState
from preftrack_gateway.online import OnlineConfig, logit, sigmoid
from preftrack_gateway.schema import Event, Item
from preftrack_trainer import metrics, model
from preftrack_trainer.data import movielens, synthetic
from preftrack_trainer.online_eval import label_times, prequential_correction
from preftrack_trainer.pipeline import dataset_specs, user_tokens
from preftrack_trainer.preprocess import Examples, build_examples, clean

#: The drift test's shop (tests/test_replay.py): every user's taste redrawn halfway through.
HARSH_DRIFT = synthetic.SyntheticConfig(
    n_users=250, n_items=120, days=12, sessions_per_user=10, drift_at=0.5, drift_fraction=1.0, seed=5
)


def _model_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return metrics.evaluate(labels, scores)["auc"]


def _sixths(
    labels: np.ndarray, scores: np.ndarray, auc: Callable[[np.ndarray, np.ndarray], float] = _model_auc
) -> list[float]:
    n = len(labels)
    return [auc(labels[k * n // 6 : (k + 1) * n // 6], scores[k * n // 6 : (k + 1) * n // 6]) for k in range(6)]


def _rule_rows(events: list[Event], items: dict[str, Item], dataset: str, n_warm: int, live: np.ndarray) -> str:
    """Print each rule's row (AUC unclipped: its scores are ranks); returns their ``name=value`` fields."""
    spec, labels = dataset_specs(dataset)
    fields = []
    scored = rules.prequential_scores(events, items, spec, labels)
    for rule in rules.RULES:
        scores = scored[rule.name][n_warm:]
        sixths = _sixths(live, scores, metrics.auc)
        auc, last_third = metrics.auc(live, scores), float(np.mean(sixths[4:]))
        print(f"| - | {rule.name} | {auc:.4f} | {last_third:.4f} | " + " | ".join(f"{a:.3f}" for a in sixths) + " |")
        fields.append(f"{rule.key}_auc={auc:.4f} {rule.key}_last_third={last_third:.4f}")
    return " ".join(fields)


#: Per dataset, the replay's settings: version 1's epochs, and a continual round's examples, epochs and step.
_DEFAULTS = {"synthetic": (3, 1000, 2, 1e-3), "movielens": (1, 4000, 1, 3e-4)}


def _load(dataset: str) -> tuple[Examples, list[Event], dict[str, Item], np.ndarray | None]:
    """The dataset's examples, its events, its catalogue, and when each label is known (None: at once)."""
    spec, labels = dataset_specs(dataset)
    if dataset == "movielens":
        data = movielens.load()
        events, _ = clean(data.events, bot_events_per_hour=None)
        state = FeatureState(spec, data.items, users=user_tokens(data.users))  # plain tokens: an offline run
        examples, _ = build_examples(events, data.items, spec=spec, labels=labels, state=state)
        return examples, events, data.items, None  # ratings: final at once
    shop = synthetic.generate(HARSH_DRIFT)
    events, _ = clean(shop.events)
    examples, _ = build_examples(events, shop.items, spec=spec, labels=labels)
    return examples, events, shop.items, label_times(examples, events, spec, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(_DEFAULTS), default="synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--alpha", type=float, default=None, help="one FTRL step (default: 0.1 and 0.3, mixed)")
    parser.add_argument("--replay-fraction", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, help="epochs per continual round (default: the replay's)")
    parser.add_argument("--round", type=int, help="examples per continual round (default: the replay's)")
    parser.add_argument("--learning-rate", type=float, help="Adam's, in the continual rounds (default: the replay's)")
    args = parser.parse_args()
    v1_epochs, round_size, epochs, learning_rate = _DEFAULTS[args.dataset]
    round_size = round_size if args.round is None else args.round
    epochs = epochs if args.epochs is None else args.epochs
    learning_rate = learning_rate if args.learning_rate is None else args.learning_rate
    _, labels = dataset_specs(args.dataset)
    examples, events, items, known_at = _load(args.dataset)
    n_warm = int((examples.timestamp_s < events[len(events) // 2].timestamp_s).sum())
    warm = examples.take(np.arange(n_warm))
    layer = OnlineConfig(alpha=args.alpha)
    live = examples.label[n_warm:]
    print(f"{n_warm} warm examples, {len(live)} live; layer step {args.alpha or '0.1 and 0.3, mixed'}\n")
    print("| seed | model | AUC | last third | " + " | ".join(f"w{k + 1}" for k in range(6)) + " |")
    print("|---|---|---|---|" + "---|" * 6)
    rule_fields = _rule_rows(events, items, args.dataset, n_warm, live)
    summary = []
    for seed in args.seeds:
        config = model.ModelConfig(epochs=v1_epochs, seed=seed)
        v1 = model.build_model(config, *model.fit_normalisation(warm.features))
        model.train(v1, warm, config)
        base = logit(model.predict(v1, examples))
        current = model.build_model(config, *model.fit_normalisation(warm.features))
        current.set_weights(v1.get_weights())
        current.compile(optimizer=model.keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
        rng = np.random.default_rng(seed)
        continual, relearned = base.copy(), np.zeros(len(examples))
        for start in range(n_warm, len(examples), round_size):
            end = min(start + round_size, len(examples))
            so_far = examples.take(np.arange(end))
            logits = logit(model.predict(current, so_far))
            continual[start:end] = logits[start:end]
            relearned[start:end] = prequential_correction(
                so_far,
                logits,
                start,
                items,
                layer,
                known_at=None if known_at is None else known_at[:end],
                labels=labels,
            )
            n_replay = int(args.replay_fraction * (end - start))
            parts = [examples.take(np.arange(start, end))]
            if n_replay:
                parts.append(examples.take(rng.choice(start, size=n_replay, replace=False)))
            model.train(current, Examples.concat(parts), model.ModelConfig(epochs=epochs, seed=seed))
        rows = {
            "version 1 frozen": sigmoid(base[n_warm:]),
            "v1 + per-event layer": prequential_correction(
                examples, base, n_warm, items, layer, known_at=known_at, labels=labels
            ),
            "continual versions": sigmoid(continual[n_warm:]),
            "continual versions + per-event layer": relearned[n_warm:],
        }
        aucs = {}
        for name, scores in rows.items():
            sixths = _sixths(live, scores)
            aucs[name] = (metrics.evaluate(live, scores)["auc"], float(np.mean(sixths[4:])))
            print(
                f"| {seed} | {name} | {aucs[name][0]:.4f} | {aucs[name][1]:.4f} | "
                + " | ".join(f"{a:.3f}" for a in sixths)
                + " |"
            )
        learned, frozen = aucs["continual versions + per-event layer"], aucs["version 1 frozen"]
        summary.append(
            f"seed{seed}_lead={learned[0] - frozen[0]:+.4f} seed{seed}_last_third_lead={learned[1] - frozen[1]:+.4f}"
        )
    print(f"\nbench_drift dataset={args.dataset} " + " ".join([*summary, rule_fields]))


if __name__ == "__main__":
    main()
