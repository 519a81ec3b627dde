"""What the detectors cost: µs per event, per detector and for the whole stack.

Run: ``.venv/bin/python -m bench.detectors_cost [--customers 300] [--months 2]``

A seeded simulated book is decoded once; customer states are kept up to date
with ``risk.engine.Engine.apply`` exactly as the worker does, and only the
detector work (feature extraction, scoring, thresholding, learning, the
default model's snapshots and labels) is timed, before each event is applied.

1. **stack**: ``Stack.observe`` per event, whole stack, µs per event over all
   events and over the events that reach a detector; median and best of
   ``--repeat`` runs (the best is the intrinsic cost on a shared, noisy
   machine; the median what a busy one gives). Python's garbage collector
   runs as it would in the worker, so part of each figure is collection of
   the engine's garbage.
2. **per detector**: the same run with each step timed on its own (the
   shared feature extraction is its own line), µs per call and per event.
3. **Half-Space Trees sweep**: learn + score of one ``PopulationAnomaly`` on
   the book's transaction features for several tree counts and heights; the
   registry's choice (5 trees of height 6) comes from this table.
4. **state size**: JSON bytes of each per-customer model at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from typing import Any

import orjson

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, generate_book
from detectors import stack as stack_module
from detectors.features import event_x
from detectors.population import PopulationAnomaly
from detectors.stack import Stack
from risk.customer import CustomerState
from risk.engine import Engine
from schemas.codec import decode_event


class TimedStack(Stack):
    """A stack that adds up the time of each step by detector."""

    def __init__(self) -> None:
        super().__init__()
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _timed(self, name: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        out = fn(*args)
        self.spent[name] += time.perf_counter() - started
        self.calls[name] += 1
        return out

    def _customer_step(self, name, x, det, segment):  # type: ignore[no-untyped-def]
        return self._timed(name, super()._customer_step, name, x, det, segment)

    def _shared_step(self, name, x, segment):  # type: ignore[no-untyped-def]
        return self._timed(name, super()._shared_step, name, x, segment)

    def _pd_step(self, event, st, det, segment):  # type: ignore[no-untyped-def]
        return self._timed("default_probability", super()._pd_step, event, st, det, segment)


def replay(events: list[Any], stack: Stack) -> tuple[float, int, dict[str, dict]]:
    """Run the book; return seconds spent in ``stack.observe``, events it did work on, models."""
    engine = Engine(Settings())
    states: dict[str, CustomerState] = {}
    det: dict[str, dict] = {}
    spent = 0.0
    busy = 0
    for ev in events:
        st = states.get(ev.customer_id)
        if st is None:
            st = states[ev.customer_id] = CustomerState(customer_id=ev.customer_id)
        models = det.setdefault(ev.customer_id, {})
        started = time.perf_counter()
        findings = stack.observe(ev, st, models)
        spent += time.perf_counter() - started
        busy += bool(findings)
        engine.apply(st, ev)
    return spent, busy, det


def feature_cost(events: list[Any]) -> tuple[float, int, list[dict[str, Any]]]:
    engine = Engine(Settings())
    states: dict[str, CustomerState] = {}
    spent = 0.0
    xs: list[dict[str, Any]] = []
    for ev in events:
        st = states.setdefault(ev.customer_id, CustomerState(customer_id=ev.customer_id))
        started = time.perf_counter()
        x = event_x(ev, st)
        spent += time.perf_counter() - started
        if x is not None and ev.type == "transaction.posted":
            xs.append(x)
        engine.apply(st, ev)
    return spent, len(xs), xs


def hst_sweep(xs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n_trees in (5, 10, 25):
        for height in (4, 6, 8, 10):
            det = PopulationAnomaly(n_trees=n_trees, height=height, seed=1)
            started = time.perf_counter()
            for x in xs:
                det.score_one(x)
                det.learn_one(x)
            us = (time.perf_counter() - started) / len(xs) * 1e6
            rows.append({"n_trees": n_trees, "height": height, "us_per_event": round(us, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="whole-stack runs (median and best)")
    args = parser.parse_args()

    book = generate_book(BookConfig(seed=args.seed, customers=args.customers, months=args.months))
    events = [decode_event(orjson.dumps(e)) for e in book]
    n = len(events)

    runs = [replay(events, Stack()) for _ in range(args.repeat)]
    spent = statistics.median(r[0] for r in runs)
    best = min(r[0] for r in runs)
    busy = runs[0][1]
    det = runs[0][2]

    timed = TimedStack()
    replay(events, timed)
    x_spent, n_tx, xs = feature_cost(events)
    per_detector = {
        name: {
            "calls": timed.calls[name],
            "us_per_call": round(timed.spent[name] / timed.calls[name] * 1e6, 2),
            "us_per_event": round(timed.spent[name] / n * 1e6, 2),
        }
        for name in timed.calls
    }
    per_detector["features (event_x)"] = {
        "calls": n,
        "us_per_call": round(x_spent / n * 1e6, 2),
        "us_per_event": round(x_spent / n * 1e6, 2),
    }
    sizes: dict[str, list[int]] = defaultdict(list)
    for models in det.values():
        for name, model in models.items():
            sizes[name].append(len(orjson.dumps(model)))
    report = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "events": n,
        "transactions": n_tx,
        "customers": args.customers,
        "whole_stack_us_per_event": round(spent / n * 1e6, 2),
        "whole_stack_us_per_event_best_run": round(best / n * 1e6, 2),
        "whole_stack_us_per_scored_event": round(spent / busy * 1e6, 2),
        "scored_events": busy,
        "per_detector": per_detector,
        "hst_sweep": hst_sweep(xs),
        "hst_choice": {
            "n_trees": stack_module.REGISTRY["population_anomaly"].build().n_trees,  # type: ignore[attr-defined]
            "height": stack_module.REGISTRY["population_anomaly"].build().height,  # type: ignore[attr-defined]
        },
        "customer_model_bytes": {
            name: {"mean": round(statistics.mean(v)), "max": max(v)} for name, v in sizes.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
