"""The alert path's durable state: dedup records, group buffers, and the step into the outbox.

Three writes must never come apart, or a warning is lost or told twice:

1. deciding to notify a warning (its dedup record) and putting the
   notification into its group buffer: :meth:`AlertStateStore.record`;
2. taking a group's notifications out of the buffer and writing the digest
   into the outbox: :meth:`AlertStateStore.flush_group`, guarded by the
   group's epoch so two workers cannot both flush one group.

So each is one call the store runs atomically (a Lua script in Redis, plain
code in the memory twin here). The group buffers live in the store rather
than in a worker's memory: a worker that dies during the group wait leaves
its pending notifications for the next one.

Grouping (Alertmanager's ``group_wait`` / ``group_interval``): the first
notification of a group waits ``group_wait`` to gather company; later ones
wait until ``group_interval`` after the group's previous digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from alerts.dedup import DedupRecord, decide, decide_resolve
from alerts.model import NotificationKind, encode_notification
from alerts.outbox import MemoryOutbox

__all__ = [
    "AlertStateStore",
    "FlushRequest",
    "GroupSnapshot",
    "GroupTarget",
    "MemoryAlertState",
    "RecordRequest",
    "RecordResult",
    "ResolveRequest",
    "due_after_enqueue",
]


@dataclass(frozen=True)
class GroupTarget:
    """A group a notification goes into: one per receiver of the warning's route."""

    gid: str
    receiver: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Timing:
    """Durations in milliseconds, as the stores take them."""

    repeat_ms: int
    forget_ms: int
    group_wait_ms: int
    group_interval_ms: int


@dataclass(frozen=True)
class RecordRequest:
    """One firing warning for the dedup-and-group step."""

    customer_id: str
    dedup_key: str
    alert_id: str
    severity: int
    alert_json: bytes
    route: str
    suppressed: str
    """Why it must not be notified ("" if it may): inhibited, silenced, held."""
    targets: tuple[GroupTarget, ...]
    now_ms: int
    timing: Timing


@dataclass(frozen=True)
class RecordResult:
    kind: NotificationKind | None
    reason: str
    firing_since_ms: int


@dataclass(frozen=True)
class ResolveRequest:
    """Resolve a firing key; ``notification`` is the resolved message to group if allowed."""

    customer_id: str
    dedup_key: str
    expected_alert_id: str
    """The record's alert id when the caller read it (refused if it moved since)."""
    now_ms: int
    allowed: bool
    notification: bytes
    snapshot: bytes | None
    targets: tuple[GroupTarget, ...]
    timing: Timing


@dataclass(frozen=True)
class GroupSnapshot:
    """A group's buffer as read before a flush."""

    gid: str
    receiver: str
    labels: dict[str, str]
    epoch: int
    last_ms: int
    items: list[bytes]


@dataclass(frozen=True)
class FlushRequest:
    """Take the first ``taken`` items of a group; write ``message`` (if any) to the outbox."""

    gid: str
    epoch: int
    taken: int
    now_ms: int
    message_id: str
    message: bytes | None
    timing: Timing
    unmark: tuple[tuple[str, str, str], ...] = field(default=())
    """(customer, dedup key, alert id) of items dropped at flush (inhibited or silenced
    since they were grouped): their records forget that they were notified."""


class AlertStateStore(Protocol):
    """Dedup records and group buffers; see the module docstring."""

    async def records(self, customer_id: str) -> dict[str, DedupRecord]:
        """The customer's records by dedup key (including stale ones)."""
        ...

    async def record(self, request: RecordRequest) -> RecordResult: ...

    async def resolve(self, request: ResolveRequest) -> tuple[bool, str]:
        """Whether a resolved notification was grouped, and why (see ``decide_resolve``)."""
        ...

    async def due_groups(self, now_ms: int, limit: int) -> list[str]: ...

    async def read_group(self, gid: str) -> GroupSnapshot | None: ...

    async def flush_group(self, request: FlushRequest) -> bool:
        """Apply a flush; False if the group's epoch moved (another worker flushed it)."""
        ...


def due_after_enqueue(last_ms: int, now_ms: int, wait_ms: int, interval_ms: int) -> int:
    """When a group that just got a notification should be flushed.

    >>> due_after_enqueue(0, 1000, 30, 300)  # a new group waits group_wait
    1030
    >>> due_after_enqueue(900, 1000, 30, 300)  # flushed recently: group_interval after that
    1200
    """
    if last_ms and now_ms < last_ms + interval_ms:
        return last_ms + interval_ms
    return now_ms + wait_ms


@dataclass
class _Group:
    receiver: str
    labels: dict[str, str]
    epoch: int = 0
    last_ms: int = 0
    items: list[bytes] = field(default_factory=list)


class MemoryAlertState:
    """The state in dicts, writing digests into a :class:`MemoryOutbox`."""

    def __init__(self, outbox: MemoryOutbox) -> None:
        self.outbox = outbox
        self._records: dict[str, dict[str, DedupRecord]] = {}
        self._groups: dict[str, _Group] = {}
        self._due: dict[str, int] = {}

    async def records(self, customer_id: str) -> dict[str, DedupRecord]:
        return dict(self._records.get(customer_id, {}))

    def _enqueue(
        self, targets: Sequence[GroupTarget], note: bytes, now_ms: int, timing: Timing
    ) -> None:
        for target in targets:
            group = self._groups.get(target.gid)
            if group is None:
                group = self._groups[target.gid] = _Group(target.receiver, dict(target.labels))
            group.items.append(note)
            if target.gid not in self._due:
                self._due[target.gid] = due_after_enqueue(
                    group.last_ms, now_ms, timing.group_wait_ms, timing.group_interval_ms
                )

    async def record(self, request: RecordRequest) -> RecordResult:
        records = self._records.setdefault(request.customer_id, {})
        prev = records.get(request.dedup_key)
        new, kind, why = decide(
            prev,
            alert_id=request.alert_id,
            severity=request.severity,
            now_ms=request.now_ms,
            suppressed=request.suppressed,
            deliverable=bool(request.targets),
            repeat_ms=request.timing.repeat_ms,
            forget_ms=request.timing.forget_ms,
            route=request.route,
            snap=request.alert_json,
        )
        records[request.dedup_key] = new
        self._prune(records, request.now_ms, request.timing.forget_ms)
        if kind is not None:
            note = encode_notification(
                request.alert_json, kind, request.route, request.now_ms, new.firing_since_ms
            )
            self._enqueue(request.targets, note, request.now_ms, request.timing)
        return RecordResult(kind, why, new.firing_since_ms)

    @staticmethod
    def _prune(records: dict[str, DedupRecord], now_ms: int, forget_ms: int) -> None:
        for key in [k for k, r in records.items() if not r.fresh(now_ms, forget_ms)]:
            del records[key]

    async def resolve(self, request: ResolveRequest) -> tuple[bool, str]:
        records = self._records.get(request.customer_id, {})
        prev = records.get(request.dedup_key)
        if prev is not None and prev.alert_id != request.expected_alert_id:
            return False, "conflict"
        new, notify, why = decide_resolve(
            prev,
            now_ms=request.now_ms,
            forget_ms=request.timing.forget_ms,
            allowed=request.allowed and bool(request.targets),
            snap=request.snapshot,
        )
        if new is None:
            return False, why
        records[request.dedup_key] = new
        if notify:
            self._enqueue(request.targets, request.notification, request.now_ms, request.timing)
        return notify, why

    async def due_groups(self, now_ms: int, limit: int) -> list[str]:
        ready = sorted((t, gid) for gid, t in self._due.items() if t <= now_ms)
        return [gid for _, gid in ready[:limit]]

    async def read_group(self, gid: str) -> GroupSnapshot | None:
        group = self._groups.get(gid)
        if group is None:
            self._due.pop(gid, None)
            return None
        return GroupSnapshot(
            gid,
            group.receiver,
            dict(group.labels),
            group.epoch,
            group.last_ms,
            list(group.items),
        )

    async def flush_group(self, request: FlushRequest) -> bool:
        group = self._groups.get(request.gid)
        if group is None or group.epoch != request.epoch:
            return False
        del group.items[: request.taken]
        group.epoch += 1
        if request.message is not None:
            group.last_ms = request.now_ms
            self.outbox.put_raw(request.message_id, request.message, request.now_ms)
        interval = request.timing.group_interval_ms
        if group.items:
            self._due[request.gid] = due_after_enqueue(
                group.last_ms, request.now_ms, request.timing.group_wait_ms, interval
            )
        elif request.now_ms - group.last_ms >= interval:
            del self._groups[request.gid]  # nothing left to space out: forget the group
            self._due.pop(request.gid, None)
        else:
            self._due[request.gid] = group.last_ms + interval  # come back to forget it
        for customer, key, alert_id in request.unmark:
            record = self._records.get(customer, {}).get(key)
            if record is not None and record.notified_alert_id == alert_id:
                self._records[customer][key] = _unmarked(record)
        return True


def _unmarked(record: DedupRecord) -> DedupRecord:
    return replace(record, notified_alert_id="", notified_ms=0, notified_severity=-1)
