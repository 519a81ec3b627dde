"""The worker's system of record: customer state, event markers and the outbox in Redis.

Key layout (``{p}`` is the configured prefix, ``cw`` by default; the layout is
also documented in ``docs/redis-keys.md``):

``{p}:c:{customer_id}``  string, ``{seq}|`` + the customer's state (zlib JSON); it
                         also remembers digests of the customer's last events
``{p}:m:{marker}``       string "1" with a TTL: that dead-lettered message was handled
``{p}:due``              set of customer ids whose arrears can still grow
``{p}:score``            sorted set, customer id by risk score (``state top``)
``{p}:ob:{shard}``       stream, outputs waiting to be published, per shard
``{p}:wm:{shard}``       string, the servicing feed's event-time watermark of a shard

One step (state, marker, outputs, indexes) is written by a single Lua script,
so Redis applies it wholly or not at all. The script refuses a step computed
from an out-of-date copy of the state (the ``seq`` prefix moved on), so
idempotency does not depend on the caller's check alone: the event digests
travel inside the very value being compared and set.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from risk.customer import CustomerState
from risk.store import OutboxRecord, StateConflict, needs_tick

COMMIT_SCRIPT = """
-- KEYS: marker (or ''), state, due set, score zset, outbox stream
-- ARGV: 1 marker ttl, 2 customer_id, 3 state blob (or ''), 4 due flag, 5 score,
--       6 expected seq, 7 expire seconds (0 = keep), 8 record count,
--       then topic, key, value for each record
-- Returns 1 when applied, 0 when the marker exists, -1 when the state moved on.
if KEYS[1] ~= '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
end
if ARGV[3] ~= '' then
  local current = redis.call('GET', KEYS[2])
  local seq = 0
  if current then seq = tonumber(string.match(current, '^(%d+)|')) or 0 end
  if seq ~= tonumber(ARGV[6]) then return -1 end
  redis.call('SET', KEYS[2], ARGV[3])
  if tonumber(ARGV[7]) > 0 then
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
  end
  if ARGV[4] == '1' then
    redis.call('SADD', KEYS[3], ARGV[2])
  else
    redis.call('SREM', KEYS[3], ARGV[2])
  end
  redis.call('ZADD', KEYS[4], tonumber(ARGV[5]), ARGV[2])
end
if KEYS[1] ~= '' then
  redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
end
local n = tonumber(ARGV[8])
for i = 0, n - 1 do
  local base = 9 + i * 3
  redis.call('XADD', KEYS[5], '*', 't', ARGV[base], 'k', ARGV[base + 1], 'v', ARGV[base + 2])
end
return 1
"""

RAISE_WATERMARK_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(ARGV[1]) > tonumber(string.match(current, '^[^|]+')) then
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
  return 1
end
return 0
"""


def encode_state(state: CustomerState) -> bytes:
    """``{seq}|`` then the state as zlib-compressed JSON (about a third of the size)."""
    return b"%d|" % state.seq + zlib.compress(orjson.dumps(state.to_dict()), 1)


def decode_state(blob: bytes) -> CustomerState:
    _seq, _, body = blob.partition(b"|")
    data: dict[str, Any] = orjson.loads(zlib.decompress(body))
    return CustomerState.from_dict(data)


def has_open_loan(state: CustomerState) -> bool:
    return any(loan.status == "open" for loan in state.loans.values())


class RedisStateStore:
    """State store on Redis; see the module docstring for the key layout."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "cw",
        marker_ttl_seconds: int,
        expire_inactive_seconds: int = 0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.marker_ttl = marker_ttl_seconds
        self.expire_inactive = expire_inactive_seconds
        self._commit = redis.register_script(COMMIT_SCRIPT)
        self._raise_wm = redis.register_script(RAISE_WATERMARK_SCRIPT)

    # -- keys -----------------------------------------------------------------

    def state_key(self, customer_id: str) -> str:
        return f"{self.prefix}:c:{customer_id}"

    def marker_key(self, marker: str) -> str:
        return f"{self.prefix}:m:{marker}"

    def outbox_key(self, shard: int) -> str:
        return f"{self.prefix}:ob:{shard}"

    @property
    def due_key(self) -> str:
        return f"{self.prefix}:due"

    @property
    def score_key(self) -> str:
        return f"{self.prefix}:score"

    def watermark_key(self, shard: int) -> str:
        return f"{self.prefix}:wm:{shard}"

    # -- StateStore -----------------------------------------------------------

    async def load(self, customer_id: str) -> CustomerState | None:
        blob = await self.redis.get(self.state_key(customer_id))
        return decode_state(blob) if blob is not None else None

    async def commit(
        self,
        marker: str | None,
        state: CustomerState | None,
        records: list[OutboxRecord],
        *,
        shard: int = 0,
        expected_seq: int | None = None,
    ) -> bool:
        """Apply one step atomically; see the module docstring.

        Raises :class:`StateConflict` when the stored state is no longer the
        one the step was computed from (``expected_seq``).
        """
        expire = 0
        if state is not None and self.expire_inactive and not has_open_loan(state):
            expire = self.expire_inactive  # nothing open: forget after a quiet period
        args: list[Any] = [
            self.marker_ttl,
            state.customer_id if state else "",
            encode_state(state) if state else b"",
            "1" if state is not None and needs_tick(state) else "0",
            state.risk_score if state else 0,
            expected_seq if expected_seq is not None else (state.seq - 1 if state else 0),
            expire,
            len(records),
        ]
        for rec in records:
            args += [rec.topic, rec.key or "", rec.value]
        keys = [
            self.marker_key(marker) if marker else "",
            self.state_key(state.customer_id) if state else "",
            self.due_key,
            self.score_key,
            self.outbox_key(shard),
        ]
        result = int(await self._commit(keys=keys, args=args))
        if result < 0:
            raise StateConflict(state.customer_id if state else "")
        return result == 1

    async def tick_candidates(self) -> list[str]:
        members = await self.redis.smembers(self.due_key)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def watermark(self, shard: int = 0) -> datetime | None:
        value = await self.redis.get(self.watermark_key(shard))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        return datetime.fromisoformat(text.split("|", 1)[1])

    async def raise_watermark(self, at: datetime, shard: int = 0) -> None:
        await self._raise_wm(
            keys=[self.watermark_key(shard)], args=[at.timestamp(), at.isoformat()]
        )

    async def drain(self, shard: int = 0) -> list[OutboxRecord]:
        """Take every pending output of one shard (replay with ``--redis``)."""
        records: list[OutboxRecord] = []
        while True:
            entries = await self.redis.xrange(self.outbox_key(shard), count=1000)
            if not entries:
                return records
            for _eid, f in entries:
                key = f[b"k"].decode() or None
                records.append(OutboxRecord(f[b"t"].decode(), key, f[b"v"]))
            await self.redis.xdel(self.outbox_key(shard), *[eid for eid, _ in entries])

    async def customer_ids(self) -> list[str]:
        """Every customer with state (a SCAN: for people and replay, not the hot path)."""
        prefix = f"{self.prefix}:c:"
        ids = [
            (k.decode() if isinstance(k, bytes) else k)[len(prefix) :]
            async for k in self.redis.scan_iter(match=f"{prefix}*", count=1000)
        ]
        return sorted(ids)

    async def clear(self) -> int:
        """Delete every key under this store's prefix (replay's own namespace only)."""
        deleted = 0
        batch: list[bytes | str] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.redis.delete(*batch)
                batch = []
        if batch:
            deleted += await self.redis.delete(*batch)
        return deleted

    # -- reading for people ---------------------------------------------------

    async def top(self, n: int) -> list[tuple[str, CustomerState]]:
        """The ``n`` riskiest customers by score, with their state.

        Ids whose state has expired are dropped from the index on the way.
        """
        found: list[tuple[str, CustomerState]] = []
        start = 0
        while len(found) < n:
            rows = await self.redis.zrevrange(self.score_key, start, start + n * 2 - 1)
            if not rows:
                break
            start += len(rows)
            ids = [m.decode() if isinstance(m, bytes) else m for m in rows]
            blobs = await self.redis.mget([self.state_key(c) for c in ids])
            for customer_id, blob in zip(ids, blobs, strict=True):
                if blob is None:
                    await self.redis.zrem(self.score_key, customer_id)
                    continue
                found.append((customer_id, decode_state(blob)))
                if len(found) >= n:
                    break
        return found
