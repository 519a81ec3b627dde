"""Scenario generators: contract-shaped, deterministic, and really telling their story.

Scenario tests of the risk engine trust a scenario's ``truth`` as the answer
key, so these tests check the defining property of every scenario from the
events themselves (not from the generator's internals): the salary really
stops after the instant the truth names, the diverted share really reaches
40% within ten days, the defaulter really is 91+ days past due, and the
controls really look healthy.
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from creditwatch.simulate import cli as simulate_cli
from creditwatch.simulate.book import iter_jsonl
from creditwatch.simulate.scenarios import (
    SCENARIO_START,
    SCENARIOS,
    Scenario,
    build_scenario,
    build_scenarios,
    expand_names,
)
from schemas.codec import decode_event

MONEY = re.compile(r"^\d+\.\d{2}$")
MONEY_FIELDS = ("amount", "amount_due", "principal", "monthly_income")
RISKY = {"securities", "gambling", "crypto", "real_estate"}
NAMES = list(SCENARIOS)

Event = dict[str, Any]


@pytest.fixture(scope="module")
def built() -> dict[str, Scenario]:
    return {name: build_scenario(name) for name in NAMES}


def _when(event: Event) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


def _day(event: Event) -> date:
    return _when(event).date()  # rendered in +08:00, so this is the local date


def _of(scenario: Scenario, customer_id: str, etype: str | None = None) -> list[Event]:
    return [
        e
        for e in scenario.events
        if e["customer_id"] == customer_id and (etype is None or e["type"] == etype)
    ]


def _credits_from(scenario: Scenario, customer_id: str, counterparty: str) -> list[Event]:
    return [
        e
        for e in _of(scenario, customer_id, "transaction.posted")
        if e["direction"] == "credit" and e.get("counterparty_id") == counterparty
    ]


def _employer_credits(scenario: Scenario, customer_id: str) -> list[Event]:
    return [
        e
        for e in _of(scenario, customer_id, "transaction.posted")
        if e["direction"] == "credit" and e.get("counterparty_type") == "employer"
    ]


def _card_debits(scenario: Scenario, customer_id: str) -> list[Event]:
    return [
        e
        for e in _of(scenario, customer_id, "transaction.posted")
        if e["direction"] == "debit" and e["channel"] == "card"
    ]


def _monthly(credits: list[Event]) -> None:
    """Same counterparty, roughly the same day each month, similar amounts."""
    assert len({e["counterparty_id"] for e in credits}) == 1
    assert all(e["channel"] == "transfer" for e in credits)
    days = [_day(e) for e in credits]
    for a, b in itertools.pairwise(days):
        assert 26 <= (b - a).days <= 34, (a, b)
    amounts = sorted(Decimal(e["amount"]) for e in credits)
    median = amounts[len(amounts) // 2]
    assert all(abs(a - median) <= median * Decimal("0.07") for a in amounts), amounts


def _instalments(scenario: Scenario, customer_id: str) -> dict[tuple[str, int], Event]:
    return {
        (e["loan_id"], e["installment_no"]): e
        for e in _of(scenario, customer_id, "installment.due")
    }


def _repaid(scenario: Scenario, customer_id: str) -> dict[tuple[str, int], list[Event]]:
    out: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in _of(scenario, customer_id, "repayment.received"):
        if "installment_no" in e:
            out[(e["loan_id"], e["installment_no"])].append(e)
    return out


def _healthy(scenario: Scenario, customer_id: str) -> None:
    """Every instalment paid in full by its due date; no failures, no default."""
    dues = _instalments(scenario, customer_id)
    paid = _repaid(scenario, customer_id)
    assert dues, customer_id
    for key, due in dues.items():
        assert [e["amount"] for e in paid[key]] == [due["amount_due"]], key
        assert _day(paid[key][0]) <= date.fromisoformat(due["due_date"]), key
    assert not _of(scenario, customer_id, "repayment.failed")
    assert not _of(scenario, customer_id, "outcome.default")


# --------------------------------------------------------------------------- every scenario


@pytest.mark.parametrize("name", NAMES)
def test_events_decode_and_follow_the_conventions(name: str, built: dict[str, Scenario]) -> None:
    scenario = built[name]
    assert scenario.name == name and scenario.events
    for event in scenario.events:
        decoded = decode_event(orjson.dumps(event))
        assert decoded.event_id == event["event_id"]
        assert event["occurred_at"].endswith("+08:00"), event
        assert event["customer_id"] in scenario.customers
        for field in MONEY_FIELDS:
            if field in event:
                assert isinstance(event[field], str) and MONEY.match(event[field]), event
        if "currency" in event:
            assert event["currency"] == "CNY"
    # The profile (zone, currency) comes first for every customer, at the start.
    first: dict[str, Event] = {}
    for event in scenario.events:
        first.setdefault(event["customer_id"], event)
    assert set(first) == set(scenario.customers)
    for event in first.values():
        assert event["type"] == "customer.updated"
        assert event["timezone"] == "Asia/Shanghai" and event["currency"] == "CNY"
        assert _when(event) == SCENARIO_START


@pytest.mark.parametrize("name", NAMES)
def test_sorted_unique_and_deterministic(name: str, built: dict[str, Scenario]) -> None:
    scenario = built[name]
    instants = [_when(e) for e in scenario.events]
    assert instants == sorted(instants)
    ids = [e["event_id"] for e in scenario.events]
    assert len(ids) == len(set(ids))
    assert build_scenario(name) == scenario
    assert build_scenario(name, seed=2).events != scenario.events


@pytest.mark.parametrize("name", NAMES)
def test_prefix_renames_ids_but_keeps_the_story(name: str, built: dict[str, Scenario]) -> None:
    plain = built[name]
    prefixed = build_scenario(name, prefix="S1-")
    assert all(c.startswith("S1-") for c in prefixed.customers)
    assert all(e["event_id"].startswith("S1-") for e in prefixed.events)
    strip = orjson.dumps(prefixed.events).replace(b"S1-", b"")
    assert orjson.loads(strip) == plain.events
    assert orjson.loads(orjson.dumps(prefixed.truth).replace(b"S1-", b"")) == plain.truth


@pytest.mark.parametrize("name", NAMES)
def test_instalments_are_announced_before_they_are_paid(
    name: str, built: dict[str, Scenario]
) -> None:
    scenario = built[name]
    opened: dict[str, Event] = {}
    announced: dict[tuple[str, int], Event] = {}
    for e in scenario.events:
        if e["type"] == "loan.opened":
            opened[e["loan_id"]] = e
        elif e["type"] == "installment.due":
            assert e["loan_id"] in opened
            date.fromisoformat(e["due_date"])
            announced[(e["loan_id"], e["installment_no"])] = e
        elif e["type"] in ("repayment.received", "repayment.failed", "loan.restructured"):
            assert e["loan_id"] in opened
            if "installment_no" in e:
                assert (e["loan_id"], e["installment_no"]) in announced


@pytest.mark.parametrize("name", NAMES)
def test_truth_is_json_with_roles_and_controls(name: str, built: dict[str, Scenario]) -> None:
    scenario = built[name]
    assert orjson.loads(orjson.dumps(scenario.truth)) == scenario.truth
    assert scenario.truth["roles"] == scenario.customers
    assert scenario.truth["controls"]
    assert set(scenario.truth["controls"]) <= set(scenario.customers)
    ids = {e["event_id"] for e in scenario.events}
    for key, value in scenario.truth.items():
        if key.endswith("_event_id"):
            assert value in ids, key


# --------------------------------------------------------------------------- each story


def test_salary_stop(built: dict[str, Scenario]) -> None:
    s = built["salary_stop"]
    truth = s.truth
    expected = datetime.fromisoformat(truth["expected_at"])
    salaries = _employer_credits(s, truth["subject"])
    assert len(salaries) >= 4 and len(salaries) == truth["salaries_paid"]
    _monthly(salaries)
    assert {e["counterparty_id"] for e in salaries} == {truth["employer_id"]}
    assert salaries[-1]["event_id"] == truth["last_salary_event_id"]
    assert all(_when(e) < expected for e in salaries)
    assert 25 <= (expected.date() - _day(salaries[-1])).days <= 35
    assert len([e for e in _card_debits(s, truth["subject"]) if _when(e) > expected]) >= 10
    assert _when(s.events[-1]) > expected + timedelta(days=30)
    for control in truth["controls"]:
        paid = _employer_credits(s, control)
        _monthly(paid)
        assert (_day(s.events[-1]) - _day(paid[-1])).days <= 31


def test_salary_cut(built: dict[str, Scenario]) -> None:
    s = built["salary_cut"]
    truth = s.truth
    salaries = _employer_credits(s, truth["subject"])
    ids = [e["event_id"] for e in salaries]
    cut_at = ids.index(truth["cut_event_id"])
    before, cut = salaries[:cut_at], salaries[cut_at]
    assert len(before) >= 4
    _monthly(before)
    assert cut["counterparty_id"] == before[0]["counterparty_id"] == truth["employer_id"]
    assert all(Decimal(cut["amount"]) <= Decimal(e["amount"]) / 2 for e in before)
    # On time: on the usual day of month (the earlier ones are within a day of it).
    assert 27 <= (_day(cut) - _day(before[-1])).days <= 33
    assert all(abs(_day(e).day - _day(cut).day) <= 1 for e in before)
    for control in truth["controls"]:
        _monthly(_employer_credits(s, control))


def test_learned_cadence_income(built: dict[str, Scenario]) -> None:
    s = built["learned_cadence_income"]
    truth = s.truth
    cases = truth["cases"]
    assert cases[0]["customer_id"] == truth["subject"]
    assert {c["counterparty_type"] for c in cases} == {"other", None}
    for case in cases:
        cid = case["customer_id"]
        expected = datetime.fromisoformat(case["expected_at"])
        credits = _credits_from(s, cid, case["counterparty_id"])
        assert len(credits) >= 4 and credits[-1]["event_id"] == case["last_credit_event_id"]
        _monthly(credits)
        assert all(e.get("counterparty_type") == case["counterparty_type"] for e in credits)
        assert not _employer_credits(s, cid)
        assert all(_when(e) < expected for e in credits)
        assert 25 <= (expected.date() - _day(credits[-1])).days <= 35
        assert len([e for e in _card_debits(s, cid) if _when(e) > expected]) >= 10
    steady, irregular = truth["controls"]
    recurring = [
        e
        for e in _of(s, steady, "transaction.posted")
        if e["direction"] == "credit" and e.get("counterparty_type") == "other"
    ]
    _monthly(recurring)
    p2p = [
        e["counterparty_id"]
        for e in _of(s, irregular, "transaction.posted")
        if e["direction"] == "credit" and e.get("counterparty_type") == "other"
    ]
    assert len(p2p) >= 3 and len(set(p2p)) == len(p2p)


def _diverted_within(s: Scenario, cid: str, start: datetime, days: int) -> list[Event]:
    return [
        e
        for e in _of(s, cid, "transaction.posted")
        if e["direction"] == "debit"
        and e.get("counterparty_type") in RISKY
        and start < _when(e) <= start + timedelta(days=days)
    ]


def test_fund_diversion(built: dict[str, Scenario]) -> None:
    s = built["fund_diversion"]
    truth = s.truth
    assert {c["counterparty_type"] for c in truth["cases"]} == RISKY
    for case in truth["cases"]:
        cid = case["customer_id"]
        (opened,) = _of(s, cid, "loan.opened")
        assert opened["product"] in ("consumer", "sme_working_capital")
        principal = Decimal(opened["principal"])
        assert principal == Decimal("200000.00")
        disbursed = next(e for e in s.events if e["event_id"] == case["disbursement_event_id"])
        assert disbursed["counterparty_type"] == "lender" and disbursed["direction"] == "credit"
        assert Decimal(disbursed["amount"]) == principal
        start = _when(disbursed)
        diverted = _diverted_within(s, cid, start, 10)
        assert {e["counterparty_type"] for e in diverted} == {case["counterparty_type"]}
        assert all(_when(e) >= start + timedelta(days=3) for e in diverted)
        assert all(e["channel"] in ("transfer", "online") for e in diverted)
        total = sum(Decimal(e["amount"]) for e in diverted)
        assert total / principal >= Decimal("0.4")
        assert [e["event_id"] for e in diverted] == case["diversion_event_ids"]
        # The truth's crossing event is where the running share first reaches 40%.
        running = Decimal(0)
        for e in diverted:
            crossed_before = running >= principal * Decimal("0.4")
            running += Decimal(e["amount"])
            if e["event_id"] == case["crossing_event_id"]:
                assert not crossed_before and running >= principal * Decimal("0.4")
    kinds = truth["control_kinds"]
    assert sorted(kinds.values()) == ["securities_after_90_days", "spent_on_other"]
    for cid, kind in kinds.items():
        (disbursed,) = [
            e for e in _of(s, cid, "transaction.posted") if e.get("counterparty_type") == "lender"
        ]
        assert not _diverted_within(s, cid, _when(disbursed), 90)
        later = _diverted_within(s, cid, _when(disbursed), 365)
        if kind == "spent_on_other":
            assert not later
        else:
            assert later and {e["counterparty_type"] for e in later} == {"securities"}


def test_guarantor_contagion(built: dict[str, Scenario]) -> None:
    s = built["guarantor_contagion"]
    truth = s.truth
    a = truth["source"]
    guarantor, member = truth["affected"]
    (household,) = truth["unaffected"]
    (opened,) = _of(s, a, "loan.opened")
    assert opened["guarantor_ids"] == [guarantor]
    links = {(e["related_customer_id"], e["relation"]) for e in _of(s, a, "customer.linked")}
    assert links == {(guarantor, "guarantor"), (member, "group_member"), (household, "household")}
    (default,) = _of(s, a, "outcome.default")
    assert default["occurred_at"] == truth["default_at"]
    assert default["event_id"] == truth["default_event_id"]
    assert default["loan_id"] == opened["loan_id"] == truth["loan_id"]
    # 91+ days past due by construction: the oldest unpaid instalment is due more
    # than 91 days before the default and before the last event of the stream.
    dues, paid = _instalments(s, a), _repaid(s, a)
    unpaid = sorted(date.fromisoformat(d["due_date"]) for k, d in dues.items() if not paid[k])
    assert unpaid[0].isoformat() == truth["first_missed_due_date"]
    assert (_day(default) - unpaid[0]).days >= 91
    assert (_day(s.events[-1]) - unpaid[0]).days > 91
    assert not [e for e in _of(s, a, "repayment.received") if _day(e) >= unpaid[0]]
    assert _of(s, a, "repayment.failed")
    for healthy in (guarantor, member, household):
        _healthy(s, healthy)


def test_large_exposure(built: dict[str, Scenario]) -> None:
    s = built["large_exposure"]
    truth = s.truth
    limit = Decimal(truth["limit"])
    for members in (truth["group"], truth["controls"]):
        for x in members:
            linked = {
                (e["related_customer_id"], e["relation"]) for e in _of(s, x, "customer.linked")
            }
            assert linked == {(y, "group_member") for y in members if y != x}
    opened = [
        e for e in s.events if e["type"] == "loan.opened" and e["customer_id"] in truth["group"]
    ]
    assert len(opened) == 3 and {e["customer_id"] for e in opened} == set(truth["group"])
    total, crossed_at = Decimal(0), None
    for e in opened:
        total += Decimal(e["principal"])
        if crossed_at is None and total > limit:
            crossed_at = e["event_id"]
    assert crossed_at == truth["crossing_event_id"] == opened[2]["event_id"]
    control_total = sum(
        Decimal(e["principal"])
        for e in s.events
        if e["type"] == "loan.opened" and e["customer_id"] in truth["controls"]
    )
    assert control_total <= limit
    for cid in [*truth["group"], *truth["controls"]]:
        _healthy(s, cid)


@pytest.mark.parametrize("n", [6, 3])
def test_restructure_and_cure(n: int) -> None:
    s = build_scenario("restructure_and_cure", cure_instalments=n)
    truth = s.truth
    assert truth["cure_instalments"] == n
    cid = truth["subject"]
    (restructure,) = _of(s, cid, "loan.restructured")
    assert restructure["event_id"] == truth["restructure_event_id"]
    # 45 days past due at the restructure: the oldest unpaid instalment then.
    dues, paid = _instalments(s, cid), _repaid(s, cid)
    unpaid = [
        date.fromisoformat(d["due_date"])
        for k, d in dues.items()
        if not any(_when(p) < _when(restructure) for p in paid[k])
        and date.fromisoformat(d["due_date"]) < _day(restructure)
    ]
    assert (_day(restructure) - min(unpaid)).days == 45
    after = sorted(
        (d for d in dues.values() if _when(d) > _when(restructure)),
        key=lambda d: d["installment_no"],
    )
    assert len(after) > n
    for due in after[:n]:
        (repayment,) = paid[(due["loan_id"], due["installment_no"])]
        assert repayment["amount"] == due["amount_due"]
        assert _day(repayment) <= date.fromisoformat(due["due_date"])
    assert after[n - 1]["due_date"] == truth["cure_due_date"]
    assert after[n - 1]["installment_no"] == truth["cure_instalment_no"]
    assert not [e for e in _of(s, cid, "repayment.failed") if _when(e) > _when(restructure)]
    # The control is restructured too, but pays every later instalment late.
    (control,) = truth["controls"]
    (c_restructure,) = _of(s, control, "loan.restructured")
    assert c_restructure["event_id"] == truth["control_restructure_event_id"]
    c_dues, c_paid = _instalments(s, control), _repaid(s, control)
    late = [d for d in c_dues.values() if _when(d) > _when(c_restructure)]
    assert len(late) > n
    for due in late:
        key = (due["loan_id"], due["installment_no"])
        assert all(_day(p) > date.fromisoformat(due["due_date"]) for p in c_paid[key])


def test_control(built: dict[str, Scenario]) -> None:
    s = built["control"]
    assert set(s.truth["controls"]) == set(s.customers)
    for cid in s.customers:
        _healthy(s, cid)
    retail = [c for c in s.customers if _of(s, c, "customer.updated")[0]["segment"] == "retail"]
    assert retail
    for cid in retail:
        _monthly(_employer_credits(s, cid))
        assert _card_debits(s, cid)


def _local_hour(event: Event) -> float:
    when = _when(event)  # rendered in +08:00: the customer's local time
    return when.hour + when.minute / 60


def test_spending_drift(built: dict[str, Scenario]) -> None:
    s = built["spending_drift"]
    truth = s.truth
    subject = truth["subject"]
    start = datetime.fromisoformat(truth["drift_start_at"])
    full = datetime.fromisoformat(truth["drift_full_at"])
    purchases = _card_debits(s, subject)
    assert (
        len(purchases)
        == len(_of(s, subject, "transaction.posted")) - len(_employer_credits(s, subject)) - 1
    )  # everything else is a card purchase, bar the loan's disbursement
    before = [e for e in purchases if _when(e) < start]
    drifting = [e for e in purchases if _when(e) >= start]
    after = [e for e in purchases if _when(e) >= full]
    assert [e["event_id"] for e in drifting] == truth["drift_event_ids"]
    assert drifting[0]["event_id"] == truth["first_drift_event_id"]
    usual = {e["merchant_category"] for e in before}
    assert not usual & set(truth["new_merchant_categories"])
    assert len(before) >= 25 and len(after) >= 8

    def mean(events: list[Event]) -> Decimal:
        return sum(Decimal(e["amount"]) for e in events) / len(events)

    # amounts creep up (no step) and the merchants change
    assert mean(after) > Decimal("2.5") * mean(before)
    new_share = sum(e["merchant_category"] not in usual for e in after) / len(after)
    assert new_share >= 0.5
    first_half = drifting[: len(drifting) // 4]
    assert mean(first_half) < Decimal("2") * mean(before)
    # ... and nothing a rule would see: daytime card purchases in CN, far below income
    income = Decimal(truth["monthly_income"])
    for e in drifting:
        assert e["channel"] == "card" and e["country"] == "CN"
        assert 9 <= _local_hour(e) < 21
        assert Decimal(e["amount"]) < income / 4
    by_week: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
    for e in purchases:
        by_week[_day(e).isocalendar()[:2]] += Decimal(e["amount"])
    assert max(by_week.values()) < income / 2
    for control in truth["controls"]:
        _healthy(s, control)
        assert {e["merchant_category"] for e in _card_debits(s, control)} <= {
            "5411",
            "5812",
            "4121",
            "5999",
            "5541",
            "5912",
        }


def test_account_takeover(built: dict[str, Scenario]) -> None:
    s = built["account_takeover"]
    truth = s.truth
    subject = truth["subject"]
    by_id = {e["event_id"]: e for e in s.events}
    fraud = [by_id[i] for i in truth["fraud_event_ids"]]
    takeover = datetime.fromisoformat(truth["takeover_at"])
    assert fraud[0]["event_id"] == truth["first_fraud_event_id"]
    assert _when(fraud[0]) == takeover
    history = [
        e
        for e in _of(s, subject, "transaction.posted")
        if e["direction"] == "debit" and _when(e) < takeover
    ]
    assert len(history) >= 20
    assert {e["channel"] for e in history} == {"card"}
    assert all(8 <= _local_hour(e) < 22 for e in history)
    amounts = sorted(Decimal(e["amount"]) for e in history)
    for e in fraud:
        assert e["customer_id"] == subject and e["direction"] == "debit"
        assert e["channel"] == "online" and "country" not in e
        assert 1 <= _local_hour(e) < 4.5
        assert e["merchant_category"] not in {h["merchant_category"] for h in history}
        # an amount of the customer's own: within 10 % of one of their purchases
        amount = Decimal(e["amount"])
        assert any(abs(amount - a) <= a / 10 + Decimal("0.01") for a in amounts)
    assert (_when(fraud[-1]) - _when(fraud[0])) < timedelta(days=2)
    confirmations = [by_id[i] for i in truth["confirmation_event_ids"]]
    assert [c["transaction_event_id"] for c in confirmations] == truth["fraud_event_ids"]
    assert all(_when(c) > _when(fraud[-1]) for c in confirmations)
    assert truth["confirmed_at"] == min(c["occurred_at"] for c in confirmations)
    assert len(_card_debits(s, subject)) > len(history)  # the customer's own life goes on
    roles = {c: s.customers[c] for c in truth["controls"]}
    assert "control_online_shopper" in roles.values()
    for control, role in roles.items():
        _healthy(s, control)
        debits = [e for e in _of(s, control, "transaction.posted") if e["direction"] == "debit"]
        assert all(8 <= _local_hour(e) < 22 for e in debits)
        online = [e for e in debits if e["channel"] == "online"]
        if role == "control_online_shopper":
            assert len(online) >= 10 and _when(online[0]) < takeover - timedelta(days=30)
        else:
            assert not online


# --------------------------------------------------------------------------- API edges


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="paid_months"):
        build_scenario("salary_stop", paid_months=3)
    with pytest.raises(ValueError, match="cut_share"):
        build_scenario("salary_cut", cut_share=0.6)
    with pytest.raises(ValueError, match="third loan"):
        build_scenario("large_exposure", principal="3000000.00")
    with pytest.raises(ValueError, match="unknown scenario"):
        build_scenario("no_such_thing")
    with pytest.raises(ValueError, match="timezone-aware"):
        build_scenario("control", start=datetime(2026, 1, 1))


def test_expand_names() -> None:
    assert expand_names(["all"]) == NAMES
    assert expand_names(["salary_cut", "control", "salary_cut"]) == ["salary_cut", "control"]


def test_build_scenarios_merges_and_stretches_to_one_horizon() -> None:
    combined = build_scenarios(["all"], 1)
    assert list(combined.truth) == NAMES
    assert len(combined.customers) == sum(len(build_scenario(n).customers) for n in NAMES)
    instants = [_when(e) for e in combined.events]
    assert instants == sorted(instants)
    assert len({e["event_id"] for e in combined.events}) == len(combined.events)
    last_day = _day(combined.events[-1])
    # Everyday activity of the shortest scenarios now runs to the common horizon.
    for cid in combined.truth["control"]["controls"]:
        assert (last_day - _day(_of(combined, cid)[-1])).days <= 10
    # Nobody's salary "stops" just because the stream runs longer, except where that is the story.
    stopped = {combined.truth["salary_stop"]["subject"]}
    stopped |= {c["customer_id"] for c in combined.truth["learned_cadence_income"]["cases"]}
    for cid in combined.customers.keys() - stopped:
        salaries = _employer_credits(combined, cid)
        if salaries:
            assert (last_day - _day(salaries[-1])).days <= 35, cid
    # The stories keep their truth: same subject, same instants.
    alone = build_scenario("salary_stop").truth
    assert combined.truth["salary_stop"]["expected_at"] == alone["expected_at"]
    assert build_scenarios(["all"], 1) == combined


def test_same_scenario_twice_needs_prefixes() -> None:
    a = build_scenario("control", prefix="S1-")
    b = build_scenario("control", prefix="S2-")
    assert not set(a.customers) & set(b.customers)
    assert not {e["event_id"] for e in a.events} & {e["event_id"] for e in b.events}


# --------------------------------------------------------------------------- command line


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="creditwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    simulate_cli.add_parser(sub)
    return parser.parse_args(argv)


def test_cli_writes_scenario_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, truth_path = tmp_path / "events.jsonl", tmp_path / "truth.json"
    args = _parse(
        ["simulate", "--scenario", "salary_stop", "--out", str(out), "--truth", str(truth_path)]
    )
    assert simulate_cli.run(args) == 0
    expected = build_scenarios(["salary_stop"], 1)
    assert out.read_bytes() == b"".join(iter_jsonl(expected.events))
    truth = orjson.loads(truth_path.read_bytes())
    assert truth == expected.truth == {"salary_stop": build_scenario("salary_stop").truth}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scenario salary_stop" in err


def test_cli_repeatable_scenarios_with_seed(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    argv = ["simulate", "--scenario", "control", "--scenario", "salary_cut", "--seed", "4"]
    assert simulate_cli.run(_parse([*argv, "--out", str(out)])) == 0
    expected = build_scenarios(["control", "salary_cut"], 4)
    assert out.read_bytes() == b"".join(iter_jsonl(expected.events))


def test_cli_all_scenarios_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert simulate_cli.run(_parse(["simulate", "--scenario", "all"])) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert len(lines) == len(build_scenarios(["all"], 1).events)
    for line in lines[:50]:
        decode_event(line)


def test_cli_rejects_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(["simulate", "--scenario", "nope"])
    assert exc.value.code == 2
