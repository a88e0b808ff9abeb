"""A hostile device against both ingest doors, on the real Kafka broker, redis-server and SQLite.

The HTTP app (`wiring.build_app`, driven in-process through `httpx.ASGITransport`) and the gRPC
server around the same endpoints (`wiring.build_grpc_server`), plus one real `python -m
services.ingest` for what only uvicorn's HTTP parser sees (`Content-Length: abc`). Every refusal is a
4xx with its reason (counted in /metrics), never a 5xx; another device's uploads sent at the same
moment are accepted; a refused upload in a stream is a REJECTED ack and the stream goes on.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from redis.asyncio import Redis

from michi.bus.catalog import UPLOADS
from michi.bus.producer import Delivery, EventProducer
from michi.bus.reader import TopicReader
from michi.contracts.v1 import ingest_pb2, ingest_pb2_grpc, upload_pb2
from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.entrypoints.grpc import IngestGrpcServer
from services.ingest.settings import IngestSettings
from services.ingest.wiring import build_app, build_grpc_server, device_registry

from .ingest_support import (
    ingest_environment,
    make_upload,
    settings_for,
    start_ingest,
    uploads_count,
    wait_for_ingest,
)

pytestmark = pytest.mark.integration

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ACCEPTED = ingest_pb2.UPLOAD_OUTCOME_ACCEPTED
DUPLICATE = ingest_pb2.UPLOAD_OUTCOME_DUPLICATE
REJECTED = ingest_pb2.UPLOAD_OUTCOME_REJECTED


class ExplodingProducer:
    """The session's producer, except that an upload whose id contains 'explode' meets a bug no rule foresaw."""

    def __init__(self, producer: EventProducer) -> None:
        self.inner = producer
        self.prefix = producer.prefix

    def publish_in_loop(self, spec: Any, key: str, message: Any, **options: Any) -> asyncio.Future[Delivery]:
        received = upload_pb2.UploadReceived.FromString(message)
        if "explode" in received.upload.upload_id:
            raise RuntimeError("a bug in the producer")
        return self.inner.publish_in_loop(spec, key, message, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Doors:
    client: httpx.AsyncClient
    stub: ingest_pb2_grpc.IngestStub
    server: IngestGrpcServer
    registry: DeviceRegistry
    settings: IngestSettings
    redis: Redis
    tokens: dict[str, str]

    async def post(
        self, upload: upload_pb2.Upload | bytes, device_id: str = "device-a", *, media: str = PROTOBUF
    ) -> httpx.Response:
        body = upload if isinstance(upload, bytes) else upload.SerializeToString()
        return await self.client.post(
            "/v1/uploads",
            content=body,
            headers={"content-type": media, "authorization": f"Bearer {self.tokens[device_id]}"},
        )

    def metadata(self, device_id: str = "device-a") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[device_id]}"),)

    async def refused_count(self, reason: str) -> float:
        metrics = (await self.client.get("/metrics")).text
        found = re.search(rf'michi_ingest_uploads_total{{outcome="refused",reason="{reason}"}} ([0-9.]+)', metrics)
        return float(found.group(1)) if found else 0.0


@pytest_asyncio.fixture
async def doors(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> AsyncIterator[Doors]:
    async with open_doors(settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home), producer) as opened:
        yield opened


def door_settings(settings: IngestSettings, **overrides: Any) -> IngestSettings:
    # Rate limits have their own tests; here they would only refuse the floods.
    return settings.model_copy(
        update={
            "ingest_grpc_port": 0,
            "ingest_device_rate_per_s": 10_000.0,
            "ingest_device_burst": 10_000,
            **overrides,
        }
    )


@asynccontextmanager
async def open_doors(
    settings: IngestSettings, producer: EventProducer | ExplodingProducer, **overrides: Any
) -> AsyncIterator[Doors]:
    """HTTP app and gRPC server on the same endpoints, devices a and b registered."""
    settings = door_settings(settings, **overrides)
    redis = Redis.from_url(settings.resolved_redis_url())
    registry = device_registry(settings)
    app = build_app(settings, producer=producer, redis=redis, registry=registry)  # type: ignore[arg-type]
    server = build_grpc_server(settings, app.state.endpoints)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
    tokens = {device_id: registry.add_device(device_id) for device_id in ("device-a", "device-b")}
    try:
        yield Doors(client, ingest_pb2_grpc.IngestStub(channel), server, registry, settings, redis, tokens)
    finally:
        await client.aclose()
        await channel.close()
        await server.stop(1)
        await redis.aclose()
        registry.close()


async def grpc_refusal(call: Any) -> tuple[grpc.StatusCode, str, str | None]:
    """(code, michi-reason, michi-field) of a unary call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    metadata = dict(caught.value.trailing_metadata() or ())
    return caught.value.code(), metadata.get("michi-reason", ""), metadata.get("michi-field")


def with_start(upload: upload_pb2.Upload, *, seconds: int | None = None, nanos: int | None = None) -> upload_pb2.Upload:
    if seconds is not None:
        upload.started_at.seconds = seconds
    if nanos is not None:
        upload.started_at.nanos = nanos
    return upload


def on_trip(upload_id: str, sequence: int, trip_id: str, device_id: str = "device-a") -> upload_pb2.Upload:
    upload = make_upload(upload_id, device_id, sequence=sequence)
    upload.trip_id = trip_id
    return upload


# --- 1. invalid timestamps: refused at the door, alone


@pytest.mark.asyncio
async def test_an_invalid_timestamp_is_422_and_another_devices_uploads_sent_with_it_are_accepted(
    doors: Doors, kafka_bootstrap: str, topic_prefix: str
) -> None:
    bad = [
        with_start(make_upload("bad-nanos-high"), nanos=1_500_000_000),
        with_start(make_upload("bad-nanos-negative"), nanos=-1),
        with_start(make_upload("bad-seconds"), seconds=253_402_300_800),
    ]
    good = [make_upload(f"good-{index}", "device-b", sequence=index) for index in range(12)]
    # All at the same moment: before, they shared a raw-archive batch and the bad ones failed it.
    sends = [doors.post(upload) for upload in bad] + [doors.post(upload, "device-b") for upload in good]
    responses = await asyncio.gather(*sends)

    assert [(response.status_code, response.json()) for response in responses[:3]] == [
        (
            422,
            {
                "reason": "invalid-timestamp",
                "detail": "started_at: nanos 1500000000 is outside 0-999999999",
                "field": "started_at.nanos",
            },
        ),
        (
            422,
            {
                "reason": "invalid-timestamp",
                "detail": "started_at: nanos -1 is outside 0-999999999",
                "field": "started_at.nanos",
            },
        ),
        (
            422,
            {
                "reason": "invalid-timestamp",
                "detail": "started_at: seconds 253402300800 is outside -62135596800-253402300799 (years 1-9999)",
                "field": "started_at.seconds",
            },
        ),
    ]
    assert [response.status_code for response in responses[3:]] == [202] * 12
    assert uploads_count(kafka_bootstrap, topic_prefix) == 12
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= 12, timeout=20)
    assert sorted(record.message.upload.upload_id for record in records) == sorted(u.upload_id for u in good)  # type: ignore[attr-defined]
    assert all(record.message.archive_uri for record in records)  # type: ignore[attr-defined]
    assert await doors.refused_count("invalid-timestamp") == 3


@pytest.mark.asyncio
async def test_an_invalid_timestamp_over_grpc_is_invalid_argument_and_rejected_on_a_stream_that_goes_on(
    doors: Doors, kafka_bootstrap: str, topic_prefix: str
) -> None:
    code, reason, field = await grpc_refusal(
        doors.stub.Upload(with_start(make_upload("unary-bad"), nanos=1_500_000_000), metadata=doors.metadata())
    )
    assert (code, reason, field) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid-timestamp", "started_at.nanos")

    uploads = [make_upload(f"stream-{index}", sequence=index) for index in range(6)]
    with_start(uploads[1], nanos=-1)
    with_start(uploads[3], seconds=-(2**62))
    uploads[4].sequence = 100_000
    uploads[4].trip_end = True
    stream = doors.stub.StreamUploads(iter(uploads), metadata=doors.metadata(), timeout=60)
    acks = [ack async for ack in stream]
    assert await stream.code() == grpc.StatusCode.OK
    assert [(ack.upload_id, ack.outcome, ack.reason) for ack in acks] == [
        ("stream-0", ACCEPTED, ""),
        ("stream-1", REJECTED, "invalid-timestamp"),
        ("stream-2", ACCEPTED, ""),
        ("stream-3", REJECTED, "invalid-timestamp"),
        ("stream-4", REJECTED, "sequence-too-high"),
        ("stream-5", ACCEPTED, ""),
    ]
    assert acks[1].detail == "started_at.nanos: started_at: nanos -1 is outside 0-999999999"
    assert acks[4].detail.startswith("sequence: sequence 100000 is above 8640")
    assert uploads_count(kafka_bootstrap, topic_prefix) == 3
    assert await doors.refused_count("invalid-timestamp") == 3
    assert await doors.refused_count("sequence-too-high") == 1


# --- a failure no rule foresaw stays with its upload


@pytest.mark.asyncio
async def test_an_unforeseen_failure_is_internal_error_for_that_upload_only(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> None:
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    async with open_doors(settings, ExplodingProducer(producer)) as doors:
        response = await doors.post(make_upload("explode-http"))
        assert (response.status_code, response.json()) == (
            500,
            {"reason": "internal-error", "detail": "ingest failed on this upload; it was not accepted", "field": None},
        )
        assert (await doors.post(make_upload("fine-http"))).status_code == 202

        code, reason, _ = await grpc_refusal(doors.stub.Upload(make_upload("explode-unary"), metadata=doors.metadata()))
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "internal-error")

        uploads = [make_upload(name, sequence=index) for index, name in enumerate(["s-0", "explode-s", "s-2"])]
        stream = doors.stub.StreamUploads(iter(uploads), metadata=doors.metadata(), timeout=60)
        acks = [ack async for ack in stream]
        assert await stream.code() == grpc.StatusCode.OK
        assert [(ack.upload_id, ack.outcome, ack.reason) for ack in acks] == [
            ("s-0", ACCEPTED, ""),
            ("explode-s", REJECTED, "internal-error"),
            ("s-2", ACCEPTED, ""),
        ]
        assert await doors.refused_count("internal-error") == 3
    assert uploads_count(kafka_bootstrap, topic_prefix) == 3


# --- free text a device controls: bounded and printable, over both doors


@pytest.mark.asyncio
async def test_control_characters_and_overlong_free_text_are_422_over_http_and_grpc(
    doors: Doors, kafka_bootstrap: str, topic_prefix: str
) -> None:
    escape = make_upload("text-escape")
    escape.vehicle_type = "van\x1b[2J"
    nul = make_upload("text-nul")
    nul.firmware_version = "1.0\x00"
    overlong = make_upload("text-long")
    overlong.firmware_version = "9" * 129
    as_json = json.loads(json_format.MessageToJson(make_upload("text-json")))
    as_json["firmwareVersion"] = "1.0\u202e"
    responses = [
        await doors.post(escape),
        await doors.post(nul),
        await doors.post(overlong),
        await doors.post(json.dumps(as_json).encode(), media=JSON),
    ]
    assert [(response.status_code, response.json()["reason"], response.json()["field"]) for response in responses] == [
        (422, "invalid-text", "vehicle_type"),
        (422, "invalid-text", "firmware_version"),
        (422, "value-too-long", "firmware_version"),
        (422, "invalid-text", "firmware_version"),
    ]
    assert responses[0].json()["detail"] == "vehicle_type character 3 (U+001B) is not printable"

    unary = make_upload("text-unary")
    unary.firmware_version = "fw\n"
    code, reason, field = await grpc_refusal(doors.stub.Upload(unary, metadata=doors.metadata()))
    assert (code, reason, field) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid-text", "firmware_version")

    uploads = [make_upload(f"text-stream-{index}", sequence=index) for index in range(3)]
    uploads[1].vehicle_type = "\x07bell"
    stream = doors.stub.StreamUploads(iter(uploads), metadata=doors.metadata(), timeout=60)
    acks = [ack async for ack in stream]
    assert await stream.code() == grpc.StatusCode.OK
    assert [(ack.upload_id, ack.outcome, ack.reason) for ack in acks] == [
        ("text-stream-0", ACCEPTED, ""),
        ("text-stream-1", REJECTED, "invalid-text"),
        ("text-stream-2", ACCEPTED, ""),
    ]
    assert acks[1].detail == "vehicle_type: vehicle_type character 0 (U+0007) is not printable"
    assert uploads_count(kafka_bootstrap, topic_prefix) == 2
    assert await doors.refused_count("invalid-text") == 5


# --- 2. tokens with bytes no token has


@pytest.mark.asyncio
async def test_garbage_non_ascii_and_wrong_scheme_tokens_are_401_over_http(doors: Doors) -> None:
    token = doors.tokens["device-a"].encode()
    payload, _, signature = token.rpartition(b".")
    cases = [
        (b"Bearer " + payload + b"." + signature[:-2] + "é".encode(), "invalid-token"),  # UTF-8 in the signature
        (b"Bearer " + payload[:-1] + b"\xff." + signature, "invalid-token"),  # a raw byte in the payload
        (b"Bearer \xff\xfe\xfd", "invalid-token"),
        (b"Bearer " + token + b"\x00", "invalid-token"),
        (b"Bearer mdt1.a.b.c", "invalid-token"),
        (b"Bearer garbage", "invalid-token"),
        (b"Bearer " + b"A" * 4000, "invalid-token"),
        (b"Basic dXNlcjpwYXNz", "missing-token"),
        (b"Token " + token, "missing-token"),
        (b"Bearer", "missing-token"),
        (b"\xff " + token, "missing-token"),
    ]
    for authorization, reason in cases:
        response = await doors.client.post(
            "/v1/uploads",
            content=make_upload("token-case").SerializeToString(),
            headers=[(b"content-type", PROTOBUF.encode()), (b"authorization", authorization)],
        )
        assert (response.status_code, response.json()["reason"], response.json()["field"]) == (401, reason, None), (
            authorization
        )
        assert response.headers["www-authenticate"].startswith("Bearer")
    # The scheme is case-insensitive; the genuine token still works.
    accepted = await doors.client.post(
        "/v1/uploads",
        content=make_upload("token-genuine").SerializeToString(),
        headers=[(b"content-type", PROTOBUF.encode()), (b"authorization", b"bearer " + token)],
    )
    assert accepted.status_code == 202
    assert await doors.refused_count("invalid-token") == 7
    assert await doors.refused_count("missing-token") == 4


@pytest.mark.asyncio
async def test_garbage_and_wrong_scheme_tokens_are_unauthenticated_over_grpc(doors: Doors) -> None:
    # gRPC itself refuses non-ASCII metadata on both ends; what a client can send is checked here.
    token = doors.tokens["device-a"]
    cases = [
        (f"Bearer {token[:-1]}~", "invalid-token"),
        (f"Bearer {token.replace('.', '!', 1)}", "invalid-token"),
        ("Bearer mdt1.a.b.c", "invalid-token"),
        (f"Bearer {'A' * 4000}", "invalid-token"),
        ("Basic dXNlcjpwYXNz", "missing-token"),
        (f"Token {token}", "missing-token"),
        ("Bearer", "missing-token"),
    ]
    for authorization, reason in cases:
        metadata = (("authorization", authorization),)
        refused = await grpc_refusal(doors.stub.Upload(make_upload("grpc-token"), metadata=metadata, timeout=15))
        assert refused == (grpc.StatusCode.UNAUTHENTICATED, reason, None), authorization
        stream = doors.stub.StreamUploads(iter([make_upload("grpc-token")]), metadata=metadata, timeout=15)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert dict(caught.value.trailing_metadata() or ())["michi-reason"] == reason
    assert await doors.refused_count("invalid-token") == 8
    assert await doors.refused_count("missing-token") == 6


# --- 3. JSON fields given twice; hostile JSON


def json_body(upload: upload_pb2.Upload, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json_format.MessageToJson(upload))
    document.update(changes)
    return document


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


@pytest.mark.asyncio
async def test_a_json_field_given_twice_is_422_duplicate_field(
    doors: Doors, kafka_bootstrap: str, topic_prefix: str
) -> None:
    both_names = encode(json_body(make_upload("twice-1"), upload_id="twice-other"))
    assert b'"uploadId": "twice-1"' in both_names and b'"upload_id": "twice-other"' in both_names
    response = await doors.post(both_names, media=JSON)
    assert (response.status_code, response.json()) == (
        422,
        {
            "reason": "duplicate-field",
            "detail": "upload_id is given twice (as 'uploadId' and 'upload_id'); send each field once",
            "field": "upload_id",
        },
    )
    same_key = encode(json_body(make_upload("twice-2"))).replace(b"{", b'{"tripId": "trip-x", ', 1)
    response = await doors.post(same_key, media=JSON)
    assert (response.status_code, response.json()["reason"], response.json()["field"]) == (
        422,
        "duplicate-field",
        "trip_id",
    )
    nested = json_body(make_upload("twice-3"))
    nested["gps"][2]["speed_mps"] = 99.0
    response = await doors.post(encode(nested), media=JSON)
    assert (response.status_code, response.json()["field"]) == (422, "gps[2].speed_mps")
    assert (await doors.post(encode(json_body(make_upload("twice-none"))), media=JSON)).status_code == 202
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1
    assert await doors.refused_count("duplicate-field") == 3


@pytest.mark.asyncio
async def test_hostile_json_is_a_4xx_with_a_reason_never_a_5xx(
    doors: Doors, kafka_bootstrap: str, topic_prefix: str
) -> None:
    def body(**changes: Any) -> bytes:
        return encode(json_body(make_upload("hostile"), **changes))

    imu = json_body(make_upload("hostile"))["imu"]
    cases = [
        (body(sampleRateExactHz="NaN"), 422, "non-finite-value"),
        (body(sampleRateExactHz=math.inf), 400, "undecodable-body"),
        (body(sampleRateHz="fifty"), 400, "undecodable-body"),
        (body(sequence=10**400), 400, "undecodable-body"),
        (body(imu={**imu, "accelX": [10**400] * len(imu["accelX"])}), 400, "undecodable-body"),
        (body(imu="x"), 400, "undecodable-body"),
        (body(gps={"latitude": 1}), 400, "undecodable-body"),
        (body(accelerationKind="ACCELERATION_KIND_SIDEWAYS"), 422, "unknown-enum-value"),
        (body(gps=[{}] * 100_000), 422, "too-many-gps-fixes"),
        (body(mediaNames=["x.jpg"] * 1000), 422, "too-many-media-names"),
        (body()[:-1] + b', "extra": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "undecodable-body"),
        (body(startedAt="99999-01-01T00:00:00Z"), 400, "undecodable-body"),
        (body(sequence="100000", tripEnd=True), 422, "sequence-too-high"),
        (b'{"uploadId": "hostile"' + b", " * 10 + b"}", 400, "undecodable-body"),
    ]
    for content, status, reason in cases:
        response = await doors.post(content, media=JSON)
        assert (response.status_code, response.json()["reason"]) == (status, reason), content[:200]
    assert uploads_count(kafka_bootstrap, topic_prefix) == 0
    assert await doors.refused_count("undecodable-body") == 9
    assert await doors.refused_count("too-many-gps-fixes") == 1


# --- 4. sequence bounds


@pytest.mark.asyncio
async def test_a_sequence_far_past_the_trip_is_refused_and_retries_within_the_gap_are_not(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, producer: EventProducer, michi_home: Path
) -> None:
    settings = settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    async with open_doors(settings, producer, ingest_max_sequence_gap=5) as doors:
        made: dict[str, upload_pb2.Upload] = {}

        async def send(upload_id: str, sequence: int) -> tuple[int, str]:
            # The same bytes each time an upload_id is sent again, as a device's retry.
            upload = made.setdefault(upload_id, on_trip(upload_id, sequence, "trip-gap"))
            response = await doors.post(upload)
            return response.status_code, response.json().get("reason") or response.json()["outcome"]

        assert await send("g-0", 0) == (202, "accepted")
        assert await send("g-6", 6) == (422, "sequence-gap-too-large")
        response = await doors.post(made["g-6"])
        assert response.json() == {
            "reason": "sequence-gap-too-large",
            "detail": "sequence 6 is 6 past the trip's highest accepted sequence 0, at most 5;"
            " send the uploads between first, or start a new trip_id",
            "field": "sequence",
        }
        assert await send("g-5", 5) == (202, "accepted")
        # The refused upload was not claimed: sent again once the trip caught up, it is accepted.
        assert await send("g-6", 6) == (202, "accepted")
        assert await send("g-12", 12) == (422, "sequence-gap-too-large")
        assert await send("g-11", 11) == (202, "accepted")
        # Out of order, and re-sent: always accepted (devices retry).
        assert await send("g-3", 3) == (202, "accepted")
        assert await send("g-1", 1) == (202, "accepted")
        assert await send("g-5", 5) == (200, "duplicate")
        assert await send("g-0", 0) == (200, "duplicate")
        # Another trip starts wherever it likes, up to the absolute bound.
        response = await doors.post(on_trip("other-trip", 8_640, "trip-late"))
        assert response.status_code == 202

        # The trip's highest accepted sequence, kept in Redis, expires with the trip.
        key = f"{topic_prefix}ingest:trip-sequence:trip-gap"
        assert await doors.redis.get(key) == b"11"
        assert 0 < await doors.redis.ttl(key) <= doors.settings.ingest_idempotency_ttl_s

        # Over gRPC: the trip's highest sequence is 11, so 17 is refused and the stream goes on.
        stream = doors.stub.StreamUploads(
            iter([on_trip("g-17", 17, "trip-gap"), on_trip("g-16", 16, "trip-gap")]),
            metadata=doors.metadata(),
            timeout=60,
        )
        acks = [(ack.upload_id, ack.outcome, ack.reason) async for ack in stream]
        assert acks == [("g-17", REJECTED, "sequence-gap-too-large"), ("g-16", ACCEPTED, "")]
        code, reason, field = await grpc_refusal(
            doors.stub.Upload(on_trip("g-30", 30, "trip-gap"), metadata=doors.metadata())
        )
        assert (code, reason, field) == (grpc.StatusCode.INVALID_ARGUMENT, "sequence-gap-too-large", "sequence")
        assert await doors.refused_count("sequence-gap-too-large") == 5
    assert uploads_count(kafka_bootstrap, topic_prefix) == 8


@pytest.mark.asyncio
async def test_a_sequence_above_the_maximum_is_refused_even_for_a_new_trip(
    doors: Doors, kafka_bootstrap: str, topic_prefix: str
) -> None:
    huge = on_trip("huge", 100_000, "trip-huge")
    huge.trip_end = True
    response = await doors.post(huge)
    assert (response.status_code, response.json()["reason"], response.json()["field"]) == (
        422,
        "sequence-too-high",
        "sequence",
    )
    assert (await doors.post(on_trip("just-over", 8_641, "trip-huge"))).status_code == 422
    assert (await doors.post(on_trip("at-most", 8_640, "trip-huge"))).status_code == 202
    assert await doors.refused_count("sequence-too-high") == 2
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1


@pytest.mark.asyncio
async def test_samples_beyond_the_upload_or_in_the_future_are_refused(doors: Doors) -> None:
    beyond = make_upload("gps-beyond")
    beyond.gps[9].offset_ms = 4_000_000_000
    response = await doors.post(beyond)
    assert (response.status_code, response.json()["reason"], response.json()["field"]) == (
        422,
        "offset-too-large",
        "gps[9].offset_ms",
    )
    future = make_upload("gps-future")
    future.started_at.seconds += 15 + 296  # started_at 296 s ahead: allowed; its 10 s of samples end 306 s ahead
    response = await doors.post(future)
    assert (response.status_code, response.json()["reason"]) == (422, "sample-in-future")
    assert await doors.refused_count("offset-too-large") == 1
    assert await doors.refused_count("sample-in-future") == 1


# --- 3b. what only a real server sees: Content-Length refused by uvicorn's parser


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {name.lower(): value for name, value in headers.items()}, body


@pytest.fixture
def ingest_process(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> Iterator[tuple[str, int, str]]:
    """`python -m services.ingest` with device-a registered: (url, HTTP port, token)."""
    environment = ingest_environment(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    registry = device_registry(settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home))
    token = registry.add_device("device-a")
    registry.close()
    process = start_ingest(environment, michi_home)
    port = int(environment["MICHI_INGEST_HTTP_PORT"])
    try:
        wait_for_ingest(f"http://127.0.0.1:{port}", michi_home)
        yield f"http://127.0.0.1:{port}", port, token
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_content_length_the_parser_refuses_gets_the_json_error_body(
    ingest_process: tuple[str, int, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    url, port, token = ingest_process
    body = make_upload("after-the-bad-ones").SerializeToString()
    start = f"POST /v1/uploads HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {token}\r\n"
    start += "Content-Type: application/x-protobuf\r\n"
    bad_lengths = [
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: +5",
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 99999999999999999999999999",
    ]
    for header in bad_lengths:
        status, headers, answer = exchange(port, f"{start}{header}\r\n\r\nhello".encode())
        assert status == 400, (header, answer)
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        document = json.loads(answer)
        assert (document["reason"], document["field"]) == ("invalid-content-length", None), header
        assert document["detail"].startswith("Content-Length must be one number of bytes (decimal digits): ")
    status, _, answer = exchange(port, b"POST /v1/uploads HTTP/1.1\r\nHost: ingest\r\nBad Header\r\n\r\n")
    assert (status, json.loads(answer)["reason"]) == (400, "malformed-request")

    with httpx.Client(base_url=url, timeout=15) as client:
        accepted = client.post(
            "/v1/uploads", content=body, headers={"authorization": f"Bearer {token}", "content-type": PROTOBUF}
        )
        assert accepted.status_code == 202, accepted.text
        metrics = client.get("/metrics").text
    assert (
        f'michi_ingest_uploads_total{{outcome="refused",reason="invalid-content-length"}} {len(bad_lengths)}.0'
        in metrics
    )
    assert 'michi_ingest_uploads_total{outcome="refused",reason="malformed-request"} 1.0' in metrics
    assert uploads_count(kafka_bootstrap, topic_prefix) == 1
