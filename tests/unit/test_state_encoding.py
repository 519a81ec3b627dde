"""The stored form of a customer's state, and the order a batch applies a customer's events in."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.book import book_delta, book_entry, encode_delta
from risk.customer import CustomerState
from risk.engine import Engine
from risk.judge import build_judge
from risk.processor import Processor, Source
from risk.redis_store import (
    COMMIT_BATCH_SCRIPT,
    COMPRESS_FROM,
    DIGESTS_FORMAT,
    RedisStateStore,
    _book_moves,
    _netstrings,
    _step_fields,
    decode_state,
    encode_state,
)
from risk.store import MemoryStateStore, OutboxRecord, Step
from risk.windows import Windows
from schemas.codec import decode_event


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


# -- round trips of states as a worker keeps them ------------------------------------------------


def judged_batches(customers: int, months: int, batch: int) -> Iterator[list[CustomerState]]:
    """A book applied by the worker's judge (engine, rules, detectors) in batches, each state
    changed in place from batch to batch as a worker's kept states are; yields the states
    each batch touched."""
    judge = build_judge(Settings())
    events = [
        decode_event(dumps_event(e))
        for e in generate_book(BookConfig(seed=11, customers=customers, months=months))
    ]
    states: dict[str, CustomerState] = {}
    for start in range(0, len(events), batch):
        touched: dict[str, CustomerState] = {}
        for ev in events[start : start + batch]:
            st, _ = judge.apply(states.get(ev.customer_id), ev)
            st.remember(ev.event_id, 256)
            states[ev.customer_id] = touched[ev.customer_id] = st
        for st in touched.values():
            st.seq += 1
        yield list(touched.values())


def test_states_changed_batch_after_batch_read_back_whole_and_write_again_the_same() -> None:
    """Every state a batch wrote, detector models included, reads back equal, and writing
    what was read gives the very bytes that were stored (what the state cache relies on)."""
    written = 0
    for touched in judged_batches(customers=15, months=3, batch=40):
        for state in touched:
            blob = encode_state(state)
            back = decode_state(blob)
            assert back.to_dict() == state.to_dict()
            assert back.loans == state.loans
            assert back.tx == state.tx
            assert back.det == state.det
            assert encode_state(back) == blob
            written += 1
    assert written > 100


def test_every_field_of_a_state_round_trips() -> None:
    """A state with every field away from its default: nothing is lost on the way."""
    state = book_states(1)[0]
    loan = next(iter(state.loans.values()))
    loan.migrations = [["2026-03-01", "normal", "special_mention", "dpd"]]
    loan.failed_at = [1_767_225_600]
    state.segment, state.holiday_calendar, state.currency = "sme", "CN", "CNY"
    state.risk_score, state.risk_tier, state.loan_class = 55, "high", "substandard"
    state.open_alerts, state.counters = 2, {"repayment.failed": 3}
    state.monthly_income = Decimal("8000.00")
    state.contact_consent = {"sms": True}
    state.links = {"guarantor": ["K9"]}
    state.defaulted_at = datetime(2026, 3, 2, 8, tzinfo=timezone(timedelta(hours=8)))
    state.related_exposure = {"K9": "100.00"}
    state.exposure_alerted = state.default_notified = True
    state.contagion = [["K9", "guarantor", "2026-03-02"]]
    state.det = {"velocity_burst": {"_v": "x", "d": [1.5, 2.0]}}
    state.fired = {"k": 1}
    state.pd = 0.25
    state.detector_points = 7
    state.contacts = [["sms", "2026-03-02"]]
    state.tasks = {loan.loan_id: ["T1", "reminder", "sms", "2026-03-02T09:00:00+08:00"]}
    defaults = CustomerState(customer_id="x")
    unset = [
        f.name for f in fields(CustomerState) if getattr(state, f.name) == getattr(defaults, f.name)
    ]
    assert unset == []  # a new field needs a value here
    back = decode_state(encode_state(state))
    assert back.to_dict() == state.to_dict()
    assert back.loans == state.loans


def test_windows_are_stored_oldest_bucket_first_whatever_order_they_came_in() -> None:
    w = Windows()
    base = 1_767_225_600
    for offset in (40 * 3600, 0, 30 * 3600, 600, 5 * 86400, 4 * 86400 + 7):
        w.add(base + offset, {"-k": 100})
    w.set_last(base + 3600, "b", 5)
    listed = w.to_list()
    for rows in listed[2]:
        assert [i for i, _ in rows] == sorted(i for i, _ in rows)
    assert Windows.from_list(orjson.loads(orjson.dumps(listed)), lateness=w.lateness) == w


# -- the batch commit's arguments ----------------------------------------------------------------


class BatchScript:
    """Stands in for :data:`risk.redis_store.COMMIT_BATCH_SCRIPT`: reads the keys and the
    arguments the way its header says and applies every step (what Redis does is tested
    against a real Redis by the integration tests)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.records: list[tuple[str, bytes, bytes, bytes]] = []

    def register_script(self, text: str) -> Callable[..., Any]:
        async def call(keys: list[str], args: list[bytes]) -> bytes:
            return self.run(keys, args) if text == COMMIT_BATCH_SCRIPT else b""

        return call

    def run(self, keys: list[str], args: list[bytes]) -> bytes:
        assert len(args) == 2
        fields = netstrings(args[0])
        assert len(fields) % 10 == 0
        names = ["customer", "blob", "due", "score", "expected", "expire"]
        names += ["wm_unix", "wm_iso", "book", "outbox"]
        for number, start in enumerate(range(0, len(fields), 10), start=1):
            step = dict(zip(names, fields[start : start + 10], strict=True))
            outbox = int(step["outbox"])
            step["state_key"] = keys[3 + number - 1]
            step["outbox_key"], step["wm_key"] = keys[outbox - 1], keys[outbox]
            self.steps.append(step)
        records = netstrings(args[1])
        for i in range(0, len(records), 4):
            number, topic, key, value = records[i : i + 4]
            self.records.append((self.steps[int(number) - 1]["outbox_key"], topic, key, value))
        assert keys[:3] == ["cw:due", "cw:score", "cw:book"]
        return b"1" * len(self.steps)


def netstrings(packed: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(packed):
        colon = packed.index(b":", pos)
        n = int(packed[pos:colon])
        out.append(packed[colon + 1 : colon + 1 + n])
        pos = colon + 1 + n
    return out


def test_a_batch_commit_names_each_shards_keys_once_and_each_step_its_own() -> None:
    states = book_states(5)
    shards = [2, 0, 2, 1, 0]
    at = datetime(2026, 3, 2, 8, tzinfo=UTC)
    steps = [
        Step(
            st,
            st.seq - 1,
            shard,
            records=[(10 - n, OutboxRecord("t", st.customer_id, b"v%d" % n))],
            watermark=at if n % 2 else None,
            book_before=book_entry(st) if n else {},
        )
        for n, (st, shard) in enumerate(zip(states, shards, strict=True))
    ]
    script = BatchScript()
    store = RedisStateStore(script, marker_ttl_seconds=60)  # type: ignore[arg-type]
    assert asyncio.run(store.commit_many(steps)) == [True] * 5
    keys_named = [s["state_key"] for s in script.steps]
    assert keys_named == [store.state_key(st.customer_id) for st in states]
    for step, seen in zip(steps, script.steps, strict=True):
        assert seen["outbox_key"] == store.outbox_key(step.shard)
        assert seen["wm_key"] == store.watermark_key(step.shard)
        assert seen["customer"] == step.state.customer_id.encode()
        assert seen["blob"] == encode_state(step.state)
        assert seen["expected"] == b"%d" % step.expected_seq
        assert seen["wm_iso"] == (at.isoformat().encode() if step.watermark else b"")
        assert seen["book"] == _book_moves(step.book_before, step.state)
    assert [r[2] for r in script.records] == [st.customer_id.encode() for st in states[::-1]]
    assert [r[0] for r in script.records] == [store.outbox_key(s) for s in shards[::-1]]


def test_a_steps_fields_are_netstrings() -> None:
    fields_ = [b"K1", b"{}" * 3000, b"1", b"42", b"7", b"0", b"1767225600.0", b"", b"a=1", b"9"]
    assert _step_fields(*fields_) == _netstrings(fields_)


def test_book_moves_only_what_changed() -> None:
    state = book_states(1)[0]
    entry = book_entry(state)
    assert entry  # the customer has an open loan
    assert _book_moves(entry, state) == b""
    assert _book_moves(None, state) == b""
    assert _book_moves({}, state) == encode_delta(book_delta({}, entry))
