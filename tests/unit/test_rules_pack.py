"""The default rule pack: every rule fires on a customer who should and not on a control."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, generate_book
from risk.customer import CustomerState
from risk.engine import Engine
from rules.cases import Case, cases_path, load_cases, run_case
from rules.features import FeatureView, Tick
from rules.loader import DEFAULT_PACK, load_default
from schemas.codec import decode_event

RULES = load_default()
CASES = load_cases(cases_path(DEFAULT_PACK))
ENGINE = Engine(Settings(), rule_set_version=RULES.version)

# The early warnings the default pack exists to raise, one rule each.
DEFAULT_WARNINGS = {
    "dpd_1", "dpd_30", "dpd_60", "dpd_90", "repeated_failed_collections", "partial_payments",
    "salary_missing", "salary_cut", "loan_fund_diversion", "cash_withdrawal_burst",
    "spending_beyond_income", "card_new_country_at_night", "large_exposure_breach",
    "related_party_default", "risk_tier_jump",
}  # fmt: skip


def test_the_pack_raises_every_default_warning_and_says_why() -> None:
    ids = {r.id for r in RULES.rules}
    assert ids >= DEFAULT_WARNINGS
    for r in RULES.rules:
        assert len(r.rule.why) > 30, r.id
        assert r.rule.enabled


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case) -> None:
    result = run_case(RULES, case, ENGINE)
    assert result.problem is None
    assert not result.errors
    assert result.got == result.expected


def test_every_rule_has_a_firing_case_and_a_control() -> None:
    for r in RULES.rules:
        mine = [c for c in CASES if c.covers == r.id]
        assert any(r.id in c.expect for c in mine), f"{r.id}: no case where it fires"
        assert any(r.id not in c.expect for c in mine), f"{r.id}: no control case"
    assert all(c.covers in {r.id for r in RULES.rules} for c in CASES), "a case covers no rule"


def test_the_pack_judges_a_simulated_book_exactly_as_its_whole_conditions() -> None:
    """Plans, prefilters and caches change how much work an event costs, never the verdict."""
    book = generate_book(BookConfig(customers=40, months=3))
    events = [decode_event(dumps_event(e)) for e in book]
    states: dict[str, CustomerState] = {}
    fired: set[str] = set()
    for n, event in enumerate(events):
        judged = [event]
        if n % 5 == 0 and event.customer_id in states:  # let time pass now and then
            at = event.occurred_at + timedelta(days=1)
            judged.append(Tick(event_id=f"t{n}", customer_id=event.customer_id, occurred_at=at))
        for ev in judged:
            state = states.get(ev.customer_id)
            before = RULES.capture(state, ENGINE, ev)
            if ev.type == "tick":
                ENGINE.advance(state, ev.occurred_at)
            else:
                state, _ = ENGINE.apply(state, ev)
            states[ev.customer_id] = state
            result = RULES.evaluate(ev, RULES.view(state, ENGINE, ev, before))
            whole = FeatureView(state, ENGINE, ev, before=dict(before))
            expected = [r.id for r in RULES.rules_for(ev.type) if r.condition.test(ev, whole, {})]
            assert [h.rule_id for h in result.hits] == expected, ev
            assert result.errors == []
            fired.update(expected)
            if ev.type == "transaction.posted":  # a ratio read on every debit, from its parts
                parts = FeatureView(state, ENGINE, ev)
                income, spent = parts["expected_income"], parts["tx_7d_debit_sum"]
                ratio = None
                if income is not None and income > 0:
                    ratio = (spent / income).quantize(Decimal("0.0001"))
                assert whole["spend_to_income_7d"] == ratio
    assert len(fired) >= 5, fired  # the book exercises a good part of the pack


def test_same_input_same_warnings_and_ids() -> None:
    firing = [c for c in CASES if c.expect]
    first = [run_case(RULES, c, ENGINE, i) for i, c in enumerate(firing)]
    again = [run_case(RULES, c, ENGINE, i) for i, c in enumerate(firing)]
    assert [r.got for r in first] == [r.got for r in again]


def test_hits_carry_stable_alert_ids_and_the_version() -> None:
    from rules.cases import apply, build_event

    case = next(c for c in CASES if c.expect == ["dpd_90"])
    ids = []
    for _ in range(2):
        state = None
        for i, data in enumerate(case.given):
            state = apply(ENGINE, state, build_event(data, "C1", f"g{i}"))
        ev = build_event(case.when, "C1", "when")
        before = RULES.capture(state, ENGINE, ev)
        state = apply(ENGINE, state, ev)
        (hit,) = RULES.evaluate(ev, RULES.view(state, ENGINE, ev, before)).hits
        ids.append(hit.alert_id)
        assert hit.rule_set_version == RULES.version
        assert hit.severity == "critical" and hit.route == "both"
        assert hit.dedup_key == "C1:dpd:90"
    assert ids[0] == ids[1]
