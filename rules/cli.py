"""``creditwatch rules ...``: check, test, publish, history, rollback.

Wire it into the console script with :func:`add_parser`; every command sets
``args.func`` to a function of ``args`` returning the exit code (0 ok, 1 the
rule set or a case is wrong, 2 usage or I/O error).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any, TextIO

from rules.cases import CaseFileError, cases_path, load_cases, run_cases
from rules.loader import RuleSetError, check_text, load_file

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


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
            default=os.environ.get("CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP),
        )
        cmd.add_argument("--topic", default=None, help="default: credit.rules.v1")

    publish = sub.add_parser("publish", help="publish a new version to credit.rules.v1")
    publish.add_argument("file")
    publish.add_argument("--author", required=True)
    publish.add_argument("--message", required=True)
    kafka_args(publish)
    publish.set_defaults(func=cmd_publish)

    hist = sub.add_parser("history", help="list the published versions of a rule set")
    hist.add_argument("name", nargs="?", default="default")
    hist.add_argument("--diff", action="store_true", help="show each version's diff")
    kafka_args(hist)
    hist.set_defaults(func=cmd_history)

    back = sub.add_parser("rollback", help="republish an earlier version as the newest")
    back.add_argument("name")
    back.add_argument("version")
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


def _kafka(args: argparse.Namespace) -> dict[str, Any]:
    return {"topic": args.topic} if args.topic else {}


def cmd_publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from rules import registry

    try:
        rules = load_file(args.file)
    except RuleSetError as exc:
        print(f"refusing to publish an invalid rule set:\n{exc}", file=out)
        return 1
    record = asyncio.run(
        registry.publish(
            args.bootstrap, rules, author=args.author, message=args.message, **_kafka(args)
        )
    )
    d = record["diff"]
    print(
        f"published {record['name']} version {record['version']} (#{record['seq']}): "
        f"+{len(d['added'])} -{len(d['removed'])} ~{len(d['changed'])} rules",
        file=out,
    )
    return 0


def cmd_history(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from rules import registry

    records = asyncio.run(registry.history(args.bootstrap, args.name, **_kafka(args)))
    if not records:
        print(f"no published versions of {args.name}", file=out)
        return 0
    for r in records:
        d = r["diff"]
        back = f" (rollback to {r['rolled_back_to']})" if r.get("rolled_back_to") else ""
        print(
            f"#{r['seq']}  {r['version']}  {r['published_at']}  {r['author']}: {r['message']}"
            f"{back}  [+{','.join(d['added']) or '0'} -{','.join(d['removed']) or '0'} "
            f"~{','.join(d['changed']) or '0'}]",
            file=out,
        )
        if args.diff and d["text"]:
            print(d["text"], file=out)
    return 0


def cmd_rollback(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from rules import registry

    try:
        record = asyncio.run(
            registry.rollback(
                args.bootstrap,
                args.name,
                args.version,
                author=args.author,
                message=args.message,
                **_kafka(args),
            )
        )
    except LookupError as exc:
        print(str(exc), file=out)
        return 1
    print(f"rolled {record['name']} back to {record['version']} (#{record['seq']})", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rules.cli rules check FILE`` until the console script wires it."""
    parser = argparse.ArgumentParser(prog="creditwatch")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
