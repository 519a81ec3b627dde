"""``creditwatch simulate``: write a synthetic book as JSONL, or publish it to Kafka.

The book is streamed (``iter_book``) straight to the file, stdout or the
producer, so large books do not have to fit in memory. The one-line summary
goes to stderr so that stdout stays pure JSONL when it is the destination.

With ``--scenario NAME`` (repeatable, ``all`` for every one) the output is
instead the named scenario streams from ``scenarios`` merged into one, and
``--truth`` receives their ground truth keyed by scenario name. Scenarios are
small, so they are built in memory. Seed and start keep their own defaults
per mode (book: 7 and UTC midnight; scenarios: 1 and Shanghai midnight) so
that adding scenarios changed nothing about the book.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from creditwatch.simulate.book import DEFAULT_START, BookConfig, book_truth, iter_book, iter_jsonl
from creditwatch.simulate.scenarios import SCENARIO_START, SCENARIOS, build_scenarios

__all__ = ["add_parser", "run"]


def _aware(text: str) -> datetime:
    """``--start``: an ISO 8601 / RFC 3339 instant that must carry an offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {text!r}") from err
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"--start needs an offset (e.g. {text}+00:00), so the book is unambiguous"
        )
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate`` on an ``argparse`` sub-parsers object; ``func`` is ``run``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="write or publish a synthetic loan book",
        description=(
            "Generate a seeded, deterministic synthetic loan book as SPEC input events "
            "and write it as JSON lines (default: stdout) or publish it to the input topics."
        ),
    )
    parser.add_argument("--customers", type=_positive, default=200, help="number of customers")
    parser.add_argument("--months", type=_positive, default=6, help="horizon in calendar months")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed, same seed same bytes (default 7 for the book, 1 for scenarios)",
    )
    parser.add_argument(
        "--start",
        type=_aware,
        default=None,
        help=(
            "first instant, with offset (default 2026-01-01T00:00:00+00:00 for the book, "
            "2026-01-01T00:00:00+08:00 for scenarios)"
        ),
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "all"],
        metavar="NAME",
        help=(
            "write this scenario instead of the random book (repeatable; 'all' for every "
            f"one; --customers/--months are then ignored): {', '.join(SCENARIOS)}"
        ),
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", metavar="FILE.jsonl", help="write JSON lines here ('-': stdout)")
    target.add_argument(
        "--publish", action="store_true", help="publish to Kafka (settings from CREDITWATCH_*)"
    )
    parser.add_argument(
        "--truth",
        metavar="FILE.json",
        help=(
            "also write each customer's behaviour class here "
            "(with --scenario: the scenario truth, keyed by scenario name)"
        ),
    )
    parser.set_defaults(func=run)
    return parser


def _counted(events: Iterable[dict[str, Any]], counts: Counter[str]) -> Iterator[dict[str, Any]]:
    for event in events:
        counts[event["type"]] += 1
        yield event


def _summary(counts: Counter[str], describe: str, target: str) -> str:
    by_type = " ".join(f"{t}={n}" for t, n in sorted(counts.items()))
    return f"simulate: {sum(counts.values())} events, {describe} -> {target}: {by_type}"


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; 0 on success, 1 if writing or publishing failed, 2 on bad settings."""
    scenario_names: list[str] | None = getattr(args, "scenario", None)
    counts: Counter[str] = Counter()
    truth: Callable[[], Any]
    if scenario_names:
        seed = 1 if args.seed is None else args.seed
        try:
            scenario = build_scenarios(scenario_names, seed, start=args.start or SCENARIO_START)
        except ValueError as err:
            print(f"creditwatch simulate: {err}", file=sys.stderr)
            return 2
        events = _counted(scenario.events, counts)
        truth = functools.partial(dict, scenario.truth)
        describe = f"scenario {scenario.name}, {len(scenario.customers)} customers, seed {seed}"
    else:
        config = BookConfig(
            seed=7 if args.seed is None else args.seed,
            customers=args.customers,
            months=args.months,
            start=args.start or DEFAULT_START,
        )
        events = _counted(iter_book(config), counts)
        truth = functools.partial(book_truth, config)
        describe = f"{config.customers} customers, {config.months} months, seed {config.seed}"
    try:
        if args.publish:
            from pydantic import ValidationError

            from config.settings import load_settings
            from creditwatch.simulate.publish import publish_events

            try:
                settings = load_settings()
            except ValidationError as err:
                print(f"creditwatch simulate: invalid configuration: {err}", file=sys.stderr)
                return 2
            asyncio.run(publish_events(events, settings))
            target = f"kafka {settings.kafka.bootstrap_servers}"
        elif args.out and args.out != "-":
            with Path(args.out).open("wb") as fh:
                fh.writelines(iter_jsonl(events))
            target = args.out
        else:
            out = sys.stdout.buffer
            out.writelines(iter_jsonl(events))
            out.flush()
            target = "stdout"
        if args.truth:
            Path(args.truth).write_bytes(
                orjson.dumps(truth(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )
    except (OSError, KafkaError) as err:  # one line for a person, not a traceback
        print(f"creditwatch simulate: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(_summary(counts, describe, target), file=sys.stderr)
    return 0
