"""``creditwatch rules check`` and ``rules test`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.cli import main
from rules.loader import DEFAULT_PACK

GOOD = """\
name: tiny
rules:
  - id: deep
    description: Deep arrears
    why: ninety days past due is default
    applies_to: [tick]
    condition: {feature: max_dpd, op: crosses, value: 90}
    severity: critical
    dedup_key: "{customer_id}:deep"
    route: both
"""
CASES = """\
cases:
  - name: fires at 91 days
    covers: deep
    given:
      - {type: installment.due, occurred_at: "2026-01-10T00:00:00+00:00", loan_id: L1,
         installment_no: 1, due_date: "2026-01-10", amount_due: "100.00", currency: CNY}
    when: {type: tick, occurred_at: "2026-04-11T00:00:00+00:00"}
    expect: [deep]
"""


def test_check_the_default_pack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(DEFAULT_PACK)]) == 0
    out = capsys.readouterr().out
    assert "ok: rule set default version" in out and "15 rules" in out


def test_check_prints_each_problem_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.replace("max_dpd, op: crosses", "max_dpdd, op: crosses").replace(
            "severity: critical", "severity: dire"
        )
    )
    assert main(["rules", "check", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"{bad}: 1 problem(s)"  # structure first: severity
    assert lines[0].startswith(f"{bad}:8:15: rule deep:")
    bad.write_text(GOOD.replace("max_dpd, op: crosses", "max_dpdd, op: crosses"))
    assert main(["rules", "check", str(bad)]) == 1
    assert f"{bad}:7:26: rule deep: unknown feature 'max_dpdd'" in capsys.readouterr().out


def test_check_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "none.yaml")]) == 2


def test_test_runs_the_cases_beside_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny.yaml").write_text(GOOD)
    (tmp_path / "tiny.cases.yaml").write_text(CASES)
    assert main(["rules", "test", str(tmp_path / "tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "PASS  fires at 91 days" in out and "1 passed, 0 failed" in out

    (tmp_path / "tiny.yaml").write_text(GOOD.replace("value: 90}", "value: 120}"))
    assert main(["rules", "test", str(tmp_path / "tiny.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  fires at 91 days" in out
    assert "expected but did not fire: deep" in out


def test_test_the_default_pack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", str(DEFAULT_PACK)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "rules with no case" not in out
