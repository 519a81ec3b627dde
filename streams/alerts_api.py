"""The worker's HTTP API for the alert path: warnings, silences, breakers, and its description.

Routes (on Faust's web server, the worker's HTTP port; ``docs/api.md``):

- ``GET /alerts``, ``GET /alerts/{alert_id}``: the warnings the worker took
  from the alerts topic, with what was done with each;
- ``POST /alerts/{alert_id}/ack``, ``POST /alerts/{alert_id}/resolve``;
- ``GET /silences``, ``POST /silences``, ``DELETE /silences/{silence_id}``;
- ``GET /breakers``, ``POST /breakers/{code}/release``;
- ``GET /openapi.json``: an OpenAPI 3.1 description of every worker endpoint.

Authentication is a bearer token (``Authorization: Bearer <token>``): reads
need the read token when one is configured (the write token reads too),
writes need the write token, and with no write token configured every
write is refused (403). A missing or wrong token is 401, a read token used
for a write is 403; tokens are compared in constant time. Errors are JSON
``{"error": "..."}``; a bad request names what is wrong (400).

The handlers are plain async methods of :class:`AlertsApi` over an
:class:`ApiRequest`, so they are tested without a web server; the Faust
views are generated from :data:`ROUTES`, the same table the OpenAPI
document is checked against.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import faust
import orjson
from pydantic import SecretStr

from alerts import admin
from alerts.index import AlertQuery
from alerts.matchers import Matcher
from alerts.silences import SilenceError
from config.settings import ApiSettings
from schemas.outputs import RiskAlert, RiskState

if TYPE_CHECKING:
    from streams.alert_delivery import AlertDelivery

__all__ = [
    "ROUTES",
    "AlertsApi",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "Route",
    "openapi_document",
    "register_alerts_api",
]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
SEVERITIES = ("info", "warning", "high", "critical")
SILENCE_STATES = ("pending", "active", "expired")
_REALM = 'Bearer realm="creditwatch"'


class ApiError(Exception):
    """A request that cannot be served: HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ApiRequest:
    """What a handler reads of an HTTP request."""

    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def authorization(self) -> str | None:
        for name, value in self.headers.items():
            if name.lower() == "authorization":
                return value
        return None


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    """Name of the :class:`AlertsApi` method that serves it."""
    write: bool = False
    public: bool = False
    """Served without a token whatever is configured (the API's own description)."""


ROUTES: tuple[Route, ...] = (
    Route("GET", "/alerts", "list_alerts"),
    Route("GET", "/alerts/{alert_id}", "get_alert"),
    Route("POST", "/alerts/{alert_id}/ack", "acknowledge", write=True),
    Route("POST", "/alerts/{alert_id}/resolve", "resolve", write=True),
    Route("GET", "/silences", "list_silences"),
    Route("POST", "/silences", "create_silence", write=True),
    Route("DELETE", "/silences/{silence_id}", "expire_silence", write=True),
    Route("GET", "/breakers", "list_breakers"),
    Route("POST", "/breakers/{code}/release", "release_breaker", write=True),
    Route("GET", "/openapi.json", "openapi", public=True),
)


# -- input checking ------------------------------------------------------------------------


def _only(params: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ApiError(
            400, f"unknown {where} {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise ApiError(413, f"request body over {MAX_BODY} bytes")
    if not body.strip():
        raise ApiError(400, "the request body must be a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _text(data: Mapping[str, Any], name: str, *, required: bool, limit: int) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ApiError(400, f"{name} must be at most {limit} characters")
    return value.strip()


def _choice(value: str | None, name: str, options: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in options:
        raise ApiError(400, f"{name} must be one of {', '.join(options)}, not {value!r}")
    return value


def _aware(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} is not an RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, f"{name} needs a UTC offset, e.g. 2026-03-01T18:00:00+08:00")
    return parsed


def _required(data: Mapping[str, Any], name: str, *, limit: int) -> str:
    value = _text(data, name, required=True, limit=limit)
    if value is None:  # _text raised already; this keeps the type narrow
        raise ApiError(400, f"{name} is required")
    return value


def _by_and_comment(body: bytes) -> tuple[str, str]:
    data = _json_object(body)
    _only(data, {"by", "comment"}, "field(s)")
    by = _required(data, "by", limit=200)
    comment = _text(data, "comment", required=False, limit=2000) or ""
    return by, comment


def _same_token(presented: str, expected: SecretStr | None) -> bool:
    if expected is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# -- the handlers --------------------------------------------------------------------------


class AlertsApi:
    """The endpoints, over one worker's alert delivery (None: delivery disabled)."""

    def __init__(self, settings: ApiSettings, delivery: AlertDelivery | None) -> None:
        self.settings = settings
        self.delivery = delivery

    def authorize(self, request: ApiRequest, *, write: bool) -> None:
        """Raise 401/403 unless the request's token allows a read (or a write)."""
        read_token, write_token = self.settings.read_token, self.settings.write_token
        if write and write_token is None:
            raise ApiError(
                403,
                "changes are disabled on this worker: no write token is configured "
                "(CREDITWATCH_API__WRITE_TOKEN)",
            )
        if not write and read_token is None:
            return
        token = _bearer(request.authorization)
        if token is None:
            raise ApiError(
                401,
                "a bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": _REALM},
            )
        if _same_token(token, write_token):
            return
        if _same_token(token, read_token):
            if write:
                raise ApiError(403, "the read token cannot make changes; use the write token")
            return
        raise ApiError(401, "the bearer token is not valid", {"WWW-Authenticate": _REALM})

    async def dispatch(self, route: Route, request: ApiRequest, **params: str) -> ApiResponse:
        """Authorize and serve one request; every failure becomes a JSON error."""
        try:
            if not route.public:
                self.authorize(request, write=route.write)
            handler: Callable[..., Awaitable[ApiResponse]] = getattr(self, route.handler)
            return await handler(request, **params)
        except ApiError as exc:
            return ApiResponse(exc.status, {"error": exc.message}, exc.headers)
        except Exception as exc:
            from streams.runtime import RETRYABLE

            if isinstance(exc, RETRYABLE):
                log.warning("API %s %s: store unavailable: %s", route.method, route.path, exc)
                return ApiResponse(
                    503,
                    {"error": "the alert store is unavailable; try again"},
                    {"Retry-After": "5"},
                )
            log.exception("API %s %s failed", route.method, route.path)
            return ApiResponse(500, {"error": "internal error; see the worker's log"})

    def _service(self) -> Any:
        if self.delivery is None:
            raise ApiError(503, "alert delivery is disabled on this worker")
        return self.delivery.service

    # -- warnings --

    async def list_alerts(self, request: ApiRequest) -> ApiResponse:
        q = request.query
        _only(
            q, {"status", "severity", "customer_id", "code", "acknowledged", "limit"}, "parameter"
        )
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit must be a whole number") from None
        if not 1 <= limit <= 1000:
            raise ApiError(400, "limit must be between 1 and 1000")
        acknowledged = q.get("acknowledged")
        if acknowledged not in (None, "true", "false"):
            raise ApiError(400, "acknowledged must be true or false")
        for name in ("customer_id", "code"):
            if name in q and not q[name]:
                raise ApiError(400, f"{name} must not be empty")
        query = AlertQuery(
            status=_choice(q.get("status"), "status", ("firing", "resolved")),  # type: ignore[arg-type]
            severity=_choice(q.get("severity"), "severity", SEVERITIES),
            customer_id=q.get("customer_id"),
            code=q.get("code"),
            acknowledged=None if acknowledged is None else acknowledged == "true",
            limit=limit,
        )
        alerts = await admin.list_alerts(self._service(), query)
        return ApiResponse(200, {"alerts": alerts, "count": len(alerts)})

    async def get_alert(self, request: ApiRequest, alert_id: str) -> ApiResponse:
        _only(request.query, set(), "parameter")
        view = await admin.get_alert(self._service(), alert_id)
        if view is None:
            raise ApiError(404, f"no warning {alert_id!r} (unknown, or older than the retention)")
        return ApiResponse(200, view)

    async def acknowledge(self, request: ApiRequest, alert_id: str) -> ApiResponse:
        by, comment = _by_and_comment(request.body)
        view = await admin.acknowledge_alert(self._service(), alert_id, by=by, comment=comment)
        if view is None:
            raise ApiError(404, f"no warning {alert_id!r}")
        return ApiResponse(200, view)

    async def resolve(self, request: ApiRequest, alert_id: str) -> ApiResponse:
        by, comment = _by_and_comment(request.body)
        try:
            result = await admin.resolve_alert(self._service(), alert_id, by=by, comment=comment)
        except admin.ResolveConflict as exc:
            raise ApiError(409, str(exc)) from None
        if result is None:
            raise ApiError(404, f"no warning {alert_id!r}")
        return ApiResponse(200, result)

    # -- silences --

    async def list_silences(self, request: ApiRequest) -> ApiResponse:
        _only(request.query, {"state"}, "parameter")
        state = _choice(request.query.get("state"), "state", SILENCE_STATES)
        silences = await admin.list_silences(self._service(), state)  # type: ignore[arg-type]
        return ApiResponse(200, {"silences": silences, "count": len(silences)})

    async def create_silence(self, request: ApiRequest) -> ApiResponse:
        data = _json_object(request.body)
        _only(
            data,
            {
                "matchers",
                "customer_id",
                "code",
                "severity",
                "duration",
                "ends_at",
                "starts_at",
                "created_by",
                "comment",
            },
            "field(s)",
        )
        matchers: list[str] = []
        written = data.get("matchers", [])
        if not isinstance(written, list) or not all(isinstance(m, str) for m in written):
            raise ApiError(400, 'matchers must be a list of strings like "code=dpd_30"')
        for text in written:
            try:
                matchers.append(str(Matcher.parse(text)))
            except ValueError as exc:
                raise ApiError(400, f"matchers: {exc}") from None
        for name in ("customer_id", "code"):
            value = _text(data, name, required=False, limit=128)
            if value is not None:
                matchers.append(str(Matcher(name=name, op="=", value=value)))
        severity = data.get("severity")
        if severity is not None:
            if not isinstance(severity, str):
                raise ApiError(400, "severity must be a string")
            _choice(severity, "severity", SEVERITIES)
            matchers.append(str(Matcher(name="severity", op="=", value=severity)))
        if not matchers:
            raise ApiError(
                400, "a silence needs at least one of customer_id, code, severity, matchers"
            )
        created_by = _required(data, "created_by", limit=200)
        comment = _required(data, "comment", limit=2000)
        duration = data.get("duration")
        if duration is not None and not isinstance(duration, str):
            raise ApiError(400, 'duration must be a string like "4h" or "1d12h"')
        ends_at = _aware(data["ends_at"], "ends_at") if data.get("ends_at") is not None else None
        starts_at = (
            _aware(data["starts_at"], "starts_at") if data.get("starts_at") is not None else None
        )
        if (duration is None) == (ends_at is None):
            raise ApiError(400, "give exactly one of duration and ends_at")
        try:
            silence = await admin.create_silence(
                self._service(),
                matchers=matchers,
                created_by=created_by,
                comment=comment,
                duration=duration,
                ends_at=ends_at,
                starts_at=starts_at,
            )
        except (SilenceError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        return ApiResponse(201, silence)

    async def expire_silence(self, request: ApiRequest, silence_id: str) -> ApiResponse:
        _only(request.query, {"by"}, "parameter")
        by = request.query.get("by", "").strip()
        if not by:
            raise ApiError(400, "by (who expires the silence) is required: ?by=NAME")
        try:
            silence = await admin.expire_silence(self._service(), silence_id, by=by[:200])
        except SilenceError as exc:
            raise ApiError(404, str(exc)) from None
        return ApiResponse(200, silence)

    # -- breakers --

    async def list_breakers(self, request: ApiRequest) -> ApiResponse:
        _only(request.query, set(), "parameter")
        breakers = await admin.breaker_status(self._service())
        return ApiResponse(200, {"breakers": breakers, "count": len(breakers)})

    async def release_breaker(self, request: ApiRequest, code: str) -> ApiResponse:
        data = _json_object(request.body)
        _only(data, {"by", "deliver"}, "field(s)")
        by = _required(data, "by", limit=200)
        deliver = data.get("deliver")
        if not isinstance(deliver, bool):
            raise ApiError(
                400, "deliver (true: send the held warnings, false: discard them) is required"
            )
        try:
            result = await admin.release_breaker(self._service(), code, by=by, deliver=deliver)
        except KeyError:
            raise ApiError(404, f"rule {code!r} has no circuit breaker state") from None
        return ApiResponse(200, result)

    # -- description --

    async def openapi(self, request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, openapi_document())


# -- the Faust views -----------------------------------------------------------------------


def _view_name(path: str) -> str:
    parts = [p.strip("{}").replace(".", "_") for p in path.strip("/").split("/")]
    return "alerts_api_" + "_".join(parts)


def register_alerts_api(
    app: faust.App, settings: ApiSettings, delivery: AlertDelivery | None
) -> AlertsApi:
    """Serve :data:`ROUTES` on the worker's web server."""
    api = AlertsApi(settings, delivery)
    by_path: dict[str, list[Route]] = {}
    for route in ROUTES:
        by_path.setdefault(route.path, []).append(route)

    def method_for(route: Route) -> Callable[..., Awaitable[Any]]:
        async def serve(view: faust.web.View, request: Any, **params: str) -> Any:
            body = await request.read() if route.method == "POST" else b""
            incoming = ApiRequest(
                headers={k: v for k, v in request.headers.items()},
                query={k: request.query.get(k) for k in request.query},
                body=body,
            )
            response = await api.dispatch(route, incoming, **params)
            return view.bytes(
                orjson.dumps(response.body),
                content_type="application/json",
                status=response.status,
                headers=response.headers or None,
            )

        return serve

    for path, routes in by_path.items():
        methods = {route.method.lower(): method_for(route) for route in routes}
        view_cls = type(_view_name(path), (faust.web.View,), methods)
        app.page(path, name=_view_name(path))(view_cls)
    return api


# -- OpenAPI -------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "An error, said in words")
_READ_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]
_WRITE_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "The request is not valid; the error says what is wrong",
        401: "No bearer token, or not a valid one",
        403: "The token cannot do this, or writes are disabled (no write token configured)",
        404: "Not found",
        409: "Changed concurrently; try again",
        503: "Alert delivery is disabled on this worker, or its store is unavailable",
    }
    return {str(c): {**_ERROR, "description": text[c]} for c in codes}


def _param(name: str, where: str, description: str, schema: dict[str, Any], **extra: Any) -> Any:
    return {"name": name, "in": where, "description": description, "schema": schema, **extra}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return _param(name, "path", description, {"type": "string"}, required=True)


def _body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def _output_schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (RiskAlert, RiskState):
        schema = model.model_json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}"
        )
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _components() -> dict[str, Any]:
    text = {"type": "string"}
    when = {"type": "string", "format": "date-time"}
    who = {
        "type": ["object", "null"],
        "properties": {"by": text, "at": when, "comment": text},
        "required": ["by", "at", "comment"],
    }
    return {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "CREDITWATCH_API__READ_TOKEN for reads (when set), "
                "CREDITWATCH_API__WRITE_TOKEN for reads and changes.",
            }
        },
        "schemas": {
            **_output_schemas(),
            "Error": {
                "type": "object",
                "properties": {"error": text},
                "required": ["error"],
            },
            "Alert": {
                "type": "object",
                "description": "A warning taken from the alerts topic and what was done with it.",
                "properties": {
                    "alert_id": text,
                    "customer_id": text,
                    "loan_id": {"type": ["string", "null"]},
                    "code": text,
                    "severity": {"enum": list(SEVERITIES)},
                    "source": text,
                    "title": text,
                    "dedup_key": text,
                    "triggered_at": when,
                    "status": {"enum": ["firing", "resolved"]},
                    "received_at": when,
                    "notification": {
                        "type": "object",
                        "description": "What the pipeline did when the warning arrived: new, "
                        "escalated, repeat (the desk is told); duplicate, deduplicated, "
                        "inhibited, silenced, held, no_receiver, stale (nobody is told); "
                        "resolved (a class back to normal).",
                        "properties": {
                            "outcome": text,
                            "detail": {"type": ["string", "null"]},
                        },
                    },
                    "acknowledged": who,
                    "resolved": who,
                    "condition": {
                        "type": ["object", "null"],
                        "description": "Only on GET /alerts/{alert_id}: where the warning's "
                        "dedup key stands now.",
                    },
                    "alert": _ref("RiskAlert"),
                },
                "required": ["alert_id", "customer_id", "status", "notification", "alert"],
            },
            "AlertList": {
                "type": "object",
                "properties": {
                    "alerts": {"type": "array", "items": _ref("Alert")},
                    "count": {"type": "integer"},
                },
            },
            "ByAndComment": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "by": {"type": "string", "minLength": 1, "maxLength": 200},
                    "comment": {"type": "string", "maxLength": 2000},
                },
                "required": ["by"],
            },
            "Resolved": {
                "type": "object",
                "properties": {
                    "outcome": {
                        "type": "string",
                        "description": "resolved (the desk is told), never_notified, "
                        "not_allowed (silenced or resolved messages off), already_resolved, "
                        "unknown (the record was forgotten)",
                    },
                    "notified": {"type": "boolean"},
                    "alert": _ref("Alert"),
                },
            },
            "NewSilence": {
                "type": "object",
                "additionalProperties": False,
                "description": "At least one of customer_id, code, severity, matchers; "
                "exactly one of duration and ends_at.",
                "properties": {
                    "customer_id": text,
                    "code": {"type": "string", "description": "Rule id or detector name"},
                    "severity": {"enum": list(SEVERITIES)},
                    "matchers": {
                        "type": "array",
                        "items": text,
                        "description": "Label matchers: name op value, op one of = != =~ !~ "
                        '(e.g. "code=~dpd_[0-9]+", "loan_id=L1")',
                    },
                    "duration": {"type": "string", "examples": ["30m", "4h", "1d12h"]},
                    "ends_at": when,
                    "starts_at": when,
                    "created_by": {"type": "string", "minLength": 1, "maxLength": 200},
                    "comment": {"type": "string", "minLength": 1, "maxLength": 2000},
                },
                "required": ["created_by", "comment"],
            },
            "Silence": {
                "type": "object",
                "properties": {
                    "id": text,
                    "matchers": {"type": "array", "items": text},
                    "starts_at": when,
                    "ends_at": when,
                    "created_by": text,
                    "comment": text,
                    "created_at": when,
                    "expired_by": {"type": ["string", "null"]},
                    "state": {"enum": list(SILENCE_STATES)},
                },
            },
            "Breaker": {
                "type": "object",
                "properties": {
                    "code": text,
                    "state": {"enum": ["open", "closed"]},
                    "opened_at": {"type": ["string", "null"], "format": "date-time"},
                    "customers_in_window": {"type": "integer"},
                    "trip_at": {"type": "integer"},
                    "held": {"type": "integer"},
                    "closed_at": {"type": ["string", "null"], "format": "date-time"},
                    "closed_by": {"type": ["string", "null"]},
                },
            },
            "Release": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "by": {"type": "string", "minLength": 1, "maxLength": 200},
                    "deliver": {
                        "type": "boolean",
                        "description": "true: the held warnings go through silences and "
                        "dedup to the desk; false: they are discarded",
                    },
                },
                "required": ["by", "deliver"],
            },
        },
    }


def _worker_paths() -> dict[str, Any]:
    """The endpoints of ``streams/web.py`` (no token: bind the port to a trusted network)."""
    risk_state = _json(_ref("RiskState"), "The customer's risk state")
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness and readiness",
                "tags": ["worker"],
                "responses": {
                    "200": _json({"type": "object"}, "Healthy: Redis answers, partitions held"),
                    "503": _json({"type": "object"}, "Degraded, starting or stopping"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "tags": ["worker"],
                "responses": {
                    "200": {
                        "description": "Every metric, prefixed creditwatch_",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/customers/top": {
            "get": {
                "summary": "The riskiest customers, highest risk score first",
                "tags": ["customers"],
                "parameters": [
                    _param(
                        "n",
                        "query",
                        "How many (1-1000)",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
                    ),
                    _param(
                        "tier",
                        "query",
                        "Only this risk tier",
                        {"enum": ["premium", "low", "medium", "high"]},
                    ),
                ],
                "security": _READ_SECURITY,
                "responses": {
                    "200": _json({"type": "array", "items": _ref("RiskState")}, "Risk states"),
                    "400": {**_ERROR, "description": "n is not a whole number in range"},
                    "401": {**_ERROR, "description": "A read token is configured; none given"},
                },
            }
        },
        "/customers/{customer_id}/risk": {
            "get": {
                "summary": "One customer's risk state",
                "tags": ["customers"],
                "parameters": [_path_param("customer_id", "The customer id")],
                "security": _READ_SECURITY,
                "responses": {
                    "200": risk_state,
                    "401": {**_ERROR, "description": "A read token is configured; none given"},
                    "404": {**_ERROR, "description": "Unknown"},
                },
            }
        },
    }


def _alert_paths() -> dict[str, Any]:
    alert_id = _path_param("alert_id", "The warning's alert_id")
    return {
        "/alerts": {
            "get": {
                "summary": "Warnings the worker took from the alerts topic, newest first",
                "tags": ["alerts"],
                "security": _READ_SECURITY,
                "parameters": [
                    _param(
                        "status", "query", "Firing or resolved", {"enum": ["firing", "resolved"]}
                    ),
                    _param("severity", "query", "Only this severity", {"enum": list(SEVERITIES)}),
                    _param("customer_id", "query", "Only this customer", {"type": "string"}),
                    _param("code", "query", "Only this rule or detector", {"type": "string"}),
                    _param("acknowledged", "query", "Acknowledged or not", {"type": "boolean"}),
                    _param(
                        "limit",
                        "query",
                        "At most this many (1-1000)",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                ],
                "responses": {
                    "200": _json(_ref("AlertList"), "Matching warnings"),
                    **_errors(400, 401, 503),
                },
            }
        },
        "/alerts/{alert_id}": {
            "get": {
                "summary": "One warning, with where its condition stands now",
                "tags": ["alerts"],
                "security": _READ_SECURITY,
                "parameters": [alert_id],
                "responses": {"200": _json(_ref("Alert"), "The warning"), **_errors(401, 404, 503)},
            }
        },
        "/alerts/{alert_id}/ack": {
            "post": {
                "summary": "Acknowledge a warning (the first acknowledgement is kept)",
                "description": "Records who is dealing with it and when; it does not mute "
                "anything (a silence does).",
                "tags": ["alerts"],
                "security": _WRITE_SECURITY,
                "parameters": [alert_id],
                "requestBody": _body(
                    _ref("ByAndComment"), {"by": "ana", "comment": "calling the customer"}
                ),
                "responses": {
                    "200": _json(_ref("Alert"), "The warning with its acknowledgement"),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/alerts/{alert_id}/resolve": {
            "post": {
                "summary": "Resolve a warning's condition by hand",
                "description": "Resolves the warning's dedup key: the desk is told it was "
                "resolved if it had been told it was firing. Idempotent.",
                "tags": ["alerts"],
                "security": _WRITE_SECURITY,
                "parameters": [alert_id],
                "requestBody": _body(
                    _ref("ByAndComment"), {"by": "ana", "comment": "paid at the branch"}
                ),
                "responses": {
                    "200": _json(_ref("Resolved"), "Resolved"),
                    **_errors(400, 401, 403, 404, 409, 503),
                },
            }
        },
        "/silences": {
            "get": {
                "summary": "Silences, latest ending first",
                "tags": ["silences"],
                "security": _READ_SECURITY,
                "parameters": [
                    _param("state", "query", "Only this state", {"enum": list(SILENCE_STATES)})
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "silences": {"type": "array", "items": _ref("Silence")},
                                "count": {"type": "integer"},
                            },
                        },
                        "Silences",
                    ),
                    **_errors(400, 401, 503),
                },
            },
            "post": {
                "summary": "Mute matching warnings for a while",
                "description": "Matching warnings are still recorded (they inhibit others and "
                "can be resolved), but nobody is told. At most 90 days.",
                "tags": ["silences"],
                "security": _WRITE_SECURITY,
                "requestBody": _body(
                    _ref("NewSilence"),
                    {
                        "customer_id": "C1042",
                        "code": "dpd_30",
                        "duration": "4h",
                        "created_by": "ana",
                        "comment": "restructuring agreed, waiting for the contract",
                    },
                ),
                "responses": {
                    "201": _json(_ref("Silence"), "Created"),
                    **_errors(400, 401, 403, 503),
                },
            },
        },
        "/silences/{silence_id}": {
            "delete": {
                "summary": "Expire a silence now (it stays listed as expired)",
                "tags": ["silences"],
                "security": _WRITE_SECURITY,
                "parameters": [
                    _path_param("silence_id", "The silence's id"),
                    _param("by", "query", "Who expires it", {"type": "string"}, required=True),
                ],
                "responses": {
                    "200": _json(_ref("Silence"), "Expired"),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/breakers": {
            "get": {
                "summary": "Circuit breakers of rules that fired for an unusual share of customers",
                "tags": ["breakers"],
                "security": _READ_SECURITY,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "breakers": {"type": "array", "items": _ref("Breaker")},
                                "count": {"type": "integer"},
                            },
                        },
                        "Open ones first",
                    ),
                    **_errors(401, 503),
                },
            }
        },
        "/breakers/{code}/release": {
            "post": {
                "summary": "Close a rule's breaker; deliver or discard what it held",
                "tags": ["breakers"],
                "security": _WRITE_SECURITY,
                "parameters": [_path_param("code", "The rule id or detector name")],
                "requestBody": _body(_ref("Release"), {"by": "ops", "deliver": False}),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "released": {"type": "integer"},
                                "delivered": {"type": "boolean"},
                                "queued": {"type": "integer"},
                            },
                        },
                        "Released",
                    ),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "tags": ["worker"],
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint of the worker."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditwatch worker",
            "version": "1",
            "description": "Risk state, metrics and the early-warning alert path of a "
            "creditwatch worker. See docs/api.md.",
        },
        "tags": [
            {"name": "worker"},
            {"name": "customers"},
            {"name": "alerts"},
            {"name": "silences"},
            {"name": "breakers"},
        ],
        "paths": {**_worker_paths(), **_alert_paths()},
        "components": _components(),
    }
