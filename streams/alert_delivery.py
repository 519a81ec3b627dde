"""The worker's alert delivery: published warnings to the risk desk's inbox.

Two Faust agents, in the worker's own consumer group, read back what the
worker published:

- the alerts topic: each warning goes through the notification pipeline
  (:mod:`alerts.pipeline`: inhibit, silence, breaker, dedup, group) and into
  the index the API lists (:mod:`alerts.intake`);
- the risk-state topic: a loan back to 0 days past due or back to a normal
  class resolves the warnings it no longer justifies, so the desk is told
  they cleared.

Reading the published topics rather than the processor's results means a
warning enters the delivery path only once it was published, whichever
worker published it, and the group hands each one to exactly one worker.
Batches are acknowledged only after the pipeline took them (the same
``noack_take`` pattern as :mod:`streams.agents`); a redelivered batch is
recognised by the pipeline's dedup (same alert id: ``duplicate``). The
consumer reads with Kafka's default isolation (Faust asks for
``read_committed`` only under exactly-once processing): a warning of an
aborted output transaction can be seen before its committed copy, which the
publisher always writes with the same alert id, and dedup drops the copy.

Two loops run beside the agents: a timer turns due groups into digests in the
Redis outbox (:meth:`alerts.pipeline.AlertPipeline.flush`), and the
:class:`alerts.outbox.Deliverer` sends them by SMTP. A relay that is down
leaves the digests in the outbox, retried with backoff until it is back;
a Redis outage is retried the way :mod:`streams.runtime` retries it. At
shutdown delivery finishes the message in hand and stops.

The built :class:`AlertDelivery` is what the HTTP API (:mod:`streams.alerts_api`)
drives: its ``service`` holds the pipeline, silences, breakers, outbox and index.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import faust
from mode import CrashingSupervisor
from pydantic import ValidationError
from redis.asyncio import Redis

from alerts.factory import AlertService, email_notifiers, redis_service
from alerts.intake import AlertIntake
from alerts.outbox import Notifier, NotifyError, OutboxMessage
from config.settings import Settings
from creditwatch.metrics import Metrics
from schemas.outputs import RiskAlert, RiskState
from schemas.topics import RISK_ALERTS, RISK_STATE

if TYPE_CHECKING:
    from streams.runtime import WorkerRuntime

__all__ = ["AlertDelivery", "build_alert_delivery", "register_alert_delivery"]

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_MAX = 500
BATCH_WITHIN = 0.2
"""Seconds a partly filled batch waits: notifications wait tens of seconds anyway."""


SUPPRESSED = frozenset(
    {"duplicate", "deduplicated", "inhibited", "silenced", "held", "no_receiver", "stale"}
)
"""Intake outcomes where a warning was recorded and nobody was told."""

SEND_OUTCOMES = {"sent": "sent", "retry": "retried", "failed": "dead"}
"""A delivery attempt's result as ``creditwatch_notifications_total`` names it."""


class DeliveryMetrics:
    """The alert path's view of the worker's metrics (all defined in :mod:`creditwatch.metrics`).

    One definition per series keeps the dashboard, the alerting rules and the
    code reading the same names.
    """

    def __init__(self, metrics: Metrics | None = None, *, channel: str = "email") -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.registry = self.metrics.registry
        self.channel = channel
        self._open_codes: set[str] = set()

    def took(self, reason: str) -> None:
        self.metrics.alert_intake.labels(reason).inc()
        if reason in SUPPRESSED:
            self.metrics.alerts_suppressed.labels(reason).inc()

    def cleared(self, reason: str) -> None:
        self.metrics.alert_cleared.labels(reason).inc()

    def rejected(self, topic: str, reason: str) -> None:
        self.metrics.alert_intake_rejected.labels(topic, reason).inc()

    def sent(self, result: str) -> None:
        self.metrics.notifications.labels(self.channel, SEND_OUTCOMES[result]).inc()

    def flushed(self, digests: int, pending: int, dead: int, open_codes: set[str]) -> None:
        if digests:
            self.metrics.alert_digests.inc(digests)
        self.metrics.alert_outbox_depth.set(pending)
        self.metrics.alert_outbox_dead.set(dead)
        for code in open_codes | self._open_codes:
            self.metrics.breaker_open.labels(code).set(1 if code in open_codes else 0)
        self._open_codes = set(open_codes)


@dataclass
class CountingNotifier:
    """Counts each delivery attempt of a channel by result."""

    inner: Notifier
    receiver: str
    metrics: DeliveryMetrics

    async def notify(self, message: OutboxMessage) -> None:
        try:
            await self.inner.notify(message)
        except NotifyError as exc:
            self.metrics.sent("retry" if exc.retryable else "failed")
            raise
        self.metrics.sent("sent")


async def retrying(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """Run ``step`` until Redis (or the network) lets it finish, as the runtime does."""
    from streams.runtime import RETRYABLE

    backoff = 0.05
    while True:
        try:
            return await step()
        except RETRYABLE as exc:
            log.warning("%s: store unavailable, retrying in %.2fs: %s", what, backoff, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


@dataclass
class AlertDelivery:
    """The alert path of one worker: intake, flush and delivery around one service."""

    settings: Settings
    service: AlertService
    intake: AlertIntake
    metrics: DeliveryMetrics
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def take_alerts(self, messages: Sequence[tuple[bytes, int | None]]) -> None:
        """Warnings from the alerts topic, ``(value, Kafka timestamp in ms)``, in order.

        A record that is not a warning is counted and skipped (it is still on
        the topic). A warning the pipeline fails on for a reason other than an
        outage is logged with its id and skipped, so one bad record cannot
        stop every later warning from reaching the desk.
        """
        for raw, published_ms in messages:
            try:
                alert = RiskAlert.model_validate_json(raw)
            except (ValidationError, ValueError) as exc:
                self.metrics.rejected("risk_alerts", "invalid")
                log.error("alert intake: a record on the alerts topic is not a warning: %s", exc)
                continue
            try:
                outcome = await retrying(
                    "alert intake",
                    lambda a=alert, p=published_ms: self.intake.take(a, published_ms=p),
                )
            except Exception:
                self.metrics.rejected("risk_alerts", "failed")
                log.exception("alert intake: warning %s could not be taken", alert.alert_id)
                continue
            self.metrics.took(outcome.reason)

    async def take_states(self, raws: Sequence[bytes]) -> None:
        """Risk states from the risk-state topic, in order: resolve what they show cleared."""
        for raw in raws:
            try:
                state = RiskState.model_validate_json(raw)
            except (ValidationError, ValueError) as exc:
                self.metrics.rejected("risk_state", "invalid")
                log.error("alert intake: a record on the risk-state topic is not a state: %s", exc)
                continue
            try:
                outcomes = await retrying("alert clearing", lambda s=state: self.intake.clear(s))
            except Exception:
                self.metrics.rejected("risk_state", "failed")
                log.exception("alert clearing failed for one risk state")
                continue
            for outcome in outcomes:
                self.metrics.cleared(outcome.reason)

    async def flush(self) -> None:
        """Digests for the groups that are due; then wake delivery and refresh the gauges."""
        service = self.service
        try:
            report = await service.pipeline.flush()
            pending = await service.outbox.pending()
            dead = await service.outbox.dead_count()
            open_codes = {s.code for s in await service.breaker.states() if s.open}
        except Exception as exc:  # an outage or a failed flush: the groups stay due
            log.warning("alert flush failed, retried at the next tick: %s", exc)
            return
        if report.digests:
            service.deliverer.wakeup.set()
        self.metrics.flushed(report.digests, pending, dead, open_codes)

    async def start(self) -> None:
        """Start delivering from the outbox (every worker does; leases share the work)."""
        if self.task is None:
            self.stopping.clear()
            self.task = asyncio.create_task(self._deliver(), name="alert-delivery")

    async def _deliver(self) -> None:
        """The delivery loop, started again should it ever fail (the outbox keeps the work)."""
        idle = self.settings.alert_delivery.deliver_idle_seconds
        while not self.stopping.is_set():
            try:
                await self.service.deliverer.run(self.stopping, idle=idle)
            except Exception:
                log.exception("alert delivery loop failed; starting it again")
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Let the message in hand finish (bounded by the SMTP timeout), then stop."""
        task, self.task = self.task, None
        if task is None:
            return
        self.stopping.set()
        self.service.deliverer.wakeup.set()
        try:
            await asyncio.wait_for(task, timeout=self.settings.smtp.timeout_seconds + 5)
        except TimeoutError:
            log.warning("alert delivery did not stop in time; its lease lets another send it")
        except Exception as exc:  # stopping: report, do not raise
            log.warning("alert delivery stopped with %s", exc)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.smtp.tls_ca_file is None:
        return None
    return ssl.create_default_context(cafile=settings.smtp.tls_ca_file)


def build_alert_delivery(
    settings: Settings,
    redis: Redis,
    metrics: Metrics,
    *,
    population: Callable[[], Awaitable[int | None]] | None = None,
) -> AlertDelivery:
    """The alert path over the worker's Redis, SMTP relay and metrics registry."""
    cfg = settings.alert_delivery
    smtp = settings.smtp
    delivery_metrics = DeliveryMetrics(metrics)
    notifiers = email_notifiers(
        smtp,
        base_url=cfg.public_base_url,
        ops_recipients=smtp.ops,
        timeout=smtp.timeout_seconds,
        use_tls=smtp.use_tls,
        tls_context=_tls_context(settings),
        subject_prefix=smtp.subject_prefix,
    )
    counted: dict[str, Notifier] = {
        receiver: CountingNotifier(notifier, receiver, delivery_metrics)
        for receiver, notifier in notifiers.items()
    }
    for receiver in ("risk_desk", "ops"):
        if receiver not in counted:
            log.warning(
                "alert delivery: no email addresses for %s (CREDITWATCH_SMTP__%s); its "
                "messages are kept in the outbox as undeliverable",
                receiver,
                receiver.upper(),
            )
    service = redis_service(
        redis,
        prefix=settings.redis.key_prefix,
        notifiers=counted,
        config=cfg.policy,
        population=population,
        index_retention=timedelta(days=cfg.index_retention_days),
        index_max_entries=cfg.index_max_alerts,
    )
    max_age = timedelta(hours=cfg.max_age_hours) if cfg.max_age_hours else None
    return AlertDelivery(settings, service, AlertIntake(service, max_age=max_age), delivery_metrics)


def _forget_unacked(app: faust.App, topic_name: str) -> None:
    """Let shutdown proceed past the events of a failed agent (left uncommitted)."""
    unacked = app.consumer.unacked
    for message in [m for m in unacked if m.topic == topic_name]:
        unacked.discard(message)


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )


def _timestamp_ms(message: Any) -> int | None:
    ts = getattr(message, "timestamp", None)
    return int(ts * 1000) if ts else None


def register_alert_delivery(app: faust.App, runtime: WorkerRuntime) -> AlertDelivery | None:
    """Add the alert path's agents, flush timer and delivery loop to a worker.

    Returns the delivery (for the API), or None when
    ``CREDITWATCH_ALERT_DELIVERY__ENABLED`` is false.
    """
    settings = runtime.settings
    if not settings.alert_delivery.enabled:
        log.info("alert delivery is disabled on this worker")
        return None
    redis = runtime.redis
    score_key = runtime.store.score_key

    async def population() -> int | None:
        """Customers with a risk score: what a rule's share of the book is measured against."""
        return int(await redis.zcard(score_key))

    delivery = build_alert_delivery(settings, redis, runtime.metrics, population=population)
    alerts_name = settings.topics[RISK_ALERTS]
    states_name = settings.topics[RISK_STATE]

    async def alert_intake(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            try:
                await delivery.take_alerts(
                    [(e.message.value, _timestamp_ms(e.message)) for e in events]
                )
            except Exception:
                log.critical("alert intake failed; stopping without acknowledging the batch")
                _forget_unacked(app, alerts_name)
                raise
            for event in events:
                await stream.ack(event)

    async def alert_clearing(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            try:
                await delivery.take_states([e.message.value for e in events])
            except Exception:
                log.critical("alert clearing failed; stopping without acknowledging the batch")
                _forget_unacked(app, states_name)
                raise
            for event in events:
                await stream.ack(event)

    app.agent(
        _raw_topic(app, alerts_name),
        name="creditwatch.alert_intake",
        supervisor_strategy=CrashingSupervisor,
    )(alert_intake)
    app.agent(
        _raw_topic(app, states_name),
        name="creditwatch.alert_clearing",
        supervisor_strategy=CrashingSupervisor,
    )(alert_clearing)

    async def alert_flush() -> None:
        await delivery.flush()

    async def alert_delivery_start() -> None:
        await delivery.start()

    async def alert_delivery_stop(sender: Any, **_: Any) -> None:
        await delivery.stop()

    app.timer(settings.alert_delivery.flush_interval_seconds, name="alert_flush")(alert_flush)
    app.task(alert_delivery_start)
    app.on_before_shutdown.connect(alert_delivery_stop)
    return delivery
