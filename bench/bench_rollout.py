"""How much live feedback a rollout needs to decide, on the synthetic shop, through the real stack.

Triton and a gateway (SQLite) run with the production rollout settings except the outcome window (1 s, since
the simulated shoppers answer at once): canary 10% of users, 2,000 labelled shown items per arm before any
statistical decision, a 5% non-inferiority margin, 95% always-valid intervals. Simulated shoppers
(:mod:`preftrack_dev.shoppers`) ask for 5 of 30 items and buy each with their ground-truth preference.

Three candidates follow each other:
1. better: the stable version 1 was trained on shuffled labels; version 2 on the real ones. Must be promoted.
2. worse: version 3, the shuffled-label model again, against version 2. Must be rolled back.
3. equal: version 4, a copy of version 2. Reported: decided or not within ``--equal-budget`` served lists.
Prints, per candidate, the decision and the lists, feedback events and labelled outcomes it took. Exits 1 when
the better one was not promoted or the worse one not rolled back (within ``--budget`` lists each).

    .venv/bin/python bench/bench_rollout.py [--fraction 0.1] [--min-outcomes 2000] [--budget 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from preftrack.admin import AdminClient
from preftrack_dev.process import GatewayProcess
from preftrack_dev.shoppers import Shoppers, register_exported
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway.features import FeatureSpec
from preftrack_trainer import export, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import LabelSpec, build_examples, clean

SHOP = synthetic.SyntheticConfig(n_users=400, n_items=200, n_categories=6, days=8, seed=41, dirty_fraction=0.0)


def _models() -> tuple[object, object]:
    shop = synthetic.generate(SHOP)
    events, _ = clean(shop.events)
    examples, _ = build_examples(events, shop.items, spec=FeatureSpec(), labels=LabelSpec())
    cfg = model.ModelConfig(epochs=3)
    good = model.build_model(cfg, *model.fit_normalisation(examples.features))
    model.train(good, examples, cfg)
    shuffled = dataclasses.replace(examples, label=np.random.default_rng(5).permutation(examples.label))
    bad_cfg = model.ModelConfig(epochs=1, seed=3)
    bad = model.build_model(bad_cfg, *model.fit_normalisation(shuffled.features))
    model.train(bad, shuffled, bad_cfg)
    return good, bad


def _state(admin: AdminClient, version: int) -> str:
    return next((v.state for v in admin.versions() if v.version == version), "")


def _run_candidate(shoppers: Shoppers, admin: AdminClient, version: int, budget: int) -> dict[str, object]:
    while _state(admin, version) in ("", "exported", "loading"):
        shoppers.visit(5)
    lists0, sent0, started = shoppers.lists, shoppers.sent, time.perf_counter()
    while _state(admin, version) in ("canary", "shadow") and shoppers.lists - lists0 < budget:
        shoppers.visit(20)
    state = _state(admin, version)
    decision = next(
        (e for e in reversed(admin.journal(version=version, kind="transition")) if e.details.get("to") == state), None
    )
    if decision is None or "arms" not in decision.details:  # undecided: the numbers of the last check
        checks = admin.journal(version=version, kind="check")
        decision = checks[-1] if checks else None
    details = decision.details if decision is not None else {}
    arms = details.get("arms") or {}
    comparison = details.get("comparison") or {}
    return {
        "version": version,
        "state": state,
        "lists": shoppers.lists - lists0,
        "feedback events": shoppers.sent - sent0,
        "outcomes stable": (arms.get("stable") or {}).get("outcomes", "-"),
        "outcomes canary": (arms.get("canary") or {}).get("outcomes", "-"),
        "rate stable": (arms.get("stable") or {}).get("positive_rate", float("nan")),
        "rate canary": (arms.get("canary") or {}).get("positive_rate", float("nan")),
        "interval": (comparison.get("low", float("nan")), comparison.get("high", float("nan"))),
        "seconds": time.perf_counter() - started,
    }


def _decision(row: dict[str, object]) -> str:
    state = str(row["state"])
    return {"serving": "promoted", "rolled_back": "rolled back"}.get(state, f"undecided ({state})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--min-outcomes", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=20_000, help="most served lists a better/worse rollout may take")
    parser.add_argument("--equal-budget", type=int, default=6_000, help="served lists given to the equal candidate")
    args = parser.parse_args()
    good, bad = _models()
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    repository, store_url = work / "repo", f"sqlite:///{work / 'events.db'}"
    metadata = {"parent": None, **export.schema_metadata(FeatureSpec(), LabelSpec())}
    export.export_version(bad, repository, metadata)
    export.export_version(good, repository, {**metadata, "parent": 1})  # version 2
    shutil.copytree(repository / "preftrack" / "1", repository / "preftrack" / "3")
    shutil.copytree(repository / "preftrack" / "2", repository / "preftrack" / "4")
    # Triton loads the newest version at start: keep only version 1 visible until it serves.
    hidden = work / "hidden"
    hidden.mkdir()
    for version in (2, 3, 4):
        shutil.move(repository / "preftrack" / str(version), hidden / str(version))
    rows = []
    with TritonServer(TritonConfig(repository=repository, work_dir=work / "triton")) as triton:
        env = {
            "PREFTRACK_TRITON_URL": triton.grpc_url,
            "PREFTRACK_STORE_URL": store_url,
            "PREFTRACK_PSEUDONYM_KEY": "bench-rollout-pseudonym-key",
            "PREFTRACK_MODEL_REPOSITORY": str(repository),
            "PREFTRACK_ROLLOUT_FRACTION": str(args.fraction),
            "PREFTRACK_ROLLOUT_MIN_OUTCOMES": str(args.min_outcomes),
            "PREFTRACK_ROLLOUT_WINDOW_S": "1",
            "PREFTRACK_ROLLOUT_CHECK_S": "1",
            "PREFTRACK_ONLINE_LEARNING": "false",
            "PREFTRACK_HEALTH_INTERVAL_S": "0.5",
        }
        with GatewayProcess(env, work / "gateway.log") as gateway, AdminClient(gateway.target) as admin:
            shoppers = Shoppers(gateway.target, SHOP)
            shoppers.load_history()
            for version, parent, budget in ((2, 1, args.budget), (3, 2, args.budget), (4, 2, args.equal_budget)):
                shutil.move(hidden / str(version), repository / "preftrack" / str(version))
                register_exported(store_url, version, parent=parent, actor="bench_rollout")
                rows.append(_run_candidate(shoppers, admin, version, budget))
                if rows[-1]["state"] in ("canary", "shadow"):
                    admin.roll_back("bench: budget spent")
            shoppers.close()
    names = ("better", "worse", "equal")
    print(f"\nrollout decisions (canary {args.fraction:.0%}, min {args.min_outcomes} outcomes per arm, margin 5%):")
    print(
        "| candidate | decision | lists served | feedback events | outcomes stable / canary | rate stable / canary "
        "| interval of the difference | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in zip(names, rows, strict=True):
        low, high = row["interval"]
        print(
            f"| {name} (v{row['version']}) | {_decision(row)} | {row['lists']} | {row['feedback events']} | "
            f"{row['outcomes stable']} / {row['outcomes canary']} | {row['rate stable']:.3f} / "
            f"{row['rate canary']:.3f} | [{low:+.3f}, {high:+.3f}] | {row['seconds']:.0f} |"
        )
    failures = []
    if rows[0]["state"] != "serving":
        failures.append(f"the better candidate was not promoted (state {rows[0]['state']})")
    if rows[1]["state"] != "rolled_back":
        failures.append(f"the worse candidate was not rolled back (state {rows[1]['state']})")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
