"""The batch path on the Redis store: same results as one event at a time, safe under races."""

from __future__ import annotations

import asyncio
import uuid
import zlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.customer import CustomerState
from risk.engine import Engine
from risk.processor import Processor, Result, Source
from risk.redis_store import RedisStateStore, decode_state
from risk.store import MemoryStateStore, OutboxRecord

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.integration
SETTINGS = Settings()
SHARDS = 1  # one outbox, so the order of every output can be compared


def shard_of(customer_id: str) -> int:
    return 0


def repayment(event_id: str, amount: str, day: int, customer: str = "K1") -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "repayment.received",
            "customer_id": customer,
            "occurred_at": f"2026-02-{day:02d}T10:00:00+00:00",
            "loan_id": "L1",
            "amount": amount,
            "currency": "CNY",
        }
    )


def source(i: int) -> Source:
    return Source("t", 0, i)


async def redis_processor(url: str, prefix: str) -> tuple[Processor, RedisStateStore, Redis]:
    redis = Redis.from_url(url)
    store = RedisStateStore(redis, prefix=prefix, marker_ttl_seconds=3600)
    return Processor(Engine(SETTINGS), store, shard_of=shard_of), store, redis


async def outbox(store: RedisStateStore) -> list[OutboxRecord]:
    records: list[OutboxRecord] = []
    for shard in range(SHARDS):
        records += await store.drain(shard)
    return records


def comparable(state: CustomerState) -> dict[str, Any]:
    d = state.to_dict()
    d.pop("seq")  # counts commits: one per customer per batch
    return d


def test_batches_on_redis_equal_one_event_at_a_time_in_memory(stack: Stack) -> None:
    raws = [dumps_event(e) for e in generate_book(BookConfig(seed=3, customers=25, months=3))]

    async def expected() -> tuple[list[Result], MemoryStateStore]:
        store = MemoryStateStore()
        proc = Processor(Engine(SETTINGS), store, shard_of=shard_of)
        return [await proc.handle(r, source(i)) for i, r in enumerate(raws)], store

    async def batched() -> tuple[list[str], list[OutboxRecord], dict[str, Any], list[str]]:
        proc, store, redis = await redis_processor(stack.redis_url, f"cwtb{uuid.uuid4().hex[:6]}")
        try:
            outcomes: list[str] = []
            for start in range(0, len(raws), 50):
                chunk = [(r, source(start + i)) for i, r in enumerate(raws[start : start + 50])]
                outcomes += [r.outcome for r in await proc.handle_batch(chunk)]
            records = await outbox(store)
            states = {
                c: comparable(s)
                for c, s in (await store.load_many(await store.customer_ids())).items()
                if s is not None
            }
            again = [
                r.outcome
                for r in await proc.handle_batch([(r, source(i)) for i, r in enumerate(raws[:300])])
            ]
            return outcomes, records, states, again
        finally:
            await store.clear()
            await redis.aclose()

    single, memory = asyncio.run(expected())
    outcomes, records, states, again = asyncio.run(batched())
    assert outcomes == [r.outcome for r in single]
    assert records == memory.outbox  # the same outputs, in the same order
    assert states == {c: comparable(s) for c, s in memory.states.items()}
    assert set(again) == {"duplicate"}  # redelivered, with the kept states: nothing applied twice


def test_a_kept_state_is_not_used_once_another_worker_changed_it(stack: Stack) -> None:
    prefix = f"cwtb{uuid.uuid4().hex[:6]}"

    async def go() -> CustomerState:
        a, store_a, redis_a = await redis_processor(stack.redis_url, prefix)
        b, _store_b, redis_b = await redis_processor(stack.redis_url, prefix)
        try:
            await a.handle_batch([(repayment("k1", "10.00", 1), source(0))])  # A keeps K1
            await b.handle_batch([(repayment("k2", "20.00", 2), source(1))])  # B changes it
            results = await a.handle_batch(
                [(repayment("k3", "30.00", 3), source(2)), (repayment("k2", "20.00", 2), source(1))]
            )
            assert [r.outcome for r in results] == ["applied", "duplicate"]
            state = await store_a.load("K1")
            assert state is not None
            return state
        finally:
            await store_a.clear()
            await redis_a.aclose()
            await redis_b.aclose()

    state = asyncio.run(go())
    assert state.loans["L1"].total_repaid == Decimal("60.00")
    assert all(state.has_seen(e) for e in ("k1", "k2", "k3"))


def test_a_step_refused_because_the_state_moved_on_is_redone(stack: Stack) -> None:
    """Another writer commits between this batch's load and its commit: nothing is lost."""
    prefix = f"cwtb{uuid.uuid4().hex[:6]}"

    async def go() -> tuple[list[Result], CustomerState, list[OutboxRecord]]:
        a, store_a, redis_a = await redis_processor(stack.redis_url, prefix)
        b, _store_b, redis_b = await redis_processor(stack.redis_url, prefix)
        load_many = store_a.load_many
        raced = False

        async def load_then_race(ids: Any) -> Any:
            nonlocal raced
            loaded = await load_many(ids)
            if not raced:  # the other writer gets in after our load
                raced = True
                await b.handle_batch([(repayment("r2", "20.00", 2), source(9))])
            return loaded

        store_a.load_many = load_then_race  # type: ignore[method-assign]
        try:
            await a.handle_batch([(repayment("r0", "5.00", 1), source(0))])  # K1 exists
            results = await a.handle_batch([(repayment("r1", "10.00", 3), source(1))])
            state = await store_a.load("K1")
            assert state is not None
            return results, state, await outbox(store_a)
        finally:
            await store_a.clear()
            await redis_a.aclose()
            await redis_b.aclose()

    results, state, records = asyncio.run(go())
    assert [r.outcome for r in results] == ["applied"]
    assert state.loans["L1"].total_repaid == Decimal("35.00")
    assert all(state.has_seen(e) for e in ("r0", "r1", "r2"))
    states = [orjson.loads(r.value) for r in records if r.topic == "risk_state"]
    assert len(states) == len({(s["last_event_at"], s["risk_score"]) for s in states})


def test_a_failing_event_leaves_no_half_applied_state_in_redis(stack: Stack) -> None:
    prefix = f"cwtb{uuid.uuid4().hex[:6]}"
    raws = [repayment("f1", "10.00", 1), repayment("bad", "20.00", 2), repayment("f3", "30.00", 3)]

    async def go() -> tuple[list[Result], CustomerState]:
        proc, store, redis = await redis_processor(stack.redis_url, prefix)
        apply = proc.engine.apply

        def failing(state: Any, event: Any) -> Any:
            if event.event_id == "bad":
                state.loans["L1"].total_repaid += Decimal("1000")  # half-done work
                raise RuntimeError("engine bug")
            return apply(state, event)

        proc.engine.apply = failing  # type: ignore[method-assign]
        try:
            results = await proc.handle_batch([(r, source(i)) for i, r in enumerate(raws)])
            state = await store.load("K1")
            assert state is not None
            return results, state
        finally:
            await store.clear()
            await redis.aclose()

    results, state = asyncio.run(go())
    assert [r.outcome for r in results] == ["applied", "dead_letter", "applied"]
    assert state.loans["L1"].total_repaid == Decimal("40.00")
    assert not state.has_seen("bad")


def test_states_written_before_the_digests_were_kept_raw_are_read(stack: Stack) -> None:
    prefix = f"cwtb{uuid.uuid4().hex[:6]}"

    async def go() -> tuple[CustomerState, bytes]:
        proc, store, redis = await redis_processor(stack.redis_url, prefix)
        try:
            await proc.handle_batch([(repayment("o1", "10.00", 1), source(0))])
            state = await store.load("K1")
            assert state is not None
            old = b"%d|" % state.seq + zlib.compress(orjson.dumps(state.to_dict()), 1)
            await redis.set(store.state_key("K1"), old)
            assert decode_state(old).to_dict() == state.to_dict()
            await proc.handle_batch([(repayment("o2", "5.00", 2), source(1))])
            blob = await redis.get(store.state_key("K1"))
            return decode_state(blob), blob
        finally:
            await store.clear()
            await redis.aclose()

    state, blob = asyncio.run(go())
    assert state.loans["L1"].total_repaid == Decimal("15.00")
    assert state.has_seen("o1") and state.has_seen("o2")
    assert blob.split(b"|", 1)[1][:1] == b"\x01"  # rewritten in the current form
