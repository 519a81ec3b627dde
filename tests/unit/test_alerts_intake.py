"""Published warnings and risk states into the alert path: intake, cures, clearing, the index."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alerts.clock import ManualClock, to_ms
from alerts.config import AlertConfig
from alerts.factory import AlertService, memory_service
from alerts.index import AlertQuery, MemoryAlertIndex
from alerts.intake import AlertIntake, cleared_keys, state_time
from alerts.outbox import MemoryOutbox, OutboxMessage
from schemas.outputs import LoanSummary, RiskAlert, RiskState
from tests.unit.alert_samples import T0, make_alert


def class_alert(to: str, *, alert_id: str, at: datetime, **fields: Any) -> RiskAlert:
    worse = to != "normal"
    return make_alert(
        alert_id=alert_id,
        dedup_key="C1:L1:class",
        code="loan_class_change",
        source="classification",
        severity="warning" if worse else "info",
        title=f"Loan L1 moved to {to}",
        explanation={"from": "normal" if worse else "special_mention", "to": to},
        triggered_at=at,
        **fields,
    )


def state(
    loans: dict[str, tuple[int, str]], *, at: datetime = T0 + timedelta(days=3), **fields: Any
) -> RiskState:
    summaries = {
        loan_id: LoanSummary(
            loan_id=loan_id,
            dpd=dpd,
            overdue_amount=Decimal("0"),
            currency="CNY",
            loan_class=cls,  # type: ignore[arg-type]
        )
        for loan_id, (dpd, cls) in loans.items()
    }
    base: dict[str, Any] = {
        "customer_id": "C1",
        "risk_score": 120,
        "risk_tier": "low",
        "loan_class": "normal",
        "loans": summaries,
        "max_dpd": max((d for d, _ in loans.values()), default=0),
        "total_exposure": Decimal("1000"),
        "open_alerts": 0,
        "features": {},
        "last_event_at": at,
    }
    return RiskState(**{**base, **fields})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def service(clock: ManualClock) -> AlertService:
    return memory_service(
        notifiers={}, config=AlertConfig(group_wait=timedelta(seconds=30)), clock=clock
    )


async def digests(service: AlertService, clock: ManualClock) -> list[OutboxMessage]:
    clock.advance(timedelta(minutes=10))
    await service.pipeline.flush()
    outbox = service.outbox
    assert isinstance(outbox, MemoryOutbox)
    claimed = await outbox.claim(now_ms=to_ms(clock.now()), lease_ms=1, owner="t", limit=100)
    for message in claimed:  # taken: the next call sees only newer digests
        await outbox.complete(message.id, owner="t")
    return claimed


# -- clearing ---------------------------------------------------------------------------


async def records_after(service: AlertService, *alerts: RiskAlert) -> dict[str, Any]:
    for alert in alerts:
        await service.pipeline.submit(alert)
    return await service.pipeline.state.records("C1")


async def test_a_per_loan_arrears_warning_clears_when_that_loan_is_current(
    service: AlertService,
) -> None:
    records = await records_after(
        service,
        make_alert(),
        make_alert(alert_id="a-2", dedup_key="C1:L2:dpd_30", loan_id="L2"),
    )
    cleared = cleared_keys(
        state({"L1": (0, "normal"), "L2": (41, "special_mention")}), records, T0 + timedelta(1)
    )
    assert cleared == ["C1:L1:dpd_30"]


async def test_a_customer_level_arrears_warning_waits_for_every_loan(
    service: AlertService,
) -> None:
    records = await records_after(service, make_alert(dedup_key="C1:dpd:30"))
    at = T0 + timedelta(days=1)
    still_late = state({"L1": (0, "normal"), "L2": (35, "special_mention")})
    assert cleared_keys(still_late, records, at) == []
    assert cleared_keys(state({"L1": (0, "normal"), "L2": (0, "normal")}), records, at) == [
        "C1:dpd:30"
    ]


async def test_a_class_warning_clears_with_its_loan_back_to_normal(service: AlertService) -> None:
    records = await records_after(service, class_alert("special_mention", alert_id="c-1", at=T0))
    at = T0 + timedelta(days=1)
    assert cleared_keys(state({"L1": (0, "special_mention")}), records, at) == []
    assert cleared_keys(state({"L1": (0, "normal")}), records, at) == ["C1:L1:class"]
    assert cleared_keys(state({"L2": (0, "normal")}), records, at) == []  # another loan


async def test_an_older_state_does_not_clear_a_newer_warning(service: AlertService) -> None:
    records = await records_after(service, make_alert(triggered_at=T0 + timedelta(days=5)))
    old = state({"L1": (0, "normal")})
    assert cleared_keys(old, records, T0 + timedelta(days=3)) == []
    assert cleared_keys(old, records, T0 + timedelta(days=5)) == ["C1:L1:dpd_30"]


async def test_other_warnings_are_not_cleared_by_a_current_loan(service: AlertService) -> None:
    records = await records_after(
        service,
        make_alert(alert_id="f-1", dedup_key="C1:L1:failed", code="repeated_failed_collections"),
    )
    assert cleared_keys(state({"L1": (0, "normal")}), records, T0 + timedelta(1)) == []


def test_state_time_is_the_later_of_last_event_and_dpd_clock() -> None:
    later = (T0 + timedelta(days=2)).isoformat()
    assert state_time(state({}, at=T0, features={"as_of": later})) == T0 + timedelta(days=2)
    assert state_time(state({}, at=T0, features={"as_of": "not a time"})) == T0
    assert state_time(state({}, at=None)) is None  # type: ignore[arg-type]


async def test_clear_tells_the_desk_the_warning_resolved(
    service: AlertService, clock: ManualClock
) -> None:
    intake = AlertIntake(service)
    assert (await intake.take(make_alert())).reason == "new"
    sent = await digests(service, clock)
    assert [n.kind for m in sent for n in m.notifications()] == ["firing"]

    outcomes = await intake.clear(state({"L1": (0, "normal")}))
    assert [o.reason for o in outcomes] == ["resolved"]
    resolved = await digests(service, clock)
    notes = [n for m in resolved for n in m.notifications()]
    assert [(n.kind, n.alert.status) for n in notes] == [("resolved", "resolved")]
    assert notes[0].alert.triggered_at == T0 + timedelta(days=3)  # the state's event time
    item = await service.index.get("a-1")
    assert item is not None and item.status == "resolved"
    assert item.resolution is not None and item.resolution.by == "risk state"
    assert await intake.clear(state({"L1": (0, "normal")})) == []  # nothing firing now


async def test_a_class_back_to_normal_resolves_instead_of_warning_again(
    service: AlertService, clock: ManualClock
) -> None:
    intake = AlertIntake(service)
    await intake.take(class_alert("special_mention", alert_id="c-1", at=T0))
    await digests(service, clock)
    cure = class_alert("normal", alert_id="c-2", at=T0 + timedelta(days=2))
    assert (await intake.take(cure)).reason == "resolved"
    notes = [n for m in await digests(service, clock) for n in m.notifications()]
    assert [(n.kind, n.alert.alert_id) for n in notes] == [("resolved", "c-2")]
    # the risk state saying the same afterwards changes nothing
    assert [o.reason for o in await intake.clear(state({"L1": (0, "normal")}))] == []
    assert (await service.index.get("c-1")).status == "resolved"  # type: ignore[union-attr]


async def test_a_warning_published_long_ago_is_listed_but_not_told(
    service: AlertService, clock: ManualClock
) -> None:
    intake = AlertIntake(service, max_age=timedelta(days=7))
    old_ms = to_ms(clock.now() - timedelta(days=8))
    assert (await intake.take(make_alert(), published_ms=old_ms)).reason == "stale"
    assert await digests(service, clock) == []
    item = await service.index.get("a-1")
    assert item is not None and item.outcome == "stale"
    fresh_ms = to_ms(clock.now() - timedelta(days=1))
    assert (await intake.take(make_alert(alert_id="a-2"), published_ms=fresh_ms)).reason == "new"


# -- the index --------------------------------------------------------------------------


async def test_index_lists_newest_first_with_filters() -> None:
    index = MemoryAlertIndex()
    for i, (customer, severity) in enumerate(
        [("C1", "warning"), ("C2", "critical"), ("C1", "critical")]
    ):
        alert = make_alert(alert_id=f"a-{i}", customer_id=customer, severity=severity)
        assert await index.add(alert, outcome="new", detail="", now_ms=1000 + i)
    assert not await index.add(make_alert(alert_id="a-0"), outcome="duplicate", detail="", now_ms=9)
    assert [i.alert.alert_id for i in await index.query(AlertQuery())] == ["a-2", "a-1", "a-0"]
    assert (await index.get("a-0")).outcome == "new"  # type: ignore[union-attr]
    crit = await index.query(AlertQuery(severity="critical", customer_id="C1"))
    assert [i.alert.alert_id for i in crit] == ["a-2"]
    assert [i.alert.alert_id for i in await index.query(AlertQuery(limit=1))] == ["a-2"]
    await index.acknowledge("a-1", by="ana", comment="on it", now_ms=5000)
    again = await index.acknowledge("a-1", by="bo", comment="", now_ms=6000)
    assert again is not None and again.acknowledged is not None
    assert (again.acknowledged.by, again.acknowledged.at_ms) == ("ana", 5000)
    assert await index.acknowledge("nope", by="x", comment="", now_ms=1) is None
    acked = await index.query(AlertQuery(acknowledged=True))
    assert [i.alert.alert_id for i in acked] == ["a-1"]
    assert len(await index.query(AlertQuery(acknowledged=False))) == 2


async def test_index_is_bounded_by_age_and_by_count() -> None:
    index = MemoryAlertIndex(retention=timedelta(seconds=10), max_entries=3)
    for i in range(5):
        await index.add(make_alert(alert_id=f"a-{i}"), outcome="new", detail="", now_ms=i * 1000)
    assert [i.alert.alert_id for i in await index.query(AlertQuery())] == ["a-4", "a-3", "a-2"]
    await index.add(make_alert(alert_id="a-9"), outcome="new", detail="", now_ms=13_500)
    assert [i.alert.alert_id for i in await index.query(AlertQuery())] == ["a-9", "a-4"]
