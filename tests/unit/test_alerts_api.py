"""The alert API's handlers: tokens, input checking, and what each write does.

The handlers run over a real memory alert service (no web server, no Redis);
the worker test (tests/integration/test_worker_alerts.py) drives the same
routes over HTTP against a running worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import SecretStr

from alerts.clock import ManualClock
from alerts.config import AlertConfig, BreakerConfig
from alerts.factory import AlertService, memory_service
from alerts.intake import AlertIntake
from config.settings import ApiSettings
from streams.alerts_api import ROUTES, AlertsApi, ApiRequest, ApiResponse
from tests.unit.alert_samples import T0, make_alert

READ = "r" * 20
WRITE = "w" * 20
ROUTE = {r.handler: r for r in ROUTES}


@dataclass
class Delivery:
    """What the API uses of the worker's alert delivery: its service."""

    service: AlertService


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def service(clock: ManualClock) -> AlertService:
    return memory_service(notifiers={}, config=AlertConfig(), clock=clock)


def api_for(service: AlertService | None, *, read: str | None, write: str | None) -> AlertsApi:
    settings = ApiSettings(
        read_token=SecretStr(read) if read else None,
        write_token=SecretStr(write) if write else None,
    )
    return AlertsApi(settings, Delivery(service) if service else None)  # type: ignore[arg-type]


@pytest.fixture
def api(service: AlertService) -> AlertsApi:
    return api_for(service, read=READ, write=WRITE)


async def call(
    api: AlertsApi,
    handler: str,
    *,
    token: str | None = WRITE,
    query: dict[str, str] | None = None,
    body: Any = None,
    **params: str,
) -> ApiResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    raw = body if isinstance(body, bytes) else (b"" if body is None else orjson.dumps(body))
    request = ApiRequest(headers=headers, query=query or {}, body=raw)
    response = await api.dispatch(ROUTE[handler], request, **params)
    orjson.dumps(response.body)  # always JSON-ready
    return response


# -- tokens -----------------------------------------------------------------------------


async def test_without_tokens_reads_are_open_and_writes_refused(service: AlertService) -> None:
    api = api_for(service, read=None, write=None)
    assert (await call(api, "list_alerts", token=None)).status == 200
    refused = await call(api, "create_silence", token="anything" * 3, body={})
    assert refused.status == 403 and "no write token" in refused.body["error"]


async def test_tokens_decide_who_reads_and_who_writes(api: AlertsApi) -> None:
    missing = await call(api, "list_alerts", token=None)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await call(api, "list_alerts", token="x" * 20)).status == 401
    assert (await call(api, "list_alerts", token=READ)).status == 200
    assert (await call(api, "list_alerts", token=WRITE)).status == 200  # write reads too
    body = {"by": "ana"}
    assert (await call(api, "acknowledge", token=None, body=body, alert_id="a-1")).status == 401
    read_write = await call(api, "acknowledge", token=READ, body=body, alert_id="a-1")
    assert read_write.status == 403 and "read token" in read_write.body["error"]
    assert (await call(api, "acknowledge", token=WRITE, body=body, alert_id="a-1")).status == 404
    basic = ApiRequest(headers={"authorization": f"Basic {READ}"})
    assert (await api.dispatch(ROUTE["list_alerts"], basic)).status == 401


async def test_openapi_is_public_and_describes_every_route(api: AlertsApi) -> None:
    response = await call(api, "openapi", token=None)
    assert response.status == 200
    doc = response.body
    assert doc["openapi"].startswith("3.1")
    for route in ROUTES:
        operation = doc["paths"][route.path][route.method.lower()]
        assert operation["responses"], route
        if route.write:
            assert operation["security"] == [{"bearer": []}]
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    refs = {m for m in orjson.dumps(doc).decode().split('"') if m.startswith("#/components/")}
    for ref in refs:
        _, _, kind, name = ref.split("/")
        assert name in doc["components"][kind], ref


# -- warnings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, "between 1 and 1000"),
        ({"limit": "ten"}, "whole number"),
        ({"status": "open"}, "status must be one of firing, resolved"),
        ({"severity": "urgent"}, "severity must be one of"),
        ({"acknowledged": "yes"}, "true or false"),
        ({"customer": "C1"}, "unknown parameter customer"),
        ({"customer_id": ""}, "customer_id must not be empty"),
    ],
)
async def test_bad_listing_parameters_are_named(
    api: AlertsApi, query: dict[str, str], message: str
) -> None:
    response = await call(api, "list_alerts", query=query)
    assert response.status == 400 and message in response.body["error"]


async def test_list_ack_and_resolve_a_warning(api: AlertsApi, service: AlertService) -> None:
    intake = AlertIntake(service)
    await intake.take(make_alert())
    await intake.take(make_alert(alert_id="a-2", customer_id="C2", dedup_key="C2:x", code="x"))
    listed = await call(api, "list_alerts", query={"customer_id": "C1"}, token=READ)
    assert [a["alert_id"] for a in listed.body["alerts"]] == ["a-1"]
    view = listed.body["alerts"][0]
    assert view["status"] == "firing" and view["notification"]["outcome"] == "new"
    assert view["alert"]["code"] == "dpd_30" and view["acknowledged"] is None

    for body, message in [
        (None, "JSON object"),
        (b"[1]", "JSON object"),
        (b"{", "not valid JSON"),
        ({}, "by is required"),
        ({"by": ""}, "non-empty"),
        ({"by": "ana", "note": "x"}, "unknown field(s) note"),
    ]:
        bad = await call(api, "acknowledge", body=body, alert_id="a-1")
        assert bad.status == 400 and message in bad.body["error"], body
    acked = await call(api, "acknowledge", body={"by": "ana", "comment": "calling"}, alert_id="a-1")
    assert acked.status == 200
    assert acked.body["acknowledged"]["by"] == "ana"
    assert acked.body["acknowledged"]["at"] == T0.isoformat()
    later = await call(api, "acknowledge", body={"by": "bo"}, alert_id="a-1")
    assert later.body["acknowledged"]["by"] == "ana"  # the first is kept
    unacked = await call(api, "list_alerts", query={"acknowledged": "false"})
    assert [a["alert_id"] for a in unacked.body["alerts"]] == ["a-2"]

    resolved = await call(api, "resolve", body={"by": "ana", "comment": "paid"}, alert_id="a-1")
    assert resolved.status == 200
    assert resolved.body["outcome"] == "resolved" and resolved.body["notified"] is True
    assert resolved.body["alert"]["resolved"]["by"] == "ana"
    again = await call(api, "resolve", body={"by": "bo"}, alert_id="a-1")
    assert again.body["outcome"] == "already_resolved"
    assert again.body["alert"]["resolved"]["by"] == "ana"
    one = await call(api, "get_alert", alert_id="a-1", token=READ)
    assert one.body["status"] == "resolved" and one.body["condition"]["status"] == "resolved"
    firing = await call(api, "list_alerts", query={"status": "firing"})
    assert [a["alert_id"] for a in firing.body["alerts"]] == ["a-2"]
    assert (await call(api, "get_alert", alert_id="a-9")).status == 404
    assert (await call(api, "resolve", body={"by": "x"}, alert_id="a-9")).status == 404


# -- silences ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"created_by": "ana", "comment": "c", "duration": "4h"}, "at least one of"),
        ({"customer_id": "C1", "comment": "c", "duration": "4h"}, "created_by is required"),
        ({"customer_id": "C1", "created_by": "ana", "duration": "4h"}, "comment is required"),
        ({"customer_id": "C1", "created_by": "a", "comment": "c"}, "exactly one of duration"),
        (
            {
                "customer_id": "C1",
                "created_by": "a",
                "comment": "c",
                "duration": "1h",
                "ends_at": "2026-02-11T00:00:00+00:00",
            },
            "exactly one of duration",
        ),
        ({"customer_id": "C1", "created_by": "a", "comment": "c", "duration": "soon"}, "30m"),
        (
            {"customer_id": "C1", "created_by": "a", "comment": "c", "ends_at": "2026-02-11"},
            "UTC offset",
        ),
        (
            {
                "customer_id": "C1",
                "created_by": "a",
                "comment": "c",
                "ends_at": "2020-01-01T00:00:00Z",
            },
            "already be over",
        ),
        ({"customer_id": "C1", "created_by": "a", "comment": "c", "duration": "100d"}, "90 days"),
        ({"severity": "urgent", "created_by": "a", "comment": "c", "duration": "1h"}, "severity"),
        (
            {"matchers": ["colour=red"], "created_by": "a", "comment": "c", "duration": "1h"},
            "colour",
        ),
        ({"matchers": "code=x", "created_by": "a", "comment": "c", "duration": "1h"}, "list"),
        ({"customer": "C1", "created_by": "a", "comment": "c", "duration": "1h"}, "unknown field"),
    ],
)
async def test_bad_silences_are_refused_with_the_reason(
    api: AlertsApi, body: dict[str, Any], message: str
) -> None:
    response = await call(api, "create_silence", body=body)
    assert response.status == 400 and message in response.body["error"], response.body


async def test_a_silence_made_through_the_api_mutes_then_expires(
    api: AlertsApi, service: AlertService, clock: ManualClock
) -> None:
    body = {
        "customer_id": "C1",
        "severity": "warning",
        "matchers": ["code=~dpd_[0-9]+"],
        "duration": "4h",
        "created_by": "ana",
        "comment": "restructuring agreed",
    }
    created = await call(api, "create_silence", body=body)
    assert created.status == 201
    silence = created.body
    assert silence["state"] == "active" and silence["created_by"] == "ana"
    assert sorted(silence["matchers"]) == [
        'code=~"dpd_[0-9]+"',
        'customer_id="C1"',
        'severity="warning"',
    ]
    assert datetime.fromisoformat(silence["ends_at"]) == T0 + timedelta(hours=4)
    intake = AlertIntake(service)
    assert (await intake.take(make_alert())).reason == "silenced"
    assert (await intake.take(make_alert(alert_id="a-3", customer_id="C3"))).reason == "new"

    listed = await call(api, "list_silences", query={"state": "active"}, token=READ)
    assert [s["id"] for s in listed.body["silences"]] == [silence["id"]]
    assert (await call(api, "list_silences", query={"state": "gone"})).status == 400
    no_by = await call(api, "expire_silence", silence_id=silence["id"])
    assert no_by.status == 400 and "by" in no_by.body["error"]
    unknown = await call(api, "expire_silence", query={"by": "bo"}, silence_id="nope")
    assert unknown.status == 404
    expired = await call(api, "expire_silence", query={"by": "bo"}, silence_id=silence["id"])
    assert expired.status == 200
    assert (expired.body["state"], expired.body["expired_by"]) == ("expired", "bo")
    clock.advance(timedelta(seconds=2))  # past the silences' cache refresh
    assert (await intake.take(make_alert(alert_id="a-4"))).reason == "new"


# -- breakers and a disabled delivery ---------------------------------------------------


async def test_breakers_list_and_release(clock: ManualClock) -> None:
    config = AlertConfig(breaker=BreakerConfig(min_customers=2))
    service = memory_service(notifiers={}, config=config, clock=clock)
    api = api_for(service, read=READ, write=WRITE)
    intake = AlertIntake(service)
    for i in range(3):
        alert = make_alert(alert_id=f"b-{i}", customer_id=f"B{i}", dedup_key=f"B{i}:f", code="f")
        await intake.take(alert)
    listed = await call(api, "list_breakers", token=READ)
    assert [(b["code"], b["state"], b["held"]) for b in listed.body["breakers"]] == [
        ("f", "open", 2)
    ]
    missing = await call(api, "release_breaker", body={"by": "ops"}, code="f")
    assert missing.status == 400 and "deliver" in missing.body["error"]
    unknown = await call(api, "release_breaker", body={"by": "ops", "deliver": True}, code="g")
    assert unknown.status == 404
    released = await call(api, "release_breaker", body={"by": "ops", "deliver": True}, code="f")
    assert released.status == 200
    assert released.body == {"code": "f", "released": 2, "delivered": True, "queued": 2}


async def test_a_worker_without_alert_delivery_says_so() -> None:
    api = api_for(None, read=None, write=WRITE)
    response = await call(api, "list_alerts")
    assert response.status == 503 and "disabled" in response.body["error"]
    assert (await call(api, "openapi", token=None)).status == 200
