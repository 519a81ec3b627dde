"""``creditwatch rules ...``: check, test, publish, history, rollback.

Wire it into the console script with :func:`add_parser`; every command sets
``args.func`` to a function of ``args`` returning the exit code (0 ok, 1 the
rule set or a case is wrong, 2 usage or I/O error).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson
from pydantic import ValidationError

from config.settings import KafkaSettings, load_settings
from rules import registry
from rules.cases import CaseFileError, cases_path, load_cases, run_cases
from rules.loader import RuleSetError, check_text, load_file
from rules.registry import DEFAULT_TIMEOUT, AlreadyCurrent, RegistryUnavailable, rules_topic

T = TypeVar("T")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``rules`` and its sub-commands on the console script's sub-parsers."""
    p = subparsers.add_parser("rules", help="check, test, publish and roll back rule sets")
    sub = p.add_subparsers(dest="rules_command", required=True)

    check = sub.add_parser("check", help="validate a rule-set file, printing each problem")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run the example cases kept beside a rule-set file")
    test.add_argument("file")
    test.add_argument("--cases", help="cases file (default: FILE.cases.yaml beside FILE)")
    test.set_defaults(func=cmd_test)

    def kafka_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--bootstrap",
            help="Kafka bootstrap servers (default: CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS; "
            "security settings always come from CREDITWATCH_KAFKA__*)",
        )
        cmd.add_argument("--topic", help="default: the deployment's rules topic, credit.rules.v1")
        cmd.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            help=f"seconds to wait for Kafka before giving up (default {DEFAULT_TIMEOUT:g})",
        )

    publish = sub.add_parser("publish", help="publish a new version to credit.rules.v1")
    publish.add_argument("file")
    publish.add_argument("--author", required=True)
    publish.add_argument("--message", required=True)
    kafka_args(publish)
    publish.set_defaults(func=cmd_publish)

    hist = sub.add_parser("history", help="list the published versions of a rule set")
    hist.add_argument("--name", default="default", help="rule set name (default: default)")
    hist.add_argument("--diff", action="store_true", help="show each version's diff")
    hist.add_argument("--json", action="store_true", help="the records, one JSON object a line")
    kafka_args(hist)
    hist.set_defaults(func=cmd_history)

    back = sub.add_parser(
        "rollback",
        help="republish an earlier version as the newest",
        description="VERSION_OR_SEQ is a version (the newest publication of it) or a "
        "publication number, N or #N, as rules history lists them.",
    )
    back.add_argument("target", metavar="VERSION_OR_SEQ")
    back.add_argument("--name", default="default", help="rule set name (default: default)")
    back.add_argument("--author", required=True)
    back.add_argument("--message", required=True)
    kafka_args(back)
    back.set_defaults(func=cmd_rollback)
    return p


def _read(path: str, out: TextIO | None) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=out)
        return None


def cmd_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    text = _read(args.file, out)
    if text is None:
        return 2
    compiled, problems = check_text(text)
    if compiled is None:
        for p in problems:
            print(p.format(args.file), file=out)
        print(f"{args.file}: {len(problems)} problem(s)", file=out)
        return 1
    enabled = sum(1 for r in compiled.rules if r.rule.enabled)
    print(
        f"{args.file}: ok: rule set {compiled.name} version {compiled.version}, "
        f"{len(compiled.rules)} rules ({enabled} enabled)",
        file=out,
    )
    return 0


def cmd_test(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        rules = load_file(args.file)
    except RuleSetError as exc:
        print(str(exc), file=out)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror or exc}", file=out)
        return 2
    path = Path(args.cases) if args.cases else cases_path(args.file)
    try:
        cases = load_cases(path)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=out)
        return 2
    except CaseFileError as exc:
        print(str(exc), file=out)
        return 1
    results = run_cases(rules, cases)
    failed = 0
    for r in results:
        if r.ok:
            print(f"PASS  {r.name}", file=out)
            continue
        failed += 1
        print(f"FAIL  {r.name}", file=out)
        if r.problem:
            print(f"      case: {r.problem}", file=out)
        else:
            missing = sorted(set(r.expected) - set(r.got))
            extra = sorted(set(r.got) - set(r.expected))
            if missing:
                print(f"      expected but did not fire: {', '.join(missing)}", file=out)
            if extra:
                print(f"      fired but not expected: {', '.join(extra)}", file=out)
        for e in r.errors:
            print(f"      rule {e.rule_id} raised {e.error}: {e.message}", file=out)
    covered = {r.covers for r in results if r.covers}
    uncovered = sorted(r.id for r in rules.rules if r.id not in covered)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    if uncovered:
        print(f"rules with no case: {', '.join(uncovered)}", file=out)
    return 1 if failed else 0


def _kafka(args: argparse.Namespace, out: TextIO | None) -> tuple[KafkaSettings, str] | None:
    """Connection and topic from the settings (``CREDITWATCH_*``), with the flags on top."""
    try:
        settings = load_settings()
    except ValidationError as err:
        print("creditwatch: invalid configuration", file=out)
        for e in err.errors():
            print(f"  {'.'.join(str(p) for p in e['loc']) or '(settings)'}: {e['msg']}", file=out)
        return None
    kafka = settings.kafka
    if args.bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap})
    return kafka, args.topic or rules_topic(settings)


def _run(coro: Coroutine[Any, Any, T], out: TextIO | None) -> T | None:
    """Run a registry call; None (after saying why) when Kafka could not be reached."""
    try:
        return asyncio.run(coro)
    except RegistryUnavailable as exc:
        print(f"error: {exc}", file=out)
        return None


def _summary(diff: dict[str, Any]) -> str:
    """Rule ids added, removed and changed; a count when there are many (a first publication)."""

    def ids(key: str) -> str:
        names = diff[key]
        return ",".join(names) if 0 < len(names) <= 6 else str(len(names))

    return f"[+{ids('added')} -{ids('removed')} ~{ids('changed')}]"


def cmd_publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    text = _read(args.file, out)
    if text is None:
        return 2
    rules, problems = check_text(text)
    if rules is None:
        print(f"{args.file}: refusing to publish an invalid rule set", file=out)
        for p in problems:
            print(p.format(args.file), file=out)
        print(f"{args.file}: {len(problems)} problem(s)", file=out)
        return 1
    target = _kafka(args, out)
    if target is None:
        return 2
    kafka, topic = target
    try:
        record = _run(
            registry.publish(
                kafka,
                rules,
                author=args.author,
                message=args.message,
                topic=topic,
                timeout=args.timeout,
            ),
            out,
        )
    except AlreadyCurrent as exc:
        print(f"{exc}: nothing published", file=out)
        return 0
    if record is None:
        return 2
    print(
        f"published {record['name']} version {record['version']} (#{record['seq']}) "
        f"to {topic}: {_summary(record['diff'])}",
        file=out,
    )
    return 0


def cmd_history(args: argparse.Namespace, out: TextIO | None = None) -> int:
    target = _kafka(args, out)
    if target is None:
        return 2
    kafka, topic = target
    records = _run(registry.history(kafka, args.name, topic=topic, timeout=args.timeout), out)
    if records is None:
        return 2
    if args.json:
        for r in records:
            print(orjson.dumps(r).decode(), file=out)
        return 0
    if not records:
        print(f"no published versions of {args.name} on {topic}", file=out)
        return 0
    for r in records:
        back = (
            f" (rollback to {r['rolled_back_to']} #{r.get('rolled_back_to_seq', '?')})"
            if r.get("rolled_back_to")
            else ""
        )
        current = "  (current)" if r is records[-1] else ""
        print(
            f"#{r['seq']}  {r['version']}  {r['published_at']}  {r['author']}: {r['message']}"
            f"{back}  {_summary(r['diff'])}{current}",
            file=out,
        )
        if args.diff and r["diff"]["text"]:
            print(r["diff"]["text"], file=out)
    return 0


def cmd_rollback(args: argparse.Namespace, out: TextIO | None = None) -> int:
    target = _kafka(args, out)
    if target is None:
        return 2
    kafka, topic = target
    try:
        record = _run(
            registry.rollback(
                kafka,
                args.name,
                args.target,
                author=args.author,
                message=args.message,
                topic=topic,
                timeout=args.timeout,
            ),
            out,
        )
    except AlreadyCurrent as exc:
        print(f"{exc}: nothing published", file=out)
        return 0
    except LookupError as exc:
        print(f"error: {exc}", file=out)
        return 1
    except RuleSetError as exc:
        print(f"error: that version no longer compiles:\n{exc}", file=out)
        return 1
    if record is None:
        return 2
    print(
        f"rolled {record['name']} back to {record['version']} "
        f"(#{record['rolled_back_to_seq']}), published as #{record['seq']}: "
        f"{_summary(record['diff'])}",
        file=out,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rules.cli rules check FILE`` until the console script wires it."""
    parser = argparse.ArgumentParser(prog="creditwatch")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
