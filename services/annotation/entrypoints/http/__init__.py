"""The annotation API and page: FastAPI routes over `AnnotationService` and `Accounts`.

Run it with `python -m services.annotation` (see `services/annotation/wiring.py`); the page is
`GET /`, the API under `/v1`, OpenAPI at `/openapi.json`. Every refusal is an `ErrorBody`
(`reason`, `detail`, optional `field`); every route that needs a session takes
`Authorization: Bearer <token>` from `POST /v1/sessions`.

One router per resource (`page`, `sessions`, `queues`, `windows`, `answers`, `stats`, `decisions`,
`admin`), the bodies in `bodies`, what routes depend on (the service objects, who is asking) in
`dependencies`, refusals and the body limit in `errors`; `create_http_app` puts them together.
"""

from typing import Any

from fastapi import FastAPI

from michi.readiness import add_operations_routes
from michi.telemetry import http_telemetry
from services.annotation.entrypoints.http import admin, answers, decisions, page, queues, sessions, stats, windows
from services.annotation.entrypoints.http.dependencies import AnnotationEndpoints
from services.annotation.entrypoints.http.errors import BodyLimit, Refusals

# In this order: it is the order of the paths in the OpenAPI document.
ROUTERS = (page, sessions, queues, windows, answers, stats, decisions, admin)


def create_http_app(endpoints: AnnotationEndpoints, *, lifespan: Any = None) -> FastAPI:
    refusals = Refusals(endpoints.metrics)
    app = FastAPI(
        title="Michi annotation",
        version="1",
        description="Label queues for people: sign in, lease a task, answer; leads watch agreement and adjudicate. "
        "See docs/annotation.md.",
        lifespan=lifespan,
        exception_handlers=refusals.handlers(),
        telemetry=http_telemetry(),
    )
    app.state.endpoints = endpoints
    for resource in ROUTERS:
        app.include_router(resource.router)
    add_operations_routes(
        app,
        endpoints.readiness_checks,
        endpoints.metrics.registry,
        ready_summary="Redis, the database (and, when consuming, Kafka) answer and the consumer makes progress",
        service="annotation",
    )
    app.add_middleware(BodyLimit, limit=endpoints.max_body_bytes, refused=refusals.count)
    return app


__all__ = ["AnnotationEndpoints", "create_http_app"]
