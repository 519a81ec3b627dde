"""Prometheus metrics, built on an injected registry with bounded label sets.

No label ever carries a customer, loan, account or event id: labels are
topics, partitions, outcomes, reasons, alert codes and rule ids, severities,
tiers, loan classes, detector names and channels, all from closed sets
(configuration, the rule set, the detector registry).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
DAY = 86400
EVENT_LAG_BUCKETS = (
    *(1, 10, 60, 300, 900),
    *(hours * 3600 for hours in (1, 4, 12)),
    *(days * DAY for days in (1, 2, 7, 30, 90, 365, 3 * 365)),
)
"""Event time to decision: seconds when live, days or years while history is replayed."""
DETECTOR_SCORE_BUCKETS = (0, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100)
"""Most scores are exactly 0 (``le="0.0"`` counts them); the flag floors lie between 0.3 and 6."""


class Metrics:
    """The service's metrics; one instance per registry (tests make their own)."""

    def exposed(self) -> dict[str, frozenset[str]]:
        """Every sample name these metrics can expose, with the label names it may carry.

        It is what the Grafana dashboard and the alerting rules may refer to
        (a test holds them to it), whether or not a sample has been recorded yet.

        >>> names = Metrics().exposed()
        >>> sorted(names["creditwatch_events_total"])
        ['outcome', 'topic']
        >>> sorted(names["creditwatch_event_lag_seconds_bucket"])
        ['le', 'topic']
        """
        out: dict[str, frozenset[str]] = {}
        for metric in vars(self).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            name, labels = metric._name, frozenset(metric._labelnames)
            if isinstance(metric, Counter):
                out[f"{name}_total"] = out[f"{name}_created"] = labels
            elif isinstance(metric, Histogram):
                out[f"{name}_bucket"] = labels | {"le"}
                for suffix in ("_sum", "_count", "_created"):
                    out[name + suffix] = labels
            else:
                out[name] = labels
        return out

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "creditwatch_events",
            "Input events by source topic and outcome (applied, duplicate, dead_letter).",
            ["topic", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "creditwatch_dead_letters",
            "Inputs sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(
            "creditwatch_alerts",
            "Early warnings raised, by code and severity.",
            ["code", "severity"],
            registry=r,
        )
        self.tasks = Counter(
            "creditwatch_collections_tasks",
            "Collections tasks created, by stage.",
            ["stage"],
            registry=r,
        )
        self.processing = Histogram(
            "creditwatch_processing_seconds",
            "Time to process one input event, from arrival to decision.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_events = Histogram(
            "creditwatch_batch_events",
            "Input events per batch an agent hands to the processor (bigger under backlog).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.aligned_held = Gauge(
            "creditwatch_alignment_held_events",
            "Input events held back until the other input topics have caught up in event time.",
            registry=r,
        )
        self.aligned_paused = Gauge(
            "creditwatch_alignment_paused_partitions",
            "Input topic-partitions not fetched for now: ahead of the others in event time.",
            registry=r,
        )
        self.aligned_forced = Counter(
            "creditwatch_alignment_forced_releases",
            "Held input events let go before their turn, by reason (stall, size, rebalance).",
            ["reason"],
            registry=r,
        )
        self.published = Counter(
            "creditwatch_outputs_published",
            "Outputs published from the outbox, by logical topic.",
            ["topic"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "creditwatch_outbox_depth",
            "Outputs committed to the outbox and not yet published.",
            registry=r,
        )
        self.ticks = Counter(
            "creditwatch_dpd_ticks",
            "Scheduled DPD advances run by the worker.",
            registry=r,
        )
        self.watermark = Gauge(
            "creditwatch_event_time_watermark_seconds",
            "Latest event time seen (Unix seconds).",
            registry=r,
        )
        # -- latency, lag and what the detectors and rules saw (risk/processor.py) --
        self.event_lag = Histogram(
            "creditwatch_event_lag_seconds",
            "Time from an applied input event's occurred_at to its decision, by source topic.",
            ["topic"],
            buckets=EVENT_LAG_BUCKETS,
            registry=r,
        )
        self.detector_score = Histogram(
            "creditwatch_detector_score",
            "Scores the detectors gave input events, by detector name.",
            ["detector"],
            buckets=DETECTOR_SCORE_BUCKETS,
            registry=r,
        )
        self.rule_errors = Counter(
            "creditwatch_rule_errors",
            "Rule evaluations that raised an error, by rule id (the other rules still ran).",
            ["rule"],
            registry=r,
        )
        # -- periodic gauges (streams/gauges.py) --
        self.consumer_lag = Gauge(
            "creditwatch_consumer_lag",
            "Messages of an assigned input partition not yet committed by the consumer group "
            "(log end offset minus committed offset), by logical topic and partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.customers = Gauge(
            "creditwatch_customers",
            "Customers with an open loan, by risk tier.",
            ["tier"],
            registry=r,
        )
        self.loans = Gauge(
            "creditwatch_loans",
            "Open loans, by five-category loan class.",
            ["loan_class"],
            registry=r,
        )
        self.gauge_refresh_errors = Counter(
            "creditwatch_gauge_refresh_errors",
            "Periodic gauge refreshes that failed, by gauge (consumer_lag, book): "
            "the gauge keeps its last value.",
            ["gauge"],
            registry=r,
        )
        # -- alert notification path (streams/alert_delivery.py, alerts/) --
        self.notifications = Counter(
            "creditwatch_notifications",
            "Notifications handed to a channel, by channel and outcome "
            "(sent; retried: a retryable failure, kept in the outbox; dead: refused, parked).",
            ["channel", "outcome"],
            registry=r,
        )
        self.alert_outbox_depth = Gauge(
            "creditwatch_alert_outbox_depth",
            "Notifications in the alert outbox not yet accepted by their channel.",
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "creditwatch_alerts_suppressed",
            "Warnings recorded but not notified, by reason (duplicate, deduplicated, "
            "inhibited, silenced, held, no_receiver).",
            ["reason"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "creditwatch_breaker_open",
            "1 while the circuit breaker of a rule holds its warnings, else 0; by alert code.",
            ["code"],
            registry=r,
        )
        self.alert_intake = Counter(
            "creditwatch_alert_intake",
            "Published warnings taken by the alert path, by what it did (new, escalated, "
            "repeat, duplicate, deduplicated, inhibited, silenced, held, no_receiver, stale).",
            ["outcome"],
            registry=r,
        )
        self.alert_cleared = Counter(
            "creditwatch_alert_cleared",
            "Warnings resolved because a risk state showed their condition cleared, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.alert_intake_rejected = Counter(
            "creditwatch_alert_intake_rejected",
            "Records on the alerts or risk-state topic the alert path could not take, by reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.alert_digests = Counter(
            "creditwatch_alert_digests",
            "Digests (one per alert group) written to the alert outbox.",
            registry=r,
        )
        self.alert_outbox_dead = Gauge(
            "creditwatch_alert_outbox_dead",
            "Notifications parked as undeliverable (see `creditwatch alerts outbox`).",
            registry=r,
        )
        self.rule_sets_refused = Counter(
            "creditwatch_rule_sets_refused",
            "Published rule-set versions this worker refused (it kept the last good one).",
            registry=r,
        )
        self.rule_set_info = Gauge(
            "creditwatch_rule_set_info",
            "The rule set and version this worker judges with (value 1).",
            ["name", "version"],
            registry=r,
        )
        self.detector_model_saves = Counter(
            "creditwatch_detector_model_saves",
            "Saves of the shared detector models to Redis, by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )
