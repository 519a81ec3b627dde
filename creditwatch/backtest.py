"""Backtesting rule sets: ``creditwatch replay EVENTS --compare FILE_A FILE_B``.

The desk changes a threshold and wants to know, before publishing, what it
would have changed: which warnings appear and disappear, rule by rule, and,
when the history carries outcomes (``outcome.default``, ``loan.written_off``),
whether the warnings that remain point at customers who really defaulted and
how long before the default they came. Both rule sets judge the same events
through the same replay, and alert ids are stable (customer, rule, dedup key,
event), so "the same warning" means the same id under both.

Precision here is per rule: of the customers a rule warned about, the share
with a recorded default *after* the first warning. Lead time is the median
number of days from that first warning to the default, over those customers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from config.settings import Settings
from creditwatch.replay import run_replay
from rules.engine import CompiledRuleSet

RULE_SOURCES = frozenset({"rule", "contagion"})
DEFAULT_EVENTS = frozenset({"outcome.default", "loan.written_off"})


@dataclass
class RuleFigures:
    """What one rule set's warnings of one rule amount to."""

    warnings: int = 0
    customers: int = 0
    defaulted_after: int = 0
    lead_days: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.defaulted_after / self.customers if self.customers else None

    @property
    def median_lead_days(self) -> float | None:
        return round(statistics.median(self.lead_days), 1) if self.lead_days else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "warnings": self.warnings,
            "customers": self.customers,
            "defaulted_after": self.defaulted_after,
            "precision": None if self.precision is None else round(self.precision, 4),
            "median_lead_days": self.median_lead_days,
        }


def defaults_in(events_path: Path) -> dict[str, datetime]:
    """Each customer's first recorded default in the file (the labels)."""
    first: dict[str, datetime] = {}
    with events_path.open("rb") as fh:
        for line in fh:
            if b"outcome.default" not in line and b"loan.written_off" not in line:
                continue
            try:
                ev = orjson.loads(line)
                if ev.get("type") not in DEFAULT_EVENTS:
                    continue
                at = datetime.fromisoformat(ev["occurred_at"])
                customer = ev["customer_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # replay dead-letters it; it is no label
            if customer not in first or at < first[customer]:
                first[customer] = at
    return first


def rule_alerts(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The rule-decided warnings a replay wrote, by alert id."""
    alerts: dict[str, dict[str, Any]] = {}
    with (out_dir / "alerts.jsonl").open("rb") as fh:
        for line in fh:
            alert = orjson.loads(line)
            if alert["source"] in RULE_SOURCES:
                alerts[alert["alert_id"]] = alert
    return alerts


def figures(
    alerts: dict[str, dict[str, Any]], defaults: dict[str, datetime]
) -> dict[str, RuleFigures]:
    """Per rule: warnings, customers warned, and how they relate to later defaults."""
    first_warning: dict[str, dict[str, datetime]] = defaultdict(dict)
    per_rule: dict[str, RuleFigures] = defaultdict(RuleFigures)
    for alert in alerts.values():
        rule = alert["code"]
        per_rule[rule].warnings += 1
        at = datetime.fromisoformat(alert["triggered_at"])
        seen = first_warning[rule].get(alert["customer_id"])
        if seen is None or at < seen:
            first_warning[rule][alert["customer_id"]] = at
    for rule, customers in first_warning.items():
        fig = per_rule[rule]
        fig.customers = len(customers)
        for customer, warned_at in customers.items():
            defaulted = defaults.get(customer)
            if defaulted is not None and defaulted >= warned_at:
                fig.defaulted_after += 1
                fig.lead_days.append((defaulted - warned_at).total_seconds() / 86400)
    return dict(per_rule)


def compare_outputs(
    out_a: Path, out_b: Path, defaults: dict[str, datetime], *, names: tuple[str, str]
) -> dict[str, Any]:
    """The comparison of two replays of the same events, as plain data."""
    a, b = rule_alerts(out_a), rule_alerts(out_b)
    fig_a, fig_b = figures(a, defaults), figures(b, defaults)
    rules = sorted(set(fig_a) | set(fig_b) | {x["code"] for x in (*a.values(), *b.values())})
    per_rule = []
    for rule in rules:
        ids_a = {i for i, x in a.items() if x["code"] == rule}
        ids_b = {i for i, x in b.items() if x["code"] == rule}
        per_rule.append(
            {
                "rule": rule,
                "a": fig_a.get(rule, RuleFigures()).to_dict(),
                "b": fig_b.get(rule, RuleFigures()).to_dict(),
                "added": len(ids_b - ids_a),
                "removed": len(ids_a - ids_b),
                "added_ids": sorted(ids_b - ids_a)[:50],
                "removed_ids": sorted(ids_a - ids_b)[:50],
            }
        )
    return {
        "a": names[0],
        "b": names[1],
        "labelled_defaults": len(defaults),
        "warnings": {"a": len(a), "b": len(b)},
        "added": len(set(b) - set(a)),
        "removed": len(set(a) - set(b)),
        "rules": per_rule,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def print_comparison(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"rules: A = {report['a']}  vs  B = {report['b']}")
    for column in ("rule", "A warnings", "B warnings", "added", "removed"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for column in ("A precision", "B precision", "A lead (d)", "B lead (d)"):
        table.add_column(column, justify="right")
    for row in report["rules"]:
        a, b = row["a"], row["b"]
        table.add_row(
            row["rule"],
            str(a["warnings"]),
            str(b["warnings"]),
            f"+{row['added']}" if row["added"] else "0",
            f"-{row['removed']}" if row["removed"] else "0",
            _pct(a["precision"]),
            _pct(b["precision"]),
            _days(a["median_lead_days"]),
            _days(b["median_lead_days"]),
        )
    console.print(table)
    console.print(
        f"{report['warnings']['a']} warnings with A, {report['warnings']['b']} with B: "
        f"{report['added']} added, {report['removed']} removed; "
        f"{report['labelled_defaults']} customers with a recorded default in the events"
    )


async def run_compare(
    events_path: Path,
    out_dir: Path,
    settings: Settings,
    rules_a: tuple[str, CompiledRuleSet],
    rules_b: tuple[str, CompiledRuleSet],
    *,
    console: Console | None = None,
) -> dict[str, Any]:
    """Replay the events with each rule set into ``out_dir/a`` and ``out_dir/b`` and compare."""
    console = console or Console(stderr=True)
    for sub, (_name, rule_set) in (("a", rules_a), ("b", rules_b)):
        await run_replay(events_path, out_dir / sub, settings, console=console, rule_set=rule_set)
    report = compare_outputs(
        out_dir / "a",
        out_dir / "b",
        defaults_in(events_path),
        names=(
            f"{rules_a[0]} ({rules_a[1].version})",
            f"{rules_b[0]} ({rules_b[1].version})",
        ),
    )
    (out_dir / "compare.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
