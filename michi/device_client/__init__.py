"""The device side of uploading: what a dashcam (or the simulator) does to send uploads.

`UploadClient.send()` posts one upload (protobuf, or the proto3 JSON mapping with `media_type=JSON`) with
the device's token and retries
like a well-behaved device on a flaky link: on connection errors, 429 and 5xx, with
jittered exponential backoff that honours `Retry-After`. Retrying is safe because
ingest deduplicates by `upload_id`. `send_fleet()` drives many devices at once,
keeping each device's uploads in order.

An events-only upload (`Upload.edge`, built by `michi.edge.runtime.EdgeRuntime.upload_to_send`; docs/edge.md)
is an `Upload` like any other: it goes through the same door, token, limits and retries.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import httpx
from google.protobuf import json_format

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import upload_pb2

logger = logging.getLogger(__name__)

RETRIABLE_STATUS = {429, 500, 502, 503, 504}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def encode_upload(upload: upload_pb2.Upload, media_type: str = PROTOBUF) -> bytes:
    """The request body of `POST /v1/uploads` in `media_type` (the same bytes for every retry)."""
    if media_type == PROTOBUF:
        return upload.SerializeToString()
    if media_type == JSON:
        return json_format.MessageToJson(upload, indent=None).encode()
    raise ValueError(f"ingest takes {PROTOBUF} or {JSON}, not {media_type!r}")


@dataclass
class UploadResult:
    upload_id: str
    status: int
    outcome: str
    attempts: int
    latency_s: float
    reason: str = ""
    # Ingest's human explanation of a refusal (which field, which bound), next to the kebab-case reason.
    detail: str = ""


@dataclass
class SendReport:
    results: list[UploadResult] = field(default_factory=list)

    @property
    def by_outcome(self) -> Counter[str]:
        return Counter(result.outcome for result in self.results)


class UploadClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        max_attempts: int = 8,
        max_connections: int = 64,
        media_type: str = PROTOBUF,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.media_type = media_type
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def send(self, upload: upload_pb2.Upload, token: str) -> UploadResult:
        body = encode_upload(upload, self.media_type)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": self.media_type}
        started = time.monotonic()
        delay = 0.2
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self._client.post("/v1/uploads", content=body, headers=headers)
            except httpx.TransportError as error:
                if attempt == self.max_attempts:
                    return UploadResult(
                        upload.upload_id, 0, "failed", attempt, time.monotonic() - started, type(error).__name__
                    )
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)
                continue
            if response.status_code in RETRIABLE_STATUS and attempt < self.max_attempts:
                retry_after = _retry_after(response)
                await asyncio.sleep(retry_after if retry_after is not None else delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)
                continue
            outcome, reason, detail = _outcome(response)
            return UploadResult(
                upload.upload_id, response.status_code, outcome, attempt, time.monotonic() - started, reason, detail
            )
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return min(float(value), 30.0) if value is not None else None
    except ValueError:
        return None


def _outcome(response: httpx.Response) -> tuple[str, str, str]:
    """(outcome, reason, detail) from ingest's answer."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.is_success:
        return str(body.get("outcome", "accepted")), "", ""
    return "refused", str(body.get("reason", response.status_code)), str(body.get("detail", ""))


async def _paced(
    uploads: Iterable[upload_pb2.Upload], upload_seconds: float, speed: float | None
) -> AsyncIterator[upload_pb2.Upload]:
    """Release each upload once its slice of time has passed (at `speed` times real time), or at once when speed is None."""
    origin_wall = time.time()
    origin_sim: float | None = None
    for upload in uploads:
        if speed is not None:
            ready_at = timestamp_to_seconds(upload.started_at) + upload_seconds
            if origin_sim is None:
                origin_sim = ready_at - upload_seconds
            wait = origin_wall + (ready_at - origin_sim) / speed - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        yield upload


async def send_fleet(
    uploads: Iterable[upload_pb2.Upload],
    client: UploadClient,
    tokens: dict[str, str],
    *,
    speed: float | None = 1.0,
    upload_seconds: float = 10.0,
    concurrency: int = 32,
    on_result: Callable[[UploadResult], None] | None = None,
) -> SendReport:
    """Send every upload, each device's in order, at most `concurrency` requests in flight."""
    report = SendReport()
    slots = asyncio.Semaphore(concurrency)
    device_tails: dict[str, asyncio.Task[None]] = {}

    async def send_after(previous: asyncio.Task[None] | None, upload: upload_pb2.Upload) -> None:
        if previous is not None:
            await previous
        async with slots:
            result = await client.send(upload, tokens[upload.device_id])
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    async for upload in _paced(uploads, upload_seconds, speed):
        previous = device_tails.get(upload.device_id)
        device_tails[upload.device_id] = asyncio.create_task(send_after(previous, upload))
        # Do not let the generator run far ahead of what is in flight.
        while sum(not task.done() for task in device_tails.values()) > concurrency * 4:
            await asyncio.sleep(0.01)
    await asyncio.gather(*device_tails.values())
    return report
