"""Publishes the demo's events and waits until the running worker has processed them.

"Processed" means the worker's own metrics count every published event
(applied, duplicate or dead-lettered) and its outbox is empty, so every
warning is on the alerts topic.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from config.settings import load_settings
from creditwatch.simulate.publish import publish_events

EVENTS = re.compile(r"^creditwatch_events_total\{[^}]*\} ([0-9.e+]+)$", re.M)
OUTBOX = re.compile(r"^creditwatch_outbox_depth ([0-9.e+]+)$", re.M)


def scrape(port: int) -> tuple[float, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    seen = sum(float(v) for v in EVENTS.findall(text))
    depth = OUTBOX.search(text)
    return seen, float(depth.group(1)) if depth else 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", required=True)
    parser.add_argument("--port", type=int, default=6066)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    events = [orjson.loads(line) for line in Path(args.events).read_bytes().splitlines() if line]
    started = time.monotonic()
    sent = asyncio.run(publish_events(events, load_settings()))
    print(f"published {sent} events in {time.monotonic() - started:.1f}s")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        seen, depth = scrape(args.port)
        print(f"\r  worker has processed {int(seen)}/{sent} events", end="", flush=True)
        if seen >= sent and depth == 0:
            time.sleep(3)  # one more DPD tick and outbox round
            print(f"\nprocessed in {time.monotonic() - started:.1f}s")
            return 0
        time.sleep(1)
    print("\nthe worker did not finish in time; see .run/worker.log", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
