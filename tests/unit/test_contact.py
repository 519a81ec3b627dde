"""Collections contact times follow the customer's clock and calendar, not the server's."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from config.settings import Settings
from risk.contact import ContactPolicy, is_contact_day, next_lawful_contact
from risk.engine import Engine
from schemas.events import CustomerUpdated, InstallmentDue

SH = ZoneInfo("Asia/Shanghai")
LA = ZoneInfo("America/Los_Angeles")
POLICY = ContactPolicy(quiet_start=21, quiet_end=8)


def test_quiet_hours_are_the_customers_local_hours() -> None:
    # 15:00 UTC is 23:00 in Shanghai (quiet) but 07:00 in Los Angeles (quiet too).
    at = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    assert next_lawful_contact(at, SH, None, POLICY) == datetime(2026, 3, 11, 8, 0, tzinfo=SH)
    assert next_lawful_contact(at, LA, None, POLICY) == datetime(2026, 3, 10, 8, 0, tzinfo=LA)
    # 02:00 UTC is 10:00 in Shanghai: contact now.
    noon = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    assert next_lawful_contact(noon, SH, None, POLICY) == noon


def test_a_public_holiday_moves_contact_past_the_holiday() -> None:
    # National Day in China: 1-7 October 2026 (Sunday the 4th is a weekend in the break).
    weekdays_only = ContactPolicy(quiet_start=21, quiet_end=8, skip_weekends=True)
    at = datetime(2026, 9, 30, 22, 30, tzinfo=SH)
    assert next_lawful_contact(at, SH, "CN", weekdays_only) == datetime(2026, 10, 8, 8, tzinfo=SH)
    assert not is_contact_day(datetime(2026, 10, 1).date(), "CN", POLICY)
    # Saturday 10 October is worked to make up for the break.
    assert is_contact_day(datetime(2026, 10, 10).date(), "CN", weekdays_only)


def test_a_make_up_working_day_is_a_contact_day_even_when_weekends_are_skipped() -> None:
    weekdays_only = ContactPolicy(quiet_start=21, quiet_end=8, skip_weekends=True)
    saturday_worked = datetime(2026, 2, 28).date()  # worked to bridge the Spring Festival
    ordinary_saturday = datetime(2026, 3, 7).date()
    assert is_contact_day(saturday_worked, "CN", weekdays_only)
    assert not is_contact_day(ordinary_saturday, "CN", weekdays_only)
    assert is_contact_day(ordinary_saturday, "CN", POLICY)  # weekends allowed by default
    friday_night = datetime(2026, 3, 6, 21, 30, tzinfo=SH)
    assert next_lawful_contact(friday_night, SH, "CN", weekdays_only) == datetime(
        2026, 3, 9, 8, 0, tzinfo=SH
    )


def test_far_time_zone_across_a_holiday_and_a_make_up_day() -> None:
    """A customer in Los Angeles on the Chinese calendar, judged by a UTC server."""
    weekdays_only = ContactPolicy(quiet_start=21, quiet_end=8, skip_weekends=True)
    # Friday 2026-02-13 23:00 in LA (07:00 UTC Saturday): the Spring Festival break
    # starts; Saturday 14 Feb is a make-up working day in CN.
    at = datetime(2026, 2, 14, 7, 0, tzinfo=UTC)
    got = next_lawful_contact(at, LA, "CN", weekdays_only)
    assert got == datetime(2026, 2, 14, 8, 0, tzinfo=LA)
    # After that, nothing until the break is over.
    later = next_lawful_contact(datetime(2026, 2, 15, 12, 0, tzinfo=LA), LA, "CN", weekdays_only)
    assert later.date().isoformat() == "2026-02-24"


def test_an_unknown_calendar_keeps_quiet_hours_only() -> None:
    at = datetime(2026, 10, 1, 9, 0, tzinfo=SH)
    assert next_lawful_contact(at, SH, "XX", POLICY) == at


def test_collections_tasks_carry_the_lawful_time() -> None:
    engine = Engine(Settings())
    st, _ = engine.apply(
        None,
        CustomerUpdated(
            event_id="u",
            customer_id="C",
            occurred_at="2026-09-01T00:00:00+08:00",
            timezone="Asia/Shanghai",
            holiday_calendar="CN",
        ),
    )
    st, _ = engine.apply(
        st,
        InstallmentDue(
            event_id="d",
            customer_id="C",
            occurred_at="2026-09-01T00:00:00+08:00",
            loan_id="L",
            installment_no=1,
            due_date="2026-09-30",
            amount_due="100.00",
            currency="CNY",
        ),
    )
    out = engine.advance(st, datetime(2026, 10, 2, 12, 0, tzinfo=SH))
    reminders = [t for t in out.tasks if t.stage == "reminder"]
    assert reminders, "DPD 1 on 1 October opens a reminder"
    # 1-3 October are public holidays: the reminder waits for Sunday the 4th at 08:00,
    # the first day that is neither a holiday nor (by default) excluded.
    assert reminders[0].not_before == datetime(2026, 10, 4, 8, 0, tzinfo=SH)


def _book(engine: Engine, loans: int, consent: dict[str, bool] | None = None) -> object:
    st, _ = engine.apply(
        None,
        CustomerUpdated(
            event_id="u",
            customer_id="C",
            occurred_at="2026-03-01T00:00:00+08:00",
            timezone="Asia/Shanghai",
            contact_consent=consent,
        ),
    )
    for n in range(loans):
        st, _ = engine.apply(
            st,
            InstallmentDue(
                event_id=f"d{n}",
                customer_id="C",
                occurred_at="2026-03-01T00:00:00+08:00",
                loan_id=f"L{n}",
                installment_no=1,
                due_date="2026-03-10",
                amount_due="100.00",
                currency="CNY",
            ),
        )
    return st


def test_a_channel_over_its_daily_cap_is_scheduled_for_the_next_day_not_dropped() -> None:
    engine = Engine(Settings())
    st = _book(engine, loans=3)
    out = engine.advance(st, datetime(2026, 3, 11, 12, 0, tzinfo=SH))  # type: ignore[arg-type]
    reminders = sorted(t.not_before for t in out.tasks if t.stage == "reminder")
    assert len(reminders) == 3  # one per loan, none dropped
    assert [r.date().isoformat() for r in reminders] == ["2026-03-11", "2026-03-12", "2026-03-13"]
    assert all(t.channel == "sms" for t in out.tasks)


def test_the_weekly_cap_moves_contact_to_the_next_week() -> None:
    settings = Settings(
        collections={"daily_contact_caps": {"sms": 5}, "weekly_contact_caps": {"sms": 2}}
    )
    engine = Engine(settings)
    st = _book(engine, loans=3)
    out = engine.advance(st, datetime(2026, 3, 11, 12, 0, tzinfo=SH))  # type: ignore[arg-type]
    days = sorted(t.not_before.date().isoformat() for t in out.tasks if t.stage == "reminder")
    assert days == ["2026-03-11", "2026-03-11", "2026-03-16"]  # Monday of the next week


def test_without_consent_for_messages_the_reminder_goes_by_letter() -> None:
    engine = Engine(Settings())
    st = _book(engine, loans=1, consent={"sms": False, "email": False})
    out = engine.advance(st, datetime(2026, 3, 11, 12, 0, tzinfo=SH))  # type: ignore[arg-type]
    assert [t.channel for t in out.tasks if t.stage == "reminder"] == ["letter"]


def test_a_cap_below_one_is_refused_at_start_naming_the_field() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="daily_contact_caps"):
        Settings(collections={"daily_contact_caps": {"sms": 0}})
