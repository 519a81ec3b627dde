"""``creditwatch replay --redis`` uses the Redis store and gives what the memory store gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis import Redis

if TYPE_CHECKING:
    from conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def run(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "creditwatch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def test_replay_on_redis_equals_replay_in_memory(stack: Stack, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    run("simulate", "--customers", "40", "--seed", "5", "--out", str(events))
    run("replay", str(events), "--out", str(tmp_path / "memory"))
    for attempt in ("first", "second"):  # a second run starts from an empty prefix again
        run(
            "replay",
            str(events),
            "--out",
            str(tmp_path / attempt),
            "--redis",
            stack.redis_url,
            "--redis-prefix",
            "cwtreplay",
        )
        for name in ("alerts.jsonl", "collections-tasks.jsonl", "state.jsonl"):
            assert (tmp_path / attempt / name).read_bytes() == (
                tmp_path / "memory" / name
            ).read_bytes(), (attempt, name)
    redis = Redis.from_url(stack.redis_url)
    assert redis.exists("cwtreplay:c:C000001")
    assert redis.xlen("cwtreplay:ob:0") == 0  # every output was drained to the files
