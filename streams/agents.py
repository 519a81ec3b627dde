"""One Faust agent per input topic, each a thin loop around the shared processor.

Agents receive raw bytes (Faust's ``raw`` serializer) so that decoding and
validation happen exactly once, in :mod:`schemas.codec`, and an undecodable
message still reaches the dead-letter topic with its partition and offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from schemas.topics import INPUT_TOPICS, INTERNAL_TOPICS
from streams.runtime import WorkerRuntime


def _agent_for(
    app: faust.App, logical: str, topic_name: str, runtime: WorkerRuntime, *, internal: bool
) -> Any:
    topic = app.topic(
        topic_name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )

    async def consume(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            await runtime.handle(
                message.value,
                message.topic,
                message.partition,
                message.offset,
                internal=internal,
            )

    consume.__name__ = consume.__qualname__ = f"{logical}_agent"
    return app.agent(topic, name=f"creditwatch.{logical}")(consume)


def register_agents(app: faust.App, runtime: WorkerRuntime) -> dict[str, Callable[..., Any]]:
    """Register the agent of every input topic; returns them by logical topic name."""
    agents = {
        logical: _agent_for(app, logical, runtime.settings.topics[logical], runtime, internal=False)
        for logical in INPUT_TOPICS
    }
    for logical in INTERNAL_TOPICS:
        agents[logical] = _agent_for(
            app, logical, runtime.settings.topics[logical], runtime, internal=True
        )
    return agents
