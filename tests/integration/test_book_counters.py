"""The loan book's counters in Redis move with every commit and match the stored states.

They are what the worker's ``creditwatch_customers`` and ``creditwatch_loans``
gauges read, so they must equal a recount of every state however the states
were written: batches, single events (the slow path), the DPD tick of this or
another worker, and redelivery.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.book import Book, book_entry
from risk.engine import Engine
from risk.processor import Processor, Source
from risk.redis_store import RedisStateStore

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.integration
SETTINGS = Settings()


async def recount(store: RedisStateStore) -> Book:
    total: Book = {}
    states = await store.load_many(await store.customer_ids())
    for state in states.values():
        for name, n in book_entry(state).items():
            total[name] = total.get(name, 0) + n
    return total


def nonzero(book: Book) -> Book:
    return {name: n for name, n in book.items() if n}


def test_book_counters_in_redis_equal_a_recount_through_every_write_path(stack: Stack) -> None:
    raws = [dumps_event(e) for e in generate_book(BookConfig(seed=5, customers=30, months=4))]
    messages = [(r, Source("t", i % 2, i)) for i, r in enumerate(raws)]

    async def go() -> None:
        redis = Redis.from_url(stack.redis_url)
        prefix = f"cwbk{uuid.uuid4().hex[:6]}"
        store = RedisStateStore(redis, prefix=prefix, marker_ttl_seconds=3600)
        other = RedisStateStore(redis, prefix=prefix, marker_ttl_seconds=3600)
        first = Processor(Engine(SETTINGS), store, shard_of=lambda c: 0)
        second = Processor(Engine(SETTINGS), other, shard_of=lambda c: 0)
        try:
            half = len(messages) // 2
            for start in range(0, half, 40):  # batches
                await first.handle_batch(messages[start : start + 40])
            for raw, source in messages[half:]:  # one event at a time
                await first.handle(raw, source)
            assert nonzero(await store.book()) == await recount(store)

            # Another worker moves the customers on: the first one's kept copies are stale
            # and must be reloaded, and a redelivered event is counted no second time.
            await second.tick(datetime(2026, 12, 1, tzinfo=UTC))
            await first.handle_batch(messages[:200])  # redelivered
            await first.tick(datetime(2027, 9, 1, tzinfo=UTC))
            book = nonzero(await store.book())
            assert book == await recount(store)
            assert {n for n in book if n.startswith("loans:")} > {"loans:normal"}, book
            assert sum(n for name, n in book.items() if name.startswith("customers:")) > 0
        finally:
            await store.clear()
            await redis.aclose()

    asyncio.run(go())
