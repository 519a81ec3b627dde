"""The worker's system of record: customer state, event markers and the outbox in Redis.

Key layout (``{p}`` is the configured prefix, ``cw`` by default; the layout is
also documented in ``docs/redis-keys.md``):

``{p}:c:{customer_id}``  string, ``{seq}|`` + the customer's state (see
                         :func:`encode_state`); it also remembers digests of the
                         customer's last events
``{p}:m:{marker}``       string "1" with a TTL: that dead-lettered message was handled
``{p}:due``              set of customer ids whose arrears can still grow
``{p}:score``            sorted set, customer id by risk score (``state top``)
``{p}:ob:{shard}``       stream, outputs waiting to be published, per shard
``{p}:wm:{shard}``       string, the servicing feed's event-time watermark of a shard
``{p}:book``             hash of counters: customers with an open loan by tier, open
                         loans by class (:mod:`risk.book`), moved by each commit

One step (state, marker, outputs, indexes) is written by a single Lua script,
so Redis applies it wholly or not at all. The script refuses a step computed
from an out-of-date copy of the state (the ``seq`` prefix moved on), so
idempotency does not depend on the caller's check alone: the event digests
travel inside the very value being compared and set.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from risk.book import Book, book_delta, book_entry, encode_delta
from risk.customer import CustomerState
from risk.store import OutboxRecord, StateConflict, Step, needs_tick

COMMIT_SCRIPT = """
-- KEYS: marker (or ''), state, due set, score zset, outbox stream, book counters
-- ARGV: 1 marker ttl, 2 customer_id, 3 state blob (or ''), 4 due flag, 5 score,
--       6 expected seq, 7 expire seconds (0 = keep), 8 record count,
--       9 book counter moves ("name=n,..." or ''), then topic, key, value for each record
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
  for name, moved in string.gmatch(ARGV[9], '([^,=]+)=(-?%d+)') do
    redis.call('HINCRBY', KEYS[6], name, moved)
  end
end
if KEYS[1] ~= '' then
  redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
end
local n = tonumber(ARGV[8])
for i = 0, n - 1 do
  local base = 10 + i * 3
  redis.call('XADD', KEYS[5], '*', 't', ARGV[base], 'k', ARGV[base + 1], 'v', ARGV[base + 2])
end
return 1
"""

COMMIT_BATCH_SCRIPT = """
-- The commit script's step for several customers at once (a batch), plus the
-- servicing watermark; each step is checked and applied on its own.
-- KEYS: 1 due set, 2 score zset, 3 book counters, then each step's state (3 + its
--       number), then the outbox stream and watermark of each shard the steps name
-- ARGV[1]: every step's fields as netstrings ("<length>:<bytes>"), ten a step:
--       customer_id, state blob, due flag, score, expected seq, expire seconds
--       (0 = keep), watermark unix seconds ('' = none), watermark ISO text, book
--       counter moves ("name=n,..." or ''), the KEYS index of its shard's outbox
--       stream (the shard's watermark follows it)
-- ARGV[2]: every output record of the batch, in the order the events produced
--       them: step number, topic, key, value (netstrings)
-- Returns one character per step: '1' when applied, '0' when the state moved on
-- (nothing written, its records skipped).
local function reader(packed)
  local pos = 1
  return function()
    if pos > #packed then return nil end
    local colon = string.find(packed, ':', pos, true)
    local n = tonumber(string.sub(packed, pos, colon - 1))
    local value = string.sub(packed, colon + 1, colon + n)
    pos = colon + n + 1
    return value
  end
end
local field = reader(ARGV[1])
local results, outbox = {}, {}
local s = 0
while true do
  local customer = field()
  if customer == nil then break end
  s = s + 1
  local blob, due, score = field(), field(), field()
  local expected, expire, wm_unix, wm_iso = field(), field(), field(), field()
  local book, shard = field(), tonumber(field())
  local state_key = KEYS[3 + s]
  outbox[s] = KEYS[shard]
  -- the seq prefix is all that is compared: no need to copy the whole value
  local current = redis.call('GETRANGE', state_key, 0, 20)
  local seq = 0
  if current ~= '' then seq = tonumber(string.match(current, '^(%d+)|')) or 0 end
  if seq ~= tonumber(expected) then
    results[s] = '0'
  else
    redis.call('SET', state_key, blob)
    if tonumber(expire) > 0 then
      redis.call('EXPIRE', state_key, tonumber(expire))
    end
    if due == '1' then
      redis.call('SADD', KEYS[1], customer)
    else
      redis.call('SREM', KEYS[1], customer)
    end
    redis.call('ZADD', KEYS[2], tonumber(score), customer)
    for name, moved in string.gmatch(book, '([^,=]+)=(-?%d+)') do
      redis.call('HINCRBY', KEYS[3], name, moved)
    end
    if wm_unix ~= '' then
      local wm_key = KEYS[shard + 1]
      local wm = redis.call('GET', wm_key)
      if (not wm) or tonumber(wm_unix) > tonumber(string.match(wm, '^[^|]+')) then
        redis.call('SET', wm_key, wm_unix .. '|' .. wm_iso)
      end
    end
    results[s] = '1'
  end
end
local record = reader(ARGV[2])
while true do
  local n = record()
  if n == nil then break end
  local t, k, v = record(), record(), record()
  n = tonumber(n)
  if results[n] == '1' then
    redis.call('XADD', outbox[n], '*', 't', t, 'k', k, 'v', v)
  end
end
return table.concat(results)
"""

LOAD_UNLESS_HELD_SCRIPT = """
-- KEYS: state keys; ARGV[i]: SHA-1 (hex) of the value the caller holds for KEYS[i], or ''
-- Returns {flags, values...}: flags has one character per key, '=' when the stored
-- value is exactly the one held, 'v' when it differs (its value follows, in key
-- order), '-' when there is none. One short string instead of an element per
-- key: parsing the reply's elements was a visible cost in the client.
local flags, out = {}, {''}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if not value then
    flags[i] = '-'
  elseif ARGV[i] ~= '' and redis.sha1hex(value) == ARGV[i] then
    flags[i] = '='
  else
    flags[i] = 'v'
    out[#out + 1] = value
  end
end
out[1] = table.concat(flags)
return out
"""

RAISE_WATERMARK_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(ARGV[1]) > tonumber(string.match(current, '^[^|]+')) then
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
  return 1
end
return 0
"""


DIGESTS_FORMAT = b"\x01"
"""First byte of a state whose event digests are stored raw (never a zlib header byte)."""


COMPRESS_FROM = 8192
"""JSON of at least this many bytes is stored zlib-compressed; smaller JSON as it is."""


def encode_state(state: CustomerState) -> bytes:
    """``{seq}|``, ``\\x01``, the event digests as raw bytes (2-byte length first), then
    the rest of the state as JSON, zlib-compressed from :data:`COMPRESS_FROM` bytes.

    Why the digests are kept out of the JSON: as hexadecimal text they are
    up to half of it, deflate can only halve random hex, and compressing
    them was about a quarter of the cost of writing a state, which a worker
    does for every event (deflate runs at about 50 MB/s on the reference
    machine). Raw they take the same room as compressed hex, for the cost of
    ``bytes.fromhex``.

    Why most states are not compressed: a typical customer's JSON is about
    3 KB, which deflate (level 1) takes to about half, but at about 100 µs a
    state on the reference machine, three quarters of the cost of writing
    it and the largest single cost of a worker's step after the judge
    itself. Storing it as it is costs Redis about 1.7 KB more per customer;
    the rare large state (many loans, long histories) is still compressed.
    The two forms cannot be mistaken: JSON here is an object, starting with
    ``{``, which is never the first byte of a zlib stream.
    """
    data = state.to_dict()
    digests = bytes.fromhex(data.pop("seen"))
    head = b"%d|%s%s%s" % (state.seq, DIGESTS_FORMAT, len(digests).to_bytes(2, "big"), digests)
    body = orjson.dumps(data)
    return head + (zlib.compress(body, 1) if len(body) >= COMPRESS_FROM else body)


def decode_state(blob: bytes) -> CustomerState:
    """The state :func:`encode_state` wrote (or the earlier all-zlib form)."""
    _seq, _, body = blob.partition(b"|")
    if body[:1] == DIGESTS_FORMAT:
        size = int.from_bytes(body[1:3], "big")
        rest = body[3 + size :]
        data: dict[str, Any] = orjson.loads(rest if rest[:1] == b"{" else zlib.decompress(rest))
        data["seen"] = body[3 : 3 + size].hex()
    else:  # written before the digests were kept raw: all of it is zlib JSON
        data = orjson.loads(zlib.decompress(body))
    return CustomerState.from_dict(data)


EQUAL, VALUE, APPLIED = b"=v1"  # reply flags (iterating bytes gives ints)

STATE_CACHE_SIZE = 10_000
"""Decoded states a worker keeps of the customers it committed last (about 16 KB each)."""


def _netstrings(fields: list[bytes]) -> bytes:
    """``<length>:<bytes>`` of each field, concatenated (one argument for a whole step)."""
    return b"".join([b"%d:%s" % (len(f), f) for f in fields])


_STEP_FIELDS = b"%d:%s" * 10
"""A step's ten fields as netstrings, in one formatting (one copy of the state blob)."""


def _step_fields(
    customer: bytes,
    blob: bytes,
    due: bytes,
    score: bytes,
    expected: bytes,
    expire: bytes,
    wm_unix: bytes,
    wm_iso: bytes,
    book: bytes,
    outbox: bytes,
) -> bytes:
    """A step's fields as :data:`COMMIT_BATCH_SCRIPT` reads them from ``ARGV[1]``."""
    return _STEP_FIELDS % (
        len(customer), customer, len(blob), blob, len(due), due, len(score), score,
        len(expected), expected, len(expire), expire, len(wm_unix), wm_unix,
        len(wm_iso), wm_iso, len(book), book, len(outbox), outbox,
    )  # fmt: skip


def _book_moves(before: Book | None, state: CustomerState) -> bytes:
    """The counter moves of a step, as the commit scripts take them (none without ``before``)."""
    if before is None:
        return b""
    after = book_entry(state)
    if after == before:  # most steps: nothing to move
        return b""
    return encode_delta(book_delta(before, after))


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
        self._commit_batch = redis.register_script(COMMIT_BATCH_SCRIPT)
        self._load_unless_held = redis.register_script(LOAD_UNLESS_HELD_SCRIPT)
        self._raise_wm = redis.register_script(RAISE_WATERMARK_SCRIPT)
        # customer -> (SHA-1 of the value this process committed, that state decoded);
        # see load_many for why a copy is only ever handed out once.
        self._cache: OrderedDict[str, tuple[str, CustomerState]] = OrderedDict()
        # customer -> SHA-1 of the stored value a state handed out was read from, so
        # that a state its caller did not change can go back to the cache (release).
        self._lent: dict[str, str] = {}

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

    @property
    def book_key(self) -> str:
        return f"{self.prefix}:book"

    # -- StateStore -----------------------------------------------------------

    async def load(self, customer_id: str) -> CustomerState | None:
        self._cache.pop(customer_id, None)  # the caller may change what it gets
        self._lent.pop(customer_id, None)
        blob = await self.redis.get(self.state_key(customer_id))
        return decode_state(blob) if blob is not None else None

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState | None]:
        """Several customers' states in one round trip, decoding only what changed.

        Decoding a state (inflate, JSON, objects) costs about as much as the
        engine's step, so the decoded states of the customers this process
        committed last are kept, with the SHA-1 of the exact value written.
        Redis compares that digest with the stored value and sends the value
        only when it differs (another worker, the tick of another process, an
        operator), so a kept state is used only when it is byte for byte what
        is stored. A kept state is handed out once and taken out of the cache:
        the caller mutates it, and only :meth:`commit_many` puts the committed
        result back, so a step that failed or was refused never leaves a
        half-changed copy behind. A state the caller did not change (the tick
        found nothing to do, every event was a duplicate) goes back with
        :meth:`release`; without that, each tick emptied the cache of every
        customer it looked at and left, and the next batch decoded them all.
        """
        if not customer_ids:
            return {}
        held = [self._cache.pop(c, None) for c in customer_ids]
        keys = [self.state_key(c) for c in customer_ids]
        if len(self._lent) > 2 * STATE_CACHE_SIZE:  # never released nor committed (errors)
            self._lent.clear()
        lent = self._lent
        out: dict[str, CustomerState | None] = {}
        if not any(held):
            for c, blob in zip(customer_ids, await self.redis.mget(keys), strict=True):
                out[c] = self._decode_lent(c, blob) if blob is not None else None
            return out
        flags, *values = await self._load_unless_held(
            keys=keys, args=[h[0] if h else "" for h in held]
        )
        changed = iter(values)
        for c, h, flag in zip(customer_ids, held, flags, strict=True):
            if flag == EQUAL and h is not None:
                out[c] = h[1]
                lent[c] = h[0]
            elif flag == VALUE:
                out[c] = self._decode_lent(c, next(changed))
            else:
                out[c] = None
        return out

    def _decode_lent(self, customer_id: str, blob: bytes) -> CustomerState:
        self._lent[customer_id] = hashlib.sha1(blob, usedforsecurity=False).hexdigest()
        return decode_state(blob)

    def release(self, states: Sequence[CustomerState]) -> None:
        """Give back states :meth:`load_many` handed out that their caller did not change.

        They go back to the cache with the digest of the value they were read
        from, so the next load sends nothing and decodes nothing for them.
        """
        cache, lent = self._cache, self._lent
        for state in states:
            digest = lent.pop(state.customer_id, None)
            if digest is not None:
                cache[state.customer_id] = (digest, state)
        while len(cache) > STATE_CACHE_SIZE:
            cache.popitem(last=False)

    def peek(self, customer_id: str) -> CustomerState | None:
        """The state this process last committed or released for a customer, if kept.

        For reading only (the caller must not change it), and possibly older
        than what is stored: another process may have written since.
        """
        held = self._cache.get(customer_id)
        return held[1] if held is not None else None

    async def commit_many(self, steps: Sequence[Step]) -> list[bool]:
        """Commit several customers' steps with one script call; each step on its own.

        Each step is checked against its ``expected_seq`` and applied wholly or
        not at all, and a step whose state moved on (another writer got there
        first) is refused alone: it comes back ``False`` and the caller loads
        that customer again. One call for the whole batch, because with a
        pipeline of one call per customer the client's packing and parsing of
        commands and arguments was a sizeable part of a worker's CPU; and all
        its steps in one argument, with the outbox and watermark keys named
        once per shard, because with an argument and three keys per step the
        client still spent about 8 µs a state packing the call (redis-py
        handles each argument in Python). Outputs are written after the
        states, in the order their events came in the batch (see
        :class:`risk.store.Step`).
        """
        if not steps:
            return []
        blobs = [encode_state(step.state) for step in steps]
        # One key per state; the outbox and watermark keys once per shard.
        state_keys: list[str] = []
        shard_keys: list[str] = []
        outbox_index: dict[int, bytes] = {}  # shard -> KEYS index of its outbox
        fields: list[bytes] = []
        outputs: list[tuple[int, int, OutboxRecord]] = []
        for number, (step, blob) in enumerate(zip(steps, blobs, strict=True), start=1):
            state = step.state
            state_keys.append(self.state_key(state.customer_id))
            index = outbox_index.get(step.shard)
            if index is None:
                index = b"%d" % (4 + len(steps) + len(shard_keys))
                outbox_index[step.shard] = index
                shard_keys += [self.outbox_key(step.shard), self.watermark_key(step.shard)]
            wm = step.watermark
            fields.append(
                _step_fields(
                    state.customer_id.encode(),
                    blob,
                    b"1" if needs_tick(state) else b"0",
                    b"%d" % state.risk_score,
                    b"%d" % step.expected_seq,
                    b"%d" % self._expiry(state),
                    repr(wm.timestamp()).encode() if wm is not None else b"",
                    wm.isoformat().encode() if wm is not None else b"",
                    _book_moves(step.book_before, state),
                    index,
                )
            )
            if step.records:
                outputs += [(position, number, rec) for position, rec in step.records]
        outputs.sort(key=lambda o: o[0])  # stable: an event's own outputs keep their order
        records: list[bytes] = []
        for _position, number, rec in outputs:
            records += [b"%d" % number, rec.topic.encode(), (rec.key or "").encode(), rec.value]
        keys = [self.due_key, self.score_key, self.book_key, *state_keys, *shard_keys]
        replies = await self._commit_batch(keys=keys, args=[b"".join(fields), _netstrings(records)])
        applied = [flag == APPLIED for flag in replies]
        cache = self._cache
        for step, blob, ok in zip(steps, blobs, applied, strict=True):
            self._lent.pop(step.state.customer_id, None)
            if ok:
                digest = hashlib.sha1(blob, usedforsecurity=False).hexdigest()
                cache[step.state.customer_id] = (digest, step.state)
        while len(cache) > STATE_CACHE_SIZE:
            cache.popitem(last=False)
        return applied

    def _expiry(self, state: CustomerState) -> int:
        """Seconds until an inactive customer's state is forgotten (0: kept)."""
        if self.expire_inactive and not has_open_loan(state):
            return self.expire_inactive  # nothing open: forget after a quiet period
        return 0

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
        """Apply one step atomically; see the module docstring.

        Raises :class:`StateConflict` when the stored state is no longer the
        one the step was computed from (``expected_seq``).
        """
        keys, args = self._commit_call(
            marker, state, records, shard=shard, expected_seq=expected_seq, book_before=book_before
        )
        result = int(await self._commit(keys=keys, args=args))
        if result < 0:
            raise StateConflict(state.customer_id if state else "")
        return result == 1

    def _commit_call(
        self,
        marker: str | None,
        state: CustomerState | None,
        records: list[OutboxRecord],
        *,
        shard: int,
        expected_seq: int | None,
        book_before: Book | None = None,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of one commit script call."""
        args: list[Any] = [
            self.marker_ttl,
            state.customer_id if state else "",
            encode_state(state) if state else b"",
            "1" if state is not None and needs_tick(state) else "0",
            state.risk_score if state else 0,
            expected_seq if expected_seq is not None else (state.seq - 1 if state else 0),
            self._expiry(state) if state is not None else 0,
            len(records),
            _book_moves(book_before, state) if state is not None else b"",
        ]
        for rec in records:
            args += [rec.topic, rec.key or "", rec.value]
        keys = [
            self.marker_key(marker) if marker else "",
            self.state_key(state.customer_id) if state else "",
            self.due_key,
            self.score_key,
            self.outbox_key(shard),
            self.book_key,
        ]
        return keys, args

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

    async def book(self) -> Book:
        """The book's counters (:mod:`risk.book`): one small hash, cheap to read often."""
        raw = await self.redis.hgetall(self.book_key)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in sorted(raw.items())}

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
