"""Prometheus metrics: HTTP traffic, LLM calls and runs, served at `GET /metrics`.

Label values are bounded: routes are templates (`/v1/projects/{project_id}`, never a raw path),
unknown methods count as `OTHER`, models are the few a deployment configures. Each request costs
one dict lookup for its labelled children, an increment and an observation.

Several worker processes (`turbokit serve --workers N`) each count their own traffic; set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory for all of them and `/metrics` aggregates the
files prometheus_client keeps there.
"""

from __future__ import annotations

import hmac
import os
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

from backend.errors import unauthenticated
from config.settings import Settings

HTTP_REQUESTS = Counter(
    "turbokit_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "turbokit_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (whole stream for SSE)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LLM_CALLS = Counter("turbokit_llm_calls", "LLM calls recorded (and billed)", ["model"])
LLM_TOKENS = Counter("turbokit_llm_tokens", "LLM tokens by kind", ["model", "kind"])
LLM_COST = Counter(
    "turbokit_llm_cost_usd", "LLM cost in USD as the provider reported it", ["model"]
)
RUNS = Counter("turbokit_runs", "Runs ended, by final status", ["status"])
ACTIVE_RUNS = Gauge(
    "turbokit_active_runs", "Runs executing in this process", multiprocess_mode="livesum"
)

UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404 of the framework)."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request under its route's template."""
    route = scope.get("route")
    template = getattr(route, "path", None) or UNMATCHED
    method = scope["method"]
    key = (method, template, status)
    children = _children.get(key)
    if children is None:
        label = method if method in _METHODS else "OTHER"
        children = _children[key] = (
            HTTP_REQUESTS.labels(label, template, str(status)),
            HTTP_DURATION.labels(label, template),
        )
    children[0].inc()
    children[1].observe(seconds)


def observe_llm_call(
    model: str, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal | float | None
) -> None:
    LLM_CALLS.labels(model).inc()
    LLM_TOKENS.labels(model, "prompt").inc(prompt_tokens)
    LLM_TOKENS.labels(model, "completion").inc(completion_tokens)
    if cost_usd:
        LLM_COST.labels(model).inc(float(cost_usd))


def observe_run_end(status: str) -> None:
    RUNS.labels(status).inc()


async def metrics(request: Request) -> Response:
    """Prometheus text exposition; with METRICS_TOKEN set, only for that bearer token."""
    settings: Settings = request.app.state.settings
    if settings.metrics_token and not _authorized(request, settings.metrics_token):
        raise unauthenticated("A valid METRICS_TOKEN bearer token is required")
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


METRICS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
    },
}


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


def _registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
