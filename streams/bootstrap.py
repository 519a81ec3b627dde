"""The composition root: builds every client and service of a worker, once, at start.

Nothing else in the code base creates a Redis client, a Kafka client, a
metrics registry or reads the environment; they are built here from the
settings and handed in, which is what lets tests build a worker with their
own ports and prefixes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from typing import Any

import faust
from redis.asyncio import Redis

from config.settings import Settings
from creditwatch.metrics import Metrics
from risk.processor import Processor
from risk.redis_store import RedisStateStore
from schemas.topics import INPUT_TOPICS, INTERNAL_TOPICS
from streams import gauges
from streams.agents import register_agents
from streams.alert_delivery import register_alert_delivery
from streams.alerts_api import register_alerts_api
from streams.judging import build_judge_services
from streams.kafka_options import aiokafka_options, faust_credentials
from streams.partitioning import partition_for
from streams.redis_connection import redis_client
from streams.runtime import RETRYABLE, WorkerRuntime
from streams.topic_admin import ensure_topics
from streams.web import register_views

log = logging.getLogger(__name__)

STALL_REPORT_SECONDS = 3600.0
"""After how long Faust reports a topic-partition with no progress (its default: 300 s)."""


def redis_store(settings: Settings, redis: Redis) -> RedisStateStore:
    return RedisStateStore(
        redis,
        prefix=settings.redis.key_prefix,
        marker_ttl_seconds=settings.redis.dead_letter_marker_ttl_days * 86400,
        expire_inactive_seconds=settings.features.expire_inactive_days * 86400,
    )


def build_worker(settings: Settings) -> tuple[faust.App, WorkerRuntime]:
    """Wire a Faust app and the runtime its agents share."""
    metrics = Metrics()
    redis = redis_client(settings.redis)
    store = redis_store(settings, redis)
    partitions = settings.kafka.topic_partitions

    @functools.lru_cache(maxsize=65536)
    def shard_of(customer_id: str) -> int:
        return partition_for(customer_id, partitions)  # murmur2 in Python: worth caching

    judging = build_judge_services(settings, redis, metrics)
    processor = Processor(
        judging.judge,  # the engine with the rule set and the detectors, as in replay
        store,
        metrics=metrics,
        shard_of=shard_of,
        transient=RETRYABLE,
        remember_events=settings.redis.dedup_events_per_customer,
    )
    runtime = WorkerRuntime(
        settings=settings,
        redis=redis,
        store=store,
        processor=processor,
        metrics=metrics,
        kafka_options=aiokafka_options(settings.kafka),
        judging=judging,
    )
    app = faust.App(
        settings.app_id,
        broker=settings.kafka.broker_url,
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",
        datadir=settings.data_dir,
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_seconds,
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_in_thread=False,
        producer_acks=-1,
        broker_session_timeout=settings.kafka.session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_seconds,
        consumer_max_fetch_size=settings.kafka.max_partition_fetch_bytes,
        # An input topic-partition running ahead in event time is paused while the
        # others catch up (streams/alignment.py): through a long backlog that can
        # be many minutes, and is not a stalled stream. The worker's own consumer
        # lag gauge and alerting rules watch progress instead.
        stream_processing_timeout=STALL_REPORT_SECONDS,
        broker_commit_livelock_soft_timeout=STALL_REPORT_SECONDS,
    )
    register_agents(app, runtime)
    register_views(app, runtime)

    # -- alert delivery: the published warnings to the risk desk, and its HTTP API --
    register_alerts_api(app, settings.api, register_alert_delivery(app, runtime))
    # -- end of alert delivery --

    @app.task
    async def start_judging() -> None:
        """Restore the detector models and read the rules topic before the first event."""
        await judging.start()

    @app.timer(settings.dpd_tick_seconds)
    async def dpd_tick() -> None:
        """Advance DPD with event time between events (the daily schedule)."""
        fired = await runtime.tick()
        if fired:
            log.info("DPD tick raised %d warnings", fired)

    @app.timer(5.0)
    async def outbox_gauge() -> None:
        await runtime.outbox_depth()

    # -- periodic gauges: consumer lag per partition, loan book by tier and class --
    @app.timer(gauges.REFRESH_SECONDS)
    async def refresh_gauges() -> None:
        await gauges.refresh(metrics, app.consumer, store, settings.topics)

    # Outbox shards follow the partitions of the topics the agents read. Faust's
    # own topics (e.g. the assignor's one-partition leader topic, held by one
    # worker of the group) do not count: their partition 0 is not shard 0.
    consumed = {settings.topics[t] for t in (*INPUT_TOPICS, *INTERNAL_TOPICS)}

    def shards(tps: Iterable[Any]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic in consumed}

    async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
        await runtime.on_assigned(shards(assigned))  # the whole new assignment

    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        await runtime.on_assigned(runtime.assigned - shards(revoked))

    async def on_shutdown(sender: Any, **_: Any) -> None:
        # Sent once the consumer has stopped and every taken event is acknowledged:
        # the models saved here have learned from the last event.
        await judging.stop()
        await runtime.drain_outbox()
        await runtime.stop()

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)
    app.on_before_shutdown.connect(on_shutdown)
    return app, runtime


async def _ensure_topics_with_retry(settings: Settings, timeout: float = 300.0) -> list[str]:
    """Kafka may still be starting (or briefly down): keep trying, then fail clearly."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    backoff = 0.5
    while True:
        try:
            return await ensure_topics(settings)
        except Exception as exc:  # retried until the deadline, then re-raised
            if loop.time() + backoff > deadline:
                raise
            log.warning("Kafka not reachable yet (%s); retrying in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


def run_worker(settings: Settings) -> int:
    """Create the topics, then run the worker until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    created = asyncio.run(_ensure_topics_with_retry(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    app, _runtime = build_worker(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
