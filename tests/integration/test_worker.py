"""The worker against a real Kafka broker and a real Redis, end to end.

Every test starts real ``creditwatch worker`` processes on its own topics and
Redis key prefix, produces to the input topics and reads the output topics
with ``isolation.level=read_committed``, as an outside consumer would.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from config.settings import Settings
from creditwatch.replay import run_replay
from creditwatch.simulate.book import BookConfig, generate_book
from risk.engine import Engine
from risk.redis_store import decode_state
from streams.partitioning import partition_for

pytestmark = pytest.mark.integration

SERVICING = {"installment.due", "repayment.received", "repayment.failed"}


def event(type_: str, at: str, customer: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": type_,
        "customer_id": customer,
        "occurred_at": at,
        **fields,
    }


def delinquent_history() -> list[dict[str, Any]]:
    """C1: an instalment due 10 January, two failed collections, 100 of 500 paid 1 March."""
    fail = {"loan_id": "L1", "amount": "500.00", "currency": "CNY", "reason": "insufficient_funds"}
    return [
        event("customer.updated", "2026-01-01T00:00:00+00:00", "C1", "i1", timezone="UTC"),
        event(
            "installment.due",
            "2026-01-05T00:00:00+00:00",
            "C1",
            "i2",
            loan_id="L1",
            installment_no=1,
            due_date="2026-01-10",
            amount_due="500.00",
            currency="CNY",
        ),
        event("repayment.failed", "2026-01-10T09:00:00+00:00", "C1", "i3", **fail),
        event("repayment.failed", "2026-01-13T09:00:00+00:00", "C1", "i4", **fail),
        event(
            "repayment.received",
            "2026-03-01T09:00:00+00:00",
            "C1",
            "i5",
            loan_id="L1",
            amount="100.00",
            currency="CNY",
        ),
    ]


def metric_total(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if not m:
            continue
        if all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


if TYPE_CHECKING:
    from conftest import Deployment


def test_events_become_warnings_on_kafka_and_state_in_redis(deployment: Deployment) -> None:
    dep = deployment
    _proc, port = dep.start_worker()
    events = delinquent_history()
    dep.produce(events)
    alerts = dep.consume("risk_alerts", expect=4)
    codes = Counter(a["code"] for a in alerts)
    assert codes == Counter(
        {"repeated_failed_collections": 1, "dpd_1": 1, "dpd_30": 1, "loan_class_change": 1}
    )
    assert all(a["customer_id"] == "C1" and a["status"] == "firing" for a in alerts)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)

    blob = dep.redis().get(f"{dep.prefix}:c:C1")
    assert blob is not None
    state = decode_state(blob)
    loan = state.loans["L1"]
    assert loan.dpd_seen == 50  # 2026-01-10 to 2026-03-01
    assert loan.loan_class == "special_mention"
    assert str(loan.total_repaid) == "100.00"

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/customers/C1/risk", timeout=5) as r:
        risk = json.loads(r.read())
    assert risk["max_dpd"] == 50 and risk["loan_class"] == "special_mention"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/customers/top?n=5", timeout=5) as r:
        top = json.loads(r.read())
    assert [c["customer_id"] for c in top] == ["C1"]
    assert dep.redis().ttl(f"{dep.prefix}:c:C1") == -1  # an open loan: never expires
    assert metric_total(port, "creditwatch_events_total", outcome="applied") == 5
    tasks = dep.consume("collections_tasks", expect=5)
    assert [(t["stage"], t["status"]) for t in tasks] == [
        ("reminder", "open"),
        ("reminder", "cancelled"),  # escalated: one live task per loan
        ("call", "open"),
        ("call", "cancelled"),
        ("visit", "open"),
    ]


def test_malformed_messages_go_to_the_dead_letter_topic_with_offsets(
    deployment: Deployment,
) -> None:
    dep = deployment
    dep.start_worker()
    good = event(
        "transaction.posted",
        "2026-01-01T10:00:00+00:00",
        "C9",
        "ok-1",
        account_id="A1",
        amount="12.50",
        currency="CNY",
        direction="debit",
        channel="card",
    )
    negative = {**good, "event_id": "neg-1", "amount": "-5.00"}
    raw = [
        ("transactions", "C9", b"this is not json"),
        ("transactions", "C9", b"[1, 2, 3]"),
        ("transactions", "C9", orjson.dumps(negative)),
        ("repayments", "C9", orjson.dumps({**good, "type": "no.such.type"})),
        ("transactions", "C9", orjson.dumps(good)),
    ]
    placed = dep.produce(raw)
    letters = dep.consume("dead_letter", expect=4)
    assert len(letters) == 4
    got = {(d["source_topic"], d["source_partition"], d["source_offset"]): d for d in letters}
    assert set(got) == set(placed[:4])
    by_reason = {d["reason"] for d in letters}
    assert by_reason == {"not_json", "not_object", "invalid_value", "unknown_type"}
    neg = got[placed[2]]
    assert "amount" in neg["error"] and neg["event_id"] == "neg-1"
    assert neg["original"] == orjson.dumps(negative).decode()
    # the valid event after the bad ones was still processed
    wait_until(lambda: dep.redis().get(f"{dep.prefix}:c:C9") is not None, what="C9 state")
    # nothing open: the state expires after the configured quiet period
    assert 399 * 86400 < dep.redis().ttl(f"{dep.prefix}:c:C9") <= 400 * 86400


def test_the_same_event_twice_changes_state_once(deployment: Deployment) -> None:
    dep = deployment
    _proc, port = dep.start_worker()
    pay = event(
        "repayment.received",
        "2026-01-02T00:00:00+00:00",
        "C5",
        "pay-1",
        loan_id="L5",
        amount="250.00",
        currency="CNY",
    )
    dep.produce([pay, pay])
    wait_until(lambda: metric_total(port, "creditwatch_events_total") >= 2, what="2 events")
    state = decode_state(dep.redis().get(f"{dep.prefix}:c:C5"))
    assert str(state.loans["L5"].total_repaid) == "250.00"
    assert metric_total(port, "creditwatch_events_total", outcome="duplicate") == 1


def servicing_book(tmp: Path, partitions: int) -> tuple[list[dict[str, Any]], Path]:
    """A simulated book's servicing feed, closed by one event per shard at the end.

    The closing events move every shard's watermark to the same instant, the
    instant replay advances everyone to, so both must end in the same state.
    """
    book = generate_book(BookConfig(seed=11, customers=40, months=5))
    events = [e for e in book if e["type"] in SERVICING]
    end = max(e["occurred_at"] for e in events)
    for shard in range(partitions):
        customer = next(
            f"Z{i}" for i in range(10_000) if partition_for(f"Z{i}", partitions) == shard
        )
        events.append(
            event(
                "installment.due",
                end,
                customer,
                f"close-{shard}",
                loan_id="LZ",
                installment_no=1,
                due_date=end[:10],
                amount_due="1.00",
                currency="CNY",
            )
        )
    path = tmp / "servicing.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return events, path


def test_sigkill_mid_stream_then_restart_equals_an_uninterrupted_run(
    deployment: Deployment,
) -> None:
    """Exactly once across a SIGKILL: the same warnings and states as replay.

    The detectors are off on both sides: their shared models (adaptive
    thresholds, the default-probability model) learn from every customer in
    the order events are processed, which a partitioned worker and replay do
    not share, and a killed worker starts them afresh; the rules and the
    engine judge each customer on their own, so they must agree exactly.
    """
    dep = deployment
    events, path = servicing_book(dep.tmp, partitions=2)
    replay_dir = dep.tmp / "replay"
    settings = Settings(detectors={"enabled": False})
    summary = asyncio.run(run_replay(path, replay_dir, settings))
    expected_alerts = [
        orjson.loads(x) for x in (replay_dir / "alerts.jsonl").read_bytes().splitlines()
    ]
    expected_state = {
        s["customer_id"]: s
        for s in map(orjson.loads, (replay_dir / "state.jsonl").read_bytes().splitlines())
    }
    assert summary.applied == len(events) and expected_alerts

    no_detectors = {"CREDITWATCH_DETECTORS__ENABLED": "false"}
    proc, port = dep.start_worker(**no_detectors)
    # Produced while the worker runs, so the kill lands in the middle of the stream
    # (with batches in hand), not after the worker has caught up with all of it.
    producing = threading.Thread(target=dep.produce, args=(events,))
    producing.start()
    wait_until(
        lambda: metric_total(port, "creditwatch_events_total") >= len(events) * 0.4,
        timeout=120,
        what="40% of the stream",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    producing.join()
    _proc2, _port2 = dep.start_worker(**no_detectors)

    alerts = dep.consume("risk_alerts", expect=len(expected_alerts), timeout=180)
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was published twice"
    key = lambda a: (a["alert_id"], a["code"], a["triggered_at"], a["risk_score"])  # noqa: E731
    assert sorted(map(key, alerts)) == sorted(map(key, expected_alerts))

    redis = dep.redis()
    engine = Engine(settings)
    wait_until(
        lambda: redis.xlen(f"{dep.prefix}:ob:0") + redis.xlen(f"{dep.prefix}:ob:1") == 0,
        what="empty outbox",
    )
    for customer_id, expected in expected_state.items():
        blob = redis.get(f"{dep.prefix}:c:{customer_id}")
        assert blob is not None, customer_id
        got = orjson.loads(orjson.dumps(engine.summary(decode_state(blob)).model_dump(mode="json")))
        assert got == expected, customer_id


def test_graceful_shutdown_commits_and_a_restart_does_not_reprocess(
    deployment: Deployment,
) -> None:
    dep = deployment
    proc, port = dep.start_worker()
    first = [
        event(
            "repayment.received",
            f"2026-01-0{i}T00:00:00+00:00",
            "C7",
            f"g{i}",
            loan_id="L7",
            amount="10.00",
            currency="CNY",
        )
        for i in range(1, 6)
    ]
    dep.produce(first)
    wait_until(lambda: metric_total(port, "creditwatch_events_total") >= 5, what="5 events")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    _proc, port = dep.start_worker()
    dep.produce(
        [
            event(
                "repayment.received",
                "2026-01-09T00:00:00+00:00",
                "C7",
                "g9",
                loan_id="L7",
                amount="10.00",
                currency="CNY",
            )
        ]
    )
    wait_until(lambda: metric_total(port, "creditwatch_events_total") >= 1, what="new event")
    time.sleep(2)
    assert metric_total(port, "creditwatch_events_total", outcome="applied") == 1
    assert metric_total(port, "creditwatch_events_total", outcome="duplicate") == 0
    state = decode_state(dep.redis().get(f"{dep.prefix}:c:C7"))
    assert str(state.loans["L7"].total_repaid) == "60.00"


def test_kill_after_the_redis_write_before_the_offset_commit_counts_once(
    deployment: Deployment,
) -> None:
    """Offsets are committed rarely here, so SIGKILL lands after every Redis write."""
    dep = deployment
    proc, port = dep.start_worker(CREDITWATCH_COMMIT_INTERVAL_SECONDS="600")
    pays = [
        event(
            "repayment.received",
            f"2026-02-{i:02d}T09:00:00+00:00",
            "C3",
            f"k{i}",
            loan_id="L3",
            amount="10.00",
            currency="CNY",
        )
        for i in range(1, 21)
    ]
    fail = {"loan_id": "L3", "amount": "10.00", "currency": "CNY", "reason": "other"}
    fails = [
        event("repayment.failed", "2026-02-21T09:00:00+00:00", "C3", f"kf{i}", **fail)
        for i in (1, 2)
    ]
    dep.produce(pays + fails)
    wait_until(lambda: metric_total(port, "creditwatch_events_total") >= 22, what="22 events")
    alerts_before = dep.consume("risk_alerts", expect=1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    _proc, port = dep.start_worker()
    # every event comes again, because no offset was committed before the kill
    wait_until(
        lambda: metric_total(port, "creditwatch_events_total", outcome="duplicate") >= 22,
        timeout=90,
        what="the redelivered events",
    )
    assert metric_total(port, "creditwatch_events_total", outcome="applied") == 0
    state = decode_state(dep.redis().get(f"{dep.prefix}:c:C3"))
    assert str(state.loans["L3"].total_repaid) == "200.00"
    time.sleep(2)
    alerts = dep.consume("risk_alerts", expect=1)
    assert [a["alert_id"] for a in alerts] == [a["alert_id"] for a in alerts_before]
    assert [a["code"] for a in alerts] == ["repeated_failed_collections"]


def test_contagion_and_group_exposure_travel_between_customers_through_kafka(
    deployment: Deployment,
) -> None:
    """A's default reaches its guarantor B as an event keyed by B, on B's partition."""
    dep = deployment
    dep.start_worker()
    opened = {
        "product": "sme_working_capital",
        "currency": "CNY",
        "term_months": 12,
        "annual_rate": "0.06",
    }
    events = [
        event(
            "customer.linked",
            "2026-01-01T00:00:00+00:00",
            "A",
            "l1",
            related_customer_id="B",
            relation="guarantor",
        ),
        event(
            "customer.linked",
            "2026-01-01T00:00:00+00:00",
            "A",
            "l2",
            related_customer_id="H",
            relation="household",
        ),
        event(
            "loan.opened",
            "2026-01-02T00:00:00+00:00",
            "A",
            "o1",
            loan_id="LA",
            principal="3000000.00",
            **opened,
        ),
        event(
            "loan.opened",
            "2026-01-03T00:00:00+00:00",
            "B",
            "o2",
            loan_id="LB",
            principal="2500000.00",
            **opened,
        ),
        event("outcome.default", "2026-05-01T00:00:00+00:00", "A", "x1", loan_id="LA"),
    ]
    dep.produce(events)
    alerts = dep.consume("risk_alerts", expect=2)
    by_code = {(a["code"], a["customer_id"]): a for a in alerts}
    contagion = by_code[("related_party_default", "B")]
    assert contagion["source"] == "contagion"
    assert contagion["explanation"]["source_customer_id"] == "A"
    exposure = by_code[("large_exposure_breach", "B")]  # the rule set's exposure rule
    assert b'"5500000.00"' in orjson.dumps(exposure["explanation"]["conditions"])
    assert not [a for a in alerts if a["customer_id"] == "H"]
    b = decode_state(dep.redis().get(f"{dep.prefix}:c:B"))
    assert b.contagion[0][0] == "A" and b.related_exposure == {"A": "3000000.00"}
