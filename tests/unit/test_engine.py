"""The engine: DPD thresholds, classification, failed collections, tasks and state changes."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import Settings
from risk.customer import CustomerState
from risk.engine import Engine, Outcome
from risk.processor import Processor, Source
from risk.store import MemoryStateStore
from schemas.codec import encode, encode_event
from schemas.events import EVENT_MODELS

SETTINGS = Settings()
_seq = 0


def ev(type_: str, at: str, customer: str = "C1", **fields: Any) -> Any:
    global _seq
    _seq += 1
    data = {
        "event_id": fields.pop("event_id", f"e{_seq}"),
        "type": type_,
        "customer_id": customer,
        "occurred_at": at,
        **fields,
    }
    return EVENT_MODELS[type_].model_validate(data)


def due(no: int, date: str, at: str | None = None, amount: str = "100.00", **kw: Any) -> Any:
    return ev(
        "installment.due",
        at or f"{date}T00:00:00+00:00",
        loan_id="L1",
        installment_no=no,
        due_date=date,
        amount_due=amount,
        currency="CNY",
        **kw,
    )


def paid(at: str, amount: str = "100.00", **kw: Any) -> Any:
    return ev("repayment.received", at, loan_id="L1", amount=amount, currency="CNY", **kw)


def run(
    engine: Engine, events: list[Any], state: CustomerState | None = None
) -> tuple[CustomerState, Outcome]:
    total = Outcome()
    for e in events:
        state, out = engine.apply(state, e)
        total.alerts += out.alerts
        total.tasks += out.tasks
        total.states += out.states
    assert state is not None
    return state, total


def codes(out: Outcome) -> list[str]:
    return [a.code for a in out.alerts]


def test_dpd_thresholds_fire_once_each_at_the_crossing_instant() -> None:
    engine = Engine(SETTINGS)
    state, out = run(engine, [due(1, "2026-01-10")])
    assert not out.alerts
    later = engine.advance(state, datetime(2026, 4, 30, tzinfo=UTC))
    dpd = [a for a in later.alerts if a.code.startswith("dpd_")]
    assert [a.code for a in dpd] == ["dpd_1", "dpd_30", "dpd_60", "dpd_90"]
    assert dpd[0].triggered_at == datetime(2026, 1, 11, tzinfo=UTC)
    assert dpd[1].triggered_at == datetime(2026, 2, 9, tzinfo=UTC)
    assert [a.severity for a in dpd] == ["warning", "warning", "high", "critical"]
    assert dpd[-1].explanation["dpd"] == 90
    assert (
        state.loans["L1"].dpd_seen
        == (datetime(2026, 4, 30).date() - datetime(2026, 1, 10).date()).days
    )
    again = engine.advance(state, datetime(2026, 5, 30, tzinfo=UTC))
    assert not [a for a in again.alerts if a.code.startswith("dpd_")]


def test_crossing_uses_the_customers_local_midnight() -> None:
    engine = Engine(SETTINGS)
    state, _ = run(
        engine,
        [
            ev("customer.updated", "2026-01-01T00:00:00+00:00", timezone="Asia/Shanghai"),
            due(1, "2026-01-10", at="2026-01-05T00:00:00+00:00"),
        ],
    )
    out = engine.advance(state, datetime(2026, 1, 12, tzinfo=UTC))
    assert out.alerts[0].triggered_at == datetime(2026, 1, 10, 16, tzinfo=UTC)  # 00:00 +08:00


def test_class_migrations_follow_the_bands() -> None:
    engine = Engine(SETTINGS)
    state, _ = run(engine, [due(1, "2026-01-10")])
    out = engine.advance(state, datetime(2027, 2, 1, tzinfo=UTC))
    moves = [
        (a.explanation["from"], a.explanation["to"])
        for a in out.alerts
        if a.code == "loan_class_change"
    ]
    assert moves == [
        ("normal", "special_mention"),
        ("special_mention", "substandard"),
        ("substandard", "doubtful"),
        ("doubtful", "loss"),
    ]
    assert state.loan_class == "loss"
    assert [s.loan_class for s in out.states][-1] == "loss"


def test_tick_cadence_does_not_change_the_warnings() -> None:
    """Byte-identical outputs whether time passes in 1-, 7- or 200-day steps."""
    fail = dict(loan_id="L1", amount="100.00", currency="CNY", reason="insufficient_funds")

    def outputs_with_steps(step_days: int) -> list[bytes]:
        engine = Engine(SETTINGS)
        state, out = run(
            engine,
            [
                ev("customer.updated", "2026-01-01T00:00:00+00:00", timezone="Asia/Shanghai"),
                due(1, "2026-01-10"),
                due(2, "2026-02-10"),
            ],
        )
        t, end = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
        while t < end:
            t = min(t + timedelta(days=step_days), end)
            step = engine.advance(state, t)
            out.alerts += step.alerts
            out.tasks += step.tasks
            out.states += step.states
        for e in (
            ev("repayment.failed", "2026-06-01T00:00:00Z", event_id="f1", **fail),
            ev("repayment.failed", "2026-06-01T00:00:00Z", event_id="f2", **fail),
            paid("2026-06-01T12:00:00+00:00", "50.00", event_id="p1"),
        ):
            state, last = engine.apply(state, e)
            out.alerts += last.alerts
            out.tasks += last.tasks
            out.states += last.states
        return [encode(x) for x in (*out.alerts, *out.tasks, *out.states)]

    assert outputs_with_steps(1) == outputs_with_steps(7) == outputs_with_steps(200)


def test_repayment_cures_and_a_new_episode_alerts_again_with_new_ids() -> None:
    engine = Engine(SETTINGS)
    state, out = run(
        engine,
        [
            due(1, "2026-01-10"),
            paid("2026-01-15T09:00:00+00:00"),
            due(2, "2026-02-10"),
            paid("2026-02-20T09:00:00+00:00"),
        ],
    )
    dpd1 = [a for a in out.alerts if a.code == "dpd_1"]
    assert len(dpd1) == 2
    assert dpd1[0].alert_id != dpd1[1].alert_id
    cured = [
        a for a in out.alerts if a.code == "loan_class_change" and a.explanation["to"] == "normal"
    ]
    assert len(cured) == 2
    assert state.loans["L1"].dpd_seen == 0
    components = engine.features(state)["score_components"]
    assert components["delinquency"] == 0
    assert components["repayment_behaviour"] == 100  # both instalments were paid late
    assert state.risk_tier == "low"


def test_partial_payment_keeps_the_loan_past_due() -> None:
    engine = Engine(SETTINGS)
    state, _ = run(engine, [due(1, "2026-01-10"), paid("2026-01-12T00:00:00+00:00", "60.00")])
    assert state.loans["L1"].dpd_seen == 2
    summary = engine.summary(state)
    assert summary.loans["L1"].overdue_amount == Decimal("40.00")
    assert summary.max_dpd == 2


def test_repeated_failed_collections_raise_one_warning() -> None:
    engine = Engine(SETTINGS)
    fail = dict(loan_id="L1", amount="100.00", currency="CNY", reason="insufficient_funds")
    state, out = run(
        engine,
        [
            due(1, "2026-01-10"),
            ev("repayment.failed", "2026-01-10T08:00:00+00:00", **fail),
            ev("repayment.failed", "2026-01-12T08:00:00+00:00", **fail),
            ev("repayment.failed", "2026-01-14T08:00:00+00:00", **fail),
        ],
    )
    assert codes(out).count("repeated_failed_collections") == 1
    alert = next(a for a in out.alerts if a.code == "repeated_failed_collections")
    assert alert.severity == "high"
    assert len(alert.evidence_event_ids) == 2
    assert engine.features(state)["score_components"]["repayment_behaviour"] == 225


def test_written_off_is_loss_and_restructured_is_substandard() -> None:
    engine = Engine(SETTINGS)
    state, out = run(
        engine,
        [
            ev(
                "loan.opened",
                "2026-01-01T00:00:00+00:00",
                loan_id="L1",
                product="consumer",
                principal="10000.00",
                currency="CNY",
                term_months=12,
                annual_rate="0.08",
            ),
            ev("loan.restructured", "2026-02-01T00:00:00+00:00", loan_id="L1"),
        ],
    )
    assert state.loans["L1"].loan_class == "substandard"
    change = [a for a in out.alerts if a.code == "loan_class_change"][-1]
    assert change.explanation["reason"] == "restructured"
    assert change.source == "classification"
    state, out = engine.apply(
        state,
        ev(
            "loan.written_off",
            "2026-03-01T00:00:00+00:00",
            loan_id="L1",
            amount="9000.00",
            currency="CNY",
        ),
    )
    assert state.loans["L1"].loan_class == "loss"
    assert state.risk_tier == "high"
    assert engine.summary(state).total_exposure == Decimal("0")
    assert out.states and out.states[-1].loan_class == "loss"


def test_collections_tasks_escalate_and_respect_quiet_hours() -> None:
    engine = Engine(SETTINGS)
    state, _ = run(
        engine,
        [
            ev(
                "customer.updated",
                "2026-01-01T00:00:00+00:00",
                timezone="Europe/London",
                contact_consent={"sms": False, "phone": True},
            ),
            due(1, "2026-01-10"),
        ],
    )
    out = engine.advance(state, datetime(2026, 5, 1, tzinfo=UTC))
    opened = [t for t in out.tasks if t.status == "open"]  # each stage supersedes the last
    stages = [(t.stage, t.dpd, t.channel) for t in opened]
    assert stages == [
        ("reminder", 1, "email"),  # sms not consented
        ("call", 8, "phone"),
        ("visit", 31, "visit"),
        ("legal_review", 91, "letter"),
    ]
    for task in opened:
        local = task.not_before.astimezone(state.tz)
        assert 8 <= local.hour < 21
        assert task.not_before >= task.created_at


def test_lawful_contact_time() -> None:
    engine = Engine(SETTINGS)
    st_ = CustomerState(customer_id="C1", timezone="Asia/Shanghai")
    late = datetime(2026, 3, 1, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    assert engine.lawful_contact_time(st_, late) == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    early = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # 06:00 next day in Shanghai
    assert engine.lawful_contact_time(st_, early) == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    day = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
    assert engine.lawful_contact_time(st_, day) == day


def test_state_round_trips_through_its_dict_form() -> None:
    engine = Engine(SETTINGS)
    state, _ = run(
        engine,
        [
            ev(
                "customer.updated",
                "2026-01-01T00:00:00+00:00",
                segment="sme",
                monthly_income="8000.00",
                currency="CNY",
            ),
            ev(
                "customer.linked",
                "2026-01-01T00:00:00+00:00",
                related_customer_id="C2",
                relation="guarantor",
            ),
            due(1, "2026-01-10"),
            paid("2026-01-20T00:00:00+00:00", "30.00"),
        ],
    )
    again = CustomerState.from_dict(state.to_dict())
    assert again == state


def test_processor_counts_a_duplicate_event_once_and_dead_letters_bad_input() -> None:
    async def go() -> None:
        store = MemoryStateStore()
        processor = Processor(Engine(SETTINGS), store)
        raw = encode_event(due(1, "2026-01-10", event_id="dup-1"))
        first = await processor.handle(raw, Source("t", 0, 1))
        second = await processor.handle(raw, Source("t", 0, 2))
        assert (first.outcome, second.outcome) == ("applied", "duplicate")
        state = await store.load("C1")
        assert state is not None and len(state.loans["L1"].installments) == 1
        bad = await processor.handle(b'{"type": "nope"}', Source("t", 0, 3))
        assert bad.outcome == "dead_letter"
        letters = [r for r in store.outbox if r.topic == "dead_letter"]
        assert len(letters) == 1
        again = await processor.handle(b'{"type": "nope"}', Source("t", 0, 3))
        assert again.outcome == "dead_letter"
        assert len([r for r in store.outbox if r.topic == "dead_letter"]) == 1

    asyncio.run(go())


days = st.integers(min_value=0, max_value=200)


@settings(max_examples=40, deadline=None)
@given(offsets=st.lists(days, min_size=1, max_size=12), pay_day=days)
def test_equal_input_gives_equal_output(offsets: list[int], pay_day: int) -> None:
    """Replaying the same stream twice gives the same state and warnings."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    events = [due(i + 1, (base + timedelta(days=30 * i)).date().isoformat()) for i in range(4)]
    events.append(paid((base + timedelta(days=pay_day)).isoformat(), "150.00"))
    events.sort(key=lambda e: e.occurred_at)

    def once() -> tuple[dict[str, Any], list[str]]:
        engine = Engine(SETTINGS)
        state, out = run(engine, events)
        for off in sorted(offsets):
            out.alerts += engine.advance(state, base + timedelta(days=off + 200)).alerts
        return state.to_dict(), [a.alert_id for a in out.alerts]

    assert once() == once()


def test_an_event_the_engine_cannot_process_is_dead_lettered_not_lost() -> None:
    class Broken(Engine):
        def apply(self, state: Any, event: Any) -> Any:
            raise ArithmeticError("boom")

    async def go() -> None:
        store = MemoryStateStore()
        processor = Processor(Broken(SETTINGS), store)
        raw = encode_event(due(1, "2026-01-10", event_id="poison-1"))
        result = await processor.handle(raw, Source("t", 1, 7))
        assert result.outcome == "dead_letter"
        (letter,) = [orjson.loads(r.value) for r in store.outbox if r.topic == "dead_letter"]
        assert letter["reason"] == "processing_error"
        assert letter["event_id"] == "poison-1"
        assert (letter["source_partition"], letter["source_offset"]) == (1, 7)
        assert base64.b64decode(letter["original_base64"]) == raw

    asyncio.run(go())


def test_an_outage_is_raised_for_the_caller_to_retry() -> None:
    class Down(MemoryStateStore):
        async def load(self, customer_id: str) -> Any:
            raise ConnectionError("redis is down")

    async def go() -> None:
        processor = Processor(Engine(SETTINGS), Down())
        raw = encode_event(due(1, "2026-01-10"))
        try:
            await processor.handle(raw, Source("t", 0, 1))
        except ConnectionError:
            return
        raise AssertionError("an outage must not be swallowed")

    asyncio.run(go())


def test_output_times_do_not_depend_on_how_an_instant_was_written() -> None:
    """The same instant reached by a UTC tick or by an event in +08:00 gives the same bytes."""
    fail = dict(loan_id="L1", amount="100.00", currency="CNY", reason="insufficient_funds")

    def outputs(tick_first: bool, stamp: str) -> list[bytes]:
        engine = Engine(SETTINGS)
        state, out = run(engine, [due(1, "2026-01-10")])
        if tick_first:
            out.alerts += engine.advance(state, datetime(2026, 2, 8, tzinfo=UTC)).alerts
        for i in (1, 2):
            state, step = engine.apply(
                state, ev("repayment.failed", stamp, event_id=f"x{i}", **fail)
            )
            out.alerts += step.alerts
        return [encode(a) for a in out.alerts]

    assert outputs(True, "2026-02-08T00:00:00Z") == outputs(False, "2026-02-08T08:00:00+08:00")
