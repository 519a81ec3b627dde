"""Walking the days: a day at rest moves only the instant, any other day is judged in full.

Each scenario is judged twice from the same events: once as the judge does it
(days at rest leave out the engine step and the tick), once with every day
stepped and judged (``Engine.at_rest`` never holds). Warnings, tasks, states,
announcements, rule errors and the customer's whole state must be the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as hs

from config.settings import Settings
from risk.classification import CLASSES
from risk.customer import CustomerState
from risk.engine import Engine, Outcome
from risk.judge import Judge, build_judge
from risk.loans import Loan
from risk.score import score_components, score_total, total_score
from rules.engine import CompiledRuleSet
from rules.loader import DEFAULT_PACK, load_data, load_default
from schemas.codec import encode
from schemas.events import EVENT_MODELS

SETTINGS = Settings()
CUSTOMER = "C1"


# -- events ---------------------------------------------------------------------------


def _events() -> Callable[..., Any]:
    ids = count(1)

    def ev(type_: str, at: str, **fields: Any) -> Any:
        data = {
            "event_id": f"e{next(ids)}",
            "type": type_,
            "customer_id": CUSTOMER,
            "occurred_at": at,
            **fields,
        }
        return EVENT_MODELS[type_].model_validate(data)

    return ev


def _salary(ev: Callable[..., Any], at: str) -> Any:
    return ev(
        "transaction.posted",
        at,
        account_id="A1",
        amount="9000.00",
        currency="CNY",
        direction="credit",
        channel="transfer",
        counterparty_id="EMP1",
        counterparty_type="employer",
    )


def _card(ev: Callable[..., Any], at: str) -> Any:
    return ev(
        "transaction.posted",
        at,
        account_id="A1",
        amount="120.00",
        currency="CNY",
        direction="debit",
        channel="card",
        country="CN",
    )


def _book(
    *, pay_first: bool = False, salary_stops: bool = False, paid_at: str = "09:00"
) -> list[Any]:
    """A customer with one loan, three monthly instalments and a salary; months pass.

    The first instalment is paid on time (``pay_first``) or goes 40 days past
    due; the salary (paid at ``paid_at``, local time) keeps coming or stops
    after February (``salary_stops``).
    Between the events lie weeks in which nothing can happen.
    """
    ev = _events()
    out = [
        ev(
            "customer.updated",
            "2026-01-01T09:00:00+08:00",
            segment="retail",
            timezone="Asia/Shanghai",
            currency="CNY",
        ),
        ev(
            "loan.opened",
            "2026-01-02T10:00:00+08:00",
            loan_id="L1",
            product="consumer",
            principal="30000.00",
            currency="CNY",
            term_months=3,
            annual_rate="0.12",
        ),
        _salary(ev, f"2026-01-25T{paid_at}:00+08:00"),
    ]
    for no, due in enumerate(("2026-02-10", "2026-03-10", "2026-04-10"), start=1):
        out.append(
            ev(
                "installment.due",
                "2026-01-05T08:00:00+08:00",
                loan_id="L1",
                installment_no=no,
                due_date=due,
                amount_due="10100.00",
                currency="CNY",
            )
        )
    out.append(_card(ev, "2026-01-20T12:00:00+08:00"))
    out.append(_salary(ev, f"2026-02-25T{paid_at}:00+08:00"))
    if pay_first:
        out.append(
            ev(
                "repayment.received",
                "2026-02-09T12:00:00+08:00",
                loan_id="L1",
                amount="10100.00",
                currency="CNY",
            )
        )
    if not salary_stops:
        out.append(_salary(ev, f"2026-03-25T{paid_at}:00+08:00"))
        out.append(_salary(ev, f"2026-04-25T{paid_at}:00+08:00"))
    out.append(_card(ev, "2026-03-01T12:00:00+08:00"))
    out.append(
        ev(
            "repayment.received",
            "2026-03-22T12:00:00+08:00",
            loan_id="L1",
            amount="10100.00",
            currency="CNY",
        )
    )
    out.append(
        ev(
            "repayment.failed",
            "2026-05-20T12:00:00+08:00",
            loan_id="L1",
            amount="10100.00",
            currency="CNY",
            reason="insufficient_funds",
        )
    )
    return sorted(out, key=lambda e: e.occurred_at)


# -- judging ------------------------------------------------------------------------


def _pack(*extra: dict[str, Any], ticks: bool = True) -> CompiledRuleSet:
    """The default pack with ``extra`` rules (and, unless ``ticks``, no rule on ticks)."""
    with open(DEFAULT_PACK, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not ticks:
        for rule in data["rules"]:
            rule["applies_to"] = [t for t in rule["applies_to"] if t != "tick"] or ["loan.opened"]
    data["rules"].extend(extra)
    return load_data(data)


def _rule(rule_id: str, condition: dict[str, Any], cooldown: str = "P1D") -> dict[str, Any]:
    return {
        "id": rule_id,
        "description": rule_id.replace("_", " "),
        "why": "Exercises the days walked.",
        "applies_to": ["tick"],
        "condition": condition,
        "severity": "warning",
        "cooldown": cooldown,
        "dedup_key": "{customer_id}:" + rule_id,
        "route": "risk_desk",
    }


class _Run:
    """One judge over the events (and the worker's tick at every UTC midnight between them)."""

    def __init__(self, rules: CompiledRuleSet, *, every_day: bool) -> None:
        self.judge: Judge = build_judge(SETTINGS, rule_set=rules)
        self.steps = 0
        engine = self.judge.engine
        advance = engine.advance

        def counted(state: CustomerState, to: datetime, out: Outcome | None = None) -> Outcome:
            self.steps += 1
            return advance(state, to, out)

        engine.advance = counted  # type: ignore[method-assign]
        if every_day:
            engine.at_rest = lambda st, to: False  # type: ignore[method-assign]
        self.records: list[bytes | str] = []

    def take(self, out: Outcome) -> None:
        self.records += [encode(a) for a in out.alerts]
        self.records += [encode(t) for t in out.tasks]
        self.records += [encode(s) for s in out.states]
        self.records += [repr(i) for i in out.internal]
        self.records += [repr(e) for e in out.rule_errors]

    def alerts(self) -> Iterator[dict[str, Any]]:
        for r in self.records:
            if isinstance(r, bytes) and b'"dedup_key"' in r:
                yield orjson.loads(r)

    def over(self, events: list[Any], *, ticks: bool = True) -> CustomerState:
        st: CustomerState | None = None
        last: datetime | None = None
        for e in events:
            midnight = e.occurred_at.astimezone(UTC).replace(hour=0, minute=0, second=0)
            while ticks and st is not None and last is not None and last < midnight:
                last += timedelta(days=1)
                self.take(self.judge.advance(st, last))
            last = midnight
            st, out = self.judge.apply(st, e)
            self.take(out)
        assert st is not None
        self.take(self.judge.advance(st, datetime(2026, 7, 1, tzinfo=UTC)))
        return st


def _both(
    rules: Callable[[], CompiledRuleSet], events: list[Any], *, ticks: bool = True
) -> tuple[_Run, _Run]:
    """The same events judged as the judge does it and with every day judged in full."""
    fast, full = _Run(rules(), every_day=False), _Run(rules(), every_day=True)
    st_fast, st_full = fast.over(events, ticks=ticks), full.over(events, ticks=ticks)
    assert fast.records == full.records
    assert st_fast.to_dict() == st_full.to_dict()
    return fast, full


# -- the walk -----------------------------------------------------------------------


@pytest.mark.parametrize("ticks", [True, False], ids=["daily tick", "events only"])
@pytest.mark.parametrize("pay_first", [True, False], ids=["paid", "past due"])
@pytest.mark.parametrize("salary_stops", [False, True], ids=["salary", "salary stops"])
def test_days_at_rest_change_nothing_the_full_walk_would_not(
    ticks: bool, pay_first: bool, salary_stops: bool
) -> None:
    events = _book(pay_first=pay_first, salary_stops=salary_stops)
    fast, full = _both(load_default, events, ticks=ticks)
    assert fast.steps < full.steps  # days were left out...
    codes = [a["code"] for a in fast.alerts()]
    if not pay_first:  # ...and arrears still age, and warn, on the very day
        dpd_1 = next(a for a in fast.alerts() if a["code"] == "dpd_1")
        assert dpd_1["triggered_at"] == "2026-02-11T00:00:00+08:00"
        assert "dpd_30" in codes
    if salary_stops:
        assert "salary_missing" in codes


def test_an_income_turning_late_after_the_last_midnight_is_stepped() -> None:
    """Paid at 03:00, the salary turns late after midnight, before the 08:00 tick."""
    events = _book(pay_first=True, salary_stops=True, paid_at="03:00")
    fast, full = _both(load_default, events)
    assert fast.steps < full.steps


def test_a_quiet_spell_between_events_is_left_out() -> None:
    """Without the daily tick, months without news are walked in one step each side."""
    ev = _events()
    events = [
        ev("customer.updated", "2026-01-01T09:00:00+08:00", timezone="Asia/Shanghai"),
        ev(
            "loan.opened",
            "2026-01-02T10:00:00+08:00",
            loan_id="L1",
            product="consumer",
            principal="1000.00",
            currency="CNY",
            term_months=12,
            annual_rate="0.1",
        ),
        ev(
            "installment.due",
            "2026-01-03T08:00:00+08:00",
            loan_id="L1",
            installment_no=1,
            due_date="2026-12-10",
            amount_due="100.00",
            currency="CNY",
        ),
        ev(
            "repayment.received",
            "2026-06-30T12:00:00+08:00",
            loan_id="L1",
            amount="100.00",
            currency="CNY",
        ),
    ]
    fast, full = _both(load_default, events, ticks=False)
    assert full.steps > 170  # every midnight from January to the end of June, and beyond
    assert fast.steps < 10


def test_a_rule_that_fires_on_an_unchanged_state_fires_every_day() -> None:
    """A tick rule that needs no change (open loans, one a day) keeps every day judged."""
    rule = _rule("loan_open_today", {"feature": "open_loans", "op": "ge", "value": 1})
    events = _book(pay_first=True)
    fast, _ = _both(lambda: _pack(rule), events, ticks=False)
    fired = [a for a in fast.alerts() if a["code"] == "loan_open_today"]
    days = {a["triggered_at"][:10] for a in fired}
    assert len(fired) == len(days) > 150  # once a day, every day from January to June


def test_a_rule_on_the_clock_keeps_every_day_judged() -> None:
    """A tick rule reading the time (days since the income was due) sees every day."""
    rule = _rule("income_three_days_late", {"feature": "income_days_late", "op": "ge", "value": 3})
    rules = _pack(rule)
    assert not rules.quiet_ticks
    events = _book(pay_first=True, salary_stops=True)
    fast, full = _both(lambda: _pack(rule), events, ticks=False)
    assert fast.steps == full.steps
    fired = [a for a in fast.alerts() if a["code"] == "income_three_days_late"]
    assert len(fired) > 20  # once a day from three days after the salary was due


def test_a_rule_on_a_field_of_the_tick_keeps_every_day_judged() -> None:
    rule = _rule("tick_named", {"field": "event_id", "op": "contains", "value": "T00:00:00+08:00"})
    assert not _pack(rule).quiet_ticks
    events = _book(pay_first=True)
    fast, full = _both(lambda: _pack(rule), events, ticks=False)
    assert fast.steps == full.steps


def test_a_change_of_any_kind_ends_the_rest() -> None:
    """A rule on any state feature, and a set with no tick rule at all."""
    rule = _rule(
        "score_or_warnings",
        {
            "any": [
                {"feature": "open_alerts", "op": "changed_by", "value": 1},
                {"feature": "risk_score", "op": "crosses", "value": 300},
            ]
        },
    )
    assert _pack(rule).quiet_ticks
    for pay_first in (True, False):
        _both(lambda: _pack(rule), _book(pay_first=pay_first), ticks=False)
        _both(lambda: _pack(ticks=False), _book(pay_first=pay_first), ticks=True)


def _resting(on_loan: int, without_loan: int) -> CustomerState:
    """A customer current on one loan, with warnings open on it and without a loan."""
    st = CustomerState(customer_id=CUSTOMER, timezone="Asia/Shanghai")
    loan = st.loans["L1"] = Loan(loan_id="L1", currency="CNY", open_alerts=on_loan)
    loan.add_installment(1, datetime(2026, 6, 10).date(), Decimal("100.00"))
    st.as_of = datetime(2026, 1, 5, 12, tzinfo=UTC)
    st.open_alerts = on_loan + without_loan  # as the judge counts a detector's warning
    _, st.risk_score, _ = Engine(SETTINGS)._tally(st)
    return st


def _walk(rules: CompiledRuleSet, st: CustomerState, *, every_day: bool) -> _Run:
    run = _Run(rules, every_day=every_day)
    # to a local midnight: the last step of the walk is its last day's
    run.take(run.judge.advance(st, datetime.fromisoformat("2026-01-20T00:00:00+08:00")))
    return run


def test_a_summary_not_yet_settled_is_stepped_again() -> None:
    """Warnings without a loan still count in the score the first day, not the second."""
    rule = _rule("score_fell", {"feature": "risk_score", "op": "changed_by", "value": -10})
    fast_state, full_state = _resting(0, 5), _resting(0, 5)
    fast = _walk(_pack(rule), fast_state, every_day=False)
    full = _walk(_pack(rule), full_state, every_day=True)
    assert fast.records == full.records
    assert fast_state.to_dict() == full_state.to_dict()
    assert fast_state.risk_score == 10  # the warning's own, on the loan
    assert [a["code"] for a in fast.alerts()] == ["score_fell"]
    assert fast.steps < full.steps


def test_a_rule_true_of_an_unchanged_state_keeps_the_days_judged() -> None:
    """Fewer warnings the first day (no hit), the same ever after (a hit every day)."""
    rule = _rule(
        "no_fewer_warnings",
        {"not": {"feature": "open_alerts", "op": "changed_by", "value": -1}},
    )
    fast_state, full_state = _resting(12, 3), _resting(12, 3)
    fast = _walk(_pack(rule), fast_state, every_day=False)
    full = _walk(_pack(rule), full_state, every_day=True)
    assert fast.records == full.records
    assert fast_state.to_dict() == full_state.to_dict()
    days = [a["triggered_at"][:10] for a in fast.alerts() if a["code"] == "no_fewer_warnings"]
    assert days == [f"2026-01-{d:02d}" for d in range(7, 21)]


def test_the_default_pack_judges_ticks_on_the_state_alone() -> None:
    assert load_default().quiet_ticks


# -- the engine's side ----------------------------------------------------------------


def test_a_warning_without_a_loan_unsettles_the_summary() -> None:
    """Its count moves the score at the next summary: the next day is stepped in full."""
    engine = Engine(SETTINGS)
    st = CustomerState(customer_id=CUSTOMER)
    st.loans["L1"] = Loan(loan_id="L1", currency="CNY")
    out = Outcome()
    engine._summarize(st, datetime(2026, 1, 1, tzinfo=UTC), out)
    assert engine.settled(st)
    st.open_alerts += 1  # a detector's warning on a transaction: no loan to count it on
    assert not engine.settled(st)
    engine._summarize(st, datetime(2026, 1, 2, tzinfo=UTC), out)
    assert not engine.settled(st)  # the score counted it, the loans' count does not
    engine._summarize(st, datetime(2026, 1, 3, tzinfo=UTC), out)
    assert engine.settled(st)


def test_a_day_is_at_rest_only_without_arrears_or_a_late_income() -> None:
    engine = Engine(SETTINGS)
    ev = _events()
    st = CustomerState(customer_id=CUSTOMER)
    st, _ = engine.apply(st, _salary(ev, "2026-01-25T09:00:00+00:00"))
    st, _ = engine.apply(
        st,
        ev(
            "installment.due",
            "2026-01-26T08:00:00+00:00",
            loan_id="L1",
            installment_no=1,
            due_date="2026-02-10",
            amount_due="100.00",
            currency="CNY",
        ),
    )
    assert engine.at_rest(st, datetime(2026, 2, 10, tzinfo=UTC))
    assert not engine.at_rest(st, datetime(2026, 2, 11, tzinfo=UTC))  # 1 day past due
    assert not engine.at_rest(st, st.as_of)  # no time passes
    st.loans["L1"].installments.clear()
    assert engine.at_rest(st, datetime(2026, 3, 1, tzinfo=UTC))
    # the salary is expected about a month after the last one, then five days' grace
    assert not engine.at_rest(st, datetime(2026, 3, 15, tzinfo=UTC))
    st.income.late_alerted_for = st.income.expected_at()  # already reported late
    assert engine.at_rest(st, datetime(2026, 3, 15, tzinfo=UTC))


@given(
    max_dpd=hs.integers(-5, 400),
    loan_class=hs.sampled_from(CLASSES),
    failed_streak=hs.integers(0, 6),
    defaulted=hs.booleans(),
    on_time_ratio=hs.none() | hs.floats(0, 1),
    partial_payments=hs.integers(0, 5),
    income_late=hs.booleans(),
    income_dropped=hs.booleans(),
    diverted=hs.booleans(),
    open_alerts=hs.integers(0, 20),
    contagion=hs.booleans(),
    detectors=hs.integers(0, 300),
)
def test_the_total_alone_is_the_total_of_the_components(**inputs: Any) -> None:
    assert score_total(*inputs.values()) == total_score(score_components(**inputs))


def test_the_summary_in_one_pass_is_the_components_total() -> None:
    engine = Engine(SETTINGS)
    st = CustomerState(customer_id=CUSTOMER, open_alerts=3, detector_points=40)
    for i, (status, cls, dpd) in enumerate(
        [("open", "special_mention", 12), ("closed", "loss", 0), ("written_off", "loss", 200)]
    ):
        loan = Loan(loan_id=f"L{i}", currency="CNY", status=status, loan_class=cls)
        loan.dpd_seen, loan.history, loan.failed_streak = dpd, "OOLO"[: i + 2], i
        loan.principal, loan.diverted = Decimal("1000"), Decimal(300 * i)
        st.loans[loan.loan_id] = loan
    worst_class, score, _ = engine._tally(st)
    assert worst_class == "loss"
    assert score == total_score(engine._components(st))
