"""The synthetic book: deterministic, contract-shaped, and telling the story its truth claims.

The book is the input of replays, detector evaluation and benchmarks, so
these tests pin what those rely on: byte-identical output per seed, exactly
the SPEC field names and formats, time order, and that each behaviour class
actually behaves as its ground-truth label says.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from config.settings import KafkaSettings, Settings
from creditwatch.simulate import (
    BEHAVIOURS,
    BookConfig,
    book_truth,
    generate_book,
    iter_book,
    iter_jsonl,
    publish,
    write_jsonl,
)
from creditwatch.simulate import cli as simulate_cli
from schemas.codec import decode_event
from schemas.topics import DEFAULT_TOPICS, TOPIC_BY_EVENT_TYPE

COMMON = {"event_id", "type", "customer_id", "occurred_at"}
# type -> (required fields beyond the common ones, optional fields), from SPEC.md
SPEC_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "transaction.posted": (
        {"account_id", "amount", "currency", "direction", "channel"},
        {"merchant_category", "counterparty_id", "counterparty_type", "country", "balance_after"},
    ),
    "installment.due": ({"loan_id", "installment_no", "due_date", "amount_due", "currency"}, set()),
    "repayment.received": ({"loan_id", "amount", "currency"}, {"installment_no"}),
    "repayment.failed": ({"loan_id", "amount", "currency", "reason"}, set()),
    "loan.opened": (
        {"loan_id", "product", "principal", "currency", "term_months", "annual_rate"},
        {"purpose", "guarantor_ids"},
    ),
    "loan.restructured": ({"loan_id"}, {"reason"}),
    "loan.closed": ({"loan_id"}, set()),
    "loan.written_off": ({"loan_id", "amount", "currency"}, set()),
    "customer.updated": (
        set(),
        {
            "segment",
            "monthly_income",
            "currency",
            "timezone",
            "holiday_calendar",
            "contact_consent",
        },
    ),
    "customer.linked": ({"related_customer_id", "relation"}, set()),
    "customer.unlinked": ({"related_customer_id", "relation"}, set()),
    "outcome.default": (set(), {"loan_id", "reason"}),
}
ENUMS: dict[str, set[str]] = {
    "direction": {"debit", "credit"},
    "channel": {"card", "atm", "transfer", "cash", "direct_debit", "online", "branch"},
    "counterparty_type": {
        "employer",
        "securities",
        "real_estate",
        "gambling",
        "crypto",
        "lender",
        "other",
    },
    "product": {"mortgage", "auto", "consumer", "credit_card", "sme_working_capital", "other"},
    "segment": {"retail", "sme", "corporate"},
    "relation": {"guarantor", "group_member", "shared_collateral", "household"},
}
REASONS = {"insufficient_funds", "account_closed", "mandate_revoked", "other"}
MONEY_FIELDS = ("amount", "amount_due", "principal", "balance_after", "monthly_income")
MONEY = re.compile(r"^\d+\.\d{2}$")
CUSTOMER = re.compile(r"^C\d{6}$")
LOAN = re.compile(r"^L\d{6}-\d$")
ACCOUNT = re.compile(r"^A\d{6}$")
DIVERSION = {"securities", "gambling", "crypto", "real_estate"}


def _check_event(event: dict[str, Any]) -> None:
    """One event against the contract; raises AssertionError naming what is wrong."""
    etype = event["type"]
    assert etype in SPEC_FIELDS, etype
    required, optional = SPEC_FIELDS[etype]
    keys = set(event)
    assert COMMON | required <= keys, (etype, (COMMON | required) - keys)
    assert keys <= COMMON | required | optional, (etype, keys - COMMON - required - optional)
    assert isinstance(event["event_id"], str) and 1 <= len(event["event_id"]) <= 128
    assert CUSTOMER.match(event["customer_id"]), event["customer_id"]
    when = datetime.fromisoformat(event["occurred_at"])
    assert when.tzinfo is not None and when.utcoffset() is not None, event["occurred_at"]
    assert re.search(r"[+-]\d{2}:\d{2}$", event["occurred_at"]), event["occurred_at"]
    for name in MONEY_FIELDS:
        if name in event:
            assert isinstance(event[name], str) and MONEY.match(event[name]), (name, event)
    for name, allowed in ENUMS.items():
        if name in event:
            assert event[name] in allowed, (name, event[name])
    if "currency" in event:
        assert re.fullmatch(r"[A-Z]{3}", event["currency"])
    if "loan_id" in event:
        assert LOAN.match(event["loan_id"]), event["loan_id"]
    if "account_id" in event:
        assert ACCOUNT.match(event["account_id"]), event["account_id"]
    if "merchant_category" in event:
        assert re.fullmatch(r"\d{4}", event["merchant_category"])
    if "country" in event:
        assert re.fullmatch(r"[A-Z]{2}", event["country"])
    if etype == "installment.due":
        date.fromisoformat(event["due_date"])
        assert isinstance(event["installment_no"], int) and event["installment_no"] >= 1
    if etype == "repayment.received" and "installment_no" in event:
        assert isinstance(event["installment_no"], int)
    if etype == "repayment.failed":
        assert event["reason"] in REASONS
    if etype == "loan.opened":
        assert isinstance(event["term_months"], int) and event["term_months"] > 0
        assert re.fullmatch(r"0\.\d{4}", event["annual_rate"]), event["annual_rate"]
        for guarantor in event.get("guarantor_ids", []):
            assert CUSTOMER.match(guarantor) and guarantor != event["customer_id"]
    if etype == "customer.updated" and "contact_consent" in event:
        consent = event["contact_consent"]
        assert all(isinstance(v, bool) for v in consent.values())
    if etype == "customer.linked":
        assert CUSTOMER.match(event["related_customer_id"])
        assert event["related_customer_id"] != event["customer_id"]


def _instant(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


@pytest.fixture(scope="module")
def config() -> BookConfig:
    return BookConfig()


@pytest.fixture(scope="module")
def book(config: BookConfig) -> list[dict[str, Any]]:
    return generate_book(config)


@pytest.fixture(scope="module")
def truth(config: BookConfig) -> dict[str, str]:
    return book_truth(config)


@pytest.fixture(scope="module")
def by_customer(book: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in book:
        grouped[event["customer_id"]].append(event)
    return grouped


def _of_class(truth: dict[str, str], behaviour: str) -> list[str]:
    return [c for c, b in truth.items() if b == behaviour]


# ----------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes() -> None:
    cfg = BookConfig(customers=40)
    first = b"".join(iter_jsonl(generate_book(cfg)))
    second = b"".join(iter_jsonl(generate_book(BookConfig(customers=40))))
    assert first == second
    assert len(first) > 10_000


def test_different_seed_gives_a_different_book() -> None:
    a = b"".join(iter_jsonl(generate_book(BookConfig(customers=40, seed=1))))
    b = b"".join(iter_jsonl(generate_book(BookConfig(customers=40, seed=2))))
    assert a != b
    assert book_truth(BookConfig(customers=40, seed=1)) != book_truth(
        BookConfig(customers=40, seed=2)
    )


def test_iter_book_is_lazy_and_equals_generate_book() -> None:
    cfg = BookConfig(customers=25, seed=3)
    stream = iter_book(cfg)
    first = next(stream)
    assert first["type"] == "customer.updated"
    assert [first, *stream] == generate_book(cfg)


# ----------------------------------------------------------------- contract shape


def test_every_event_has_exactly_the_spec_fields(book: list[dict[str, Any]]) -> None:
    for event in book:
        _check_event(event)
    first_keys = list(book[0])[:4]
    assert first_keys == ["event_id", "type", "customer_id", "occurred_at"]


def test_sorted_by_occurred_at_and_inside_the_horizon(
    book: list[dict[str, Any]], config: BookConfig
) -> None:
    instants = [_instant(e) for e in book]
    assert instants == sorted(instants)
    assert instants[0] >= config.start
    assert instants[-1] < config.end


def test_event_ids_are_unique_and_positional(book: list[dict[str, Any]]) -> None:
    ids = [e["event_id"] for e in book]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "sim-7-0000000"
    assert ids[123] == "sim-7-0000123"


def test_utc_rendering_when_asked() -> None:
    events = generate_book(BookConfig(customers=10, local_time=False))
    assert all(e["occurred_at"].endswith("+00:00") for e in events)
    assert events == sorted(events, key=_instant)


def test_customer_profile_comes_first(by_customer: dict[str, list[dict[str, Any]]]) -> None:
    for events in by_customer.values():
        assert events[0]["type"] == "customer.updated"
        assert set(events[0]) >= {"segment", "monthly_income", "timezone", "contact_consent"}


def test_mix_of_regions_currencies_links_and_products(book: list[dict[str, Any]]) -> None:
    profiles = [e for e in book if e["type"] == "customer.updated"]
    currencies = Counter(e["currency"] for e in profiles)
    assert currencies.most_common(1)[0][0] == "CNY" and len(currencies) >= 2
    assert Counter(e["timezone"] for e in profiles).most_common(1)[0][0] == "Asia/Shanghai"
    assert {e["segment"] for e in profiles} == {"retail", "sme"}
    relations = {e["relation"] for e in book if e["type"] == "customer.linked"}
    assert relations == {"guarantor", "group_member", "household"}
    products = {e["product"] for e in book if e["type"] == "loan.opened"}
    assert {"consumer", "sme_working_capital"} <= products
    channels = Counter(e["channel"] for e in book if e["type"] == "transaction.posted")
    assert channels["card"] > channels["atm"] > 0 and channels["transfer"] > 0
    assert any("balance_after" in e for e in book if e["type"] == "transaction.posted")
    received = [e for e in book if e["type"] == "repayment.received"]
    with_no = sum("installment_no" in e for e in received)
    assert 0 < with_no < len(received)


def test_volume_per_customer(book: list[dict[str, Any]], config: BookConfig) -> None:
    per_customer = len(book) / config.customers
    assert 50 <= per_customer <= 150, per_customer


# ----------------------------------------------------------------- behaviour classes


@pytest.mark.parametrize("customers", [200, 1000, 1003])
def test_behaviour_shares(customers: int) -> None:
    cfg = BookConfig(customers=customers)
    counts = Counter(book_truth(cfg).values())
    assert sum(counts.values()) == customers
    for behaviour, share in cfg.behaviour_shares.items():
        assert abs(counts[behaviour] / customers - share) <= 0.01, behaviour


def test_truth_covers_the_customers_in_the_book(
    truth: dict[str, str], by_customer: dict[str, list[dict[str, Any]]]
) -> None:
    assert set(truth) == set(by_customer)
    assert set(truth.values()) == set(BEHAVIOURS)


def _dues_and_payments(
    events: list[dict[str, Any]],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    dues: dict[str, list[dict[str, Any]]] = defaultdict(list)
    paid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["type"] == "installment.due":
            dues[e["loan_id"]].append(e)
        elif e["type"] == "repayment.received":
            paid[e["loan_id"]].append(e)
    return dues, paid


def test_failing_customers_miss_instalments(
    truth: dict[str, str], by_customer: dict[str, list[dict[str, Any]]]
) -> None:
    failing = _of_class(truth, "failing_then_default") + _of_class(truth, "written_off")
    assert failing
    for customer in failing:
        events = by_customer[customer]
        dues, paid = _dues_and_payments(events)
        due_total = sum(Decimal(e["amount_due"]) for d in dues.values() for e in d)
        paid_total = sum(Decimal(e["amount"]) for p in paid.values() for e in p)
        assert paid_total < due_total, customer
        assert any(e["type"] == "repayment.failed" for e in events), customer
        first_failed = min(_instant(e) for e in events if e["type"] == "repayment.failed")
        salaries = [_instant(e) for e in events if e.get("counterparty_type") == "employer"]
        assert all(s < first_failed for s in salaries), customer  # the salary stopped


def test_on_time_customers_pay_every_instalment_by_its_due_date(
    truth: dict[str, str], by_customer: dict[str, list[dict[str, Any]]], config: BookConfig
) -> None:
    last_full_day = (config.end - timedelta(days=1)).date()
    checked = 0
    for customer in _of_class(truth, "on_time"):
        dues, paid = _dues_and_payments(by_customer[customer])
        assert not any(e["type"] == "repayment.failed" for e in by_customer[customer])
        for loan_id, loan_dues in dues.items():
            cumulative_due = Decimal(0)
            for due in loan_dues:
                cumulative_due += Decimal(due["amount_due"])
                due_date = date.fromisoformat(due["due_date"])
                if due_date >= last_full_day:
                    continue
                paid_by_then = sum(
                    Decimal(p["amount"])
                    for p in paid[loan_id]
                    if _instant(p).date() <= due_date  # the customer's local date
                )
                assert paid_by_then >= cumulative_due, (customer, loan_id, due["installment_no"])
                checked += 1
    assert checked > 300


def test_late_payers_are_sometimes_late(
    truth: dict[str, str], by_customer: dict[str, list[dict[str, Any]]]
) -> None:
    for behaviour in ("occasionally_late", "chronic_late"):
        late_customers = 0
        for customer in _of_class(truth, behaviour):
            dues, paid = _dues_and_payments(by_customer[customer])
            for loan_id, loan_dues in dues.items():
                cumulative = Decimal(0)
                for due in loan_dues:
                    cumulative += Decimal(due["amount_due"])
                    due_date = date.fromisoformat(due["due_date"])
                    by_then = sum(
                        Decimal(p["amount"])
                        for p in paid[loan_id]
                        if _instant(p).date() <= due_date
                    )
                    if by_then < cumulative:
                        late_customers += 1
                        break
                else:
                    continue
                break
        assert late_customers >= 0.8 * len(_of_class(truth, behaviour)), behaviour


def test_defaults_and_write_offs(
    truth: dict[str, str], by_customer: dict[str, list[dict[str, Any]]]
) -> None:
    for customer in _of_class(truth, "written_off"):
        events = by_customer[customer]
        write_offs = [e for e in events if e["type"] == "loan.written_off"]
        assert write_offs, customer
        opened = {e["loan_id"]: e for e in events if e["type"] == "loan.opened"}
        for w in write_offs:
            assert Decimal(0) < Decimal(w["amount"]) <= Decimal(opened[w["loan_id"]]["principal"])
    for customer in _of_class(truth, "failing_then_default"):
        events = by_customer[customer]
        defaults = [e for e in events if e["type"] == "outcome.default"]
        assert defaults, customer
        assert not any(e["type"] == "loan.written_off" for e in events)
        for d in defaults:
            first_failed = min(
                _instant(e)
                for e in events
                if e["type"] == "repayment.failed" and e["loan_id"] == d["loan_id"]
            )
            assert (_instant(d).date() - first_failed.date()).days >= 90, customer
    good = _of_class(truth, "on_time") + _of_class(truth, "occasionally_late")
    for customer in good:
        assert not any(
            e["type"] in ("outcome.default", "loan.written_off") for e in by_customer[customer]
        )


def test_some_loan_funds_are_diverted_soon_after_opening(book: list[dict[str, Any]]) -> None:
    opened: dict[str, list[datetime]] = defaultdict(list)
    diverted = 0
    for e in book:
        if e["type"] == "loan.opened":
            opened[e["customer_id"]].append(_instant(e))
        elif e.get("counterparty_type") in DIVERSION:
            assert e["direction"] == "debit"
            assert any(
                timedelta(0) < _instant(e) - t <= timedelta(days=14)
                for t in opened[e["customer_id"]]
            )
            diverted += 1
    assert diverted > 0


def test_closed_loans_were_paid_off(book: list[dict[str, Any]]) -> None:
    closed = [e for e in book if e["type"] == "loan.closed"]
    assert closed
    loans = {e["loan_id"] for e in closed}
    after_close = [
        e
        for e in book
        if e["type"] == "installment.due"
        and e["loan_id"] in loans
        and _instant(e) > max(_instant(c) for c in closed if c["loan_id"] == e["loan_id"])
    ]
    assert not after_close


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(min_value=-(2**31), max_value=2**31),
    customers=st.integers(min_value=0, max_value=12),
    months=st.integers(min_value=1, max_value=14),
    local_time=st.booleans(),
)
def test_invariants_hold_for_any_small_book(
    seed: int, customers: int, months: int, local_time: bool
) -> None:
    cfg = BookConfig(seed=seed, customers=customers, months=months, local_time=local_time)
    events = generate_book(cfg)
    instants = [_instant(e) for e in events]
    assert instants == sorted(instants)
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(cfg.start <= t < cfg.end for t in instants)
    for event in events:
        _check_event(event)
    assert len({e["customer_id"] for e in events}) == customers


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="aware"):
        BookConfig(start=datetime(2026, 1, 1))  # naive: the point of the test
    with pytest.raises(ValueError, match="sum to 1"):
        BookConfig(share_on_time=0.9)
    with pytest.raises(ValueError, match="months"):
        BookConfig(months=0)


# ----------------------------------------------------------------- files and CLI


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    events = generate_book(BookConfig(customers=5))
    path = tmp_path / "book.jsonl"
    assert write_jsonl(path, events) == len(events)
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == events


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="creditwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    simulate_cli.add_parser(sub)
    return parser.parse_args(argv)


def test_cli_writes_book_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, truth_path = tmp_path / "book.jsonl", tmp_path / "truth.json"
    args = _parse(
        [
            "simulate",
            "--customers",
            "12",
            "--months",
            "2",
            "--seed",
            "5",
            "--start",
            "2026-03-01T00:00:00+08:00",
            "--out",
            str(out),
            "--truth",
            str(truth_path),
        ]
    )
    assert args.func is simulate_cli.run
    assert simulate_cli.run(args) == 0
    cfg = BookConfig(
        customers=12, months=2, seed=5, start=datetime.fromisoformat("2026-03-01T00:00:00+08:00")
    )
    assert out.read_bytes() == b"".join(iter_jsonl(generate_book(cfg)))
    assert orjson.loads(truth_path.read_bytes()) == book_truth(cfg)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "customer.updated=12" in err


def test_cli_defaults_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert simulate_cli.run(_parse(["simulate", "--customers", "3", "--months", "1"])) == 0
    captured = capsysbinary.readouterr()
    lines = captured.out.splitlines()
    assert lines and all(orjson.loads(line)["customer_id"].startswith("C") for line in lines)
    assert b"simulate:" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--start", "2026-01-01T00:00:00"],
        ["simulate", "--customers", "0"],
        ["simulate", "--out", "x.jsonl", "--publish"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2


def test_cli_reports_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["simulate", "--customers", "2", "--out", str(tmp_path / "no" / "such.jsonl")])
    assert simulate_cli.run(args) == 1
    assert "failed" in capsys.readouterr().err


# ----------------------------------------------------------------- publishing


def test_producer_options_plaintext() -> None:
    options = publish.producer_options(KafkaSettings())
    assert options["enable_idempotence"] is True and options["acks"] == "all"
    assert options["compression_type"] is None and options["linger_ms"] == 5
    assert "ssl_context" not in options and "sasl_plain_password" not in options


def test_producer_options_sasl_ssl() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
    )
    options = publish.producer_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"] is not None


class _FakeProducer:
    """Stands in for AIOKafkaProducer: records what would have been sent."""

    instances: ClassVar[list[_FakeProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.calls: list[str] = []
        _FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.calls.append("start")

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None:
        self.calls.append("flush")

    async def stop(self) -> None:
        self.calls.append("stop")


def test_publish_events_routes_keys_and_orders(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(publish, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.instances.clear()
    settings = Settings(
        kafka=KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="svc",
            sasl_password=SecretStr("s3cret"),
        )
    )
    events = generate_book(BookConfig(customers=6, months=2))
    caplog.set_level(logging.DEBUG)
    count = asyncio.run(
        publish.publish_events(events, settings, topics={"loans": "custom.loans"}, batch=7)
    )
    (producer,) = _FakeProducer.instances
    assert count == len(events) == len(producer.sent)
    assert producer.calls == ["start", "flush", "stop"]
    for event, (topic, key, value) in zip(events, producer.sent, strict=True):
        logical = TOPIC_BY_EVENT_TYPE[event["type"]]
        assert topic == ("custom.loans" if logical == "loans" else DEFAULT_TOPICS[logical])
        assert key == event["customer_id"].encode()
        assert orjson.loads(value) == event
    assert "s3cret" not in caplog.text


def test_publish_encodes_decimal_as_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.instances.clear()
    event = {
        "event_id": "x-1",
        "type": "repayment.received",
        "customer_id": "C000001",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "loan_id": "L000001-1",
        "amount": Decimal("1250.00"),
        "currency": "CNY",
    }
    assert asyncio.run(publish.publish_events([event], Settings())) == 1
    (producer,) = _FakeProducer.instances
    assert orjson.loads(producer.sent[0][2])["amount"] == "1250.00"


# ----------------------------------------------------------------- the contract's decoder


def test_every_generated_event_decodes(book: list[dict[str, Any]]) -> None:
    for line in iter_jsonl(book):
        decode_event(line)
