"""``creditwatch alerts ...``: the early warnings and the alert path, for a person.

- ``alerts show`` reads ``credit.risk-alerts.v1`` from the beginning with
  ``isolation.level=read_committed`` (the worker publishes in transactions)
  and stops when the topic has been read to its end;
- ``alerts silence add|list|expire``, ``alerts breaker list|release`` and
  ``alerts outbox`` drive the alert path through :mod:`alerts.admin`, on the
  Redis the workers share (``CREDITWATCH_REDIS__*``): a silence added here
  holds on every worker within a second.

Every command returns its exit code: 0 done, 1 not found, 2 a bad request
(the message says what is wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from schemas.topics import RISK_ALERTS
from streams.kafka_options import aiokafka_options
from streams.redis_connection import redis_client


async def read_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every committed warning currently on the alerts topic."""
    topic = settings.topics[RISK_ALERTS]
    consumer = AIOKafkaConsumer(
        isolation_level="read_committed",
        enable_auto_commit=False,
        **aiokafka_options(settings.kafka),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        alerts: list[dict[str, Any]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=1000)
            for records in batch.values():
                alerts.extend(orjson.loads(r.value) for r in records)
        alerts.sort(key=lambda a: (a["triggered_at"], a["alert_id"]))
        return alerts
    finally:
        await consumer.stop()


async def show(settings: Settings, *, limit: int, as_json: bool) -> int:
    alerts = await read_alerts(settings)
    console = Console(width=max(Console().width, 150))
    if as_json:
        for alert in alerts[-limit:]:
            console.print_json(orjson.dumps(alert).decode())
        return 0
    by_code = Counter((a["code"], a["severity"]) for a in alerts)
    summary = Table(title=f"{len(alerts)} early warnings on {settings.topics[RISK_ALERTS]}")
    for col in ("code", "severity", "count"):
        summary.add_column(col)
    for (code, severity), n in sorted(by_code.items()):
        summary.add_row(code, severity, str(n))
    console.print(summary)
    latest = Table(title=f"latest {min(limit, len(alerts))}")
    for col in ("triggered at", "customer", "loan", "severity", "title", "score", "tier"):
        latest.add_column(col)
    for a in alerts[-limit:]:
        latest.add_row(
            a["triggered_at"],
            a["customer_id"],
            a.get("loan_id") or "-",
            a["severity"],
            a["title"],
            str(a["risk_score"]),
            a["risk_tier"],
        )
    console.print(latest)
    return 0


# -- the alert path on Redis ----------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``alerts`` and its sub-commands on the console script's sub-parsers."""
    p = subparsers.add_parser("alerts", help="early warnings, silences, breakers and the outbox")
    sub = p.add_subparsers(dest="alerts_command", required=True)

    show_cmd = sub.add_parser("show", help="the warnings the workers published")
    show_cmd.add_argument("--limit", type=int, default=20, help="how many of the latest to list")
    show_cmd.add_argument("--json", action="store_true")
    show_cmd.set_defaults(func=_cmd_show)

    silence = sub.add_parser("silence", help="mute matching warnings for a while")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True)
    add = silence_sub.add_parser(
        "add",
        help="add a silence",
        description="Warnings matching every given matcher are recorded but nobody is told "
        "until the silence ends. Give at least one of --customer, --code, --severity, --match.",
    )
    add.add_argument("--customer", help="customer id")
    add.add_argument("--code", help="rule id or detector name")
    add.add_argument("--severity", choices=["info", "warning", "high", "critical"])
    add.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="MATCHER",
        help='any label matcher, e.g. "loan_id=L1" or "code=~dpd_[0-9]+" (repeatable)',
    )
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--duration", help="how long, e.g. 30m, 4h, 1d12h")
    until.add_argument("--until", help="when it ends, RFC 3339 with offset")
    add.add_argument("--author", required=True, help="who sets it")
    add.add_argument("--reason", required=True, help="why (kept with the silence)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=_cmd_silence_add)
    lst = silence_sub.add_parser("list", help="list silences, latest ending first")
    lst.add_argument("--state", choices=["pending", "active", "expired"])
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_cmd_silence_list)
    expire = silence_sub.add_parser("expire", help="end a silence now")
    expire.add_argument("silence_id", metavar="ID")
    expire.add_argument("--by", default=None, help="who ends it (default: your user name)")
    expire.add_argument("--json", action="store_true")
    expire.set_defaults(func=_cmd_silence_expire)

    breaker = sub.add_parser("breaker", help="circuit breakers of flooding rules")
    breaker_sub = breaker.add_subparsers(dest="breaker_command", required=True)
    blist = breaker_sub.add_parser("list", help="every rule's breaker, open ones first")
    blist.add_argument("--json", action="store_true")
    blist.set_defaults(func=_cmd_breaker_list)
    release = breaker_sub.add_parser("release", help="close a rule's breaker")
    release.add_argument("code", metavar="CODE")
    what = release.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--deliver", action="store_true", help="send the held warnings (through silences, dedup)"
    )
    what.add_argument("--discard", action="store_true", help="drop the held warnings")
    release.add_argument("--by", default=None, help="who releases it (default: your user name)")
    release.add_argument("--json", action="store_true")
    release.set_defaults(func=_cmd_breaker_release)

    outbox = sub.add_parser("outbox", help="messages waiting to be delivered, and dead ones")
    outbox.add_argument(
        "--requeue-dead",
        action="store_true",
        help="make every undeliverable message due again (e.g. after fixing the recipients)",
    )
    outbox.add_argument("--json", action="store_true")
    outbox.set_defaults(func=_cmd_outbox)
    return p


def _settings() -> Settings:
    from creditwatch.cli import _settings as load

    return load()


def _run(args: argparse.Namespace, job: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``job`` with an alert service over the workers' Redis."""
    settings = _settings()

    async def go() -> int:
        from redis.exceptions import RedisError

        from alerts.factory import redis_service

        redis = redis_client(settings.redis)
        try:
            service = redis_service(
                redis,
                prefix=settings.redis.key_prefix,
                notifiers={},  # sending is the workers' job
                config=settings.alert_delivery.policy,
                owner=f"cli:{getpass.getuser()}",
            )
            return await job(service)
        except (RedisError, OSError) as exc:
            print(f"creditwatch alerts: Redis is not reachable: {exc}", file=sys.stderr)
            return 1
        finally:
            await redis.aclose()

    return asyncio.run(go())


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _user(given: str | None) -> str:
    return given or getpass.getuser()


def _silence_table(silences: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("id", "state", "matchers", "ends", "by", "reason"):
        table.add_column(col)
    for s in silences:
        table.add_row(
            s["id"],
            s["state"],
            ", ".join(s["matchers"]),
            s["ends_at"],
            s["created_by"] + (f" (expired by {s['expired_by']})" if s["expired_by"] else ""),
            s["comment"],
        )
    return table


def _cmd_show(args: argparse.Namespace) -> int:
    return asyncio.run(show(_settings(), limit=args.limit, as_json=args.json))


def _cmd_silence_add(args: argparse.Namespace) -> int:
    from alerts import admin
    from alerts.matchers import Matcher

    matchers = list(args.match)
    if args.customer:
        matchers.append(str(Matcher(name="customer_id", op="=", value=args.customer)))
    if args.code:
        matchers.append(str(Matcher(name="code", op="=", value=args.code)))
    if args.severity:
        matchers.append(str(Matcher(name="severity", op="=", value=args.severity)))
    if not matchers:
        print(
            "creditwatch alerts silence add: give at least one of --customer, --code, "
            "--severity, --match",
            file=sys.stderr,
        )
        return 2
    ends_at = None
    if args.until:
        try:
            ends_at = datetime.fromisoformat(args.until)
        except ValueError:
            ends_at = None
        if ends_at is None or ends_at.tzinfo is None:
            print(
                f"creditwatch alerts silence add: --until {args.until!r} is not an RFC 3339 "
                "time with an offset (e.g. 2026-03-01T18:00:00+08:00)",
                file=sys.stderr,
            )
            return 2

    async def job(service: Any) -> int:
        try:
            silence = await admin.create_silence(
                service,
                matchers=matchers,
                created_by=args.author,
                comment=args.reason,
                duration=args.duration,
                ends_at=ends_at,
            )
        except ValueError as exc:
            print(f"creditwatch alerts silence add: {exc}", file=sys.stderr)
            return 2
        if args.json:
            _print_json(silence)
        else:
            Console().print(_silence_table([silence], "silence added"))
        return 0

    return _run(args, job)


def _cmd_silence_list(args: argparse.Namespace) -> int:
    from alerts import admin

    async def job(service: Any) -> int:
        silences = await admin.list_silences(service, args.state)
        if args.json:
            _print_json(silences)
        else:
            Console(width=max(Console().width, 140)).print(
                _silence_table(silences, f"{len(silences)} silences")
            )
        return 0

    return _run(args, job)


def _cmd_silence_expire(args: argparse.Namespace) -> int:
    from alerts import admin
    from alerts.silences import SilenceError

    async def job(service: Any) -> int:
        try:
            silence = await admin.expire_silence(service, args.silence_id, by=_user(args.by))
        except SilenceError as exc:
            print(f"creditwatch alerts silence expire: {exc}", file=sys.stderr)
            return 1
        if args.json:
            _print_json(silence)
        else:
            print(f"silence {silence['id']} expired by {silence['expired_by']}")
        return 0

    return _run(args, job)


def _cmd_breaker_list(args: argparse.Namespace) -> int:
    from alerts import admin

    async def job(service: Any) -> int:
        breakers = await admin.breaker_status(service)
        if args.json:
            _print_json(breakers)
            return 0
        table = Table(title=f"{len(breakers)} circuit breakers")
        for col in ("rule", "state", "customers/window", "trip at", "held", "since", "closed by"):
            table.add_column(col)
        for b in breakers:
            table.add_row(
                b["code"],
                b["state"],
                str(b["customers_in_window"]),
                str(b["trip_at"]),
                str(b["held"]),
                b["opened_at"] or "-",
                b["closed_by"] or "-",
            )
        Console().print(table)
        return 0

    return _run(args, job)


def _cmd_breaker_release(args: argparse.Namespace) -> int:
    from alerts import admin

    async def job(service: Any) -> int:
        try:
            result = await admin.release_breaker(
                service, args.code, by=_user(args.by), deliver=args.deliver
            )
        except KeyError as exc:
            print(f"creditwatch alerts breaker release: {exc.args[0]}", file=sys.stderr)
            return 1
        if args.json:
            _print_json(result)
        elif result["delivered"]:
            print(
                f"breaker of {result['code']} closed: {result['released']} held warnings "
                f"released, {result['queued']} queued for the desk"
            )
        else:
            print(
                f"breaker of {result['code']} closed: {result['released']} held warnings discarded"
            )
        return 0

    return _run(args, job)


def _cmd_outbox(args: argparse.Namespace) -> int:
    from alerts import admin

    async def job(service: Any) -> int:
        requeued = await admin.requeue_dead(service) if args.requeue_dead else None
        status = await admin.outbox_status(service)
        status["dead_count"] = await service.outbox.dead_count()  # "dead" lists at most 20
        if requeued is not None:
            status["requeued"] = requeued
        if args.json:
            _print_json(status)
            return 0
        print(f"pending: {status['pending']}  undeliverable: {status['dead_count']}")
        if requeued is not None:
            print(f"requeued: {requeued}")
        if status["dead"]:
            table = Table(title="undeliverable messages")
            for col in ("id", "receiver", "kind", "attempts", "created", "error"):
                table.add_column(col)
            for m in status["dead"]:
                table.add_row(
                    m["id"],
                    m["receiver"],
                    m["kind"],
                    str(m["attempts"]),
                    m["created_at"],
                    m["error"],
                )
            Console(width=max(Console().width, 140)).print(table)
        return 0

    return _run(args, job)
