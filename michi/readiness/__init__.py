"""`/readyz` for the HTTP services: each dependency's check, run concurrently with a bound.

    ready, checks = await run_checks({"redis": redis.ping, "database": database_ready})

A check is an async callable that returns when the dependency answers and raises when it does not;
`checks` maps each name to "ok" or "error: <type>: <message>" (cut to 300 characters), the body
`ReadinessAnswer` describes in the OpenAPI document.

    add_operations_routes(app, checks, metrics.registry, ready_summary="Kafka, Redis and the database answer")

adds a FastAPI service's `/healthz`, `/readyz` (200 or 503 with that body) and `/metrics` (Prometheus).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

CHECK_TIMEOUT_S = 5.0

ReadinessCheck = Callable[[], Awaitable[Any]]


class ReadinessAnswer(BaseModel):
    ready: bool
    checks: dict[str, str]


async def run_checks(
    checks: Mapping[str, ReadinessCheck], timeout: float = CHECK_TIMEOUT_S
) -> tuple[bool, dict[str, str]]:
    """Whether every dependency answered within `timeout`, and what each said."""
    names = list(checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(check(), timeout) for check in checks.values()), return_exceptions=True
    )
    outcomes = {
        name: "ok" if not isinstance(result, BaseException) else f"error: {type(result).__name__}: {result}"[:300]
        for name, result in zip(names, results, strict=True)
    }
    return all(value == "ok" for value in outcomes.values()), outcomes


def add_operations_routes(
    app: FastAPI, checks: Mapping[str, ReadinessCheck], registry: CollectorRegistry, *, ready_summary: str
) -> None:
    """`/healthz` (the process is alive), `/readyz` (`run_checks` over `checks`) and `/metrics` on `app`."""

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=ReadinessAnswer,
        responses={503: {"model": ReadinessAnswer, "description": "A dependency does not answer"}},
        summary=ready_summary,
    )
    async def readyz() -> Response:
        ready, outcomes = await run_checks(checks)
        return Response(
            orjson.dumps({"ready": ready, "checks": outcomes}),
            status_code=200 if ready else 503,
            media_type="application/json",
        )

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_page() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
