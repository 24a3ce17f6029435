"""Evaluation metrics reported for every run and stored with every version."""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm


def _ranking(users: Sequence[str], labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k, ranking each user's held-out rows by score.

    Only users with at least one positive and one negative count. HR@k is the share of those users with a
    positive in their top k; NDCG@k is the usual binary-relevance NDCG, averaged over the same users.
    """
    by_user: dict[str, list[int]] = collections.defaultdict(list)
    for index, user in enumerate(users):
        by_user[user].append(index)
    hits: list[float] = []
    ndcgs: list[float] = []
    for rows in by_user.values():
        y = labels[rows]
        if y.min() == y.max():
            continue
        order = np.argsort(-scores[rows], kind="stable")[:k]
        top = y[order]
        hits.append(float(top.max()))
        dcg = sum(float(rel) / math.log2(rank + 2) for rank, rel in enumerate(top))
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, int(y.sum()))))
        ndcgs.append(dcg / ideal)
    if not hits:
        return float("nan"), float("nan")
    return float(np.mean(hits)), float(np.mean(ndcgs))


def evaluate(
    labels: np.ndarray, scores: np.ndarray, users: Sequence[str] | None = None, *, k: int = 10
) -> dict[str, float]:
    """AUC, log loss, accuracy, precision, recall, F1 (threshold 0.5) and, with ``users``, HR@k and NDCG@k.

    >>> m = evaluate(np.array([0, 1, 0, 1.0]), np.array([0.1, 0.9, 0.4, 0.6]))
    >>> m["auc"], m["accuracy"]
    (1.0, 1.0)
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    predicted = p >= 0.5
    two_classes = 0 < y.sum() < len(y)
    out = {
        "n": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "auc": float(skm.roc_auc_score(y, p)) if two_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "accuracy": float(skm.accuracy_score(y, predicted)) if len(y) else float("nan"),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
    }
    if users is not None:
        out[f"hr@{k}"], out[f"ndcg@{k}"] = _ranking(users, y, p, k)
    return out


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC of any real-valued scores (a rule's counts as well as probabilities: nothing is clipped); ties count
    half; nan without both classes.

    >>> auc(np.array([0, 1, 0, 1]), np.array([0.0, 3.5, 1.0, 1.0]))
    0.875
    """
    y = np.asarray(labels, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        return float("nan")
    return float(skm.roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def choice_metrics(scores: Sequence[float], chosen: int, k: int = 10) -> tuple[float, float]:
    """Hit@1 and NDCG@k of the candidate at index ``chosen`` when the candidates are ranked by ``scores``.

    Tied candidates are taken in a random order: both numbers are their expectations over it, so a scorer that
    ties everything gets ``1/n`` hit@1, not 1 (the chosen item is the only relevant one: the ideal DCG is 1).

    >>> choice_metrics([0.9, 0.5, 0.1], 0), choice_metrics([0.9, 0.5, 0.1], 2)
    ((1.0, 1.0), (0.0, 0.5))
    >>> hit, ndcg = choice_metrics([0.5, 0.5], 1)
    >>> hit, round(ndcg, 4)
    (0.5, 0.8155)
    """
    mine = scores[chosen]
    above = sum(1 for s in scores if s > mine)
    tied = sum(1 for s in scores if s == mine)
    hit = 1.0 / tied if above == 0 else 0.0
    ndcg = sum(1.0 / math.log2(p + 2) for p in range(above, min(above + tied, k))) / tied
    return hit, ndcg


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A markdown table: one row per named result, one column per metric."""
    header = "| model | " + " | ".join(columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    body = [
        f"| {name} | " + " | ".join(f"{values.get(c, float('nan')):.4f}" for c in columns) + " |"
        for name, values in rows.items()
    ]
    return "\n".join([header, rule, *body])
