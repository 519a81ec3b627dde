"""``creditwatch rules ...`` as a user runs them (against a live broker: integration tests)."""

from __future__ import annotations

import socket
import time
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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointing at a port where no broker listens: any Kafka call must fail fast."""
    bootstrap = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    return bootstrap


def test_publish_refuses_an_invalid_file_before_talking_to_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unreachable: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("max_dpd, op: crosses", "max_dpdd, op: crosses"))
    code = main(["rules", "publish", str(bad), "--author", "ann", "--message", "m"])
    out = capsys.readouterr().out
    assert code == 1, out  # 2 would mean it tried Kafka
    assert f"{bad}: refusing to publish an invalid rule set" in out
    assert f"{bad}:7:26: rule deep: unknown feature 'max_dpdd'" in out
    assert (
        main(["rules", "publish", str(tmp_path / "none.yaml"), "--author", "a", "--message", "m"])
        == 2
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["history"],
        ["history", "--name", "tiny", "--diff"],
        ["publish", str(DEFAULT_PACK), "--author", "ann", "--message", "m"],
        ["rollback", "3", "--name", "tiny", "--author", "ann", "--message", "m"],
    ],
)
def test_an_unreachable_broker_is_a_clear_error_not_a_wait(
    argv: list[str], capsys: pytest.CaptureFixture[str], unreachable: str
) -> None:
    started = time.monotonic()
    assert main(["rules", *argv, "--timeout", "20"]) == 2
    assert time.monotonic() - started < 10
    assert f"error: Kafka at {unreachable} is unavailable" in capsys.readouterr().out


def test_the_bootstrap_flag_overrides_the_settings(
    capsys: pytest.CaptureFixture[str], unreachable: str
) -> None:
    other = f"127.0.0.1:{closed_port()}"
    assert main(["rules", "history", "--bootstrap", other]) == 2
    assert f"Kafka at {other} is unavailable" in capsys.readouterr().out


def test_an_invalid_configuration_names_the_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    assert main(["rules", "history"]) == 2
    out = capsys.readouterr().out
    assert "invalid configuration" in out and "kafka" in out and "sasl_username" in out
