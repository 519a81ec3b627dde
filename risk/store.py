"""Where customer state, applied-event markers and pending outputs live.

The contract every store keeps: :meth:`StateStore.commit` applies one step
atomically (the customer's new state, the marker that the event was applied,
and the outputs it produced go in together or not at all) and refuses a step
whose marker is already present. Outputs are not sent from the processing
path at all: they are appended to an outbox in the same atomic write and a
separate publisher moves them on. That is what lets a worker be killed at any
instant without losing a warning or sending one twice.

Whether an event was already applied is remembered in the customer's own
state (a short digest per event, see :class:`risk.customer.CustomerState`),
so the check and the update are one write; a commit made on an out-of-date
copy of the state is refused (``StateConflict``), so two writers can never
both apply one event.

``MemoryStateStore`` is the replay/test implementation; ``RedisStateStore``
(in :mod:`risk.redis_store`) is the worker's system of record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from risk.book import Book, book_delta, book_entry
from risk.customer import CustomerState


class StateConflict(Exception):
    """The customer's state changed since it was loaded: load again and retry."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One output waiting to be published: logical topic, key, encoded value."""

    topic: str
    key: str | None
    value: bytes


@dataclass(slots=True)
class Step:
    """One customer's share of a batch: its events applied in order, committed at once.

    A batch of input messages is applied per customer on one in-memory copy
    of the state and written with one commit per customer (the final state,
    every output of every event, the new event digests), so the store still
    sees an all-or-nothing write that either applies every one of those
    events or none. ``expected_seq`` is the ``seq`` of the copy the first
    event was applied to; ``watermark`` is the latest servicing-feed event
    time among the events, raised in the same write. Each record carries the
    position in the batch of the event that produced it: a store writes the
    outputs of a batch's committed steps in that order, so an outbox holds
    them in the order one-event-at-a-time processing would have written them
    (which matters for outputs keyed by another customer, e.g. related-party
    announcements from several customers). ``book_before`` is the customer's
    :func:`risk.book.book_entry` as loaded: the book's counters move by the
    difference in the same write (``None``: they are not moved).
    """

    state: CustomerState
    expected_seq: int
    shard: int
    records: list[tuple[int, OutboxRecord]] = field(default_factory=list)
    watermark: datetime | None = None
    book_before: Book | None = None


def needs_tick(state: CustomerState) -> bool:
    """Whether time alone can still change this customer's arrears."""
    return any(
        loan.status == "open" and any(not inst.settled for inst in loan.installments)
        for loan in state.loans.values()
    )


class StateStore(Protocol):
    """What the processor needs from a state store."""

    async def load(self, customer_id: str) -> CustomerState | None: ...

    async def commit(
        self,
        marker: str | None,
        state: CustomerState | None,
        records: list[OutboxRecord],
        *,
        shard: int = 0,
        expected_seq: int | None = None,
        book_before: Book | None = None,
    ) -> bool: ...

    async def tick_candidates(self) -> list[str]: ...

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState | None]:
        """Every given customer's state, in one round trip."""
        ...

    async def commit_many(self, steps: Sequence[Step]) -> list[bool]:
        """Commit each step atomically; ``False`` for a step whose state moved on."""
        ...

    def release(self, states: Sequence[CustomerState]) -> None:
        """Loaded states their caller did not change (a store may keep them)."""
        ...

    def peek(self, customer_id: str) -> CustomerState | None:
        """A kept copy of the customer's state, for reading only, or ``None``.

        It may be older than the stored state, never newer; since a state's
        ``as_of`` only moves forward, a kept ``as_of`` is a lower bound.
        """
        ...

    async def watermark(self, shard: int = 0) -> datetime | None: ...

    async def raise_watermark(self, at: datetime, shard: int = 0) -> None: ...


class MemoryStateStore:
    """An in-process store with the same semantics, for replay and tests."""

    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}
        self.markers: set[str] = set()
        self.outbox: list[OutboxRecord] = []
        self._due: set[str] = set()
        self._watermarks: dict[int, datetime] = {}
        self.book: Book = {}

    async def load(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    async def commit(
        self,
        marker: str | None,
        state: CustomerState | None,
        records: list[OutboxRecord],
        *,
        shard: int = 0,
        expected_seq: int | None = None,
        book_before: Book | None = None,
    ) -> bool:
        # One process, one writer per customer (the processor's lock), and the
        # state object itself is shared: there is no older copy to refuse.
        if marker is not None:
            if marker in self.markers:
                return False
            self.markers.add(marker)
        if state is not None:
            self.states[state.customer_id] = state
            if book_before is not None:
                for name, moved in book_delta(book_before, book_entry(state)).items():
                    self.book[name] = self.book.get(name, 0) + moved
            if needs_tick(state):
                self._due.add(state.customer_id)
            else:
                self._due.discard(state.customer_id)
        self.outbox.extend(records)
        return True

    async def tick_candidates(self) -> list[str]:
        return sorted(self._due)

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState | None]:
        return {c: self.states.get(c) for c in customer_ids}

    def release(self, states: Sequence[CustomerState]) -> None:
        """Nothing to do: the states handed out are the stored ones."""

    def peek(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    async def commit_many(self, steps: Sequence[Step]) -> list[bool]:
        for step in steps:
            await self.commit(None, step.state, [], shard=step.shard, book_before=step.book_before)
            if step.watermark is not None:
                await self.raise_watermark(step.watermark, step.shard)
        ordered = sorted(
            (record for step in steps for record in step.records), key=lambda r: r[0]
        )  # stable: an event's own outputs keep their order
        self.outbox.extend(rec for _pos, rec in ordered)
        return [True] * len(steps)

    async def watermark(self, shard: int = 0) -> datetime | None:
        return self._watermarks.get(shard)

    async def raise_watermark(self, at: datetime, shard: int = 0) -> None:
        current = self._watermarks.get(shard)
        if current is None or at > current:
            self._watermarks[shard] = at

    async def drain(self, shard: int = 0) -> list[OutboxRecord]:
        """Take every pending output (replay writes them straight to files)."""
        records, self.outbox = self.outbox, []
        return records

    async def customer_ids(self) -> list[str]:
        return sorted(self.states)
