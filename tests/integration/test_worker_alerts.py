"""The alert path inside real workers: Kafka, Redis, an SMTP server and the HTTP API.

Each test starts real ``creditwatch worker`` processes on its own topics and
Redis prefix (tests/integration/conftest.py) and a real SMTP server
(aiosmtpd) on a loopback port, and reads what the server received. Warnings
reach the workers either from input events (the whole path) or produced
straight onto the deployment's alerts topic, as the worker itself publishes
them, when a test needs warnings of a precise shape.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from alerts.index import AlertQuery, RedisAlertIndex
from schemas.outputs import RiskAlert
from tests.integration.smtp_server import SmtpServer

if TYPE_CHECKING:
    from conftest import Deployment, Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "6222021234567890123"
BASE_URL = "https://cw.bank.example"
READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
T0 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)


# -- a real SMTP server -------------------------------------------------------------------


def alert_env(smtp: SmtpServer, **extra: str) -> dict[str, str]:
    """A worker that mails the desk at ``smtp`` quickly (second-scale waits and retries)."""
    return {
        "CREDITWATCH_SMTP__HOST": "127.0.0.1",
        "CREDITWATCH_SMTP__PORT": str(smtp.port),
        "CREDITWATCH_SMTP__SENDER": "creditwatch@bank.example",
        "CREDITWATCH_SMTP__RISK_DESK": '["desk@bank.example"]',
        "CREDITWATCH_SMTP__OPS": '["ops@bank.example"]',
        "CREDITWATCH_SMTP__TIMEOUT_SECONDS": "3",
        "CREDITWATCH_ALERT_DELIVERY__PUBLIC_BASE_URL": BASE_URL,
        "CREDITWATCH_ALERT_DELIVERY__FLUSH_INTERVAL_SECONDS": "0.3",
        "CREDITWATCH_ALERT_DELIVERY__DELIVER_IDLE_SECONDS": "0.2",
        "CREDITWATCH_ALERT_DELIVERY__POLICY__GROUP_WAIT": "PT1S",
        "CREDITWATCH_ALERT_DELIVERY__POLICY__GROUP_INTERVAL": "PT1S",
        "CREDITWATCH_ALERT_DELIVERY__POLICY__DELIVERY__INITIAL_BACKOFF": "PT0.3S",
        "CREDITWATCH_ALERT_DELIVERY__POLICY__DELIVERY__MAX_BACKOFF": "PT1S",
        **extra,
    }


# -- talking to the worker ------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def http(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, (json.loads(raw) if "json" in ctype else raw.decode())


def event(type_: str, at: str, customer: str, event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "customer_id": customer, "occurred_at": at}


def codes_in(mails: list[EmailMessage]) -> list[str]:
    """The warning codes listed in digests ("Code: dpd_30 (rule)" lines), each time listed."""
    return sorted(
        line.split("Code: ")[1].split(" ")[0]
        for mail in mails
        for line in bodies(mail)[0].splitlines()
        if "Code: " in line
    )


def make_alert(customer: str, n: int, **fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": f"a-{customer}-{n}",
        "dedup_key": f"{customer}:L1:rule_{n}",
        "customer_id": customer,
        "loan_id": "L1",
        "severity": "high",
        "source": "rule",
        "code": f"rule_{n}",
        "title": f"Card {ACCOUNT} used abroad at night",
        "explanation": {"route": "both", "why": "A first foreign use at night.", "n": n},
        "risk_score": 610,
        "risk_tier": "high",
        "loan_class": "substandard",
        "triggered_at": T0,
        "evidence_event_ids": ["e-1"],
        "rule_set_version": "v7",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})


def publish(dep: Deployment, *alerts: RiskAlert) -> None:
    """Put warnings on the deployment's alerts topic, keyed by customer, as the worker does."""
    dep.produce([("risk_alerts", a.customer_id, a.model_dump_json().encode()) for a in alerts])


def bodies(mail: EmailMessage) -> tuple[str, str]:
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def metric(port: int, name: str, **labels: str) -> float:
    _, text = http(port, "GET", "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- (a) events to an email, and its resolution ------------------------------------------


def test_events_that_raise_warnings_reach_the_desk_by_email_and_then_resolve(
    deployment: Deployment, smtp: SmtpServer
) -> None:
    dep = deployment
    _proc, port = dep.start_worker(**alert_env(smtp))
    fail = {"loan_id": "L1", "amount": "500.00", "currency": "CNY", "reason": "insufficient_funds"}
    events = [
        {**event("customer.updated", "2026-01-01T00:00:00+00:00", "C1", "i1"), "timezone": "UTC"},
        {
            **event("transaction.posted", "2026-01-02T10:00:00+00:00", "C1", "t1"),
            "account_id": ACCOUNT,
            "amount": "12.50",
            "currency": "CNY",
            "direction": "debit",
            "channel": "card",
        },
        {
            **event("installment.due", "2026-01-05T00:00:00+00:00", "C1", "i2"),
            "loan_id": "L1",
            "installment_no": 1,
            "due_date": "2026-01-10",
            "amount_due": "500.00",
            "currency": "CNY",
        },
        {**event("repayment.failed", "2026-01-10T09:00:00+00:00", "C1", "i3"), **fail},
        {**event("repayment.failed", "2026-01-13T09:00:00+00:00", "C1", "i4"), **fail},
        {**event("repayment.failed", "2026-02-15T09:00:00+00:00", "C1", "i5"), **fail},
    ]
    dep.produce(events)

    def firing_codes() -> list[str]:
        return codes_in(smtp.inbox.about("C1"))

    wanted = {"repeated_failed_collections", "dpd_30", "loan_class_change"}
    wait_until(lambda: set(firing_codes()) >= wanted, timeout=90, what="the digests of C1")
    time.sleep(2)  # time for a digest that should not exist to show up
    mails = smtp.inbox.about("C1")
    for mail in mails:
        plain, html = bodies(mail)
        raw = mail.as_string()
        assert str(mail["To"]) == "desk@bank.example"
        assert str(mail["From"]) == "creditwatch@bank.example"
        for body in (plain, html):
            assert "customer C1" in body
            assert f"{BASE_URL}/customers/C1/risk" in body
            assert f"{BASE_URL}/alerts/a-" in body
        assert ACCOUNT not in raw and ACCOUNT[:10] not in raw
    # each once, and not dpd_1: its route is collections, nobody is mailed
    assert firing_codes() == sorted(wanted)
    dpd30 = next(m for m in mails if "dpd_30" in bodies(m)[0])
    plain, html = bodies(dpd30)
    assert "[WARNING]" in plain and "Status: new" in plain and "<ol>" in html

    # the customer pays: DPD back to 0, class back to normal -> resolved, told once
    dep.produce(
        [
            {
                **event("repayment.received", "2026-02-16T09:00:00+00:00", "C1", "i6"),
                "loan_id": "L1",
                "amount": "500.00",
                "currency": "CNY",
                "installment_no": 1,
            }
        ]
    )

    def resolved() -> list[EmailMessage]:
        return [
            m
            for m in smtp.inbox.mails()
            if str(m["Subject"]).startswith("[creditwatch] RESOLVED customer C1")
        ]

    def resolved_codes() -> list[str]:
        return codes_in(resolved())

    wait_until(
        lambda: set(resolved_codes()) >= {"dpd_30", "loan_class_change"},
        timeout=60,
        what="the resolved digests",
    )
    time.sleep(2)
    assert resolved_codes() == ["dpd_30", "loan_class_change"]  # each resolved once
    assert all("Status: resolved" in bodies(m)[0] for m in resolved())
    ids = [str(m["Message-ID"]) for m in smtp.inbox.mails()]
    assert len(ids) == len(set(ids))

    status, listed = http(port, "GET", "/alerts?customer_id=C1&limit=50")
    assert status == 200
    by_code = {a["code"]: a for a in listed["alerts"]}
    assert by_code["dpd_30"]["status"] == "resolved"
    assert by_code["dpd_30"]["resolved"]["by"] == "risk state"
    assert by_code["repeated_failed_collections"]["status"] == "firing"
    assert by_code["dpd_1"]["notification"]["outcome"] == "no_receiver"
    assert metric(port, "creditwatch_notifications_total", channel="email", outcome="sent") == len(
        ids
    )


# -- (b) the relay goes away and comes back -----------------------------------------------


def test_an_smtp_outage_mid_run_delays_email_but_each_arrives_once(
    deployment: Deployment, smtp: SmtpServer
) -> None:
    dep = deployment
    _proc, port = dep.start_worker(**alert_env(smtp))
    redis = dep.redis()
    outbox = f"{dep.prefix}:al:ob:m"
    publish(dep, *(make_alert(f"K{i}", 1) for i in range(4)))
    wait_until(lambda: len(smtp.inbox.mails()) == 4, timeout=60, what="4 emails")

    smtp.stop()
    publish(dep, *(make_alert(f"K{i}", 1) for i in range(4, 8)))

    def tried_during_outage() -> bool:
        # after one refused connection the round's other messages wait without an attempt
        messages = [orjson.loads(v) for v in redis.hvals(outbox)]
        return len(messages) == 4 and max(m["attempts"] for m in messages) >= 2

    wait_until(tried_during_outage, timeout=60, what="failed attempts while the relay is down")
    assert len(smtp.inbox.mails()) == 4
    smtp.start()
    wait_until(lambda: len(smtp.inbox.mails()) >= 8, timeout=60, what="the delayed emails")
    time.sleep(2)
    mails = smtp.inbox.mails()
    ids = [str(m["Message-ID"]) for m in mails]
    assert len(ids) == 8 and len(set(ids)) == 8
    customers = sorted(str(m["Subject"]).split("customer ")[1].split(":")[0] for m in mails)
    assert customers == [f"K{i}" for i in range(8)]
    for mail in mails:  # the warnings' titles quote a card number: shown masked
        plain, html = bodies(mail)
        assert "****0123" in plain and "****0123" in html
        assert ACCOUNT not in mail.as_string()
    assert redis.hlen(outbox) == 0 and redis.hlen(f"{dep.prefix}:al:ob:dead") == 0
    assert metric(port, "creditwatch_notifications_total", channel="email", outcome="retried") >= 1


# -- (c) dedup and inhibition survive a restart ---------------------------------------------


def test_dedup_and_inhibition_hold_across_a_worker_restart(
    deployment: Deployment, smtp: SmtpServer
) -> None:
    dep = deployment
    env = alert_env(smtp)
    proc, _port = dep.start_worker(**env)
    deep = make_alert(
        "R", 90, dedup_key="R:L1:dpd_90", code="dpd_90", severity="critical", title="L1 at 90"
    )
    publish(dep, deep)
    wait_until(lambda: smtp.inbox.about("R"), timeout=60, what="the first email")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0

    _proc, port = dep.start_worker(**env)
    again = make_alert(
        "R", 91, dedup_key="R:L1:dpd_90", code="dpd_90", severity="critical", title="L1 at 90"
    )
    weaker = make_alert(
        "R", 30, dedup_key="R:L1:dpd_30", code="dpd_30", severity="warning", title="L1 at 30"
    )
    control = make_alert("Q", 1)
    publish(dep, deep, again, weaker, control)
    wait_until(lambda: smtp.inbox.about("Q"), timeout=60, what="the control email")
    time.sleep(3)  # a group wait and then some: anything about R would be out by now
    assert len(smtp.inbox.about("R")) == 1

    def outcome(alert_id: str) -> str:
        status, body = http(port, "GET", f"/alerts/{alert_id}")
        assert status == 200, body
        return str(body["notification"]["outcome"])

    assert outcome(again.alert_id) == "deduplicated"
    assert outcome(weaker.alert_id) == "inhibited"
    assert outcome(deep.alert_id) == "new"  # the redelivery kept its first entry
    assert metric(port, "creditwatch_alert_intake_total", outcome="duplicate") == 1
    _, one = http(port, "GET", f"/alerts/{weaker.alert_id}")
    assert one["notification"]["detail"] == "deeper-arrears-mutes-shallower"
    assert one["condition"]["status"] == "firing"


# -- (d) the HTTP API on a running worker ------------------------------------------------------


def test_the_api_lists_acknowledges_resolves_and_silences_with_tokens(
    deployment: Deployment, smtp: SmtpServer
) -> None:
    dep = deployment
    env = alert_env(smtp, CREDITWATCH_API__READ_TOKEN=READ, CREDITWATCH_API__WRITE_TOKEN=WRITE)
    _proc, port = dep.start_worker(**env)
    first = make_alert("S1", 1)
    publish(dep, first)
    wait_until(lambda: smtp.inbox.about("S1"), timeout=60, what="the S1 email")

    assert http(port, "GET", "/alerts")[0] == 401
    assert http(port, "GET", "/alerts", token="not-the-token-at-all")[0] == 401
    # The risk-state endpoints take the same read token; liveness stays open.
    assert http(port, "GET", "/customers/top")[0] == 401
    assert http(port, "GET", "/customers/top", token=READ)[0] == 200
    assert http(port, "GET", "/customers/S1/risk", token=WRITE)[0] in (200, 404)
    assert http(port, "GET", "/healthz")[0] == 200
    status, listed = http(port, "GET", "/alerts?customer_id=S1", token=READ)
    assert status == 200 and [a["alert_id"] for a in listed["alerts"]] == [first.alert_id]
    status, bad = http(port, "GET", "/alerts?limit=0", token=READ)
    assert status == 400 and "limit" in bad["error"]

    ack = f"/alerts/{first.alert_id}/ack"
    assert http(port, "POST", ack, body={"by": "ana"})[0] == 401
    status, refused = http(port, "POST", ack, token=READ, body={"by": "ana"})
    assert status == 403 and "read token" in refused["error"]
    status, acked = http(port, "POST", ack, token=WRITE, body={"by": "ana", "comment": "mine"})
    assert status == 200 and acked["acknowledged"]["by"] == "ana"
    _, shown = http(port, "GET", f"/alerts/{first.alert_id}", token=READ)
    assert shown["acknowledged"]["comment"] == "mine" and shown["status"] == "firing"

    silence_body = {
        "customer_id": "S2",
        "duration": "1h",
        "created_by": "ana",
        "comment": "restructuring agreed",
    }
    assert http(port, "POST", "/silences", token=READ, body=silence_body)[0] == 403
    status, silence = http(port, "POST", "/silences", token=WRITE, body=silence_body)
    assert status == 201 and silence["state"] == "active"
    status, missing = http(port, "POST", "/silences", token=WRITE, body={"customer_id": "S2"})
    assert status == 400 and "created_by" in missing["error"]
    muted, heard = make_alert("S2", 1), make_alert("S3", 1)
    publish(dep, muted, heard)
    wait_until(lambda: smtp.inbox.about("S3"), timeout=60, what="the S3 email")
    time.sleep(2)
    assert smtp.inbox.about("S2") == []
    _, s2 = http(port, "GET", f"/alerts/{muted.alert_id}", token=READ)
    assert s2["notification"] == {"outcome": "silenced", "detail": silence["id"]}
    _, silences = http(port, "GET", "/silences?state=active", token=READ)
    assert [s["id"] for s in silences["silences"]] == [silence["id"]]

    resolve = f"/alerts/{first.alert_id}/resolve"
    status, resolved = http(port, "POST", resolve, token=WRITE, body={"by": "bo"})
    assert status == 200 and resolved["outcome"] == "resolved" and resolved["notified"]
    wait_until(
        lambda: [m for m in smtp.inbox.mails() if "RESOLVED customer S1" in str(m["Subject"])],
        timeout=30,
        what="the resolved email",
    )
    status, expired = http(port, "DELETE", f"/silences/{silence['id']}?by=bo", token=WRITE)
    assert status == 200 and expired["state"] == "expired"
    status, breakers = http(port, "GET", "/breakers", token=READ)
    assert status == 200
    assert [(b["code"], b["state"], b["held"]) for b in breakers["breakers"]] == [
        ("rule_1", "closed", 0)
    ]
    assert http(port, "POST", "/breakers/rule_1/release", token=WRITE, body={"by": "x"})[0] == 400

    status, doc = http(port, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    for path, operations in doc["paths"].items():
        if "{" in path or "get" not in operations:
            continue
        got, _ = http(port, "GET", path, token=READ)
        assert got in (200, 503), (path, got)  # 503: /healthz while rebalancing


# -- the index and the CLI on the real Redis --------------------------------------------------


async def test_the_redis_index_is_bounded_and_filters(stack: Stack) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(stack.redis_url)
    prefix = f"cwt{os.urandom(4).hex()}"
    try:
        index = RedisAlertIndex(
            redis, prefix=prefix, retention=timedelta(seconds=10), max_entries=3
        )
        for i in range(5):
            alert = make_alert(f"X{i % 2}", i, severity="critical" if i % 2 else "warning")
            await index.add(alert, outcome="new", detail="", now_ms=i * 1000)
        newest = [a.alert.alert_id for a in await index.query(AlertQuery())]
        assert newest == ["a-X0-4", "a-X1-3", "a-X0-2"]
        assert await redis.hlen(f"{prefix}:al:ix:a") == 3
        x1 = await index.query(AlertQuery(customer_id="X1"))
        assert [a.alert.alert_id for a in x1] == ["a-X1-3"]  # a-X1-1 went with the cap
        assert (await index.acknowledge("a-X1-3", by="ana", comment="", now_ms=5000)) is not None
        assert await index.acknowledge("a-X1-1", by="ana", comment="", now_ms=5000) is None
        assert await index.resolve_key("X0", "X0:L1:rule_4", by="bo", now_ms=6000) == 1
        resolved = await index.query(AlertQuery(status="resolved"))
        assert [a.alert.alert_id for a in resolved] == ["a-X0-4"]
        await index.add(make_alert("X9", 9), outcome="new", detail="", now_ms=13_500)
        left = [a.alert.alert_id for a in await index.query(AlertQuery())]
        assert left == ["a-X9-9", "a-X0-4"]  # older than 10 s before the newest went
        assert await redis.hlen(f"{prefix}:al:ix:ack") == 0  # trimmed with its entry
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def test_the_cli_sets_lists_and_expires_silences(stack: Stack, tmp_path: Path) -> None:
    prefix = f"cwt{os.urandom(4).hex()}"
    env = {
        **stack.env,
        "CREDITWATCH_REDIS__URL": stack.redis_url,
        "CREDITWATCH_REDIS__KEY_PREFIX": prefix,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "creditwatch", "alerts", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def together(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        with ThreadPoolExecutor(len(calls)) as pool:  # the commands start slowly: overlap them
            return list(pool.map(lambda c: cli(*c), calls))

    added, refused = together(
        (
            "silence", "add", "--customer", "C7", "--code", "dpd_30", "--duration", "4h",
            "--author", "ana", "--reason", "agreed a plan", "--json",
        ),
        ("silence", "add", "--duration", "1h", "--author", "a", "--reason", "r"),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence = json.loads(added.stdout)
    assert sorted(silence["matchers"]) == ['code="dpd_30"', 'customer_id="C7"']
    assert silence["created_by"] == "ana" and silence["state"] == "active"
    assert refused.returncode == 2 and "at least one of" in refused.stderr

    listed, unknown, missing, outbox_run = together(
        ("silence", "list", "--json"),
        ("silence", "expire", "no-such-id"),
        ("breaker", "release", "dpd_30", "--discard"),
        ("outbox", "--requeue-dead", "--json"),
    )
    assert [s["id"] for s in json.loads(listed.stdout)] == [silence["id"]]
    assert unknown.returncode == 1
    assert missing.returncode == 1 and "no circuit breaker state" in missing.stderr
    outbox = json.loads(outbox_run.stdout)
    assert outbox == {"pending": 0, "dead_count": 0, "dead": [], "requeued": 0}

    expired = cli("silence", "expire", silence["id"], "--by", "bo", "--json")
    assert json.loads(expired.stdout)["expired_by"] == "bo"
    assert json.loads(cli("silence", "list", "--state", "active", "--json").stdout) == []
