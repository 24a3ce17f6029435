"""Prequential replays through the whole live stack: Triton, the gateway, the continual trainer process."""

from __future__ import annotations

import math

import numpy as np
import pytest

from preftrack_dev import rules
from preftrack_dev.replay import ReplayConfig, run
from preftrack_trainer.data import synthetic

pytestmark = pytest.mark.e2e

# Every user's preferences are redrawn when the live part starts: the frozen model's knowledge goes stale.
DRIFTING_SHOP = synthetic.SyntheticConfig(
    n_users=250, n_items=120, days=12, sessions_per_user=10, drift_at=0.5, drift_fraction=1.0, seed=5
)


# At its middle the shop turns into a consumables shop: users come back to what they bought and buy it again,
# which version 1 (trained before that) never saw. The live part starts just before the change.
CONSUMABLES = synthetic.SyntheticConfig(seed=9, repeat_after_drift=0.5)


def test_the_live_system_learns_a_shop_unlike_the_one_version_1_knew(tmp_path) -> None:
    report = run(
        ReplayConfig(
            dataset="synthetic",
            synthetic=CONSUMABLES,
            warm_fraction=0.35,  # ends before the change (about 38% of the events come before it)
            rate_events_s=2000,
            trigger_examples=400,
            trigger_seconds=2,
            # ~60 events/s here (a user's next event waits for the previous one's feedback): ~100 s, time for
            # the trainer process to train rounds and for the gateway to load and switch to new versions.
            limit_events=6000,
            n_windows=4,
            out_dir=tmp_path,
            progress=False,
        )
    )
    live, frozen = report.rows["preftrack live (learning)"], report.rows["preftrack frozen at v1"]
    # Measured (docs/benchmarks.md): live 0.814 vs frozen 0.797 AUC, log loss 0.544 vs 0.609. Asserted: about half.
    assert live["auc"] > frozen["auc"] + 0.008, report.markdown
    assert live["log_loss"] < frozen["log_loss"] - 0.03, report.markdown
    models = {
        "preftrack live (learning)",
        "preftrack frozen at v1",
        "v1 + per-event layer (no new versions)",
        "item popularity (online)",
        "Vowpal Wabbit (per event)",
    }
    assert set(report.rows) == models | {rule.name for rule in rules.RULES}
    assert all(0.5 < report.rows[name]["auc"] < 1.0 for name in models), report.markdown
    assert report.rows["preftrack frozen at v1"]["auc"] > 0.55, report.markdown
    assert report.n_events == 6000 and report.rate_events_s > 50
    assert report.versions_shipped + report.versions_rejected >= 1, report.markdown
    assert report.freshness_features_s["p50"] < 0.5
    assert (tmp_path / "report.md").read_text().startswith("Prequential replay of synthetic")
    assert report.plot is not None and report.plot.stat().st_size > 10_000
    assert all(len(values) == 4 for values in report.windows.values())
    assert not math.isnan(report.rows["preftrack live (learning)"]["log_loss"])


def test_a_movielens_replay_ships_versions_trained_on_the_ratings_settings(tmp_path) -> None:
    """The gateway, the trainer and every version share MovieLens' settings (ratings, no positive event types)."""
    report = run(
        ReplayConfig(
            dataset="movielens",
            # 10,000 ratings train version 1 (~20 s with loading them). The replay is held to 80 events/s (it
            # reached 148 unpaced, and ended before a continual version served): 3,000 events last ~40 s, and a
            # continual version serves after ~20-30 s (Triton loads it in ~10-20 s under load).
            warm_fraction=0.1,
            rate_events_s=80,
            trigger_examples=1000,
            trigger_seconds=3,
            learning_rate=3e-4,  # as in the MovieLens benchmark
            # The gate judges ~200 held-out ratings per round here: generous margins, as this test is about the
            # settings every process shares (the gate has its own test in test_lifelong.py).
            auc_margin=0.05,
            log_loss_margin=0.05,
            limit_events=3000,
            n_windows=2,
            out_dir=tmp_path,
            progress=False,
        )
    )
    assert report.versions_shipped >= 1 and report.versions_refused == 0, report.markdown
    assert max(report.scores_by_version) > 1, report.scores_by_version  # a continual version served scores
    live, frozen = report.rows["preftrack live (learning)"]["auc"], report.rows["preftrack frozen at v1"]["auc"]
    # Measured (docs/benchmarks.md): live 0.741 / 0.737 / 0.745, frozen 0.725 / 0.721 / 0.721. Asserted: learning
    # beats the frozen system by half the smallest measured margin. Vowpal Wabbit per event, given the users' and
    # movies' attributes too, scored 0.739 on this short stream; the live system led it by 0.006 in the last run
    # (and by 0.009 on the whole second half): asserted is that it is not behind by more than this test's noise.
    assert live > frozen + 0.008, report.markdown
    assert live > report.rows["Vowpal Wabbit (per event)"]["auc"] - 0.005, report.markdown


def test_after_a_drift_the_learning_system_leads_the_frozen_one(tmp_path) -> None:
    report = run(
        ReplayConfig(
            dataset="synthetic",
            synthetic=DRIFTING_SHOP,
            rate_events_s=600,
            trigger_examples=1000,
            trigger_seconds=5,
            n_windows=6,
            out_dir=tmp_path,
            progress=False,
        )
    )
    live = np.array(report.windows["preftrack live (learning)"])
    frozen = np.array(report.windows["preftrack frozen at v1"])
    assert report.versions_shipped >= 1 and report.versions_refused == 0, report.markdown
    # Measured (docs/benchmarks.md, seven runs of session 8): live - frozen +0.010 to +0.012 AUC over the live stream,
    # +0.018 to +0.022 in its last third, where the live system also leads version 1 with the per-event layer alone
    # by +0.007 to +0.012 (the new versions add to what the layer learns). Both recover, because the frozen model's
    # real-time features move too. The margins asserted are about half the smallest measurements.
    overall = report.rows["preftrack live (learning)"]["auc"] - report.rows["preftrack frozen at v1"]["auc"]
    assert overall > 0.005, report.markdown
    late = slice(2 * len(live) // 3, None)
    assert live[late].mean() - frozen[late].mean() > 0.009, report.markdown
    per_event_only = np.array(report.windows["v1 + per-event layer (no new versions)"])
    assert live[late].mean() - per_event_only[late].mean() > 0.003, report.markdown
    assert live[-1] > live[0] and frozen[-1] > frozen[0], report.markdown
