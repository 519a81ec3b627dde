"""The default rule pack: every rule fires on a customer who should and not on a control."""

from __future__ import annotations

import pytest

from config.settings import Settings
from risk.engine import Engine
from rules.cases import Case, cases_path, load_cases, run_case
from rules.loader import DEFAULT_PACK, load_default

RULES = load_default()
CASES = load_cases(cases_path(DEFAULT_PACK))
ENGINE = Engine(Settings(), rule_set_version=RULES.version)

# The issue's list, one rule per item.
ISSUE_ITEMS = {
    "dpd_1", "dpd_30", "dpd_60", "dpd_90", "repeated_failed_collections", "partial_payments",
    "salary_missing", "salary_cut", "loan_fund_diversion", "cash_withdrawal_burst",
    "spending_beyond_income", "card_new_country_at_night", "large_exposure_breach",
    "related_party_default", "risk_tier_jump",
}  # fmt: skip


def test_the_pack_covers_the_issue_and_says_why_for_each_rule() -> None:
    ids = {r.id for r in RULES.rules}
    assert ids >= ISSUE_ITEMS
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
