"""The scenarios the rules cannot see, run as the processing runs them.

Each simulated story (``creditwatch.simulate.scenarios``) is decoded, taken in
``occurred_at`` order and scored by the detectors before the engine applies
each event (:func:`creditwatch.evaluate.score_stream`), with the stack's own
adaptive thresholds. The detector the story exists for must flag it, inside
the window the truth names, and stay quiet on every control of the same
simulation; the default rule pack, run over the same stream, must not fire
on anything in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from config.settings import Settings
from creditwatch.evaluate import ordered, score_stream
from creditwatch.simulate.scenarios import Scenario, build_scenario
from detectors import flags
from detectors.stack import Finding, Stack
from risk.customer import CustomerState
from risk.engine import Engine
from rules.loader import DEFAULT_PACK, load_file
from schemas.codec import decode_event

SEEDS = (1, 2, 3, 4, 5)
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass
class Run:
    scenario: Scenario
    events: dict[str, Any]  # event id -> decoded event
    flags: dict[tuple[str, str], list[tuple[Any, Finding]]]  # (customer, detector) -> flags
    stack: Stack

    def flagged(self, customer: str, detector: str) -> list[tuple[Any, Finding]]:
        return self.flags.get((customer, detector), [])

    @property
    def truth(self) -> dict[str, Any]:
        return self.scenario.truth


def run(name: str, seed: int) -> Run:
    scenario = build_scenario(name, seed=seed)
    events = ordered(decode_event(orjson.dumps(e)) for e in scenario.events)
    stack = Stack()
    flags: dict[tuple[str, str], list[tuple[Any, Finding]]] = defaultdict(list)
    for event, findings in score_stream(events, Engine(Settings()), stack):
        for f in findings:
            if f.flagged:
                flags[(event.customer_id, f.detector)].append((event, f))
    return Run(scenario, {e.event_id: e for e in events}, dict(flags), stack)


@pytest.fixture(scope="module", params=SEEDS)
def drift(request: pytest.FixtureRequest) -> Run:
    return run("spending_drift", request.param)


@pytest.fixture(scope="module", params=SEEDS)
def takeover(request: pytest.FixtureRequest) -> Run:
    return run("account_takeover", request.param)


def rule_hits(scenario: Scenario) -> dict[str, list[str]]:
    """Every rule of the default pack that fires, by customer, over the whole stream."""
    rules = load_file(DEFAULT_PACK)
    engine = Engine(Settings())
    states: dict[str, CustomerState] = {}
    hits: dict[str, list[str]] = defaultdict(list)
    for event in ordered(decode_event(orjson.dumps(e)) for e in scenario.events):
        st = states.setdefault(event.customer_id, CustomerState(customer_id=event.customer_id))
        before = rules.capture(st, engine, event)
        engine.apply(st, event)
        verdict = rules.evaluate(event, rules.view(st, engine, event, before))
        assert not verdict.errors, verdict.errors
        for hit in verdict.hits:
            hits[event.customer_id].append(hit.rule_id)
    return dict(hits)


# -- spending that drifts ------------------------------------------------------------


def test_spending_drift_is_flagged_while_it_drifts(drift: Run) -> None:
    truth = drift.truth
    subject = truth["subject"]
    flagged = drift.flagged(subject, "spending_drift")
    assert flagged, "the drift was never flagged"
    start = datetime.fromisoformat(truth["drift_start_at"])
    full = datetime.fromisoformat(truth["drift_full_at"])
    first = flagged[0][0]
    assert start <= first.occurred_at < full  # caught before the drift is complete
    assert {e.event_id for e, _ in flagged} <= set(truth["drift_event_ids"])
    # the explanation says what drifted
    assert max(f.explanation["amount"] + f.explanation["merchant_mix"] for _, f in flagged) > 6


def test_spending_drift_controls_stay_quiet(drift: Run) -> None:
    for control in drift.truth["controls"]:
        assert drift.flagged(control, "spending_drift") == []


def test_no_single_drifting_purchase_is_out_of_range(drift: Run) -> None:
    """The drift is slow: every drifting purchase is one a retail card holder makes."""
    amounts = [
        float(drift.events[i].amount) for i in drift.truth["drift_event_ids"] if i in drift.events
    ]
    income = float(drift.truth["monthly_income"])
    assert max(amounts) < income / 4
    assert all(drift.events[i].channel == "card" for i in drift.truth["drift_event_ids"])


def test_spending_drift_crosses_no_rule() -> None:
    hits = rule_hits(build_scenario("spending_drift"))
    assert hits == {}


# -- account takeover ----------------------------------------------------------------


def test_account_takeover_is_flagged_at_once(takeover: Run) -> None:
    truth = takeover.truth
    subject = truth["subject"]
    flagged = takeover.flagged(subject, "transaction_anomaly")
    fraud = set(truth["fraud_event_ids"])
    flagged_ids = {e.event_id for e, _ in flagged}
    assert truth["first_fraud_event_id"] in flagged_ids  # the very first one
    assert len(flagged_ids & fraud) >= len(fraud) - 1
    assert flagged_ids <= fraud  # nothing of the customer's own life
    for event, finding in flagged:
        parts = finding.explanation
        # the amounts look like the customer's; the night and the channel do not
        assert parts["amount"] < 2.0
        assert parts["time"] > 1.0 and parts["channel"] > 1.0
        assert parts["time"] + parts["channel"] > 3 * parts["amount"]
        assert event.occurred_at.astimezone(SHANGHAI).hour < 5


def test_account_takeover_controls_stay_quiet(takeover: Run) -> None:
    controls = takeover.truth["controls"]
    assert "control_online_shopper" in {takeover.scenario.customers[c] for c in controls}
    for control in controls:
        assert takeover.flagged(control, "transaction_anomaly") == []


def test_fraud_confirmations_reach_the_flags() -> None:
    """Each confirmation names a flagged transaction: its flag is taught, then forgotten."""
    scenario = build_scenario("account_takeover")
    subject = scenario.truth["subject"]
    stack, engine = Stack(), Engine(Settings())
    states: dict[str, CustomerState] = {}
    dets: dict[str, dict] = {}
    reached = []
    for event in ordered(decode_event(orjson.dumps(e)) for e in scenario.events):
        st = states.setdefault(event.customer_id, CustomerState(customer_id=event.customer_id))
        det = dets.setdefault(event.customer_id, {})
        stack.observe(event, st, det)
        if event.type == "outcome.fraud_confirmed":
            assert event.customer_id == subject
            found = stack.feedback(event, det)
            assert {f.event_id for f in found} <= {event.transaction_event_id}
            assert not flags.find(det, event_id=event.transaction_event_id)
            reached.extend(f.detector for f in found)
        engine.apply(st, event)
    assert reached.count("transaction_anomaly") >= len(scenario.truth["fraud_event_ids"]) - 1
    assert not flags.find(dets[subject], event_id=scenario.truth["first_fraud_event_id"])


def test_account_takeover_crosses_no_rule() -> None:
    hits = rule_hits(build_scenario("account_takeover"))
    assert hits == {}
