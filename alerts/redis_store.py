"""The alert path's state in Redis: shared by all workers, kept across restarts.

Every step that must not come apart is one Lua script (Redis runs a script
atomically): record a warning and group its notification; flush a group into
the outbox; claim, renew, complete, retry and bury outbox messages; count a
breaker hit and hold the warning. Times are passed in by the caller (the
injected clock), never read with ``TIME``, so behaviour is reproducible and
matches the memory twins exactly; the shared contract tests run both.

Key layout (``{p}`` is the service's key prefix followed by ``:al``):

==========================  =======  ==============================================
``{p}:r:{customer_id}``     hash     dedup key -> record JSON (``alerts.dedup``);
                                     expires ``forget_after`` after the last write
``{p}:g:due``               zset     group id -> when to flush it (ms)
``{p}:g:m:{gid}``           string   group meta: receiver, labels, epoch, last flush
``{p}:g:b:{gid}``           list     the group's pending notifications (JSON)
``{p}:ob:m``                hash     outbox message id -> message JSON
``{p}:ob:due``              zset     message id -> next attempt / lease end (ms)
``{p}:ob:own``              hash     message id -> worker holding its lease
``{p}:ob:dead``             hash     message id -> message that could not be delivered
``{p}:sil``                 hash     silence id -> silence JSON
``{p}:sil:v``               string   silences version (incremented on every write)
``{p}:br:s``                hash     rule code -> breaker state JSON
``{p}:br:h:{code}``         zset     customer id -> last hit (ms), within the window
``{p}:br:held:{code}``      list     warnings held while the breaker was open
==========================  =======  ==============================================

The list of warnings people browse (``{p}:ix:*``) is :class:`alerts.index.RedisAlertIndex`;
``docs/redis-keys.md`` has every key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from alerts.breaker import BreakerHit, BreakerState
from alerts.dedup import DedupRecord
from alerts.outbox import OutboxMessage
from alerts.silences import Silence
from alerts.state import (
    FlushRequest,
    GroupSnapshot,
    GroupTarget,
    RecordRequest,
    RecordResult,
    ResolveRequest,
)

__all__ = [
    "RedisAlertState",
    "RedisBreakerStore",
    "RedisKeys",
    "RedisOutbox",
    "RedisSilenceStore",
]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisKeys:
    """Key names under one prefix (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}:al"

    def records(self, customer_id: str) -> str:
        return f"{self.base}:r:{customer_id}"

    @property
    def group_due(self) -> str:
        return f"{self.base}:g:due"

    def group_meta(self, gid: str) -> str:
        return f"{self.base}:g:m:{gid}"

    def group_buffer(self, gid: str) -> str:
        return f"{self.base}:g:b:{gid}"

    @property
    def outbox(self) -> str:
        return f"{self.base}:ob:m"

    @property
    def outbox_due(self) -> str:
        return f"{self.base}:ob:due"

    @property
    def outbox_owner(self) -> str:
        return f"{self.base}:ob:own"

    @property
    def outbox_dead(self) -> str:
        return f"{self.base}:ob:dead"

    @property
    def silences(self) -> str:
        return f"{self.base}:sil"

    @property
    def silences_version(self) -> str:
        return f"{self.base}:sil:v"

    @property
    def breaker_states(self) -> str:
        return f"{self.base}:br:s"

    def breaker_hits(self, code: str) -> str:
        return f"{self.base}:br:h:{code}"

    def breaker_held(self, code: str) -> str:
        return f"{self.base}:br:held:{code}"


# -- dedup and groups -----------------------------------------------------------------

# Puts one notification into each target group: KEYS from `keybase` are
# (meta, buffer) pairs, ARGV from `argbase` are (gid, initial meta JSON) pairs.
_ENQUEUE = """
local function enqueue(note, now, wait_ms, interval_ms, duekey, keybase, argbase, n)
  for i = 1, n do
    local gid = ARGV[argbase + 2 * (i - 1)]
    local initial = ARGV[argbase + 2 * (i - 1) + 1]
    local mkey = KEYS[keybase + 2 * (i - 1)]
    local bkey = KEYS[keybase + 2 * (i - 1) + 1]
    local meta = redis.call('GET', mkey)
    local last = 0
    if meta then
      last = tonumber(cjson.decode(meta).last)
    else
      redis.call('SET', mkey, initial)
    end
    redis.call('RPUSH', bkey, note)
    local due = now + wait_ms
    if last > 0 and now < last + interval_ms then
      due = last + interval_ms
    end
    redis.call('ZADD', duekey, 'NX', due, gid)
  end
end
"""

# Mirrors alerts.dedup.decide and MemoryAlertState.record.
RECORD_SCRIPT = (
    _ENQUEUE
    + """
local rkey, duekey = KEYS[1], KEYS[2]
local field = ARGV[1]
local now = tonumber(ARGV[2])
local sev = tonumber(ARGV[3])
local aid = ARGV[4]
local snap = ARGV[5]
local route = ARGV[6]
local route_json = ARGV[7]
local sup = ARGV[8]
local repeat_ms = tonumber(ARGV[9])
local forget_ms = tonumber(ARGV[10])
local wait_ms = tonumber(ARGV[11])
local interval_ms = tonumber(ARGV[12])
local ntargets = tonumber(ARGV[13])

local prev = nil
local raw = redis.call('HGET', rkey, field)
if raw then prev = cjson.decode(raw) end
if prev and now - tonumber(prev.seen) >= forget_ms then prev = nil end
local ep = nil
if prev and prev.st == 'firing' then ep = prev end

local rec = {st = 'firing', sev = sev, aid = aid, naid = '', first = now, seen = now,
             nt = 0, nsev = -1, route = route, snap = snap, sup = sup}
if ep then
  rec.naid = ep.naid
  rec.first = tonumber(ep.first)
  rec.nt = tonumber(ep.nt)
  rec.nsev = tonumber(ep.nsev)
end

local kind = nil
local why
if ep and ep.naid == aid then
  rec.sup = ep.sup
  why = 'duplicate'
elseif sup ~= '' then
  why = sup
elseif ntargets == 0 then
  why = 'no_receiver'
elseif ep == nil or rec.naid == '' then
  kind = 'firing'; why = 'new'
elseif sev > rec.nsev then
  kind = 'escalated'; why = 'escalated'
elseif now - rec.nt >= repeat_ms then
  kind = 'repeat'; why = 'repeat'
else
  why = 'deduplicated'
end
if kind then
  rec.naid = aid; rec.nt = now; rec.nsev = sev
end
redis.call('HSET', rkey, field, cjson.encode(rec))
redis.call('PEXPIRE', rkey, forget_ms)
if kind then
  local note = '{"kind":"' .. kind .. '","route":' .. route_json .. ',"at":'
    .. string.format('%d', now) .. ',"since":' .. string.format('%d', rec.first)
    .. ',"alert":' .. snap .. '}'
  enqueue(note, now, wait_ms, interval_ms, duekey, 3, 14, ntargets)
end
return {kind or '', why, string.format('%d', rec.first)}
"""
)

# Mirrors alerts.dedup.decide_resolve and MemoryAlertState.resolve.
RESOLVE_SCRIPT = (
    _ENQUEUE
    + """
local rkey, duekey = KEYS[1], KEYS[2]
local field = ARGV[1]
local now = tonumber(ARGV[2])
local forget_ms = tonumber(ARGV[3])
local allowed = ARGV[4] == '1'
local expected = ARGV[5]
local note = ARGV[6]
local snap = ARGV[7]
local wait_ms = tonumber(ARGV[8])
local interval_ms = tonumber(ARGV[9])
local ntargets = tonumber(ARGV[10])

local raw = redis.call('HGET', rkey, field)
if not raw then return {0, 'unknown'} end
local rec = cjson.decode(raw)
if rec.aid ~= expected then return {0, 'conflict'} end
if now - tonumber(rec.seen) >= forget_ms then return {0, 'unknown'} end
if rec.st ~= 'firing' then return {0, 'already_resolved'} end
rec.st = 'resolved'
rec.seen = now
if snap ~= '' then rec.snap = snap end
redis.call('HSET', rkey, field, cjson.encode(rec))
redis.call('PEXPIRE', rkey, forget_ms)
if rec.naid == '' then return {0, 'never_notified'} end
if not allowed or ntargets == 0 then return {0, 'not_allowed'} end
enqueue(note, now, wait_ms, interval_ms, duekey, 3, 11, ntargets)
return {1, 'resolved'}
"""
)

# Mirrors MemoryAlertState.flush_group.
FLUSH_SCRIPT = """
local duekey, mkey, bkey, obkey, obdue = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local gid = ARGV[1]
local epoch = tonumber(ARGV[2])
local taken = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local msg_id = ARGV[5]
local msg = ARGV[6]
local wait_ms = tonumber(ARGV[7])
local interval_ms = tonumber(ARGV[8])
local nunmark = tonumber(ARGV[9])

local raw = redis.call('GET', mkey)
if not raw then return 0 end
local meta = cjson.decode(raw)
if tonumber(meta.e) ~= epoch then return 0 end
if taken > 0 then redis.call('LTRIM', bkey, taken, -1) end
meta.e = epoch + 1
local last = tonumber(meta.last)
if msg ~= '' then
  last = now
  meta.last = now
  if redis.call('HSETNX', obkey, msg_id, msg) == 1 then
    redis.call('ZADD', obdue, now, msg_id)
  end
end
local left = redis.call('LLEN', bkey)
if left > 0 then
  local due = now + wait_ms
  if last > 0 and now < last + interval_ms then due = last + interval_ms end
  redis.call('ZADD', duekey, due, gid)
  redis.call('SET', mkey, cjson.encode(meta))
elseif now - last >= interval_ms then
  redis.call('DEL', mkey)
  redis.call('ZREM', duekey, gid)
else
  redis.call('ZADD', duekey, last + interval_ms, gid)
  redis.call('SET', mkey, cjson.encode(meta))
end
for i = 1, nunmark do
  local rkey = KEYS[5 + i]
  local field = ARGV[9 + 2 * (i - 1) + 1]
  local aid = ARGV[9 + 2 * (i - 1) + 2]
  local rraw = redis.call('HGET', rkey, field)
  if rraw then
    local rec = cjson.decode(rraw)
    if rec.naid == aid then
      rec.naid = ''; rec.nt = 0; rec.nsev = -1
      redis.call('HSET', rkey, field, cjson.encode(rec))
    end
  end
end
return 1
"""


class RedisAlertState:
    """Dedup records and group buffers in Redis; digests go into :class:`RedisOutbox`'s keys."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self._record = redis.register_script(RECORD_SCRIPT)
        self._resolve = redis.register_script(RESOLVE_SCRIPT)
        self._flush = redis.register_script(FLUSH_SCRIPT)

    async def records(self, customer_id: str) -> dict[str, DedupRecord]:
        raw = await self.redis.hgetall(self.keys.records(customer_id))
        return {_text(k): DedupRecord.from_json(v) for k, v in raw.items()}

    def _targets(self, targets: Sequence[GroupTarget]) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = []
        for t in targets:
            keys += [self.keys.group_meta(t.gid), self.keys.group_buffer(t.gid)]
            initial = orjson.dumps({"r": t.receiver, "l": t.labels, "e": 0, "last": 0})
            args += [t.gid, initial]
        return keys, args

    async def record(self, request: RecordRequest) -> RecordResult:
        tkeys, targs = self._targets(request.targets)
        t = request.timing
        kind, why, first = await self._record(
            keys=[self.keys.records(request.customer_id), self.keys.group_due, *tkeys],
            args=[
                request.dedup_key,
                request.now_ms,
                request.severity,
                request.alert_id,
                request.alert_json,
                request.route,
                orjson.dumps(request.route),
                request.suppressed,
                t.repeat_ms,
                t.forget_ms,
                t.group_wait_ms,
                t.group_interval_ms,
                len(request.targets),
                *targs,
            ],
        )
        return RecordResult(_text(kind) or None, _text(why), int(_text(first)))  # type: ignore[arg-type]

    async def resolve(self, request: ResolveRequest) -> tuple[bool, str]:
        tkeys, targs = self._targets(request.targets)
        t = request.timing
        notified, why = await self._resolve(
            keys=[self.keys.records(request.customer_id), self.keys.group_due, *tkeys],
            args=[
                request.dedup_key,
                request.now_ms,
                t.forget_ms,
                "1" if request.allowed else "0",
                request.expected_alert_id,
                request.notification,
                request.snapshot or b"",
                t.group_wait_ms,
                t.group_interval_ms,
                len(request.targets),
                *targs,
            ],
        )
        return bool(int(notified)), _text(why)

    async def due_groups(self, now_ms: int, limit: int) -> list[str]:
        gids = await self.redis.zrangebyscore(
            self.keys.group_due, "-inf", now_ms, start=0, num=limit
        )
        return [_text(g) for g in gids]

    async def read_group(self, gid: str) -> GroupSnapshot | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.group_meta(gid))
            pipe.lrange(self.keys.group_buffer(gid), 0, -1)
            meta_raw, items = await pipe.execute()
        if meta_raw is None:
            await self.redis.zrem(self.keys.group_due, gid)
            return None
        meta = orjson.loads(meta_raw)
        return GroupSnapshot(
            gid=gid,
            receiver=meta["r"],
            labels=dict(meta["l"]),
            epoch=int(meta["e"]),
            last_ms=int(meta["last"]),
            items=[_bytes(i) for i in items],
        )

    async def flush_group(self, request: FlushRequest) -> bool:
        t = request.timing
        unmark_keys = [self.keys.records(customer) for customer, _, _ in request.unmark]
        unmark_args: list[str] = []
        for _, key, alert_id in request.unmark:
            unmark_args += [key, alert_id]
        done = await self._flush(
            keys=[
                self.keys.group_due,
                self.keys.group_meta(request.gid),
                self.keys.group_buffer(request.gid),
                self.keys.outbox,
                self.keys.outbox_due,
                *unmark_keys,
            ],
            args=[
                request.gid,
                request.epoch,
                request.taken,
                request.now_ms,
                request.message_id,
                request.message or b"",
                t.group_wait_ms,
                t.group_interval_ms,
                len(request.unmark),
                *unmark_args,
            ],
        )
        return bool(int(done))


# -- outbox ---------------------------------------------------------------------------

CLAIM_SCRIPT = """
local mkey, duekey, ownkey = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local owner = ARGV[3]
local ids = redis.call('ZRANGEBYSCORE', duekey, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local msg = redis.call('HGET', mkey, id)
  if msg then
    redis.call('ZADD', duekey, now + lease, id)
    redis.call('HSET', ownkey, id, owner)
    table.insert(out, msg)
  else
    redis.call('ZREM', duekey, id)
    redis.call('HDEL', ownkey, id)
  end
end
return out
"""

RENEW_SCRIPT = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
return 1
"""

COMPLETE_SCRIPT = """
local held = redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2]
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if held then return 1 end
return 0
"""

RETRY_SCRIPT = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

BURY_SCRIPT = """
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

PUT_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""

REQUEUE_SCRIPT = """
local n = 0
for i = 2, #ARGV do
  local msg = redis.call('HGET', KEYS[4], ARGV[i])
  if msg then
    redis.call('HDEL', KEYS[4], ARGV[i])
    redis.call('HSET', KEYS[1], ARGV[i], msg)
    redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
    n = n + 1
  end
end
return n
"""


class RedisOutbox:
    """The notification outbox in Redis (see ``alerts.outbox`` for the protocol)."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._complete = redis.register_script(COMPLETE_SCRIPT)
        self._retry = redis.register_script(RETRY_SCRIPT)
        self._bury = redis.register_script(BURY_SCRIPT)
        self._put = redis.register_script(PUT_SCRIPT)
        self._requeue = redis.register_script(REQUEUE_SCRIPT)

    @property
    def _keys(self) -> list[str]:
        k = self.keys
        return [k.outbox, k.outbox_due, k.outbox_owner, k.outbox_dead]

    async def put(self, message: OutboxMessage, *, due_ms: int) -> bool:
        added = await self._put(keys=self._keys[:2], args=[message.id, message.to_json(), due_ms])
        return bool(int(added))

    async def claim(
        self, *, now_ms: int, lease_ms: int, owner: str, limit: int
    ) -> list[OutboxMessage]:
        raw = await self._claim(keys=self._keys[:3], args=[now_ms, lease_ms, owner, limit])
        return [OutboxMessage.from_json(m) for m in raw]

    async def renew(self, message_id: str, *, owner: str, until_ms: int) -> bool:
        return bool(int(await self._renew(keys=self._keys[:3], args=[message_id, owner, until_ms])))

    async def complete(self, message_id: str, *, owner: str) -> bool:
        return bool(int(await self._complete(keys=self._keys[:3], args=[message_id, owner])))

    async def retry(self, message: OutboxMessage, *, owner: str, due_ms: int) -> bool:
        done = await self._retry(
            keys=self._keys[:3], args=[message.id, owner, message.to_json(), due_ms]
        )
        return bool(int(done))

    async def bury(self, message: OutboxMessage, *, owner: str) -> None:
        await self._bury(keys=self._keys, args=[message.id, message.to_json()])

    async def pending(self) -> int:
        return int(await self.redis.hlen(self.keys.outbox))

    async def dead(self, limit: int = 100) -> list[OutboxMessage]:
        raw = await self.redis.hvals(self.keys.outbox_dead)
        return [OutboxMessage.from_json(m) for m in raw[:limit]]

    async def dead_count(self) -> int:
        return int(await self.redis.hlen(self.keys.outbox_dead))

    async def requeue_dead(self, message_ids: Sequence[str] | None, *, now_ms: int) -> int:
        if message_ids is None:
            message_ids = [_text(k) for k in await self.redis.hkeys(self.keys.outbox_dead)]
        if not message_ids:
            return 0
        return int(await self._requeue(keys=self._keys, args=[now_ms, *message_ids]))


# -- silences -------------------------------------------------------------------------


class RedisSilenceStore:
    """Silences in one hash plus a version counter the matchers' cache watches."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)

    async def put(self, silence: Silence) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.silences, silence.id, silence.model_dump_json())
            pipe.incr(self.keys.silences_version)
            await pipe.execute()

    async def get(self, silence_id: str) -> Silence | None:
        raw = await self.redis.hget(self.keys.silences, silence_id)
        return None if raw is None else Silence.model_validate_json(raw)

    async def all(self) -> list[Silence]:
        return [Silence.model_validate_json(v) for v in await self.redis.hvals(self.keys.silences)]

    async def delete(self, silence_ids: Sequence[str]) -> None:
        if not silence_ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.silences, *silence_ids)
            pipe.incr(self.keys.silences_version)
            await pipe.execute()

    async def version(self) -> int:
        raw = await self.redis.get(self.keys.silences_version)
        return int(raw) if raw is not None else 0


# -- circuit breaker ------------------------------------------------------------------

_BREAKER_STATE = """
local function load_state(skey, code, trip_at)
  local raw = redis.call('HGET', skey, code)
  if raw then return cjson.decode(raw) end
  return {code = code, open = false, since_ms = 0, count = 0, trip_at = trip_at, held = 0,
          closed_ms = 0, closed_by = ''}
end
"""

# Mirrors MemoryBreakerStore.hit.
HIT_SCRIPT = (
    _BREAKER_STATE
    + """
local hkey, skey, heldkey = KEYS[1], KEYS[2], KEYS[3]
local code, customer = ARGV[1], ARGV[2]
local now = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local trip_at = tonumber(ARGV[5])
local release_at = tonumber(ARGV[6])
local min_open = tonumber(ARGV[7])
redis.call('ZADD', hkey, 'GT', now, customer)
redis.call('ZREMRANGEBYSCORE', hkey, '-inf', now - window)
redis.call('PEXPIRE', hkey, window * 2)
local count = redis.call('ZCARD', hkey)
local st = load_state(skey, code, trip_at)
local transition = ''
if not st.open then
  if count >= trip_at then
    st.open = true; st.since_ms = now; st.closed_ms = 0; st.closed_by = ''
    transition = 'tripped'
  end
elseif count <= release_at and now - tonumber(st.since_ms) >= min_open then
  st.open = false; st.closed_ms = now; st.closed_by = 'auto'
  transition = 'auto_released'
end
if st.open then redis.call('RPUSH', heldkey, ARGV[8]) end
st.count = count
st.trip_at = trip_at
st.held = redis.call('LLEN', heldkey)
local out = cjson.encode(st)
redis.call('HSET', skey, code, out)
return {st.open and 1 or 0, transition, out}
"""
)

CHECK_RELEASE_SCRIPT = """
local hkey, skey = KEYS[1], KEYS[2]
local code = ARGV[1]
local now = tonumber(ARGV[2])
local raw = redis.call('HGET', skey, code)
if not raw then return '' end
local st = cjson.decode(raw)
if not st.open then return '' end
redis.call('ZREMRANGEBYSCORE', hkey, '-inf', now - tonumber(ARGV[3]))
st.count = redis.call('ZCARD', hkey)
local closed = false
if st.count <= tonumber(ARGV[4]) and now - tonumber(st.since_ms) >= tonumber(ARGV[5]) then
  st.open = false; st.closed_ms = now; st.closed_by = 'auto'
  closed = true
end
local out = cjson.encode(st)
redis.call('HSET', skey, code, out)
if closed then return out end
return ''
"""

CLOSE_SCRIPT = """
local hkey, skey, heldkey = KEYS[1], KEYS[2], KEYS[3]
local raw = redis.call('HGET', skey, ARGV[1])
if not raw then return '' end
local st = cjson.decode(raw)
redis.call('DEL', hkey)
st.open = false; st.count = 0
st.closed_ms = tonumber(ARGV[2]); st.closed_by = ARGV[3]
st.held = redis.call('LLEN', heldkey)
local out = cjson.encode(st)
redis.call('HSET', skey, ARGV[1], out)
return out
"""

DROP_HELD_SCRIPT = """
local heldkey, skey = KEYS[1], KEYS[2]
redis.call('LTRIM', heldkey, tonumber(ARGV[2]), -1)
local raw = redis.call('HGET', skey, ARGV[1])
if raw then
  local st = cjson.decode(raw)
  st.held = redis.call('LLEN', heldkey)
  redis.call('HSET', skey, ARGV[1], cjson.encode(st))
end
return 1
"""


def _state(raw: Any) -> BreakerState:
    d = orjson.loads(raw)
    return BreakerState(
        code=d["code"],
        open=bool(d["open"]),
        since_ms=int(d["since_ms"]),
        count=int(d["count"]),
        trip_at=int(d["trip_at"]),
        held=int(d["held"]),
        closed_ms=int(d["closed_ms"]),
        closed_by=d["closed_by"],
    )


class RedisBreakerStore:
    """Breaker counts, states and held warnings in Redis."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self._hit = redis.register_script(HIT_SCRIPT)
        self._check = redis.register_script(CHECK_RELEASE_SCRIPT)
        self._close = redis.register_script(CLOSE_SCRIPT)
        self._drop = redis.register_script(DROP_HELD_SCRIPT)

    def _three(self, code: str) -> list[str]:
        k = self.keys
        return [k.breaker_hits(code), k.breaker_states, k.breaker_held(code)]

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
        hold, transition, raw = await self._hit(
            keys=self._three(code),
            args=[
                code,
                customer_id,
                now_ms,
                window_ms,
                trip_at,
                release_at,
                min_open_ms,
                alert_json,
            ],
        )
        return BreakerHit(
            hold=bool(int(hold)),
            transition=_text(transition) or None,  # type: ignore[arg-type]
            state=_state(raw),
        )

    async def check_release(
        self, code: str, *, now_ms: int, window_ms: int, release_at: int, min_open_ms: int
    ) -> BreakerState | None:
        raw = await self._check(
            keys=self._three(code)[:2],
            args=[code, now_ms, window_ms, release_at, min_open_ms],
        )
        return _state(raw) if raw else None

    async def close(self, code: str, *, now_ms: int, by: str) -> BreakerState | None:
        raw = await self._close(keys=self._three(code), args=[code, now_ms, by])
        return _state(raw) if raw else None

    async def states(self) -> dict[str, BreakerState]:
        raw = await self.redis.hgetall(self.keys.breaker_states)
        return {_text(k): _state(v) for k, v in raw.items()}

    async def held(self, code: str, limit: int) -> list[bytes]:
        raw = await self.redis.lrange(self.keys.breaker_held(code), 0, limit - 1)
        return [_bytes(r) for r in raw]

    async def drop_held(self, code: str, n: int) -> None:
        await self._drop(
            keys=[self.keys.breaker_held(code), self.keys.breaker_states], args=[code, n]
        )
