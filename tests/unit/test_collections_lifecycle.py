"""Collections tasks end when the work is over: cured, superseded, closed or written off.

A task is cancelled by publishing it again with the same ``task_id`` and
``status: cancelled``; at any moment a loan has at most one live task.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from config.settings import Settings
from risk.customer import CustomerState
from risk.engine import Engine, Outcome
from risk.processor import Processor, Source
from risk.redis_store import decode_state, encode_state
from risk.store import MemoryStateStore
from schemas.codec import encode
from schemas.events import EVENT_MODELS
from schemas.outputs import CollectionsTask
from schemas.topics import COLLECTIONS_TASKS

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings()


def ev(type_: str, at: str, event_id: str, **fields: Any) -> Any:
    data = {"event_id": event_id, "type": type_, "customer_id": "C1", "occurred_at": at, **fields}
    return EVENT_MODELS[type_].model_validate(data)


def due(no: int, day: str, amount: str = "100.00", loan: str = "L1", at: str | None = None) -> Any:
    return ev(
        "installment.due",
        at or "2026-01-01T00:00:00+00:00",
        f"due-{loan}-{no}-{day}",
        loan_id=loan,
        installment_no=no,
        due_date=day,
        amount_due=amount,
        currency="CNY",
    )


def paid(at: str, amount: str, loan: str = "L1", event_id: str | None = None) -> Any:
    return ev(
        "repayment.received",
        at,
        event_id or f"pay-{loan}-{at}-{amount}",
        loan_id=loan,
        amount=amount,
        currency="CNY",
    )


def book(engine: Engine, *events: Any) -> CustomerState:
    """A customer in UTC (quiet hours 21-08) with the given instalments."""
    st, _ = engine.apply(
        None, ev("customer.updated", "2026-01-01T00:00:00+00:00", "u", timezone="UTC")
    )
    for e in events:
        st, _ = engine.apply(st, e)
    return st


def at(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")


def live(records: list[CollectionsTask]) -> dict[str, CollectionsTask]:
    """What a collections team's board shows after reading ``records`` in order."""
    board: dict[str, CollectionsTask] = {}
    for task in records:
        if task.status == "open":
            board[task.task_id] = task
        else:
            assert task.task_id in board, f"cancelled a task never opened: {task.task_id}"
            board.pop(task.task_id)
    return board


def test_a_repayment_that_cures_the_loan_cancels_its_open_task() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"))
    opened = engine.advance(st, at("2026-01-20"))
    call = [t for t in opened.tasks if t.status == "open"][-1]
    assert (call.stage, call.dpd) == ("call", 8)

    st, out = engine.apply(st, paid("2026-01-21T10:30:00+00:00", "100.00"))

    [cancel] = out.tasks
    assert cancel.status == "cancelled"
    assert cancel.task_id == call.task_id
    assert cancel.reason == "cured: loan repaid to 0 DPD"
    # The task as it was planned, with the loan as it stands now.
    assert (cancel.stage, cancel.channel, cancel.priority, cancel.not_before) == (
        call.stage,
        call.channel,
        call.priority,
        call.not_before,
    )
    assert (cancel.dpd, cancel.overdue_amount) == (0, Decimal("0"))
    assert cancel.created_at == datetime(2026, 1, 21, 10, 30, tzinfo=UTC)
    assert st.tasks == {}
    assert live([*opened.tasks, *out.tasks]) == {}


def test_escalation_cancels_the_previous_stage_so_one_task_stays_live() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"))
    out = engine.advance(st, at("2026-05-01"))
    seen = [(t.stage, t.status, t.dpd, t.reason) for t in out.tasks]
    assert seen == [
        ("reminder", "open", 1, "loan L1 reached 1 days past due: reminder stage"),
        ("reminder", "cancelled", 8, "escalated to call"),
        ("call", "open", 8, "loan L1 reached 8 days past due: call stage"),
        ("call", "cancelled", 31, "escalated to visit"),
        ("visit", "open", 31, "loan L1 reached 31 days past due: visit stage"),
        ("visit", "cancelled", 91, "escalated to legal_review"),
        ("legal_review", "open", 91, "loan L1 reached 91 days past due: legal_review stage"),
    ]
    # A cancellation is the same task: same id, stage and planned contact as when opened.
    opened = {t.task_id: t for t in out.tasks if t.status == "open"}
    for cancel in (t for t in out.tasks if t.status == "cancelled"):
        first = opened[cancel.task_id]
        assert (cancel.stage, cancel.channel, cancel.not_before) == (
            first.stage,
            first.channel,
            first.not_before,
        )
        assert cancel.created_at > first.created_at
    board = live(out.tasks)
    assert [t.stage for t in board.values()] == ["legal_review"]
    assert st.tasks["L1"][:2] == [next(iter(board)), "legal_review"]


def test_the_same_records_whether_time_passes_in_one_step_or_day_by_day() -> None:
    engine = Engine(SETTINGS)
    jump = book(engine, due(1, "2026-01-10"))
    in_one = engine.advance(jump, at("2026-03-01")).tasks
    daily = book(engine, due(1, "2026-01-10"))
    day_by_day: list[CollectionsTask] = []
    for n in range(1, 60):
        day_by_day += engine.advance(daily, at("2026-01-01") + timedelta(days=n, hours=13)).tasks
    assert [encode(t) for t in day_by_day] == [encode(t) for t in in_one]


def test_a_partial_payment_that_leaves_the_loan_past_due_cancels_nothing() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"), due(2, "2026-02-10"))
    engine.advance(st, at("2026-02-15"))  # 36 days past due: visit
    visit = list(st.tasks["L1"])
    assert visit[1] == "visit"

    st, short = engine.apply(st, paid("2026-02-15T09:00:00+00:00", "60.00"))
    assert short.tasks == []
    assert st.loans["L1"].dpd_seen == 36

    # The oldest instalment settled, the next one still past due: DPD drops, not to 0.
    st, older = engine.apply(st, paid("2026-02-16T09:00:00+00:00", "40.00"))
    assert older.tasks == []
    assert st.loans["L1"].dpd_seen == 6
    assert st.tasks["L1"] == visit

    st, rest = engine.apply(st, paid("2026-02-17T09:00:00+00:00", "100.00"))
    assert [(t.task_id, t.status) for t in rest.tasks] == [(visit[0], "cancelled")]


def test_a_redelivered_repayment_does_not_cancel_twice() -> None:
    store = MemoryStateStore()
    proc = Processor(Engine(SETTINGS), store)
    setup = ev("customer.updated", "2026-01-01T00:00:00+00:00", "u", timezone="UTC")
    repayment = paid("2026-01-21T10:30:00+00:00", "100.00", event_id="pay-1")
    raws = [encode(e) for e in (setup, due(1, "2026-01-10"), repayment)]

    async def go() -> list[list[dict[str, Any]]]:
        batches = []
        for i, raw in enumerate([*raws, raws[-1]]):  # the repayment arrives twice
            result = await proc.handle(raw, Source("credit.repayments.v1", 0, i))
            records = await store.drain()
            batches.append([orjson.loads(r.value) for r in records if r.topic == COLLECTIONS_TASKS])
            assert result.outcome == ("duplicate" if i == len(raws) else "applied")
        return batches

    batches = asyncio.run(go())
    cancels = [t for batch in batches for t in batch if t["status"] == "cancelled"]
    assert [t["reason"] for t in cancels] == ["escalated to call", "cured: loan repaid to 0 DPD"]
    assert batches[-1] == []  # the redelivery produced nothing

    # A later overpayment on the cured loan has no task left to cancel.
    st = store.states["C1"]
    _st, out = Engine(SETTINGS).apply(st, paid("2026-01-22T10:00:00+00:00", "50.00"))
    assert out.tasks == []


def test_open_tasks_survive_a_round_trip_of_the_state() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"), due(1, "2026-01-12", loan="L2"))
    engine.advance(st, at("2026-01-20"))
    assert sorted(st.tasks) == ["L1", "L2"]

    as_json = CustomerState.from_dict(json.loads(json.dumps(st.to_dict())))
    via_redis = decode_state(encode_state(st))
    assert as_json.tasks == via_redis.tasks == st.tasks

    repayment = paid("2026-01-21T10:30:00+00:00", "100.00")
    _a, original = engine.apply(st, repayment)
    _b, restored = engine.apply(via_redis, repayment)
    assert [encode(t) for t in restored.tasks] == [encode(t) for t in original.tasks]
    assert [t.loan_id for t in restored.tasks] == ["L1"]  # L2 is still past due
    assert list(via_redis.tasks) == ["L2"]


def test_a_state_written_before_tasks_were_tracked_still_loads() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"))
    assert "tk" not in st.to_dict()  # nothing live, nothing stored
    engine.advance(st, at("2026-01-12"))
    older = st.to_dict()
    older.pop("tk")
    restored = CustomerState.from_dict(older)
    assert restored.tasks == {}
    _st, out = engine.apply(restored, paid("2026-01-13T09:00:00+00:00", "100.00"))
    assert out.tasks == []  # a task not known cannot be cancelled


def test_write_off_cancels_the_dunning_tasks_but_keeps_legal_review() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"), due(1, "2026-01-10", loan="L2"))
    engine.advance(st, at("2026-02-20"))  # 41 days: visit on both
    st, out = engine.apply(
        st,
        ev(
            "loan.written_off",
            "2026-02-20T12:00:00+00:00",
            "wo-1",
            loan_id="L1",
            amount="100.00",
            currency="CNY",
        ),
    )
    [cancel] = out.tasks
    assert (cancel.loan_id, cancel.stage, cancel.status) == ("L1", "visit", "cancelled")
    assert cancel.reason == "written off: moved to recoveries"
    assert cancel.dpd == 41 and cancel.overdue_amount == Decimal("100.00")
    assert list(st.tasks) == ["L2"]

    later = engine.advance(st, at("2026-05-01"))  # L2 reaches legal review, L1 stays in recoveries
    assert [(t.loan_id, t.stage, t.status) for t in later.tasks] == [
        ("L2", "visit", "cancelled"),
        ("L2", "legal_review", "open"),
    ]
    st, kept = engine.apply(
        st,
        ev(
            "loan.written_off",
            "2026-05-01T12:00:00+00:00",
            "wo-2",
            loan_id="L2",
            amount="100.00",
            currency="CNY",
        ),
    )
    assert kept.tasks == []  # legal review goes on in recoveries
    assert st.tasks["L2"][1] == "legal_review"

    st, closed = engine.apply(
        st, ev("loan.closed", "2026-06-01T12:00:00+00:00", "close-2", loan_id="L2")
    )
    assert [(t.loan_id, t.stage, t.status, t.reason) for t in closed.tasks] == [
        ("L2", "legal_review", "cancelled", "loan closed")
    ]
    assert st.tasks == {}


def test_closing_a_loan_cancels_its_task_and_leaves_the_others() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"), due(1, "2026-01-10", loan="L2"))
    engine.advance(st, at("2026-01-15"))
    st, out = engine.apply(
        st, ev("loan.closed", "2026-01-15T12:00:00+00:00", "close-1", loan_id="L1")
    )
    assert [(t.loan_id, t.stage, t.status, t.dpd) for t in out.tasks] == [
        ("L1", "reminder", "cancelled", 0)
    ]
    assert list(st.tasks) == ["L2"]


def test_a_new_schedule_that_leaves_nothing_past_due_cures_the_loan() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"))
    engine.advance(st, at("2026-01-12"))
    st, out = engine.apply(st, due(1, "2026-02-10", at="2026-01-12T09:00:00+00:00"))
    assert [(t.stage, t.status, t.reason) for t in out.tasks] == [
        ("reminder", "cancelled", "cured: nothing past due under the instalment schedule (0 DPD)")
    ]


def test_arrears_after_a_cure_open_new_tasks_with_new_ids() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"), due(2, "2026-02-10"))
    first = engine.advance(st, at("2026-01-12")).tasks
    st, cure = engine.apply(st, paid("2026-01-13T09:00:00+00:00", "100.00"))
    again = engine.advance(st, at("2026-02-12")).tasks
    assert [t.stage for t in first] == [t.stage for t in again] == ["reminder"]
    assert first[0].task_id != again[0].task_id
    assert live([*first, *cure.tasks, *again]) == {again[0].task_id: again[0]}


def test_a_contact_called_off_before_it_happens_frees_its_slot() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"))
    reminder = engine.advance(st, at("2026-01-11")).tasks[0]  # DPD 1 at midnight: sms at 08:00
    assert reminder.not_before == at("2026-01-11", 8)
    assert ["sms", "2026-01-11"] in st.contacts
    engine.apply(st, paid("2026-01-11T07:00:00+00:00", "100.00"))  # paid before the sms
    assert ["sms", "2026-01-11"] not in st.contacts

    done = book(engine, due(1, "2026-01-10"))
    engine.advance(done, at("2026-01-11"))
    engine.apply(done, paid("2026-01-11T15:00:00+00:00", "100.00"))  # after the sms went out
    assert ["sms", "2026-01-11"] in done.contacts


def test_status_is_always_published_and_required_by_the_schema() -> None:
    engine = Engine(SETTINGS)
    st = book(engine, due(1, "2026-01-10"))
    out: Outcome = engine.advance(st, at("2026-01-20"))
    schema = json.loads((ROOT / "schemas/json/credit.collections-tasks.v1.schema.json").read_text())
    assert "status" in schema["required"]
    assert schema["properties"]["status"]["enum"] == ["open", "cancelled"]
    for task in out.tasks:
        body = orjson.loads(encode(task))
        assert body["status"] in ("open", "cancelled")
        jsonschema.validate(body, schema)
    body.pop("status")
    with pytest.raises(jsonschema.ValidationError, match="status"):
        jsonschema.validate(body, schema)
    # A record built as before (no status) is an open task.
    assert CollectionsTask.model_validate(body).status == "open"
