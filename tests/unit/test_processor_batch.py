"""The worker's batch path gives exactly what processing one event at a time gives."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import pytest

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.engine import Engine
from risk.processor import Processor, Result, Source
from risk.store import MemoryStateStore, OutboxRecord

SETTINGS = Settings()


def raw_book(customers: int = 25, months: int = 3, seed: int = 3) -> list[bytes]:
    return [
        dumps_event(e)
        for e in generate_book(BookConfig(seed=seed, customers=customers, months=months))
    ]


def processor() -> tuple[Processor, MemoryStateStore]:
    store = MemoryStateStore()
    return Processor(Engine(SETTINGS), store, shard_of=lambda c: hash(c) % 4), store


def by_key(records: list[OutboxRecord]) -> dict[str | None, list[tuple[str, bytes]]]:
    """Outputs per key, in order: the order consumers of a keyed topic can see."""
    out: dict[str | None, list[tuple[str, bytes]]] = defaultdict(list)
    for rec in records:
        out[rec.key].append((rec.topic, rec.value))
    return dict(out)


def one_at_a_time(raws: list[bytes]) -> tuple[list[Result], MemoryStateStore]:
    proc, store = processor()

    async def go() -> list[Result]:
        return [await proc.handle(raw, Source("t", 0, i)) for i, raw in enumerate(raws)]

    return asyncio.run(go()), store


def in_batches(raws: list[bytes], size: int) -> tuple[list[Result], MemoryStateStore]:
    proc, store = processor()

    async def go() -> list[Result]:
        results: list[Result] = []
        for start in range(0, len(raws), size):
            chunk = [
                (raw, Source("t", 0, start + i)) for i, raw in enumerate(raws[start : start + size])
            ]
            results += await proc.handle_batch(chunk)
        return results

    return asyncio.run(go()), store


def states(store: MemoryStateStore) -> dict[str, Any]:
    """Every customer's state but ``seq``, which counts commits (one per customer per batch)."""
    out = {c: s.to_dict() for c, s in store.states.items()}
    for d in out.values():
        d.pop("seq")
    return out


@pytest.mark.parametrize("size", [1, 7, 200])
def test_batches_give_the_outputs_and_states_of_one_event_at_a_time(size: int) -> None:
    raws = raw_book()
    single, expected = one_at_a_time(raws)
    batched, got = in_batches(raws, size)
    assert [r.outcome for r in batched] == [r.outcome for r in single]
    assert got.outbox == expected.outbox  # the same outputs, in the same order
    assert states(got) == states(expected)
    assert got._watermarks == expected._watermarks


def test_a_redelivered_batch_is_recognised_and_changes_nothing() -> None:
    raws = raw_book(customers=5, months=1)
    proc, store = processor()
    batch = [(raw, Source("t", 0, i)) for i, raw in enumerate(raws)]
    asyncio.run(proc.handle_batch(batch))
    written, before = len(store.outbox), states(store)
    again = asyncio.run(proc.handle_batch(batch))
    assert {r.outcome for r in again} == {"duplicate"}
    assert len(store.outbox) == written and states(store) == before


def test_the_same_event_twice_in_one_batch_counts_once() -> None:
    raws = raw_book(customers=3, months=1)[:20]
    results, store = in_batches([*raws, raws[5]], size=100)
    _, expected = one_at_a_time(raws)
    assert results[-1].outcome == "duplicate"
    assert states(store) == states(expected)


def test_bad_input_in_a_batch_is_dead_lettered_and_the_rest_applied() -> None:
    raws = raw_book(customers=3, months=1)[:30]
    mixed = [*raws[:10], b"not json", *raws[10:]]
    results, store = in_batches(mixed, size=100)
    assert results[10].outcome == "dead_letter"
    letters = [r for r in store.outbox if r.topic == "dead_letter"]
    assert len(letters) == 1 and orjson.loads(letters[0].value)["source_offset"] == 10
    _, expected = one_at_a_time(raws)
    assert states(store) == states(expected)


def test_an_event_the_engine_cannot_process_is_dead_lettered_like_one_at_a_time() -> None:
    """The failing event is dead-lettered; its customer's other events are applied in order."""
    raws = raw_book(customers=4, months=2)
    events = [orjson.loads(r) for r in raws]
    customer = events[0]["customer_id"]
    theirs = [e["event_id"] for e in events if e["customer_id"] == customer]
    bad = theirs[len(theirs) // 2]

    def failing(proc: Processor) -> Processor:
        apply = proc.engine.apply

        def maybe_fail(state: Any, event: Any) -> Any:
            if event.event_id == bad:
                raise RuntimeError("engine bug")
            return apply(state, event)

        proc.engine.apply = maybe_fail  # type: ignore[method-assign]
        return proc

    async def single() -> tuple[list[Result], MemoryStateStore]:
        proc, store = processor()
        failing(proc)
        return [await proc.handle(r, Source("t", 0, i)) for i, r in enumerate(raws)], store

    async def batched() -> tuple[list[Result], MemoryStateStore]:
        proc, store = processor()
        failing(proc)
        return await proc.handle_batch([(r, Source("t", 0, i)) for i, r in enumerate(raws)]), store

    one, expected = asyncio.run(single())
    many, got = asyncio.run(batched())
    assert [r.outcome for r in many] == [r.outcome for r in one]
    assert sum(r.outcome == "dead_letter" for r in many) == 1
    assert states(got) == states(expected)
    assert by_key([r for r in got.outbox if r.topic != "dead_letter"]) == by_key(
        [r for r in expected.outbox if r.topic != "dead_letter"]
    )
