"""The published JSON Schemas are fresh and agree with the decoder and the outputs."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import BaseModel

from schemas import generate, topics
from schemas.codec import InvalidEvent, dead_letter, decode_event, encode
from schemas.events import EXAMPLES
from schemas.outputs import CollectionsTask, LoanSummary, RiskAlert, RiskState

SCHEMA_DIR = Path(generate.__file__).resolve().parent / "json"
WHEN = datetime(2024, 3, 5, 10, 15, 30, tzinfo=UTC)


def load(topic_file: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / topic_file).read_text(encoding="utf-8"))
    return schema


def validator_for(event_type: str) -> jsonschema.Draft202012Validator:
    topic = topics.DEFAULT_TOPICS[topics.TOPIC_BY_EVENT_TYPE[event_type]]
    return jsonschema.Draft202012Validator(load(f"{topic}.schema.json"))


def test_committed_files_equal_a_fresh_generation() -> None:
    assert generate.stale(SCHEMA_DIR) == [], "run: python -m schemas.generate"
    expected = {f"{name}.schema.json" for name in topics.DEFAULT_TOPICS.values()}
    expected -= {"credit.rules.v1.schema.json"}
    expected |= {generate.INPUT_EVENT_FILE}
    assert set(generate.build()) == expected


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "credit.loans.v1.schema.json").write_text("{}\n", encoding="utf-8")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert "credit.loans.v1.schema.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(generate.build()))
def test_every_file_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_timestamps_are_date_time_and_money_is_string_or_number() -> None:
    props = load("credit.transactions.v1.schema.json")["properties"]
    assert props["occurred_at"]["format"] == "date-time"
    kinds = {branch["type"] for branch in props["amount"]["anyOf"]}
    assert kinds == {"string", "number"}
    out = load("credit.collections-tasks.v1.schema.json")["properties"]
    assert out["overdue_amount"]["type"] == "string"
    assert out["not_before"]["format"] == "date-time"


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_every_valid_example_validates_against_its_topic_schema(event_type: str) -> None:
    body = EXAMPLES[event_type]
    validator_for(event_type).validate(body)
    jsonschema.Draft202012Validator(load(generate.INPUT_EVENT_FILE)).validate(body)


def test_money_as_json_number_validates() -> None:
    body = dict(EXAMPLES["transaction.posted"], amount=1250.1)
    validator_for("transaction.posted").validate(body)


def broken(event_type: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLES[event_type])
    for key, value in changes.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    return body


INVALID = [
    pytest.param(broken("transaction.posted", amount="-5.00"), id="negative-amount-string"),
    pytest.param(broken("repayment.received", amount=-5), id="negative-amount-number"),
    pytest.param(broken("loan.closed", type="foo.bar"), id="unknown-type"),
    pytest.param(broken("loan.closed", type=None), id="missing-type"),
    pytest.param(broken("installment.due", loan_id=None), id="missing-field"),
    pytest.param(broken("installment.due", installment_no="3"), id="mistyped-field"),
    pytest.param(broken("transaction.posted", currency="usd"), id="bad-currency"),
]


@pytest.mark.parametrize("body", INVALID)
def test_invalid_examples_fail_both_the_schema_and_the_decoder(body: dict[str, Any]) -> None:
    schema = load(generate.INPUT_EVENT_FILE)
    assert not jsonschema.Draft202012Validator(schema).is_valid(body)
    with pytest.raises(InvalidEvent):
        decode_event(orjson.dumps(body))


@pytest.mark.parametrize(
    "amount",
    ["1250.00", "0", "007", "0.5", "999999999999999999", "1.12345678", "1.123456780000",
     "1e3", "1.", ".5", "+1", "-1", " 1", "1,5", "1.123456789", "1000000000000000000", "NaN"],
)  # fmt: skip
def test_money_string_rule_is_the_same_in_schema_and_decoder(amount: str) -> None:
    body = dict(EXAMPLES["transaction.posted"], amount=amount)
    schema_ok = validator_for("transaction.posted").is_valid(body)
    try:
        decode_event(orjson.dumps(body))
        decoder_ok = True
    except InvalidEvent:
        decoder_ok = False
    assert schema_ok == decoder_ok


def output_json(model: BaseModel) -> Any:
    return orjson.loads(encode(model))


def test_outputs_validate_against_their_schemas() -> None:
    alert = RiskAlert(
        alert_id="alt-3f2a9c",
        dedup_key="cust-00042:dpd_30",
        customer_id="cust-00042",
        loan_id="loan-7",
        severity="high",
        source="rule",
        code="dpd_30",
        title="Instalment 30 days past due",
        explanation={"dpd": 31, "threshold": 30, "overdue": Decimal("2300.00")},
        risk_score=640,
        risk_tier="high",
        loan_class="substandard",
        triggered_at=WHEN,
        evidence_event_ids=["evt-due-0001"],
        rule_set_version="2024-03-01.1",
        status="firing",
    )
    task = CollectionsTask(
        task_id="task-1",
        customer_id="cust-00042",
        loan_id="loan-7",
        dpd=31,
        overdue_amount=Decimal("2300.00"),
        currency="CNY",
        stage="call",
        channel="phone",
        priority=2,
        not_before=WHEN,
        reason="31 days past due",
        created_at=WHEN,
    )
    state = RiskState(
        customer_id="cust-00042",
        risk_score=640,
        risk_tier="high",
        loan_class="substandard",
        loans={
            "loan-7": LoanSummary(
                loan_id="loan-7",
                dpd=31,
                overdue_amount=Decimal("2300.00"),
                currency="CNY",
                loan_class="substandard",
                outstanding_principal=Decimal("41000.00"),
                status="open",
            )
        },
        max_dpd=31,
        total_exposure=Decimal("41000.00"),
        open_alerts=1,
        features={"txn_count_7d": 12, "income_ratio": 0.42},
        last_event_at=WHEN,
    )
    raw = b'{"type": "foo.bar"}'
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    letter = dead_letter(
        raw,
        info.value,
        source_topic="credit.loans.v1",
        source_partition=0,
        source_offset=12,
        received_at=WHEN,
    )
    cases = [
        (alert, "credit.risk-alerts.v1"),
        (task, "credit.collections-tasks.v1"),
        (state, "credit.risk-state.v1"),
        (letter, "credit.dead-letter.v1"),
    ]
    for model, topic in cases:
        body = output_json(model)
        jsonschema.Draft202012Validator(load(f"{topic}.schema.json")).validate(body)
        # a subscriber reading it back with our models gets the same record
        assert output_json(type(model).model_validate(body)) == body
    assert output_json(task)["overdue_amount"] == "2300.00"
    assert output_json(alert)["triggered_at"] == "2024-03-05T10:15:30Z"


def test_outputs_reject_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        LoanSummary(
            loan_id="l",
            dpd=0,
            overdue_amount=Decimal(0),
            currency="CNY",
            loan_class="normal",
            surprise=1,  # type: ignore[call-arg]
        )
