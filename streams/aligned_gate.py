"""Between the worker's streams and the processor: event-time alignment, with Faust's facts.

:mod:`streams.alignment` decides the order; this adds what only the consumer
knows: whether a topic-partition has delivered everything it has (its high
watermark), when everything must go (a rebalance is handing partitions over:
Faust suspends the flow and waits for every taken event to be acknowledged),
and acknowledgement once applied events are durable in Redis. A timer
releases what became due while no batch arrived (the end of a backlog, a
quiet topic).

Both of the worker's agents feed one gate: the input topics, which set the
pace, and the related-party topic, whose announcements (stamped with the
event time of what caused them) wait until the affected customer's own
topics have reached that time. Applied earlier, a group exposure announced
by a customer on a partition running days ahead would reach its related
customers days before it happened in their event time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka.structs import TopicPartition
from faust.types import TP

from streams.alignment import EventTimeAligner, Held
from streams.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class AlignedGate:
    """Holds decoded events until their turn, applies them, then acknowledges them."""

    QUIET_SECONDS = 10.0
    """A topic-partition silent this long whose consumer position has reached its
    high watermark counts as caught up though its last offset is below it (the
    commit markers of a transactional producer take offsets never delivered)."""

    TIMER_SECONDS = 0.2

    def __init__(
        self, app: faust.App, runtime: WorkerRuntime, pacing_topics: Sequence[str]
    ) -> None:
        self.app = app
        self.runtime = runtime
        settings = runtime.settings.alignment
        self.aligner = EventTimeAligner(
            pacing_topics,
            max_held=settings.max_held_events,
            max_stall_seconds=settings.max_stall_seconds,
        )
        self.metrics = runtime.metrics
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._last_delivery: dict[tuple[str, int], float] = {}
        self._positions: dict[tuple[str, int], int] = {}
        self._lagging: set[tuple[str, int]] = set()
        self._paused: set[tuple[str, int]] = set()
        self._pause_unavailable_logged = False

    async def take(
        self, stream: faust.StreamT[bytes], events: Sequence[Any], *, internal: bool = False
    ) -> None:
        """Decode a batch of one stream, hold it, and apply whatever is due."""
        self._start_timer()
        messages = [(m.value, m.topic, m.partition, m.offset) for m in (e.message for e in events)]
        async with self._lock:
            decoded = await self.runtime.decode_batch(messages, internal=internal)
            held: list[Held] = []
            now = time.monotonic()
            for event, item, (_value, topic, partition, offset) in zip(
                events, decoded, messages, strict=True
            ):
                self._last_delivery[topic, partition] = now
                if item is None:  # dead-lettered, durably: nothing to wait for
                    await stream.ack(event)
                    continue
                held.append(
                    Held(item[0].occurred_at, topic, partition, offset, (item, event, stream))
                )
            self.aligner.add(held)
            await self._release()

    def forget_unacked(self) -> None:
        """A failed batch stops the worker: Faust must not wait for what is held."""
        unacked = self.app.consumer.unacked
        for message in [m for m in unacked if m.topic in self.topics]:
            unacked.discard(message)

    @property
    def topics(self) -> set[str]:
        return set(self.aligner.topics) | {t for t, _p in self._last_delivery}

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals --------------------------------------------------------------

    def _start_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(
                self._run_timer(), name="creditwatch-alignment"
            )

    async def _run_timer(self) -> None:
        """Release what became due without a new batch; a failure stops the worker."""
        try:
            while True:
                await asyncio.sleep(self.TIMER_SECONDS)
                if not self.aligner.held:
                    continue
                await self._refresh_positions()
                async with self._lock:
                    await self._release()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.critical(
                "releasing %d held events failed; stopping the worker without "
                "acknowledging them (they are redelivered on restart)",
                self.aligner.held,
                exc_info=True,
            )
            self.forget_unacked()
            await self.app.crash(exc)

    async def _release(self) -> None:
        handing_over = not self.app.flow_control.is_active()
        self._lagging.clear()
        released = self.aligner.release(self._caught_up, everything=handing_over)
        self.metrics.aligned_held.set(self.aligner.held)
        if released.forced_by_stall:
            self.metrics.aligned_forced.labels("stall").inc(released.forced_by_stall)
        if released.forced_by_size:
            self.metrics.aligned_forced.labels("size").inc(released.forced_by_size)
        if handing_over and released.items:
            self.metrics.aligned_forced.labels("rebalance").inc(len(released.items))
        if handing_over:  # a new assignment starts with nothing paused
            self._paused = set()
        else:
            self._pace(released.ahead)
        if not released.items:
            return
        await self.runtime.apply_decoded([held.item[0] for held in released.items])
        for held in released.items:  # only now: durable in Redis
            _item, event, stream = held.item
            await stream.ack(event)

    def _pace(self, ahead: set[tuple[str, int]]) -> None:
        """Stop fetching topic-partitions running ahead; fetch again those that no longer are.

        Without this the held events of a small topic would grow to its whole
        backlog (hundreds of MiB in a large one); paused, what is held stays
        about what was fetched before the pause. The pause is the Kafka
        client's own (records it had buffered are dropped without moving its
        position, so they are fetched again on resume), applied on the
        consumer's thread. Faust's ``pause_partitions`` is not used: a
        partition it pauses while a fetched batch is being handed out has the
        rest of that batch skipped, and Faust then commits past the gap.
        """
        resume = self._paused - ahead
        pause = ahead - self._paused
        if not (pause or resume):
            return
        if not self._kafka_pause(pause, resume):
            return
        self._paused = set(ahead)

    def _kafka_pause(self, pause: set[tuple[str, int]], resume: set[tuple[str, int]]) -> bool:
        try:
            thread = self.app.consumer._thread  # type: ignore[attr-defined]
            client = thread._ensure_consumer()
            loop = thread.thread_loop
        except Exception:  # a consumer without a client thread: hold, do not pause
            if not self._pause_unavailable_logged:
                log.warning("input alignment: the consumer cannot pause partitions; holding only")
                self._pause_unavailable_logged = True
            return False

        def apply() -> None:  # on the consumer's thread, where the client lives
            for topic, partition in resume:
                with contextlib.suppress(Exception):  # no longer assigned: nothing to do
                    client.resume(TopicPartition(topic, partition))
            for topic, partition in pause:
                with contextlib.suppress(Exception):
                    client.pause(TopicPartition(topic, partition))

        loop.call_soon_threadsafe(apply)
        self.metrics.aligned_paused.set(len(self._paused | pause) - len(resume))
        return True

    def _caught_up(self, topic: str, partition: int) -> bool:
        """Has this topic-partition delivered all the consumer knows it holds?"""
        key = (topic, partition)
        try:
            highwater = self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned here (any more): it holds nothing back
            return True
        if highwater is None:  # not fetched yet
            self._lagging.add(key)
            return False
        last = self.aligner.last_offset(topic, partition)
        if (last + 1 if last is not None else 0) >= highwater:
            return True
        quiet = time.monotonic() - self._last_delivery.get(key, 0.0)
        if quiet >= self.QUIET_SECONDS and self._positions.get(key, -1) >= highwater:
            return True
        self._lagging.add(key)
        return False

    async def _refresh_positions(self) -> None:
        """Consumer positions of the topic-partitions found lagging (for the quiet rule)."""
        for topic, partition in list(self._lagging):
            try:
                position = await self.app.consumer.position(TP(topic, partition))
            except Exception:  # unassigned meanwhile: it holds nothing back
                continue
            if position is not None:
                self._positions[topic, partition] = position
