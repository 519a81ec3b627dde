"""A restarted worker remembers what its detectors learned; a model of another version starts fresh.

The worker saves the shared models (population trees, default model,
thresholds) to Redis while it runs and once more at shutdown, and restores
them before it judges its first event.
"""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
from redis import Redis

from creditwatch.simulate.book import BookConfig, generate_book
from detectors.redis_models import meta_key, model_key, shared_names
from tests.integration.test_worker import metric_total, wait_until

if TYPE_CHECKING:
    from conftest import Deployment

pytestmark = pytest.mark.integration


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        return json.loads(resp.read())


def applied(port: int) -> float:
    return metric_total(port, "creditwatch_events_total", outcome="applied")


def test_models_are_saved_while_running_and_at_shutdown_and_restored_at_start(
    deployment: Deployment,
) -> None:
    dep = deployment
    book = generate_book(BookConfig(seed=5, customers=12, months=2))
    first, second = book[: len(book) // 2], book[len(book) // 2 :]
    redis = Redis.from_url(dep.stack.redis_url)
    names = shared_names()

    proc, port = dep.start_worker(CREDITWATCH_DETECTORS__SAVE_INTERVAL_SECONDS="1")
    assert health(port)["detector_models_restored"] == []  # nothing saved yet: a fresh start
    dep.produce(first)
    wait_until(lambda: applied(port) >= len(first), 120, "the first half to be applied")
    # Saved periodically while the worker runs, by this process.
    wait_until(lambda: redis.hlen(meta_key(dep.prefix)) == len(names), 30, "a periodic save")
    assert metric_total(port, "creditwatch_detector_model_saves_total", outcome="ok") >= 1
    meta = {k.decode(): v.decode() for k, v in redis.hgetall(meta_key(dep.prefix)).items()}
    assert set(meta) == set(names)
    assert all(value.endswith(f":{proc.pid}") for value in meta.values())

    dep.stop_workers()  # SIGTERM: the last save happens after the last event
    assert proc.returncode == 0
    saved = {name: redis.get(model_key(dep.prefix, name)) for name in names}
    assert all(saved.values())

    # A restarted worker restores every model it finds in a version it understands.
    _proc2, port2 = dep.start_worker()
    assert sorted(health(port2)["detector_models_restored"]) == sorted(names)
    dep.stop_workers()

    # A model written by another code version (here: not a blob this code reads)
    # gives that model a fresh start; the others are restored; nothing crashes.
    redis.set(model_key(dep.prefix, "population_anomaly"), b"\x80\x05not a model of ours")
    _proc3, port3 = dep.start_worker()
    restored = health(port3)["detector_models_restored"]
    assert "population_anomaly" not in restored
    assert sorted(restored) == sorted(n for n in names if n != "population_anomaly")
    dep.produce(second)
    wait_until(lambda: applied(port3) >= len(second), 120, "the second half to be applied")
    assert metric_total(port3, "creditwatch_dead_letters_total") == 0
    redis.close()
