"""How fast the per-event layer adapts to a shop unlike the one version 1 learned from.

The synthetic shop turns into a consumables shop at its middle (``repeat_after_drift``): users come back to
what they bought and buy it again, which version 1, trained on the first half, never saw. Version 1 is then
frozen; beside it, the same version with the per-event correction learning after every labelled example (the
gateway's :class:`~preftrack_gateway.online.Correction`, with and without behaviour-feature buckets), and the
per-user rules of :mod:`preftrack_dev.rules` scored on the same stream. Prints AUC per window of the second half
and how many events the correction needed to lead the frozen version by 0.02 AUC (windows of ``--window``
examples).

    .venv/bin/python bench/bench_adaptation.py [--repeat 0.5] [--drift-fraction 0.5] [--window 1000] [--alpha A]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Callable

import numpy as np

from preftrack_dev import rules
from preftrack_gateway.online import OnlineConfig, logit, sigmoid
from preftrack_trainer import metrics, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.online_eval import label_times, prequential_correction
from preftrack_trainer.pipeline import dataset_specs
from preftrack_trainer.preprocess import build_examples, clean


def _model_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return metrics.evaluate(labels, scores)["auc"]


def _windows(
    labels: np.ndarray, scores: np.ndarray, size: int, auc: Callable[[np.ndarray, np.ndarray], float] = _model_auc
) -> list[float]:
    out = []
    for start in range(0, len(labels) - size + 1, size):
        y, p = labels[start : start + size], scores[start : start + size]
        out.append(auc(y, p) if 0 < y.sum() < len(y) else float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=float, default=0.5, help="share of post-drift views that are re-buys")
    parser.add_argument("--window", type=int, default=1000, help="examples per AUC window")
    parser.add_argument("--drift-fraction", type=float, default=0.5, help="share of users whose tastes are redrawn")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--alpha", type=float, default=None, help="one FTRL step (default: 0.1 and 0.3, mixed)")
    args = parser.parse_args()
    shop = synthetic.generate(
        synthetic.SyntheticConfig(repeat_after_drift=args.repeat, drift_fraction=args.drift_fraction, seed=args.seed)
    )
    events, _ = clean(shop.events)
    spec, labels = dataset_specs("synthetic")
    examples, _ = build_examples(events, shop.items, spec=spec, labels=labels)
    drift = shop.truth.drift_time_s
    n_warm = int((examples.timestamp_s < drift).sum())
    warm = examples.take(np.arange(n_warm))
    cfg = model.ModelConfig(epochs=3)
    v1 = model.build_model(cfg, *model.fit_normalisation(warm.features))
    model.train(v1, warm, cfg)
    base = logit(model.predict(v1, examples))
    known_at = label_times(examples, events, spec, labels)  # learned from once the gateway would know the label
    live = examples.label[n_warm:]

    def layer(buckets: bool | None) -> np.ndarray:
        """The per-event layer's prequential scores on version 1, with behaviour buckets on, off or chosen online."""
        config = OnlineConfig(alpha=args.alpha, behaviour_buckets=buckets)
        return prequential_correction(examples, base, n_warm, shop.items, config, known_at=known_at, labels=labels)

    rows = {
        "version 1 frozen": sigmoid(base[n_warm:]),
        "v1 + per-event layer (auto: buckets chosen online)": layer(None),
        "v1 + per-event layer (ids, crosses)": layer(False),
        "v1 + per-event layer (+ behaviour buckets)": layer(True),
    }
    print(
        f"drift: {args.drift_fraction:.0%} of users' tastes redrawn, re-buys {args.repeat:.0%} of views after it; "
        f"{n_warm} warm examples, {len(live)} live\n"
    )
    windows = {name: _windows(live, scores, args.window) for name, scores in rows.items()}
    # The rules' scores are ranks, not probabilities: their AUC is read unclipped.
    rule_scores = {name: s[n_warm:] for name, s in rules.prequential_scores(events, shop.items, spec, labels).items()}
    rule_windows = {name: _windows(live, scores, args.window, metrics.auc) for name, scores in rule_scores.items()}
    rule_aucs = {name: metrics.auc(live, scores) for name, scores in rule_scores.items()}
    n = len(next(iter(windows.values())))
    print("| model | AUC (second half) | " + " | ".join(f"w{k + 1}" for k in range(n)) + " |")
    print("|---|---|" + "---|" * n)
    for name, scores in rows.items():
        auc = metrics.evaluate(live, scores)["auc"]
        print(f"| {name} | {auc:.4f} | " + " | ".join(f"{a:.3f}" for a in windows[name]) + " |")
    for name, auc in rule_aucs.items():
        print(f"| {name} | {auc:.4f} | " + " | ".join(f"{a:.3f}" for a in rule_windows[name]) + " |")
    frozen = np.array(windows["version 1 frozen"])
    summary = []
    for name in list(rows)[1:]:
        lead = np.array(windows[name]) - frozen
        ahead = np.flatnonzero(lead >= 0.02)
        events = (int(ahead[0]) + 1) * args.window if len(ahead) else None
        summary.append(f"{name}: leads by >= 0.02 AUC after {events} examples")
        print(f"\n{summary[-1]}")
    aucs = {name: metrics.evaluate(live, scores)["auc"] for name, scores in rows.items()}
    keys = ("frozen", "auto", "ids", "buckets")
    named = dict(zip(keys, aucs.values(), strict=True))
    pairs = [f"{k}_auc={named[k]:.4f}" for k in ("frozen", "ids", "buckets")]  # the line's first fields, as before
    pairs += [f"{rule.key}_auc={rule_aucs[rule.name]:.4f}" for rule in rules.RULES]
    pairs.append(f"auto_auc={named['auto']:.4f}")  # the default layer, buckets chosen online
    print("\nbench_adaptation " + " ".join(pairs))
    if aucs["v1 + per-event layer (ids, crosses)"] <= aucs["version 1 frozen"]:  # the default layer
        raise SystemExit("the per-event layer did not beat the frozen version: adaptation failed")


if __name__ == "__main__":
    main()
