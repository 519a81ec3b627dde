"""Settings of the alert path: read from the environment, refused at start naming the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import Settings
from streams.alerts_api import ROUTES, openapi_document


def error_fields(**env: str) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **env)  # type: ignore[call-arg]
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in caught.value.errors()}


def test_the_alert_path_is_configured_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    for name, value in {
        "CREDITWATCH_SMTP__RISK_DESK": '["desk@bank.example", "desk2@bank.example"]',
        "CREDITWATCH_SMTP__OPS": '["ops@bank.example"]',
        "CREDITWATCH_SMTP__USE_TLS": "true",
        "CREDITWATCH_SMTP__TLS_CA_FILE": str(ca),
        "CREDITWATCH_SMTP__TIMEOUT_SECONDS": "7",
        "CREDITWATCH_SMTP__SUBJECT_PREFIX": "[cw-uat]",
        "CREDITWATCH_ALERT_DELIVERY__PUBLIC_BASE_URL": "https://cw.bank.example/",
        "CREDITWATCH_ALERT_DELIVERY__FLUSH_INTERVAL_SECONDS": "2",
        "CREDITWATCH_ALERT_DELIVERY__POLICY__GROUP_WAIT": "PT10S",
        "CREDITWATCH_ALERT_DELIVERY__POLICY__DELIVERY__MAX_BACKOFF": "PT1M",
        "CREDITWATCH_API__READ_TOKEN": "r" * 16,
        "CREDITWATCH_API__WRITE_TOKEN": "w" * 32,
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.smtp.risk_desk == ("desk@bank.example", "desk2@bank.example")
    assert s.smtp.ops == ("ops@bank.example",) and s.smtp.use_tls
    assert (s.smtp.timeout_seconds, s.smtp.subject_prefix) == (7.0, "[cw-uat]")
    assert s.alert_delivery.public_base_url == "https://cw.bank.example"
    assert s.alert_delivery.policy.group_wait == timedelta(seconds=10)
    assert s.alert_delivery.policy.delivery.max_backoff == timedelta(minutes=1)
    assert s.api.write_token is not None and "w" * 32 not in repr(s.api)


def test_defaults_read_openly_and_refuse_writes() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.api.read_token is None and s.api.write_token is None
    assert s.alert_delivery.enabled and s.smtp.risk_desk == ()


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"smtp": {"starttls": True, "use_tls": True}}, "smtp", "exclude each other"),
        ({"smtp": {"risk_desk": ["desk"]}}, "smtp.risk_desk", "not an email address"),
        ({"smtp": {"ops": ["a@b", "x y@z"]}}, "smtp.ops", "not an email address"),
        ({"smtp": {"sender": "creditwatch"}}, "smtp.sender", "not an email address"),
        ({"smtp": {"tls_ca_file": "/no/such/ca.pem"}}, "smtp.tls_ca_file", "no such file"),
        ({"smtp": {"timeout_seconds": 0}}, "smtp.timeout_seconds", "greater than 0"),
        ({"api": {"write_token": "short"}}, "api.write_token", "at least 16"),
        (
            {"alert_delivery": {"public_base_url": "cw.bank.example"}},
            "alert_delivery.public_base_url",
            "http",
        ),
        (
            {"alert_delivery": {"policy": {"default_route": "nowhere"}}},
            "alert_delivery.policy",
            "default_route 'nowhere'",
        ),
        (
            {"alert_delivery": {"policy": {"group_by": ["colour"]}}},
            "alert_delivery.policy.group_by",
            "unknown label",
        ),
        (
            {"alert_delivery": {"flush_interval_seconds": -1}},
            "alert_delivery.flush_interval_seconds",
            "greater than 0",
        ),
    ],
)
def test_bad_values_fail_naming_the_field(fields: dict[str, object], where: str, says: str) -> None:
    errors = error_fields(**fields)  # type: ignore[arg-type]
    assert where in errors, errors
    assert says in errors[where], errors


def test_every_page_the_worker_serves_is_described() -> None:
    """The OpenAPI document lists exactly the worker's pages, with their methods."""
    from streams.bootstrap import build_worker

    app, _runtime = build_worker(Settings(_env_file=None))  # type: ignore[call-arg]
    doc = openapi_document()
    served = {
        path: {m.lower() for m in view.get_methods() if m != "HEAD"}
        for path, view in app.web.views.items()
    }
    described = {path: set(ops) for path, ops in doc["paths"].items()}
    assert served == described
    assert {(r.method.lower(), r.path) for r in ROUTES} <= {
        (m, p) for p, ms in described.items() for m in ms
    }
