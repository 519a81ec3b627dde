"""Publishing a synthetic book to the input topics, as a real producer would.

Why these producer settings: the contract keys every message by
``customer_id`` so one customer's events stay on one partition and in order;
``enable_idempotence`` with ``acks="all"`` keeps that order and avoids
duplicates even when the client retries; a short ``linger_ms`` batches the
stream without delaying small runs. Secrets come out of ``SecretStr`` only
when handed to the client and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from config.settings import KafkaSettings, Settings
from creditwatch.simulate.book import dumps_event
from schemas.topics import TOPIC_BY_EVENT_TYPE

__all__ = ["producer_options", "publish_events", "topic_for"]

log = logging.getLogger(__name__)

BATCH = 2_000
"""How many ``send()`` futures are outstanding before they are awaited together."""


def producer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``, including SASL and TLS.

    Kept separate from ``publish_events`` so the security wiring can be
    checked without a broker.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": "creditwatch-simulate",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "compression_type": None,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile,
            certfile=kafka.ssl_certfile,
            keyfile=kafka.ssl_keyfile,
        )
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


def topic_for(event: Mapping[str, Any], topics: Mapping[str, str]) -> str:
    """The real topic name for an event: type → logical topic → configured name."""
    return topics[TOPIC_BY_EVENT_TYPE[event["type"]]]


async def publish_events(
    events: Iterable[dict[str, Any]],
    settings: Settings,
    *,
    topics: dict[str, str] | None = None,
    batch: int = BATCH,
) -> int:
    """Send events, in the given order, to their input topics; returns how many were sent.

    ``topics`` overrides ``settings.topics`` (logical name → real name) for
    the names it gives. Futures are gathered every ``batch`` sends so a large
    book neither waits per message nor holds every future in memory; any
    delivery error surfaces as the exception of that gather.
    """
    names = {**settings.topics, **(topics or {})}
    producer = AIOKafkaProducer(**producer_options(settings.kafka))
    log.info(
        "publishing to %s (%s)", settings.kafka.bootstrap_servers, settings.kafka.security_protocol
    )
    sent = 0
    try:
        await producer.start()  # inside the try: a failed start must still close the client
        pending: list[asyncio.Future[Any]] = []
        for event in events:
            pending.append(
                await producer.send(
                    topic_for(event, names),
                    value=dumps_event(event),
                    key=str(event["customer_id"]).encode("utf-8"),
                )
            )
            sent += 1
            if len(pending) >= batch:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    log.info("published %d events", sent)
    return sent
