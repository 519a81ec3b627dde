"""A worker working off a backlog judges as replay does: the input topics aligned by event time.

Kafka hands each topic-partition over independently, so with a backlog one
topic runs weeks of event time ahead of another; without alignment a salary
was judged missing before the credit that paid it was read. Here a whole
book (transactions, servicing, loans, customers) is on the topics before the
worker starts, and its warnings must equal replay's, one for one.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from config.settings import Settings
from creditwatch.replay import run_replay
from creditwatch.simulate.book import BookConfig, generate_book
from streams.partitioning import partition_for
from streams.topic_admin import ensure_topics

if TYPE_CHECKING:
    from conftest import Deployment

pytestmark = pytest.mark.integration

PARTITIONS = 2


def backlog_book() -> list[dict[str, Any]]:
    """A simulated book without relations, closed by a servicing event per shard at the end.

    Relations are left out: an announcement between customers on different
    partitions reaches the other partition when that one has got to, which
    replay (one sequence for all) cannot reproduce. The closing events move
    every shard's servicing watermark to the instant replay ends at.
    """
    book = [
        e
        for e in generate_book(BookConfig(seed=23, customers=60, months=4))
        if e["type"] not in {"customer.linked", "customer.unlinked"}
    ]
    end = max(e["occurred_at"] for e in book)
    for shard in range(PARTITIONS):
        customer = next(
            f"Z{i}" for i in range(10_000) if partition_for(f"Z{i}", PARTITIONS) == shard
        )
        book.append(
            {
                "event_id": f"close-{shard}",
                "type": "installment.due",
                "customer_id": customer,
                "occurred_at": end,
                "loan_id": "LZ",
                "installment_no": 1,
                "due_date": end[:10],
                "amount_due": "1.00",
                "currency": "CNY",
            }
        )
    return book


def test_a_backlog_of_every_topic_gives_the_warnings_replay_gives(deployment: Deployment) -> None:
    dep = deployment
    events = backlog_book()
    path = dep.tmp / "book.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    replay_dir = dep.tmp / "replay"
    asyncio.run(run_replay(path, replay_dir, Settings(detectors={"enabled": False})))
    expected = [orjson.loads(x) for x in (replay_dir / "alerts.jsonl").read_bytes().splitlines()]
    codes = {a["code"] for a in expected}
    assert "salary_missing" in codes or "salary_late" in codes, codes  # the book exercises it

    topics = Settings(
        kafka={"bootstrap_servers": dep.stack.bootstrap, "topic_partitions": PARTITIONS},
        topics=dep.topics,
    )
    asyncio.run(ensure_topics(topics))
    dep.produce(events)  # all of it before the worker starts: a backlog
    _proc, port = dep.start_worker(CREDITWATCH_DETECTORS__ENABLED="false")
    alerts = dep.consume("risk_alerts", expect=len(expected), timeout=240, settle=5.0)

    key = lambda a: (a["alert_id"], a["code"], a["triggered_at"])  # noqa: E731
    only_worker = sorted(set(map(key, alerts)) - set(map(key, expected)))
    only_replay = sorted(set(map(key, expected)) - set(map(key, alerts)))
    assert not only_worker and not only_replay, {
        "only_worker": only_worker[:10],
        "only_replay": only_replay[:10],
    }
    assert len(alerts) == len(expected)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert "creditwatch_alignment_held_events" in metrics
    forced = [
        line
        for line in metrics.splitlines()
        if line.startswith("creditwatch_alignment_forced_releases_total{")
        and float(line.rsplit(" ", 1)[1]) > 0
    ]
    assert not forced, forced  # every event went in its turn: none was let go early
