"""The worker's HTTP endpoints: liveness, Prometheus metrics and risk state.

They run on Faust's own web server (aiohttp), on the worker's HTTP port.
"""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.codec import encode
from streams.alerts_api import AlertsApi, ApiError, ApiRequest
from streams.runtime import WorkerRuntime


def register_views(app: faust.App, runtime: WorkerRuntime) -> None:
    """Attach ``/healthz``, ``/metrics`` and ``/customers/{id}/risk``.

    The customer endpoints show risk state, so they take the API's read token
    when one is configured (``CREDITWATCH_API__READ_TOKEN``), like ``/alerts``;
    liveness and metrics stay open for probes and Prometheus.
    """
    gate = AlertsApi(runtime.settings.api, None)

    def refused(web: Any, request: Any) -> Any | None:
        try:
            gate.authorize(ApiRequest(headers=dict(request.headers.items())), write=False)
        except ApiError as err:
            return web.json({"error": err.message}, status=err.status, headers=err.headers or None)
        return None

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        try:
            redis_ok = bool(await runtime.redis.ping())
        except Exception:  # reported as unhealthy, not raised
            redis_ok = False
        body = {
            "status": "ok" if redis_ok and not runtime.stopping else "degraded",
            "redis": redis_ok,
            "assigned_partitions": sorted(runtime.assigned),
            "outbox_depth": await runtime.outbox_depth() if redis_ok else None,
        }
        if runtime.judging is not None:
            judging = runtime.judging.health()
            body.update(judging)
            if not judging["ready"]:
                body["status"] = "starting"
        return web.json(body, status=200 if body["status"] == "ok" else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        payload = generate_latest(runtime.metrics.registry)
        return web.bytes(payload, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/customers/top")
    async def customers_top(web: Any, request: Any) -> Any:
        if (denied := refused(web, request)) is not None:
            return denied
        try:
            n = int(request.query.get("n", "20"))
        except ValueError:
            return web.json({"error": "n must be a whole number"}, status=400)
        if not 1 <= n <= 1000:
            return web.json({"error": "n must be between 1 and 1000"}, status=400)
        tier = request.query.get("tier")
        engine = runtime.processor.engine
        rows = [
            engine.summary(state)
            for _cid, state in await runtime.store.top(n if tier is None else n * 20)
            if tier is None or state.risk_tier == tier
        ][:n]
        body = b"[" + b",".join(encode(r) for r in rows) + b"]"
        return web.bytes(body, content_type="application/json")

    @app.page("/customers/{customer_id}/risk")
    async def customer_risk(web: Any, request: Any, customer_id: str) -> Any:
        if (denied := refused(web, request)) is not None:
            return denied
        state = await runtime.store.load(customer_id)
        if state is None:
            return web.json({"error": "unknown customer"}, status=404)
        body = encode(runtime.processor.engine.summary(state))
        return web.bytes(body, content_type="application/json")
