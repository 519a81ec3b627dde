"""Inhibition: a stronger warning on the same loan keeps weaker ones quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.clock import ManualClock
from alerts.config import DEFAULT_INHIBIT_RULES, AlertConfig, InhibitRule
from alerts.factory import AlertService, memory_service
from alerts.inhibit import Inhibitor
from alerts.matchers import Matcher
from alerts.model import alert_labels
from schemas.outputs import RiskAlert

T0 = datetime(2026, 4, 1, tzinfo=UTC)


def make_alert(**fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": "a-dpd30",
        "dedup_key": "C1:dpd:30",
        "customer_id": "C1",
        "loan_id": "L1",
        "severity": "warning",
        "source": "rule",
        "code": "dpd_30",
        "title": "30 days past due",
        "explanation": {"route": "both"},
        "risk_score": 500,
        "risk_tier": "medium",
        "loan_class": "special_mention",
        "triggered_at": T0,
        "evidence_event_ids": [],
        "rule_set_version": "v1",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})


def loss_alert(**fields: Any) -> RiskAlert:
    return make_alert(
        **{
            "alert_id": "a-class",
            "dedup_key": "C1:L1:class",
            "severity": "critical",
            "source": "classification",
            "code": "loan_class_change",
            "title": "Loan L1 moved from doubtful to loss",
            "explanation": {"from": "doubtful", "to": "loss"},
            "loan_class": "loss",
            **fields,
        }
    )


def labels(alert: RiskAlert) -> dict[str, str]:
    return alert_labels(alert, "both")


def test_default_rules_mute_arrears_under_a_severe_class_on_the_same_loan() -> None:
    inhibitor = Inhibitor(DEFAULT_INHIBIT_RULES)
    source = ("C1:L1:class", labels(loss_alert()))
    assert (
        inhibitor.inhibited_by(labels(make_alert()), "C1:dpd:30", [source])
        == "severe-class-mutes-arrears"
    )
    other_loan = labels(make_alert(loan_id="L2"))
    assert inhibitor.inhibited_by(other_loan, "C1:dpd:30", [source]) is None
    other_customer = labels(make_alert(customer_id="C2"))
    assert inhibitor.inhibited_by(other_customer, "C1:dpd:30", [source]) is None
    salary = labels(make_alert(code="salary_missing"))
    assert inhibitor.inhibited_by(salary, "C1:salary", [source]) is None


def test_a_warning_never_inhibits_itself() -> None:
    rule = InhibitRule(
        name="any", source=[Matcher.parse("code=dpd_30")], target=[Matcher.parse("code=dpd_30")]
    )
    target = labels(make_alert())
    assert Inhibitor([rule]).inhibited_by(target, "C1:dpd:30", [("C1:dpd:30", target)]) is None


def test_stronger_only_compares_severities() -> None:
    inhibitor = Inhibitor(DEFAULT_INHIBIT_RULES)
    dpd90 = ("C1:dpd:90", labels(make_alert(code="dpd_90", severity="critical")))
    dpd1 = ("C1:dpd:1", labels(make_alert(code="dpd_1", severity="warning")))
    assert (
        inhibitor.inhibited_by(labels(make_alert()), "C1:dpd:30", [dpd90])
        == "deeper-arrears-mutes-shallower"
    )
    assert inhibitor.inhibited_by(labels(make_alert()), "C1:dpd:30", [dpd1]) is None


def test_inhibit_rules_are_checked_when_configured() -> None:
    with pytest.raises(ValidationError, match="unknown label"):
        InhibitRule(name="x", source=["colour=red"], target=["code=dpd_1"])
    with pytest.raises(ValidationError, match="equal: unknown label"):
        InhibitRule(name="x", source=["code=a"], target=["code=b"], equal=("branch",))
    with pytest.raises(ValidationError, match="names must be unique"):
        AlertConfig(inhibit_rules=[DEFAULT_INHIBIT_RULES[0], DEFAULT_INHIBIT_RULES[0]])
    rule = InhibitRule.model_validate(
        {"name": "from-yaml", "source": ["severity=critical"], "target": ['code=~"dpd_.*"']}
    )
    assert rule.target[0].matches({"code": "dpd_30"})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def service(clock: ManualClock) -> AlertService:
    return memory_service(notifiers={}, config=AlertConfig(), clock=clock)


async def digests(service: AlertService) -> list[list[str]]:
    claimed = await service.outbox.claim(now_ms=10**15, lease_ms=1, owner="t", limit=100)
    return [[n.alert.code for n in m.notifications()] for m in claimed if m.kind == "digest"]


async def test_arrival_after_the_stronger_warning_is_inhibited(service: AlertService) -> None:
    p = service.pipeline
    assert (await p.submit(loss_alert())).reason == "new"
    out = await p.submit(make_alert())
    assert (out.reason, out.detail) == ("inhibited", "severe-class-mutes-arrears")
    # the muted warning is still recorded: it can be resolved
    assert (await p.state.records("C1"))["C1:dpd:30"].firing


async def test_stronger_warning_arriving_within_the_group_wait_mutes_at_flush(
    service: AlertService, clock: ManualClock
) -> None:
    p = service.pipeline
    assert (await p.submit(make_alert())).reason == "new"  # the tick emits DPD first...
    assert (await p.submit(loss_alert())).reason == "new"  # ...then the class change
    clock.advance(timedelta(minutes=1))
    report = await p.flush()
    assert report.dropped == 1
    assert await digests(service) == [["loan_class_change"]]
    # nobody saw the DPD warning, so its resolve tells nobody
    assert (await p.resolve("C1", "C1:dpd:30", T0)).reason == "never_notified"


async def test_a_cured_class_stops_inhibiting(service: AlertService, clock: ManualClock) -> None:
    p = service.pipeline
    await p.submit(loss_alert())
    await p.resolve("C1", "C1:L1:class", T0 + timedelta(days=1))
    assert (await p.submit(make_alert())).reason == "new"
    # a class alert of low severity on the same key (improvement) does not inhibit either
    await p.submit(loss_alert(alert_id="a-class2"))
    await p.submit(loss_alert(alert_id="a-class3", severity="info"))
    out = await p.submit(make_alert(alert_id="a-dpd30b", dedup_key="C1:dpd:30b"))
    assert out.reason == "new"
