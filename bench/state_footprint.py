"""Redis memory per customer, and the speed of the state update alone.

Run: ``.venv/bin/python -m bench.state_footprint [--customers 1000] [--redis URL]``

1. A simulated book with a realistic 30-day history (one month of salary,
   card and cash spending, instalments, repayments, failures) is replayed
   through the processor into a real Redis under a fresh key prefix; the
   memory of every key the store wrote (``MEMORY USAGE``) is summed by kind
   and divided by the number of customers.
2. The pure engine (``Engine.apply`` on decoded events, no I/O) is timed
   over the same events: the events/s of the state update alone.
3. The same with the Redis store (decode, load, apply, atomic commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, generate_book
from risk.engine import Engine
from risk.processor import Processor, Source
from risk.redis_store import RedisStateStore
from schemas.codec import decode_event


def kind_of(key: str, prefix: str) -> str:
    rest = key[len(prefix) + 1 :]
    return rest.split(":", 1)[0]


async def measure(customers: int, redis_url: str) -> dict[str, Any]:
    settings = Settings()
    book = generate_book(BookConfig(seed=21, customers=customers, months=1))
    raws = [orjson.dumps(e) for e in book]
    events = [decode_event(r) for r in raws]

    engine = Engine(settings)
    started = time.perf_counter()
    states: dict[str, Any] = {}
    for ev in events:
        states[ev.customer_id], _ = engine.apply(states.get(ev.customer_id), ev)
    engine_rate = len(events) / (time.perf_counter() - started)

    prefix = f"cwbench{int(time.time())}"
    redis = Redis.from_url(redis_url)
    store = RedisStateStore(redis, prefix=prefix, marker_ttl_seconds=35 * 86400)
    processor = Processor(Engine(settings), store)
    started = time.perf_counter()
    for i, raw in enumerate(raws):
        await processor.handle(raw, Source("bench", 0, i))
    store_rate = len(raws) / (time.perf_counter() - started)

    by_kind: dict[str, int] = defaultdict(int)
    keys = 0
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        name = key.decode()
        size = await redis.memory_usage(name, samples=0) or 0
        by_kind[kind_of(name, prefix)] += size
        keys += 1
    n = len({ev.customer_id for ev in events})
    outbox = sum(v for k, v in by_kind.items() if k == "ob")
    per_customer = (sum(by_kind.values()) - outbox) / n
    blob_sizes = [len(await redis.get(f"{prefix}:c:{c}") or b"") for c in list(states)[:200]]
    await store.clear()
    await redis.aclose()
    return {
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "customers": n,
        "events": len(events),
        "events_per_customer": round(len(events) / n, 1),
        "engine_events_per_s": round(engine_rate),
        "engine_us_per_event": round(1e6 / engine_rate, 1),
        "store_events_per_s": round(store_rate),
        "redis_keys": keys,
        "redis_bytes_by_kind_per_customer": {k: round(v / n) for k, v in sorted(by_kind.items())},
        "redis_bytes_per_customer": round(per_customer),
        "state_blob_bytes_mean": round(sum(blob_sizes) / max(len(blob_sizes), 1)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--redis", default=Settings().redis.url)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(measure(args.customers, args.redis))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
