"""Hardening at the ingest door, on the real Kafka broker, redis-server and SQLite.

Rate limits (per device, global, shared by replicas), token rotation with an overlap window,
revocation reaching a second ingest process, request signing (stale, replayed, forged),
bounded bodies on a real uvicorn process, and refusals counted and logged without secrets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from redis.asyncio import Redis

from michi.bus.producer import EventProducer
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from michi.infra.processes import free_port
from services.ingest.adapters.devices import DeviceRegistry, UnknownDevice
from services.ingest.adapters.rate_limits import RateLimiter
from services.ingest.domain.signing import sign_request
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, device_registry

from .ingest_support import settings_for, uploads_count

PROTOBUF = "application/x-protobuf"
MEBIBYTE = 1024 * 1024


def make_upload(upload_id: str, device_id: str = "device-a", sequence: int = 0) -> upload_pb2.Upload:
    samples = 100
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        driver_id="driver-1",
        trip_id=f"trip-of-{device_id}",
        sequence=sequence,
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(time.time() - 5),
    )
    upload.imu.offset_ms.extend(index * 20 for index in range(samples))
    for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        getattr(upload.imu, name).extend([0.1] * samples)
    return upload


@dataclass
class Door:
    client: httpx.AsyncClient
    registry: DeviceRegistry
    tokens: dict[str, str]

    async def post(
        self,
        upload: upload_pb2.Upload | bytes,
        device_id: str = "device-a",
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = upload if isinstance(upload, bytes) else upload.SerializeToString()
        token = token or self.tokens[device_id]
        return await self.client.post(
            "/v1/uploads",
            content=body,
            headers={"content-type": PROTOBUF, "authorization": f"Bearer {token}", **(headers or {})},
        )


@pytest.fixture
def door_settings(kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path) -> IngestSettings:
    return settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)


@asynccontextmanager
async def open_door(
    settings: IngestSettings, producer: EventProducer, *, redis_url: str | None = None, **overrides: object
) -> AsyncIterator[Door]:
    """An in-process ingest app with devices a and b registered (once per database)."""
    settings = settings.model_copy(update=overrides)
    redis = Redis.from_url(redis_url or settings.resolved_redis_url())
    registry = device_registry(settings)
    tokens = {}
    for device_id in ("device-a", "device-b"):
        if not any(record.device_id == device_id for record in registry.list_devices()):
            tokens[device_id] = registry.add_device(device_id)
    app = build_app(settings, producer=producer, redis=redis, registry=registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
    try:
        yield Door(client, registry, tokens)
    finally:
        await client.aclose()
        await redis.aclose()
        registry.close()


# --- rate limits


@pytest.mark.asyncio
async def test_a_device_over_its_rate_gets_429_with_retry_after(
    door_settings: IngestSettings, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with open_door(door_settings, producer, ingest_device_burst=3, ingest_device_rate_per_s=0.1) as door:
        statuses = [(await door.post(make_upload(f"rate-{index}"))).status_code for index in range(3)]
        assert statuses == [202, 202, 202]
        refused = await door.post(make_upload("rate-3"))
        assert refused.status_code == 429
        assert refused.json() == {"reason": "rate-limited", "detail": refused.json()["detail"], "field": None}
        # One token every 10 s at 0.1/s (part of one refilled meanwhile): whole seconds, at least 1.
        assert refused.headers["retry-after"].isdigit()
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        # Another device has its own bucket.
        assert (await door.post(make_upload("rate-b", "device-b"), "device-b")).status_code == 202
        metrics = (await door.client.get("/metrics")).text
        assert 'michi_ingest_uploads_total{outcome="refused",reason="rate-limited"} 1.0' in metrics
    assert uploads_count(kafka_bootstrap, topic_prefix) == 4


@pytest.mark.asyncio
async def test_the_global_rate_is_shared_by_devices_and_replicas(
    door_settings: IngestSettings, producer: EventProducer
) -> None:
    # A fleet rate of one upload per 20 s (a burst of one): the second upload, on another replica and
    # from another device whose own bucket is full, finds the shared global bucket empty.
    limited = door_settings.model_copy(update={"ingest_global_rate_per_s": 0.05, "ingest_device_burst": 100})
    async with open_door(limited, producer) as first, open_door(limited, producer) as second:
        second.tokens = first.tokens  # one registry file, so the same devices
        assert (await first.post(make_upload("global-1"))).status_code == 202
        refused = await second.post(make_upload("global-2", "device-b"), "device-b")
        assert (refused.status_code, refused.json()["reason"]) == (429, "rate-limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 20


@pytest.mark.asyncio
async def test_the_bucket_is_atomic_under_concurrency_and_refills(redis_url: str, topic_prefix: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        limiter = RateLimiter(
            redis, key_prefix=topic_prefix, device_rate_per_s=0.001, device_burst=10, global_rate_per_s=10_000
        )
        answers = await asyncio.gather(*(limiter.check("device-x") for _ in range(50)))
        assert sum(answer is None for answer in answers) == 10
        assert all(answer is None or answer > 100 for answer in answers)

        fast = RateLimiter(
            redis, key_prefix=topic_prefix, device_rate_per_s=20, device_burst=1, global_rate_per_s=10_000
        )
        assert await fast.check("device-y") is None
        wait_s = await fast.check("device-y")
        assert wait_s is not None and 0 < wait_s <= 0.05
        deadline = time.monotonic() + 2
        while await fast.check("device-y") is not None:
            assert time.monotonic() < deadline, "the bucket never refilled"
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()


# --- token rotation


@pytest.mark.asyncio
async def test_rotation_keeps_the_old_token_until_the_overlap_ends(
    door_settings: IngestSettings, producer: EventProducer
) -> None:
    async with open_door(door_settings, producer, ingest_device_burst=200, ingest_device_rate_per_s=100) as door:
        old_token = door.tokens["device-a"]
        assert (await door.post(make_upload("rotate-0"))).status_code == 202
        new_token = door.registry.rotate("device-a", overlap_s=1.0)
        assert new_token != old_token
        assert [record.active for record in door.registry.list_devices() if record.device_id == "device-a"] == [
            True,
            True,
        ]
        assert (await door.post(make_upload("rotate-1"), token=new_token)).status_code == 202
        assert (await door.post(make_upload("rotate-2"), token=old_token)).status_code == 202
        # The old token stops at the end of the overlap (plus at most the 2 s cache).
        deadline = time.monotonic() + 1.0 + 2.0 + 2.0
        index = 3
        while (response := await door.post(make_upload(f"rotate-{index}"), token=old_token)).status_code == 202:
            assert time.monotonic() < deadline, "the old token outlived its overlap"
            index += 1
            await asyncio.sleep(0.1)
        assert (response.status_code, response.json()["reason"]) == (401, "revoked-token")
        assert (await door.post(make_upload("rotate-new"), token=new_token)).status_code == 202
        # Revocation ends every token of the device at once.
        assert door.registry.rotate("device-a", overlap_s=3600)
        assert door.registry.revoke("device-a")
        assert not any(record.active for record in door.registry.list_devices() if record.device_id == "device-a")
        with pytest.raises(UnknownDevice):
            door.registry.rotate("device-a")
        with pytest.raises(UnknownDevice):
            door.registry.rotate("never-added")


# --- request signing


def signed_headers(
    token: str, body: bytes, *, timestamp: float | None = None, nonce: str | None = None
) -> dict[str, str]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    nonce = nonce or secrets.token_hex(16)
    return {
        "x-michi-timestamp": stamp,
        "x-michi-nonce": nonce,
        "x-michi-signature": sign_request(token, stamp, nonce, "POST", "/v1/uploads", body),
    }


@pytest.mark.asyncio
async def test_signed_requests_are_verified_and_replays_refused(
    door_settings: IngestSettings, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with open_door(door_settings, producer) as door:
        token = door.tokens["device-a"]
        body = make_upload("signed-1").SerializeToString()
        headers = signed_headers(token, body)
        assert (await door.post(body, headers=headers)).status_code == 202

        async def reason(response_body: bytes, response_headers: dict[str, str]) -> tuple[int, str]:
            response = await door.post(response_body, headers=response_headers)
            return response.status_code, response.json()["reason"]

        assert await reason(body, headers) == (401, "replayed-request")
        other = make_upload("signed-2").SerializeToString()
        assert await reason(other, signed_headers(token, other, timestamp=time.time() - 301)) == (
            401,
            "stale-signature",
        )
        assert await reason(other, signed_headers(token, other, timestamp=time.time() + 301)) == (
            401,
            "stale-signature",
        )
        assert await reason(other, signed_headers(token, body)) == (401, "bad-signature")  # body swapped
        assert await reason(other, signed_headers(door.tokens["device-b"], other)) == (401, "bad-signature")
        half = signed_headers(token, other)
        del half["x-michi-nonce"]
        assert await reason(other, half) == (401, "bad-signature")
        assert await reason(other, {**signed_headers(token, other), "x-michi-nonce": "n" * 65}) == (
            401,
            "bad-signature",
        )
        # A refused signature burns no nonce: the genuine request with that nonce still passes.
        genuine = signed_headers(token, other)
        forged = {**genuine, "x-michi-signature": "0" * 64}
        assert await reason(other, forged) == (401, "bad-signature")
        assert (await door.post(other, headers=genuine)).status_code == 202
        # Unsigned requests pass while signatures are optional.
        assert (await door.post(make_upload("unsigned"))).status_code == 202
    assert uploads_count(kafka_bootstrap, topic_prefix) == 3


@pytest.mark.asyncio
async def test_required_signatures_refuse_unsigned_requests(
    door_settings: IngestSettings, producer: EventProducer
) -> None:
    async with open_door(door_settings, producer, ingest_require_signatures=True) as door:
        unsigned = await door.post(make_upload("needs-signature"))
        assert (unsigned.status_code, unsigned.json()["reason"]) == (401, "signature-required")
        body = make_upload("needs-signature").SerializeToString()
        assert (await door.post(body, headers=signed_headers(door.tokens["device-a"], body))).status_code == 202


# --- refusals: metrics and logs


@pytest.mark.asyncio
async def test_every_refusal_is_counted_and_logged_without_secrets(
    door_settings: IngestSettings, producer: EventProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with open_door(door_settings, producer, ingest_device_burst=12, ingest_device_rate_per_s=0.01) as door:
        token = door.tokens["device-a"]
        assert (await door.post(make_upload("logged-1"))).status_code == 202
        changed = make_upload("logged-1")
        changed.firmware_version = "changed"
        broken = make_upload("logged-nan")
        broken.imu.accel_x[3] = float("nan")
        body = make_upload("logged-signed").SerializeToString()
        signature_headers = signed_headers(token, body)
        attempts = [
            (401, await door.post(make_upload("x"), token=token[:-4] + "AAAA")),
            (403, await door.post(make_upload("logged-b", "device-b"))),
            (409, await door.post(changed)),
            (413, await door.post(b"\0" * (2 * MEBIBYTE + 1))),
            (422, await door.post(broken)),
            (400, await door.post(b"\xff\xff\xff")),
            (401, await door.post(body + b"x", headers=signature_headers)),
            (
                415,
                await door.client.post(
                    "/v1/uploads",
                    content=b"{}",
                    headers={"content-type": "text/csv", "authorization": f"Bearer {token}"},
                ),
            ),
        ]
        # Every request that passed authentication took a token from the burst of 12.
        flood = [await door.post(make_upload(f"flood-{index}")) for index in range(6)]
        assert [response.status_code for response in flood] == [202] * 5 + [429]
        attempts.append((429, flood[-1]))
        assert [response.status_code for _, response in attempts] == [status for status, _ in attempts]
        metrics = (await door.client.get("/metrics")).text
    async with open_door(door_settings, producer, redis_url=f"redis://127.0.0.1:{free_port()}/0") as no_redis:
        unavailable = await no_redis.post(make_upload("no-redis"), token=token)
        assert (unavailable.status_code, unavailable.json()["reason"]) == (503, "rate-limiter-unavailable")
        assert int(unavailable.headers["retry-after"]) >= 1
        assert 'reason="rate-limiter-unavailable"} 1.0' in (await no_redis.client.get("/metrics")).text

    for reason in (
        "invalid-token",
        "device-mismatch",
        "upload-id-reused",
        "body-too-large",
        "non-finite-value",
        "undecodable-body",
        "bad-signature",
        "unsupported-media-type",
        "rate-limited",
    ):
        assert f'michi_ingest_uploads_total{{outcome="refused",reason="{reason}"}} 1.0' in metrics, reason
    refusals = [record for record in caplog.records if record.getMessage() == "upload refused"]
    assert len(refusals) == len(attempts) + 1
    by_reason = {record.__dict__["reason"]: record.__dict__ for record in refusals}
    assert by_reason["device-mismatch"]["device_id"] == "device-a"
    assert by_reason["device-mismatch"]["upload_id"] == "logged-b"
    assert by_reason["non-finite-value"]["field"] == "imu.accel_x[3]"
    # Nothing secret in any log record: no token (nor a recognisable piece of it), no signature.
    secrets_seen = [
        token,
        token[-20:],
        token.split(".")[-1],
        *door.tokens.values(),
        signature_headers["x-michi-signature"],
    ]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert not any(secret in text for secret in secrets_seen), text
        assert "Bearer" not in text


# --- real processes: revocation across replicas, bounded bodies


@contextmanager
def ingest_processes(settings: IngestSettings, count: int, **environment: str) -> Iterator[list[tuple[str, int]]]:
    """`count` copies of `python -m services.ingest` sharing the database and Redis; yields (url, pid) once all are ready."""
    ports = [free_port() for _ in range(count)]
    base = {
        **os.environ,
        "MICHI_KAFKA_BOOTSTRAP": settings.resolved_kafka_bootstrap(),
        "MICHI_REDIS_URL": settings.resolved_redis_url(),
        "MICHI_DATABASE_URL": settings.resolved_database_url(),
        "MICHI_HOME": str(settings.home),
        "MICHI_TOPIC_PREFIX": settings.topic_prefix,
        # The gRPC door on a port of the system's choosing, so replicas do not collide.
        "MICHI_INGEST_GRPC_PORT": "0",
        **environment,
    }
    processes = []
    logs = []
    for index, port in enumerate(ports):
        log = (settings.home / f"ingest-{index}.log").open("w")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.ingest"],
                env={**base, "MICHI_INGEST_HTTP_PORT": str(port)},
                stdout=log,
                stderr=log,
            )
        )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=5) as client:
            for index, port in enumerate(ports):
                while True:
                    assert processes[index].poll() is None, (settings.home / f"ingest-{index}.log").read_text()
                    try:
                        if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "ingest did not start"
                    time.sleep(0.05)
        yield [(f"http://127.0.0.1:{port}", process.pid) for port, process in zip(ports, processes, strict=True)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        for log in logs:
            log.close()


def test_a_revoked_token_stops_working_on_a_second_ingest_process(door_settings: IngestSettings) -> None:
    registry = device_registry(door_settings)
    token = registry.add_device("device-a")
    generous = {"MICHI_INGEST_DEVICE_RATE_PER_S": "1000", "MICHI_INGEST_DEVICE_BURST": "1000"}
    try:
        with ingest_processes(door_settings, 2, **generous) as processes, httpx.Client(timeout=15) as client:

            def post(url: str, upload_id: str) -> httpx.Response:
                return client.post(
                    f"{url}/v1/uploads",
                    content=make_upload(upload_id).SerializeToString(),
                    headers={"content-type": PROTOBUF, "authorization": f"Bearer {token}"},
                )

            # Both processes have the token cached as valid.
            for index, (url, _) in enumerate(processes):
                assert post(url, f"before-{index}").status_code == 202
            assert registry.revoke("device-a")  # through the registry, outside both processes
            revoked_at = time.monotonic()
            refused: dict[str, float] = {}
            # When, after the revocation, each process last accepted an upload (by the time it was sent).
            last_accepted: dict[str, float] = {}
            attempt = 0
            while len(refused) < len(processes):
                assert time.monotonic() - revoked_at < 5.0, (
                    f"still accepted after 5 s by {set(processes) - set(refused)}"
                )
                for url, _ in processes:
                    if url in refused:
                        continue
                    sent = time.monotonic() - revoked_at
                    response = post(url, f"after-{attempt}")
                    attempt += 1
                    if response.status_code == 401:
                        assert response.json()["reason"] == "revoked-token"
                        refused[url] = sent
                    else:
                        assert response.status_code == 202
                        last_accepted[url] = sent
                time.sleep(0.02)
            # docs/devices.md: a revocation takes effect within 2 s on every replica. Nothing sent later than
            # the token cache's lifetime (at most 2 s) after it was accepted, by either process.
            assert door_settings.ingest_token_cache_ttl_s <= 2.0
            assert max(last_accepted.values(), default=0.0) <= door_settings.ingest_token_cache_ttl_s + 0.05
            assert max(refused.values()) <= door_settings.ingest_token_cache_ttl_s + 0.5
    finally:
        registry.close()


def content_length(head: bytes) -> int:
    for line in head.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def read_status(connection: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """The status code and the raw head+body of the response read so far."""
    connection.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < content_length(received):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1]), received


def test_a_declared_50_mb_body_is_refused_before_it_is_sent(door_settings: IngestSettings) -> None:
    registry = device_registry(door_settings)
    token = registry.add_device("device-a")
    registry.close()
    with ingest_processes(door_settings, 1) as [(url, _)]:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            head = (
                "POST /v1/uploads HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/x-protobuf\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {50 * MEBIBYTE}\r\n\r\n"
            )
            connection.sendall(head.encode())
            sent = 0
            # A slow device: 64 KiB, then it waits for an answer before sending more.
            connection.sendall(b"\0" * 65536)
            sent += 65536
            status, response = read_status(connection)
        assert status == 413, response
        assert b'"reason":"body-too-large"' in response
        assert b"connection: close" in response.lower()
        assert sent < MEBIBYTE


def test_a_chunked_50_mb_body_is_cut_at_the_limit_with_bounded_memory(door_settings: IngestSettings) -> None:
    registry = device_registry(door_settings)
    token = registry.add_device("device-a")
    registry.close()
    with ingest_processes(door_settings, 1) as [(url, pid)]:
        port = int(url.rsplit(":", 1)[1])
        server = psutil.Process(pid)
        baseline_rss = server.memory_info().rss
        peak_rss = baseline_rss
        sent = 0
        sending_done = threading.Event()

        def send_body(connection: socket.socket) -> None:
            nonlocal sent
            chunk = b"\0" * 65536
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            try:
                while sent < 50 * MEBIBYTE:
                    connection.sendall(frame)
                    sent += len(chunk)
                connection.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server closed the connection: what we want
            finally:
                sending_done.set()

        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            head = (
                "POST /v1/uploads HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/x-protobuf\r\n"
                f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            connection.sendall(head.encode())
            sender = threading.Thread(target=send_body, args=(connection,), daemon=True)
            sender.start()
            status, response = read_status(connection)
            deadline = time.monotonic() + 10
            while not sending_done.is_set() and time.monotonic() < deadline:
                peak_rss = max(peak_rss, server.memory_info().rss)
                time.sleep(0.01)
            peak_rss = max(peak_rss, server.memory_info().rss)
            assert sending_done.is_set(), "the server kept reading"
        assert status == 413, response
        assert b'"reason":"body-too-large"' in response
        # Cut at 2 MiB: what got through is the limit plus the socket buffers, far from 50 MiB.
        assert sent < 20 * MEBIBYTE, sent
        assert peak_rss - baseline_rss < 20 * MEBIBYTE, (baseline_rss, peak_rss)
