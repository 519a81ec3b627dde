"""``creditwatch evaluate``: how well the detectors find what they exist for.

A labelled stream is simulated (a random book for the population and its
defaults, plus several copies of the detector scenarios, each with its ground
truth), taken in ``occurred_at`` order as replay takes it, and run through
:class:`risk.engine.Engine` and :class:`detectors.stack.Stack` exactly as the
processing path runs them: per event the detectors score it *before* the
engine applies it, learning as they go, and nothing about the future is known
when an event is scored (prequential evaluation). The scoring loop is the one
function :func:`score_stream`, so the product's replay path can stand in for
it. Labels are then read from the stream and the scenarios' truth:

* ``fraud``: every transaction an ``outcome.fraud_confirmed`` names is a
  positive; the case starts at the first of them and is labelled when the
  first confirmation arrives;
* ``default``: a customer with ``outcome.default`` or ``loan.written_off``;
  each of their events in the ``--horizon-days`` before it is a positive (the
  events after it are left out: the answer is known by then). A book customer
  the simulator made to fail whose default falls after the end of the stream
  is left out too (the outcome is censored, not a "no");
* ``drift``: the ``spending_drift`` scenario's drifting purchases; the case
  starts where the drift starts and is labelled when it is complete.

Per detector and label (only where the detector scored a positive): ROC AUC
over the events it scored; precision among its top ``--budget`` share of
scores (the alert budget); its own flags (threshold crossings): how many (the
alert rate), their precision and recall; and per case, whether a flag fell
in the case window and how long before the labelled moment the first one
came (the lead time, in days; negative when it came after). The default
probability model is one of the detectors: it scores servicing events.

A table goes to stdout and the whole report, as JSON, to ``--out``.
"""

from __future__ import annotations

import argparse
import bisect
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, book_truth, iter_book
from creditwatch.simulate.scenarios import SCENARIOS, build_scenario
from detectors.stack import Finding, Stack
from risk.customer import CustomerState
from risk.engine import Engine
from schemas.codec import decode_event

__all__ = [
    "DEFAULT_SCENARIOS",
    "Case",
    "Labels",
    "add_parser",
    "evaluate",
    "format_table",
    "labels_from",
    "run",
    "score_stream",
    "simulate",
]

DEFAULT_SCENARIOS = ("spending_drift", "account_takeover")
KINDS = ("fraud", "default", "drift")


# --------------------------------------------------------------------------- the stream


def simulate(
    *,
    customers: int = 300,
    months: int = 6,
    seed: int = 7,
    scenarios: Sequence[str] = DEFAULT_SCENARIOS,
    copies: int = 5,
) -> tuple[list[Any], list[tuple[str, dict[str, Any]]]]:
    """Decoded events of a book plus ``copies`` of each scenario, in ``occurred_at`` order.

    Copy ``k`` of a scenario has seed ``seed + k`` and ids prefixed ``E<k>-``,
    so copies tell different stories and never share an id. Returns the
    events and each copy's (scenario name, truth), the book's behaviour
    classes first (as ``("book", {customer: class})``).
    """
    raw: list[dict[str, Any]] = []
    truths: list[tuple[str, dict[str, Any]]] = []
    if customers:
        config = BookConfig(seed=seed, customers=customers, months=months)
        raw.extend(iter_book(config))
        truths.append(("book", book_truth(config)))
    for name in scenarios:
        for k in range(copies):
            scenario = build_scenario(name, seed=seed + k, prefix=f"E{k}-")
            raw.extend(scenario.events)
            truths.append((name, scenario.truth))
    events = [decode_event(orjson.dumps(e)) for e in raw]
    return ordered(events), truths


def ordered(events: Iterable[Any]) -> list[Any]:
    """Events in ``occurred_at`` order, ties in the order given (as replay takes a file)."""
    return [e for _, _, e in sorted((e.occurred_at, i, e) for i, e in enumerate(events))]


def score_stream(
    events: Iterable[Any], engine: Engine, stack: Stack
) -> Iterator[tuple[Any, list[Finding]]]:
    """Each event with the detectors' findings on it, as the processing path makes them.

    Per event: the detectors score (and learn from) it against the customer as
    they stood before it, feedback events reach the detectors that flagged
    what they name, then the engine applies it. Customer states and detector
    models live in memory for the length of the stream. Events for related
    customers that the engine announces (contagion) are not replayed: no
    detector scores them.
    """
    states: dict[str, CustomerState] = {}
    dets: dict[str, dict[str, Any]] = {}
    for event in events:
        st = states.get(event.customer_id)
        if st is None:
            st = states[event.customer_id] = CustomerState(customer_id=event.customer_id)
        det = getattr(st, "det", None)  # the state's own, where it keeps the models
        if not isinstance(det, dict):
            det = dets.setdefault(event.customer_id, {})
        findings = stack.observe(event, st, det)
        if event.type in ("alert.feedback", "outcome.fraud_confirmed"):
            stack.feedback(event, det)
        engine.apply(st, event)
        yield event, findings


# --------------------------------------------------------------------------- labels


@dataclass
class Case:
    """One labelled incident: whose, what kind, when it started and when it was known."""

    kind: str
    customer_id: str
    start: datetime
    labelled_at: datetime
    positives: frozenset[str] | None = None  # event ids; None: every event in the window


@dataclass
class Labels:
    """Event labels per kind, derived from the cases."""

    cases: list[Case]
    horizon: timedelta
    censored: frozenset[str] = frozenset()  # customers whose default label is unknown
    _by_customer: dict[str, list[Case]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for case in self.cases:
            self._by_customer.setdefault(case.customer_id, []).append(case)

    def label(self, kind: str, event: Any) -> bool | None:
        """Whether ``event`` is a positive of ``kind``; None when it is left out."""
        if kind == "default" and event.customer_id in self.censored:
            return None
        for case in self._by_customer.get(event.customer_id, ()):
            if case.kind != kind:
                continue
            if case.positives is not None:
                if event.event_id in case.positives:
                    return True
            elif event.occurred_at >= case.labelled_at:
                return None
            elif event.occurred_at >= case.start:
                return True
        return False


def labels_from(
    events: Sequence[Any],
    truths: Iterable[tuple[str, dict[str, Any]]],
    *,
    horizon_days: float = 120.0,
) -> Labels:
    """The cases the stream's outcome events and the scenarios' truth describe."""
    horizon = timedelta(days=horizon_days)
    at = {e.event_id: e.occurred_at for e in events}
    cases: list[Case] = []
    fraud: dict[str, list[Any]] = defaultdict(list)
    defaulted: dict[str, datetime] = {}
    for e in events:
        if e.type == "outcome.fraud_confirmed" and e.transaction_event_id in at:
            fraud[e.customer_id].append(e)
        elif e.type in ("outcome.default", "loan.written_off"):
            defaulted.setdefault(e.customer_id, e.occurred_at)
    for customer, confirmations in fraud.items():
        named = frozenset(c.transaction_event_id for c in confirmations)
        cases.append(
            Case(
                "fraud",
                customer,
                start=min(at[i] for i in named),
                labelled_at=min(c.occurred_at for c in confirmations),
                positives=named,
            )
        )
    for customer, when in defaulted.items():
        cases.append(Case("default", customer, start=when - horizon, labelled_at=when))
    failing = ("failing_then_default", "written_off")
    censored: set[str] = set()
    for name, truth in truths:
        if name == "book":
            censored |= {c for c, kind in truth.items() if kind in failing} - defaulted.keys()
        elif name == "spending_drift":
            cases.append(
                Case(
                    "drift",
                    truth["subject"],
                    start=datetime.fromisoformat(truth["drift_start_at"]),
                    labelled_at=datetime.fromisoformat(truth["drift_full_at"]),
                    positives=frozenset(truth["drift_event_ids"]),
                )
            )
    return Labels(cases, horizon, censored=frozenset(censored))


# --------------------------------------------------------------------------- metrics


@dataclass
class _Scored:
    """What one detector said about the events it scored, in stream order."""

    scores: list[float] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC AUC by ranks (ties share their mean rank); None without both classes.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    >>> roc_auc([1.0, 1.0], [False, True])
    0.5
    """
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2.0 + 1.0
        rank_sum += mean_rank * sum(labels[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def evaluate(
    events: Sequence[Any],
    labels: Labels,
    *,
    stack: Stack | None = None,
    engine: Engine | None = None,
    budget: float = 0.01,
) -> dict[str, Any]:
    """Run the stream prequentially and measure every detector against every label kind."""
    stack = stack if stack is not None else Stack()
    engine = engine if engine is not None else Engine(Settings())
    seen: dict[str, _Scored] = defaultdict(_Scored)
    for event, findings in score_stream(events, engine, stack):
        for f in findings:
            s = seen[f.detector]
            s.scores.append(f.score)
            s.flagged.append(f.flagged)
            s.events.append(event)
    rows = []
    for detector in sorted(seen):
        s = seen[detector]
        for kind in KINDS:
            row = _row(detector, kind, s, labels, budget)
            if row is not None:
                rows.append(row)
    customers = {e.customer_id for e in events}
    return {
        "stream": {
            "events": len(events),
            "customers": len(customers),
            "transactions": sum(e.type == "transaction.posted" for e in events),
            "first": events[0].occurred_at.isoformat() if events else None,
            "last": events[-1].occurred_at.isoformat() if events else None,
        },
        "budget": budget,
        "horizon_days": labels.horizon.total_seconds() / 86400,
        "cases": {k: sum(c.kind == k for c in labels.cases) for k in KINDS},
        "rows": rows,
    }


def _row(
    detector: str, kind: str, s: _Scored, labels: Labels, budget: float
) -> dict[str, Any] | None:
    keep = [(i, y) for i, e in enumerate(s.events) if (y := labels.label(kind, e)) is not None]
    ys = [y for _, y in keep]
    positives = sum(ys)
    if not positives:
        return None
    scores = [s.scores[i] for i, _ in keep]
    flagged = [s.flagged[i] for i, _ in keep]
    n = len(keep)
    k = max(1, math.ceil(budget * n))
    top = sorted(range(n), key=lambda j: (-scores[j], j))[:k]
    n_flagged = sum(flagged)
    true_flags = sum(1 for j in range(n) if flagged[j] and ys[j])
    leads = _lead_times(detector, kind, s, labels)
    detected = [lead for lead in leads if lead is not None]
    auc = roc_auc(scores, ys)
    return {
        "detector": detector,
        "label": kind,
        "events": n,
        "positives": positives,
        "auc": None if auc is None else round(auc, 4),
        "budget_k": k,
        "precision_at_budget": round(sum(ys[j] for j in top) / k, 4),
        "flagged": n_flagged,
        "alert_rate": round(n_flagged / n, 6),
        "precision_at_flags": round(true_flags / n_flagged, 4) if n_flagged else None,
        "recall_at_flags": round(true_flags / positives, 4),
        "cases": len(leads),
        "cases_detected": len(detected),
        "lead_days_median": round(statistics.median(detected), 2) if detected else None,
        "lead_days": [round(d, 2) for d in detected],
    }


def _lead_times(detector: str, kind: str, s: _Scored, labels: Labels) -> list[float | None]:
    """Per case of ``kind``: days from the first flag in its window to its labelled moment."""
    flags: dict[str, list[datetime]] = defaultdict(list)
    for e, flagged in zip(s.events, s.flagged, strict=True):
        if flagged:
            flags[e.customer_id].append(e.occurred_at)
    out: list[float | None] = []
    for case in labels.cases:
        if case.kind != kind:
            continue
        times = flags.get(case.customer_id, [])
        i = bisect.bisect_left(times, case.start)
        first = times[i] if i < len(times) else None
        if first is None or (case.kind == "default" and first >= case.labelled_at):
            out.append(None)
        else:
            out.append((case.labelled_at - first).total_seconds() / 86400.0)
    return out


# --------------------------------------------------------------------------- output


COLUMNS = (
    ("detector", "detector", 20),
    ("label", "label", 8),
    ("events", "events", 7),
    ("positives", "pos", 5),
    ("auc", "AUC", 6),
    ("precision_at_budget", "P@budget", 8),
    ("alert_rate", "alerts%", 8),
    ("precision_at_flags", "P@flags", 7),
    ("recall_at_flags", "R@flags", 7),
    ("cases_detected", "caught", 6),
    ("lead_days_median", "lead d", 7),
)


def format_table(report: dict[str, Any]) -> str:
    """The report's rows as a fixed-width text table."""

    def cell(row: dict[str, Any], key: str) -> str:
        value = row[key]
        if value is None:
            return "-"
        if key == "alert_rate":
            return f"{100 * value:.2f}"
        if key == "cases_detected":
            return f"{value}/{row['cases']}"
        if isinstance(value, float):
            return f"{value:.3f}" if key != "lead_days_median" else f"{value:.1f}"
        return str(value)

    lines = [
        " ".join(
            f"{title:>{w}}" if i > 1 else f"{title:<{w}}" for i, (_, title, w) in enumerate(COLUMNS)
        )
    ]
    for row in report["rows"]:
        lines.append(
            " ".join(
                f"{cell(row, key):>{w}}" if i > 1 else f"{cell(row, key):<{w}}"
                for i, (key, _, w) in enumerate(COLUMNS)
            )
        )
    stream = report["stream"]
    cases = ", ".join(f"{k} {v}" for k, v in report["cases"].items())
    lines.append(
        f"{stream['events']} events, {stream['customers']} customers; cases: {cases}; "
        f"budget: top {100 * report['budget']:g}% of each detector's scores"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("must be within (0, 1]")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on an ``argparse`` sub-parsers object; ``func`` is :func:`run`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="measure the detectors on a labelled simulated stream",
        description=(
            "Simulate a labelled stream (a random book plus detector scenarios), score it "
            "prequentially through the engine and the detectors, and report per detector "
            "ROC AUC, precision at the alert budget, alert rate and lead time."
        ),
    )
    parser.add_argument("--customers", type=_count, default=300, help="book customers")
    parser.add_argument("--months", type=int, default=6, help="book horizon in months")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"scenario to add (repeatable; default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--copies", type=_count, default=5, help="copies of each scenario (default 5)"
    )
    parser.add_argument(
        "--budget",
        type=_fraction,
        default=0.01,
        help="alert budget: share of each detector's top scores (default 0.01)",
    )
    parser.add_argument(
        "--horizon-days",
        type=float,
        default=120.0,
        help="events this long before a default count as its positives (default 120)",
    )
    parser.add_argument("--out", metavar="FILE.json", help="write the report as JSON here")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """``creditwatch evaluate``: simulate, score, print the table, write the JSON report."""
    scenarios = tuple(args.scenario) if args.scenario else DEFAULT_SCENARIOS
    events, truths = simulate(
        customers=args.customers,
        months=args.months,
        seed=args.seed,
        scenarios=scenarios,
        copies=args.copies,
    )
    labels = labels_from(events, truths, horizon_days=args.horizon_days)
    report = evaluate(events, labels, budget=args.budget)
    report["stream"].update(
        seed=args.seed,
        book_customers=args.customers,
        months=args.months,
        scenarios=list(scenarios),
        copies=args.copies,
    )
    print(format_table(report))
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"report written to {args.out}", file=sys.stderr)
    return 0
