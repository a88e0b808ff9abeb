"""`/readyz` for the HTTP services: each dependency's check, run concurrently with a bound.

    ready, checks = await run_checks({"redis": redis.ping, "database": database_ready})

A check is an async callable that returns when the dependency answers and raises when it does not;
`checks` maps each name to "ok" or "error: <type>: <message>" (cut to 300 characters), the body
`ReadinessAnswer` describes in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

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
