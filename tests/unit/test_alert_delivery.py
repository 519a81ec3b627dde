"""The worker's alert delivery around a memory alert service: intake, outages, flush, loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.clock import ManualClock
from alerts.config import AlertConfig
from alerts.factory import AlertService, memory_service
from alerts.intake import AlertIntake
from alerts.outbox import NotifyError, OutboxMessage
from alerts.pipeline import Outcome
from config.settings import Settings
from creditwatch.metrics import Metrics
from schemas.outputs import RiskAlert
from streams.alert_delivery import AlertDelivery, CountingNotifier, DeliveryMetrics

T0 = datetime.now(UTC).replace(microsecond=0)


def make_alert(n: int, **fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": f"a-{n}",
        "dedup_key": f"C{n}:L1:dpd_30",
        "customer_id": f"C{n}",
        "loan_id": "L1",
        "severity": "warning",
        "source": "rule",
        "code": "dpd_30",
        "title": "Loan L1 is 30 days past due",
        "explanation": {"route": "both"},
        "risk_score": 420,
        "risk_tier": "medium",
        "loan_class": "special_mention",
        "triggered_at": T0,
        "evidence_event_ids": ["e1"],
        "rule_set_version": "v1",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})


class Desk:
    """A channel that records what it was given, and can be made to refuse."""

    def __init__(self) -> None:
        self.got: list[OutboxMessage] = []
        self.down = False

    async def notify(self, message: OutboxMessage) -> None:
        if self.down:
            raise NotifyError("relay down", retryable=True)
        self.got.append(message)


class Flaky(AlertIntake):
    """Intake whose store fails a few times (an outage), or for one warning for good."""

    outages = 0
    broken = ""

    async def take(self, alert: RiskAlert, *, published_ms: int | None = None) -> Outcome:
        if self.outages:
            self.outages -= 1
            raise ConnectionError("redis is restarting")
        if alert.alert_id == self.broken:
            raise RuntimeError("a defect")
        return await super().take(alert, published_ms=published_ms)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def desk() -> Desk:
    return Desk()


@pytest.fixture
def delivery(clock: ManualClock, desk: Desk) -> AlertDelivery:
    metrics = DeliveryMetrics(Metrics())
    service: AlertService = memory_service(
        notifiers={"risk_desk": CountingNotifier(desk, "risk_desk", metrics)},
        config=AlertConfig(group_wait=timedelta(seconds=1)),
        clock=clock,
    )
    settings = Settings(_env_file=None, alert_delivery={"deliver_idle_seconds": 0.01})  # type: ignore[call-arg]
    return AlertDelivery(settings, service, Flaky(service), metrics)


def sample(delivery: AlertDelivery, name: str, **labels: str) -> float:
    return float(delivery.metrics.registry.get_sample_value(name, labels) or 0.0)


async def test_records_that_are_not_warnings_are_counted_and_skipped(
    delivery: AlertDelivery,
) -> None:
    await delivery.take_alerts(
        [
            (b"not json", None),
            (b'{"alert_id": "x"}', None),
            (make_alert(1).model_dump_json().encode(), None),
        ]
    )
    assert (
        sample(
            delivery,
            "creditwatch_alert_intake_rejected_total",
            topic="risk_alerts",
            reason="invalid",
        )
        == 2
    )
    assert sample(delivery, "creditwatch_alert_intake_total", outcome="new") == 1


async def test_an_outage_is_waited_out_and_a_defect_skips_only_its_warning(
    delivery: AlertDelivery,
) -> None:
    intake = delivery.intake
    assert isinstance(intake, Flaky)
    intake.outages, intake.broken = 2, "a-2"
    await delivery.take_alerts(
        [(make_alert(n).model_dump_json().encode(), None) for n in (1, 2, 3)]
    )
    assert sample(delivery, "creditwatch_alert_intake_total", outcome="new") == 2
    assert (
        sample(
            delivery,
            "creditwatch_alert_intake_rejected_total",
            topic="risk_alerts",
            reason="failed",
        )
        == 1
    )
    assert await delivery.service.index.get("a-1") is not None
    assert await delivery.service.index.get("a-3") is not None


async def test_flush_and_the_loop_deliver_and_a_down_relay_keeps_the_message(
    delivery: AlertDelivery, clock: ManualClock, desk: Desk
) -> None:
    await delivery.take_alerts([(make_alert(1).model_dump_json().encode(), None)])
    desk.down = True
    clock.advance(timedelta(seconds=2))
    await delivery.start()
    try:
        await delivery.flush()
        assert sample(delivery, "creditwatch_alert_outbox_depth") == 1
        await asyncio.sleep(0.2)
        assert desk.got == [] and await delivery.service.outbox.pending() == 1
        desk.down = False
        clock.advance(timedelta(minutes=1))  # past the backoff
        delivery.service.deliverer.wakeup.set()
        for _ in range(100):
            if desk.got:
                break
            await asyncio.sleep(0.02)
    finally:
        await delivery.stop()
    assert [m.receiver for m in desk.got] == ["risk_desk"]
    assert await delivery.service.outbox.pending() == 0
    assert (
        sample(delivery, "creditwatch_notifications_total", channel="email", outcome="retried") >= 1
    )
    assert sample(delivery, "creditwatch_notifications_total", channel="email", outcome="sent") == 1
    assert delivery.task is None
