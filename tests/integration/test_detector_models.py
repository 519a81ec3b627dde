"""The shared detector models in the real Redis the test session starts.

Each test uses its own key prefix. The stacks are trained on a small seeded
book through the real engine, so the models saved are the ones the worker
would have.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from creditwatch.evaluate import ordered, score_stream
from creditwatch.simulate.book import BookConfig, generate_book
from detectors import redis_models
from detectors.registry import REGISTRY
from detectors.stack import Stack
from risk.engine import Engine
from schemas.codec import decode_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events() -> list[Any]:
    book = generate_book(BookConfig(seed=11, customers=40, months=4))
    return ordered(decode_event(orjson.dumps(e)) for e in book)


@pytest.fixture
async def redis(stack: Any) -> Any:
    client = Redis.from_url(stack.redis_url)
    yield client
    await client.aclose()


def prefix() -> str:
    return f"dmt{uuid.uuid4().hex[:8]}"


def train(events: list[Any], stack: Stack | None = None) -> Stack:
    stack = stack if stack is not None else Stack()
    for _ in score_stream(events, Engine(Settings()), stack):
        pass
    return stack


def scores(events: list[Any], stack: Stack) -> list[tuple[str, str, float, bool]]:
    return [
        (event.event_id, f.detector, f.score, f.flagged)
        for event, findings in score_stream(events, Engine(Settings()), stack)
        for f in findings
        if f.detector in ("population_anomaly", "default_probability")
    ]


async def test_saved_models_come_back_and_score_as_the_originals(
    redis: Redis, events: list[Any]
) -> None:
    p = prefix()
    cut = len(events) * 3 // 4
    trained = train(events[:cut])
    assert trained.shared["population_anomaly"].models  # type: ignore[attr-defined]
    written = await redis_models.save_now(redis, p, trained, writer="w1")
    assert written > 1000

    keys = sorted(k.decode() for k in await redis.keys(f"{p}:*"))
    assert keys == sorted(
        [redis_models.meta_key(p)]
        + [redis_models.model_key(p, n) for n in redis_models.shared_names()]
    )
    meta = {
        k.decode(): v.decode() for k, v in (await redis.hgetall(redis_models.meta_key(p))).items()
    }
    assert meta["population_anomaly"].startswith(REGISTRY["population_anomaly"].version + "|")
    assert meta["thresholds"].endswith("|w1")

    restored = await redis_models.restore(redis, p)
    assert sorted(restored.restored) == sorted(redis_models.shared_names())
    # the rest of the stream: a fresh customer store on both sides, same shared models
    rest = events[cut:]
    assert scores(rest, restored) == scores(rest, trained)


async def test_a_changed_model_version_starts_fresh_and_the_rest_is_kept(
    redis: Redis, events: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    p = prefix()
    trained = train(events)
    await redis_models.save_now(redis, p, trained)
    changed = {
        **REGISTRY,
        "population_anomaly": REGISTRY["population_anomaly"].with_params(height=5),
    }
    with caplog.at_level(logging.WARNING):
        restored = await redis_models.restore(redis, p, specs=changed)
    assert "version changed" in caplog.text
    assert restored.restored == ["default_probability", "thresholds"]
    assert restored.shared["population_anomaly"].models == {}  # type: ignore[attr-defined]
    assert restored.shared["population_anomaly"].height == 5  # type: ignore[attr-defined]
    pd_before = trained.shared["default_probability"]
    pd_after = restored.shared["default_probability"]
    assert pd_after.labels == pd_before.labels > 0  # type: ignore[attr-defined]
    # and it runs: the fresh trees warm up again without a hitch
    train(events[:500], restored)
    assert restored.shared["population_anomaly"].models  # type: ignore[attr-defined]


async def test_garbage_or_nothing_in_redis_is_a_fresh_start(redis: Redis) -> None:
    p = prefix()
    empty = await redis_models.restore(redis, p)
    assert empty.restored == []
    await redis.set(redis_models.model_key(p, "population_anomaly"), b"\x80\x04 not a model")
    await redis.set(redis_models.model_key(p, "thresholds"), b"CWDM1\n{broken")
    await redis.set(redis_models.model_key(p, "default_probability"), "plain text")
    broken = await redis_models.restore(redis, p)
    assert broken.restored == []
    assert broken.thresholds.threshold("transaction_anomaly", "retail") is None


async def test_last_writer_wins_with_one_consistent_set(redis: Redis, events: list[Any]) -> None:
    p = prefix()
    half = len(events) // 2
    first = train(events[:half])
    second = train(events)
    await redis_models.save_now(redis, p, first, writer="w1")
    await redis_models.save_now(redis, p, second, writer="w2")
    restored = await redis_models.restore(redis, p)
    assert restored.thresholds.count("population_anomaly", "retail") == second.thresholds.count(
        "population_anomaly", "retail"
    )
    assert (
        restored.shared["default_probability"].labels  # type: ignore[attr-defined]
        == second.shared["default_probability"].labels  # type: ignore[attr-defined]
    )
    meta = await redis.hgetall(redis_models.meta_key(p))
    assert {v.decode().rsplit("|", 1)[1] for v in meta.values()} == {"w2"}


async def test_periodic_saver_saves_while_learning_and_stops_promptly(
    redis: Redis, events: list[Any]
) -> None:
    p = prefix()
    stack = Stack()
    stop = asyncio.Event()
    saver = asyncio.create_task(redis_models.save_periodically(redis, p, stack, 0.1, stop))
    engine = Engine(Settings())
    stream = score_stream(events, engine, stack)
    for i, _ in enumerate(stream):
        if i % 200 == 0:
            await asyncio.sleep(0)  # the worker yields between batches
        if i == len(events) // 2:
            await asyncio.sleep(0.35)  # a few intervals pass
            saved = await redis_models.restore(redis, p)
            assert "population_anomaly" in saved.restored
    stop.set()
    await asyncio.wait_for(saver, timeout=2.0)
    final = await redis_models.save_now(redis, p, stack)  # at shutdown
    assert final > 0
    restored = await redis_models.restore(redis, p)
    assert restored.thresholds.count("population_anomaly", "retail") == stack.thresholds.count(
        "population_anomaly", "retail"
    )


async def test_periodic_saver_survives_redis_being_away(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    away = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING):
        saver = asyncio.create_task(
            redis_models.save_periodically(away, prefix(), Stack(), 0.05, stop)
        )
        await asyncio.sleep(0.4)
        assert not saver.done()
        stop.set()
        await asyncio.wait_for(saver, timeout=2.0)
    assert "saving the detector models failed" in caplog.text
    await away.aclose()
