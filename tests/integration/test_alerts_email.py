"""The alert path end to end on the real Redis of the test stack and a real SMTP server.

The SMTP server is aiosmtpd, started here on a free loopback port, and the
tests read what it received: the digest's plain and HTML parts, with nothing
unmasked. The server is stopped and started again in the middle of delivery,
and every email still arrives exactly once. Dedup records, silences, group
buffers and the outbox are held in Redis across a "restart" (new pipeline
objects over the same keys), and the Redis scripts are checked against the
memory twins on one random history.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr
from redis.asyncio import Redis

from alerts import admin
from alerts.clock import ManualClock, SystemClock, to_ms
from alerts.config import AlertConfig, BreakerConfig, DeliveryConfig
from alerts.factory import AlertService, email_notifiers, memory_service, redis_service
from alerts.mail import EmailNotifier
from alerts.outbox import NotifyError, OutboxMessage
from config.settings import SmtpSettings
from schemas.outputs import RiskAlert
from tests.integration.conftest import free_port
from tests.integration.smtp_server import Inbox, SmtpServer

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
CARD = "6222 0212 3456 7890"
ACCOUNT = "6222021234567890123"
BASE_URL = "https://creditwatch.bank.example"
CONFIG = AlertConfig(
    group_wait=timedelta(seconds=30),
    group_interval=timedelta(minutes=5),
    repeat_interval=timedelta(hours=24),
    delivery=DeliveryConfig(
        initial_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=4), batch=3
    ),
)


def make_alert(customer: str = "C100", n: int = 1, **fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": f"a-{customer}-{n}",
        "dedup_key": f"{customer}:rule{n}",
        "customer_id": customer,
        "loan_id": "L1",
        "severity": "high",
        "source": "rule",
        "code": f"rule_{n}",
        "title": f"Card {CARD} used abroad at night",
        "explanation": {
            "route": "both",
            "why": "A first foreign card use at night often precedes fraud losses.",
            "conditions": [
                {
                    "field": "account_id",
                    "op": "==",
                    "threshold": ACCOUNT,
                    "value": ACCOUNT,
                    "result": True,
                },
                {"feature": "dpd", "op": ">=", "threshold": 30, "value": 31, "result": True},
            ],
            "note": f"card {CARD}",
        },
        "risk_score": 610,
        "risk_tier": "high",
        "loan_class": "substandard",
        "triggered_at": T0,
        "evidence_event_ids": ["e-1"],
        "rule_set_version": "v7",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})


# -- a real SMTP server -----------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[Redis]:
    client = Redis.from_url(stack.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"cwt{uuid.uuid4().hex[:10]}"


def service(
    redis: Redis,
    prefix: str,
    clock: ManualClock,
    smtp_settings: SmtpSettings | None = None,
    owner: str = "w1",
    config: AlertConfig = CONFIG,
    **notifier_kwargs: Any,
) -> AlertService:
    notifiers = (
        email_notifiers(
            smtp_settings,
            base_url=BASE_URL,
            ops_recipients=("ops@bank.example",),
            timeout=5,
            **notifier_kwargs,
        )
        if smtp_settings is not None
        else {}
    )
    return redis_service(
        redis, prefix=prefix, notifiers=notifiers, config=config, clock=clock, owner=owner
    )


def settings_for(server: SmtpServer, **fields: Any) -> SmtpSettings:
    return SmtpSettings(
        **{
            "host": "127.0.0.1",
            "port": server.port,
            "sender": "creditwatch@bank.example",
            "risk_desk": ("desk@bank.example", "desk2@bank.example"),
            **fields,
        }
    )


def bodies(mail: EmailMessage) -> tuple[str, str]:
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


# -- tests --------------------------------------------------------------------------------


async def test_digest_goes_out_over_starttls_with_login_and_reads_well(
    redis: Redis, prefix: str, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=(data.login, data.password) == (b"cw", b"s3cret"))

    inbox = Inbox()
    server = SmtpServer(
        inbox,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    server.start()
    try:
        clock = ManualClock(T0)
        settings = settings_for(server, username="cw", password=SecretStr("s3cret"), starttls=True)
        trust = ssl.create_default_context(cafile=str(cert))
        svc = service(redis, prefix, clock, settings, tls_context=trust)
        await svc.pipeline.submit(make_alert("C100", 1))
        await svc.pipeline.submit(
            make_alert("C100", 2, severity="critical", title="Loan L1 is 90 days past due")
        )
        await svc.pipeline.submit(make_alert("C200", 1))
        clock.advance(timedelta(seconds=31))
        assert (await svc.pipeline.flush()).digests == 2
        # a worker configured without STARTTLS and login is refused: the digests wait
        plain_worker = service(redis, prefix, clock, settings_for(server), owner="plain")
        refused = await plain_worker.deliverer.deliver_once()
        assert (refused.sent, refused.retried, refused.dead) == (0, 2, 0)
        assert inbox.received == [] and await svc.outbox.pending() == 2
        clock.advance(timedelta(seconds=2))
        report = await svc.deliverer.deliver_once()
        assert report.sent == 2, report
        assert logins == [(b"cw", b"s3cret")] * 2
        assert await svc.outbox.pending() == 0
        assert await redis.hlen(f"{prefix}:al:ob:m") == 0

        mails = {str(m["Subject"]): m for m in inbox.received}
        subject = "[creditwatch] CRITICAL customer C100: 2 warnings (rule_2, rule_1)"
        assert set(mails) == {subject, "[creditwatch] HIGH customer C200: 1 warning (rule_1)"}
        mail = mails[subject]
        assert str(mail["To"]) == "desk@bank.example, desk2@bank.example"
        plain, html = bodies(mail)
        for body in (plain, html):
            assert "customer C100" in body
            assert f"{BASE_URL}/customers/C100/risk" in body
            assert f"{BASE_URL}/alerts/a-C100-1" in body and f"{BASE_URL}/alerts/a-C100-2" in body
            assert "A first foreign card use at night" in body
            assert "dpd &gt;= 30 (value 31)" in body or "dpd >= 30 (value 31)" in body
            assert "****7890" in body and "****0123" in body
            assert CARD not in body and ACCOUNT not in body
            assert "62220212" not in body.replace(" ", "")
        assert "Risk tier: high | Loan class: substandard | Risk score: 610" in plain
        assert "<td>substandard</td>" in html
        assert plain.index("[CRITICAL]") < plain.index("[HIGH]")
        raw = mail.as_string()
        assert ACCOUNT not in raw and "6222 0212" not in raw
    finally:
        server.stop()


async def test_smtp_outage_mid_run_loses_nothing_and_sends_each_email_once(
    redis: Redis, prefix: str, smtp: SmtpServer
) -> None:
    clock = ManualClock(T0)
    settings = settings_for(smtp)
    workers = [service(redis, prefix, clock, settings, owner=f"w{i}") for i in range(2)]
    pipeline = workers[0].pipeline
    for i in range(10):
        await pipeline.submit(make_alert(f"C{i:03d}", 1))
    clock.advance(timedelta(seconds=31))
    assert (await pipeline.flush()).digests == 10

    async def round_() -> int:
        reports = await asyncio.gather(*(w.deliverer.deliver_once() for w in workers))
        return sum(r.sent for r in reports)

    assert await round_() == 6  # two workers, three each
    smtp.stop()
    clock.advance(timedelta(seconds=1))
    assert await round_() == 0  # refused: retried later, kept
    for i in range(10, 16):  # warnings keep coming while the relay is down
        await pipeline.submit(make_alert(f"C{i:03d}", 1))
    clock.advance(timedelta(seconds=31))
    assert (await workers[1].pipeline.flush()).digests == 6
    for _ in range(5):
        clock.advance(timedelta(seconds=2))
        assert await round_() == 0
    assert await workers[0].outbox.pending() == 10
    assert len(smtp.inbox.received) == 6

    smtp.start()
    # the workers restart too: new objects over the same Redis
    workers = [service(redis, prefix, clock, settings, owner=f"w{i}-new") for i in range(2)]
    for _ in range(20):
        clock.advance(timedelta(seconds=5))
        await round_()
        if await workers[0].outbox.pending() == 0:
            break
    ids = smtp.inbox.message_ids()
    assert len(ids) == 16 and len(set(ids)) == 16, ids
    customers = sorted(
        str(m["Subject"]).split("customer ")[1].split(":")[0] for m in smtp.inbox.received
    )
    assert customers == [f"C{i:03d}" for i in range(16)]
    assert await workers[0].outbox.pending() == 0
    assert await workers[0].outbox.dead() == []


async def test_a_send_in_flight_when_the_server_stops_is_delivered_once_after(
    redis: Redis, prefix: str, smtp: SmtpServer
) -> None:
    """Stop the relay while the run loops are delivering: nothing lost, nothing doubled."""
    # warnings grouped a minute ago, so their digests are due for the live clock below
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=1))
    settings = settings_for(smtp)
    fast = CONFIG.model_copy(
        update={
            "delivery": DeliveryConfig(
                initial_backoff=timedelta(milliseconds=50),
                max_backoff=timedelta(milliseconds=200),
                batch=2,
            )
        }
    )
    live = SystemClock()
    workers = [
        redis_service(
            redis,
            prefix=prefix,
            clock=live,
            owner=f"w{i}",
            config=fast,
            notifiers=email_notifiers(settings, base_url=BASE_URL, timeout=2),
        )
        for i in range(2)
    ]
    producer = redis_service(redis, prefix=prefix, clock=clock, config=fast, notifiers={})
    for i in range(30):
        await producer.pipeline.submit(make_alert(f"D{i:03d}", 1))
    clock.advance(timedelta(seconds=31))
    assert (await producer.pipeline.flush()).digests == 30

    stop = asyncio.Event()
    loops = [asyncio.create_task(w.deliverer.run(stop, idle=0.02)) for w in workers]
    try:
        await wait_for(lambda: len(smtp.inbox.received) >= 5)
        smtp.stop()
        await asyncio.sleep(0.5)
        during = len(smtp.inbox.received)
        assert during < 30
        smtp.start()
        await wait_for(lambda: len(smtp.inbox.received) >= 30, timeout=30)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    ids = smtp.inbox.message_ids()
    assert len(ids) == 30 and len(set(ids)) == 30
    assert await producer.outbox.pending() == 0


async def test_dedup_silences_groups_and_breakers_hold_across_a_restart(
    redis: Redis, prefix: str, smtp: SmtpServer
) -> None:
    clock = ManualClock(T0)
    settings = settings_for(smtp)
    config = CONFIG.model_copy(
        update={"breaker": BreakerConfig(min_customers=3, window=timedelta(hours=1))}
    )
    first = service(redis, prefix, clock, settings, config=config)
    assert (await first.pipeline.submit(make_alert("C1", 1))).reason == "new"
    silence = await admin.create_silence(
        first,
        matchers=["customer_id=C2"],
        created_by="ana",
        comment="restructuring agreed",
        duration="4h",
    )
    assert (await first.pipeline.submit(make_alert("C2", 1))).reason == "silenced"
    for i in range(2):
        assert (
            await first.pipeline.submit(make_alert(f"B{i}", 9, code="bad_feed"))
        ).reason == "new"
    for i in (2, 3):  # the third distinct customer within the hour trips the breaker
        assert (
            await first.pipeline.submit(make_alert(f"B{i}", 9, code="bad_feed"))
        ).reason == "held"

    # -- restart: everything below is new objects over the same Redis --
    clock.advance(timedelta(minutes=10))
    second = service(redis, prefix, clock, settings, owner="w2", config=config)
    p = second.pipeline
    assert (await p.submit(make_alert("C1", 1))).reason == "duplicate"
    assert (await p.submit(make_alert("C1", 1, alert_id="a-other"))).reason == "deduplicated"
    worse = make_alert("C1", 1, alert_id="a-worse", severity="critical")
    assert (await p.submit(worse)).reason == "escalated"
    assert (await p.submit(make_alert("C2", 1, alert_id="a-c2b"))).reason == "silenced"
    listed = await admin.list_silences(second, "active")
    assert [(s["id"], s["created_by"], s["comment"]) for s in listed] == [
        (silence["id"], "ana", "restructuring agreed")
    ]
    status = await admin.breaker_status(second)
    assert [(s["state"], s["held"]) for s in status if s["code"] == "bad_feed"] == [("open", 2)]
    # the groups the first instance filled are flushed by the second
    report = await p.flush()
    assert (report.digests, report.dropped) == (3, 1)  # C1 (new superseded by escalated), B0, B1
    for _ in range(3):
        await second.deliverer.deliver_once()
    assert await second.outbox.pending() == 0
    subjects = sorted(str(m["Subject"]) for m in smtp.inbox.received)
    assert len(subjects) == 4, subjects  # three digests and the breaker's ops notice
    assert any("ops: circuit breaker open: rule bad_feed" in s for s in subjects)
    c1 = [m for m in smtp.inbox.received if "customer C1:" in str(m["Subject"])]
    assert len(c1) == 1
    plain, _ = bodies(c1[0])
    assert "Status: escalated" in plain and "[CRITICAL]" in plain

    # expiring on the restarted instance unmutes on any instance
    await admin.expire_silence(second, silence["id"], by="bo")
    third = service(redis, prefix, clock, settings, owner="w3", config=config)
    assert (await third.pipeline.submit(make_alert("C2", 1, alert_id="a-c2c"))).reason == "new"
    released = await admin.release_breaker(third, "bad_feed", by="ops", deliver=True)
    assert released == {"code": "bad_feed", "released": 2, "delivered": True, "queued": 2}
    # resolve after a restart tells the desk the C1 warning cleared
    out = await third.pipeline.resolve("C1", "C1:rule1", T0 + timedelta(days=2))
    assert out.reason == "resolved"
    assert (await third.pipeline.resolve("C1", "C1:rule1", T0)).reason == "already_resolved"


async def test_redis_scripts_agree_with_the_memory_twins(redis: Redis, prefix: str) -> None:
    """One random history of warnings, resolves, silences and flushes on both stores."""
    config = AlertConfig(
        group_wait=timedelta(seconds=30),
        group_interval=timedelta(minutes=5),
        repeat_interval=timedelta(hours=6),
        forget_after=timedelta(days=2),
        breaker=BreakerConfig(
            min_customers=4, window=timedelta(hours=2), min_open=timedelta(minutes=30)
        ),
    )
    mem_clock, red_clock = ManualClock(T0), ManualClock(T0)
    mem = memory_service(notifiers={}, config=config, clock=mem_clock)
    red = redis_service(redis, prefix=prefix, notifiers={}, config=config, clock=red_clock)
    for svc in (mem, red):
        ids = iter(f"s{i}" for i in range(1000))
        svc.silences.new_id = lambda ids=ids: next(ids)  # type: ignore[misc]

    rng = random.Random(20260302)
    customers = [f"C{i}" for i in range(12)]
    severities = ["info", "warning", "high", "critical"]
    log: dict[str, list[Any]] = {"memory": [], "redis": []}

    async def both(op: str, *args: Any) -> None:
        for name, svc in (("memory", mem), ("redis", red)):
            if op == "submit":
                out = await svc.pipeline.submit(args[0])
                log[name].append((op, out.reason, out.kind, out.detail))
            elif op == "resolve":
                out = await svc.pipeline.resolve(*args)
                log[name].append((op, out.reason, out.kind))
            elif op == "flush":
                r = await svc.pipeline.flush()
                log[name].append((op, r.digests, r.notifications, r.dropped, r.breakers_closed))
            elif op == "silence":
                s = await svc.silences.create(
                    args[0], created_by="t", comment="c", duration=args[1]
                )
                log[name].append((op, s.id))
            elif op == "release":
                try:
                    rep = await svc.pipeline.release_breaker(args[0], by="t", deliver=args[1])
                    log[name].append((op, rep.released, [o.reason for o in rep.outcomes]))
                except KeyError:
                    log[name].append((op, "none"))

    for _ in range(400):
        roll = rng.random()
        if roll < 0.6:
            customer = rng.choice(customers)
            n = rng.randrange(4)
            alert = make_alert(
                customer,
                n,
                alert_id=f"a-{customer}-{n}-{rng.randrange(3)}",
                severity=rng.choice(severities),
                code=rng.choice(["rule_a", "rule_b", "dpd_30", "dpd_90"]),
                loan_id=rng.choice(["L1", "L2", None]),
                source=rng.choice(["rule", "classification"]),
                explanation={"route": rng.choice(["both", "risk_desk", "collections"])},
            )
            await both("submit", alert)
        elif roll < 0.72:
            customer = rng.choice(customers)
            await both("resolve", customer, f"{customer}:rule{rng.randrange(4)}", T0)
        elif roll < 0.85:
            await both("flush")
        elif roll < 0.9:
            await both(
                "silence",
                [f"customer_id={rng.choice(customers)}"],
                timedelta(minutes=rng.randrange(10, 120)),
            )
        elif roll < 0.91:
            await both("release", rng.choice(["rule_a", "rule_b"]), rng.random() < 0.5)
        step_by = timedelta(seconds=rng.choice([0, 0, 5, 20, 60, 60, 600, 3600]))
        mem_clock.advance(step_by)
        red_clock.advance(step_by)

    assert log["memory"] == log["redis"]
    reasons = {entry[1] for entry in log["memory"] if entry[0] == "submit"}
    # the history reached every decision, so the comparison covers every branch
    assert reasons == {
        "new",
        "escalated",
        "repeat",
        "duplicate",
        "deduplicated",
        "inhibited",
        "silenced",
        "held",
        "no_receiver",
    }
    resolves = {entry[1] for entry in log["memory"] if entry[0] == "resolve"}
    assert resolves == {"resolved", "already_resolved", "never_notified", "not_allowed", "unknown"}
    for customer in customers:
        mem_records = await mem.pipeline.state.records(customer)
        red_records = await red.pipeline.state.records(customer)
        now_ms = to_ms(mem_clock.now())
        forget = mem.pipeline.timing.forget_ms
        fresh = {k: r for k, r in red_records.items() if r.fresh(now_ms, forget)}
        assert {k: r for k, r in mem_records.items() if r.fresh(now_ms, forget)} == fresh
    far = 10**15
    mem_out = await mem.outbox.claim(now_ms=far, lease_ms=1, owner="t", limit=10_000)
    red_out = await red.outbox.claim(now_ms=far, lease_ms=1, owner="t", limit=10_000)

    def shape(messages: list[OutboxMessage]) -> list[Any]:
        return sorted(
            (m.id, m.receiver, m.kind, m.items, m.notice.get("subject")) for m in messages
        )

    assert shape(mem_out) == shape(red_out)
    assert len(mem_out) > 10
    assert {s.code: s for s in (await mem.breaker.states())} == {
        s.code: s for s in (await red.breaker.states())
    }


async def test_email_notifier_against_a_closed_port_is_retryable() -> None:
    notifier = EmailNotifier(
        SmtpSettings(host="127.0.0.1", port=free_port(), risk_desk=("d@x",)),
        recipients=("d@x",),
        base_url=BASE_URL,
        timeout=2,
    )
    notice = OutboxMessage(
        id="o-1", receiver="ops", kind="ops", created_ms=0, notice={"subject": "s", "lines": ["l"]}
    )
    with pytest.raises(NotifyError) as caught:
        await notifier.notify(notice)
    assert caught.value.retryable
