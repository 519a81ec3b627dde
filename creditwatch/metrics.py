"""Prometheus metrics, built on an injected registry with bounded label sets.

No label ever carries a customer, loan, account or event id: labels are
topics, outcomes, reasons, codes and severities, all from closed sets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """The service's metrics; one instance per registry (tests make their own)."""

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
