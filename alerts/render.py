"""A digest as the risk desk reads it: subject, plain text and HTML.

One message per group. The top says whose it is (customer id, risk tier,
loan class, score) with a link to the customer's risk state; then each
warning, most severe first: what fired (title, code, severity, loan), whether
it is new, escalated, a reminder or resolved, *why* (the rule's reason, each
condition with its threshold and the value that crossed it, detector scores,
the other explanation fields), and a link to the warning in the API.

Everything taken from a warning's explanation, title or loan id goes through
:mod:`alerts.mask`; the customer id is the only identifier shown as is. The
rendering is deterministic (no "now"): a retried message is the same message.

>>> from datetime import UTC, datetime
>>> from schemas.outputs import RiskAlert
>>> a = RiskAlert(
...     alert_id="a-1", dedup_key="C1:dpd:30", customer_id="C1", loan_id="L1",
...     severity="warning", source="rule", code="dpd_30", title="DPD 30",
...     explanation={"route": "both", "why": "Arrears predict default.",
...                  "conditions": [{"feature": "dpd", "op": ">=", "threshold": 30,
...                                  "value": 31, "result": True}]},
...     risk_score=420, risk_tier="medium", loan_class="special_mention",
...     triggered_at=datetime(2026, 2, 10, tzinfo=UTC), evidence_event_ids=["e1"],
...     rule_set_version="v1", status="firing")
>>> explanation_lines(a.explanation)
['Arrears predict default.', 'dpd >= 30 (value 31)']
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import quote

from alerts.mask import is_sensitive_key, mask_text, mask_value
from alerts.model import SEVERITY_RANK, Notification
from alerts.outbox import OutboxMessage

__all__ = ["RenderedMessage", "explanation_lines", "render_digest", "render_notice"]

MAX_LINES_PER_WARNING = 25
MAX_VALUE_CHARS = 200
_SKIP_KEYS = frozenset({"route", "rule"})
_KIND_TEXT = {
    "firing": "new",
    "escalated": "escalated",
    "repeat": "still firing (reminder)",
    "resolved": "resolved",
}


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _condition(cond: Mapping[str, Any]) -> str:
    """``feature op threshold (value v)`` from one rule condition's description."""
    name_key = next((k for k in ("feature", "field", "score", "event") if k in cond), None)
    name = str(cond.get(name_key, "?")) if name_key else "?"
    sensitive = is_sensitive_key(name)

    def shown(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "[" + ", ".join(shown(v) for v in value) + "]"
        return mask_value(name if sensitive else "value", value)

    parts = [mask_text(name), str(cond.get("op", ""))]
    if "threshold" in cond:
        parts.append(shown(cond["threshold"]))
    text = " ".join(p for p in parts if p)
    extras = []
    if "value" in cond:
        extras.append(f"value {shown(cond['value'])}")
    if "before" in cond:
        extras.append(f"before {shown(cond['before'])}")
    if "error" in cond:
        extras.append(f"error: {mask_text(str(cond['error']))}")
    if extras:
        text += f" ({', '.join(extras)})"
    return _short(text)


def _flatten(prefix: str, value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    elif isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            out.append(
                f"{mask_text(prefix)}: {_short(', '.join(mask_value(prefix, v) for v in value))}"
            )
        else:
            for i, sub in enumerate(value):
                _flatten(f"{prefix}[{i}]", sub, out)
    elif value is None:
        out.append(f"{mask_text(prefix)}: -")
    else:
        out.append(f"{mask_text(prefix)}: {_short(mask_value(prefix, value))}")


def explanation_lines(explanation: Mapping[str, Any]) -> list[str]:
    """The reasons of a warning, one readable line each, masked."""
    lines: list[str] = []
    why = explanation.get("why")
    if isinstance(why, str) and why:
        lines.append(_short(mask_text(why)))
    conditions = explanation.get("conditions")
    if isinstance(conditions, list):
        lines += [_condition(c) for c in conditions if isinstance(c, Mapping)]
    scores = explanation.get("detector_scores")
    if isinstance(scores, Mapping) and scores:
        lines.append(
            "detector scores: "
            + ", ".join(f"{mask_text(str(k))} {v}" for k, v in sorted(scores.items()))
        )
    rest: list[str] = []
    for key, value in explanation.items():
        if key in _SKIP_KEYS or key in ("why", "conditions", "detector_scores"):
            continue
        _flatten(str(key), value, rest)
    lines += rest
    if len(lines) > MAX_LINES_PER_WARNING:
        hidden = len(lines) - MAX_LINES_PER_WARNING + 1
        lines = [*lines[: MAX_LINES_PER_WARNING - 1], f"… {hidden} more in the API"]
    return lines


def _order(notes: Sequence[Notification]) -> list[Notification]:
    return sorted(
        notes,
        key=lambda n: (
            n.kind == "resolved",
            -SEVERITY_RANK[n.alert.severity],
            n.alert.triggered_at,
            n.alert.alert_id,
        ),
    )


def _customer_url(base_url: str, customer_id: str) -> str:
    return f"{base_url}/customers/{quote(customer_id, safe='')}/risk"


def _alert_url(base_url: str, alert_id: str) -> str:
    return f"{base_url}/alerts/{quote(alert_id, safe='')}"


def _subject(prefix: str, notes: Sequence[Notification], who: str) -> str:
    firing = [n for n in notes if n.kind != "resolved"]
    if firing:
        top = max(firing, key=lambda n: SEVERITY_RANK[n.alert.severity]).alert.severity
        head = f"{top.upper()} {who}: {len(firing)} warning{'s' if len(firing) > 1 else ''}"
        resolved = len(notes) - len(firing)
        if resolved:
            head += f", {resolved} resolved"
    else:
        head = f"RESOLVED {who}: {len(notes)} warning{'s' if len(notes) > 1 else ''}"
    codes = ", ".join(dict.fromkeys(n.alert.code for n in _order(notes)))
    subject = f"{prefix} {head} ({mask_text(codes)})".strip()
    return subject if len(subject) <= 180 else subject[:179] + "…"


def render_digest(message: OutboxMessage, *, base_url: str, prefix: str) -> RenderedMessage:
    """Subject, plain text and HTML of one group's digest."""
    base_url = base_url.rstrip("/")
    notes = _order(message.notifications())
    if not notes:
        raise ValueError(f"digest {message.id} has no notifications")
    customers = list(dict.fromkeys(n.alert.customer_id for n in notes))
    one_customer = len(customers) == 1
    latest = max(notes, key=lambda n: (n.alert.triggered_at, n.at))
    who = f"customer {customers[0]}" if one_customer else f"{len(customers)} customers"
    subject = _subject(prefix, notes, who)

    text: list[str] = []
    body: list[str] = []
    e = html.escape
    if one_customer:
        a = latest.alert
        url = _customer_url(base_url, a.customer_id)
        text += [
            f"Early warnings for customer {a.customer_id}",
            f"Risk tier: {a.risk_tier} | Loan class: {a.loan_class} | Risk score: {a.risk_score}",
            f"Risk state: {url}",
            "",
        ]
        body += [
            f'<h2 style="margin:0 0 4px 0">Early warnings for customer {e(a.customer_id)}</h2>',
            '<table cellpadding="4" style="border-collapse:collapse;margin-bottom:12px">',
            f'<tr><th align="left">Risk tier</th><td>{e(a.risk_tier)}</td>'
            f'<th align="left">Loan class</th><td>{e(a.loan_class)}</td>'
            f'<th align="left">Risk score</th><td>{a.risk_score}</td></tr>',
            "</table>",
            f'<p><a href="{e(url)}">Customer risk state</a></p>',
        ]
    else:
        text += [f"Early warnings for {len(customers)} customers", ""]
        body.append(f"<h2>Early warnings for {len(customers)} customers</h2>")

    body.append("<ol>")
    for i, note in enumerate(notes, 1):
        a = note.alert
        title = mask_text(a.title)
        status = _KIND_TEXT[note.kind]
        since = note.firing_since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        facts = [f"Code: {a.code} ({a.source})"]
        if a.loan_id:
            facts.append(f"Loan: {mask_text(a.loan_id)}")
        facts.append(f"Triggered: {a.triggered_at.isoformat()}")
        if not one_customer:
            facts.insert(0, f"Customer: {a.customer_id} (tier {a.risk_tier}, class {a.loan_class})")
        reasons = explanation_lines(a.explanation)
        link = _alert_url(base_url, a.alert_id)
        text += [
            f"{i}. [{a.severity.upper()}] {title}",
            f"   Status: {status}; firing since {since}",
            f"   {' | '.join(facts)}",
        ]
        if reasons:
            text.append("   Why:")
            text += [f"     - {line}" for line in reasons]
        text.append(f"   Details: {link}")
        if not one_customer:
            text.append(f"   Customer risk state: {_customer_url(base_url, a.customer_id)}")
        text.append("")
        colour = {"critical": "#b00020", "high": "#d35400", "warning": "#b7950b"}.get(
            a.severity, "#555555"
        )
        body += [
            '<li style="margin-bottom:12px">',
            f'<p style="margin:0"><strong style="color:{colour}">[{e(a.severity.upper())}]'
            f"</strong> <strong>{e(title)}</strong></p>",
            f'<p style="margin:0">Status: {e(status)}; firing since {e(since)}</p>',
            f'<p style="margin:0">{e(" | ".join(facts))}</p>',
        ]
        if reasons:
            body.append('<p style="margin:4px 0 0 0">Why:</p><ul>')
            body += [f"<li>{e(line)}</li>" for line in reasons]
            body.append("</ul>")
        body.append(f'<p style="margin:0"><a href="{e(link)}">Warning details</a></p>')
        if not one_customer:
            body.append(
                f'<p style="margin:0"><a href="{e(_customer_url(base_url, a.customer_id))}">'
                "Customer risk state</a></p>"
            )
        body.append("</li>")
    body.append("</ol>")
    footer = "Sent by creditwatch to the risk desk. Account numbers are masked."
    text += ["-- ", footer]
    body.append(f'<p style="color:#777777;font-size:small">{e(footer)}</p>')
    html_doc = (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        + "\n".join(body)
        + "</body></html>"
    )
    return RenderedMessage(subject, "\n".join(text) + "\n", html_doc)


def render_notice(message: OutboxMessage, *, prefix: str) -> RenderedMessage:
    """Subject, plain text and HTML of an operational notice."""
    subject = f"{prefix} ops: {message.notice.get('subject', 'notice')}".strip()
    lines = [mask_text(str(line)) for line in message.notice.get("lines", [])]
    text = "\n".join(lines) + "\n"
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return RenderedMessage(
        subject,
        text,
        f'<!DOCTYPE html><html><body style="font-family:sans-serif">{body}</body></html>',
    )
