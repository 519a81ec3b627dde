"""Builds the alert path for a worker (Redis, SMTP) or for replay and tests (memory).

The composition root (``streams/bootstrap.py``, ``creditwatch replay``) calls
one of these; nothing here runs at import time and no client is created
here: the Redis client, the settings and the clock are handed in.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from redis.asyncio import Redis

from alerts.breaker import CircuitBreaker, MemoryBreakerStore
from alerts.clock import Clock, SystemClock
from alerts.config import AlertConfig
from alerts.index import AlertIndex, MemoryAlertIndex, RedisAlertIndex
from alerts.mail import EmailNotifier
from alerts.outbox import Deliverer, MemoryOutbox, Notifier, OutboxStore
from alerts.pipeline import AlertPipeline
from alerts.redis_store import RedisAlertState, RedisBreakerStore, RedisOutbox, RedisSilenceStore
from alerts.silences import MemorySilenceStore, Silences
from alerts.state import MemoryAlertState
from config.settings import SmtpSettings

__all__ = ["AlertService", "email_notifiers", "memory_service", "redis_service"]


@dataclass(frozen=True)
class AlertService:
    """The pieces a worker runs and the CLI/API drive."""

    pipeline: AlertPipeline
    deliverer: Deliverer
    silences: Silences
    breaker: CircuitBreaker
    outbox: OutboxStore
    index: AlertIndex = field(default_factory=MemoryAlertIndex)
    """The warnings people list, acknowledge and resolve (``alerts.index``)."""


def default_owner() -> str:
    """A name for this process's outbox leases (host and pid: unique among workers)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def email_notifiers(
    smtp: SmtpSettings,
    *,
    base_url: str,
    ops_recipients: Sequence[str] = (),
    timeout: float = 30.0,
    use_tls: bool = False,
    tls_context: ssl.SSLContext | None = None,
    subject_prefix: str = "[creditwatch]",
) -> dict[str, Notifier]:
    """The email channels: ``risk_desk`` to ``smtp.risk_desk``, ``ops`` to ``ops_recipients``.

    A receiver with no addresses gets no channel; its messages are parked as
    dead (not lost) and the outbox says why.
    """
    out: dict[str, Notifier] = {}
    for receiver, recipients in (("risk_desk", smtp.risk_desk), ("ops", tuple(ops_recipients))):
        if recipients:
            out[receiver] = EmailNotifier(
                smtp,
                recipients=recipients,
                base_url=base_url,
                subject_prefix=subject_prefix,
                timeout=timeout,
                use_tls=use_tls,
                tls_context=tls_context,
            )
    return out


def redis_service(
    redis: Redis,
    *,
    prefix: str,
    notifiers: Mapping[str, Notifier],
    config: AlertConfig | None = None,
    clock: Clock | None = None,
    owner: str | None = None,
    population: Callable[[], Awaitable[int | None]] | None = None,
    index_retention: timedelta = timedelta(days=30),
    index_max_entries: int = 200_000,
) -> AlertService:
    """The worker's alert path: all state in Redis under ``{prefix}:al:``."""
    config = config or AlertConfig()
    clock = clock or SystemClock()
    outbox = RedisOutbox(redis, prefix=prefix)
    silences = Silences(RedisSilenceStore(redis, prefix=prefix), clock)
    breaker = CircuitBreaker(
        RedisBreakerStore(redis, prefix=prefix), config.breaker, clock, population=population
    )
    pipeline = AlertPipeline(
        config=config,
        state=RedisAlertState(redis, prefix=prefix),
        silences=silences,
        breaker=breaker,
        outbox=outbox,
        clock=clock,
    )
    deliverer = Deliverer(
        outbox=outbox,
        notifiers=notifiers,
        clock=clock,
        config=config.delivery,
        owner=owner or default_owner(),
    )
    index = RedisAlertIndex(
        redis, prefix=prefix, retention=index_retention, max_entries=index_max_entries
    )
    return AlertService(pipeline, deliverer, silences, breaker, outbox, index)


def memory_service(
    *,
    notifiers: Mapping[str, Notifier],
    config: AlertConfig | None = None,
    clock: Clock | None = None,
    population: Callable[[], Awaitable[int | None]] | None = None,
) -> AlertService:
    """The same path in memory: replay and unit tests."""
    config = config or AlertConfig()
    clock = clock or SystemClock()
    outbox = MemoryOutbox()
    silences = Silences(MemorySilenceStore(), clock)
    breaker = CircuitBreaker(MemoryBreakerStore(), config.breaker, clock, population=population)
    pipeline = AlertPipeline(
        config=config,
        state=MemoryAlertState(outbox),
        silences=silences,
        breaker=breaker,
        outbox=outbox,
        clock=clock,
    )
    deliverer = Deliverer(
        outbox=outbox, notifiers=notifiers, clock=clock, config=config.delivery, owner="memory"
    )
    return AlertService(pipeline, deliverer, silences, breaker, outbox)
