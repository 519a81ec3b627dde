"""A real SMTP server on loopback (aiosmtpd) that keeps what it accepted, for the email tests."""

from __future__ import annotations

import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.integration.conftest import free_port


class Inbox:
    """aiosmtpd handler: keeps every message it accepted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.received.append(parsed)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def mails(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.received)

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.mails()]

    def about(self, customer: str) -> list[EmailMessage]:
        return [m for m in self.mails() if f"customer {customer}:" in str(m["Subject"])]


class SmtpServer:
    """One aiosmtpd server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, inbox: Inbox | None = None, **smtp_kwargs: Any) -> None:
        self.inbox = inbox if inbox is not None else Inbox()
        self.port = free_port()
        self.kwargs = smtp_kwargs
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, **self.kwargs
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
