"""What the rule engine costs per event: the default pack over a simulated book.

Run: ``.venv/bin/python -m bench.rules_eval [--customers 300] [--months 2] [--repeat 3]``

A seeded book (``creditwatch.simulate``) is decoded with the edge decoder and
run through the real engine (``risk.engine.Engine``, its built-in threshold
warnings off, as when a rule set is in charge) in event-time order, the way
the processing path (``risk.judge``) judges it:

- each input event is captured for, applied with ``Engine.apply`` and judged;
- before a servicing event, and at every UTC midnight the stream crosses (the
  worker's DPD tick) for each customer whose arrears can still grow, each of
  the customer's local midnights since the state's instant is judged as a
  ``tick`` around ``Engine.advance``;
- the related-party events a step announces (``related.exposure``,
  ``related.default``) are decoded with the internal decoder and judged for
  the related customer at once, as replay does.

Only the rule work is timed, per judged event, and exactly the calls the
processing path makes around the engine step:

- ``capture``: the values some rules compare with, read before the step;
- ``view`` + ``evaluate``: the lazy feature view after the step, and every
  rule that applies to the event's type (hits with their explanations).

The engine's own work is timed separately, for scale only. Each event is timed
with ``perf_counter_ns``; every pass re-runs the whole book from empty states,
and the pass with the lowest mean is reported: mean, p50 and p99 per event
type and overall. The budget is 50 µs per event; the exit status is 1 when the
overall mean is over it. Figures move with whatever else the machine runs:
compare runs made back to back.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any

import orjson

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.customer import CustomerState
from risk.engine import CLOCK_EVENTS, Engine, Outcome
from risk.store import needs_tick
from rules.engine import CompiledRuleSet
from rules.features import Tick
from rules.loader import load_default
from schemas.codec import decode_event
from schemas.internal import decode_internal

BUDGET_US = 50.0
Step = Callable[[CustomerState], tuple[CustomerState, Outcome]]


@dataclass(slots=True)
class Pass:
    """The timings of one pass over the book."""

    rule_ns: dict[str, list[int]] = field(default_factory=dict)  # by event type
    engine_ns: list[int] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)

    def all(self) -> list[int]:
        return [t for ts in self.rule_ns.values() for t in ts]


def run_pass(events: list[Any], engine: Engine, rules: CompiledRuleSet) -> Pass:
    """One pass over ``events`` from empty states, judging every step the worker judges."""
    states: dict[str, CustomerState] = {}
    result = Pass()
    clock = time.perf_counter_ns

    def judge(event: Any, step: Step) -> Outcome:
        state = states.get(event.customer_id)
        if state is None:  # the processing path creates it before judging, untimed
            state = CustomerState(customer_id=event.customer_id)
        t0 = clock()
        before = rules.capture(state, engine, event)
        t1 = clock()
        state, out = step(state)
        t2 = clock()
        verdict = rules.evaluate(event, rules.view(state, engine, event, before), None)
        t3 = clock()
        states[event.customer_id] = state
        result.rule_ns.setdefault(event.type, []).append((t1 - t0) + (t3 - t2))
        result.engine_ns.append(t2 - t1)
        for h in verdict.hits:
            result.hits[h.rule_id] += 1
        for e in verdict.errors:
            result.hits[f"ERROR {e.rule_id}"] += 1
        return out

    def walk_days(customer_id: str, to: datetime) -> None:
        """Each local midnight in ``(as_of, to]`` judged as a tick, as the processing does."""
        st = states.get(customer_id)
        if st is None or st.as_of is None or to <= st.as_of:
            return
        if not any(ln.status == "open" for ln in st.loans.values()):
            return
        day = st.as_of.astimezone(st.tz).date() + timedelta(days=1)
        while (midnight := datetime.combine(day, clock_time(0), st.tz)) <= to:
            tick = Tick.model_construct(
                event_id=f"tick:{midnight.isoformat()}",
                customer_id=customer_id,
                occurred_at=midnight,
            )
            drain(judge(tick, lambda s, to=midnight: (s, engine.advance(s, to))))
            day += timedelta(days=1)

    def drain(out: Outcome) -> None:
        """The related-party events a step announced, applied to those customers at once."""
        for announced in out.internal:
            related = decode_internal(orjson.dumps(announced))
            drain(judge(related, lambda s, ev=related: engine.apply(s, ev)))

    def process(event: Any) -> None:
        if event.type in CLOCK_EVENTS:
            walk_days(event.customer_id, event.occurred_at)
        drain(judge(event, lambda s: engine.apply(s, event)))

    last_tick: datetime | None = None
    for event in events:
        midnight = datetime.combine(event.occurred_at.astimezone(UTC).date(), clock_time(0), UTC)
        if last_tick is not None and midnight > last_tick:
            for customer_id in sorted(c for c, st in states.items() if needs_tick(st)):
                walk_days(customer_id, midnight)  # the worker's periodic DPD tick
                drain(engine.advance(states[customer_id], midnight))
        if last_tick is None or midnight > last_tick:
            last_tick = midnight
        process(event)
    return result


def _row(label: str, ns: list[int]) -> str:
    us = sorted(t / 1000 for t in ns)
    p50 = us[len(us) // 2]
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return f"  {label:<20} {len(us):>7} {statistics.fmean(us):>9.2f} {p50:>9.2f} {p99:>9.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    book = generate_book(BookConfig(customers=args.customers, months=args.months))
    events = [decode_event(dumps_event(e)) for e in book]
    rules = load_default()
    # as the processing path runs it: the rule set decides warnings, the engine keeps
    # only its classification ones
    engine = Engine(Settings(), rule_set_version=rules.version, builtin_rules=False)

    best: Pass | None = None
    for _ in range(args.repeat):
        result = run_pass(events, engine, rules)
        if best is None or statistics.fmean(result.all()) < statistics.fmean(best.all()):
            best = result
    assert best is not None
    overall = best.all()
    mean_us = statistics.fmean(overall) / 1000
    print(f"rule set {rules.name} {rules.version}: {len(rules.rules)} rules")
    print(
        f"judged: {len(overall)} ({len(events)} input events, {args.customers} customers, "
        f"{args.months} months, with DPD ticks and related-party events)"
    )
    print(f"rule cost per judged event (capture + view + evaluate), best of {args.repeat} passes:")
    print(f"  {'event type':<20} {'count':>7} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9}")
    for event_type, ns in sorted(best.rule_ns.items(), key=lambda kv: -len(kv[1])):
        print(_row(event_type, ns))
    print(_row("ALL", overall))
    print(f"budget {BUDGET_US:.0f} µs per event: {'met' if mean_us < BUDGET_US else 'MISSED'}")
    print(
        f"for scale, the engine step on the same events: mean "
        f"{statistics.fmean(best.engine_ns) / 1000:.2f} µs"
    )
    print("hits: " + (", ".join(f"{k} {v}" for k, v in sorted(best.hits.items())) or "none"))
    return 0 if mean_us < BUDGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
