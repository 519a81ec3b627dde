"""Circuit breaker: when one rule suddenly fires for a large share of the book, hold it.

A rule that warns for 5% of all customers within an hour is far more often
a bad threshold or a broken feed (a servicing file that marked every
instalment unpaid) than a real event, and a thousand emails bury the desk.
So each rule's firing rate is counted as distinct customers within a
sliding window; past the trip point its warnings are *held*, kept in the
store, not dropped, and operations is told (an ops notification, and
:meth:`CircuitBreaker.snapshot` for a metric). The breaker closes again when
an operator releases it (delivering or discarding what was held) or by
itself once the rate falls back under the release point for a while.

The count and the decision are one atomic step in the store, shared by all
workers, so two workers cannot each see half the flood.

>>> trip_point(BreakerConfig(min_customers=50, max_share=0.05), population=10_000)
500
>>> trip_point(BreakerConfig(min_customers=50, max_share=0.05), population=None)
50
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal, Protocol

import orjson

from alerts.clock import Clock, to_ms
from alerts.config import BreakerConfig

__all__ = [
    "BreakerHit",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "MemoryBreakerStore",
    "trip_point",
]

Transition = Literal["tripped", "auto_released", "released"]


@dataclass(frozen=True)
class BreakerState:
    """One rule's breaker, as operations sees it."""

    code: str
    open: bool
    since_ms: int
    """When it last opened (0: never)."""
    count: int
    """Distinct customers within the window at the last look."""
    trip_at: int
    held: int
    """Warnings held and not yet released or discarded."""
    closed_ms: int = 0
    closed_by: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> BreakerState:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True)
class BreakerHit:
    """The store's answer to one warning: hold it or let it through, and what changed."""

    hold: bool
    transition: Transition | None
    state: BreakerState


class BreakerStore(Protocol):
    """Counting, state and held warnings of every rule's breaker."""

    async def hit(
        self,
        code: str,
        customer_id: str,
        *,
        now_ms: int,
        window_ms: int,
        trip_at: int,
        release_at: int,
        min_open_ms: int,
        alert_json: bytes,
    ) -> BreakerHit: ...

    async def check_release(
        self, code: str, *, now_ms: int, window_ms: int, release_at: int, min_open_ms: int
    ) -> BreakerState | None:
        """Close an open breaker whose rate fell back; the closed state if it did."""
        ...

    async def close(self, code: str, *, now_ms: int, by: str) -> BreakerState | None:
        """Close a breaker now and restart its count; None if it has no state."""
        ...

    async def states(self) -> dict[str, BreakerState]: ...

    async def held(self, code: str, limit: int) -> list[bytes]:
        """The oldest ``limit`` held warnings (JSON), without removing them."""
        ...

    async def drop_held(self, code: str, n: int) -> None:
        """Remove the oldest ``n`` held warnings (after they were dealt with)."""
        ...


class MemoryBreakerStore:
    """Breakers in dicts: replay and unit tests."""

    def __init__(self) -> None:
        self._hits: dict[str, dict[str, int]] = {}
        self._states: dict[str, BreakerState] = {}
        self._held: dict[str, deque[bytes]] = {}

    def _count(self, code: str, now_ms: int, window_ms: int) -> int:
        hits = self._hits.setdefault(code, {})
        for customer in [c for c, t in hits.items() if t <= now_ms - window_ms]:
            del hits[customer]
        return len(hits)

    async def hit(
        self,
        code: str,
        customer_id: str,
        *,
        now_ms: int,
        window_ms: int,
        trip_at: int,
        release_at: int,
        min_open_ms: int,
        alert_json: bytes,
    ) -> BreakerHit:
        hits = self._hits.setdefault(code, {})
        hits[customer_id] = max(now_ms, hits.get(customer_id, now_ms))
        count = self._count(code, now_ms, window_ms)
        held = self._held.setdefault(code, deque())
        state = self._states.get(code) or BreakerState(code, False, 0, 0, trip_at, 0)
        transition: Transition | None = None
        if not state.open:
            if count >= trip_at:
                state = replace(state, open=True, since_ms=now_ms, closed_ms=0, closed_by="")
                transition = "tripped"
        elif count <= release_at and now_ms - state.since_ms >= min_open_ms:
            state = replace(state, open=False, closed_ms=now_ms, closed_by="auto")
            transition = "auto_released"
        if state.open:
            held.append(alert_json)
        state = replace(state, count=count, trip_at=trip_at, held=len(held))
        self._states[code] = state
        return BreakerHit(hold=state.open, transition=transition, state=state)

    async def check_release(
        self, code: str, *, now_ms: int, window_ms: int, release_at: int, min_open_ms: int
    ) -> BreakerState | None:
        state = self._states.get(code)
        if state is None or not state.open:
            return None
        count = self._count(code, now_ms, window_ms)
        state = replace(state, count=count)
        if count <= release_at and now_ms - state.since_ms >= min_open_ms:
            state = replace(state, open=False, closed_ms=now_ms, closed_by="auto")
            self._states[code] = state
            return state
        self._states[code] = state
        return None

    async def close(self, code: str, *, now_ms: int, by: str) -> BreakerState | None:
        state = self._states.get(code)
        if state is None:
            return None
        self._hits.pop(code, None)
        state = replace(state, open=False, count=0, closed_ms=now_ms, closed_by=by)
        self._states[code] = state
        return state

    async def states(self) -> dict[str, BreakerState]:
        return dict(self._states)

    async def held(self, code: str, limit: int) -> list[bytes]:
        return list(self._held.get(code, ()))[:limit]

    async def drop_held(self, code: str, n: int) -> None:
        held = self._held.get(code)
        if held is None:
            return
        for _ in range(min(n, len(held))):
            held.popleft()
        state = self._states.get(code)
        if state is not None:
            self._states[code] = replace(state, held=len(held))


def trip_point(config: BreakerConfig, population: int | None) -> int:
    """Distinct customers within the window at which a rule's breaker opens."""
    share = math.ceil(config.max_share * population) if population else 0
    return max(config.min_customers, share)


def release_point(config: BreakerConfig, trip_at: int) -> int:
    """Distinct customers within the window at or under which it may close by itself."""
    return math.floor(trip_at * config.release_ratio)


class CircuitBreaker:
    """Counts each rule's firing rate and holds a rule's warnings while its breaker is open."""

    def __init__(
        self,
        store: BreakerStore,
        config: BreakerConfig,
        clock: Clock,
        *,
        population: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.population = population
        self._population: int | None = None
        self._population_ms: int | None = None
        self._snapshot: dict[str, BreakerState] = {}

    @property
    def snapshot(self) -> dict[str, BreakerState]:
        """The last known state of every rule's breaker (synchronous: for metric collectors)."""
        return dict(self._snapshot)

    async def _trip_at(self, now_ms: int) -> int:
        refresh = int(self.config.population_refresh.total_seconds() * 1000)
        if self.population is not None and (
            self._population_ms is None or now_ms - self._population_ms >= refresh
        ):
            self._population = await self.population()
            self._population_ms = now_ms
        return trip_point(self.config, self._population)

    def _ms(self, field: str) -> int:
        return int(getattr(self.config, field).total_seconds() * 1000)

    async def admit(self, code: str, customer_id: str, alert_json: bytes) -> BreakerHit | None:
        """Count one deliverable warning; None when breakers are off or the rule is exempt."""
        if not self.config.enabled or code in self.config.exempt_codes:
            return None
        now_ms = to_ms(self.clock.now())
        trip_at = await self._trip_at(now_ms)
        hit = await self.store.hit(
            code,
            customer_id,
            now_ms=now_ms,
            window_ms=self._ms("window"),
            trip_at=trip_at,
            release_at=release_point(self.config, trip_at),
            min_open_ms=self._ms("min_open"),
            alert_json=alert_json,
        )
        self._snapshot[code] = hit.state
        return hit

    async def sweep(self) -> list[BreakerState]:
        """Close open breakers whose rate fell back; the ones that closed now."""
        closed: list[BreakerState] = []
        if not self.config.enabled:
            return closed
        now_ms = to_ms(self.clock.now())
        states = await self.store.states()
        for code, state in states.items():
            if not state.open:
                continue
            trip_at = await self._trip_at(now_ms)
            done = await self.store.check_release(
                code,
                now_ms=now_ms,
                window_ms=self._ms("window"),
                release_at=release_point(self.config, trip_at),
                min_open_ms=self._ms("min_open"),
            )
            if done is not None:
                states[code] = done
                closed.append(done)
        self._snapshot = await self.store.states()
        return closed

    async def states(self) -> list[BreakerState]:
        """Every rule's breaker, open ones first (for the CLI and the API)."""
        states = await self.store.states()
        self._snapshot = dict(states)
        return sorted(states.values(), key=lambda s: (not s.open, s.code))

    async def close(self, code: str, *, by: str) -> BreakerState | None:
        state = await self.store.close(code, now_ms=to_ms(self.clock.now()), by=by)
        if state is not None:
            self._snapshot[code] = state
        return state

    async def held(self, code: str, limit: int = 1000) -> list[bytes]:
        return await self.store.held(code, limit)

    async def drop_held(self, code: str, n: int) -> None:
        await self.store.drop_held(code, n)
        self._snapshot = await self.store.states()
