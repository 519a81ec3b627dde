"""Creates the service's topics with the configured partition counts.

Creation is idempotent: an existing topic is left as it is (its partition
count is reported if it differs, never silently changed, because changing it
would move customers between partitions).
"""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from config.settings import Settings
from schemas.topics import COMPACTED_TOPICS
from streams.kafka_options import aiokafka_options
from streams.outbox import position_topic

log = logging.getLogger(__name__)


def planned_topics(settings: Settings) -> list[NewTopic]:
    """Every topic the service needs, with partitions and cleanup policy."""
    topics = []
    for logical, name in settings.topics.items():
        configs = {"cleanup.policy": "compact"} if logical in COMPACTED_TOPICS else {}
        partitions = 1 if logical == "rules" else settings.kafka.topic_partitions
        topics.append(
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=settings.kafka.replication_factor,
                topic_configs=configs,
            )
        )
    topics.append(
        NewTopic(
            name=position_topic(settings.app_id),
            num_partitions=1,
            replication_factor=settings.kafka.replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
    )
    return topics


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = planned_topics(settings)
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            await admin.create_topics(missing)
        described = await admin.describe_topics([t.name for t in wanted if t.name in existing])
        for info in described:
            name = info.get("topic")
            count = len(info.get("partitions", []))
            plan = next(t for t in wanted if t.name == name)
            if count and count != plan.num_partitions:
                log.warning(
                    "topic %s has %d partitions, settings ask for %d: left unchanged",
                    name,
                    count,
                    plan.num_partitions,
                )
        return [t.name for t in missing]
    finally:
        await admin.close()
