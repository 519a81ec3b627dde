"""Account and relation signals: salary late or cut, fund diversion, cure, exposure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from config.settings import Settings
from risk.engine import Engine, Outcome
from schemas.events import EVENT_MODELS

SETTINGS = Settings()
START = datetime(2026, 1, 1, 9, tzinfo=UTC)
_n = 0


def ev(type_: str, at: datetime, customer: str = "C1", **fields: Any) -> Any:
    global _n
    _n += 1
    return EVENT_MODELS[type_].model_validate(
        {
            "event_id": f"s{_n}",
            "type": type_,
            "customer_id": customer,
            "occurred_at": at.isoformat(),
            **fields,
        }
    )


def salary(at: datetime, amount: str = "8000.00", **kw: Any) -> Any:
    return ev(
        "transaction.posted",
        at,
        account_id="A1",
        amount=amount,
        currency="CNY",
        direction="credit",
        channel="transfer",
        counterparty_id="E1",
        counterparty_type="employer",
        **kw,
    )


def card(at: datetime, amount: str = "50.00", **kw: Any) -> Any:
    return ev(
        "transaction.posted",
        at,
        account_id="A1",
        amount=amount,
        currency="CNY",
        direction="debit",
        channel="card",
        **kw,
    )


def run(events: list[Any]) -> tuple[Engine, Any, Outcome]:
    engine = Engine(SETTINGS)
    state, total = None, Outcome()
    for e in sorted(events, key=lambda e: e.occurred_at):
        state, out = engine.apply(state, e)
        total.alerts += out.alerts
        total.internal += out.internal
    return engine, state, total


def test_salary_that_stops_is_reported_late_once() -> None:
    months = [salary(START + timedelta(days=30 * i)) for i in range(4)]
    spending = [card(START + timedelta(days=d)) for d in range(0, 200, 3)]
    engine, state, out = run(months + spending)
    late = [a for a in out.alerts if a.code == "salary_late"]
    assert len(late) == 1
    expected = START + timedelta(days=120)
    assert late[0].triggered_at == expected + timedelta(days=SETTINGS.features.salary_grace_days)
    assert late[0].explanation["recognised_as"] == "employer"
    features = engine.features(state)
    assert features["income_late"] is True
    assert features["score_components"]["income"] == 150


def test_salary_on_time_is_quiet_and_a_cut_is_reported() -> None:
    months = [salary(START + timedelta(days=30 * i)) for i in range(5)]
    spending = [card(START + timedelta(days=d)) for d in range(0, 150, 3)]
    _, _, quiet = run(months + spending)
    assert not [a for a in quiet.alerts if a.code.startswith("salary")]
    cut = [*months, salary(START + timedelta(days=150), "3000.00")]
    engine, state, out = run(cut + spending)
    drop = [a for a in out.alerts if a.code == "salary_drop"]
    assert len(drop) == 1 and drop[0].explanation["amount"] == "3000.00"
    assert engine.features(state)["income_dropped"] is True


def test_income_learned_from_a_monthly_cadence_without_employer_type() -> None:
    credits = [
        ev(
            "transaction.posted",
            START + timedelta(days=30 * i),
            account_id="A1",
            amount="4000.00",
            currency="CNY",
            direction="credit",
            channel="transfer",
            counterparty_id="P9",
        )
        for i in range(4)
    ]
    spending = [card(START + timedelta(days=d)) for d in range(0, 170, 4)]
    engine, state, out = run(credits + spending)
    assert engine.features(state)["income_source"] == "learned cadence"
    assert [a.code for a in out.alerts if a.code == "salary_late"] == ["salary_late"]


def opened(
    at: datetime, principal: str = "200000.00", customer: str = "C1", loan: str = "L1", **kw: Any
) -> Any:
    return ev(
        "loan.opened",
        at,
        customer,
        loan_id=loan,
        product="consumer",
        principal=principal,
        currency="CNY",
        term_months=24,
        annual_rate="0.08",
        **kw,
    )


def risky(at: datetime, amount: str, kind: str) -> Any:
    return ev(
        "transaction.posted",
        at,
        account_id="A1",
        amount=amount,
        currency="CNY",
        direction="debit",
        channel="transfer",
        counterparty_type=kind,
    )


def test_loan_funds_moved_to_gambling_soon_after_disbursement() -> None:
    engine, state, out = run(
        [
            opened(START),
            risky(START + timedelta(days=3), "40000.00", "gambling"),
            risky(START + timedelta(days=5), "30000.00", "crypto"),
        ]
    )
    (alert,) = [a for a in out.alerts if a.code == "loan_fund_diversion"]
    assert alert.explanation["share"] == 0.35 and alert.loan_id == "L1"
    assert engine.features(state)["score_components"]["transaction_behaviour"] == 150


def test_risky_spending_long_after_disbursement_is_not_diversion() -> None:
    _, _, out = run([opened(START), risky(START + timedelta(days=90), "150000.00", "securities")])
    assert not [a for a in out.alerts if a.code == "loan_fund_diversion"]


def due(no: int, on: datetime, loan: str = "L1") -> Any:
    return ev(
        "installment.due",
        on - timedelta(days=5),
        loan_id=loan,
        installment_no=no,
        due_date=on.date().isoformat(),
        amount_due="1000.00",
        currency="CNY",
    )


def paid(at: datetime, loan: str = "L1") -> Any:
    return ev("repayment.received", at, loan_id=loan, amount="1000.00", currency="CNY")


def test_restructured_loan_cures_after_n_on_time_instalments() -> None:
    days = [START + timedelta(days=30 * i) for i in range(1, 10)]
    events = [opened(START, "20000.00"), ev("loan.restructured", days[0], loan_id="L1")]
    for i, day in enumerate(days[1:], start=1):
        events += [due(i, day), paid(day - timedelta(days=1))]
    _engine, state, out = run(events)
    moves = [
        (a.explanation["from"], a.explanation["to"], a.explanation["reason"])
        for a in out.alerts
        if a.code == "loan_class_change"
    ]
    assert moves[0][:2] == ("normal", "substandard")
    assert moves[-1][:2] == ("substandard", "normal")
    assert "cured after 6" in moves[-1][2]
    migrations = state.loans["L1"].migrations
    assert [m[2] for m in migrations] == ["substandard", "normal"]
    assert state.loan_class == "normal"


def test_restructured_loan_paying_late_does_not_cure() -> None:
    days = [START + timedelta(days=30 * i) for i in range(1, 10)]
    events = [opened(START, "20000.00"), ev("loan.restructured", days[0], loan_id="L1")]
    for i, day in enumerate(days[1:], start=1):
        events += [due(i, day), paid(day + timedelta(days=3))]
    _, state, _ = run(events)
    assert state.loans["L1"].loan_class == "substandard"


def test_default_is_announced_to_guarantors_and_group_members_only() -> None:
    events = [
        ev("customer.linked", START, related_customer_id="G1", relation="guarantor"),
        ev("customer.linked", START, related_customer_id="M1", relation="group_member"),
        ev("customer.linked", START, related_customer_id="H1", relation="household"),
        opened(START, "1000000.00"),
        ev("outcome.default", START + timedelta(days=120)),
    ]
    _, _, out = run(events)
    defaults = [e for e in out.internal if e["type"] == "related.default"]
    assert sorted(e["customer_id"] for e in defaults) == ["G1", "M1"]
    exposures = {
        e["customer_id"]: e["exposure"] for e in out.internal if e["type"] == "related.exposure"
    }
    assert exposures == {"G1": "1000000.00", "M1": "1000000.00"}


def test_contagion_and_large_exposure_on_the_receiving_side() -> None:
    engine, state, out = run(
        [
            opened(START, "3000000.00", customer="G1", loan="LG"),
            _internal(
                "related.exposure", START + timedelta(days=1), exposure="2500000.00", currency="CNY"
            ),
            _internal(
                "related.default",
                START + timedelta(days=2),
                loan_class="substandard",
                reason="loan classified substandard",
            ),
        ]
    )
    codes = [a.code for a in out.alerts]
    assert codes == ["large_exposure", "related_party_default"]
    features = engine.features(state)
    assert features["group_exposure"] == "5500000.00"
    assert features["score_components"]["contagion"] == 200
    assert Decimal(features["own_exposure"]) == Decimal("3000000.00")


def _internal(type_: str, at: datetime, **fields: Any) -> Any:
    from schemas.internal import RelatedDefault, RelatedExposure

    global _n
    _n += 1
    model = RelatedExposure if type_ == "related.exposure" else RelatedDefault
    return model.model_validate(
        {
            "event_id": f"s{_n}",
            "type": type_,
            "customer_id": "G1",
            "related_customer_id": "A",
            "relation": "guarantor",
            "occurred_at": at.isoformat(),
            **fields,
        }
    )
