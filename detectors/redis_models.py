"""The stack's shared models in Redis: restored at start, saved periodically and at shutdown.

Per-customer models travel inside each customer's state; what is shared by
all customers a worker serves (the population trees per segment, the default
model, the adaptive thresholds: the blobs of :meth:`detectors.stack.Stack.save`)
lives under the service's key prefix ``{p}``:

``{p}:dm:{name}``  string: one version-headed blob (:mod:`detectors.persistence`),
                   ``name`` a shared detector of the registry or ``thresholds``
``{p}:dm:meta``    hash, ``name`` -> ``version|saved at (Unix s)|writer``: what is
                   there, for people (restoring reads only the blobs)

**Restore at start** (:func:`restore`): every blob is checked against the
version the running code expects (detector code version + a hash of its
parameters, and the river/Python runtime). A blob of another version, a
corrupt one or a missing one gives that model a fresh start (it warms up
again, the thresholds flag nothing until they have seen enough scores);
nothing raises (:func:`detectors.persistence.loads`).

**Several workers** each learn the shared models from the customers of their
own partitions. The policy is *last writer wins, per save*: a worker writes
all its blobs and the meta in one ``MULTI``/``EXEC`` transaction, so what is
stored is always one worker's consistent set (models and thresholds from the
same moment), and a worker that starts, or takes partitions over, restores
the most recent set any worker saved. What a worker learned after its last
save is lost if it dies (at most one ``interval`` of learning from its
partitions): the models are online and forgetful by design (windows of
mass, running quantiles), so they recover by learning on. Merging several
workers' models is not attempted: half-space tree masses and running
quantiles do not add up into what they are.

**Saving** is :func:`save_periodically` in the background (a failed save is
logged and retried at the next interval: Redis being away must not stop the
processing) and :func:`save_now` at shutdown, after the last event. The
snapshot itself (pickling) is taken synchronously, between two events, so it
is consistent; only the write is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from detectors.registry import REGISTRY, Spec
from detectors.stack import THRESHOLDS_VERSION, Stack

log = logging.getLogger(__name__)

THRESHOLDS = "thresholds"


def model_key(prefix: str, name: str) -> str:
    """``{prefix}:dm:{name}``: where one shared model's blob is kept.

    >>> model_key("cw", "population_anomaly")
    'cw:dm:population_anomaly'
    """
    return f"{prefix}:dm:{name}"


def meta_key(prefix: str) -> str:
    return f"{prefix}:dm:meta"


def shared_names(specs: Mapping[str, Spec] = REGISTRY) -> list[str]:
    """The blobs a stack saves: its shared detectors, then the thresholds."""
    return [name for name, spec in specs.items() if spec.kind == "shared"] + [THRESHOLDS]


async def load_blobs(
    redis: Redis, prefix: str, specs: Mapping[str, Spec] = REGISTRY
) -> dict[str, bytes | None]:
    """The stored blob of every shared model (None where there is none)."""
    names = shared_names(specs)
    values = await redis.mget([model_key(prefix, name) for name in names])
    return {
        name: value if isinstance(value, bytes) else None
        for name, value in zip(names, values, strict=True)
    }


async def restore(
    redis: Redis, prefix: str, *, specs: Mapping[str, Spec] = REGISTRY, **options: Any
) -> Stack:
    """A stack with the saved shared models; any of another version starts fresh.

    ``options`` go to the :class:`~detectors.stack.Stack` constructor.
    """
    blobs = await load_blobs(redis, prefix, specs)
    stack = Stack.restore(blobs, specs=specs, **options)
    fresh = [name for name in shared_names(specs) if name not in stack.restored]
    log.info(
        "detector models restored from %s: %s; starting fresh: %s",
        model_key(prefix, "*"),
        ", ".join(stack.restored) or "none",
        ", ".join(fresh) or "none",
    )
    return stack


async def save_now(redis: Redis, prefix: str, stack: Stack, *, writer: str = "") -> int:
    """Write every shared model and the thresholds in one transaction; the bytes written."""
    blobs = stack.save()  # synchronous: a consistent snapshot between two events
    now = int(time.time())
    versions = {name: _version(stack, name) for name in blobs}
    async with redis.pipeline(transaction=True) as pipe:
        for name, blob in blobs.items():
            pipe.set(model_key(prefix, name), blob)
        pipe.hset(
            meta_key(prefix),
            mapping={name: f"{versions[name]}|{now}|{writer}" for name in blobs},
        )
        await pipe.execute()
    return sum(len(b) for b in blobs.values())


def _version(stack: Stack, name: str) -> str:
    return THRESHOLDS_VERSION if name == THRESHOLDS else stack.specs[name].version


async def save_periodically(
    redis: Redis,
    prefix: str,
    stack: Stack,
    interval: float,
    stop_event: asyncio.Event,
    *,
    writer: str = "",
) -> None:
    """Save every ``interval`` seconds until ``stop_event`` is set.

    A save that fails (Redis away, a timeout) is logged and tried again at the
    next interval; it never ends the loop. The loop saves nothing on its way
    out: call :func:`save_now` at shutdown, once the last event is processed.
    """
    while not stop_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=interval)
        if stop_event.is_set():
            return
        try:
            size = await save_now(redis, prefix, stack, writer=writer)
        except (RedisError, OSError) as exc:
            log.warning("saving the detector models failed (%r): retrying in %.0fs", exc, interval)
        else:
            log.debug("detector models saved to %s (%d bytes)", prefix, size)
