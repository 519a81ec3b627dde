"""The Prometheus configuration and alerting rules in deploy/prometheus/ are valid and tested.

``promtool`` (Debian's ``prometheus`` package, which ``scripts/bootstrap.sh``
installs through ``scripts/prometheus.sh``) checks the scrape configuration and
the rule file and runs the rules' own unit tests (``alerts_test.yml``). On a
developer's machine without promtool those checks are skipped; in CI
(``CI=true``) a missing promtool fails them. Every metric an alert refers to
must be one the worker defines, with labels it has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Histogram
from prometheus_client.utils import floatToGoString

from creditwatch.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy/prometheus"
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""

METRIC = re.compile(r"\b(creditwatch_[A-Za-z0-9_:]+)")
SELECTOR = re.compile(r"\b(creditwatch_[A-Za-z0-9_:]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("promtool is missing in CI: scripts/bootstrap.sh should have installed it")
    pytest.skip("promtool is not installed (bash scripts/prometheus.sh install)")


def run_promtool(*args: str) -> str:
    proc = subprocess.run(
        [promtool(), *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def bucket_bounds(metrics: Metrics) -> dict[str, set[str]]:
    """Each histogram's ``_bucket`` series name and its ``le`` values, as the client writes them."""
    return {
        f"{m._name}_bucket": {floatToGoString(bound) for bound in m._upper_bounds}
        for m in vars(metrics).values()
        if isinstance(m, Histogram)
    }


BOUNDS = bucket_bounds(Metrics())


def problems(expr: str, exposed: dict[str, frozenset[str]]) -> list[str]:
    """What in a PromQL expression does not exist on the worker's /metrics.

    Metric names must be defined by :class:`creditwatch.metrics.Metrics`, label
    matchers must name labels of their metric, an exact ``le`` must be one of
    the histogram's bucket bounds as exposed, and grouping labels must be
    labels of some metric in the expression (or a target label).

    >>> exposed = Metrics().exposed()
    >>> problems('sum by (topic) (rate(creditwatch_events_total{outcome="applied"}[5m]))', exposed)
    []
    >>> problems("rate(creditwatch_event_total[5m])", exposed)
    ['unknown metric creditwatch_event_total']
    >>> problems('sum by (customer_id) (creditwatch_loans{class="loss"})', exposed)
    ['creditwatch_loans has no label class', 'no metric in the expression has label customer_id']
    >>> problems('creditwatch_detector_score_bucket{le="0"}', exposed)
    ['creditwatch_detector_score_bucket has no bucket le="0"']
    """
    found: list[str] = []
    names = METRIC.findall(expr)
    for name in names:
        if name not in exposed:
            found.append(f"unknown metric {name}")
    for name, matchers in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(matchers):
            if name in exposed and label not in exposed[name] | TARGET_LABELS:
                found.append(f"{name} has no label {label}")
            if label == "le" and op == "=" and value not in BOUNDS.get(name, set()):
                found.append(f'{name} has no bucket le="{value}"')
    available = set(TARGET_LABELS)
    for name in names:
        available |= exposed.get(name, frozenset())
    for group in GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in available:
                found.append(f"no metric in the expression has label {label}")
    return sorted(set(found), key=found.index)


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def expectations(cases: Iterable[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """Alert names some test case expects to fire, and those some case expects quiet."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    return firing, quiet


def test_the_alerting_rules_pass_promtool_check() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", "alerts.yml")


def test_the_scrape_configuration_passes_promtool_check_with_its_rules() -> None:
    output = run_promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in output


def test_the_alerting_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml")


def test_every_alert_is_tested_firing_and_staying_quiet() -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing, quiet = expectations(tests["tests"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "never tested firing"
    assert names - quiet == set(), "never tested staying quiet"


def test_the_health_alerts_the_service_needs_are_there() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "CreditwatchWorkerDown",
        "CreditwatchConsumerLagGrowing",
        "CreditwatchDeadLettersSpike",
        "CreditwatchOutboxDepthGrowing",
        "CreditwatchRuleSetRefused",
        "CreditwatchProcessingP99High",
        "CreditwatchSmtpNotificationsFailing",
    }


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["description"]) > 40, rule["alert"]


def test_alerts_refer_only_to_metrics_and_labels_the_worker_exposes() -> None:
    exposed = Metrics().exposed()
    for rule in alert_rules():
        assert problems(rule["expr"], exposed) == [], rule["alert"]
        assert METRIC.search(rule["expr"]) or "up{" in rule["expr"], rule["alert"]
