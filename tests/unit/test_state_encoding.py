"""The stored form of a customer's state, and the order a batch applies a customer's events in."""

from __future__ import annotations

import asyncio
import zlib

import orjson

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.customer import CustomerState
from risk.engine import Engine
from risk.processor import Processor, Source
from risk.redis_store import COMPRESS_FROM, DIGESTS_FORMAT, decode_state, encode_state
from risk.store import MemoryStateStore


def book_states(customers: int = 12) -> list[CustomerState]:
    store = MemoryStateStore()
    proc = Processor(Engine(Settings()), store)

    async def go() -> None:
        for i, ev in enumerate(generate_book(BookConfig(seed=5, customers=customers, months=2))):
            await proc.handle(dumps_event(ev), Source("t", 0, i))

    asyncio.run(go())
    return list(store.states.values())


def body(blob: bytes) -> bytes:
    """What follows the event digests in a stored state."""
    rest = blob.partition(b"|")[2]
    assert rest[:1] == DIGESTS_FORMAT
    return rest[3 + int.from_bytes(rest[1:3], "big") :]


def test_a_typical_state_is_stored_as_plain_json_and_read_back_whole() -> None:
    for state in book_states():
        blob = encode_state(state)
        assert body(blob)[:1] == b"{"  # not compressed: a few KB
        assert decode_state(blob).to_dict() == state.to_dict()


def test_a_large_state_is_compressed_and_read_back_whole() -> None:
    state = book_states(1)[0]
    state.counters = {f"c{i}": i for i in range(COMPRESS_FROM // 8)}  # a state over the limit
    blob = encode_state(state)
    assert body(blob)[:1] != b"{"
    assert len(blob) < len(orjson.dumps(state.to_dict()))
    assert decode_state(blob).to_dict() == state.to_dict()


def test_states_written_compressed_whatever_their_size_are_still_read() -> None:
    for state in book_states(3):
        data = state.to_dict()
        digests = bytes.fromhex(data.pop("seen"))
        head = b"%d|%s%s%s" % (state.seq, DIGESTS_FORMAT, len(digests).to_bytes(2, "big"), digests)
        older = head + zlib.compress(orjson.dumps(data), 1)
        assert decode_state(older).to_dict() == state.to_dict()


def event(event_id: str, kind: str, day: int, **fields: object) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": kind,
            "customer_id": "K1",
            "occurred_at": f"2026-03-{day:02d}T10:00:00+00:00",
            **fields,
        }
    )


def test_a_batch_applies_each_customers_events_in_event_time_whatever_topic_came_first() -> None:
    """A repayment read (on its topic) before the instalment it pays is applied after it."""
    due = event(
        "d",
        "installment.due",
        5,
        loan_id="L1",
        installment_no=1,
        due_date="2026-03-05",
        amount_due="100.00",
        currency="CNY",
    )
    paid = event("p", "repayment.received", 6, loan_id="L1", amount="40.00", currency="CNY")

    def run(messages: list[bytes], *, batched: bool) -> dict[str, object]:
        store = MemoryStateStore()
        proc = Processor(Engine(Settings()), store)

        async def go() -> None:
            sources = [Source("t", 0, i) for i in range(len(messages))]
            if batched:
                await proc.handle_batch(list(zip(messages, sources, strict=True)))
            else:
                for raw, source in zip(messages, sources, strict=True):
                    await proc.handle(raw, source)

        asyncio.run(go())
        state = store.states["K1"].to_dict()
        state.pop("seq")  # counts commits: one per customer per batch
        state.pop("seen")  # the same digests, in the order applied
        return state

    in_time = run([due, paid], batched=False)
    assert run([paid, due], batched=False) != in_time  # the order matters to the engine
    assert run([paid, due], batched=True) == in_time
