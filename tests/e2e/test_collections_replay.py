"""Collections tasks through ``creditwatch replay``: the customer's clock and calendar decide.

Customers in Los Angeles and Auckland are on the Chinese holiday calendar
(``CN``) and are judged by a process whose own time zone is UTC or Shanghai:
the server's clock must change nothing. In 2026 New Year's Day is a two-day
break (1-2 January), Saturday 3 January is an ordinary weekend day and
Sunday 4 January is a make-up working day. A loan that reaches the call stage
at local midnight on 1 January (inside the quiet hours, on a holiday) may be
called on Saturday the 3rd at 08:00 local time by default, and on Sunday the
4th at 08:00 when weekends are skipped: the make-up day is a working day.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import holidays
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
CONSENT = {"sms": True, "phone": True}


def event(event_id: str, type_: str, customer: str, at: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": type_,
        "customer_id": customer,
        "occurred_at": at,
        **fields,
    }


def customer(customer_id: str, zone: str, at: str) -> dict[str, Any]:
    return event(
        f"{customer_id}-profile",
        "customer.updated",
        customer_id,
        at,
        timezone=zone,
        holiday_calendar="CN",
        contact_consent=CONSENT,
    )


def instalment(customer_id: str, at: str, due_date: str, amount: str) -> dict[str, Any]:
    return event(
        f"{customer_id}-due",
        "installment.due",
        customer_id,
        at,
        loan_id=f"L-{customer_id}",
        installment_no=1,
        due_date=due_date,
        amount_due=amount,
        currency="CNY",
    )


def repayment(customer_id: str, at: str, amount: str) -> dict[str, Any]:
    return event(
        f"{customer_id}-pay",
        "repayment.received",
        customer_id,
        at,
        loan_id=f"L-{customer_id}",
        amount=amount,
        currency="CNY",
    )


EVENTS = [
    # Due on Christmas Eve: 1 day past due on the 25th (reminder), 8 on 1 January (call);
    # repaid in full on 5 January (the call is cancelled).
    customer("LA", "America/Los_Angeles", "2025-12-01T09:00:00-08:00"),
    instalment("LA", "2025-12-01T09:00:00-08:00", "2025-12-24", "300.00"),
    repayment("LA", "2026-01-05T10:00:00-08:00", "300.00"),
    # The same in Auckland, a day ahead of Los Angeles; a partial repayment leaves
    # the loan past due, so its call stays open.
    customer("NZ", "Pacific/Auckland", "2025-12-01T09:00:00+13:00"),
    instalment("NZ", "2025-12-01T09:00:00+13:00", "2025-12-24", "300.00"),
    repayment("NZ", "2026-01-05T10:00:00+13:00", "100.00"),
    # An instalment due on 20 December announced late, at 22:30 on New Year's Eve
    # (quiet hours; 06:30 on 1 January in UTC): 11 days past due, straight to a call.
    customer("LATE", "America/Los_Angeles", "2025-12-01T09:00:00-08:00"),
    instalment("LATE", "2025-12-31T22:30:00-08:00", "2025-12-20", "200.00"),
]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any creditwatch setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITWATCH_")}
    env.pop("TZ", None)
    return {**env, **extra}


def replay(events: Path, out: Path, env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """``creditwatch replay`` as a user runs it; the tasks by customer, in published order."""
    proc = subprocess.run(
        [sys.executable, "-m", "creditwatch", "replay", str(events), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    tasks: dict[str, list[dict[str, Any]]] = {}
    for line in (out / "collections-tasks.jsonl").read_bytes().splitlines():
        task = orjson.loads(line)
        tasks.setdefault(task["customer_id"], []).append(task)
    return tasks


def local_offset(env: dict[str, str]) -> str:
    """The UTC offset the process's own clock uses in ``env``."""
    code = "import time; print(time.strftime('%z', time.localtime(1767225600)))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def summary(tasks: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    return [(t["stage"], t["status"], t["not_before"], t["created_at"], t["reason"]) for t in tasks]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("collections") / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in EVENTS))
    return path


@pytest.fixture(scope="module")
def utc_server(events_file: Path) -> dict[str, list[dict[str, Any]]]:
    return replay(events_file, events_file.parent / "utc", clean_env(TZ="UTC"))


def test_the_calendar_facts_the_scenario_rests_on() -> None:
    cn = holidays.China(years=2026)
    assert date(2026, 1, 1) in cn and date(2026, 1, 2) in cn
    assert date(2026, 1, 3) not in cn and date(2026, 1, 3).weekday() == 5
    assert date(2026, 1, 4).weekday() == 6 and date(2026, 1, 4) in cn.weekend_workdays
    assert date(2025, 12, 25) not in cn


def test_not_before_skips_the_holiday_and_quiet_hours_in_the_customers_time(
    utc_server: dict[str, list[dict[str, Any]]],
) -> None:
    la, nz, late = utc_server["LA"], utc_server["NZ"], utc_server["LATE"]
    assert summary(la) == [
        (
            "reminder",
            "open",
            "2025-12-25T08:00:00-08:00",
            "2025-12-25T00:00:00-08:00",
            "loan L-LA reached 1 days past due: reminder stage",
        ),
        (
            "reminder",
            "cancelled",
            "2025-12-25T08:00:00-08:00",
            "2026-01-01T00:00:00-08:00",
            "escalated to call",
        ),
        (
            "call",
            "open",
            "2026-01-03T08:00:00-08:00",
            "2026-01-01T00:00:00-08:00",
            "loan L-LA reached 8 days past due: call stage",
        ),
        (
            "call",
            "cancelled",
            "2026-01-03T08:00:00-08:00",
            "2026-01-05T10:00:00-08:00",
            "cured: loan repaid to 0 DPD",
        ),
    ]
    assert [t["channel"] for t in la] == ["sms", "sms", "phone", "phone"]
    assert la[0]["task_id"] == la[1]["task_id"] and la[2]["task_id"] == la[3]["task_id"]
    assert (la[3]["dpd"], la[3]["overdue_amount"]) == (0, "0")
    # The same local rules, thirteen hours ahead of UTC (New Year's Day starts
    # there at 11:00 UTC on 31 December).
    assert summary(nz) == [
        (
            "reminder",
            "open",
            "2025-12-25T08:00:00+13:00",
            "2025-12-25T00:00:00+13:00",
            "loan L-NZ reached 1 days past due: reminder stage",
        ),
        (
            "reminder",
            "cancelled",
            "2025-12-25T08:00:00+13:00",
            "2026-01-01T00:00:00+13:00",
            "escalated to call",
        ),
        (
            "call",
            "open",
            "2026-01-03T08:00:00+13:00",
            "2026-01-01T00:00:00+13:00",
            "loan L-NZ reached 8 days past due: call stage",
        ),
    ]
    assert instant(nz[2]["not_before"]) == datetime(2026, 1, 2, 19, 0, tzinfo=UTC)
    # 22:30 is quiet: the next morning is New Year's Day, then the 2nd, both holidays.
    assert summary(late) == [
        (
            "call",
            "open",
            "2026-01-03T08:00:00-08:00",
            "2025-12-31T22:30:00-08:00",
            "loan L-LATE reached 11 days past due: call stage",
        )
    ]
    assert instant(late[0]["not_before"]) == datetime(2026, 1, 3, 16, 0, tzinfo=UTC)


def test_the_servers_own_time_zone_changes_nothing(
    events_file: Path, utc_server: dict[str, list[dict[str, Any]]]
) -> None:
    env = clean_env(TZ="Asia/Shanghai")
    assert local_offset(env) == "+0800"  # the replay below really runs on Shanghai time
    shanghai = replay(events_file, events_file.parent / "shanghai", env)
    assert shanghai == utc_server
    utc_bytes = (events_file.parent / "utc" / "collections-tasks.jsonl").read_bytes()
    assert (events_file.parent / "shanghai" / "collections-tasks.jsonl").read_bytes() == utc_bytes


def test_with_weekends_skipped_the_call_lands_on_the_make_up_working_day(
    events_file: Path, utc_server: dict[str, list[dict[str, Any]]]
) -> None:
    env = clean_env(TZ="Asia/Shanghai", CREDITWATCH_COLLECTIONS__SKIP_WEEKENDS="true")
    tasks = replay(events_file, events_file.parent / "weekdays", env)
    calls = {c: [t for t in tasks[c] if t["stage"] == "call"] for c in ("LA", "NZ", "LATE")}
    # Sunday 4 January, 08:00 local: worked in China to make up for the New Year break.
    expected = {
        "LA": ("2026-01-04T08:00:00-08:00", datetime(2026, 1, 4, 16, 0, tzinfo=UTC)),
        "NZ": ("2026-01-04T08:00:00+13:00", datetime(2026, 1, 3, 19, 0, tzinfo=UTC)),
        "LATE": ("2026-01-04T08:00:00-08:00", datetime(2026, 1, 4, 16, 0, tzinfo=UTC)),
    }
    for name, (local, at) in expected.items():
        assert {t["not_before"] for t in calls[name]} == {local}, name
        assert instant(calls[name][0]["not_before"]) == at
    assert [t["status"] for t in calls["LA"]] == ["open", "cancelled"]
    # The reminders fell on a Thursday: skipping weekends does not move them.
    reminders = [
        t["not_before"] for c in ("LA", "NZ") for t in tasks[c] if t["stage"] == "reminder"
    ]
    assert reminders == [t["not_before"] for c in ("LA", "NZ") for t in utc_server[c][:2]]
