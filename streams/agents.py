"""One Faust agent over every input topic (and one for the related-party topic), in batches.

Agents receive raw bytes (Faust's ``raw`` serializer) so that decoding and
validation happen exactly once, in :mod:`schemas.codec`, and an undecodable
message still reaches the dead-letter topic with its partition and offset.

Why batches: one event at a time paid its own Redis round trips and its own
trip through the event loop, which capped a worker at a few hundred events per
second. An agent takes what has arrived, up to ``BATCH_MAX`` events or what
came within ``BATCH_WITHIN`` seconds, and the processor loads and commits the
whole batch in one round trip each way.

Why one agent for all input topics: with an agent per topic, each agent's
``within`` window ran while the others held the event loop with their own
batches, so batches stayed small (under 30 events on average with a backlog)
and every batch paid its round trips and locks for little. One agent fills
its batch from whichever topics have events, and the processor can apply a
customer's events of a batch in event-time order whatever topic each came on.

Event-time alignment: batches go through an :class:`AlignedGate`, which holds
the events of a topic running ahead in event time until the other topics of
the same partition number have caught up (see :mod:`streams.alignment`), so a
worker working off a backlog judges each customer's events in the order
``creditwatch replay`` does. A live worker holds nothing. The gate applies
and acknowledges; ``CREDITWATCH_ALIGNMENT__ENABLED=false`` applies each batch
as it comes.

Exactly once: the stream is read with :meth:`faust.Stream.noack_take`, which
never acknowledges by itself. An agent acknowledges a batch's events only after
:meth:`WorkerRuntime.handle_batch` returned, i.e. once their state changes and
outputs are in Redis; Faust commits only acknowledged offsets (the highest
contiguous run per partition). :meth:`faust.Stream.take_events` is not used:
it acknowledges in a ``finally``, so a batch interrupted by cancellation or an
error would be acknowledged without having been written. A crash or SIGKILL
between the Redis write and the offset commit redelivers the batch, and the
event digests kept in each customer's state recognise it.

Rebalances and shutdown: Faust stops delivering, drops what is still queued,
and waits (``stream_wait_empty``) until every event an agent has taken is
acknowledged before it commits and hands partitions over; a batch in hand is
finished first, and the gate lets everything it holds go as soon as it sees
the flow suspended, so two workers never process a partition at the same time
while the group is healthy.

Errors: outages of Redis are retried by the runtime until they pass. Any other
exception reaching the agent is a defect: the worker stops (a supervisor
restarts it) without acknowledging the failed batch or anything after it, so
no event is skipped; restarting only this agent would go on acknowledging
later offsets, and Faust could then commit past the failed batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from mode import CrashingSupervisor

from schemas.topics import INPUT_TOPICS, INTERNAL_TOPICS
from streams.aligned_gate import AlignedGate
from streams.runtime import WorkerRuntime

log = logging.getLogger(__name__)

BATCH_MAX = 2000
"""Most events one batch holds (bounds the time a batch keeps its customers locked)."""

BATCH_WITHIN = 0.02
"""Seconds a partly filled batch waits for more events: added latency at low load."""


def _topic(app: faust.App, topic_names: list[str]) -> Any:
    return app.topic(
        *topic_names,
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
    )


def _failed(name: str, size: int) -> None:
    log.critical(
        "%s: a batch of %d events failed; stopping the worker without "
        "acknowledging it (it is redelivered on restart)",
        name,
        size,
        exc_info=True,
    )


def _agent_for(
    app: faust.App, name: str, topic_names: list[str], runtime: WorkerRuntime, *, internal: bool
) -> Any:
    """An agent applying each batch as it comes (alignment switched off)."""

    async def consume(stream: faust.StreamT[bytes]) -> None:
        batches = stream.noack_take(BATCH_MAX, within=BATCH_WITHIN)
        async for events in batches:
            try:
                await runtime.handle_batch(
                    [
                        (m.value, m.topic, m.partition, m.offset)
                        for m in (e.message for e in events)
                    ],
                    internal=internal,
                )
            except Exception:
                _failed(name, len(events))
                _forget_unacked(app, set(topic_names))
                raise
            for event in events:  # only now: the batch is durable in Redis
                await stream.ack(event)

    consume.__name__ = consume.__qualname__ = f"{name}_agent"
    return app.agent(
        _topic(app, topic_names), name=f"creditwatch.{name}", supervisor_strategy=CrashingSupervisor
    )(consume)


def _gated_agent_for(
    app: faust.App, name: str, topic_names: list[str], gate: AlignedGate, *, internal: bool
) -> Any:
    """An agent handing its batches to the event-time gate (which applies and acknowledges)."""

    async def consume(stream: faust.StreamT[bytes]) -> None:
        try:
            async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
                try:
                    await gate.take(stream, events, internal=internal)
                except Exception:
                    _failed(name, len(events) + gate.aligner.held)
                    gate.forget_unacked()
                    raise
        finally:
            gate.stop()

    consume.__name__ = consume.__qualname__ = f"{name}_agent"
    return app.agent(
        _topic(app, topic_names), name=f"creditwatch.{name}", supervisor_strategy=CrashingSupervisor
    )(consume)


def _forget_unacked(app: faust.App, topic_names: set[str]) -> None:
    """Stop Faust from waiting, at shutdown, for events of a failed agent.

    They are left unacknowledged, so their offsets are not committed; but the
    shutdown would otherwise wait for their acknowledgement forever.
    """
    unacked = app.consumer.unacked
    for message in [m for m in unacked if m.topic in topic_names]:
        unacked.discard(message)


def register_agents(app: faust.App, runtime: WorkerRuntime) -> dict[str, Callable[..., Any]]:
    """Register the input agent (every input topic) and the related-party topic's agent.

    Returns them by name: ``inputs``, and the logical name of each internal topic.
    With alignment on (the default) both feed one :class:`AlignedGate`.
    """
    topics = runtime.settings.topics
    inputs = [topics[t] for t in INPUT_TOPICS]
    if not runtime.settings.alignment.enabled:
        agents = {"inputs": _agent_for(app, "inputs", inputs, runtime, internal=False)}
        for logical in INTERNAL_TOPICS:
            agents[logical] = _agent_for(app, logical, [topics[logical]], runtime, internal=True)
        return agents
    gate = AlignedGate(app, runtime, inputs)
    agents = {"inputs": _gated_agent_for(app, "inputs", inputs, gate, internal=False)}
    for logical in INTERNAL_TOPICS:
        agents[logical] = _gated_agent_for(app, logical, [topics[logical]], gate, internal=True)
    return agents
