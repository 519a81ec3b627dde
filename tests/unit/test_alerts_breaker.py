"""Circuit breaker: a rule firing for an unusual share of customers is held, ops is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts import admin
from alerts.clock import ManualClock
from alerts.config import AlertConfig, BreakerConfig
from alerts.factory import AlertService, memory_service
from alerts.outbox import OutboxMessage
from schemas.outputs import RiskAlert

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)


def make_alert(customer: str, code: str = "salary_missing", **fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": f"a-{code}-{customer}",
        "dedup_key": f"{customer}:{code}",
        "customer_id": customer,
        "loan_id": None,
        "severity": "warning",
        "source": "rule",
        "code": code,
        "title": "Salary missing",
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


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def service_with(clock: ManualClock, population: int | None = 200, **breaker: Any) -> AlertService:
    cfg = BreakerConfig(
        **{
            "window": timedelta(hours=1),
            "max_share": 0.05,
            "min_customers": 5,
            "min_open": timedelta(minutes=15),
            **breaker,
        }
    )

    async def book() -> int | None:
        return population

    return memory_service(
        notifiers={},
        config=AlertConfig(breaker=cfg, inhibit_rules=()),
        clock=clock,
        population=book,
    )


async def ops_messages(service: AlertService) -> list[OutboxMessage]:
    claimed = await service.outbox.claim(now_ms=10**15, lease_ms=1, owner="t", limit=1000)
    return [m for m in claimed if m.kind == "ops"]


async def test_trips_at_the_share_of_the_book_and_holds_without_dropping(
    clock: ManualClock,
) -> None:
    service = service_with(clock, population=200)  # 5% of 200 = 10 customers
    reasons = []
    for i in range(14):
        reasons.append((await service.pipeline.submit(make_alert(f"C{i:03d}"))).reason)
        clock.advance(timedelta(seconds=30))
    assert reasons[:9] == ["new"] * 9
    assert reasons[9:] == ["held"] * 5  # the 10th distinct customer trips it
    state = service.breaker.snapshot["salary_missing"]
    assert state.open and state.held == 5 and state.trip_at == 10
    held = await service.breaker.held("salary_missing")
    assert len(held) == 5
    notices = await ops_messages(service)
    assert len(notices) == 1 and "circuit breaker open" in notices[0].notice["subject"]
    assert "10 distinct customers" in notices[0].notice["lines"][0]
    # another rule is not affected
    assert (await service.pipeline.submit(make_alert("C001", code="dpd_30"))).reason == "new"


async def test_the_same_customer_again_does_not_count_twice(clock: ManualClock) -> None:
    service = service_with(clock, population=None)  # min_customers = 5
    for i in range(20):
        alert = make_alert("C1", alert_id=f"a-{i}", dedup_key=f"C1:k{i}")
        assert (await service.pipeline.submit(alert)).reason == "new"
    assert not service.breaker.snapshot["salary_missing"].open


async def test_old_hits_leave_the_window(clock: ManualClock) -> None:
    service = service_with(clock, population=None)
    for i in range(4):
        await service.pipeline.submit(make_alert(f"C{i}"))
    clock.advance(timedelta(hours=2))
    for i in range(4, 8):
        assert (await service.pipeline.submit(make_alert(f"C{i}"))).reason == "new"


async def test_closes_by_itself_when_the_rate_falls_and_keeps_what_it_held(
    clock: ManualClock,
) -> None:
    service = service_with(clock, population=None)
    for i in range(7):
        await service.pipeline.submit(make_alert(f"C{i}"))
    assert service.breaker.snapshot["salary_missing"].open
    await ops_messages(service)  # read the trip notice
    clock.advance(timedelta(minutes=10))
    assert (await service.pipeline.flush()).breakers_closed == []  # still within the window
    clock.advance(timedelta(hours=1))
    report = await service.pipeline.flush()
    assert report.breakers_closed == ["salary_missing"]
    state = (await service.breaker.states())[0]
    assert not state.open and state.closed_by == "auto" and state.held == 3
    notices = await ops_messages(service)
    assert ["closed" in n.notice["subject"] for n in notices] == [True]
    assert "3 warnings held" in notices[0].notice["lines"][1]
    assert (await service.pipeline.submit(make_alert("C99"))).reason == "new"


async def test_operator_release_delivers_the_held_warnings(clock: ManualClock) -> None:
    service = service_with(clock, population=None)
    for i in range(7):
        await service.pipeline.submit(make_alert(f"C{i}"))
    result = await admin.release_breaker(service, "salary_missing", by="ops-ana", deliver=True)
    assert result == {"code": "salary_missing", "released": 3, "delivered": True, "queued": 3}
    assert await service.breaker.held("salary_missing") == []
    status = await admin.breaker_status(service)
    assert status[0]["state"] == "closed" and status[0]["closed_by"] == "ops-ana"
    assert status[0]["held"] == 0
    # counting starts over after an operator release
    assert (await service.pipeline.submit(make_alert("C50"))).reason == "new"
    clock.advance(timedelta(minutes=1))
    await service.pipeline.flush()
    claimed = await service.outbox.claim(now_ms=10**15, lease_ms=1, owner="t", limit=100)
    customers = sorted(m.group["customer_id"] for m in claimed if m.kind == "digest")
    assert customers == sorted(["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C50"])


async def test_operator_release_can_discard(clock: ManualClock) -> None:
    service = service_with(clock, population=None)
    for i in range(7):
        await service.pipeline.submit(make_alert(f"C{i}"))
    report = await service.pipeline.release_breaker("salary_missing", by="ops", deliver=False)
    assert (report.released, report.outcomes) == (3, ())
    assert await service.breaker.held("salary_missing") == []
    with pytest.raises(KeyError):
        await service.pipeline.release_breaker("never_fired", by="ops", deliver=True)


async def test_exempt_codes_and_disabled_breakers_never_hold(clock: ManualClock) -> None:
    exempt = service_with(clock, population=None, exempt_codes=("salary_missing",))
    off = service_with(clock, population=None, enabled=False)
    for service in (exempt, off):
        for i in range(20):
            assert (await service.pipeline.submit(make_alert(f"C{i}"))).reason == "new"


async def test_silenced_and_unrouted_warnings_do_not_count(clock: ManualClock) -> None:
    service = service_with(clock, population=None)
    for i in range(10):
        unrouted = make_alert(f"C{i}", explanation={"route": "collections"})
        assert (await service.pipeline.submit(unrouted)).reason == "no_receiver"
    await service.silences.create(
        ["code=salary_missing"], created_by="ops", comment="known", duration=timedelta(hours=1)
    )
    for i in range(10, 20):
        assert (await service.pipeline.submit(make_alert(f"C{i}"))).reason == "silenced"
    assert "salary_missing" not in service.breaker.snapshot
