"""The notification outbox and the delivery loop with per-channel retry.

A digest is first written to the outbox (in the same atomic step that takes
its warnings out of their group buffer), then delivered from there, and
deleted only after the channel accepted it. While the SMTP relay is down the
messages wait in the store, retried with exponential backoff, and go out
when it is back; nothing is lost in a crash or a restart.

Several workers deliver from one outbox. A worker *claims* a message with a
lease (its due time pushed past the lease, its id written against the
worker's name); another worker sees it again only after the lease ran out,
so a slow send is never doubled, and a worker that died leaves nothing
stuck. The lease is renewed right before each send. The one window left is
a crash between the relay's acceptance and the delete: the message is sent
again with the same ``Message-ID``, which mail clients and the desk's tools
use to drop the copy.

Each notifier says whether a failure is retryable (:class:`NotifyError`): a
relay that is down or answers 4xx is retried for ever by default; a
permanent refusal (5xx for the recipients or the content) parks the message
as *dead*, kept for inspection and :meth:`OutboxStore.requeue_dead`, not
dropped. An error a notifier did not classify is a bug in it and is parked
too, rather than retried in a tight loop.

>>> backoff(DeliveryConfig(), attempts=1).total_seconds(), backoff(DeliveryConfig(), 30)
(5.0, datetime.timedelta(seconds=600))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal, Protocol

import orjson

from alerts.clock import Clock, to_ms
from alerts.config import DeliveryConfig
from alerts.model import Notification

__all__ = [
    "Deliverer",
    "DeliveryReport",
    "MemoryOutbox",
    "Notifier",
    "NotifyError",
    "OutboxMessage",
    "OutboxStore",
    "backoff",
]

log = logging.getLogger(__name__)

MessageKind = Literal["digest", "ops"]


@dataclass(frozen=True)
class OutboxMessage:
    """One message for one receiver: a group's digest, or an operational notice."""

    id: str
    """Stable: the same group flush always has the same id (and ``Message-ID``)."""
    receiver: str
    kind: MessageKind
    created_ms: int
    group: dict[str, str] = field(default_factory=dict)
    items: tuple[dict[str, Any], ...] = ()
    """The notifications of a digest, as stored (see :meth:`notifications`)."""
    notice: dict[str, Any] = field(default_factory=dict)
    """An ops notice: ``subject`` and ``lines``."""
    attempts: int = 0
    error: str = ""

    def notifications(self) -> list[Notification]:
        return [Notification.from_dict(item) for item in self.items]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "receiver": self.receiver,
                "kind": self.kind,
                "created": self.created_ms,
                "group": self.group,
                "items": list(self.items),
                "notice": self.notice,
                "attempts": self.attempts,
                "error": self.error,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> OutboxMessage:
        d = orjson.loads(raw)
        return cls(
            id=d["id"],
            receiver=d["receiver"],
            kind=d["kind"],
            created_ms=int(d["created"]),
            group=dict(d.get("group") or {}),
            items=tuple(d.get("items") or ()),
            notice=dict(d.get("notice") or {}),
            attempts=int(d.get("attempts", 0)),
            error=d.get("error", ""),
        )


def digest_json(
    message_id: str,
    receiver: str,
    created_ms: int,
    group: Mapping[str, str],
    items: Sequence[bytes],
) -> bytes:
    """A digest's stored JSON with its notifications embedded as they are stored."""
    return orjson.dumps(
        {
            "id": message_id,
            "receiver": receiver,
            "kind": "digest",
            "created": created_ms,
            "group": dict(group),
            "items": [orjson.Fragment(item) for item in items],
            "notice": {},
            "attempts": 0,
            "error": "",
        }
    )


class NotifyError(Exception):
    """A channel could not deliver; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier(Protocol):
    """One channel (an email list, a chat hook): delivers a message or raises NotifyError."""

    async def notify(self, message: OutboxMessage) -> None: ...


class OutboxStore(Protocol):
    """Messages waiting for delivery, their leases, and the dead ones."""

    async def put(self, message: OutboxMessage, *, due_ms: int) -> bool:
        """Add a message unless one with its id exists; whether it was added."""
        ...

    async def claim(
        self, *, now_ms: int, lease_ms: int, owner: str, limit: int
    ) -> list[OutboxMessage]:
        """Take up to ``limit`` due messages for ``owner`` until ``now + lease``."""
        ...

    async def renew(self, message_id: str, *, owner: str, until_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds it (and the message still exists)."""
        ...

    async def complete(self, message_id: str, *, owner: str) -> bool:
        """Delete a delivered message; whether ``owner`` still held it."""
        ...

    async def retry(self, message: OutboxMessage, *, owner: str, due_ms: int) -> bool:
        """Store the message's new attempt count and error and make it due at ``due_ms``."""
        ...

    async def bury(self, message: OutboxMessage, *, owner: str) -> None:
        """Move a message that cannot be delivered to the dead ones."""
        ...

    async def pending(self) -> int: ...

    async def dead(self, limit: int = 100) -> list[OutboxMessage]: ...

    async def dead_count(self) -> int:
        """How many messages are parked as undeliverable."""
        ...

    async def requeue_dead(self, message_ids: Sequence[str] | None, *, now_ms: int) -> int:
        """Make dead messages (all, or these) due again; how many."""
        ...


class MemoryOutbox:
    """The outbox in dicts: replay and unit tests. Same semantics as the Redis one."""

    def __init__(self) -> None:
        self.messages: dict[str, bytes] = {}
        self.due: dict[str, int] = {}
        self.owners: dict[str, str] = {}
        self.dead_messages: dict[str, bytes] = {}

    async def put(self, message: OutboxMessage, *, due_ms: int) -> bool:
        return self.put_raw(message.id, message.to_json(), due_ms)

    def put_raw(self, message_id: str, raw: bytes, due_ms: int) -> bool:
        if message_id in self.messages:
            return False
        self.messages[message_id] = raw
        self.due[message_id] = due_ms
        return True

    async def claim(
        self, *, now_ms: int, lease_ms: int, owner: str, limit: int
    ) -> list[OutboxMessage]:
        ready = sorted((t, mid) for mid, t in self.due.items() if t <= now_ms)[:limit]
        out: list[OutboxMessage] = []
        for _, mid in ready:
            self.due[mid] = now_ms + lease_ms
            self.owners[mid] = owner
            out.append(OutboxMessage.from_json(self.messages[mid]))
        return out

    async def renew(self, message_id: str, *, owner: str, until_ms: int) -> bool:
        if message_id not in self.messages or self.owners.get(message_id) != owner:
            return False
        self.due[message_id] = until_ms
        return True

    async def complete(self, message_id: str, *, owner: str) -> bool:
        held = self.owners.pop(message_id, None) == owner
        self.messages.pop(message_id, None)
        self.due.pop(message_id, None)
        return held

    async def retry(self, message: OutboxMessage, *, owner: str, due_ms: int) -> bool:
        if message.id not in self.messages or self.owners.get(message.id) != owner:
            return False
        self.messages[message.id] = message.to_json()
        self.due[message.id] = due_ms
        self.owners.pop(message.id, None)
        return True

    async def bury(self, message: OutboxMessage, *, owner: str) -> None:
        self.dead_messages[message.id] = message.to_json()
        self.messages.pop(message.id, None)
        self.due.pop(message.id, None)
        self.owners.pop(message.id, None)

    async def pending(self) -> int:
        return len(self.messages)

    async def dead(self, limit: int = 100) -> list[OutboxMessage]:
        return [OutboxMessage.from_json(raw) for raw in list(self.dead_messages.values())[:limit]]

    async def dead_count(self) -> int:
        return len(self.dead_messages)

    async def requeue_dead(self, message_ids: Sequence[str] | None, *, now_ms: int) -> int:
        ids = list(self.dead_messages) if message_ids is None else list(message_ids)
        n = 0
        for mid in ids:
            raw = self.dead_messages.pop(mid, None)
            if raw is None:
                continue
            self.messages[mid] = raw
            self.due[mid] = now_ms
            n += 1
        return n


def backoff(config: DeliveryConfig, attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones (exponential, capped)."""
    seconds = config.initial_backoff.total_seconds() * config.multiplier ** max(0, attempts - 1)
    return min(config.max_backoff, timedelta(seconds=seconds))


@dataclass
class DeliveryReport:
    """What one delivery round did."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    lost_lease: int = 0

    @property
    def claimed(self) -> int:
        return self.sent + self.retried + self.dead + self.lost_lease


class Deliverer:
    """Delivers due outbox messages through their receiver's notifier."""

    def __init__(
        self,
        *,
        outbox: OutboxStore,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        config: DeliveryConfig,
        owner: str,
    ) -> None:
        self.outbox = outbox
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.config = config
        self.owner = owner
        self.wakeup = asyncio.Event()

    def _lease_ms(self) -> int:
        return int(self.config.lease.total_seconds() * 1000)

    async def deliver_once(self) -> DeliveryReport:
        """One round: claim due messages, send each, then delete, retry or bury it.

        After a retryable failure of a receiver's channel, that receiver's
        other messages in this round wait for the same backoff without an
        attempt counted: one refused connection says enough about the relay.
        """
        report = DeliveryReport()
        claimed = await self.outbox.claim(
            now_ms=to_ms(self.clock.now()),
            lease_ms=self._lease_ms(),
            owner=self.owner,
            limit=self.config.batch,
        )
        down: dict[str, int] = {}  # receiver -> due time of its retry this round
        for message in claimed:
            if message.receiver in down:
                await self.outbox.retry(message, owner=self.owner, due_ms=down[message.receiver])
                report.retried += 1
                continue
            notifier = self.notifiers.get(message.receiver)
            if notifier is None:
                failed = replace(
                    message,
                    attempts=message.attempts + 1,
                    error=f"no channel configured for receiver {message.receiver!r}",
                )
                log.error("alert outbox: %s; message %s parked", failed.error, message.id)
                await self.outbox.bury(failed, owner=self.owner)
                report.dead += 1
                continue
            until = to_ms(self.clock.now()) + self._lease_ms()
            if not await self.outbox.renew(message.id, owner=self.owner, until_ms=until):
                report.lost_lease += 1
                continue
            try:
                await notifier.notify(message)
            except NotifyError as exc:
                attempts = message.attempts + 1
                failed = replace(message, attempts=attempts, error=str(exc)[:500])
                limit = self.config.max_attempts
                if exc.retryable and (limit is None or attempts < limit):
                    due = to_ms(self.clock.now() + backoff(self.config, attempts))
                    await self.outbox.retry(failed, owner=self.owner, due_ms=due)
                    down[message.receiver] = due
                    report.retried += 1
                    log.warning(
                        "alert delivery to %s failed (attempt %d), retrying: %s",
                        message.receiver,
                        attempts,
                        exc,
                    )
                else:
                    await self.outbox.bury(failed, owner=self.owner)
                    report.dead += 1
                    log.error("alert delivery to %s failed for good: %s", message.receiver, exc)
            except Exception as exc:
                failed = replace(
                    message,
                    attempts=message.attempts + 1,
                    error=f"unexpected {type(exc).__name__}: {exc}"[:500],
                )
                log.exception("alert notifier for %s raised; message parked", message.receiver)
                await self.outbox.bury(failed, owner=self.owner)
                report.dead += 1
            else:
                if not await self.outbox.complete(message.id, owner=self.owner):
                    log.warning("alert message %s: lease lost while sending", message.id)
                report.sent += 1
        return report

    async def run(self, stop: asyncio.Event, *, idle: float = 1.0) -> None:
        """Deliver until ``stop`` is set; waits ``idle`` seconds (or a wakeup) when idle.

        A store that is unreachable is waited for, never fatal: the messages
        are in it, and delivery resumes when it answers again.
        """
        while not stop.is_set():
            try:
                report = await self.deliver_once()
            except Exception as exc:  # the store is down: wait and try again
                log.warning("alert outbox unavailable, will retry: %s", exc)
                report = DeliveryReport()
            if report.claimed == 0:
                self.wakeup.clear()
                waiters = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self.wakeup.wait()),
                ]
                try:
                    await asyncio.wait(waiters, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
