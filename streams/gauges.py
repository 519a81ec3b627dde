"""Gauges a worker refreshes on a timer: consumer lag per partition, and the loan book.

Neither can be counted on the event path. Consumer lag is the distance from
the log end of each input partition this worker owns to the offset its
consumer group committed there: what a restart would have to read again,
and, when it grows, a worker that is falling behind. The loan book (customers
with an open loan by tier, open loans by class) is kept as counters in Redis
by every commit (:mod:`risk.book`), so reading it costs one small ``HGETALL``
whatever the size of the book.

A refresh that fails (Kafka or Redis briefly away) leaves the gauge at its
last value, logs why and counts it on ``creditwatch_gauge_refresh_errors_total``:
a monitoring side path never stops the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from faust.types import TP

from creditwatch.metrics import Metrics
from risk.book import TIERS, Book, split_book
from risk.classification import CLASSES
from schemas.topics import INPUT_TOPICS, INTERNAL_TOPICS

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
"""How often the worker refreshes these gauges (Prometheus scrapes every 5 s or slower)."""


class OffsetSource(Protocol):
    """What the lag needs of a Faust consumer (``app.consumer``)."""

    def assignment(self) -> set[TP]: ...

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...


class BookSource(Protocol):
    """What the book gauges need of the state store."""

    async def book(self) -> Book: ...


def consumed_topics(topics: Mapping[str, str]) -> dict[str, str]:
    """Physical name to logical name of every topic the agents read.

    >>> consumed_topics({"repayments": "x.credit.repayments.v1", "risk_alerts": "x.alerts"})
    {'x.credit.repayments.v1': 'repayments'}
    """
    return {
        physical: logical
        for logical, physical in topics.items()
        if logical in INPUT_TOPICS or logical in INTERNAL_TOPICS
    }


def committed_offsets(consumer: Any) -> Mapping[TP, int | None]:
    """The offsets the consumer group committed, as this worker's Faust consumer knows them.

    Faust keeps them (read at assignment, updated by each commit) without a
    public accessor; asking the broker instead would cost a request per
    partition on every refresh. Faust stores a committed 0 as ``None``, which
    :func:`consumer_lag` reads as "nothing committed": the same thing for lag.
    """
    committed: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    return committed


async def consumer_lag(
    consumer: OffsetSource,
    committed: Mapping[TP, int | None],
    logical_of: Mapping[str, str],
) -> dict[tuple[str, int], int]:
    """Lag of each assigned input partition, by (logical topic, partition).

    With nothing committed yet the group starts from the earliest offset
    (``auto_offset_reset=earliest``), so that is what the lag counts from.
    """
    tps = sorted(
        (tp for tp in consumer.assignment() if tp.topic in logical_of),
        key=lambda tp: (tp.topic, tp.partition),
    )
    if not tps:
        return {}
    ends = await consumer.highwaters(*tps)
    unknown = [tp for tp in tps if committed.get(tp) is None]
    earliest = await consumer.earliest_offsets(*unknown) if unknown else {}
    lags: dict[tuple[str, int], int] = {}
    for tp in tps:
        end = ends.get(tp)
        start = committed.get(tp)
        if start is None:
            start = earliest.get(tp)
        if end is None or start is None:
            continue  # the broker did not answer for it: no figure rather than a wrong one
        lags[logical_of[tp.topic], tp.partition] = max(end - start, 0)
    return lags


def set_consumer_lag(metrics: Metrics, lags: Mapping[tuple[str, int], int]) -> None:
    """Replace every lag series at once (a revoked partition's series goes away)."""
    metrics.consumer_lag.clear()
    for (topic, partition), lag in lags.items():
        metrics.consumer_lag.labels(topic, str(partition)).set(lag)


def set_book(metrics: Metrics, counters: Book) -> None:
    """Every tier and class has a series, 0 when the book has none."""
    tiers, classes = split_book(counters)
    for tier in TIERS:
        metrics.customers.labels(tier).set(tiers.get(tier, 0))
    for loan_class in CLASSES:
        metrics.loans.labels(loan_class).set(classes.get(loan_class, 0))


async def refresh(
    metrics: Metrics,
    consumer: OffsetSource,
    store: BookSource,
    topics: Mapping[str, str],
) -> None:
    """Refresh consumer lag and the book gauges; a part that fails keeps its last values."""
    try:
        lags = await consumer_lag(consumer, committed_offsets(consumer), consumed_topics(topics))
    except Exception as exc:  # Kafka away or the consumer not started: counted and logged
        metrics.gauge_refresh_errors.labels("consumer_lag").inc()
        log.warning("consumer lag not refreshed: %s", exc)
    else:
        set_consumer_lag(metrics, lags)
    try:
        counters = await store.book()
    except Exception as exc:  # Redis away: counted and logged
        metrics.gauge_refresh_errors.labels("book").inc()
        log.warning("loan book gauges not refreshed: %s", exc)
    else:
        set_book(metrics, counters)
