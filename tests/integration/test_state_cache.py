"""A worker keeps the states it holds decoded: nothing it did not change is decoded again."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from redis.asyncio import Redis

import risk.redis_store
from config.settings import Settings
from risk.engine import Engine
from risk.processor import Processor, Source
from risk.redis_store import RedisStateStore

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.integration


def due(event_id: str, day: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "installment.due",
            "customer_id": "K1",
            "occurred_at": f"2026-02-{day:02d}T10:00:00+00:00",
            "loan_id": "L1",
            "installment_no": day,
            "due_date": f"2026-02-{day:02d}",
            "amount_due": "100.00",
            "currency": "CNY",
        }
    )


def counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    decoded: list[int] = []
    real = risk.redis_store.decode_state

    def decode(blob: bytes) -> Any:
        decoded.append(1)
        return real(blob)

    monkeypatch.setattr(risk.redis_store, "decode_state", decode)
    return decoded


def processor(redis: Redis, prefix: str) -> tuple[Processor, RedisStateStore]:
    store = RedisStateStore(redis, prefix=prefix, marker_ttl_seconds=3600)
    return Processor(Engine(Settings()), store), store


def test_states_a_step_left_unchanged_stay_decoded(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates only, a tick with nothing to do, a tick after a restart: no decode after."""
    decoded = counting_decodes(monkeypatch)
    prefix = f"cwsc{uuid.uuid4().hex[:6]}"

    async def go() -> list[int]:
        redis = Redis.from_url(stack.redis_url)
        try:
            proc, store = processor(redis, prefix)
            seen = []
            await proc.handle_batch([(due("e1", 1), Source("t", 0, 0))])
            seen.append(len(decoded))  # 0: a new customer
            results = await proc.handle_batch([(due("e1", 1), Source("t", 0, 0))])
            assert [r.outcome for r in results] == ["duplicate"]
            await proc.tick()  # K1 is at the watermark already
            await proc.handle_batch([(due("e2", 2), Source("t", 0, 1))])
            seen.append(len(decoded))  # still 0: the kept state was used throughout

            restarted, _store2 = processor(redis, prefix)  # nothing kept
            await restarted.tick()  # loads K1 (one decode), finds it at the watermark
            seen.append(len(decoded))
            await restarted.handle_batch([(due("e3", 3), Source("t", 0, 2))])
            seen.append(len(decoded))  # no second decode
            state = await store.load("K1")
            assert state is not None and all(state.has_seen(e) for e in ("e1", "e2", "e3"))
            return seen
        finally:
            await RedisStateStore(redis, prefix=prefix, marker_ttl_seconds=1).clear()
            await redis.aclose()

    assert asyncio.run(go()) == [0, 0, 1, 1]
