"""``creditwatch replay``: the worker's processing over a file, in one process, no Kafka.

Events are taken in ``occurred_at`` order (ties keep file order). Time passes
as in the worker: customers are sharded as the worker's partitions shard them
(``CREDITWATCH_KAFKA__TOPIC_PARTITIONS``), each shard's servicing feed sets its
watermark, and time passes for a customer only to a local midnight: before each
of its non-servicing events to the last one before the watermark, and
whenever the stream crosses a UTC midnight every customer in arrears likewise
(the worker's tick). At the end everyone is advanced to the last local
midnight before the latest ``occurred_at`` in the file (their own later
servicing events aside), which is what ``state.jsonl`` shows. Warnings carry
the exact instant a threshold was crossed, so they are the same whatever the
tick cadence, and the same as the worker's.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from config.settings import Settings
from risk.judge import Judge, build_judge
from risk.processor import Processor, Source
from risk.store import MemoryStateStore, OutboxRecord
from rules.engine import CompiledRuleSet
from schemas.codec import InvalidEvent, decode_event, encode
from schemas.topics import COLLECTIONS_TASKS, DEAD_LETTER, RELATED, RISK_ALERTS, RISK_STATE
from streams.partitioning import partition_for

OUTPUT_FILES = {
    RISK_ALERTS: "alerts.jsonl",
    COLLECTIONS_TASKS: "collections-tasks.jsonl",
    DEAD_LETTER: "dead-letter.jsonl",
}


@dataclass
class ReplaySummary:
    """Counts a person (and the tests) can check after a replay."""

    lines: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    tasks_cancelled: int = 0
    state_changes: int = 0
    customers: int = 0
    as_of: datetime | None = None
    rule_set_version: str | None = None
    rule_errors: Counter[str] = field(default_factory=Counter)


class _Outputs:
    """The open output files of one replay."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = out_dir
        self.files = {topic: (out_dir / name).open("wb") for topic, name in OUTPUT_FILES.items()}
        self.scores = (out_dir / "scores.jsonl").open("wb")

    def write(self, records: list[OutboxRecord], summary: ReplaySummary) -> list[bytes]:
        """Write outputs; returns the internal related-party events to process next."""
        internal: list[bytes] = []
        for rec in records:
            if rec.topic == RELATED:
                internal.append(rec.value)
                continue
            if rec.topic == RISK_STATE:
                summary.state_changes += 1
                continue
            self.files[rec.topic].write(rec.value + b"\n")
            if rec.topic == RISK_ALERTS:
                summary.alerts[orjson.loads(rec.value)["code"]] += 1
            elif rec.topic == COLLECTIONS_TASKS:
                if orjson.loads(rec.value).get("status") == "cancelled":
                    summary.tasks_cancelled += 1
                else:
                    summary.tasks += 1
        return internal

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.scores.close()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


async def run_replay(
    events_path: Path,
    out_dir: Path,
    settings: Settings,
    *,
    store: Any | None = None,
    console: Console | None = None,
    rule_set: CompiledRuleSet | None = None,
) -> ReplaySummary:
    """Replay ``events_path`` into ``out_dir``; ``store`` defaults to memory.

    ``rule_set`` judges with a candidate rule set instead of the configured
    one (a backtest); the rest of the processing is the worker's.
    """
    console = console or Console(stderr=True)
    store = store if store is not None else MemoryStateStore()
    engine = build_judge(settings, rule_set=rule_set)
    partitions = settings.kafka.topic_partitions
    processor = Processor(
        engine,
        store,
        shard_of=lambda customer_id: partition_for(customer_id, partitions),
        remember_events=settings.redis.dedup_events_per_customer,
    )
    summary = ReplaySummary()
    if engine.rules is not None:
        current = engine.rules()
        summary.rule_set_version = current.version if current is not None else None
    outputs = _Outputs(out_dir)
    source_name = events_path.name
    try:
        valid: list[tuple[datetime, int, Any, bytes]] = []
        with events_path.open("rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                raw = line.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                summary.lines += 1
                try:
                    event = decode_event(raw)
                except InvalidEvent as err:
                    await processor.reject(raw, err, Source(source_name, None, line_no))
                    summary.dead_letters += 1
                    continue
                valid.append((event.occurred_at, line_no, event, raw))
        outputs.write(await _drain(store, partitions), summary)
        valid.sort(key=lambda item: (item[0], item[1]))
        console.print(
            f"replay: {summary.lines} events read from {events_path}, "
            f"{summary.dead_letters} invalid"
        )

        last_tick: datetime | None = None
        with _progress(console) as bar:
            task = bar.add_task("replaying", total=len(valid))
            for i, (occurred_at, line_no, event, raw) in enumerate(valid):
                day = occurred_at.astimezone(UTC).date()
                midnight = datetime.combine(day, time(0), tzinfo=UTC)
                if last_tick is None or midnight > last_tick:
                    if last_tick is not None:
                        await processor.tick()  # each shard to its watermark, as the worker
                        await _settle(processor, store, outputs, summary)
                    last_tick = midnight
                result = await processor.process(event, raw, Source(source_name, None, line_no))
                if result.outcome == "applied":
                    summary.applied += 1
                elif result.outcome == "duplicate":
                    summary.duplicates += 1
                else:
                    summary.dead_letters += 1
                scores: dict[str, Any] = {
                    "event_id": event.event_id,
                    "customer_id": event.customer_id,
                }
                if result.produced is not None:
                    scores.update((k, round(v, 6)) for k, v in result.produced.scores.items())
                    for failure in result.produced.rule_errors:
                        summary.rule_errors[failure.rule_id] += 1
                outputs.scores.write(orjson.dumps(scores) + b"\n")
                await _settle(processor, store, outputs, summary)
                if i % 500 == 0:
                    bar.update(task, completed=i + 1)
            bar.update(task, completed=len(valid))

        if valid:
            summary.as_of = max(item[0] for item in valid)
            await processor.tick(summary.as_of)
            await _settle(processor, store, outputs, summary)
        await _write_state(store, engine, out_dir, summary)
    finally:
        outputs.close()
    _write_report(out_dir, summary)
    return summary


async def _drain(store: Any, shards: int) -> list[OutboxRecord]:
    """Every pending output of every shard (the memory store keeps one outbox)."""
    records: list[OutboxRecord] = []
    for shard in range(shards):
        records += await store.drain(shard)
    return records


async def _settle(
    processor: Processor, store: Any, outputs: _Outputs, summary: ReplaySummary
) -> None:
    """Write pending outputs, and apply the related-party events they announce.

    In the worker these travel through Kafka to the affected customer's
    partition; in replay they are applied at once, before the next input.
    """
    partitions = processor.engine.settings.kafka.topic_partitions
    internal = outputs.write(await _drain(store, partitions), summary)
    while internal:
        # Shard by shard (see Processor.tick): the same output order on either store.
        internal.sort(key=lambda raw: processor.shard_of(orjson.loads(raw)["customer_id"]))
        for raw in internal:
            await processor.handle(raw, Source("related", None, None), internal=True)
        internal = outputs.write(await _drain(store, partitions), summary)


async def _write_state(store: Any, engine: Judge, out_dir: Path, summary: ReplaySummary) -> None:
    with (out_dir / "state.jsonl").open("wb") as fh:
        for customer_id in await store.customer_ids():
            state = await store.load(customer_id)
            if state is None:
                continue
            fh.write(encode(engine.summary(state)) + b"\n")
            summary.customers += 1


def _write_report(out_dir: Path, summary: ReplaySummary) -> None:
    """A small static page for a person; richer reporting builds on the same files."""
    rows = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{n}</td></tr>"
        for code, n in sorted(summary.alerts.items())
    )
    tiers: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    top: list[dict[str, Any]] = []
    with (out_dir / "state.jsonl").open("rb") as fh:
        for line in fh:
            state = orjson.loads(line)
            tiers[state["risk_tier"]] += 1
            classes[state["loan_class"]] += 1
            top.append(state)
    top.sort(key=lambda s: (-s["risk_score"], s["customer_id"]))
    top_rows = "".join(
        f"<tr><td>{html.escape(s['customer_id'])}</td><td>{s['risk_score']}</td>"
        f"<td>{s['risk_tier']}</td><td>{s['loan_class']}</td><td>{s['max_dpd']}</td></tr>"
        for s in top[:20]
    )
    dist = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in sorted(tiers.items()))
    cls = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in sorted(classes.items()))
    as_of = summary.as_of.isoformat() if summary.as_of else "-"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>creditwatch replay report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head>
<body><h1>creditwatch replay report</h1>
<p>As of {html.escape(as_of)}: {summary.lines} events read, {summary.applied} applied,
{summary.duplicates} duplicates, {summary.dead_letters} dead letters;
{sum(summary.alerts.values())} warnings, {summary.tasks} collections tasks
({summary.tasks_cancelled} called off),
{summary.customers} customers.</p>
<h2>Warnings by code</h2><table><tr><th>code</th><th>count</th></tr>{rows}</table>
<h2>Customers by tier</h2><ul>{dist}</ul>
<h2>Customers by loan class</h2><ul>{cls}</ul>
<h2>Riskiest customers</h2><table><tr><th>customer</th><th>score</th><th>tier</th>
<th>class</th><th>max DPD</th></tr>{top_rows}</table>
</body></html>
"""
    (out_dir / "report.html").write_text(page, encoding="utf-8")
