"""``creditwatch simulate``: write a synthetic book as JSONL, or publish it to Kafka.

The book is streamed (``iter_book``) straight to the file, stdout or the
producer, so large books do not have to fit in memory. The one-line summary
goes to stderr so that stdout stays pure JSONL when it is the destination.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from creditwatch.simulate.book import DEFAULT_START, BookConfig, book_truth, iter_book, iter_jsonl

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
    parser.add_argument("--seed", type=int, default=7, help="random seed (same seed, same bytes)")
    parser.add_argument(
        "--start",
        type=_aware,
        default=DEFAULT_START,
        help="first instant of the book, with offset (default 2026-01-01T00:00:00+00:00)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", metavar="FILE.jsonl", help="write JSON lines here ('-': stdout)")
    target.add_argument(
        "--publish", action="store_true", help="publish to Kafka (settings from CREDITWATCH_*)"
    )
    parser.add_argument(
        "--truth", metavar="FILE.json", help="also write each customer's behaviour class here"
    )
    parser.set_defaults(func=run)
    return parser


def _counted(events: Iterable[dict[str, Any]], counts: Counter[str]) -> Iterator[dict[str, Any]]:
    for event in events:
        counts[event["type"]] += 1
        yield event


def _summary(counts: Counter[str], config: BookConfig, target: str) -> str:
    by_type = " ".join(f"{t}={n}" for t, n in sorted(counts.items()))
    return (
        f"simulate: {sum(counts.values())} events, {config.customers} customers, "
        f"{config.months} months, seed {config.seed} -> {target}: {by_type}"
    )


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; 0 on success, 1 if writing or publishing failed, 2 on bad settings."""
    config = BookConfig(
        seed=args.seed, customers=args.customers, months=args.months, start=args.start
    )
    counts: Counter[str] = Counter()
    events = _counted(iter_book(config), counts)
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
                orjson.dumps(book_truth(config), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                + b"\n"
            )
    except (OSError, KafkaError) as err:  # one line for a person, not a traceback
        print(f"creditwatch simulate: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(_summary(counts, config, target), file=sys.stderr)
    return 0
