"""What the worker records on /metrics: event-time lag, detector scores, rule errors, the book.

The processor runs with the memory store and the real engine, judge, rules and
detectors; the values are read back from its own registry. The loan book's
counters are held to a recount over every stored state, on both processing
paths, through class migrations that only the passage of time causes. Only the
Faust consumer and the state store are stood in for in the gauge tests: they
are the gauges' boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from faust.types import TP
from prometheus_client.utils import floatToGoString

from config.settings import Settings
from creditwatch.metrics import Metrics
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from detectors.registry import REGISTRY
from risk.book import Book, book_entry
from risk.engine import Engine
from risk.judge import build_judge
from risk.processor import Processor, Source
from risk.store import MemoryStateStore
from rules.features import FEATURES, FeatureSpec, FeatureView
from rules.loader import load_data
from schemas.events import EXAMPLES
from streams import gauges

SETTINGS = Settings()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def raw(type_: str, at: datetime, event_id: str, customer: str = "C1", **fields: Any) -> bytes:
    data = {
        **EXAMPLES[type_],
        "event_id": event_id,
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        **fields,
    }
    return orjson.dumps(data)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def recount(store: MemoryStateStore) -> Book:
    total: Book = {}
    for state in store.states.values():
        for name, n in book_entry(state).items():
            total[name] = total.get(name, 0) + n
    return total


def stored(book: Book) -> Book:
    return {name: n for name, n in book.items() if n}


# -- event-time lag ------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "one_at_a_time"])
def test_event_time_lag_is_measured_from_occurred_at_to_the_decision(batched: bool) -> None:
    metrics = Metrics()
    processor = Processor(Engine(SETTINGS), MemoryStateStore(), metrics=metrics, clock=lambda: NOW)
    messages = [
        (raw("customer.updated", NOW - timedelta(seconds=30), "e1"), Source("live", 0, 1)),
        (raw("customer.updated", NOW - timedelta(days=400), "e2", "C2"), Source("history", 0, 1)),
        (raw("customer.updated", NOW + timedelta(minutes=5), "e3", "C3"), Source("live", 0, 2)),
        (b"not json", Source("live", 0, 3)),  # dead letter: no decision, no lag
    ]

    async def go() -> None:
        if batched:
            await processor.handle_batch(messages)
            await processor.handle_batch(messages[:1])  # redelivered: a duplicate, not timed
        else:
            for message, source in [*messages, messages[0]]:
                await processor.handle(message, source)

    asyncio.run(go())

    def bucket(topic: str, bound: float) -> float:
        labels = {"topic": topic, "le": floatToGoString(bound)}
        value = metrics.registry.get_sample_value("creditwatch_event_lag_seconds_bucket", labels)
        assert value is not None, labels
        return value

    assert sample(metrics, "creditwatch_event_lag_seconds_count", topic="live") == 2
    assert bucket("live", 1) == 1  # stamped ahead of the clock: no lag
    assert bucket("live", 60) == 2
    assert bucket("history", 90 * 86400) == 0
    assert bucket("history", 365 * 86400) == 0
    assert bucket("history", 3 * 365 * 86400) == 1
    assert sample(metrics, "creditwatch_event_lag_seconds_sum", topic="history") == 400 * 86400


# -- detector scores and rule errors ---------------------------------------------------------


def _broken(view: FeatureView) -> Any:
    raise ZeroDivisionError("feature not computable")


def judge_with_a_broken_rule() -> Any:
    registry = {**FEATURES, "t_broken": FeatureSpec("t_broken", "int", _broken, "always raises")}
    rule = {
        "id": "broken_rule",
        "description": "a rule whose feature raises",
        "why": "tests",
        "applies_to": ["transaction.posted"],
        "condition": {"feature": "t_broken", "op": "gt", "value": 1},
        "severity": "warning",
        "dedup_key": "{customer_id}:broken_rule",
        "route": "risk_desk",
    }
    rules = load_data({"name": "t", "rules": [rule]}, registry=registry)
    return build_judge(SETTINGS, rule_set=rules)


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "one_at_a_time"])
def test_detector_scores_and_rule_errors_are_recorded_by_name(batched: bool) -> None:
    metrics = Metrics()
    processor = Processor(judge_with_a_broken_rule(), MemoryStateStore(), metrics=metrics)
    messages = [
        (raw("transaction.posted", NOW + timedelta(minutes=i), f"t{i}"), Source("tx", 0, i))
        for i in range(5)
    ]

    async def go() -> None:
        if batched:
            await processor.handle_batch(messages)
        else:
            for message, source in messages:
                await processor.handle(message, source)

    asyncio.run(go())
    assert sample(metrics, "creditwatch_rule_errors_total", rule="broken_rule") == 5
    scored = {
        s.labels["detector"]: s.value
        for family in metrics.registry.collect()
        if family.name == "creditwatch_detector_score"
        for s in family.samples
        if s.name.endswith("_count")
    }
    assert scored, "no detector score recorded"
    assert set(scored) <= set(REGISTRY)
    assert all(count == 5 for count in scored.values()), scored


# -- the loan book's counters ----------------------------------------------------------------


def book_events() -> list[bytes]:
    return [dumps_event(e) for e in generate_book(BookConfig(seed=11, customers=40, months=4))]


@pytest.mark.parametrize("size", [1, 64], ids=["one_at_a_time", "batches"])
def test_book_counters_equal_a_recount_of_every_state(size: int) -> None:
    store = MemoryStateStore()
    processor = Processor(Engine(SETTINGS), store)
    raws = book_events()
    messages = [(r, Source("t", 0, i)) for i, r in enumerate(raws)]

    async def feed(items: list[tuple[bytes, Source]]) -> None:
        for start in range(0, len(items), size):
            if size == 1:
                await processor.handle(*items[start])
            else:
                await processor.handle_batch(items[start : start + size])

    asyncio.run(feed(messages))
    assert stored(store.book) == recount(store)
    assert store.book.get("loans:normal", 0) > 0
    after_events = dict(store.book)

    asyncio.run(processor.tick(datetime(2027, 6, 1, tzinfo=UTC)))  # arrears grow with time alone
    assert stored(store.book) == recount(store)
    assert store.book != after_events
    classes = {name for name, n in store.book.items() if name.startswith("loans:") and n}
    assert classes > {"loans:normal"}, store.book  # loans did migrate between classes

    settled = dict(store.book)
    asyncio.run(feed(messages[:300]))  # redelivered: nothing applied, nothing counted twice
    assert store.book == settled


def test_a_step_without_its_loaded_entry_moves_no_counter() -> None:
    store = MemoryStateStore()
    processor = Processor(Engine(SETTINGS), store)
    opened = raw("loan.opened", NOW, "o1", loan_id="L1")
    asyncio.run(processor.handle(opened, Source("t", 0, 0)))
    assert store.book == {"customers:premium": 1, "loans:normal": 1}
    state = store.states["C1"]
    asyncio.run(store.commit(None, state, []))  # e.g. an operator's write: not counted
    assert store.book == {"customers:premium": 1, "loans:normal": 1}


# -- periodic gauges --------------------------------------------------------------------------


class Consumer:
    """Faust's consumer as the lag sees it: assignment, log ends and log starts."""

    def __init__(
        self,
        assigned: Sequence[TP],
        ends: Mapping[TP, int],
        starts: Mapping[TP, int],
        committed: Mapping[TP, int | None],
    ) -> None:
        self.assigned = set(assigned)
        self.ends = dict(ends)
        self.starts = dict(starts)
        self._committed_offset = dict(committed)
        self.asked_starts: list[TP] = []

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self.ends[tp] for tp in partitions if tp in self.ends}

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        self.asked_starts += partitions
        return {tp: self.starts[tp] for tp in partitions}


class Store:
    def __init__(self, book: Book | Exception) -> None:
        self.value = book

    async def book(self) -> Book:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


TOPICS = {"repayments": "x.repayments", "transactions": "x.transactions", "risk_alerts": "x.out"}


def lag_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.registry.collect()
        if family.name == "creditwatch_consumer_lag"
        for s in family.samples
    }


def test_consumer_lag_is_log_end_minus_committed_per_logical_topic_and_partition() -> None:
    rep0, rep1, tx0 = TP("x.repayments", 0), TP("x.repayments", 1), TP("x.transactions", 0)
    leader = TP("x-__assignor-__leader", 0)  # Faust's own topic: not an input
    consumer = Consumer(
        [rep0, rep1, tx0, leader],
        ends={rep0: 120, rep1: 40, tx0: 10, leader: 3},
        starts={rep1: 15},
        committed={rep0: 100, rep1: None, tx0: 10},
    )
    metrics = Metrics()
    asyncio.run(gauges.refresh(metrics, consumer, Store({}), TOPICS))
    assert lag_samples(metrics) == {
        ("repayments", "0"): 20,
        ("repayments", "1"): 25,  # nothing committed: from the log start
        ("transactions", "0"): 0,
    }
    assert consumer.asked_starts == [rep1]

    consumer.assigned = {rep0}  # a rebalance took the others away
    asyncio.run(gauges.refresh(metrics, consumer, Store({}), TOPICS))
    assert lag_samples(metrics) == {("repayments", "0"): 20}


def test_book_gauges_show_every_tier_and_class_and_keep_values_when_redis_is_away() -> None:
    metrics = Metrics()
    consumer = Consumer([], {}, {}, {})
    book = {"customers:high": 2, "customers:premium": 5, "loans:normal": 6, "loans:loss": 1}
    asyncio.run(gauges.refresh(metrics, consumer, Store(book), TOPICS))
    assert sample(metrics, "creditwatch_customers", tier="high") == 2
    assert sample(metrics, "creditwatch_customers", tier="premium") == 5
    assert metrics.registry.get_sample_value("creditwatch_customers", {"tier": "low"}) == 0
    assert sample(metrics, "creditwatch_loans", loan_class="loss") == 1
    assert metrics.registry.get_sample_value("creditwatch_loans", {"loan_class": "doubtful"}) == 0

    asyncio.run(gauges.refresh(metrics, consumer, Store(ConnectionError("away")), TOPICS))
    assert sample(metrics, "creditwatch_customers", tier="premium") == 5
    assert sample(metrics, "creditwatch_gauge_refresh_errors_total", gauge="book") == 1
    assert sample(metrics, "creditwatch_gauge_refresh_errors_total", gauge="consumer_lag") == 0


def test_a_consumer_that_cannot_answer_keeps_the_last_lag_and_is_counted() -> None:
    class Broken(Consumer):
        async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
            raise TimeoutError("broker away")

    tp = TP("x.repayments", 0)
    metrics = Metrics()
    asyncio.run(gauges.refresh(metrics, Consumer([tp], {tp: 9}, {}, {tp: 4}), Store({}), TOPICS))
    asyncio.run(gauges.refresh(metrics, Broken([tp], {}, {}, {}), Store({}), TOPICS))
    assert lag_samples(metrics) == {("repayments", "0"): 5}
    assert sample(metrics, "creditwatch_gauge_refresh_errors_total", gauge="consumer_lag") == 1
