"""A running worker picks up a published rule-set version without a restart.

The desk publishes with ``creditwatch rules publish`` while the worker runs:
events judged before the publication carry the old version and the old
thresholds, events after it the new ones; a broken version is refused by the
worker, which keeps judging with the last good one and says so on /metrics.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rules.loader import DEFAULT_PACK
from tests.integration.test_worker import event, metric_total, wait_until

if TYPE_CHECKING:
    from conftest import Deployment

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        return json.loads(resp.read())


def arrears(customer: str, prefix: str, due: str, paid: str) -> list[dict[str, Any]]:
    """An instalment missed on ``due`` and paid on ``paid`` (15 days later here)."""
    return [
        event("customer.updated", f"{due}T00:00:00+00:00", customer, f"{prefix}0", timezone="UTC"),
        event(
            "installment.due",
            f"{due}T00:00:00+00:00",
            customer,
            f"{prefix}1",
            loan_id=f"L-{customer}",
            installment_no=1,
            due_date=due,
            amount_due="500.00",
            currency="CNY",
        ),
        event(
            "repayment.received",
            f"{paid}T09:00:00+00:00",
            customer,
            f"{prefix}2",
            loan_id=f"L-{customer}",
            amount="500.00",
            currency="CNY",
        ),
    ]


def publish(dep: Deployment, path: Path, message: str) -> subprocess.CompletedProcess[str]:
    env = {
        **dep.env(0),
        "CREDITWATCH_HTTP_PORT": "6066",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "creditwatch",
            "rules",
            "publish",
            str(path),
            "--author",
            "risk desk",
            "--message",
            message,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dpd_codes(alerts: list[dict[str, Any]], customer: str) -> list[tuple[str, str]]:
    """The DPD-bucket warnings of one customer with the version that judged them.

    The class migration warnings (normal -> special mention) come from the
    engine's classification, not from a bucket rule, and are left out.
    """
    return sorted(
        (a["code"], a["rule_set_version"])
        for a in alerts
        if a["customer_id"] == customer and a["code"].startswith("dpd_")
    )


async def write_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


def test_a_published_version_judges_later_events_and_a_broken_one_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    _proc, port = dep.start_worker()
    shipped = health(port)["rule_set_version"]

    # Judged by the shipped pack: 15 days late fires dpd_1 only.
    dep.produce(arrears("EARLY", "e", "2026-01-10", "2026-01-25"))
    early = dep.consume("risk_alerts", expect=2)
    assert dpd_codes(early, "EARLY") == [("dpd_1", shipped)]
    assert {a["rule_set_version"] for a in early} == {shipped}

    # The desk moves the 30-day bucket to 10 days and publishes it.
    candidate = tmp_path / "candidate.yaml"
    text = DEFAULT_PACK.read_text(encoding="utf-8")
    old = "{feature: max_dpd, op: crosses, value: 30}"
    candidate.write_text(
        text.replace(old, "{feature: max_dpd, op: crosses, value: 10}"), encoding="utf-8"
    )
    proc = publish(dep, candidate, "bucket 30 -> 10")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    wait_until(
        lambda: health(port)["rule_set_version"] != shipped, 60, "the worker to take the version"
    )
    published = health(port)["rule_set_version"]

    # The same history for another customer now fires the 10-day bucket too.
    dep.produce(arrears("LATE", "l", "2026-01-10", "2026-01-25"))
    alerts = dep.consume("risk_alerts", expect=len(early) + 3)
    assert dpd_codes(alerts, "LATE") == [("dpd_1", published), ("dpd_30", published)]
    # ... and what was judged before keeps the old verdict and version.
    assert dpd_codes(alerts, "EARLY") == [("dpd_1", shipped)]

    # A broken version written to the topic is refused; the last good one stays.
    topic = dep.topics["rules"]
    broken = {"name": "default", "version": "broken", "seq": 99, "rules": [{"id": "x"}]}
    asyncio.run(write_raw(dep.stack.bootstrap, topic, b"default", orjson.dumps(broken)))
    wait_until(
        lambda: metric_total(port, "creditwatch_rule_sets_refused_total") >= 1,
        60,
        "the refusal to be counted",
    )
    assert health(port)["rule_set_version"] == published
    dep.produce(arrears("AFTER", "a", "2026-01-10", "2026-01-25"))
    before = len(alerts)
    alerts = dep.consume("risk_alerts", expect=before + 3)
    assert dpd_codes(alerts, "AFTER") == [("dpd_1", published), ("dpd_30", published)]
