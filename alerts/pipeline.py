"""The notification pipeline: route → inhibit → silence → breaker → dedup → group → outbox.

The worker hands every warning it publishes to :meth:`AlertPipeline.submit`
and every cleared condition to :meth:`AlertPipeline.resolve` (or
:meth:`AlertPipeline.resolve_matching`); a periodic task calls
:meth:`AlertPipeline.flush`, which turns due groups into digests in the
outbox, and :class:`alerts.outbox.Deliverer` sends them. The chain follows
Alertmanager's ``notify`` pipeline, with the stages as small modules:

- route (:mod:`alerts.routing`): which receivers a warning is for;
- inhibit (:mod:`alerts.inhibit`): a stronger warning on the same loan mutes it;
- silence (:mod:`alerts.silences`): an operator muted it;
- breaker (:mod:`alerts.breaker`): its rule is flooding; held, ops told;
- dedup + group (:mod:`alerts.dedup`, :mod:`alerts.state`): one atomic step;
- flush: inhibition and silences checked again (a stronger warning or a
  silence may have arrived during the group wait), then one digest per group.

A suppressed warning is still *recorded*: it can inhibit others, be resolved,
and be notified later if a silence ends or a breaker releases it.

Every "now" comes from the injected clock; event time is what the warning
itself says (``triggered_at``) and what a resolve passes as ``at``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from alerts.breaker import BreakerState, CircuitBreaker
from alerts.clock import Clock, to_ms
from alerts.config import AlertConfig
from alerts.dedup import DedupRecord
from alerts.inhibit import Inhibitor
from alerts.model import (
    SEVERITY_RANK,
    Notification,
    NotificationKind,
    alert_labels,
    encode_notification,
)
from alerts.outbox import OutboxMessage, OutboxStore, digest_json
from alerts.routing import group_labels, route_of
from alerts.silences import Silences
from alerts.state import (
    AlertStateStore,
    FlushRequest,
    GroupTarget,
    RecordRequest,
    ResolveRequest,
    Timing,
)
from schemas.outputs import RiskAlert

__all__ = ["AlertPipeline", "FlushReport", "Outcome", "ReleaseReport", "group_id"]

log = logging.getLogger(__name__)

QUEUED_REASONS = frozenset({"new", "escalated", "repeat", "resolved"})


@dataclass(frozen=True)
class Outcome:
    """What the pipeline did with one warning or one resolve.

    ``reason`` is from a closed set (safe as a metric label): ``new``,
    ``escalated``, ``repeat``, ``resolved`` (a notification was grouped);
    ``duplicate``, ``deduplicated``, ``inhibited``, ``silenced``, ``held``,
    ``no_receiver`` (recorded, nobody told); for a resolve also
    ``never_notified``, ``not_allowed``, ``unknown``, ``already_resolved``,
    ``conflict``.
    """

    alert_id: str
    dedup_key: str
    reason: str
    kind: NotificationKind | None = None
    detail: str = ""
    """The inhibit rule or the silence ids, when there is one."""

    @property
    def queued(self) -> bool:
        return self.reason in QUEUED_REASONS


@dataclass
class FlushReport:
    digests: int = 0
    notifications: int = 0
    dropped: int = 0
    """Notifications dropped at flush: inhibited or silenced since they were grouped."""
    conflicts: int = 0
    breakers_closed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReleaseReport:
    code: str
    released: int
    delivered: bool
    outcomes: tuple[Outcome, ...]


def group_id(receiver: str, labels: dict[str, str]) -> str:
    """A short, stable id of a group (receiver + its group labels).

    >>> group_id("risk_desk", {"route": "both", "customer_id": "C1"})
    'g-90e80de0f608e3ec87454eb2'
    """
    parts = [receiver, *(f"{k}={labels[k]}" for k in sorted(labels))]
    return "g-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


class AlertPipeline:
    """The notification path of one service (worker or replay)."""

    def __init__(
        self,
        *,
        config: AlertConfig,
        state: AlertStateStore,
        silences: Silences,
        breaker: CircuitBreaker,
        outbox: OutboxStore,
        clock: Clock,
    ) -> None:
        self.config = config
        self.state = state
        self.silences = silences
        self.breaker = breaker
        self.outbox = outbox
        self.clock = clock
        self.inhibitor = Inhibitor(config.inhibit_rules)
        self.timing = Timing(
            repeat_ms=_ms(config.repeat_interval),
            forget_ms=_ms(config.forget_after),
            group_wait_ms=_ms(config.group_wait),
            group_interval_ms=_ms(config.group_interval),
        )

    # -- warnings in ----------------------------------------------------------------

    async def submit(self, alert: RiskAlert) -> Outcome:
        """Take one published warning; a ``resolved`` one resolves its dedup key."""
        if alert.status == "resolved":
            return await self._resolve(
                alert.customer_id, alert.dedup_key, alert.triggered_at, snapshot=alert
            )
        return await self._submit(alert, use_breaker=True)

    async def submit_many(self, alerts: Iterable[RiskAlert]) -> list[Outcome]:
        """Take a batch in order (one customer's warnings must stay in order)."""
        return [await self.submit(alert) for alert in alerts]

    def _targets(self, route: str, labels: dict[str, str]) -> tuple[GroupTarget, ...]:
        grouped = group_labels(labels, self.config)
        return tuple(
            GroupTarget(group_id(receiver, grouped), receiver, grouped)
            for receiver in self.config.receivers_for(route)
        )

    def _sources(self, records: dict[str, DedupRecord], now_ms: int) -> list[tuple[str, dict]]:
        forget = self.timing.forget_ms
        return [
            (key, rec.labels)
            for key, rec in records.items()
            if rec.firing and rec.fresh(now_ms, forget)
        ]

    async def _submit(self, alert: RiskAlert, *, use_breaker: bool) -> Outcome:
        now_ms = to_ms(self.clock.now())
        route = route_of(alert.explanation, self.config)
        labels = alert_labels(alert, route)
        targets = self._targets(route, labels)
        alert_json = alert.model_dump_json().encode()
        records = await self.state.records(alert.customer_id)
        suppressed, detail = "", ""
        rule = self.inhibitor.inhibited_by(labels, alert.dedup_key, self._sources(records, now_ms))
        if rule is not None:
            suppressed, detail = "inhibited", rule
        else:
            muting = await self.silences.muting(labels)
            if muting:
                suppressed, detail = "silenced", ",".join(sorted(muting))
        if not suppressed and targets and use_breaker and not self._is_duplicate(records, alert):
            hit = await self.breaker.admit(alert.code, alert.customer_id, alert_json)
            if hit is not None:
                if hit.transition is not None:
                    await self._ops_notice(hit.state, hit.transition)
                if hit.hold:
                    suppressed, detail = "held", alert.code
        result = await self.state.record(
            RecordRequest(
                customer_id=alert.customer_id,
                dedup_key=alert.dedup_key,
                alert_id=alert.alert_id,
                severity=SEVERITY_RANK[alert.severity],
                alert_json=alert_json,
                route=route,
                suppressed=suppressed,
                targets=targets,
                now_ms=now_ms,
                timing=self.timing,
            )
        )
        return Outcome(alert.alert_id, alert.dedup_key, result.reason, result.kind, detail)

    @staticmethod
    def _is_duplicate(records: dict[str, DedupRecord], alert: RiskAlert) -> bool:
        """A redelivery of the warning last notified: not counted by the breaker again."""
        rec = records.get(alert.dedup_key)
        return rec is not None and rec.firing and rec.notified_alert_id == alert.alert_id

    # -- conditions cleared ---------------------------------------------------------

    async def resolve(self, customer_id: str, dedup_key: str, at: datetime) -> Outcome:
        """The condition behind ``dedup_key`` cleared at event time ``at``.

        People who were told it was firing get a ``resolved`` notification in
        the customer's next digest; a key nobody was told about is just
        marked resolved. Idempotent.
        """
        return await self._resolve(customer_id, dedup_key, at, snapshot=None)

    async def resolve_matching(
        self,
        customer_id: str,
        at: datetime,
        *,
        loan_id: str | None = None,
        codes: Collection[str] | None = None,
    ) -> list[Outcome]:
        """Resolve the customer's firing keys on ``loan_id`` and/or with a code in ``codes``.

        What the worker calls when a loan's DPD returns to 0 or its class is
        cured: it knows the loan, not the dedup keys the rules built.
        """
        now_ms = to_ms(self.clock.now())
        records = await self.state.records(customer_id)
        outcomes = []
        for key, rec in sorted(records.items()):
            if not rec.firing or not rec.fresh(now_ms, self.timing.forget_ms):
                continue
            if loan_id is not None and rec.labels["loan_id"] != loan_id:
                continue
            if codes is not None and rec.labels["code"] not in codes:
                continue
            outcomes.append(await self._resolve(customer_id, key, at, snapshot=None))
        return outcomes

    async def _resolve(
        self, customer_id: str, dedup_key: str, at: datetime, *, snapshot: RiskAlert | None
    ) -> Outcome:
        if at.tzinfo is None:
            raise ValueError("resolve needs a timezone-aware event time")
        now_ms = to_ms(self.clock.now())
        rec = (await self.state.records(customer_id)).get(dedup_key)
        alert_id = snapshot.alert_id if snapshot is not None else ""
        if rec is None or not rec.fresh(now_ms, self.timing.forget_ms):
            return Outcome(alert_id, dedup_key, "unknown")
        if not rec.firing:
            return Outcome(alert_id or rec.alert_id, dedup_key, "already_resolved")
        base = snapshot if snapshot is not None else rec.alert
        resolved = base.model_copy(update={"status": "resolved", "triggered_at": at})
        resolved_json = resolved.model_dump_json().encode()
        labels = alert_labels(resolved, rec.route)
        muting = await self.silences.muting(labels)
        notify, why = await self.state.resolve(
            ResolveRequest(
                customer_id=customer_id,
                dedup_key=dedup_key,
                expected_alert_id=rec.alert_id,
                now_ms=now_ms,
                allowed=self.config.send_resolved and not muting,
                notification=encode_notification(
                    resolved_json, "resolved", rec.route, now_ms, rec.firing_since_ms
                ),
                snapshot=resolved_json,
                targets=self._targets(rec.route, labels),
                timing=self.timing,
            )
        )
        return Outcome(
            resolved.alert_id,
            dedup_key,
            why,
            "resolved" if notify else None,
            ",".join(sorted(muting)),
        )

    # -- groups out -----------------------------------------------------------------

    async def flush(self, *, limit: int = 200) -> FlushReport:
        """Turn due groups into digests in the outbox; close breakers whose rate fell.

        Called periodically by the worker (every few seconds: group waits are
        in tens of seconds) and once at the end of a replay.
        """
        report = FlushReport()
        for state in await self.breaker.sweep():
            report.breakers_closed.append(state.code)
            await self._ops_notice(state, "auto_released")
            if self.config.breaker.deliver_on_auto_release:
                await self._drain_held(state.code, state.held, deliver=True)
        now_ms = to_ms(self.clock.now())
        for gid in await self.state.due_groups(now_ms, limit):
            await self._flush_group(gid, now_ms, report)
        return report

    async def _flush_group(self, gid: str, now_ms: int, report: FlushReport) -> None:
        snap = await self.state.read_group(gid)
        if snap is None:
            return
        latest: dict[tuple[str, str], tuple[bytes, Notification]] = {}
        for raw in snap.items:
            note = Notification.from_json(raw)
            key = (note.alert.customer_id, note.alert.dedup_key)
            if key in latest:
                report.dropped += 1  # superseded within the group wait
            latest[key] = (raw, note)
        keep: list[bytes] = []
        unmark: list[tuple[str, str, str]] = []
        records_of: dict[str, dict[str, DedupRecord]] = {}
        for raw, note in latest.values():
            alert = note.alert
            labels = note.labels
            muted = bool(await self.silences.muting(labels))
            if not muted and note.kind != "resolved":
                if alert.customer_id not in records_of:
                    records_of[alert.customer_id] = await self.state.records(alert.customer_id)
                sources = self._sources(records_of[alert.customer_id], now_ms)
                muted = self.inhibitor.inhibited_by(labels, alert.dedup_key, sources) is not None
            if muted:
                report.dropped += 1
                if note.kind != "resolved":
                    unmark.append((alert.customer_id, alert.dedup_key, alert.alert_id))
                continue
            keep.append(raw)
        message_id = (
            "m-" + hashlib.sha256(f"{gid}\x1f{snap.epoch}\x1f{now_ms}".encode()).hexdigest()[:24]
        )
        message = (
            digest_json(message_id, snap.receiver, now_ms, snap.labels, keep) if keep else None
        )
        done = await self.state.flush_group(
            FlushRequest(
                gid=gid,
                epoch=snap.epoch,
                taken=len(snap.items),
                now_ms=now_ms,
                message_id=message_id,
                message=message,
                timing=self.timing,
                unmark=tuple(unmark),
            )
        )
        if not done:
            report.conflicts += 1
            return
        if message is not None:
            report.digests += 1
            report.notifications += len(keep)

    # -- breaker --------------------------------------------------------------------

    async def release_breaker(self, code: str, *, by: str, deliver: bool) -> ReleaseReport:
        """Close ``code``'s breaker now; deliver the held warnings or discard them.

        Delivered ones go through inhibition, silences and dedup as usual
        (not through the breaker). Raises ``KeyError`` for a code that never
        tripped.
        """
        state = await self.breaker.close(code, by=by)
        if state is None:
            raise KeyError(f"no circuit breaker state for rule {code!r}")
        outcomes = await self._drain_held(code, state.held, deliver=deliver)
        await self._ops_notice(state, "released", by=by, delivered=deliver)
        return ReleaseReport(
            code, len(outcomes) if deliver else state.held, deliver, tuple(outcomes)
        )

    async def _drain_held(self, code: str, count: int, *, deliver: bool) -> list[Outcome]:
        """Take the oldest ``count`` held warnings of ``code`` (the ones held when it closed).

        Each batch is removed only after it was processed: a crash midway
        leaves the rest held, and redoing a processed one is a duplicate to dedup.
        """
        outcomes: list[Outcome] = []
        left = count
        while left > 0:
            batch = await self.breaker.held(code, min(left, 500))
            if not batch:
                break
            if deliver:
                for raw in batch:
                    alert = RiskAlert.model_validate_json(raw)
                    outcomes.append(await self._submit(alert, use_breaker=False))
            await self.breaker.drop_held(code, len(batch))
            left -= len(batch)
        return outcomes

    async def _ops_notice(
        self, state: BreakerState, transition: str, *, by: str = "", delivered: bool = False
    ) -> None:
        """Tell operations a breaker changed (an ops message through the outbox)."""
        receiver = self.config.ops_receiver
        window = self.config.breaker.window
        if transition == "tripped":
            subject = f"circuit breaker open: rule {state.code} is holding its warnings"
            lines = [
                f"Rule {state.code} fired for {state.count} distinct customers within "
                f"{window} (trip point {state.trip_at}).",
                "That is unusual: a bad threshold or a broken input feed is likely.",
                "Its warnings are held, not sent, and not lost.",
                "Release them (deliver or discard) with the alerts breaker release command "
                "or the API; the breaker also closes by itself when the rate falls back.",
            ]
        elif transition == "auto_released":
            subject = f"circuit breaker closed: rule {state.code} rate is back to normal"
            lines = [
                f"Rule {state.code} now fires for {state.count} customers within {window}.",
                f"{state.held} warnings held while it was open are still held: "
                + (
                    "they are being delivered now."
                    if self.config.breaker.deliver_on_auto_release
                    else "release them (deliver or discard) when you have looked at them."
                ),
            ]
        else:
            subject = f"circuit breaker released by {by}: rule {state.code}"
            lines = [
                f"{by} closed the breaker of rule {state.code}.",
                f"{state.held} held warnings were "
                + ("delivered (subject to dedup and silences)." if delivered else "discarded."),
            ]
        log.warning("alerts: %s", subject)
        if receiver is None:
            return
        now_ms = to_ms(self.clock.now())
        message_id = (
            "o-"
            + hashlib.sha256(
                f"{state.code}\x1f{transition}\x1f{state.since_ms}\x1f{now_ms}".encode()
            ).hexdigest()[:24]
        )
        await self.outbox.put(
            OutboxMessage(
                id=message_id,
                receiver=receiver,
                kind="ops",
                created_ms=now_ms,
                notice={
                    "subject": subject,
                    "lines": lines,
                    "code": state.code,
                    "transition": transition,
                },
            ),
            due_ms=now_ms,
        )
