"""The condition language: every operator, null and missing values, Decimal, stateful ops."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from config.settings import Settings
from risk.customer import CustomerState
from risk.engine import Engine
from rules.engine import CompiledRuleSet
from rules.features import FEATURES, FeatureSpec, FeatureView
from rules.loader import check_data, load_data
from schemas.events import EVENT_MODELS, EXAMPLES

ENGINE = Engine(Settings())
VALUES: dict[str, Any] = {}


def _static(name: str, type_: str, **kw: Any) -> FeatureSpec:
    return FeatureSpec(name, type_, lambda v: VALUES[name], f"test {name}", **kw)  # type: ignore[arg-type]


def _boom(v: FeatureView) -> Any:
    raise ZeroDivisionError("broken getter")


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
