"""Properties of the rolling state: order of simultaneous events, duplicates, replays."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import Settings
from risk.engine import Engine
from risk.processor import Processor, Source
from risk.store import MemoryStateStore
from risk.windows import Windows
from schemas.codec import encode_event
from schemas.events import EVENT_MODELS

SETTINGS = Settings()
BASE = datetime(2026, 3, 1, 12, tzinfo=UTC)

adds = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40 * 3600),  # seconds after a base time
        st.sampled_from(["-k", "-a", "+t", "n"]),
        st.integers(min_value=1, max_value=10**8),
    ),
    min_size=1,
    max_size=40,
)


@given(items=adds, data=st.data())
def test_window_totals_do_not_depend_on_arrival_order(items: list[Any], data: Any) -> None:
    """Within the allowed lateness, a late event lands where an on-time one would."""
    shuffled = data.draw(st.permutations(items))
    base = 1_767_225_600
    a, b = Windows(), Windows()
    for offset, code, amount in items:
        a.add(base + offset, {code: amount})
    for offset, code, amount in shuffled:
        b.add(base + offset, {code: amount})
    now = base + max(o for o, _, _ in items)
    for window in (3600, 86400, 7 * 86400, 30 * 86400):
        for code in ("-k", "-a", "+t", "n"):
            assert a.total(code, window, now) == b.total(code, window, now)


@given(items=adds)
def test_window_memory_is_bounded(items: list[Any]) -> None:
    w = Windows()
    for i in range(3):  # a long history, far more events than buckets
        for offset, code, amount in items:
            w.add(1_767_225_600 + i * 40 * 86400 + offset, {code: amount})
    assert len(w.buckets[300]) <= 12
    assert len(w.buckets[3600]) <= 24
    assert len(w.buckets[86400]) <= 31


def ev(type_: str, event_id: str, at: datetime, **fields: Any) -> Any:
    data = {
        "event_id": event_id,
        "type": type_,
        "customer_id": "C1",
        "occurred_at": at.isoformat(),
        **fields,
    }
    return EVENT_MODELS[type_].model_validate(data)


def simultaneous_events(n_due: int, pays: list[int], spends: list[int]) -> list[Any]:
    events = [
        ev(
            "installment.due",
            f"d{i}",
            BASE,
            loan_id="L1",
            installment_no=i + 1,
            due_date=(BASE - timedelta(days=40 - 10 * i)).date().isoformat(),
            amount_due="100.00",
            currency="CNY",
        )
        for i in range(n_due)
    ]
    events += [
        ev("repayment.received", f"p{i}", BASE, loan_id="L1", amount=f"{p}.00", currency="CNY")
        for i, p in enumerate(pays)
    ]
    events += [
        ev(
            "transaction.posted",
            f"t{i}",
            BASE,
            account_id="A1",
            amount=f"{s}.00",
            currency="CNY",
            direction="debit",
            channel="card",
        )
        for i, s in enumerate(spends)
    ]
    return events


def arrears_view(engine: Engine, state: Any) -> tuple[Any, ...]:
    summary = engine.summary(state)
    features = summary.features
    return (
        {k: (v.dpd, v.overdue_amount, v.outstanding_principal) for k, v in summary.loans.items()},
        summary.max_dpd,
        summary.loan_class,
        features.get("tx_24h_debit_count", 0),
        features.get("tx_24h_debit_sum", "0.00"),
    )


@settings(max_examples=60, deadline=None)
@given(
    n_due=st.integers(min_value=1, max_value=4),
    pays=st.lists(st.integers(min_value=1, max_value=250), max_size=4),
    spends=st.lists(st.integers(min_value=1, max_value=900), max_size=4),
    data=st.data(),
)
def test_order_of_events_with_equal_timestamps_does_not_matter(
    n_due: int, pays: list[int], spends: list[int], data: Any
) -> None:
    events = simultaneous_events(n_due, pays, spends)
    shuffled = data.draw(st.permutations(events))
    # A servicer announces instalments in due-date order; everything else
    # (payments, card spending) may interleave with them in any order.
    slots = [i for i, e in enumerate(shuffled) if e.type == "installment.due"]
    dues = sorted((shuffled[i] for i in slots), key=lambda e: e.due_date)
    for i, due in zip(slots, dues, strict=True):
        shuffled[i] = due
    results = []
    for order in (events, shuffled):
        engine = Engine(SETTINGS)
        state = None
        for e in order:
            state, _ = engine.apply(state, e)
        results.append(arrears_view(engine, state))
    assert results[0] == results[1]


@settings(max_examples=30, deadline=None)
@given(
    pays=st.lists(st.integers(min_value=1, max_value=250), min_size=1, max_size=4),
    repeat=st.lists(st.integers(min_value=0, max_value=20), max_size=6),
)
def test_a_duplicate_event_changes_nothing(pays: list[int], repeat: list[int]) -> None:
    events = simultaneous_events(3, pays, [12, 30])
    raws = [encode_event(e) for e in events]

    async def go() -> None:
        store = MemoryStateStore()
        processor = Processor(Engine(SETTINGS), store)
        for i, raw in enumerate(raws):
            await processor.handle(raw, Source("t", 0, i))
        state = await store.load("C1")
        assert state is not None
        before = state.to_dict()
        outputs = len(store.outbox)
        for j in repeat:
            result = await processor.handle(raws[j % len(raws)], Source("t", 0, 100 + j))
            assert result.outcome == "duplicate"
        after = (await store.load("C1")).to_dict()  # type: ignore[union-attr]
        assert after == before
        assert len(store.outbox) == outputs

    asyncio.run(go())


def test_money_stays_decimal_in_features() -> None:
    engine = Engine(SETTINGS)
    state, _ = engine.apply(
        None,
        ev(
            "transaction.posted",
            "t1",
            BASE,
            account_id="A1",
            amount="0.10",
            currency="CNY",
            direction="debit",
            channel="card",
        ),
    )
    state, _ = engine.apply(
        state,
        ev(
            "transaction.posted",
            "t2",
            BASE,
            account_id="A1",
            amount="0.20",
            currency="CNY",
            direction="debit",
            channel="card",
        ),
    )
    assert Decimal(engine.features(state)["tx_1h_debit_sum"]) == Decimal("0.30")
