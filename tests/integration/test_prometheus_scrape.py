"""A real Prometheus scrapes a real worker, and its query API shows what the desk's events did.

The worker runs against the session's Kafka and Redis; Debian's ``prometheus``
(installed by ``scripts/prometheus.sh``) runs on a free loopback port with a
temporary configuration that scrapes the worker's ``/metrics`` every second and
loads the project's own alerting rules, with its storage in the test's
temporary directory. Everything asserted is read back through Prometheus's
HTTP API, as Grafana would read it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from detectors.registry import REGISTRY
from schemas.topics import INPUT_TOPICS, INTERNAL_TOPICS
from tests.integration.test_worker import delinquent_history, metric_total, wait_until

if TYPE_CHECKING:
    from conftest import Deployment

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("prometheus is missing in CI: scripts/bootstrap.sh should have installed it")
    pytest.skip("prometheus is not installed (bash scripts/prometheus.sh install)")


class Prometheus:
    """One Prometheus server of the test, spoken to through its HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(self, promql: str) -> dict[frozenset[tuple[str, str]], float]:
        """Each series of an instant query: its labels (no job/instance) -> value."""
        return {
            frozenset(
                (k, v) for k, v in row["metric"].items() if k not in {"job", "instance"}
            ): float(row["value"][1])
            for row in self.query(promql)
        }

    def scalar(self, promql: str) -> float | None:
        rows = self.query(promql)
        return float(rows[0]["value"][1]) if rows else None


@pytest.fixture
def prometheus(deployment: Deployment) -> Iterator[tuple[Prometheus, int]]:
    """A worker, and a Prometheus scraping it every second; yields both (and the worker port)."""
    binary = prometheus_binary()
    _proc, worker_port = deployment.start_worker()
    port = free_port()
    home = deployment.tmp / "prometheus"
    home.mkdir()
    config = home / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - {ROOT / "deploy/prometheus/alerts.yml"}
scrape_configs:
  - job_name: creditwatch
    static_configs:
      - targets: ["127.0.0.1:{worker_port}"]
"""
    )
    log = (home / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(port)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited, see {log.name}"
            try:
                with urllib.request.urlopen(f"{server.base}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, what="prometheus ready")
        yield server, worker_port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_prometheus_scrapes_the_worker_and_sees_the_events_book_and_lag(
    deployment: Deployment, prometheus: tuple[Prometheus, int]
) -> None:
    dep = deployment
    prom, worker_port = prometheus
    events: list[Any] = [*delinquent_history(), ("repayments", "C2", b"this is not json")]
    dep.produce(events)
    wait_until(lambda: metric_total(worker_port, "creditwatch_events_total") >= 6, what="6 inputs")

    repayments, customers = dep.topics["repayments"], dep.topics["customers"]
    expected_events = {
        frozenset({("__name__", "creditwatch_events_total"), ("topic", t), ("outcome", o)}): n
        for t, o, n in (
            (repayments, "applied", 4.0),
            (customers, "applied", 1.0),
            (repayments, "dead_letter", 1.0),
        )
    }
    wait_until(
        lambda: prom.series("creditwatch_events_total") == expected_events,
        timeout=30,
        what="the event counters in Prometheus",
    )
    rows = prom.query("creditwatch_events_total")
    assert {r["metric"]["job"] for r in rows} == {"creditwatch"}
    assert {r["metric"]["instance"] for r in rows} == {f"127.0.0.1:{worker_port}"}
    assert prom.scalar('up{job="creditwatch"}') == 1.0

    assert prom.series("creditwatch_dead_letters_total") == {
        frozenset({("__name__", "creditwatch_dead_letters_total"), ("reason", "not_json")}): 1.0
    }
    lag_count = prom.series("creditwatch_event_lag_seconds_count")
    assert lag_count == {
        frozenset({("__name__", "creditwatch_event_lag_seconds_count"), ("topic", t)}): n
        for t, n in ((repayments, 4.0), (customers, 1.0))
    }
    # The events happened in 2026-01..03: all of them more than a day before the decision.
    day = 'creditwatch_event_lag_seconds_bucket{le="86400.0"}'
    assert prom.scalar(f"sum({day})") == 0.0
    assert prom.scalar('sum(creditwatch_event_lag_seconds_bucket{le="+Inf"})') == 5.0

    # Periodic gauges: the loan book from the Redis counters, lag from the consumer.
    def book() -> dict[str, float]:
        return {
            dict(labels)["loan_class"]: value
            for labels, value in prom.series("creditwatch_loans").items()
        }

    wait_until(lambda: book().get("special_mention") == 1.0, timeout=30, what="loans by class")
    assert book() == {
        "normal": 0.0,
        "special_mention": 1.0,
        "substandard": 0.0,
        "doubtful": 0.0,
        "loss": 0.0,
    }
    assert prom.scalar("sum(creditwatch_customers)") == 1.0

    expected_partitions = {(t, p) for t in (*INPUT_TOPICS, *INTERNAL_TOPICS) for p in ("0", "1")}

    def lag() -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["topic"], dict(labels)["partition"]): value
            for labels, value in prom.series("creditwatch_consumer_lag").items()
        }

    wait_until(
        lambda: set(lag()) == expected_partitions and sum(lag().values()) == 0,
        timeout=60,
        what="consumer lag of every assigned partition, caught up",
    )

    # Detector scores by detector name, with the bucket the dashboard reads for zeros.
    scored = prom.series("creditwatch_detector_score_count")
    assert scored and {dict(labels)["detector"] for labels in scored} <= set(REGISTRY)
    assert prom.query('creditwatch_detector_score_bucket{le="0.0"}')

    # The project's alerting rules evaluate cleanly on real data, and none fires (one may be
    # pending for a moment: the first batch of a fresh worker is a slow one).
    def rules() -> list[dict[str, Any]]:
        groups = prom.get("/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_until(
        lambda: all(not r["lastEvaluation"].startswith("0001") for r in rules()),  # 0001: never
        timeout=30,
        what="every alerting rule evaluated",
    )
    assert len(rules()) >= 9
    assert all(r["health"] == "ok" for r in rules()), [r for r in rules() if r["health"] != "ok"]
    alerts = prom.get("/api/v1/alerts")["alerts"]
    assert [a for a in alerts if a["state"] == "firing"] == [], alerts

    # No label anywhere carries a customer, loan, account or event id.
    ids = {"C1", "C2", "L1", "i1", "i2", "i3", "i4", "i5"}
    for row in prom.query('{__name__=~"creditwatch_.+"}'):
        leaked = ids & set(row["metric"].values())
        assert not leaked, (row["metric"], leaked)
