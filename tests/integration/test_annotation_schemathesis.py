"""The annotation OpenAPI document against the app itself (real redis-server and SQLite).

schemathesis generates requests for every documented operation with an admin's session token (so
every route is reachable): no 5xx, and every answer matches its documented status codes, content
types, headers and schemas. Signing out is left out (it would end the session the run uses).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.annotation.domain.roles import Role
from services.annotation.wiring import build_app

from .annotation_support import make_request, settings_for, wire

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ADMIN = "root-admin-account"
PASSWORD = "a long enough password"


@pytest.fixture
def served(tmp_path: Path, redis_url: str) -> Iterator[tuple[FastAPI, str]]:
    wiring = wire(settings_for(tmp_path, redis_url, annotation_rate_per_s=100_000))
    wiring.accounts.add(ADMIN, Role.ADMIN, actor="test", password=PASSWORD)
    for index in range(20):
        wiring.service.intake(make_request(f"schema-{index}"))
    token, _ = wiring.accounts.sign_in(ADMIN, PASSWORD)
    app = build_app(wiring.settings, wiring=wiring)
    try:
        yield app, token
    finally:
        asgi.shutdown_lifespans()


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(served: tuple[FastAPI, str]) -> None:
    app, token = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    names = {f"{operation.method.upper()} {operation.path}" for operation in operations}
    assert {"POST /v1/queues/{queue}/leases", "POST /v1/tasks/{task_id}/votes", "GET /v1/stats/agreement"} <= names
    for operation in operations:
        if (operation.method.upper(), operation.path) == ("DELETE", "/v1/sessions/current"):
            continue

        @settings(
            max_examples=8 if operation.method == "post" else 3,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(headers={"authorization": f"Bearer {token}"}, checks=CHECKS)

        check()
