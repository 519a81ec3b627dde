"""Silences: an operator mutes warnings for a while, saying who and why.

A silence is a list of matchers (customer, rule code, severity or any other
label), a start and an end, an author and a reason. While it is active,
matching warnings are recorded (so they still inhibit others and can be
resolved) but nobody is told. Silences end by themselves at ``ends_at``; an
operator can expire one early; nothing is ever edited in place, so the list
is an audit trail until ``retention`` after the end, when it is purged.

The store is shared (Redis) so a silence set on one worker holds on all of
them and across restarts; :class:`Silences` caches the list and re-reads it
only when the store's version counter moved, looking at the counter at most
once per ``refresh`` (a second): a silence set on another worker applies
within that second, and again when the group is flushed.

These are the functions the command line and the HTTP API call:
:meth:`Silences.create`, :meth:`Silences.list`, :meth:`Silences.get`,
:meth:`Silences.expire`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeAlias

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from alerts.clock import Clock
from alerts.matchers import Matcher, all_match

__all__ = [
    "MemorySilenceStore",
    "Silence",
    "SilenceError",
    "SilenceState",
    "SilenceStore",
    "Silences",
]

SilenceState: TypeAlias = Literal["pending", "active", "expired"]

MAX_DURATION = timedelta(days=90)
"""Longest silence: a forgotten silence must not hide a customer for ever."""


class SilenceError(ValueError):
    """A silence request that cannot be honoured (unknown id, bad window)."""


class Silence(BaseModel):
    """One silence, as stored and as the API shows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    matchers: tuple[Matcher, ...] = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)
    created_at: AwareDatetime
    expired_by: str | None = None

    @model_validator(mode="after")
    def _window(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("a silence must end after it starts")
        return self

    def state(self, now: datetime) -> SilenceState:
        if now >= self.ends_at:
            return "expired"
        if now < self.starts_at:
            return "pending"
        return "active"

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        return self.state(now) == "active" and all_match(self.matchers, labels)


class SilenceStore(Protocol):
    """Where silences live; ``version`` changes on every write."""

    async def put(self, silence: Silence) -> None: ...

    async def get(self, silence_id: str) -> Silence | None: ...

    async def all(self) -> list[Silence]: ...

    async def delete(self, silence_ids: Sequence[str]) -> None: ...

    async def version(self) -> int: ...


class MemorySilenceStore:
    """Silences in a dict: replay and unit tests."""

    def __init__(self) -> None:
        self._items: dict[str, Silence] = {}
        self._version = 0

    async def put(self, silence: Silence) -> None:
        self._items[silence.id] = silence
        self._version += 1

    async def get(self, silence_id: str) -> Silence | None:
        return self._items.get(silence_id)

    async def all(self) -> list[Silence]:
        return list(self._items.values())

    async def delete(self, silence_ids: Sequence[str]) -> None:
        for sid in silence_ids:
            self._items.pop(sid, None)
        self._version += 1

    async def version(self) -> int:
        return self._version


class Silences:
    """Create, list, expire and match silences."""

    def __init__(
        self,
        store: SilenceStore,
        clock: Clock,
        *,
        retention: timedelta = timedelta(days=5),
        refresh: timedelta = timedelta(seconds=1),
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.clock = clock
        self.retention = retention
        self.new_id = new_id
        self.refresh = refresh
        self._cached: list[Silence] = []
        self._cached_version: int | None = None
        self._checked_at: datetime | None = None

    async def create(
        self,
        matchers: Iterable[Matcher | str],
        *,
        created_by: str,
        comment: str,
        duration: timedelta | None = None,
        ends_at: datetime | None = None,
        starts_at: datetime | None = None,
    ) -> Silence:
        """A new silence from now (or ``starts_at``) for ``duration`` or until ``ends_at``.

        Matchers may be given written (``"code=dpd_30"``); exactly one of
        ``duration`` and ``ends_at`` is required.
        """
        if (duration is None) == (ends_at is None):
            raise SilenceError("give exactly one of duration and ends_at")
        now = self.clock.now()
        start = starts_at or now
        end = ends_at if ends_at is not None else start + (duration or timedelta(0))
        if end <= now:
            raise SilenceError("the silence would already be over")
        if end - start > MAX_DURATION:
            raise SilenceError(f"a silence may last at most {MAX_DURATION.days} days")
        parsed = [m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers]
        silence = Silence(
            id=self.new_id(),
            matchers=tuple(parsed),
            starts_at=start,
            ends_at=end,
            created_by=created_by,
            comment=comment,
            created_at=now,
        )
        await self.store.put(silence)
        self._checked_at = None  # this instance sees its own change at once
        await self._purge(now)
        return silence

    async def get(self, silence_id: str) -> Silence:
        silence = await self.store.get(silence_id)
        if silence is None:
            raise SilenceError(f"no silence {silence_id!r}")
        return silence

    async def list(self, state: SilenceState | None = None) -> list[Silence]:
        """Silences (optionally only those in ``state``), latest ending first."""
        now = self.clock.now()
        items = await self.store.all()
        if state is not None:
            items = [s for s in items if s.state(now) == state]
        return sorted(items, key=lambda s: (s.ends_at, s.id), reverse=True)

    async def expire(self, silence_id: str, *, by: str) -> Silence:
        """End a silence now; a pending one is ended before it starts. Idempotent."""
        silence = await self.get(silence_id)
        now = self.clock.now()
        if silence.state(now) == "expired":
            return silence
        # ends now; a pending one gets a start just before, so the window stays valid
        start = min(silence.starts_at, now - timedelta(microseconds=1))
        ended = Silence.model_validate(
            {**silence.model_dump(), "starts_at": start, "ends_at": now, "expired_by": by}
        )
        await self.store.put(ended)
        self._checked_at = None
        return ended

    async def muting(self, labels: Mapping[str, str]) -> list[str]:
        """Ids of the active silences that mute a warning with these labels."""
        now = self.clock.now()
        return [s.id for s in await self._current() if s.mutes(labels, now)]

    async def _current(self) -> list[Silence]:
        now = self.clock.now()
        if self._checked_at is not None and timedelta(0) <= now - self._checked_at < self.refresh:
            return self._cached
        version = await self.store.version()
        if version != self._cached_version:
            self._cached = await self.store.all()
            self._cached_version = version
        self._checked_at = now
        return self._cached

    async def _purge(self, now: datetime) -> None:
        old = [s.id for s in await self.store.all() if now - s.ends_at > self.retention]
        if old:
            await self.store.delete(old)
