"""Where customer state, applied-event markers and pending outputs live.

The contract every store keeps: :meth:`StateStore.commit` applies one step
atomically (the customer's new state, the marker that the event was applied,
and the outputs it produced go in together or not at all) and refuses a step
whose marker is already present. Outputs are not sent from the processing
path at all: they are appended to an outbox in the same atomic write and a
separate publisher moves them on. That is what lets a worker be killed at any
instant without losing a warning or sending one twice.

``MemoryStateStore`` is the replay/test implementation; ``RedisStateStore``
(in :mod:`risk.redis_store`) is the worker's system of record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from risk.customer import CustomerState


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One output waiting to be published: logical topic, key, encoded value."""

    topic: str
    key: str | None
    value: bytes


def needs_tick(state: CustomerState) -> bool:
    """Whether time alone can still change this customer's arrears."""
    return any(
        loan.status == "open" and any(not inst.settled for inst in loan.installments)
        for loan in state.loans.values()
    )


class StateStore(Protocol):
    """What the processor needs from a state store."""

    async def load(self, customer_id: str) -> CustomerState | None: ...

    async def applied(self, marker: str) -> bool: ...

    async def load_unless_applied(
        self, customer_id: str, marker: str
    ) -> tuple[bool, CustomerState | None]: ...

    async def commit(
        self,
        marker: str | None,
        state: CustomerState | None,
        records: list[OutboxRecord],
        *,
        shard: int = 0,
    ) -> bool: ...

    async def tick_candidates(self) -> list[str]: ...

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

    async def load(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    async def applied(self, marker: str) -> bool:
        return marker in self.markers

    async def load_unless_applied(
        self, customer_id: str, marker: str
    ) -> tuple[bool, CustomerState | None]:
        if marker in self.markers:
            return True, None
        return False, self.states.get(customer_id)

    async def commit(
        self,
        marker: str | None,
        state: CustomerState | None,
        records: list[OutboxRecord],
        *,
        shard: int = 0,
    ) -> bool:
        if marker is not None:
            if marker in self.markers:
                return False
            self.markers.add(marker)
        if state is not None:
            self.states[state.customer_id] = state
            if needs_tick(state):
                self._due.add(state.customer_id)
            else:
                self._due.discard(state.customer_id)
        self.outbox.extend(records)
        return True

    async def tick_candidates(self) -> list[str]:
        return sorted(self._due)

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
