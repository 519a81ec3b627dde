"""Silences and matchers: time-limited, by customer, code or severity; create/list/expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from alerts import admin
from alerts.clock import ManualClock
from alerts.config import AlertConfig
from alerts.factory import AlertService, memory_service
from alerts.matchers import Matcher, all_match
from alerts.silences import MemorySilenceStore, SilenceError, Silences
from schemas.outputs import RiskAlert

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def make_alert(**fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": "a-1",
        "dedup_key": "C1:partial",
        "customer_id": "C1",
        "loan_id": None,
        "severity": "warning",
        "source": "rule",
        "code": "partial_payments",
        "title": "Partial payments",
        "explanation": {"route": "risk_desk"},
        "risk_score": 300,
        "risk_tier": "medium",
        "loan_class": "normal",
        "triggered_at": T0,
        "evidence_event_ids": [],
        "rule_set_version": "v1",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})


# -- matchers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("customer_id=C1", {"customer_id": "C1"}, True),
        ("customer_id=C1", {"customer_id": "C10"}, False),
        ("code!=dpd_1", {"code": "dpd_30"}, True),
        ('severity=~"high|critical"', {"severity": "high"}, True),
        ("code=~dpd_", {"code": "dpd_30"}, False),  # anchored: the whole value
        ("code!~dpd_.*", {"code": "salary_missing"}, True),
        ("loan_id=", {"customer_id": "C1"}, True),  # a missing label is ""
        ("explanation.to=loss", {"explanation.to": "loss"}, True),
    ],
)
def test_matcher_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense", "is not 'name op value'"),
        ("colour=red", "unknown label"),
        ("code=~(", "bad regular expression"),
    ],
)
def test_bad_matchers_fail_with_a_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Matcher.parse(text)


def test_all_match_needs_every_matcher() -> None:
    ms = [Matcher.parse("customer_id=C1"), Matcher.parse("severity=critical")]
    assert all_match(ms, {"customer_id": "C1", "severity": "critical"})
    assert not all_match(ms, {"customer_id": "C1", "severity": "high"})
    assert all_match([], {})


# -- the silence store -----------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def silences(clock: ManualClock) -> Silences:
    ids = iter(f"s{i}" for i in range(100))
    return Silences(MemorySilenceStore(), clock, new_id=lambda: next(ids))


async def test_a_silence_mutes_while_active_and_ends_by_itself(
    silences: Silences, clock: ManualClock
) -> None:
    s = await silences.create(
        ["customer_id=C1"],
        created_by="ana",
        comment="restructuring agreed",
        duration=timedelta(hours=2),
    )
    assert (s.id, s.created_by, s.comment, s.ends_at) == (
        "s0",
        "ana",
        "restructuring agreed",
        T0 + timedelta(hours=2),
    )
    assert await silences.muting({"customer_id": "C1"}) == ["s0"]
    assert await silences.muting({"customer_id": "C2"}) == []
    clock.advance(timedelta(hours=2))
    assert await silences.muting({"customer_id": "C1"}) == []
    assert [x.id for x in await silences.list("expired")] == ["s0"]


async def test_pending_silence_starts_later(silences: Silences, clock: ManualClock) -> None:
    await silences.create(
        ["code=dpd_1"],
        created_by="ops",
        comment="feed migration tonight",
        starts_at=T0 + timedelta(hours=12),
        duration=timedelta(hours=4),
    )
    assert [s.id for s in await silences.list("pending")] == ["s0"]
    assert await silences.muting({"code": "dpd_1"}) == []
    clock.advance(timedelta(hours=13))
    assert await silences.muting({"code": "dpd_1"}) == ["s0"]


async def test_expire_ends_a_silence_now_and_records_who(
    silences: Silences, clock: ManualClock
) -> None:
    await silences.create(
        ["severity=warning"], created_by="ana", comment="noisy", duration=timedelta(days=1)
    )
    clock.advance(timedelta(minutes=5))
    ended = await silences.expire("s0", by="bo")
    assert ended.expired_by == "bo" and ended.state(clock.now()) == "expired"
    assert await silences.muting({"severity": "warning"}) == []
    assert (await silences.expire("s0", by="cy")).expired_by == "bo"  # idempotent
    with pytest.raises(SilenceError, match="no silence"):
        await silences.expire("missing", by="bo")


async def test_invalid_silences_are_refused(silences: Silences) -> None:
    with pytest.raises(SilenceError, match="exactly one"):
        await silences.create(["code=x"], created_by="a", comment="c")
    with pytest.raises(SilenceError, match="at most 90 days"):
        await silences.create(["code=x"], created_by="a", comment="c", duration=timedelta(days=91))
    with pytest.raises(SilenceError, match="already be over"):
        await silences.create(["code=x"], created_by="a", comment="c", ends_at=T0)
    with pytest.raises(ValidationError):
        await silences.create([], created_by="a", comment="c", duration=timedelta(hours=1))
    with pytest.raises(ValidationError):
        await silences.create(["code=x"], created_by="", comment="c", duration=timedelta(hours=1))


async def test_old_expired_silences_are_purged_after_retention(
    silences: Silences, clock: ManualClock
) -> None:
    await silences.create(["code=x"], created_by="a", comment="c", duration=timedelta(hours=1))
    clock.advance(timedelta(days=6))
    await silences.create(["code=y"], created_by="a", comment="c", duration=timedelta(hours=1))
    assert [s.id for s in await silences.list()] == ["s1"]


# -- in the pipeline and through the admin functions -------------------------------------


@pytest.fixture
def service(clock: ManualClock) -> AlertService:
    return memory_service(notifiers={}, config=AlertConfig(), clock=clock)


async def test_silenced_warning_is_recorded_and_notified_when_the_silence_ends(
    service: AlertService, clock: ManualClock
) -> None:
    view = await admin.create_silence(
        service,
        matchers=["code=partial_payments", "severity=warning"],
        created_by="ana",
        comment="known case",
        duration="1h",
    )
    assert view["state"] == "active"
    assert view["matchers"] == ['code="partial_payments"', 'severity="warning"']
    out = await service.pipeline.submit(make_alert())
    assert (out.reason, out.detail) == ("silenced", view["id"])
    high = make_alert(alert_id="a-2", dedup_key="C1:other", severity="high")
    assert (await service.pipeline.submit(high)).reason == "new"  # high is not covered
    await admin.expire_silence(service, view["id"], by="bo")
    # the muted warning, seen again after the silence ended, is news to the desk
    assert (await service.pipeline.submit(make_alert())).reason == "new"
    listed = await admin.list_silences(service)
    assert listed[0]["expired_by"] == "bo"


async def test_a_silence_created_during_the_group_wait_applies_at_flush(
    service: AlertService, clock: ManualClock
) -> None:
    await service.pipeline.submit(make_alert())
    await admin.create_silence(
        service, matchers=["customer_id=C1"], created_by="ana", comment="in talks", duration="2h"
    )
    clock.advance(timedelta(minutes=1))
    report = await service.pipeline.flush()
    assert (report.digests, report.dropped) == (0, 1)
    assert await service.outbox.pending() == 0


async def test_resolved_of_a_silenced_customer_is_not_sent(
    service: AlertService, clock: ManualClock
) -> None:
    await service.pipeline.submit(make_alert())
    clock.advance(timedelta(minutes=1))
    await service.pipeline.flush()
    await admin.create_silence(
        service, matchers=["customer_id=C1"], created_by="ana", comment="in talks", duration="2h"
    )
    out = await service.pipeline.resolve("C1", "C1:partial", T0)
    assert out.reason == "not_allowed"


async def test_a_silence_from_another_worker_applies_within_the_refresh(
    clock: ManualClock,
) -> None:
    store = MemorySilenceStore()
    here = Silences(store, clock, refresh=timedelta(seconds=1))
    there = Silences(store, clock)
    assert await here.muting({"code": "dpd_1"}) == []
    made = await there.create(
        ["code=dpd_1"], created_by="ops", comment="feed fix", duration=timedelta(hours=1)
    )
    assert await here.muting({"code": "dpd_1"}) == []  # still the list read a moment ago
    clock.advance(timedelta(seconds=1))
    assert await here.muting({"code": "dpd_1"}) == [made.id]
