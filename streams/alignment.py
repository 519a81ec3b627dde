"""Event-time alignment of the input topics, per partition number.

Why: producers key every input by customer, so a customer's transactions,
servicing, loan and customer events all arrive on the same partition number
of their topics; but Kafka delivers each topic-partition independently. With
a backlog the small topics (servicing, loans) run days of event time ahead of
the transaction feed, because a fetch of a fixed size covers more of their
history. Judged in that order, a salary credit is read after the instalment
check that found it missing, and the worker warns where ``creditwatch
replay`` (which goes strictly by ``occurred_at``) does not.

How: events are held per partition number and released in ``occurred_at``
order up to a *horizon*: the earliest of the latest event times seen on those
topic-partitions of the same number that may still deliver something older
(each topic-partition is written in event-time order, so nothing earlier can
come from it). A topic-partition that has delivered everything the consumer
knows of (its high watermark) does not hold the others back, which is the
normal case for a live worker: it then releases each event at once and adds
no latency. Only a backlog holds events, and only for as long as another
topic still has older ones to deliver.

Bounds: the caller stops fetching the topic-partitions that have events held
(:attr:`Released.ahead`) until the others have caught up; at most
``max_held`` events are held (beyond that the earliest are released, trading
order for memory); and a topic-partition that has delivered nothing for
``max_stall_seconds`` while not caught up stops holding the others back, so
one that stops delivering cannot stall the rest. How long an event waits is
not bounded by itself: with a large backlog the events of a small topic wait
for as long as the transaction feed needs to reach their time, which is the
point. Releases out of turn are counted.

This module knows nothing of Faust: the caller says which topic-partitions
are caught up and acknowledges what it processes. Held events are not
acknowledged, so a crash loses none of them.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CaughtUp = Callable[[str, int], bool]
"""``(topic, partition) -> bool``: has that topic-partition delivered all it has?"""


@dataclass(slots=True)
class Held:
    """One event waiting for its turn, with what the caller needs back."""

    occurred_at: datetime
    topic: str
    partition: int
    offset: int
    item: Any
    """Whatever the caller processes and acknowledges (opaque here)."""


@dataclass
class _Lane:
    """The held events of one partition number, and what each topic has shown of it."""

    heap: list[tuple[datetime, int, Held]] = field(default_factory=list)
    seen: dict[str, datetime] = field(default_factory=dict)
    """Per topic: the latest ``occurred_at`` delivered on this partition number."""
    last_offset: dict[str, int] = field(default_factory=dict)
    delivered_at: dict[str, float] = field(default_factory=dict)
    """Per topic: when it last delivered something here (monotonic clock)."""
    opened_at: float = 0.0
    held_by_topic: dict[str, int] = field(default_factory=dict)


@dataclass
class Released:
    """What one call to :meth:`EventTimeAligner.release` let go."""

    items: list[Held]
    forced_by_stall: int = 0
    forced_by_size: int = 0
    ahead: set[tuple[str, int]] = field(default_factory=set)
    """Pacing topic-partitions that still have events held (they run ahead in event
    time): the caller may stop fetching them until the others have caught up."""


class EventTimeAligner:
    """Merges the given topics by event time, separately for each partition number."""

    def __init__(
        self,
        topics: Iterable[str],
        *,
        max_held: int = 100_000,
        max_stall_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = tuple(topics)
        self.max_held = max_held
        self.max_stall_seconds = max_stall_seconds
        self.clock = clock
        self._lanes: dict[int, _Lane] = {}
        self._seq = itertools.count()
        self._held = 0

    @property
    def held(self) -> int:
        """Events waiting now."""
        return self._held

    def last_offset(self, topic: str, partition: int) -> int | None:
        """The highest offset seen on a topic-partition (held or released), if any."""
        lane = self._lanes.get(partition)
        return None if lane is None else lane.last_offset.get(topic)

    def add(self, events: Iterable[Held]) -> None:
        """Take events as they were delivered (each topic-partition in offset order)."""
        now = self.clock()
        for event in events:
            lane = self._lanes.get(event.partition)
            if lane is None:
                lane = self._lanes[event.partition] = _Lane(opened_at=now)
            heapq.heappush(lane.heap, (event.occurred_at, next(self._seq), event))
            lane.held_by_topic[event.topic] = lane.held_by_topic.get(event.topic, 0) + 1
            lane.delivered_at[event.topic] = now
            seen = lane.seen.get(event.topic)
            if seen is None or event.occurred_at > seen:
                lane.seen[event.topic] = event.occurred_at
            last = lane.last_offset.get(event.topic)
            if last is None or event.offset > last:
                lane.last_offset[event.topic] = event.offset
            self._held += 1

    def release(self, caught_up: CaughtUp, *, everything: bool = False) -> Released:
        """Events whose turn has come, each partition number's in ``occurred_at`` order.

        ``everything`` lets go of all that is held (a rebalance is handing
        partitions over, and the consumer waits for every taken event).
        """
        out = Released([])
        now = self.clock()
        for partition, lane in self._lanes.items():
            if not lane.heap:
                continue
            for topic, n in lane.held_by_topic.items():
                if n:  # waiting for its turn (paused by the caller) is not silence
                    lane.delivered_at[topic] = now
            if everything:
                self._pop_until(lane, None, out.items)
                continue
            horizon = self._horizon(lane, partition, caught_up, patient=True)
            if horizon is not _NONE:
                self._pop_until(lane, horizon, out.items)
            impatient = self._horizon(lane, partition, caught_up, patient=False)
            if impatient is not _NONE and lane.heap:
                before = len(out.items)
                self._pop_until(lane, impatient, out.items)
                out.forced_by_stall += len(out.items) - before
        if self._held > self.max_held:
            out.forced_by_size += self._shed(out.items)
        pacing = set(self.topics)
        for partition, lane in self._lanes.items():
            out.ahead.update(
                (topic, partition)
                for topic, n in lane.held_by_topic.items()
                if n and topic in pacing
            )
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is known of partition numbers no longer assigned (nothing held there)."""
        for partition in partitions:
            lane = self._lanes.get(partition)
            if lane is not None and not lane.heap:
                del self._lanes[partition]

    # -- internals --------------------------------------------------------------

    def _horizon(self, lane: _Lane, partition: int, caught_up: CaughtUp, *, patient: bool) -> Any:
        """The latest ``occurred_at`` releasable now (None: no limit; _NONE: nothing).

        Not ``patient``: a topic-partition silent for ``max_stall_seconds``
        (since it last delivered here, or since the first event here) is
        left out, as if it had caught up.
        """
        horizon: datetime | None = None
        stalled_before = self.clock() - self.max_stall_seconds
        for topic in self.topics:
            if not patient and lane.delivered_at.get(topic, lane.opened_at) <= stalled_before:
                continue
            if caught_up(topic, partition):
                continue
            seen = lane.seen.get(topic)
            if seen is None:
                return _NONE  # it may still deliver something older than anything held
            if horizon is None or seen < horizon:
                horizon = seen
        return horizon

    def _pop_until(self, lane: _Lane, horizon: datetime | None, into: list[Held]) -> None:
        heap = lane.heap
        while heap and (horizon is None or heap[0][0] <= horizon):
            _at, _seq, held = heapq.heappop(heap)
            lane.held_by_topic[held.topic] -= 1
            into.append(held)
            self._held -= 1

    def _shed(self, into: list[Held]) -> int:
        """Release the earliest events of the fullest lanes until under ``max_held``."""
        shed = 0
        while self._held > self.max_held:
            lane = max(self._lanes.values(), key=lambda lane: len(lane.heap))
            _at, _seq, held = heapq.heappop(lane.heap)
            lane.held_by_topic[held.topic] -= 1
            into.append(held)
            self._held -= 1
            shed += 1
        return shed


class _NoneType:
    """Marker: nothing may be released on this partition number yet."""

    __slots__ = ()


_NONE: Any = _NoneType()
