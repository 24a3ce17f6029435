"""Search-aware ranking and audiences through the live stack (Triton + gateway), on a synthetic shop with
searches, against its ground truth.

1. A model is trained on the first 80 % of the shop (its rows carry the query features of the searches before
   each view) and served by Triton behind a gateway.
2. **Search.** The shop's events are sent in time order; after each held-out search that the same user's
   purchases follow within 30 minutes, Recommend ranks the whole catalogue as of the search, with the query
   and without it. NDCG@10 and hit rate@10 of the purchased items; beside them, the model's probabilities with
   the query (Score, without Recommend's relevance tiers), and ranking by the query's words alone (the share of
   its words in the item's text, ties by popularity).
3. **Audiences.** For the items bought most after the split, RankAudience ranks every user as of the split;
   AUC of the buyers against the rest, beside ranking users by their activity.
4. **Bounded memory.** One RankAudience of ``--audience-users`` users (the shop's and made-up ids), the
   gateway's peak RSS growth over it (VmHWM).

    .venv/bin/python bench/bench_insights.py [--users 1500] [--search-fraction 0.4] [--cases 400]

Exits non-zero when the search uplift is under +20 % relative NDCG@10, when no held-out search was found, or
when the audience's RSS growth is over 100 MiB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import preftrack
from preftrack.insights import InsightsClient
from preftrack_dev import insight_eval
from preftrack_dev.process import GatewayProcess
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.schema import query_terms
from preftrack_trainer import export, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import build_examples, clean


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def _reset_peak(pid: int) -> None:
    """Reset VmHWM (Linux >= 4.0: writing 5 to clear_refs), so the peak is the audience's own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _text_only(shop: synthetic.SyntheticShop, events: list, cases: list[insight_eval.SearchCase]) -> float:
    """NDCG@10 of ranking by the share of the query's words in each item's text, ties by purchases before."""
    terms = {i: item.terms() for i, item in shop.items.items()}
    times = [e.timestamp_s for e in events]
    order = np.argsort(times, kind="stable")
    bought: dict[str, float] = dict.fromkeys(shop.items, 0.0)
    position = 0
    scores = []
    for case in sorted(cases, key=lambda c: c.time_s):
        while position < len(order) and events[order[position]].timestamp_s <= case.time_s:
            e = events[order[position]]
            if e.event_type == "purchase" and e.item_id in bought:
                bought[e.item_id] += 1.0
            position += 1
        query = query_terms(case.query)
        ranked = sorted(shop.items, key=lambda i: (-sum(t in terms[i] for t in query) / len(query), -bought[i], i))
        scores.append(insight_eval.ndcg_at(ranked, case.bought))
    return float(np.mean(scores))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--search-fraction", type=float, default=0.4)
    parser.add_argument("--cases", type=int, default=400, help="held-out searches asked (the earliest)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--audience-users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--search-negatives", type=int, default=LabelSpec().search_negatives)
    args = parser.parse_args()

    config = synthetic.SyntheticConfig(
        n_users=args.users, n_items=args.items, search_fraction=args.search_fraction, seed=args.seed
    )
    shop = synthetic.generate(config)
    events, _ = clean(shop.events)
    events = [e for e in events if e.user_id != synthetic.BOT_USER_ID]
    split = float(np.quantile([e.timestamp_s for e in events], 0.8))
    cases = insight_eval.search_cases(shop, events, after_s=split)[: args.cases]
    if not cases:
        print("FAILED: no held-out search followed by a purchase; nothing was measured", file=sys.stderr)
        return 1
    started = time.perf_counter()
    labels = LabelSpec(search_negatives=args.search_negatives)
    examples, _ = build_examples(events, shop.items, spec=FeatureSpec(), labels=labels)
    train = examples.take(examples.timestamp_s < split)
    cfg = model.ModelConfig(epochs=args.epochs)
    mean, std = model.fit_normalisation(train.features)
    mlp = model.build_model(cfg, mean, std)
    model.train(mlp, train, cfg)
    print(f"trained on {len(train.label)} examples in {time.perf_counter() - started:.0f} s")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repository = work / "repo"
        meta = {"parent": None, "dataset": "synthetic-search", **export.schema_metadata(FeatureSpec(), labels)}
        export.export_version(mlp, repository, meta)
        with TritonServer(TritonConfig(repository=repository, work_dir=work / "triton")) as triton:
            env = {
                "PREFTRACK_TRITON_URL": triton.grpc_url,
                "PREFTRACK_STORE_URL": f"sqlite:///{work / 'events.db'}",
                "PREFTRACK_PSEUDONYM_KEY": "bench-insights-key-0123456789",
                "PREFTRACK_MODEL_REPOSITORY": str(repository),
            }
            with GatewayProcess(env, work / "gateway.log") as gateway:
                with preftrack.Client(gateway.target, timeout_s=120) as client:
                    search = insight_eval.evaluate_search(client, shop, events, cases)
                last = max(c.time_s for c in cases)
                with InsightsClient(gateway.target, timeout_s=600) as insights:
                    audiences = insight_eval.evaluate_audiences(insights, events, split_s=last)
                    ids = sorted({e.user_id for e in events})
                    everyone = (ids + [f"prospect-{n}" for n in range(args.audience_users)])[: args.audience_users]
                    _reset_peak(gateway.pid)
                    before = _rss_kib(gateway.pid, "VmRSS")
                    begun = time.perf_counter()
                    target = sorted(cases[0].bought)[0]
                    ranked = sum(1 for _ in insights.iter_audience(everyone, item_id=target, as_of_s=last))
                    took = time.perf_counter() - begun
                    growth_mib = (_rss_kib(gateway.pid, "VmHWM") - before) / 1024
    text_only = _text_only(shop, events, cases)
    print()
    print(f"search: {search.cases} held-out searches followed by a purchase (seed {args.seed}, {args.users} users)")
    print("| ranking | NDCG@10 | hit rate@10 |")
    print("|---|---|---|")
    print(f"| Recommend with the query | {search.ndcg_with:.4f} | {search.hits_with:.4f} |")
    print(f"| Recommend without it | {search.ndcg_without:.4f} | {search.hits_without:.4f} |")
    print(f"| Score with the query (the model's probabilities alone) | {search.ndcg_scores_with:.4f} | - |")
    print(f"| the query's words alone (offline) | {text_only:.4f} | - |")
    print(f"relative NDCG@10 uplift with the query: {search.uplift:+.1%}")
    print()
    print(f"audiences: {audiences.items} items, {audiences.users} users")
    print(f"| ranking | AUC |\n|---|---|\n| RankAudience (the model) | {audiences.auc_model:.4f} |")
    print(f"| user activity before the split | {audiences.auc_activity:.4f} |")
    print()
    print(f"RankAudience of {ranked} users: {took:.1f} s, gateway peak RSS growth {growth_mib:.1f} MiB")
    failures = []
    if search.uplift < 0.2:
        failures.append(f"search uplift {search.uplift:+.1%} is under +20%")
    if growth_mib > 100:
        failures.append(f"audience RSS growth {growth_mib:.0f} MiB is over 100 MiB")
    if ranked != len(everyone):
        failures.append(f"{ranked} of {len(everyone)} users ranked")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
