"""The Grafana dashboard and its provisioning show what the worker really exposes.

No Grafana runs here, so the JSON is parsed and every PromQL expression in it
is held to :meth:`creditwatch.metrics.Metrics.exposed`: a renamed or dropped
metric, or a label the metric does not have, turns a panel silently empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from creditwatch.metrics import Metrics
from tests.unit.test_prometheus_rules import METRIC, TARGET_LABELS, problems

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy/grafana"
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "dashboards/creditwatch.json").read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def test_the_dashboard_parses_with_unique_panel_ids_and_a_fixed_uid(
    dashboard: dict[str, Any],
) -> None:
    assert dashboard["uid"] == "creditwatch-overview"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_expression_uses_only_metrics_and_labels_the_worker_exposes(
    dashboard: dict[str, Any],
) -> None:
    exposed = Metrics().exposed()
    seen = 0
    for title, target in targets(dashboard):
        expr = target["expr"]
        assert problems(expr, exposed) == [], title
        names = METRIC.findall(expr)
        assert names or "up{" in expr, title
        labels = set(TARGET_LABELS)
        for name in names:
            labels |= exposed[name]
        for label in LEGEND_LABEL.findall(target.get("legendFormat", "")):
            assert label in labels, f"{title}: legend names {label}"
        seen += 1
    assert seen >= 30


def test_the_dashboard_shows_each_required_signal(dashboard: dict[str, Any]) -> None:
    used = {name for _title, t in targets(dashboard) for name in METRIC.findall(t["expr"])}
    assert used >= {
        "creditwatch_events_total",
        "creditwatch_dead_letters_total",
        "creditwatch_processing_seconds_bucket",
        "creditwatch_event_lag_seconds_bucket",
        "creditwatch_consumer_lag",
        "creditwatch_alerts_total",
        "creditwatch_notifications_total",
        "creditwatch_customers",
        "creditwatch_loans",
        "creditwatch_detector_score_bucket",
        "creditwatch_rule_errors_total",
        "creditwatch_rule_set_info",
        "creditwatch_rule_sets_refused_total",
        "creditwatch_outbox_depth",
        "creditwatch_alert_outbox_depth",
    }


def test_panels_query_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for title, target in targets(dashboard):
        assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}, title


def test_the_dashboard_provider_loads_the_mounted_dashboards_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/creditwatch.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (entry,) = provider["providers"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == entry["options"]["path"]
