"""Routing and grouping: one digest per (route, customer) within group wait / interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.clock import ManualClock
from alerts.config import AlertConfig
from alerts.factory import AlertService, memory_service
from alerts.outbox import OutboxMessage
from alerts.state import FlushRequest
from schemas.outputs import RiskAlert

T0 = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)
_n = 0


def make_alert(customer: str = "C1", route: str | None = "risk_desk", **fields: Any) -> RiskAlert:
    global _n
    _n += 1
    base: dict[str, Any] = {
        "alert_id": f"a-{_n}",
        "dedup_key": f"{customer}:k{_n}",
        "customer_id": customer,
        "loan_id": "L1",
        "severity": "warning",
        "source": "rule",
        "code": f"rule_{_n}",
        "title": f"Rule {_n}",
        "explanation": {} if route is None else {"route": route},
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


def make_service(clock: ManualClock, **config: Any) -> AlertService:
    cfg = AlertConfig(
        **{
            "group_wait": timedelta(seconds=30),
            "group_interval": timedelta(minutes=5),
            "inhibit_rules": (),
            **config,
        }
    )
    return memory_service(notifiers={}, config=cfg, clock=clock)


async def take(service: AlertService) -> list[OutboxMessage]:
    return await service.outbox.claim(now_ms=10**15, lease_ms=10**12, owner="t", limit=1000)


async def test_group_wait_collects_one_digest_per_route_and_customer(clock: ManualClock) -> None:
    service = make_service(clock)
    p = service.pipeline
    await p.submit(make_alert("C1"))
    clock.advance(timedelta(seconds=10))
    await p.submit(make_alert("C1"))
    await p.submit(make_alert("C1", route="both"))
    await p.submit(make_alert("C2"))
    await p.submit(make_alert("C3", route="collections"))  # no receiver: no email
    clock.advance(timedelta(seconds=19))
    assert (await p.flush()).digests == 0  # the first group's wait is not over
    clock.advance(timedelta(seconds=1))
    report = await p.flush()
    assert report.digests == 1  # C1/risk_desk waited 30 s; the others 20 s so far
    clock.advance(timedelta(seconds=10))
    assert (await p.flush()).digests == 2
    digests = await take(service)
    shape = sorted((m.group["route"], m.group["customer_id"], len(m.items)) for m in digests)
    assert shape == [("both", "C1", 1), ("risk_desk", "C1", 2), ("risk_desk", "C2", 1)]
    assert {m.receiver for m in digests} == {"risk_desk"}


async def test_a_warning_without_route_takes_the_default_route(clock: ManualClock) -> None:
    service = make_service(clock)
    await service.pipeline.submit(make_alert("C1", route=None))
    await service.pipeline.submit(make_alert("C1", route="not-a-route"))
    clock.advance(timedelta(minutes=1))
    await service.pipeline.flush()
    [digest] = await take(service)
    assert digest.group == {"route": "risk_desk", "customer_id": "C1"}
    assert len(digest.items) == 2


async def test_group_interval_spaces_digests_of_one_group(clock: ManualClock) -> None:
    service = make_service(clock)
    p = service.pipeline
    await p.submit(make_alert("C1"))
    clock.advance(timedelta(seconds=30))
    assert (await p.flush()).digests == 1
    clock.advance(timedelta(seconds=30))
    await p.submit(make_alert("C1"))
    clock.advance(timedelta(seconds=30))
    assert (await p.flush()).digests == 0  # 1 minute after the last digest: wait
    clock.advance(timedelta(minutes=4))
    assert (await p.flush()).digests == 1  # 5 minutes after the last digest
    clock.advance(timedelta(minutes=10))
    await p.submit(make_alert("C1"))
    clock.advance(timedelta(seconds=30))
    assert (await p.flush()).digests == 1  # a quiet group waits only group_wait again
    assert len(await take(service)) == 3


async def test_configurable_group_keys(clock: ManualClock) -> None:
    service = make_service(clock, group_by=("route",))
    for customer in ("C1", "C2", "C3"):
        await service.pipeline.submit(make_alert(customer))
    clock.advance(timedelta(minutes=1))
    await service.pipeline.flush()
    [digest] = await take(service)
    assert digest.group == {"route": "risk_desk"}
    assert sorted(n.alert.customer_id for n in digest.notifications()) == ["C1", "C2", "C3"]


async def test_only_the_latest_notification_of_a_key_is_in_a_digest(clock: ManualClock) -> None:
    service = make_service(clock)
    first = make_alert("C1", dedup_key="C1:same", alert_id="a-x1")
    await service.pipeline.submit(first)
    await service.pipeline.submit(
        make_alert("C1", dedup_key="C1:same", alert_id="a-x2", severity="critical")
    )
    clock.advance(timedelta(minutes=1))
    report = await service.pipeline.flush()
    assert (report.notifications, report.dropped) == (1, 1)
    [digest] = await take(service)
    [note] = digest.notifications()
    assert (note.kind, note.alert.alert_id) == ("escalated", "a-x2")


async def test_a_flush_on_a_moved_epoch_is_refused(clock: ManualClock) -> None:
    """Two workers flushing one group: the second, on a stale read, writes nothing."""
    service = make_service(clock)
    await service.pipeline.submit(make_alert("C1"))
    clock.advance(timedelta(minutes=1))
    state = service.pipeline.state
    [gid] = await state.due_groups(10**15, 10)
    stale = await state.read_group(gid)
    assert stale is not None
    assert (await service.pipeline.flush()).digests == 1
    refused = await state.flush_group(
        FlushRequest(
            gid=gid,
            epoch=stale.epoch,
            taken=len(stale.items),
            now_ms=1,
            message_id="m-dup",
            message=b"{}",
            timing=service.pipeline.timing,
        )
    )
    assert refused is False
    assert len(await take(service)) == 1
