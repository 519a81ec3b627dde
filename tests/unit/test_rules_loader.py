"""Load-time rejection: every problem named with its rule id, path, line and column."""

from __future__ import annotations

import textwrap

import pytest

from rules.conditions import Problem
from rules.loader import RuleSetError, check_text, load_text
from rules.model import parse_cooldown

HEAD = "name: t\nrules:\n"


def rule_yaml(condition: str, *, rid: str = "r1", extra: str = "", applies: str = "[tick]") -> str:
    return textwrap.indent(
        textwrap.dedent(
            f"""\
            - id: {rid}
              description: test
              why: tests
              applies_to: {applies}
              condition: {condition}
              severity: high
              dedup_key: "{{customer_id}}:{rid}"
              route: both
            """
        )
        + textwrap.indent(extra, "  "),
        "  ",
    )


def problems(text: str) -> list[Problem]:
    compiled, found = check_text(text)
    assert compiled is None
    return found


def test_unknown_feature_is_named_with_rule_id_line_column_and_a_suggestion() -> None:
    text = HEAD + rule_yaml("{feature: max_dpdd, op: ge, value: 30}")
    (p,) = problems(text)
    assert p.rule_id == "r1"
    assert p.path == ("rules", 0, "condition", "feature")
    assert (p.line, p.column) == (7, 26)
    assert "unknown feature 'max_dpdd'" in p.message and "max_dpd" in p.message
    assert p.format("f.yaml").startswith("f.yaml:7:26: rule r1: unknown feature")


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ("{feature: max_dpd, op: ge, value: thirty}", "feature 'max_dpd' is int; 'thirty' is not"),
        ("{feature: max_dpd, op: ge, value: 2.5}", "is not a whole number"),
        ("{feature: own_exposure, op: ge, value: lots}", "is not a decimal number"),
        ("{feature: defaulted, op: eq, value: yes please}", "is not true or false"),
        ("{feature: risk_tier, op: eq, value: extreme}", "is not one of premium, low"),
        ("{feature: income_late, op: lt, value: true}", "lt needs a number"),
        ("{feature: max_dpd, op: contains, value: '3'}", "contains needs a string or a list"),
        ("{feature: max_dpd, op: between, value: [5, 1]}", "low is above high"),
        ("{feature: max_dpd, op: between, value: [1]}", "between takes [low, high]"),
        ("{feature: max_dpd, op: in, value: 3}", "in takes a non-empty list"),
        ("{feature: max_dpd, op: is_null, value: 3}", "is_null takes no value"),
        ("{feature: max_dpd, op: ge}", "a value is required"),
        ("{feature: risk_tier, op: crosses, value: high}", "crosses needs a number"),
        ("{feature: max_dpd, op: changed_by, value: 0}", "non-zero"),
        ("{feature: max_dpd, field: amount, op: ge, value: 1}", "exactly one of feature"),
        ("{field: event_id, op: changed_to, value: x}", "features only"),
        ("{field: amount, op: ge, value: 1}", "field 'amount' is not on event type 'tick'"),
        ("{score: Bad-Name, op: ge, value: 1}", "lower_snake_case"),
    ],
)
def test_type_and_operator_mismatches_are_rejected(condition: str, fragment: str) -> None:
    found = problems(HEAD + rule_yaml(condition))
    assert len(found) == 1, found
    assert fragment in found[0].message
    assert found[0].rule_id == "r1"
    assert found[0].line is not None


def test_yaml_syntax_error_has_a_position() -> None:
    text = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: [1, 2}")
    (p,) = problems(text)
    assert p.message.startswith("YAML syntax error")
    assert p.line == 7


def test_structural_errors_point_at_the_key() -> None:
    text = HEAD + rule_yaml("{feature: max_dpd, op: bigger, value: 1}", extra="colour: red\n")
    found = {(p.path[-1], p.line) for p in problems(text)}
    assert ("op", 7) in found
    assert ("colour", 11) in found
    msgs = " ".join(p.message for p in problems(text))
    assert "unknown key 'colour'" in msgs


def test_a_missing_key_is_named() -> None:
    text = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 1}").replace(
        "    severity: high\n", ""
    )
    (p,) = problems(text)
    assert p.message == "missing key 'severity'"
    assert p.rule_id == "r1"


def test_unknown_event_type_duplicate_ids_and_duplicate_keys() -> None:
    text = (
        HEAD
        + rule_yaml("{feature: max_dpd, op: ge, value: 1}", applies="[tick, loan.exploded]")
        + rule_yaml("{feature: max_dpd, op: ge, value: 1}")
    )
    msgs = [(p.rule_id, p.message) for p in problems(text)]
    assert ("r1", "unknown event type 'loan.exploded'") in msgs
    assert ("r1", "duplicate rule id 'r1'") in msgs
    dup = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 1}", extra="route: collections\n")
    assert any(p.message == "duplicate key 'route'" and p.line == 11 for p in problems(dup))


def test_every_problem_in_a_file_is_reported_not_just_the_first() -> None:
    text = (
        HEAD
        + rule_yaml("{feature: nope, op: ge, value: 1}", rid="a")
        + rule_yaml("{feature: max_dpd, op: ge, value: x}", rid="b")
    )
    assert [p.rule_id for p in problems(text)] == ["a", "b"]
    with pytest.raises(RuleSetError) as err:
        load_text(text, "pack.yaml")
    assert str(err.value).count("pack.yaml:") == 2


def test_dedup_key_placeholders_are_checked() -> None:
    bad = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 1}").replace(
        '"{customer_id}:r1"', '"{customer_id}:{loan_id}"'
    )
    (p,) = problems(bad)
    assert "{loan_id}" in p.message and p.path[-1] == "dedup_key"
    ok = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 1}", applies="[repayment.failed]")
    ok = ok.replace('"{customer_id}:r1"', '"{customer_id}:{loan_id}:{risk_tier}"')
    assert load_text(ok).rules[0].rule.dedup_key.endswith("{risk_tier}")


def test_cooldown_forms() -> None:
    assert parse_cooldown("PT6H") == 6 * 3600
    assert parse_cooldown("P1DT12H") == 36 * 3600
    assert parse_cooldown(90) == 90
    for bad in ("6 hours", "P", "PT", -1, True):
        with pytest.raises(ValueError):
            parse_cooldown(bad)
    text = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 1}", extra="cooldown: soon\n")
    (p,) = problems(text)
    assert "cooldown 'soon'" in p.message and p.line == 11


def test_version_is_a_content_hash_unless_given() -> None:
    text = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 1}")
    a, b = load_text(text), load_text(text)
    assert a.version == b.version and len(a.version) == 12
    changed = load_text(text.replace("value: 1}", "value: 2}"))
    assert changed.version != a.version
    given = load_text('version: "2026.1"\n' + text)
    assert given.version == "2026.1"


def test_a_disabled_rule_is_validated_but_never_judges() -> None:
    text = HEAD + rule_yaml("{feature: max_dpd, op: ge, value: 0}", extra="enabled: false\n")
    rs = load_text(text)
    assert rs.rules_for("tick") == ()
    assert problems(text.replace("value: 0}", "value: x}"))
