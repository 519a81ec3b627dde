"""Runs the engine over raw input: decode at the edge, then one atomic step per event.

The processor is shared by ``creditwatch worker`` (batches from the input
consumer, with the Redis store: :meth:`Processor.handle_batch`) and
``creditwatch replay`` (one event at a time, with the memory store). It never
talks to Kafka: outputs go to the store's outbox in the same atomic commit as
the state they came from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from datetime import time as dt_time
from typing import Any, Protocol

import orjson

from creditwatch.metrics import Metrics
from risk.book import book_entry
from risk.customer import CustomerState
from risk.engine import CLOCK_EVENTS, Outcome
from risk.store import OutboxRecord, StateConflict, StateStore, Step
from schemas.codec import InvalidEvent, dead_letter, decode_event, encode
from schemas.internal import decode_internal
from schemas.topics import COLLECTIONS_TASKS, DEAD_LETTER, RELATED, RISK_ALERTS, RISK_STATE

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5
TICK_CHUNK = 100
"""Customers the DPD tick loads, advances and commits per round trip."""


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


def by_event_time(events: Sequence[Any]) -> list[int]:
    """A batch's order with each customer's events sorted by ``occurred_at`` (ties kept).

    Each customer's events keep the batch positions they had, only their order
    among those positions changes; so outputs of different customers keep
    their interleaving. Why: a batch mixes the input topics, which Kafka
    delivers independently, while ``creditwatch replay`` (and the customer's
    own history) goes by event time; an order that puts a repayment before
    the instalment it pays would judge arrears the replay never saw. Events
    of one customer already in order (the common case) stay where they are.

    >>> from types import SimpleNamespace as E
    >>> batch = [E(customer_id="a", occurred_at=3), E(customer_id="b", occurred_at=9),
    ...          E(customer_id="a", occurred_at=1), E(customer_id="a", occurred_at=3)]
    >>> by_event_time(batch)
    [2, 1, 0, 3]
    """
    slots: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        slots.setdefault(event.customer_id, []).append(i)
    order = list(range(len(events)))
    for positions in slots.values():
        if len(positions) < 2:
            continue
        ranked = sorted(positions, key=lambda i: events[i].occurred_at)  # stable
        for slot, i in zip(positions, ranked, strict=True):
            order[slot] = i
    return order


def then(first: Outcome | None, second: Outcome) -> Outcome:
    """``second`` preceded by what ``first`` produced (``second``'s scores kept)."""
    if first is None:
        return second
    first.alerts += second.alerts
    first.tasks += second.tasks
    first.states += second.states
    first.internal += second.internal
    first.rule_errors += second.rule_errors
    first.scores = second.scores
    return first


def last_midnight(at: datetime, tz: tzinfo) -> datetime:
    """The customer's last local midnight at or before ``at``: where time is let pass to.

    Time passes for a customer (a tick, or the catch-up before an event) only
    to a local midnight, the instants the rules judge as ``tick``. Advanced to
    any other instant, a change with time alone (a salary turning late) would
    happen outside any judged step, be missed by rules that look for a change,
    and make the warnings depend on when the worker's tick happened to run.
    The rest of a day is covered by the customer's next event or midnight.

    >>> from zoneinfo import ZoneInfo
    >>> last_midnight(datetime(2026, 3, 1, 20, 0, tzinfo=UTC), ZoneInfo("Asia/Shanghai"))
    datetime.datetime(2026, 3, 2, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='Asia/Shanghai'))
    """
    local = at.astimezone(tz)
    return datetime.combine(local.date(), dt_time(0), tzinfo=tz)


class RiskEngine(Protocol):
    """What the processor needs of an engine (``risk.engine.Engine``, or a wrapper of it).

    Nothing else is used, so a wrapper that adds to the engine (e.g. detectors
    or rules around it) can be handed in with just these.
    """

    settings: Any

    def apply(self, state: CustomerState | None, event: Any) -> tuple[CustomerState, Outcome]:
        """Apply one decoded event; returns the new state (may be ``state`` changed in place)."""
        ...

    def advance(self, state: CustomerState, to: datetime) -> Outcome:
        """Move the state on to event time ``to`` (arrears grow with time)."""
        ...

    def summary(self, state: CustomerState) -> Any:
        """The customer's risk state as shown on the API and ``credit.risk-state.v1``."""
        ...


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
            self._leave(key)

    @asynccontextmanager
    async def hold_all(self, keys: Sequence[str]) -> AsyncIterator[None]:
        """Hold the locks of several keys at once (a batch's customers).

        They are taken in sorted order, so two batches (or a batch and the
        tick) sharing customers can never each wait for the other.
        """
        ordered = sorted(set(keys))
        held: list[asyncio.Lock] = []
        for key in ordered:
            lock, users = self._locks.get(key, (asyncio.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            for key in ordered:
                lock = self._locks[key][0]
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in held:
                lock.release()
            for key in ordered:
                self._leave(key)

    def _leave(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)


class Processor:
    """Decode, deduplicate, apply and commit; and advance DPD with time."""

    def __init__(
        self,
        engine: RiskEngine,
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
        return await self._guarded(self.apply, event, raw, source)

    async def _guarded(
        self,
        apply: Callable[[Any, Source], Any],
        event: Any,
        raw: bytes,
        source: Source,
    ) -> Result:
        try:
            result: Result = await apply(event, source)
            return result
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
        async with self._locks.hold(event.customer_id):  # type: ignore[attr-defined]
            return await self._apply_held(event, source)

    async def _apply_held(
        self, event: Any, source: Source, mark: datetime | bool | None = False
    ) -> Result:
        """:meth:`apply` for a caller that already holds the customer's lock.

        ``mark``: the shard's watermark as of this event (a batch redoing it
        knows it); by default the stored one.
        """
        customer_id: str = event.customer_id
        event_id: str = event.event_id
        for _attempt in range(CONFLICT_RETRIES):
            state = await self.store.load(customer_id)
            if state is not None and state.has_seen(event_id):
                self.metrics.events.labels(source.topic, "duplicate").inc()
                return Result("duplicate", event)
            expected = state.seq if state is not None else 0
            before = book_entry(state)  # the engine changes the state in place
            now_mark = (
                await self.store.watermark(self.shard_of(customer_id)) if mark is False else mark
            )
            pre = self.catch_up(state, event, now_mark)  # type: ignore[arg-type]
            state, out = self.engine.apply(state, event)
            out = then(pre, out)
            state.remember(event_id, self.remember_events)
            state.seq = expected + 1
            try:
                committed = await self.store.commit(
                    None,
                    state,
                    outcome_records(out),
                    shard=self.shard_of(customer_id),
                    expected_seq=expected,
                    book_before=before,
                )
                break
            except StateConflict:
                log.info("state of a customer moved on while applying %s; retrying", event_id)
        else:
            raise StateConflict(customer_id)
        if not committed:
            self.metrics.events.labels(source.topic, "duplicate").inc()
            return Result("duplicate", event)
        if event.type in CLOCK_EVENTS:
            occurred_at: datetime = event.occurred_at
            await self.store.raise_watermark(occurred_at, self.shard_of(customer_id))
            self.metrics.watermark.set(occurred_at.timestamp())
        self.metrics.events.labels(source.topic, "applied").inc()
        self._count(out)
        lag = (self.clock() - event.occurred_at).total_seconds()
        self.metrics.event_lag.labels(source.topic).observe(max(lag, 0.0))
        return Result("applied", event, out)

    def catch_up(
        self, state: CustomerState | None, event: Any, mark: datetime | None
    ) -> Outcome | None:
        """Before a non-servicing event: let time pass up to its shard's servicing watermark.

        Arrears and income lateness are judged as time passes, and time passes
        with the servicing feed of the customer's shard (the watermark: every
        servicing event of the shard up to it has been applied). A
        transaction dated after that instant is applied once the customer has
        been advanced to the last local midnight before both (see
        :func:`last_midnight`), whether or not a scheduled tick happened to
        run in between. Without this, whether a salary was judged missing at
        its midnight or at the customer's next card payment depended on when
        the worker's tick ran; with it, worker and replay (which does the
        same, in event-time order) agree.
        """
        if mark is None or state is None or state.as_of is None or event.type in CLOCK_EVENTS:
            return None
        target = last_midnight(min(mark, event.occurred_at), state.tz)
        if target <= state.as_of:
            return None
        return self.engine.advance(state, target)

    # -- batches --------------------------------------------------------------

    async def handle_batch(
        self, messages: Sequence[tuple[bytes, Source]], *, internal: bool = False
    ) -> list[Result]:
        """Process raw messages of one stream; never raises for bad input.

        The outcome is the one :meth:`handle` gives for each message in turn,
        with each customer's events taken in event-time order (see
        :func:`by_event_time`), for two store round trips per batch instead
        of two or three per event, which is where a worker spent most of its
        time. Results are in the order of ``messages``.
        """
        results: list[Result] = [Result("dead_letter")] * len(messages)
        decoded = await self.decode_batch(messages, internal=internal)
        valid = [i for i, item in enumerate(decoded) if item is not None]
        applied = await self.apply_decoded([decoded[i] for i in valid])  # type: ignore[misc]
        for i, result in zip(valid, applied, strict=True):
            results[i] = result
        return results

    async def decode_batch(
        self, messages: Sequence[tuple[bytes, Source]], *, internal: bool = False
    ) -> list[tuple[Any, bytes, Source] | None]:
        """Each message decoded, or ``None`` once it is on its way to the dead letters.

        Split from :meth:`apply_decoded` so that a worker can order events by
        their ``occurred_at`` across topics before applying them.
        """
        self.metrics.batch_events.observe(len(messages))
        decode = decode_internal if internal else decode_event
        out: list[tuple[Any, bytes, Source] | None] = []
        for raw, source in messages:
            try:
                out.append((decode(raw), raw, source))
            except InvalidEvent as err:
                await self.reject(raw, err, source)
                out.append(None)
        return out

    async def apply_decoded(self, decoded: Sequence[tuple[Any, bytes, Source]]) -> list[Result]:
        """Apply decoded events, each customer's in event-time order; results in input order."""
        if not decoded:
            return []
        started = time.perf_counter()
        order = by_event_time([event for event, _raw, _source in decoded])
        results: list[Result] = [Result("dead_letter")] * len(decoded)
        applied = await self.process_batch([decoded[j] for j in order])
        for j, result in zip(order, applied, strict=True):
            results[j] = result
        elapsed = time.perf_counter() - started
        observe = self.metrics.processing.observe
        for _ in decoded:  # each event waited for its whole batch
            observe(elapsed)
        return results

    async def process_batch(self, items: Sequence[tuple[Any, bytes, Source]]) -> list[Result]:
        """Apply decoded events exactly once, in order, with one load and one commit per batch.

        Why it is equivalent to :meth:`process` one event at a time: the
        batch's customers stay locked from the load to the commit; each
        customer's events are applied in their order to one copy of the
        state (a redelivered event is recognised by the digests that copy
        accumulates); and each customer's step (final state, the digests of
        its events, every output in order, the servicing watermark) is one
        atomic commit, refused if the stored state moved on. Anything off the
        fast path -- a refused commit, an event the engine cannot process --
        is redone one event at a time, still under the lock, from the stored
        state, so a half-applied copy is never committed.
        """
        results: list[Result | None] = [None] * len(items)
        customers = list(dict.fromkeys(event.customer_id for event, _raw, _src in items))
        slow: list[int] = []  # redone one at a time, from the stored state
        shards = sorted({self.shard_of(c) for c in customers})
        async with self._locks.hold_all(customers):
            states = await self.store.load_many(customers)
            marks = dict(
                zip(
                    shards,
                    await asyncio.gather(*(self.store.watermark(s) for s in shards)),
                    strict=True,
                )
            )
            steps: dict[str, Step] = {}
            members: dict[str, list[int]] = {}
            broken: set[str] = set()
            marks_at: dict[int, datetime | None] = {}
            for idx, (event, _raw, _source) in enumerate(items):
                customer_id: str = event.customer_id
                marks_at[idx] = marks[self.shard_of(customer_id)]
                if customer_id in broken:
                    slow.append(idx)
                    continue
                state = states[customer_id]
                if state is not None and state.has_seen(event.event_id):
                    results[idx] = Result("duplicate", event)
                    continue
                expected = state.seq if state is not None else 0
                before = book_entry(state) if customer_id not in steps else None
                shard = self.shard_of(customer_id)
                try:
                    pre = self.catch_up(state, event, marks[shard])
                    state, out = self.engine.apply(state, event)
                    out = then(pre, out)
                except Exception:  # the copy may be half-changed: redo this customer slowly
                    broken.add(customer_id)
                    steps.pop(customer_id, None)
                    slow += members.pop(customer_id, [])
                    slow.append(idx)
                    continue
                state.remember(event.event_id, self.remember_events)
                states[customer_id] = state
                step = steps.get(customer_id)
                if step is None:
                    state.seq = expected + 1  # one commit for all its events in the batch
                    step = steps[customer_id] = Step(
                        state, expected, self.shard_of(customer_id), book_before=before
                    )
                    members[customer_id] = []
                step.state = state
                step.records += [(idx, rec) for rec in outcome_records(out)]
                if event.type in CLOCK_EVENTS:
                    if step.watermark is None or event.occurred_at > step.watermark:
                        step.watermark = event.occurred_at
                    mark = marks[shard]
                    if mark is None or event.occurred_at > mark:
                        marks[shard] = event.occurred_at  # later events of the shard see it
                members[customer_id].append(idx)
                results[idx] = Result("applied", event, out)
            if steps:
                order = list(steps.values())
                for step, ok in zip(order, await self.store.commit_many(order), strict=True):
                    if not ok:
                        customer_id = step.state.customer_id
                        log.info("state of a customer moved on while committing a batch; redoing")
                        slow += members[customer_id]
                        for idx in members[customer_id]:
                            results[idx] = None
            untouched = [
                state
                for customer_id, state in states.items()
                if state is not None and customer_id not in steps and customer_id not in broken
            ]
            if untouched:  # only duplicates: the store may keep them as they are
                self.store.release(untouched)
            slow.sort()
            redone = set(slow)
            for idx in slow:
                event, raw, source = items[idx]
                mark_then = marks_at.get(idx)
                results[idx] = await self._guarded(
                    lambda e, s, m=mark_then: self._apply_held(e, s, m), event, raw, source
                )
        self._count_batch(items, results, redone)
        return [r if r is not None else Result("duplicate") for r in results]

    def _count_batch(
        self,
        items: Sequence[tuple[Any, bytes, Source]],
        results: Sequence[Result | None],
        redone: set[int],
    ) -> None:
        """Metrics of a batch, one label lookup per distinct label set (redone: counted)."""
        outcomes: Counter[tuple[str, str]] = Counter()
        alerts: Counter[tuple[str, str]] = Counter()
        stages: Counter[str] = Counter()
        latest: datetime | None = None
        now = self.clock().timestamp()
        lags: dict[str, list[float]] = {}
        scores: dict[str, list[float]] = {}
        rule_errors: Counter[str] = Counter()
        for idx, ((event, _raw, source), result) in enumerate(zip(items, results, strict=True)):
            if idx in redone or result is None:
                continue
            outcomes[source.topic, result.outcome] += 1
            out = result.produced
            if out is None:
                continue
            lags.setdefault(source.topic, []).append(now - event.occurred_at.timestamp())
            for detector, score in out.scores.items():
                scores.setdefault(detector, []).append(score)
            for failure in out.rule_errors:
                rule_errors[failure.rule_id] += 1
            for alert in out.alerts:
                alerts[alert.code, alert.severity] += 1
            for task in out.tasks:
                if task.status == "open":  # a cancellation is not a new task
                    stages[task.stage] += 1
            if event.type in CLOCK_EVENTS and (latest is None or event.occurred_at > latest):
                latest = event.occurred_at
        for (topic, outcome), n in outcomes.items():
            self.metrics.events.labels(topic, outcome).inc(n)
        for (code, severity), n in alerts.items():
            self.metrics.alerts.labels(code, severity).inc(n)
        for stage, n in stages.items():
            self.metrics.tasks.labels(stage).inc(n)
        if latest is not None:
            self.metrics.watermark.set(latest.timestamp())
        for topic, seconds in lags.items():
            observe = self.metrics.event_lag.labels(topic).observe
            for lag in seconds:
                observe(max(lag, 0.0))  # an event stamped ahead of this clock: no lag
        for detector, values in scores.items():
            observe = self.metrics.detector_score.labels(detector).observe
            for score in values:
                if score == score:  # a NaN would poison the histogram's sum
                    observe(score)
        for rule, n in rule_errors.items():
            self.metrics.rule_errors.labels(rule).inc(n)

    # -- time -----------------------------------------------------------------

    async def tick(
        self, to: datetime | None = None, *, owns: Callable[[str], bool] | None = None
    ) -> Outcome:
        """Advance customers whose arrears can grow to ``to``.

        Without ``to`` each customer goes to the watermark of the servicing
        feed on their own shard: everything that shard's feed has told us
        before that instant has been applied, so arrears can be judged up to
        it. ``owns`` limits the tick to the customers this process is
        responsible for (a worker ticks only the partitions assigned to it).
        Customers are loaded and committed ``TICK_CHUNK`` at a time (one
        round trip each way per chunk, not per customer); a customer whose
        state moved on meanwhile is left for the next tick.

        A customer the store's kept copy shows already at the target is not
        loaded at all (``as_of`` only moves forward, so the stored state is
        there too): with the servicing feed quiet, a tick used to load, and
        hold the lock of, every customer in arrears only to find nothing to
        do. Between chunks the loop is given back to the batches.
        """
        total = Outcome()
        targets: dict[int, datetime | None] = {}
        due: list[tuple[str, datetime]] = []
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
            kept = self.store.peek(customer_id)
            if (
                kept is not None
                and kept.as_of is not None
                and kept.as_of >= last_midnight(target, kept.tz)
            ):
                continue
            due.append((customer_id, target))
        # Shard by shard: a store with an outbox per shard then gives the outputs in
        # the order they were committed (replay's files are the same on either store).
        due.sort(key=lambda item: self.shard_of(item[0]))
        for start in range(0, len(due), TICK_CHUNK):
            chunk = due[start : start + TICK_CHUNK]
            advanced: list[Outcome] = []
            steps: list[Step] = []
            if start:
                await asyncio.sleep(0)  # let waiting batches in between chunks
            async with self._locks.hold_all([c for c, _ in chunk]):
                states = await self.store.load_many([c for c, _ in chunk])
                untouched: list[CustomerState] = []
                for position, (customer_id, target) in enumerate(chunk):
                    state = states.get(customer_id)
                    if state is None:
                        continue
                    target = last_midnight(target, state.tz)
                    if state.as_of is not None and state.as_of >= target:
                        untouched.append(state)
                        continue
                    expected = state.seq
                    before = book_entry(state)
                    out = self.engine.advance(state, target)
                    state.seq = expected + 1
                    records = [(position, rec) for rec in outcome_records(out)]
                    shard = self.shard_of(customer_id)
                    steps.append(Step(state, expected, shard, records, book_before=before))
                    advanced.append(out)
                if untouched:
                    self.store.release(untouched)
                done = await self.store.commit_many(steps) if steps else []
            for out, ok in zip(advanced, done, strict=True):
                if not ok:  # someone else moved it on; the next tick retries
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
            if task.status == "open":
                self.metrics.tasks.labels(task.stage).inc()
        for detector, score in out.scores.items():
            if score == score:  # a NaN would poison the histogram's sum
                self.metrics.detector_score.labels(detector).observe(score)
        for failure in out.rule_errors:
            self.metrics.rule_errors.labels(failure.rule_id).inc()
