"""The ``creditwatch`` console script: one entry point, one sub-command per job.

Settings come from the environment (``CREDITWATCH_*``); a bad value stops the
command at start with a message naming the field, and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as err:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(settings)'}: {e['msg']}"
            for e in err.errors()
        ]
        print("creditwatch: invalid configuration\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_worker(args: argparse.Namespace) -> int:
    from streams.bootstrap import run_worker

    return run_worker(_settings())


def _cmd_replay(args: argparse.Namespace) -> int:
    from creditwatch.replay import run_replay

    settings = _settings()
    events = Path(args.events)
    if not events.is_file():
        print(f"creditwatch replay: no such file: {events}", file=sys.stderr)
        return 2

    if args.redis and args.redis_prefix == settings.redis.key_prefix:
        print(
            f"creditwatch replay: --redis-prefix {args.redis_prefix!r} is the worker's key "
            "prefix; replay empties its prefix, choose another",
            file=sys.stderr,
        )
        return 2

    rule_sets = _load_rule_sets(args)
    if rule_sets is None:
        return 2
    if args.compare:
        from rich.console import Console

        from creditwatch.backtest import print_comparison, run_compare

        report = asyncio.run(
            run_compare(events, Path(args.out), settings, rule_sets[0], rule_sets[1])
        )
        print_comparison(report, Console(width=None if sys.stdout.isatty() else 140))
        print(f"replay --compare: outputs in {args.out}/a, {args.out}/b, {args.out}/compare.json")
        return 0
    candidate = rule_sets[0][1] if rule_sets else None

    async def go() -> int:
        store = None
        redis = None
        if args.redis:
            from streams.bootstrap import redis_store
            from streams.redis_connection import redis_client

            cfg = settings.redis.model_copy(update={"url": args.redis})
            redis = redis_client(cfg)
            # Replay owns its key prefix (never the worker's): it starts empty so a
            # replay is judged on the file alone, as with the memory store.
            replay_settings = settings.model_copy(
                update={"redis": cfg.model_copy(update={"key_prefix": args.redis_prefix})}
            )
            store = redis_store(replay_settings, redis)
            await store.clear()
        try:
            summary = await run_replay(
                events, Path(args.out), settings, store=store, rule_set=candidate
            )
        finally:
            if redis is not None:
                await redis.aclose()
        alerts = sum(summary.alerts.values())
        print(
            f"replay: {summary.applied} applied, {summary.duplicates} duplicates, "
            f"{summary.dead_letters} dead letters; {alerts} warnings, "
            f"{summary.tasks} collections tasks, {summary.customers} customers -> {args.out}"
        )
        return 0

    return asyncio.run(go())


def _load_rule_sets(args: argparse.Namespace) -> list[tuple[str, Any]] | None:
    """The candidate rule set(s) of ``--rules``/``--compare``; None after printing problems."""
    from rules.loader import RuleSetError, load_file

    files = list(args.compare or ([args.rules] if args.rules else []))
    loaded: list[tuple[str, Any]] = []
    for name in files:
        try:
            loaded.append((Path(name).name, load_file(name)))
        except FileNotFoundError:
            print(f"creditwatch replay: no such rule file: {name}", file=sys.stderr)
            return None
        except RuleSetError as err:
            print(f"creditwatch replay: {name} is not a valid rule set:\n{err}", file=sys.stderr)
            return None
    return loaded


def _cmd_topics(args: argparse.Namespace) -> int:
    from streams.topic_admin import ensure_topics

    created = asyncio.run(ensure_topics(_settings()))
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _cmd_state(args: argparse.Namespace) -> int:
    from creditwatch.state_cli import show, top

    settings = _settings()
    if args.state_cmd == "show":
        return asyncio.run(show(settings, args.customer_id, as_json=args.json))
    return asyncio.run(top(settings, n=args.n, tier=args.tier, as_json=args.json))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="creditwatch", description="Real-time credit risk monitoring and early warning."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the streaming worker")
    worker.set_defaults(func=_cmd_worker)

    replay = sub.add_parser("replay", help="process an events file without Kafka")
    replay.add_argument("events", help="JSON lines file, one input event per line")
    replay.add_argument("--out", required=True, help="directory for the output files")
    replay.add_argument("--redis", help="keep state in Redis at this URL instead of memory")
    replay.add_argument(
        "--redis-prefix",
        default="cwreplay",
        help="key prefix replay owns in that Redis; emptied at start (default: cwreplay)",
    )
    candidates = replay.add_mutually_exclusive_group()
    candidates.add_argument(
        "--rules", metavar="FILE", help="judge with this rule set instead of the configured one"
    )
    candidates.add_argument(
        "--compare",
        nargs=2,
        metavar=("FILE_A", "FILE_B"),
        help="replay with each rule set and report, per rule, warnings added and removed, "
        "precision and lead time against the defaults recorded in the events",
    )
    replay.set_defaults(func=_cmd_replay)

    from creditwatch.simulate.cli import add_parser as add_simulate

    add_simulate(sub)

    from rules.cli import add_parser as add_rules

    add_rules(sub)

    from creditwatch.evaluate import add_parser as add_evaluate

    add_evaluate(sub)

    topics = sub.add_parser("topics", help="create the Kafka topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(func=_cmd_topics)

    from creditwatch.alerts_cli import add_parser as add_alerts

    add_alerts(sub)

    state = sub.add_parser("state", help="read customers' risk state from Redis")
    state_sub = state.add_subparsers(dest="state_cmd", required=True)
    show = state_sub.add_parser("show", help="one customer")
    show.add_argument("customer_id")
    show.add_argument("--json", action="store_true")
    top = state_sub.add_parser("top", help="the riskiest customers")
    top.add_argument("--n", type=int, default=20)
    top.add_argument("--tier", choices=["premium", "low", "medium", "high"])
    top.add_argument("--json", action="store_true")
    state.set_defaults(func=_cmd_state)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
