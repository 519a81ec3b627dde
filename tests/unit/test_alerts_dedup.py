"""Dedup: one notification per key per repeat interval, escalation, redelivery, resolve."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from alerts.clock import ManualClock
from alerts.config import AlertConfig
from alerts.dedup import DedupRecord, decide, decide_resolve
from alerts.factory import AlertService, memory_service
from tests.unit.alert_samples import T0, make_alert

HOUR = 3_600_000


def step(prev: DedupRecord | None, **kw: Any) -> tuple[DedupRecord, str | None, str]:
    args: dict[str, Any] = {
        "alert_id": "a1",
        "severity": 1,
        "now_ms": 10 * HOUR,
        "suppressed": "",
        "deliverable": True,
        "repeat_ms": 24 * HOUR,
        "forget_ms": 1000 * HOUR,
        "route": "both",
        "snap": b"{}",
    }
    args.update(kw)
    return decide(prev, **args)


# -- the decision ----------------------------------------------------------------------


def test_first_firing_is_notified_and_remembered() -> None:
    rec, kind, why = step(None)
    assert (kind, why) == ("firing", "new")
    assert rec.notified_alert_id == "a1" and rec.notified_ms == 10 * HOUR
    assert rec.firing_since_ms == 10 * HOUR


def test_same_alert_id_again_is_a_duplicate_even_after_the_repeat_interval() -> None:
    rec, _, _ = step(None)
    _, kind, why = step(rec, now_ms=100 * HOUR)
    assert (kind, why) == (None, "duplicate")


def test_another_alert_on_the_key_within_the_interval_is_deduplicated() -> None:
    rec, _, _ = step(None)
    rec2, kind, why = step(rec, alert_id="a2", now_ms=20 * HOUR)
    assert (kind, why) == (None, "deduplicated")
    assert rec2.notified_ms == 10 * HOUR  # the clock of the interval did not restart
    assert rec2.alert_id == "a2"


def test_after_the_repeat_interval_it_is_notified_again() -> None:
    rec, _, _ = step(None)
    _, kind, why = step(rec, alert_id="a2", now_ms=34 * HOUR)
    assert (kind, why) == ("repeat", "repeat")


def test_a_higher_severity_breaks_through_the_interval() -> None:
    rec, _, _ = step(None)
    rec2, kind, why = step(rec, alert_id="a2", severity=3, now_ms=11 * HOUR)
    assert (kind, why) == ("escalated", "escalated")
    assert rec2.notified_severity == 3
    # the same severity again is not an escalation any more
    _, kind, _ = step(rec2, alert_id="a3", severity=3, now_ms=12 * HOUR)
    assert kind is None


def test_suppressed_or_undeliverable_warnings_are_recorded_but_not_notified() -> None:
    rec, kind, why = step(None, suppressed="silenced")
    assert (kind, why) == (None, "silenced")
    assert rec.firing and rec.notified_alert_id == ""
    # once the silence is gone the same key notifies as new
    _, kind, why = step(rec, alert_id="a2", now_ms=11 * HOUR)
    assert (kind, why) == ("firing", "new")
    _, kind, why = step(None, deliverable=False)
    assert (kind, why) == (None, "no_receiver")


def test_a_forgotten_key_starts_a_new_episode() -> None:
    rec, _, _ = step(None, forget_ms=5 * HOUR)
    rec2, kind, _ = step(rec, alert_id="a2", now_ms=16 * HOUR, forget_ms=5 * HOUR)
    assert kind == "firing"
    assert rec2.firing_since_ms == 16 * HOUR


def test_resolve_tells_only_what_was_told() -> None:
    rec, _, _ = step(None)
    resolved, notify, why = decide_resolve(
        rec, now_ms=12 * HOUR, forget_ms=1000 * HOUR, allowed=True
    )
    assert (notify, why) == (True, "resolved")
    assert resolved is not None and resolved.status == "resolved"
    assert decide_resolve(resolved, now_ms=13 * HOUR, forget_ms=1000 * HOUR, allowed=True)[1:] == (
        False,
        "already_resolved",
    )
    quiet, _, _ = step(None, suppressed="inhibited")
    assert decide_resolve(quiet, now_ms=12 * HOUR, forget_ms=1000 * HOUR, allowed=True)[1:] == (
        False,
        "never_notified",
    )
    assert decide_resolve(None, now_ms=0, forget_ms=1, allowed=True)[1:] == (False, "unknown")
    assert decide_resolve(rec, now_ms=12 * HOUR, forget_ms=1000 * HOUR, allowed=False)[1:] == (
        False,
        "not_allowed",
    )


def test_after_resolve_a_new_firing_is_new_again() -> None:
    rec, _, _ = step(None)
    resolved, _, _ = decide_resolve(rec, now_ms=11 * HOUR, forget_ms=1000 * HOUR, allowed=True)
    assert resolved is not None
    _, kind, why = step(resolved, alert_id="a2", now_ms=12 * HOUR)
    assert (kind, why) == ("firing", "new")


def test_record_json_round_trip() -> None:
    rec, _, _ = step(None, snap=b'{"x":"\\u00e9/1"}')
    assert DedupRecord.from_json(rec.to_json()) == rec


# -- through the pipeline ----------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def service(clock: ManualClock) -> AlertService:
    config = AlertConfig(repeat_interval=timedelta(hours=24), inhibit_rules=())
    return memory_service(notifiers={}, config=config, clock=clock)


async def test_pipeline_dedups_by_customer_and_key(
    service: AlertService, clock: ManualClock
) -> None:
    p = service.pipeline
    assert (await p.submit(make_alert())).reason == "new"
    assert (await p.submit(make_alert())).reason == "duplicate"
    clock.advance(timedelta(hours=1))
    assert (await p.submit(make_alert(alert_id="a-2"))).reason == "deduplicated"
    # the same dedup key of another customer is another warning
    assert (await p.submit(make_alert(alert_id="a-3", customer_id="C2"))).reason == "new"
    assert (await p.submit(make_alert(alert_id="a-4", severity="high"))).reason == "escalated"
    clock.advance(timedelta(hours=24))
    assert (await p.submit(make_alert(alert_id="a-5", severity="high"))).reason == "repeat"


async def test_resolve_groups_a_resolved_notification_with_event_time(
    service: AlertService, clock: ManualClock
) -> None:
    p = service.pipeline
    await p.submit(make_alert())
    clock.advance(timedelta(minutes=1))
    await p.flush()
    cured = T0 + timedelta(days=3)
    out = await p.resolve("C1", "C1:L1:dpd_30", cured)
    assert (out.reason, out.kind) == ("resolved", "resolved")
    assert (await p.resolve("C1", "C1:L1:dpd_30", cured)).reason == "already_resolved"
    assert (await p.resolve("C1", "nope", cured)).reason == "unknown"
    clock.advance(timedelta(minutes=10))
    await p.flush()
    claimed = await service.outbox.claim(now_ms=10**15, lease_ms=1, owner="t", limit=10)
    kinds = [
        [(n.kind, n.alert.status, n.alert.triggered_at) for n in m.notifications()] for m in claimed
    ]
    assert [("resolved", "resolved", cured)] in kinds


async def test_resolve_matching_clears_a_loan_not_the_customer(service: AlertService) -> None:
    p = service.pipeline
    await p.submit(make_alert())
    await p.submit(make_alert(alert_id="a-2", dedup_key="C1:L2:dpd_30", loan_id="L2"))
    await p.submit(
        make_alert(alert_id="a-3", dedup_key="C1:income", loan_id=None, code="salary_missing")
    )
    outcomes = await p.resolve_matching("C1", T0, loan_id="L1")
    assert [o.dedup_key for o in outcomes] == ["C1:L1:dpd_30"]
    outcomes = await p.resolve_matching("C1", T0, codes={"salary_missing"})
    assert [o.dedup_key for o in outcomes] == ["C1:income"]
    records = await service.pipeline.state.records("C1")
    assert records["C1:L2:dpd_30"].firing


async def test_a_published_resolved_warning_resolves_its_key(service: AlertService) -> None:
    p = service.pipeline
    await p.submit(make_alert())
    out = await p.submit(make_alert(alert_id="a-9", status="resolved"))
    assert out.reason == "resolved"
    assert not (await p.state.records("C1"))["C1:L1:dpd_30"].firing


async def test_resolve_needs_an_aware_time(service: AlertService) -> None:
    await service.pipeline.submit(make_alert())
    with pytest.raises(ValueError, match="timezone-aware"):
        await service.pipeline.resolve("C1", "C1:L1:dpd_30", datetime(2026, 3, 1))
