"""The list of warnings people browse, acknowledge and resolve (the API's ``/alerts``).

The dedup records (:mod:`alerts.state`) are kept per customer and dedup key:
right for deciding whether to tell someone, wrong for "show me the latest
critical warnings". So every warning the worker takes from the alerts topic
is also written to an index: by alert id, newest first, and per customer;
with what the pipeline did with it (told the desk, deduplicated, silenced,
...), who acknowledged it and when its condition was resolved.

The index is a view for people, not the record (the alerts topic is), so it
is bounded: a warning is listed for ``retention`` after it arrived and at
most ``max_entries`` are kept, the oldest going first.

An acknowledgement says "someone is on it": the first one is kept (who,
when, a comment), later ones do not overwrite it. It does not mute anything;
a silence does that.

>>> from datetime import UTC, datetime
>>> alert = RiskAlert(
...     alert_id="a-1", dedup_key="C1:dpd:30", customer_id="C1", loan_id="L1",
...     severity="warning", source="rule", code="dpd_30", title="DPD 30", explanation={},
...     risk_score=420, risk_tier="medium", loan_class="special_mention",
...     triggered_at=datetime(2026, 2, 10, tzinfo=UTC), evidence_event_ids=["e1"],
...     rule_set_version="v1", status="firing")
>>> import asyncio
>>> index = MemoryAlertIndex()
>>> asyncio.run(index.add(alert, outcome="new", detail="", now_ms=1_000))
True
>>> asyncio.run(index.resolve_key("C1", "C1:dpd:30", by="risk state", now_ms=2_000))
1
>>> asyncio.run(index.get("a-1")).status
'resolved'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

import orjson
from redis.asyncio import Redis

from alerts.clock import from_ms
from schemas.outputs import RiskAlert

__all__ = [
    "AlertIndex",
    "AlertQuery",
    "IndexedAlert",
    "MemoryAlertIndex",
    "RedisAlertIndex",
    "Signoff",
]

AlertStatus = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Signoff:
    """Who acknowledged or resolved a warning, when, and why.

    ``by``: an operator's name, or for a resolution ``risk state`` or
    ``alerts topic``; ``at_ms``: when it was recorded (the service's clock).
    """

    by: str
    at_ms: int
    comment: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at_ms, "comment": self.comment}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signoff:
        return cls(by=d["by"], at_ms=int(d["at"]), comment=d.get("comment", ""))


@dataclass(frozen=True)
class IndexedAlert:
    """One warning as the index holds it."""

    alert: RiskAlert
    received_ms: int
    outcome: str
    """What the pipeline did when the warning first arrived (``alerts.pipeline.Outcome``)."""
    detail: str = ""
    acknowledged: Signoff | None = None
    resolution: Signoff | None = None

    @property
    def status(self) -> AlertStatus:
        if self.resolution is not None or self.alert.status == "resolved":
            return "resolved"
        return "firing"

    def view(self) -> dict[str, Any]:
        """The JSON the API shows."""
        a = self.alert
        ack = self.acknowledged
        res = self.resolution
        return {
            "alert_id": a.alert_id,
            "customer_id": a.customer_id,
            "loan_id": a.loan_id,
            "code": a.code,
            "severity": a.severity,
            "source": a.source,
            "title": a.title,
            "dedup_key": a.dedup_key,
            "triggered_at": a.triggered_at.isoformat(),
            "status": self.status,
            "received_at": from_ms(self.received_ms).isoformat(),
            "notification": {"outcome": self.outcome, "detail": self.detail or None},
            "acknowledged": None
            if ack is None
            else {"by": ack.by, "at": from_ms(ack.at_ms).isoformat(), "comment": ack.comment},
            "resolved": None
            if res is None
            else {"by": res.by, "at": from_ms(res.at_ms).isoformat(), "comment": res.comment},
            "alert": a.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class AlertQuery:
    """Filters of ``GET /alerts``; None means "any"."""

    status: AlertStatus | None = None
    severity: str | None = None
    customer_id: str | None = None
    code: str | None = None
    acknowledged: bool | None = None
    limit: int = 100

    def matches(self, item: IndexedAlert) -> bool:
        a = item.alert
        return (
            (self.status is None or item.status == self.status)
            and (self.severity is None or a.severity == self.severity)
            and (self.customer_id is None or a.customer_id == self.customer_id)
            and (self.code is None or a.code == self.code)
            and (self.acknowledged is None or (item.acknowledged is not None) == self.acknowledged)
        )


class AlertIndex(Protocol):
    """Where the listed warnings live."""

    async def add(self, alert: RiskAlert, *, outcome: str, detail: str, now_ms: int) -> bool:
        """List a warning (a redelivered one keeps its first entry); whether it was new."""
        ...

    async def get(self, alert_id: str) -> IndexedAlert | None: ...

    async def query(self, query: AlertQuery) -> list[IndexedAlert]:
        """Matching warnings, newest first, at most ``query.limit``."""
        ...

    async def acknowledge(
        self, alert_id: str, *, by: str, comment: str, now_ms: int
    ) -> IndexedAlert | None:
        """Record the first acknowledgement; the entry (None if unknown)."""
        ...

    async def resolve_key(
        self, customer_id: str, dedup_key: str, *, by: str, now_ms: int, comment: str = ""
    ) -> int:
        """Mark the customer's listed warnings of ``dedup_key`` resolved; how many changed."""
        ...


def _entry_json(alert: RiskAlert, outcome: str, detail: str, now_ms: int) -> bytes:
    return orjson.dumps(
        {
            "alert": orjson.Fragment(alert.model_dump_json().encode()),
            "received": now_ms,
            "outcome": outcome,
            "detail": detail,
        }
    )


def _entry(raw: bytes | str, ack: bytes | str | None, res: bytes | str | None) -> IndexedAlert:
    d = orjson.loads(raw)
    return IndexedAlert(
        alert=RiskAlert.model_validate(d["alert"]),
        received_ms=int(d["received"]),
        outcome=d["outcome"],
        detail=d.get("detail", ""),
        acknowledged=None if ack is None else Signoff.from_dict(orjson.loads(ack)),
        resolution=None if res is None else Signoff.from_dict(orjson.loads(res)),
    )


@dataclass
class MemoryAlertIndex:
    """The index in dicts: replay and unit tests. Same behaviour as the Redis one."""

    retention: timedelta = timedelta(days=30)
    max_entries: int = 200_000
    entries: dict[str, IndexedAlert] = field(default_factory=dict)
    _order: dict[str, tuple[int, int]] = field(default_factory=dict)
    _seq: int = 0

    def _trim(self, now_ms: int) -> None:
        cutoff = now_ms - int(self.retention.total_seconds() * 1000)
        for aid in [a for a, e in self.entries.items() if e.received_ms < cutoff]:
            self._drop(aid)
        excess = len(self.entries) - self.max_entries
        if excess > 0:
            for aid in sorted(self._order, key=self._order.__getitem__)[:excess]:
                self._drop(aid)

    def _drop(self, alert_id: str) -> None:
        self.entries.pop(alert_id, None)
        self._order.pop(alert_id, None)

    async def add(self, alert: RiskAlert, *, outcome: str, detail: str, now_ms: int) -> bool:
        added = alert.alert_id not in self.entries
        if added:
            self._seq += 1
            self.entries[alert.alert_id] = IndexedAlert(alert, now_ms, outcome, detail)
            self._order[alert.alert_id] = (now_ms, self._seq)
        self._trim(now_ms)
        return added

    async def get(self, alert_id: str) -> IndexedAlert | None:
        return self.entries.get(alert_id)

    async def query(self, query: AlertQuery) -> list[IndexedAlert]:
        newest = sorted(self._order, key=self._order.__getitem__, reverse=True)
        found = [self.entries[a] for a in newest if query.matches(self.entries[a])]
        return found[: query.limit]

    async def acknowledge(
        self, alert_id: str, *, by: str, comment: str, now_ms: int
    ) -> IndexedAlert | None:
        item = self.entries.get(alert_id)
        if item is None:
            return None
        if item.acknowledged is None:
            item = IndexedAlert(
                item.alert,
                item.received_ms,
                item.outcome,
                item.detail,
                Signoff(by, now_ms, comment),
                item.resolution,
            )
            self.entries[alert_id] = item
        return item

    async def resolve_key(
        self, customer_id: str, dedup_key: str, *, by: str, now_ms: int, comment: str = ""
    ) -> int:
        changed = 0
        for aid, item in list(self.entries.items()):
            a = item.alert
            if a.customer_id != customer_id or a.dedup_key != dedup_key:
                continue
            if item.resolution is not None:
                continue
            self.entries[aid] = IndexedAlert(
                a,
                item.received_ms,
                item.outcome,
                item.detail,
                item.acknowledged,
                Signoff(by, now_ms, comment),
            )
            changed += 1
        return changed


# -- Redis ----------------------------------------------------------------------------

# KEYS: time zset, customer zset, entries, acks, resolutions.
# ARGV: alert id, entry JSON, now, retention ms, max entries, resolution JSON or ''.
ADD_SCRIPT = """
local tkey, ckey, akey, ackkey, reskey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local now = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local added = redis.call('HSETNX', akey, id, ARGV[2])
if added == 1 then
  redis.call('ZADD', tkey, now, id)
  redis.call('ZADD', ckey, now, id)
  if ARGV[6] ~= '' then redis.call('HSETNX', reskey, id, ARGV[6]) end
end
redis.call('PEXPIRE', ckey, retention)
local cutoff = now - retention
redis.call('ZREMRANGEBYSCORE', ckey, '-inf', '(' .. cutoff)
local old = redis.call('ZRANGEBYSCORE', tkey, '-inf', '(' .. cutoff, 'LIMIT', 0, 500)
local function drop(ids)
  for _, old_id in ipairs(ids) do
    redis.call('ZREM', tkey, old_id)
    redis.call('HDEL', akey, old_id)
    redis.call('HDEL', ackkey, old_id)
    redis.call('HDEL', reskey, old_id)
  end
end
drop(old)
local excess = redis.call('ZCARD', tkey) - cap
if excess > 0 then
  drop(redis.call('ZRANGE', tkey, 0, math.min(excess, 500) - 1))
end
return added
"""

# KEYS: entries, acks. ARGV: alert id, ack JSON. -1: unknown alert; 1: recorded; 0: kept.
ACK_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""


class RedisAlertIndex:
    """The index in Redis, under ``{prefix}:al:ix:`` (see ``docs/redis-keys.md``).

    ==========================  =======  ==============================================
    ``{p}:ix:t``                zset     alert id -> when it arrived (ms): the listing
    ``{p}:ix:c:{customer_id}``  zset     the same, one customer's (expires with retention)
    ``{p}:ix:a``                hash     alert id -> the warning and what the pipeline did
    ``{p}:ix:ack``              hash     alert id -> first acknowledgement (who, when)
    ``{p}:ix:res``              hash     alert id -> resolution (who, when)
    ==========================  =======  ==============================================
    """

    PAGE = 200
    SCAN_LIMIT = 20_000
    """Most entries one filtered listing looks at before it answers with what it found."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        retention: timedelta = timedelta(days=30),
        max_entries: int = 200_000,
    ) -> None:
        self.redis = redis
        self.base = f"{prefix}:al:ix"
        self.retention_ms = int(retention.total_seconds() * 1000)
        self.max_entries = max_entries
        self._add = redis.register_script(ADD_SCRIPT)
        self._ack = redis.register_script(ACK_SCRIPT)

    @property
    def by_time(self) -> str:
        return f"{self.base}:t"

    def by_customer(self, customer_id: str) -> str:
        return f"{self.base}:c:{customer_id}"

    @property
    def entries(self) -> str:
        return f"{self.base}:a"

    @property
    def acks(self) -> str:
        return f"{self.base}:ack"

    @property
    def resolutions(self) -> str:
        return f"{self.base}:res"

    async def add(self, alert: RiskAlert, *, outcome: str, detail: str, now_ms: int) -> bool:
        resolution = (
            orjson.dumps(Signoff("alerts topic", now_ms).to_dict())
            if alert.status == "resolved"
            else b""
        )
        added = await self._add(
            keys=[
                self.by_time,
                self.by_customer(alert.customer_id),
                self.entries,
                self.acks,
                self.resolutions,
            ],
            args=[
                alert.alert_id,
                _entry_json(alert, outcome, detail, now_ms),
                now_ms,
                self.retention_ms,
                self.max_entries,
                resolution,
            ],
        )
        return bool(int(added))

    async def _load(self, ids: Sequence[bytes | str]) -> list[IndexedAlert | None]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.entries, list(ids))
            pipe.hmget(self.acks, list(ids))
            pipe.hmget(self.resolutions, list(ids))
            raws, acks, ress = await pipe.execute()
        return [
            None if raw is None else _entry(raw, ack, res)
            for raw, ack, res in zip(raws, acks, ress, strict=True)
        ]

    async def get(self, alert_id: str) -> IndexedAlert | None:
        return (await self._load([alert_id]))[0]

    async def query(self, query: AlertQuery) -> list[IndexedAlert]:
        key = self.by_time if query.customer_id is None else self.by_customer(query.customer_id)
        found: list[IndexedAlert] = []
        start = 0
        while len(found) < query.limit and start < self.SCAN_LIMIT:
            ids = await self.redis.zrevrange(key, start, start + self.PAGE - 1)
            if not ids:
                break
            start += len(ids)
            items = await self._load(ids)
            gone = [i for i, item in zip(ids, items, strict=True) if item is None]
            if gone and query.customer_id is not None:
                await self.redis.zrem(key, *gone)  # trimmed from the listing: forget here too
                start -= len(gone)
            found += [item for item in items if item is not None and query.matches(item)]
        return found[: query.limit]

    async def acknowledge(
        self, alert_id: str, *, by: str, comment: str, now_ms: int
    ) -> IndexedAlert | None:
        ack = orjson.dumps(Signoff(by, now_ms, comment).to_dict())
        done = int(await self._ack(keys=[self.entries, self.acks], args=[alert_id, ack]))
        if done < 0:
            return None
        return await self.get(alert_id)

    async def resolve_key(
        self, customer_id: str, dedup_key: str, *, by: str, now_ms: int, comment: str = ""
    ) -> int:
        ids = await self.redis.zrange(self.by_customer(customer_id), 0, -1)
        items = await self._load(ids)
        resolution = orjson.dumps(Signoff(by, now_ms, comment).to_dict())
        targets = [
            item.alert.alert_id
            for item in items
            if item is not None and item.alert.dedup_key == dedup_key and item.resolution is None
        ]
        if not targets:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for aid in targets:
                pipe.hsetnx(self.resolutions, aid, resolution)
            done = await pipe.execute()
        return sum(int(d) for d in done)
