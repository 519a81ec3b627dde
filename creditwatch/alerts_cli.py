"""``creditwatch alerts show``: the early warnings on the alerts topic, for a person.

It reads ``credit.risk-alerts.v1`` from the beginning with
``isolation.level=read_committed`` (the worker publishes in transactions) and
stops when the topic has been read to its end.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from schemas.topics import RISK_ALERTS
from streams.kafka_options import aiokafka_options


async def read_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every committed warning currently on the alerts topic."""
    topic = settings.topics[RISK_ALERTS]
    consumer = AIOKafkaConsumer(
        isolation_level="read_committed",
        enable_auto_commit=False,
        **aiokafka_options(settings.kafka),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        alerts: list[dict[str, Any]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=1000)
            for records in batch.values():
                alerts.extend(orjson.loads(r.value) for r in records)
        alerts.sort(key=lambda a: (a["triggered_at"], a["alert_id"]))
        return alerts
    finally:
        await consumer.stop()


async def show(settings: Settings, *, limit: int, as_json: bool) -> int:
    alerts = await read_alerts(settings)
    console = Console(width=max(Console().width, 150))
    if as_json:
        for alert in alerts[-limit:]:
            console.print_json(orjson.dumps(alert).decode())
        return 0
    by_code = Counter((a["code"], a["severity"]) for a in alerts)
    summary = Table(title=f"{len(alerts)} early warnings on {settings.topics[RISK_ALERTS]}")
    for col in ("code", "severity", "count"):
        summary.add_column(col)
    for (code, severity), n in sorted(by_code.items()):
        summary.add_row(code, severity, str(n))
    console.print(summary)
    latest = Table(title=f"latest {min(limit, len(alerts))}")
    for col in ("triggered at", "customer", "loan", "severity", "title", "score", "tier"):
        latest.add_column(col)
    for a in alerts[-limit:]:
        latest.add_row(
            a["triggered_at"],
            a["customer_id"],
            a.get("loan_id") or "-",
            a["severity"],
            a["title"],
            str(a["risk_score"]),
            a["risk_tier"],
        )
    console.print(latest)
    return 0
