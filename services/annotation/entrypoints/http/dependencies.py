"""What the annotation routes take besides their request: the service objects and who is asking.

`create_http_app` keeps the `AnnotationEndpoints` in `app.state.endpoints`; routes reach it through
`Endpoints` (or `Service`), and the signed-in, rate-limited principal through `Who`.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.annotation.adapters.frames import EvidenceFrames
from services.annotation.adapters.windows import ArchiveWindowSource
from services.annotation.handlers import Accounts, AnnotationService, Principal, Refused
from services.annotation.metrics import AnnotationMetrics


@dataclass
class AnnotationEndpoints:
    """What the routes need; `wiring.build_app` fills it."""

    service: AnnotationService
    accounts: Accounts
    windows: ArchiveWindowSource | None
    metrics: AnnotationMetrics
    readiness_checks: dict[str, Callable[[], Awaitable[None]]]
    max_body_bytes: int
    max_media_bytes: int
    # A camera review's evidence frames (None: the route answers 404).
    frames: EvidenceFrames | None = None


# The dependencies that do no I/O are async, so that they run on the event loop, not in a worker thread.


async def annotation_endpoints(request: Request) -> AnnotationEndpoints:
    endpoints: AnnotationEndpoints = request.app.state.endpoints
    return endpoints


Endpoints = Annotated[AnnotationEndpoints, Depends(annotation_endpoints)]


async def annotation_service(endpoints: Endpoints) -> AnnotationService:
    return endpoints.service


Service = Annotated[AnnotationService, Depends(annotation_service)]


async def bearer(request: Request) -> str:
    """The session token of `Authorization: Bearer <token>`."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(
            401,
            "missing-token",
            "Authorization: Bearer <session token> is required",
            {"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


Token = Annotated[str, Depends(bearer)]


def principal(token: Token, endpoints: Endpoints) -> Principal:
    """Who the session belongs to, within the account's request rate."""
    who = endpoints.accounts.authenticate(token)
    service = endpoints.service
    if not service.queues.allow_request(who.name, service.config.rate_per_s, service.clock()):
        raise Refused(429, "rate-limited", "too many requests; slow down", {"Retry-After": "1"})
    return who


Who = Annotated[Principal, Depends(principal)]
