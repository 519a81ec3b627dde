"""The condition language: every operator, null and missing values, Decimal, stateful ops."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from config.settings import Settings
from risk.customer import CustomerState
from risk.engine import Engine
from rules.engine import CompiledRuleSet
from rules.features import FEATURES, FeatureSpec, FeatureView, Tick
from rules.loader import check_data, load_data
from schemas.events import EVENT_MODELS, EXAMPLES

ENGINE = Engine(Settings())
VALUES: dict[str, Any] = {}


def _static(name: str, type_: str, **kw: Any) -> FeatureSpec:
    return FeatureSpec(name, type_, lambda v: VALUES[name], f"test {name}", **kw)  # type: ignore[arg-type]


def _boom(v: FeatureView) -> Any:
    raise ZeroDivisionError("broken getter")


def _flaky() -> int:
    if VALUES.get("fail"):
        raise ArithmeticError("state not readable")
    return VALUES["t_int"]


REGISTRY: dict[str, FeatureSpec] = {
    **FEATURES,
    "t_int": _static("t_int", "int", nullable=True),
    "t_dec": _static("t_dec", "decimal", nullable=True),
    "t_float": _static("t_float", "float", nullable=True),
    "t_bool": _static("t_bool", "bool", nullable=True),
    "t_str": _static("t_str", "str", nullable=True),
    "t_tier": _static("t_tier", "enum", enum=("premium", "low", "medium", "high"), ordered=True),
    "t_color": _static("t_color", "enum", enum=("red", "green")),
    "t_boom": FeatureSpec("t_boom", "int", _boom, "always raises"),
    "t_flaky": FeatureSpec("t_flaky", "int", lambda v: _flaky(), "raises while VALUES['fail']"),
    "t_twice": FeatureSpec("t_twice", "int", lambda v: v["t_int"] * 2, "reads another feature"),
}


def rule(condition: dict[str, Any], rid: str = "r1", applies_to: str = "transaction.posted"):
    return {
        "id": rid,
        "description": "test rule",
        "why": "tests",
        "applies_to": [applies_to],
        "condition": condition,
        "severity": "warning",
        "dedup_key": "{customer_id}:" + rid,
        "route": "risk_desk",
    }


def compile_rules(*rules: dict[str, Any]) -> CompiledRuleSet:
    return load_data({"name": "t", "rules": list(rules)}, registry=REGISTRY)


def event(type_: str = "transaction.posted", **changes: Any) -> Any:
    data = {**EXAMPLES[type_], **changes}
    return EVENT_MODELS[type_].model_validate({k: v for k, v in data.items() if v is not None})


def judge(
    condition: dict[str, Any],
    *,
    ev: Any = None,
    scores: dict[str, float] | None = None,
    before: dict[str, Any] | None = None,
    **values: Any,
):
    VALUES.clear()
    VALUES.update(values)
    rs = compile_rules(rule(condition))
    e = ev if ev is not None else event()
    view = FeatureView(CustomerState("cust-00042"), ENGINE, e, before=before, registry=REGISTRY)
    return rs.evaluate(e, view, scores)


def fires(condition: dict[str, Any], **kw: Any) -> bool:
    result = judge(condition, **kw)
    assert not result.errors, result.errors
    return [h.rule_id for h in result.hits] == ["r1"]


# -- every operator ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("eq", 3, 3, True),
        ("eq", 3, 4, False),
        ("ne", 3, 4, True),
        ("ne", 3, 3, False),
        ("lt", 3, 2, True),
        ("lt", 3, 3, False),
        ("le", 3, 3, True),
        ("le", 3, 4, False),
        ("gt", 3, 4, True),
        ("gt", 3, 3, False),
        ("ge", 3, 3, True),
        ("ge", 3, 2, False),
        ("between", [2, 4], 2, True),
        ("between", [2, 4], 4, True),
        ("between", [2, 4], 5, False),
        ("in", [1, 3], 3, True),
        ("in", [1, 3], 2, False),
        ("not_in", [1, 3], 2, True),
        ("not_in", [1, 3], 3, False),
    ],
)
def test_comparison_operators_on_an_int_feature(op: str, value: Any, actual: int, expected: bool):
    assert fires({"feature": "t_int", "op": op, "value": value}, t_int=actual) is expected


def test_is_null_and_not_null() -> None:
    assert fires({"feature": "t_int", "op": "is_null"}, t_int=None)
    assert not fires({"feature": "t_int", "op": "is_null"}, t_int=0)
    assert fires({"feature": "t_int", "op": "not_null"}, t_int=0)
    assert not fires({"feature": "t_int", "op": "not_null"}, t_int=None)


def test_contains_on_a_string_and_on_a_list_field() -> None:
    assert fires({"feature": "t_str", "op": "contains", "value": "lock"}, t_str="blocked")
    assert not fires({"feature": "t_str", "op": "contains", "value": "lock"}, t_str="open")
    opened = event("loan.opened", guarantor_ids=["G1", "G2"])
    cond = {"field": "guarantor_ids", "op": "contains", "value": "G2"}
    rs = compile_rules(rule(cond, applies_to="loan.opened"))
    view = FeatureView(CustomerState("c"), ENGINE, opened, registry=REGISTRY)
    assert [h.rule_id for h in rs.evaluate(opened, view).hits] == ["r1"]
    other = event("loan.opened", guarantor_ids=["G1"])
    view = FeatureView(CustomerState("c"), ENGINE, other, registry=REGISTRY)
    assert rs.evaluate(other, view).hits == []


def test_bool_str_and_enum_operands() -> None:
    assert fires({"feature": "t_bool", "op": "eq", "value": True}, t_bool=True)
    assert not fires({"feature": "t_bool", "op": "eq", "value": True}, t_bool=False)
    assert fires({"feature": "t_color", "op": "in", "value": ["red"]}, t_color="red")
    assert fires({"feature": "t_color", "op": "ne", "value": "red"}, t_color="green")
    assert fires({"feature": "t_str", "op": "eq", "value": "x"}, t_str="x")


def test_ordered_enumerations_compare_by_rank_not_alphabet() -> None:
    # alphabetically "high" < "low"; by risk, high is above low
    assert fires({"feature": "t_tier", "op": "gt", "value": "low"}, t_tier="high")
    assert not fires({"feature": "t_tier", "op": "gt", "value": "medium"}, t_tier="low")
    assert fires({"feature": "t_tier", "op": "between", "value": ["low", "medium"]}, t_tier="low")
    assert fires({"feature": "t_tier", "op": "eq", "value": "medium"}, t_tier="medium")


def test_event_fields_and_scores() -> None:
    ev = event(amount="1250.00", channel="atm")
    assert fires({"field": "channel", "op": "eq", "value": "atm"}, ev=ev)
    assert fires({"field": "amount", "op": "ge", "value": "1250"}, ev=ev)
    assert fires({"score": "outlier", "op": "ge", "value": 0.9}, scores={"outlier": 0.95})
    assert not fires({"score": "outlier", "op": "ge", "value": 0.9}, scores={"outlier": 0.5})


# -- null and missing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", 1),
        ("ne", 1),
        ("lt", 1),
        ("le", 1),
        ("gt", 1),
        ("ge", 1),
        ("between", [0, 2]),
        ("in", [1]),
        ("not_in", [1]),
    ],
)
def test_every_comparison_with_null_is_false(op: str, value: Any) -> None:
    assert not fires({"feature": "t_int", "op": op, "value": value}, t_int=None)


def test_not_negates_a_null_comparison_and_not_null_guards_it() -> None:
    assert fires({"not": {"feature": "t_int", "op": "gt", "value": 1}}, t_int=None)
    guarded = {
        "all": [
            {"feature": "t_int", "op": "not_null"},
            {"not": {"feature": "t_int", "op": "gt", "value": 1}},
        ]
    }
    assert not fires(guarded, t_int=None)
    assert fires(guarded, t_int=0)


def test_a_missing_optional_field_and_an_unreported_score_are_null() -> None:
    ev = event(country=None)
    assert ev.country is None
    assert fires({"field": "country", "op": "is_null"}, ev=ev)
    assert not fires({"field": "country", "op": "eq", "value": "CN"}, ev=ev)
    assert not fires({"field": "country", "op": "ne", "value": "CN"}, ev=ev)
    assert fires({"score": "outlier", "op": "is_null"}, scores={})
    assert not fires({"score": "outlier", "op": "lt", "value": 0.5}, scores={})


# -- Decimal --------------------------------------------------------------------------------


def test_decimal_thresholds_are_exact_not_float() -> None:
    # 0.1 + 0.2 != 0.3 in binary floating point; as decimals they are equal
    cond = {"feature": "t_dec", "op": "eq", "value": 0.3}  # a YAML number, taken by its text
    assert fires(cond, t_dec=Decimal("0.1") + Decimal("0.2"))
    assert fires({"feature": "t_dec", "op": "eq", "value": "0.30"}, t_dec=Decimal("0.3"))
    big = "12345678901234567.01"
    assert fires({"feature": "t_dec", "op": "gt", "value": "12345678901234567.00"}, t_dec=big)


def test_a_money_value_arriving_as_a_decimal_string_is_compared_as_decimal() -> None:
    assert fires({"feature": "t_dec", "op": "ge", "value": "1000"}, t_dec="1250.00")
    assert not fires({"feature": "t_dec", "op": "ge", "value": "1000"}, t_dec="999.99")


def test_a_float_where_money_is_expected_is_an_error_not_a_false() -> None:
    result = judge({"feature": "t_dec", "op": "ge", "value": "1000"}, t_dec=1250.0)
    assert result.hits == []
    assert [(e.rule_id, e.error) for e in result.errors] == [("r1", "TypeError")]


# -- comparisons with the state before the event ---------------------------------------------


def test_crosses_fires_once_per_crossing_however_large_the_jump() -> None:
    cond = {"feature": "t_int", "op": "crosses", "value": 30}
    assert fires(cond, t_int=31, before={"t_int": 29})
    assert fires(cond, t_int=95, before={"t_int": 0})
    assert fires(cond, t_int=30, before={"t_int": 29})
    assert not fires(cond, t_int=40, before={"t_int": 30})  # already past it
    assert not fires(cond, t_int=29, before={"t_int": 10})
    assert not fires(cond, t_int=31, before={"t_int": None})


def test_changed_by_counts_steps_of_an_ordered_enumeration() -> None:
    up2 = {"feature": "t_tier", "op": "changed_by", "value": 2}
    assert fires(up2, t_tier="medium", before={"t_tier": "premium"})
    assert fires(up2, t_tier="high", before={"t_tier": "premium"})
    assert not fires(up2, t_tier="medium", before={"t_tier": "low"})
    assert not fires(up2, t_tier="premium", before={"t_tier": "medium"})
    down1 = {"feature": "t_tier", "op": "changed_by", "value": -1}
    assert fires(down1, t_tier="low", before={"t_tier": "medium"})
    assert not fires(down1, t_tier="high", before={"t_tier": "medium"})


def test_changed_by_on_numbers_and_changed_to() -> None:
    assert fires({"feature": "t_dec", "op": "changed_by", "value": "0.5"},
                 t_dec=Decimal("1.6"), before={"t_dec": Decimal("1.1")})  # fmt: skip
    became = {"feature": "t_bool", "op": "changed_to", "value": True}
    assert fires(became, t_bool=True, before={"t_bool": False})
    assert not fires(became, t_bool=True, before={"t_bool": True})
    assert not fires(became, t_bool=False, before={"t_bool": True})


def test_a_stateful_comparison_without_a_capture_is_reported_not_false() -> None:
    result = judge({"feature": "t_int", "op": "crosses", "value": 1}, t_int=5, before=None)
    assert result.hits == []
    assert [(e.rule_id, e.error) for e in result.errors] == [("r1", "LookupError")]


# -- trees, errors, explanations ----------------------------------------------------------------


def test_all_any_not_trees() -> None:
    tree = {
        "all": [
            {"feature": "t_int", "op": "ge", "value": 1},
            {"any": [{"feature": "t_bool", "op": "eq", "value": True},
                     {"not": {"feature": "t_str", "op": "eq", "value": "x"}}]},
        ]
    }  # fmt: skip
    assert fires(tree, t_int=1, t_bool=True, t_str="x")
    assert fires(tree, t_int=1, t_bool=False, t_str="y")
    assert not fires(tree, t_int=1, t_bool=False, t_str="x")
    assert not fires(tree, t_int=0, t_bool=True, t_str="y")


def test_a_rule_that_raises_is_counted_and_reported_and_others_still_run() -> None:
    VALUES.clear()
    VALUES["t_int"] = 5
    rs = compile_rules(
        rule({"feature": "t_boom", "op": "gt", "value": 1}, rid="broken"),
        rule({"feature": "t_int", "op": "gt", "value": 1}, rid="fine"),
    )
    ev = event()
    for _ in range(2):
        view = FeatureView(CustomerState("c"), ENGINE, ev, registry=REGISTRY)
        result = rs.evaluate(ev, view)
        assert [h.rule_id for h in result.hits] == ["fine"]
        assert [(e.rule_id, e.error, e.message) for e in result.errors] == [
            ("broken", "ZeroDivisionError", "broken getter")
        ]
    assert rs.error_counts == {"broken": 2}


def test_a_hit_explains_each_comparison_and_names_its_version() -> None:
    result = judge(
        {"all": [{"feature": "t_dec", "op": "ge", "value": "1000"},
                 {"feature": "t_int", "op": "crosses", "value": 30}]},
        t_dec=Decimal("1250.50"), t_int=31, before={"t_int": 12},
    )  # fmt: skip
    (hit,) = result.hits
    assert hit.explanation["conditions"] == [
        {"feature": "t_dec", "op": "ge", "threshold": "1000", "value": "1250.50", "result": True},
        {"feature": "t_int", "op": "crosses", "threshold": 30, "value": 31, "before": 12,
         "result": True},
    ]  # fmt: skip
    assert hit.rule_set_version == result.version
    assert hit.dedup_key == "cust-00042:r1"


def test_rules_only_judge_the_event_types_they_apply_to() -> None:
    VALUES.clear()
    VALUES["t_int"] = 5
    rs = compile_rules(rule({"feature": "t_int", "op": "gt", "value": 1}, applies_to="loan.closed"))
    ev = event()
    view = FeatureView(CustomerState("c"), ENGINE, ev, registry=REGISTRY)
    assert rs.evaluate(ev, view).hits == []


def test_field_prefilter_skips_capture_for_events_it_rules_out() -> None:
    cond = {"all": [{"field": "channel", "op": "eq", "value": "atm"},
                    {"feature": "t_int", "op": "crosses", "value": 3}]}  # fmt: skip
    VALUES.clear()
    VALUES["t_int"] = 1
    rs = compile_rules(rule(cond))
    assert rs.capture(None, ENGINE, event(channel="card")) == {}
    assert rs.capture(None, ENGINE, event(channel="atm")) == {"t_int": 1}


def test_check_data_reports_instead_of_raising() -> None:
    compiled, problems = check_data(
        {"name": "t", "rules": [rule({"feature": "nope", "op": "eq", "value": 1})]}
    )
    assert compiled is None
    assert [p.rule_id for p in problems] == ["r1"]


# -- every operator on every kind of operand ---------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("eq", "1250.00", Decimal("1250"), True),  # equal as numbers, whatever the exponent
        ("eq", "1250.00", Decimal("1250.01"), False),
        ("ne", "1250.00", Decimal("1250.01"), True),
        ("ne", 1250, Decimal("1250.00"), False),
        ("lt", "0.30", Decimal("0.2999"), True),
        ("lt", "0.30", Decimal("0.3"), False),
        ("le", 0.3, Decimal("0.3000"), True),  # a YAML number is taken by its text
        ("le", 0.3, Decimal("0.3001"), False),
        ("gt", "20000.00", Decimal("20000.01"), True),
        ("gt", "20000.00", Decimal("20000"), False),
        ("ge", 20000, Decimal("20000.00"), True),
        ("ge", 20000, Decimal("19999.99"), False),
        ("between", ["0.1", "0.2"], Decimal("0.1"), True),
        ("between", ["0.1", "0.2"], Decimal("0.20"), True),
        ("between", ["0.1", "0.2"], Decimal("0.2001"), False),
        ("in", ["0.1", "0.25"], Decimal("0.250"), True),
        ("in", ["0.1", "0.25"], Decimal("0.26"), False),
        ("not_in", ["0.1", "0.25"], Decimal("0.26"), True),
        ("not_in", ["0.1", "0.25"], Decimal("0.1"), False),
        ("ge", "1000", "1000.00", True),  # a decimal string is compared as a decimal
        ("lt", "1000", "999.999", True),
        ("between", ["1", "2"], "1.5", True),
        ("in", ["1.5"], "1.50", True),
        ("ge", "1000", 1000, True),  # an int is exact too
    ],
)
def test_every_operator_on_a_decimal_feature(op: str, value: Any, actual: Any, expected: bool):
    assert fires({"feature": "t_dec", "op": op, "value": value}, t_dec=actual) is expected


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge", "between", "in", "not_in"])
def test_a_float_decimal_value_is_an_error_for_every_operator(op: str) -> None:
    value: Any = ["1", "2"] if op in ("between", "in", "not_in") else "1"
    result = judge({"feature": "t_dec", "op": op, "value": value}, t_dec=1.5)
    assert result.hits == []
    assert [(e.rule_id, e.error) for e in result.errors] == [("r1", "TypeError")]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "amount", "op": "eq", "value": "1250"}, True),
        ({"field": "amount", "op": "ne", "value": "1250"}, False),
        ({"field": "amount", "op": "lt", "value": "1250.01"}, True),
        ({"field": "amount", "op": "le", "value": 1250}, True),
        ({"field": "amount", "op": "gt", "value": 1250}, False),
        ({"field": "amount", "op": "ge", "value": "1250.00"}, True),
        ({"field": "amount", "op": "between", "value": ["1000", "1250"]}, True),
        ({"field": "amount", "op": "in", "value": ["1250.0", "99"]}, True),
        ({"field": "amount", "op": "not_in", "value": ["1250.0"]}, False),
        ({"field": "amount", "op": "not_null"}, True),
        ({"field": "balance_after", "op": "lt", "value": 0}, True),  # "-310.25"
        ({"field": "channel", "op": "eq", "value": "card"}, True),
        ({"field": "channel", "op": "ne", "value": "card"}, False),
        ({"field": "channel", "op": "in", "value": ["atm", "card"]}, True),
        ({"field": "channel", "op": "not_in", "value": ["atm", "card"]}, False),
        ({"field": "merchant_category", "op": "contains", "value": "41"}, True),
        ({"field": "merchant_category", "op": "contains", "value": "99"}, False),
        ({"field": "country", "op": "is_null"}, False),
    ],
)
def test_every_operator_on_event_fields(condition: dict[str, Any], expected: bool) -> None:
    assert fires(condition) is expected  # the example: 1250.00 CNY by card, MCC 5411, CN


@pytest.mark.parametrize(
    ("op", "value", "score", "expected"),
    [
        ("eq", 0.5, 0.5, True),
        ("ne", 0.5, 0.5, False),
        ("lt", 0.5, 0.49, True),
        ("le", 0.5, 0.5, True),
        ("gt", 0.9, 0.9, False),
        ("ge", 0.9, 0.9, True),
        ("between", [0.8, 0.9], 0.85, True),
        ("between", [0.8, 0.9], 0.95, False),
        ("in", [0.0, 1.0], 1.0, True),
        ("not_in", [0.0, 1.0], 0.5, True),
        ("ge", 1, 1.0, True),  # an integer threshold on a float score
        ("not_null", None, 0.0, True),  # zero is a value, not null
        ("is_null", None, 0.0, False),
    ],
)
def test_every_operator_on_a_score(op: str, value: Any, score: float, expected: bool) -> None:
    cond: dict[str, Any] = {"score": "outlier", "op": op}
    if value is not None:
        cond["value"] = value
    assert fires(cond, scores={"outlier": score}) is expected


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", "1"),
        ("ne", "1"),
        ("lt", "1"),
        ("le", "1"),
        ("gt", "1"),
        ("ge", "1"),
        ("between", ["0", "2"]),
        ("in", ["1"]),
        ("not_in", ["1"]),
    ],
)
def test_null_is_false_for_every_comparison_on_fields_scores_and_decimals(op: str, value: Any):
    no_balance = event(balance_after=None)
    assert not fires({"field": "balance_after", "op": op, "value": value}, ev=no_balance)
    assert not fires({"feature": "t_dec", "op": op, "value": value}, t_dec=None)
    floats = [float(x) for x in value] if isinstance(value, list) else float(value)
    assert not fires({"score": "outlier", "op": op, "value": floats}, scores={})
    assert not fires({"score": "outlier", "op": op, "value": floats}, scores={"other": 1.0})


def test_contains_on_a_missing_field_is_false_and_is_null_true() -> None:
    bare = event(merchant_category=None)
    assert not fires({"field": "merchant_category", "op": "contains", "value": "5"}, ev=bare)
    assert fires({"field": "merchant_category", "op": "is_null"}, ev=bare)
    assert not fires({"field": "merchant_category", "op": "not_null"}, ev=bare)


def test_stateful_operators_with_null_now_or_before_are_false() -> None:
    for op, value in (("crosses", 3), ("changed_by", 1), ("changed_to", 3)):
        cond = {"feature": "t_int", "op": op, "value": value}
        assert not fires(cond, t_int=None, before={"t_int": 1}), op
        assert not fires(cond, t_int=5, before={"t_int": None}), op
    became = {"feature": "t_bool", "op": "changed_to", "value": True}
    assert not fires(became, t_bool=True, before={"t_bool": None})


def test_crosses_and_changed_by_on_decimals_and_downwards() -> None:
    cond = {"feature": "t_dec", "op": "crosses", "value": "0.3"}
    assert fires(cond, t_dec=Decimal("0.3000"), before={"t_dec": Decimal("0.2999")})
    assert fires(cond, t_dec="0.31", before={"t_dec": "0.1"})  # decimal strings, as decimals
    assert not fires(cond, t_dec=Decimal("0.31"), before={"t_dec": Decimal("0.30")})
    fell = {"feature": "t_int", "op": "changed_by", "value": -10}
    assert fires(fell, t_int=5, before={"t_int": 15})
    assert not fires(fell, t_int=6, before={"t_int": 15})
    assert not fires(fell, t_int=25, before={"t_int": 15})


def test_an_unknown_name_of_an_ordered_enumeration_is_an_error() -> None:
    result = judge(
        {"feature": "t_tier", "op": "changed_by", "value": 1},
        t_tier="extreme",
        before={"t_tier": "low"},
    )
    assert [(e.rule_id, e.error) for e in result.errors] == [("r1", "ValueError")]
    assert "'extreme' is not one of" in result.errors[0].message


# -- errors are reported, never a silent false --------------------------------------------------


def test_a_feature_that_failed_before_the_event_fails_the_rule_that_reads_it() -> None:
    VALUES.clear()
    VALUES.update(t_int=1, fail=True)
    rs = compile_rules(
        rule({"feature": "t_flaky", "op": "crosses", "value": 3}, rid="needs_before"),
        rule({"feature": "t_int", "op": "ge", "value": 1}, rid="fine"),
    )
    ev = event()
    state = CustomerState("cust-00042")
    before = rs.capture(state, ENGINE, ev)
    VALUES.update(t_int=5, fail=False)  # readable again after the event
    result = rs.evaluate(ev, rs.view(state, ENGINE, ev, before))
    assert [h.rule_id for h in result.hits] == ["fine"]
    assert [(e.rule_id, e.error) for e in result.errors] == [("needs_before", "RuntimeError")]
    assert "before the event failed" in result.errors[0].message
    assert "state not readable" in result.errors[0].message
    assert rs.error_counts == {"needs_before": 1}


def test_a_feature_known_only_before_the_event_without_a_capture_is_reported() -> None:
    rs = compile_rules(rule({"feature": "country_is_new", "op": "eq", "value": True}))
    ev = event()
    result = rs.evaluate(ev, FeatureView(CustomerState("c"), ENGINE, ev, registry=REGISTRY))
    assert [(e.rule_id, e.error) for e in result.errors] == [("r1", "LookupError")]


def test_a_dedup_key_that_cannot_be_read_is_reported_not_dropped() -> None:
    VALUES.clear()
    broken = rule({"feature": "t_int", "op": "ge", "value": 0}, rid="broken")
    broken["dedup_key"] = "{customer_id}:{t_boom}"
    rs = compile_rules(broken)
    VALUES["t_int"] = 1
    ev = event()
    result = rs.evaluate(ev, FeatureView(CustomerState("c"), ENGINE, ev, registry=REGISTRY))
    assert result.hits == []
    assert [(e.rule_id, e.error) for e in result.errors] == [("broken", "ZeroDivisionError")]
    assert rs.error_counts == {"broken": 1}


def test_errors_are_counted_per_rule_across_events() -> None:
    VALUES.clear()
    VALUES["t_int"] = 1
    rs = compile_rules(
        rule({"feature": "t_boom", "op": "gt", "value": 1}, rid="a"),
        rule({"any": [{"feature": "t_int", "op": "gt", "value": 5},
                      {"feature": "t_boom", "op": "eq", "value": 1}]}, rid="b"),
    )  # fmt: skip
    ev = event()
    for _ in range(3):
        rs.evaluate(ev, FeatureView(CustomerState("c"), ENGINE, ev, registry=REGISTRY))
    VALUES["t_int"] = 9  # "b" is decided before it reaches the broken feature
    rs.evaluate(ev, FeatureView(CustomerState("c"), ENGINE, ev, registry=REGISTRY))
    assert rs.error_counts == {"a": 4, "b": 3}


# -- the event's own fields as a prefilter --------------------------------------------------------

PREFILTERED = (
    rule({"all": [{"field": "direction", "op": "eq", "value": "debit"},
                  {"field": "channel", "op": "in", "value": ["atm", "cash"]},
                  {"feature": "t_int", "op": "ge", "value": 1}]}, rid="cash"),
    rule({"all": [{"field": "channel", "op": "eq", "value": "card"},
                  {"field": "amount", "op": "ge", "value": "1000"},
                  {"feature": "t_int", "op": "crosses", "value": 3}]}, rid="big_card"),
    rule({"any": [{"field": "counterparty_type", "op": "in", "value": ["gambling", "crypto"]},
                  {"feature": "t_int", "op": "gt", "value": 8}]}, rid="either"),
    rule({"not": {"field": "direction", "op": "eq", "value": "credit"}}, rid="not_credit"),
    rule({"field": "counterparty_type", "op": "is_null"}, rid="no_counterparty"),
    rule({"feature": "t_int", "op": "changed_by", "value": 2}, rid="plain"),
)  # fmt: skip


@pytest.mark.parametrize("t_int", [0, 1, 5, 9])
def test_planned_evaluation_judges_exactly_as_each_whole_condition(t_int: int) -> None:
    rs = compile_rules(*PREFILTERED)
    VALUES.clear()
    combos = [
        (d, ch, cp, amount)
        for d in ("debit", "credit")
        for ch in ("card", "atm", "cash", "transfer")
        for cp in (None, "gambling", "employer")
        for amount in ("10.00", "5000.00")
    ]
    for d, ch, cp, amount in combos * 2:  # twice: plans are remembered after first use
        ev = event(direction=d, channel=ch, counterparty_type=cp, amount=amount)
        state = CustomerState("cust-00042")
        VALUES["t_int"] = 0
        before = rs.capture(state, ENGINE, ev)
        VALUES["t_int"] = t_int
        result = rs.evaluate(ev, rs.view(state, ENGINE, ev, before))
        assert not result.errors
        whole = FeatureView(state, ENGINE, ev, before={"t_int": 0}, registry=REGISTRY)
        expected = [r.id for r in rs.rules if r.condition.test(ev, whole, {})]
        assert [h.rule_id for h in result.hits] == expected, (d, ch, cp, amount)


def test_an_event_whose_fields_cannot_key_a_plan_is_judged_whole() -> None:
    rs = compile_rules(*PREFILTERED)
    VALUES.clear()
    VALUES["t_int"] = 9
    odd = event().model_copy(update={"channel": ["atm"]})  # unhashable: never valid on the wire
    view = FeatureView(CustomerState("c"), ENGINE, odd, before={"t_int": 9}, registry=REGISTRY)
    result = rs.evaluate(odd, view)
    assert [(e.rule_id, e.error) for e in result.errors] == [("cash", "TypeError")]
    assert [h.rule_id for h in result.hits] == ["either", "not_credit"]


def test_a_field_test_after_a_stateful_one_does_not_skip_its_capture() -> None:
    # the crossing is judged first, so its earlier value must be there even for a card payment
    cond = {"all": [{"feature": "t_int", "op": "crosses", "value": 3},
                    {"field": "channel", "op": "eq", "value": "atm"}]}  # fmt: skip
    rs = compile_rules(rule(cond))
    VALUES.clear()
    VALUES["t_int"] = 1
    ev = event(channel="card")
    state = CustomerState("cust-00042")
    before = rs.capture(state, ENGINE, ev)
    assert before == {"t_int": 1}
    VALUES["t_int"] = 5
    result = rs.evaluate(ev, rs.view(state, ENGINE, ev, before))
    assert result.hits == [] and result.errors == []


def test_the_view_after_the_event_never_sees_values_read_while_capturing() -> None:
    # t_twice reads t_int while capturing; the rule on t_int must see its value after the event
    rs = compile_rules(
        rule({"feature": "t_twice", "op": "changed_by", "value": 1}, rid="twice"),
        rule({"feature": "t_int", "op": "ge", "value": 5}, rid="now"),
    )
    VALUES.clear()
    VALUES["t_int"] = 1
    ev = event()
    state = CustomerState("cust-00042")
    before = rs.capture(state, ENGINE, ev)
    assert before == {"t_twice": 2}
    VALUES["t_int"] = 5
    first = rs.view(state, ENGINE, ev, before)
    assert [h.rule_id for h in rs.evaluate(ev, first).hits] == ["twice", "now"]
    second = rs.view(state, ENGINE, ev, before)  # a second view is a fresh one
    assert second is not first and second["t_twice"] == 10


# -- time ---------------------------------------------------------------------------------------


def test_a_tick_is_judged_at_its_own_instant() -> None:
    tick = Tick(event_id="t1", customer_id="c", occurred_at=datetime(2026, 2, 1, tzinfo=UTC))
    view = FeatureView(CustomerState("c"), ENGINE, tick, registry=REGISTRY)
    assert view.now == 1769904000


def test_what_capturing_chose_is_reused_only_by_the_same_rule_set_and_event() -> None:
    VALUES.clear()
    VALUES["t_int"] = 5
    card = compile_rules(rule({"field": "channel", "op": "eq", "value": "card"}, rid="card"))
    atm = compile_rules(rule({"field": "channel", "op": "eq", "value": "atm"}, rid="atm"))
    ev, other = event(channel="card"), event(channel="atm")
    state = CustomerState("cust-00042")
    before = card.capture(state, ENGINE, ev)
    assert [h.rule_id for h in card.evaluate(ev, card.view(state, ENGINE, ev, before)).hits] == [
        "card"
    ]
    assert atm.evaluate(ev, atm.view(state, ENGINE, ev, before)).hits == []  # its own rules
    view = card.view(state, ENGINE, other, before)  # a view for another event: judged afresh
    assert card.evaluate(other, view).hits == []
