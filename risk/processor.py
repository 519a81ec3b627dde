"""Runs the engine over raw input: decode at the edge, then one atomic step per event.

The processor is shared by ``creditwatch worker`` (inside Faust agents, with
the Redis store) and ``creditwatch replay`` (with the memory store). It never
talks to Kafka: outputs go to the store's outbox in the same atomic commit as
the state they came from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from creditwatch.metrics import Metrics
from risk.engine import CLOCK_EVENTS, Engine, Outcome
from risk.store import OutboxRecord, StateConflict, StateStore
from schemas.codec import InvalidEvent, dead_letter, decode_event, encode
from schemas.internal import decode_internal
from schemas.topics import COLLECTIONS_TASKS, DEAD_LETTER, RELATED, RISK_ALERTS, RISK_STATE

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class Source:
    """Where a raw input came from (in replay: the file and its 1-based line)."""

    topic: str
    partition: int | None
    offset: int | None


@dataclass(slots=True)
class Result:
    """What became of one input."""

    outcome: str  # applied | duplicate | dead_letter
    event: object | None = None
    produced: Outcome | None = None


def outcome_records(out: Outcome) -> list[OutboxRecord]:
    """The outbox records for everything a step produced."""
    records = [OutboxRecord(RISK_ALERTS, a.customer_id, encode(a)) for a in out.alerts]
    records += [OutboxRecord(COLLECTIONS_TASKS, t.customer_id, encode(t)) for t in out.tasks]
    records += [OutboxRecord(RISK_STATE, s.customer_id, encode(s)) for s in out.states]
    records += [OutboxRecord(RELATED, e["customer_id"], orjson.dumps(e)) for e in out.internal]
    return records


class _KeyedLocks:
    """One asyncio lock per customer, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Processor:
    """Decode, deduplicate, apply and commit; and advance DPD with time."""

    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        *,
        metrics: Metrics | None = None,
        shard_of: Callable[[str], int] = lambda _customer: 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        transient: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError),
        remember_events: int = 256,
    ) -> None:
        self.engine = engine
        self.store = store
        self.metrics = metrics or Metrics()
        self.shard_of = shard_of
        self.clock = clock
        self.transient = transient
        self.remember_events = remember_events
        self._locks = _KeyedLocks()

    async def handle(self, raw: bytes, source: Source, *, internal: bool = False) -> Result:
        """Process one raw input message; never raises for bad input.

        ``internal`` marks the service's own related-party topic, whose event
        types the public decoder (rightly) refuses.
        """
        started = time.perf_counter()
        try:
            event = decode_internal(raw) if internal else decode_event(raw)
        except InvalidEvent as err:
            await self.reject(raw, err, source)
            return Result("dead_letter")
        result = await self.process(event, raw, source)
        self.metrics.processing.observe(time.perf_counter() - started)
        return result

    async def process(self, event: Any, raw: bytes, source: Source) -> Result:
        """Apply a decoded event; one the engine cannot process goes to the dead letters."""
        try:
            return await self.apply(event, source)
        except self.transient:
            raise  # an outage: the caller retries, nothing is lost
        except Exception as exc:  # a valid event the engine cannot process: kept, not dropped
            log.exception(
                "processing failed for event %s (%s); sent to the dead-letter topic",
                event.event_id,
                event.type,
            )
            failure = InvalidEvent("processing_error", f"processing failed: {type(exc).__name__}")
            await self.reject(raw, failure, source)
            return Result("dead_letter", event)

    async def apply(self, event: object, source: Source) -> Result:
        """Apply one decoded event exactly once."""
        customer_id: str = event.customer_id  # type: ignore[attr-defined]
        event_id: str = event.event_id  # type: ignore[attr-defined]
        async with self._locks.hold(customer_id):
            for _attempt in range(CONFLICT_RETRIES):
                state = await self.store.load(customer_id)
                if state is not None and state.has_seen(event_id):
                    self.metrics.events.labels(source.topic, "duplicate").inc()
                    return Result("duplicate", event)
                expected = state.seq if state is not None else 0
                state, out = self.engine.apply(state, event)
                state.remember(event_id, self.remember_events)
                state.seq = expected + 1
                try:
                    committed = await self.store.commit(
                        None,
                        state,
                        outcome_records(out),
                        shard=self.shard_of(customer_id),
                        expected_seq=expected,
                    )
                    break
                except StateConflict:
                    log.info("state of a customer moved on while applying %s; retrying", event_id)
            else:
                raise StateConflict(customer_id)
        if not committed:
            self.metrics.events.labels(source.topic, "duplicate").inc()
            return Result("duplicate", event)
        if event.type in CLOCK_EVENTS:  # type: ignore[attr-defined]
            occurred_at: datetime = event.occurred_at  # type: ignore[attr-defined]
            await self.store.raise_watermark(occurred_at, self.shard_of(customer_id))
            self.metrics.watermark.set(occurred_at.timestamp())
        self.metrics.events.labels(source.topic, "applied").inc()
        self._count(out)
        return Result("applied", event, out)

    async def tick(
        self, to: datetime | None = None, *, owns: Callable[[str], bool] | None = None
    ) -> Outcome:
        """Advance customers whose arrears can grow to ``to``.

        Without ``to`` each customer goes to the watermark of the servicing
        feed on their own shard: everything that shard's feed has told us
        before that instant has been applied, so arrears can be judged up to
        it. ``owns`` limits the tick to the customers this process is
        responsible for (a worker ticks only the partitions assigned to it).
        """
        total = Outcome()
        targets: dict[int, datetime | None] = {}
        for customer_id in await self.store.tick_candidates():
            if owns is not None and not owns(customer_id):
                continue
            target = to
            if target is None:
                shard = self.shard_of(customer_id)
                if shard not in targets:
                    targets[shard] = await self.store.watermark(shard)
                target = targets[shard]
                if target is None:
                    continue
            async with self._locks.hold(customer_id):
                state = await self.store.load(customer_id)
                if state is None or (state.as_of is not None and state.as_of >= target):
                    continue
                expected = state.seq
                out = self.engine.advance(state, target)
                state.seq = expected + 1
                try:
                    await self.store.commit(
                        None,
                        state,
                        outcome_records(out),
                        shard=self.shard_of(customer_id),
                        expected_seq=expected,
                    )
                except StateConflict:  # someone else moved it on; the next tick retries
                    continue
            self._count(out)
            total.alerts += out.alerts
            total.tasks += out.tasks
            total.states += out.states
        self.metrics.ticks.inc()
        return total

    async def reject(self, raw: bytes, err: InvalidEvent, source: Source) -> None:
        """Send an input that failed validation to the dead-letter output, once."""
        letter = dead_letter(
            raw,
            err,
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            received_at=self.clock(),
        )
        marker = f"dl:{source.topic}:{source.partition}:{source.offset}"
        shard = self.shard_of(letter.customer_id) if letter.customer_id else 0
        record = OutboxRecord(DEAD_LETTER, letter.customer_id, encode(letter))
        if await self.store.commit(marker, None, [record], shard=shard):
            self.metrics.dead_letters.labels(err.reason).inc()
            self.metrics.events.labels(source.topic, "dead_letter").inc()

    def _count(self, out: Outcome) -> None:
        for alert in out.alerts:
            self.metrics.alerts.labels(alert.code, alert.severity).inc()
        for task in out.tasks:
            self.metrics.tasks.labels(task.stage).inc()
