"""Email to the risk desk (and to operations) over SMTP with aiosmtplib.

One message per outbox entry: a group's digest, or an ops notice, as
``multipart/alternative`` with a plain-text and an HTML part. The
``Message-ID`` is derived from the outbox id and the ``Date`` from when the
digest was made, so a retried message is byte for byte the same message and
a copy sent again after a crash is recognisable.

Connection security and credentials come from ``config.settings.SmtpSettings``
(STARTTLS when ``starttls`` is set, login when ``username`` is). Failures are
classified for the outbox: anything about the relay (refused connection,
timeout, TLS, login, a 4xx answer, a 530 "STARTTLS or login first") is
retryable and the message waits; a 5xx refusal of the sender, the recipients
or the content is not (retrying the same message cannot change the answer)
and the message is parked as dead.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from alerts.clock import from_ms
from alerts.outbox import NotifyError, OutboxMessage
from alerts.render import RenderedMessage, render_digest, render_notice
from config.settings import SmtpSettings

__all__ = ["EmailNotifier", "classify"]

log = logging.getLogger(__name__)

SendFn = Callable[..., Awaitable[Any]]

RELAY_CONFIG_CODES = frozenset({530, 534, 535, 538})


def classify(exc: BaseException) -> NotifyError:
    """The outbox's view of an SMTP failure: retryable or not, with a short reason."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        retry = any(400 <= c < 500 for c in codes)
        return NotifyError(f"all recipients refused: {codes}", retryable=retry)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPDataError):
        # 530/534/535/538 ask for TLS or a login: the relay's configuration, not the message
        retry = exc.code < 500 or exc.code in RELAY_CONFIG_CODES
        return NotifyError(f"{type(exc).__name__} {exc.code}: {exc.message}", retryable=retry)
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # HELO, AUTH, ...: the relay
        return NotifyError(f"{type(exc).__name__} {exc.code}: {exc.message}", retryable=True)
    return NotifyError(f"{type(exc).__name__}: {exc}", retryable=True)


class EmailNotifier:
    """Sends outbox messages to a fixed list of addresses."""

    def __init__(
        self,
        smtp: SmtpSettings,
        *,
        recipients: Sequence[str],
        base_url: str,
        subject_prefix: str = "[creditwatch]",
        timeout: float = 30.0,
        use_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        send: SendFn = aiosmtplib.send,
    ) -> None:
        if not recipients:
            raise ValueError("an email channel needs at least one recipient")
        if use_tls and smtp.starttls:
            raise ValueError("use either implicit TLS or STARTTLS, not both")
        self.smtp = smtp
        self.recipients = tuple(recipients)
        self.base_url = base_url.rstrip("/")
        self.subject_prefix = subject_prefix
        self.timeout = timeout
        self.use_tls = use_tls
        self.tls_context = tls_context
        self._send = send
        domain = smtp.sender.rpartition("@")[2].strip(">") or "creditwatch.local"
        self.domain = domain

    def render(self, message: OutboxMessage) -> RenderedMessage:
        if message.kind == "ops":
            return render_notice(message, prefix=self.subject_prefix)
        return render_digest(message, base_url=self.base_url, prefix=self.subject_prefix)

    def build(self, message: OutboxMessage) -> EmailMessage:
        """The email of one outbox message (deterministic: same message, same bytes)."""
        rendered = self.render(message)
        mail = EmailMessage()
        mail["From"] = self.smtp.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Subject"] = rendered.subject
        mail["Date"] = format_datetime(from_ms(message.created_ms))
        mail["Message-ID"] = f"<{message.id}.{message.receiver}@{self.domain}>"
        mail["Auto-Submitted"] = "auto-generated"
        mail["X-Creditwatch-Kind"] = message.kind
        mail.set_content(rendered.text)
        mail.add_alternative(rendered.html, subtype="html")
        mail.set_boundary(f"=={message.id}==")  # not random: a retry is the same bytes
        return mail

    async def notify(self, message: OutboxMessage) -> None:
        try:
            mail = self.build(message)
        except Exception as exc:  # a message that cannot be rendered will not render later
            raise NotifyError(
                f"cannot render: {type(exc).__name__}: {exc}", retryable=False
            ) from exc
        password = self.smtp.password.get_secret_value() if self.smtp.password else None
        try:
            errors, _ = await self._send(
                mail,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username,
                password=password,
                start_tls=self.smtp.starttls,
                use_tls=self.use_tls,
                tls_context=self.tls_context,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:  # OSError: refused, timeout, TLS
            raise classify(exc) from exc
        if errors:
            log.warning(
                "alert email %s: %d recipient(s) refused: %s",
                message.id,
                len(errors),
                {addr: r.code for addr, r in errors.items()},
            )
