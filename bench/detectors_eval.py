"""How good the detectors are: ``creditwatch evaluate`` from the bench, plus the tree sweep.

Run: ``.venv/bin/python -m bench.detectors_eval [evaluate options] [--hst-sweep]``

Without ``--hst-sweep`` this is exactly ``creditwatch evaluate`` (same
options: ``--customers``, ``--months``, ``--seed``, ``--scenario``,
``--copies``, ``--budget``, ``--horizon-days``, ``--out``): a labelled
simulated stream scored prequentially, one table row per detector and label.

``--hst-sweep`` runs the same stream once per Half-Space Trees shape (tree
count x height) with everything else as registered, and reports the
population detector's quality against confirmed fraud (ROC AUC, precision at
the alert budget, recall of its own flags) beside its cost (µs per call of
its step: scoring, threshold, learning). The registry's shape is chosen from
this table and ``bench/detectors_cost.py``'s.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from bench.detectors_cost import TimedStack
from creditwatch import evaluate
from detectors.registry import REGISTRY

SHAPES = ((3, 4), (3, 5), (5, 4), (5, 5), (5, 6), (10, 6), (10, 8))


def hst_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    scenarios = tuple(args.scenario) if args.scenario else evaluate.DEFAULT_SCENARIOS
    events, truths = evaluate.simulate(
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        scenarios=scenarios,
        copies=args.copies,
    )
    labels = evaluate.labels_from(events, truths, horizon_days=args.horizon_days)
    rows = []
    for n_trees, height in SHAPES:
        spec = REGISTRY["population_anomaly"].with_params(n_trees=n_trees, height=height)
        stack = TimedStack(specs={**REGISTRY, "population_anomaly": spec})
        report = evaluate.evaluate(events, labels, stack=stack, budget=args.budget)
        fraud = next(
            r
            for r in report["rows"]
            if r["detector"] == "population_anomaly" and r["label"] == "fraud"
        )
        calls = stack.calls["population_anomaly"]
        row = {
            "n_trees": n_trees,
            "height": height,
            "auc": fraud["auc"],
            "precision_at_budget": fraud["precision_at_budget"],
            "recall_at_flags": fraud["recall_at_flags"],
            "precision_at_flags": fraud["precision_at_flags"],
            "us_per_call": round(stack.spent["population_anomaly"] / calls * 1e6, 2),
        }
        rows.append(row)
        print(
            f"trees {n_trees:>2} height {height}: AUC {row['auc']}, "
            f"P@budget {row['precision_at_budget']}, R@flags {row['recall_at_flags']}, "
            f"P@flags {row['precision_at_flags']}, {row['us_per_call']} µs/call",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sweep = "--hst-sweep" in argv
    argv = [a for a in argv if a != "--hst-sweep"]
    parser = argparse.ArgumentParser(prog="bench.detectors_eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate.add_parser(sub)
    args = parser.parse_args(["evaluate", *argv])
    if not sweep:
        return evaluate.run(args)
    rows = hst_sweep(args)
    if args.out:
        with open(args.out, "wb") as fh:
            fh.write(orjson.dumps({"hst_sweep": rows}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
