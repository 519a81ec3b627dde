"""What writing customer states costs: µs per state encoded, per ``commit_many`` of 100.

Run: ``.venv/bin/python -m bench.state_encoding [--customers 500] [--months 2]
[--redis URL] [--repeat 3] [--against DIR]``

A seeded simulated book is replayed through the worker's judge (engine,
rules and detectors, so ``det`` holds real models) the way a worker applies
it: events in batches of ``--batch``, each touched customer's state changed
in place and written once per batch, as the states a worker keeps are. The
first ``--warm-up`` share of the events only builds the customers' history;
the rest is measured. Times are CPU time of this process (what the machine
gave to other work is not counted).

1. **encode**: :func:`risk.redis_store.encode_state` of every state a batch
   touched (what ``commit_many`` encodes): µs per state, the median over
   ``--repeat`` replays (and the best).
2. **re-encode**: the final states encoded again, unchanged; **decode**:
   :func:`risk.redis_store.decode_state` of them.
3. **commit_many** (with ``--redis``): the same replay, the touched states of
   each batch committed 100 at a time through a real Redis under a fresh key
   prefix (no output records): client CPU µs and wall µs per 100 states.

With ``--against DIR`` (another checkout, e.g. ``git archive HEAD | tar -x -C
DIR``) the encode and commit figures are taken in lockstep instead: this tree
and DIR each replay the book in a process of their own, and they take turns,
batch by batch (which goes first alternates), so both see the same machine
through the run. That is what makes a difference of a few per cent visible on
a shared machine, where separate runs differ by more. The two trees must
differ only in what is being compared: the replay itself (engine, judge)
runs in each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, generate_book
from risk.book import Book, book_entry
from risk.customer import CustomerState
from risk.judge import Judge, build_judge
from risk.redis_store import decode_state, encode_state
from risk.store import Step
from schemas.codec import decode_event

REMEMBER_EVENTS = 256  # the processor's default
COMMIT_SIZE = 100
Touched = list[tuple[CustomerState, Book]]


def book_events(customers: int, months: int) -> list[Any]:
    return [
        decode_event(orjson.dumps(e))
        for e in generate_book(BookConfig(seed=21, customers=customers, months=months))
    ]


def batches(judge: Judge, events: list[Any], batch: int, warm_up: float) -> Iterator[Touched]:
    """Apply the events in batches; yield what each measured batch touched.

    Each customer comes with the book entry of its state before the batch
    (what the processor passes as ``Step.book_before``); a state's ``seq``
    moves by one per batch that touches it, as the processor's does.
    """
    states: dict[str, CustomerState] = {}
    start = int(len(events) * warm_up)
    for first in range(0, len(events), batch):
        touched: dict[str, tuple[CustomerState, Book]] = {}
        for ev in events[first : first + batch]:
            before = states.get(ev.customer_id)
            entry = touched[ev.customer_id][1] if ev.customer_id in touched else book_entry(before)
            st, _ = judge.apply(before, ev)
            st.remember(ev.event_id, REMEMBER_EVENTS)
            states[ev.customer_id] = st
            touched[ev.customer_id] = (st, entry)
        for st, _ in touched.values():
            st.seq += 1
        if first >= start:
            yield list(touched.values())


def encode_batch(touched: Touched) -> float:
    """CPU seconds to encode every state of a batch."""
    started = time.process_time()
    for st, _ in touched:
        encode_state(st)
    return time.process_time() - started


class Committer:
    """Commits batches through a real Redis, 100 steps a call, under a fresh prefix."""

    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        from risk.redis_store import RedisStateStore

        self.redis = Redis.from_url(redis_url)
        self.store = RedisStateStore(
            self.redis, prefix=f"cwbenchenc{time.time_ns()}", marker_ttl_seconds=35 * 86400
        )
        self.stored: dict[str, int] = {}  # customer -> seq of the stored state

    async def commit(self, touched: Touched) -> tuple[float, float]:
        """(CPU seconds, wall seconds) of the ``commit_many`` calls of one batch."""
        steps = [
            Step(st, self.stored.get(st.customer_id, 0), 0, book_before=before)
            for st, before in touched
        ]
        cpu = wall = 0.0
        for i in range(0, len(steps), COMMIT_SIZE):
            chunk = steps[i : i + COMMIT_SIZE]
            for step in chunk:  # each state goes on from what is stored
                step.state.seq = step.expected_seq + 1
            w, c = time.perf_counter(), time.process_time()
            applied = await self.store.commit_many(chunk)
            wall += time.perf_counter() - w
            cpu += time.process_time() - c
            if not all(applied):
                raise RuntimeError("a step was refused: the benchmark's seqs are wrong")
            self.stored.update((s.state.customer_id, s.state.seq) for s in chunk)
        return cpu, wall

    async def close(self) -> None:
        await self.store.clear()
        await self.redis.aclose()


def time_encode(events: list[Any], args: argparse.Namespace) -> tuple[float, list[Any]]:
    """µs per encoded state over one replay, and the final states."""
    spent, encoded = 0.0, 0
    last: dict[str, CustomerState] = {}
    for touched in batches(build_judge(Settings()), events, args.batch, args.warm_up):
        spent += encode_batch(touched)
        encoded += len(touched)
        last.update((st.customer_id, st) for st, _ in touched)
    return spent / encoded * 1e6, list(last.values())


async def time_commits(events: list[Any], args: argparse.Namespace) -> tuple[float, float]:
    """(client CPU µs, wall µs) per 100 states committed by ``commit_many``."""
    committer = Committer(args.redis)
    cpu = wall = 0.0
    committed = 0
    try:
        for touched in batches(build_judge(Settings()), events, args.batch, args.warm_up):
            c, w = await committer.commit(touched)
            cpu, wall, committed = cpu + c, wall + w, committed + len(touched)
    finally:
        await committer.close()
    return cpu / committed * 1e8, wall / committed * 1e8


def time_each(states: list[CustomerState], call: Any, rounds: int = 20) -> float:
    """Best µs per state of ``call`` over the states, ``rounds`` times."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for st in states:
            call(st)
        best = min(best, time.process_time() - started)
    return best / len(states) * 1e6


# -- lockstep against another checkout -------------------------------------------------------


async def child(events: list[Any], args: argparse.Namespace) -> None:
    """Apply and measure one batch each time the parent asks: ``[states, cpu s, wall s]``
    per line, ``null`` once the replay is over. Nothing runs between turns, so the
    other tree's turn has the machine to itself."""
    committer = Committer(args.redis) if args.child == "commit" else None
    replay = batches(build_judge(Settings()), events, args.batch, args.warm_up)
    try:
        while sys.stdin.readline():
            touched = next(replay, None)
            if touched is None:
                print("null", flush=True)
                return
            if committer is not None:
                cpu, wall = await committer.commit(touched)
            else:
                cpu = wall = encode_batch(touched)
            print(json.dumps([len(touched), cpu, wall]), flush=True)
    finally:
        if committer is not None:
            await committer.close()


def lockstep(kind: str, trees: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """One replay per tree, batch by batch in turn; µs per state (encode) or per 100 (commit)."""
    options = ["--customers", str(args.customers), "--months", str(args.months)]
    options += ["--batch", str(args.batch), "--warm-up", str(args.warm_up)]
    if args.redis:
        options += ["--redis", args.redis]
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", kind, *options],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, tree in trees.items()
    }
    sums = {name: [0, 0.0, 0.0] for name in trees}
    names = list(trees)
    turn = 0
    try:
        while True:
            lines: dict[str, str] = {}
            for name in names if turn % 2 == 0 else names[::-1]:
                proc = procs[name]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                lines[name] = proc.stdout.readline()
            if not all(lines.values()):
                raise RuntimeError(f"a replay stopped early: {lines}")
            replies = {name: json.loads(line) for name, line in lines.items()}
            if None in replies.values():
                break
            for name, (n, cpu, wall) in replies.items():
                total = sums[name]
                total[0] += n
                total[1] += cpu
                total[2] += wall
            turn += 1
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()
    per = 1e6 if kind == "encode" else 1e8
    out: dict[str, Any] = {}
    for name, (n, cpu, wall) in sums.items():
        out[f"{kind}_{name}_cpu_us"] = round(cpu / n * per, 2 if kind == "encode" else None)
        if kind == "commit":
            out[f"{kind}_{name}_wall_us"] = round(wall / n * per)
    base, this = sums[names[0]][1], sums[names[1]][1]
    out[f"{kind}_{names[1]}_over_{names[0]}"] = f"{this / base * 100:.1f}%"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200, help="events per batch")
    parser.add_argument("--warm-up", type=float, default=0.5, help="share of events not timed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis", help="also time commit_many against this Redis")
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=["encode", "commit"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    events = book_events(args.customers, args.months)
    if args.child:
        asyncio.run(child(events, args))
        return 0
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "customers": args.customers,
        "events": len(events),
        "batch_events": args.batch,
    }
    if args.against:
        trees = {"before": args.against.resolve(), "after": Path(__file__).resolve().parents[1]}
        for kind in ["encode", "commit"] if args.redis else ["encode"]:
            for _ in range(args.repeat):
                for key, value in lockstep(kind, trees, args).items():
                    result.setdefault(key, []).append(value)
    else:
        runs: list[float] = []
        final: list[CustomerState] = []
        for _ in range(args.repeat):
            gc.collect()
            us, final = time_encode(events, args)
            runs.append(us)
        sizes = [len(encode_state(st)) for st in final]
        result["encode_us_per_state_median"] = round(statistics.median(runs), 2)
        result["encode_us_per_state_best"] = round(min(runs), 2)
        result["reencode_unchanged_us_per_state"] = round(time_each(final, encode_state), 2)
        blobs = [encode_state(st) for st in final]
        result["decode_us_per_state"] = round(time_each(blobs, decode_state, rounds=5), 2)
        result["state_bytes_mean"] = round(sum(sizes) / len(sizes))
        result["state_bytes_max"] = max(sizes)
        if args.redis:
            cpus: list[float] = []
            walls: list[float] = []
            for _ in range(args.repeat):
                gc.collect()
                cpu, wall = asyncio.run(time_commits(events, args))
                cpus.append(cpu)
                walls.append(wall)
            result["commit_many_100_client_cpu_us_median"] = round(statistics.median(cpus))
            result["commit_many_100_wall_us_median"] = round(statistics.median(walls))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
