"""The email channel: a readable, masked digest; SMTP settings used; failures classified."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from pydantic import SecretStr

from alerts.clock import ManualClock
from alerts.factory import email_notifiers, memory_service
from alerts.mail import EmailNotifier, classify
from alerts.mask import mask_text
from alerts.outbox import OutboxMessage
from alerts.render import explanation_lines
from config.settings import SmtpSettings
from schemas.outputs import RiskAlert

T0 = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
CARD = "6222 0212 3456 7890"
ACCOUNT = "6222021234567890123"
SMTP = SmtpSettings(
    host="mail.bank.example",
    port=2525,
    username="cw",
    password=SecretStr("s3cret"),
    starttls=True,
    sender="creditwatch@bank.example",
    risk_desk=("desk@bank.example",),
)


def make_alert(**fields: Any) -> RiskAlert:
    base: dict[str, Any] = {
        "alert_id": "a-7f3c",
        "dedup_key": "C42:new_country_night:BR",
        "customer_id": "C42",
        "loan_id": "LN9988776655443",
        "severity": "high",
        "source": "rule",
        "code": "card_new_country_at_night",
        "title": f"Card {CARD} used abroad at night",
        "explanation": {
            "route": "risk_desk",
            "rule": "card_new_country_at_night",
            "why": "A first foreign card use at night often precedes fraud losses.",
            "conditions": [
                {
                    "field": "country",
                    "op": "not_in",
                    "threshold": ["CN"],
                    "value": "BR",
                    "result": True,
                },
                {
                    "field": "account_id",
                    "op": "==",
                    "threshold": ACCOUNT,
                    "value": ACCOUNT,
                    "result": True,
                },
                {
                    "feature": "night_share",
                    "op": ">",
                    "threshold": 0.5,
                    "value": 0.8,
                    "result": True,
                },
            ],
            "detector_scores": {"velocity": 0.91},
            "counterparty_id": "MERCHANT-55667788",
            "note": f"card {CARD} on account {ACCOUNT}",
            "amount": "12345678901.50",
        },
        "risk_score": 640,
        "risk_tier": "high",
        "loan_class": "special_mention",
        "triggered_at": T0,
        "evidence_event_ids": ["e-1"],
        "rule_set_version": "v3",
        "status": "firing",
    }
    return RiskAlert(**{**base, **fields})


async def digest_message() -> OutboxMessage:
    clock = ManualClock(T0)
    service = memory_service(notifiers={}, clock=clock)
    await service.pipeline.submit(make_alert())
    await service.pipeline.submit(
        make_alert(
            alert_id="a-8",
            dedup_key="C42:dpd:30",
            code="dpd_30",
            severity="critical",
            title="Loan LN9988776655443 is 30 days past due",
            explanation={"route": "risk_desk", "dpd": 31},
        )
    )
    clock.advance(timedelta(minutes=1))
    await service.pipeline.flush()
    [message] = await service.outbox.claim(now_ms=10**15, lease_ms=1, owner="t", limit=5)
    return message


def parts(mail: EmailMessage) -> tuple[str, str]:
    parsed = message_from_bytes(mail.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


def test_masking_keeps_dates_amounts_and_short_ids() -> None:
    assert mask_text(f"{CARD}, {ACCOUNT}") == "****7890, ****0123"
    assert mask_text("2026-01-10T00:00:00+00:00 loan L1 amount 100000.00") == (
        "2026-01-10T00:00:00+00:00 loan L1 amount 100000.00"
    )
    assert mask_text("phone 13812345678") == "phone ****5678"


def test_explanation_lines_say_what_fired_and_why_masked() -> None:
    lines = explanation_lines(make_alert().explanation)
    assert lines[0].startswith("A first foreign card use")
    assert "country not_in [CN] (value BR)" in lines
    assert "account_id == ****0123 (value ****0123)" in lines
    assert "night_share > 0.5 (value 0.8)" in lines
    assert "detector scores: velocity 0.91" in lines
    assert "counterparty_id: ****7788" in lines
    assert "amount: 12345678901.50" in lines
    assert not any(ACCOUNT in line or CARD in line for line in lines)


async def test_digest_email_is_readable_masked_and_linked() -> None:
    message = await digest_message()
    notifier = EmailNotifier(SMTP, recipients=SMTP.risk_desk, base_url="https://cw.bank.example/")
    mail = notifier.build(message)
    assert mail["Subject"] == (
        "[creditwatch] CRITICAL customer C42: 2 warnings (dpd_30, card_new_country_at_night)"
    )
    assert mail["Message-ID"] == f"<{message.id}.risk_desk@bank.example>"
    assert mail["To"] == "desk@bank.example" and mail["From"] == "creditwatch@bank.example"
    plain, html = parts(mail)
    for body in (plain, html):
        assert "C42" in body
        assert "https://cw.bank.example/customers/C42/risk" in body
        assert "https://cw.bank.example/alerts/a-7f3c" in body
        assert "https://cw.bank.example/alerts/a-8" in body
        assert "A first foreign card use at night" in body
        assert "****7890" in body and "****0123" in body
    # 10+ digits in a row (spaces, dashes allowed), other than an amount or a date-time
    leaked = re.compile(r"\d(?:[ -]?\d){9,}(?![\d:])(?!\.\d)")
    for text in (plain, html, str(mail["Subject"])):
        assert not leaked.search(text.replace("12345678901.50", "")), text
    raw = mail.as_string()
    assert ACCOUNT not in raw and "62220212" not in raw.replace(" ", "")
    assert "9988776655443" not in raw  # the loan id's long digit run is masked too
    assert "Risk tier: high | Loan class: special_mention | Risk score: 640" in plain
    assert plain.index("dpd_30") < plain.index("card_new_country_at_night")  # critical first
    assert "<td>high</td>" in html and "<td>special_mention</td>" in html
    # the same outbox message always renders to the same email (retries are identical)
    assert notifier.build(message).as_bytes() == mail.as_bytes()


async def test_html_escapes_what_it_shows() -> None:
    clock = ManualClock(T0)
    service = memory_service(notifiers={}, clock=clock)
    await service.pipeline.submit(make_alert(title="<script>alert(1)</script>"))
    clock.advance(timedelta(minutes=1))
    await service.pipeline.flush()
    [message] = await service.outbox.claim(now_ms=10**15, lease_ms=1, owner="t", limit=5)
    _, html = parts(EmailNotifier(SMTP, recipients=("d@x",), base_url="http://h").build(message))
    assert "<script>" not in html and "&lt;script&gt;" in html


async def test_notifier_sends_with_starttls_and_login_from_settings() -> None:
    calls: list[dict[str, Any]] = []

    async def send(mail: EmailMessage, **kwargs: Any) -> tuple[dict[str, Any], str]:
        calls.append({"mail": mail, **kwargs})
        return {}, "250 OK"

    notifier = EmailNotifier(
        SMTP, recipients=SMTP.risk_desk, base_url="http://h", send=send, timeout=12
    )
    await notifier.notify(await digest_message())
    [call] = calls
    assert (call["hostname"], call["port"], call["start_tls"], call["use_tls"]) == (
        "mail.bank.example",
        2525,
        True,
        False,
    )
    assert (call["username"], call["password"], call["timeout"]) == ("cw", "s3cret", 12)


def test_email_channels_from_settings() -> None:
    channels = email_notifiers(SMTP, base_url="http://h", ops_recipients=("ops@bank.example",))
    assert sorted(channels) == ["ops", "risk_desk"]
    assert (
        sorted(email_notifiers(SMTP.model_copy(update={"risk_desk": ()}), base_url="http://h"))
        == []
    )
    with pytest.raises(ValueError, match="at least one recipient"):
        EmailNotifier(SMTP, recipients=(), base_url="http://h")


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (aiosmtplib.SMTPConnectError("refused"), True),
        (aiosmtplib.SMTPServerDisconnected("gone"), True),
        (aiosmtplib.SMTPReadTimeoutError("slow"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), True),
        (aiosmtplib.SMTPDataError(451, "try later"), True),
        (aiosmtplib.SMTPDataError(554, "rejected content"), False),
        (aiosmtplib.SMTPSenderRefused(553, "no", "creditwatch@x"), False),
        (aiosmtplib.SMTPSenderRefused(530, "must issue STARTTLS first", "creditwatch@x"), True),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@x")]),
            False,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(452, "full", "a@x")]),
            True,
        ),
    ],
)
def test_failures_are_classified(exc: BaseException, retryable: bool) -> None:
    assert classify(exc).retryable is retryable


async def test_ops_notice_email() -> None:
    notice = OutboxMessage(
        id="o-1",
        receiver="ops",
        kind="ops",
        created_ms=0,
        notice={"subject": "circuit breaker open: rule dpd_1", "lines": ["Rule dpd_1 ..."]},
    )
    mail = EmailNotifier(SMTP, recipients=("ops@x",), base_url="http://h").build(notice)
    assert mail["Subject"] == "[creditwatch] ops: circuit breaker open: rule dpd_1"
    plain, html = parts(mail)
    assert "Rule dpd_1" in plain and "Rule dpd_1" in html
