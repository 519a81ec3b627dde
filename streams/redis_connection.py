"""The Redis client of every process: worker, replay with ``--redis`` and the admin commands.

Kept apart from the composition root so a command that makes a few Redis
calls does not load the detectors' numerical libraries to get a client.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.settings import RedisSettings


def redis_client(cfg: RedisSettings) -> Redis:
    """A Redis client that retries connection errors with backoff (outages are survived)."""
    options: dict[str, Any] = {
        "username": cfg.username,
        "password": cfg.password.get_secret_value() if cfg.password else None,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionError],
        "health_check_interval": 15,
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
    }
    if cfg.tls or cfg.url.startswith("rediss://"):
        options["ssl_ca_certs"] = cfg.tls_ca_certs
        if not cfg.url.startswith("rediss://"):
            options["ssl"] = True
    return Redis.from_url(cfg.url, **options)
