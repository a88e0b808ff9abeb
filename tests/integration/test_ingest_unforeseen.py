"""Failures no rule foresaw, and hostile media requests, answered in ingest's JSON error body (issue 14).

Every HTTP route of ingest answers `{"reason", "detail", "field"}`: a bad input is a 4xx with a reason, a
failure of ingest itself a 500 `internal-error` (or a 503 for a store that does not answer), logged with its
traceback and without the token. Real Kafka, redis-server, SQLite and a file:// blob store; the app runs
in-process (`wiring.build_app`, its blob store swapped through `build_app(blobs=...)`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from redis.asyncio import Redis

from michi.blobs import BlobInfo, BlobStore
from michi.bus.producer import EventProducer
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, device_registry

from .ingest_support import settings_for

pytestmark = pytest.mark.integration

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"
INTERNAL_MEDIA = {"reason": "internal-error", "detail": "ingest failed on this media; it was not stored", "field": None}


class BuggyBlobStore(BlobStore):
    """A blob store with a bug no rule foresaw for one upload: looking up its media raises a `KeyError`."""

    async def sha256(self, key: str) -> BlobInfo:
        if "/upload-buggy/" in key:
            raise KeyError("a bug in the blob store")
        return await super().sha256(key)


@dataclass
class App:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IngestSettings
    tokens: dict[str, str]

    async def put(self, upload_id: str, name: str, data: bytes, device_id: str = "device-a", **headers: str) -> Any:
        sent = {
            "authorization": f"Bearer {self.tokens[device_id]}",
            "content-type": "image/jpeg",
            "x-content-sha256": hashlib.sha256(data).hexdigest(),
            **headers,
        }
        return await self.client.put(f"/v1/uploads/{upload_id}/media/{name}", content=data, headers=sent)


@pytest_asyncio.fixture
async def ingest(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> AsyncIterator[App]:
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    redis = Redis.from_url(redis_url)
    registry = device_registry(settings)
    blobs = BuggyBlobStore(settings.resolved_blob_url())
    app = build_app(settings, producer=producer, redis=redis, registry=registry, blobs=blobs)
    # raise_app_exceptions (httpx's default): an exception escaping the app would fail the test.
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
    tokens = {device_id: registry.add_device(device_id) for device_id in ("device-a", "device-b")}
    try:
        yield App(app, client, settings, tokens)
    finally:
        await client.aclose()
        await redis.aclose()
        registry.close()


def logged_text(records: list[logging.LogRecord]) -> str:
    """Everything the records would write: messages, extra fields and tracebacks."""
    formatter = logging.Formatter()
    parts = []
    for record in records:
        parts.append(formatter.format(record))
        parts.extend(str(value) for value in vars(record).values())
    return "\n".join(parts)


@pytest.mark.asyncio
async def test_an_unforeseen_media_failure_is_a_logged_json_500_and_other_puts_go_on(
    ingest: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        failed = await ingest.put("upload-buggy", "front.jpg", JPEG)
        assert (failed.status_code, failed.headers["content-type"], failed.json()) == (
            500,
            "application/json",
            INTERNAL_MEDIA,
        )
        # The same device's other uploads, and other devices, are unaffected; no restart.
        assert (await ingest.put("upload-fine", "front.jpg", JPEG)).status_code == 201
        assert (await ingest.put("upload-other", "front.jpg", JPEG, device_id="device-b")).status_code == 201

    failures = [record for record in caplog.records if record.getMessage() == "media failed"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], KeyError)
    assert (failures[0].device_id, failures[0].upload_id, failures[0].media_name) == (  # type: ignore[attr-defined]
        "device-a",
        "upload-buggy",
        "front.jpg",
    )
    text = logged_text(caplog.records)
    assert all(token not in text for token in ingest.tokens.values())
    metrics = (await ingest.client.get("/metrics")).text
    assert 'michi_ingest_media_total{outcome="refused",reason="internal-error"} 1.0' in metrics


@pytest.mark.asyncio
async def test_a_failure_escaping_any_route_is_a_json_500_never_plain_text(
    ingest: App, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("a route with a bug")

    # A route added to the built app: the net under every route, not a handler of the two doors.
    ingest.app.add_api_route("/v1/broken", broken, methods=["GET"])
    with caplog.at_level(logging.INFO):
        response = await ingest.client.get("/v1/broken", headers={"authorization": "Bearer secret-in-header"})
    assert (response.status_code, response.headers["content-type"], response.json()) == (
        500,
        "application/json",
        {"reason": "internal-error", "detail": "ingest failed on this request", "field": None},
    )
    failures = [record for record in caplog.records if record.getMessage() == "request failed"]
    assert [(record.levelno, record.path) for record in failures] == [(logging.ERROR, "/v1/broken")]  # type: ignore[attr-defined]
    assert "secret-in-header" not in logged_text(caplog.records)
    # And the app goes on serving.
    assert (await ingest.put("upload-after", "front.jpg", JPEG)).status_code == 201


HOSTILE_MEDIA = [
    # (upload_id, name, extra headers, status, reason)
    ("upload-1", "fr%00nt.jpg", {}, 422, "invalid-media-name"),
    ("upload-1", "front%0A.jpg", {}, 422, "invalid-media-name"),
    ("upload-1", "%E2%80%AEgpj.exe", {}, 422, "invalid-media-name"),
    ("upload-1", "%ff%fe.jpg", {}, 422, "invalid-media-name"),
    ("%F0%9F%9A%97", "front.jpg", {}, 422, "invalid-id"),
    ("u" * 129, "front.jpg", {}, 422, "invalid-id"),
    ("%2E%2E", "front.jpg", {}, 422, "invalid-id"),
    ("upload-1", "front.jpg", {"x-content-sha256": "z" * 64}, 400, "invalid-checksum"),
    ("upload-1", "front.jpg", {"x-content-sha256": "a" * 10_000}, 400, "invalid-checksum"),
    ("upload-1", "front.jpg", {"digest": "sha-256=!!!"}, 400, "invalid-checksum"),
    ("upload-1", "front.jpg", {"digest": "sha-256=" + "QQ==" * 5000}, 400, "invalid-checksum"),
    ("upload-1", "front.jpg", {"content-type": "image/jpeg\x7f"}, 415, "unsupported-media-type"),
    ("upload-1", "front.jpg", {"content-type": ";;;=="}, 415, "unsupported-media-type"),
    ("upload-1", "front.jpg", {"content-length": "9" * 40}, 413, "media-too-large"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("upload_id", "name", "headers", "status", "reason"), HOSTILE_MEDIA)
async def test_hostile_media_requests_are_4xx_with_a_reason(
    ingest: App, upload_id: str, name: str, headers: dict[str, str], status: int, reason: str
) -> None:
    sent = {
        "authorization": f"Bearer {ingest.tokens['device-a']}",
        "content-type": "image/jpeg",
        "x-content-sha256": hashlib.sha256(JPEG).hexdigest(),
        **headers,
    }
    request = ingest.client.build_request(
        "PUT", f"http://ingest/v1/uploads/{upload_id}/media/{name}", content=JPEG, headers=sent
    )
    if "content-length" in headers:
        request.headers["content-length"] = headers["content-length"]
    response = await ingest.client.send(request)
    assert (response.status_code, response.json()["reason"]) == (status, reason), response.text
    assert set(response.json()) == {"reason", "detail", "field"}
