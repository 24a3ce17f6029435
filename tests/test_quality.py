"""The model recovers the synthetic shop's ground truth."""

from __future__ import annotations

import numpy as np

from preftrack_trainer import metrics, model
from preftrack_trainer.model import INPUT_NAMES
from preftrack_trainer.preprocess import model_inputs

from .conftest import Trained


def test_holdout_auc_is_far_above_random(trained: Trained) -> None:
    scores = model.predict(trained.keras_model, trained.test)
    result = metrics.evaluate(trained.test.label, scores, trained.test.users)
    assert result["auc"] > 0.68, result
    assert scores.min() >= 0.0 and scores.max() <= 1.0


def test_top_ranked_category_matches_ground_truth_for_most_users(trained: Trained) -> None:
    truth = trained.shop.truth
    items = list(trained.shop.items.values())
    categories = np.array([truth.categories.index(i.primary_category) for i in items])
    t_end = float(trained.test.timestamp_s.max())
    users = list(truth.user_ids[:200])
    matches = 0
    for user in users:
        rows = np.array([trained.state.row(user, item.item_id, t_end) for item in items], dtype=np.float32)
        inputs = model_inputs([user] * len(items), items, rows)
        scores = trained.keras_model.predict([inputs[name] for name in INPUT_NAMES], verbose=0).reshape(-1)
        per_category = np.array([scores[categories == c].mean() for c in range(len(truth.categories))])
        matches += truth.categories[int(np.argmax(per_category))] == truth.favourite_category(user, t_end)
    share = matches / len(users)
    # Chance is 1 / 8; "most users" means more than half.
    assert share > 0.5, f"top category matched for only {share:.0%} of {len(users)} users"
