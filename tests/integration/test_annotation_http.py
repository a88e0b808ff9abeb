"""The annotation API over HTTP (real Redis and SQLite): sign-in, roles, the answer loop, limits, OpenAPI.

The window data comes from an upload archived by ingest's own archive adapter, so the key layout
the annotation service reads is the one ingest writes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from michi.blobs import BlobStore, media_key
from michi.contracts.v1 import labels_pb2, upload_pb2
from services.annotation.domain.roles import Role
from services.annotation.wiring import Wiring, build_app
from services.ingest.adapters.archive import BlobUploadArchive

from .annotation_support import ManualClock, RecordingPublisher, make_request, make_upload, serving, settings_for, wire

PASSWORD = "a long enough password"
JPEG = b"\xff\xd8\xff\xe0" + b"frame" * 100


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def wiring(tmp_path: Path, redis_url: str, clock: ManualClock, publisher: RecordingPublisher) -> Iterator[Wiring]:
    settings = settings_for(
        tmp_path, redis_url, annotation_rate_per_s=50, annotation_signin_attempts=3, annotation_session_ttl_s=3600
    )
    built = wire(settings, publisher=publisher, clock=clock)
    for name, role in (
        ("ann-1", Role.ANNOTATOR),
        ("ann-2", Role.ANNOTATOR),
        ("lead", Role.LEAD),
        ("admin", Role.ADMIN),
    ):
        built.accounts.add(name, role, actor="test", password=PASSWORD)
    yield built


@pytest.fixture
def client(wiring: Wiring) -> Iterator[httpx.Client]:
    with serving(build_app(wiring.settings, wiring=wiring)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


def _sign_in(client: httpx.Client, name: str) -> dict[str, str]:
    answer = client.post("/v1/sessions", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def _archive(wiring: Wiring, upload: upload_pb2.Upload) -> None:
    blobs = BlobStore(wiring.settings.resolved_blob_url())
    canonical = upload.SerializeToString(deterministic=True)
    asyncio.run(BlobUploadArchive(blobs).store(upload, canonical, hashlib.sha256(canonical).hexdigest()))


def test_the_page_is_self_contained(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<canvas" in html and "/v1/sessions" in html
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_sign_in_sessions_and_sign_out(client: httpx.Client, wiring: Wiring, clock: ManualClock) -> None:
    wrong = client.post("/v1/sessions", json={"name": "ann-1", "password": "not the password"})
    assert wrong.status_code == 401 and wrong.json()["reason"] == "invalid-credentials"
    assert client.get("/v1/me").json()["reason"] == "missing-token"
    headers = _sign_in(client, "ann-1")
    assert client.get("/v1/me", headers=headers).json() == {
        "annotator": "ann-1",
        "role": "annotator",
        "permissions": ["work"],
    }
    assert client.delete("/v1/sessions/current", headers=headers).status_code == 204
    assert client.get("/v1/me", headers=headers).status_code == 401
    # Sessions expire.
    headers = _sign_in(client, "ann-1")
    clock.advance(3601)
    expired = client.get("/v1/me", headers=headers)
    assert expired.status_code == 401 and expired.json()["reason"] == "invalid-token"
    # Too many failed sign-ins for a name: 429, even with the right password.
    for _ in range(3):
        client.post("/v1/sessions", json={"name": "ann-2", "password": "guessing wrong"})
    throttled = client.post("/v1/sessions", json={"name": "ann-2", "password": PASSWORD})
    assert throttled.status_code == 429 and "retry-after" in throttled.headers
    # Tokens are stored hashed: the token itself is nowhere in the database.
    token = headers["Authorization"].split()[1]
    with wiring.store.engine.connect() as connection:
        from sqlalchemy import text

        stored = connection.execute(text("SELECT token_hash FROM annotation_session")).scalars().all()
    assert token not in stored and all(len(value) == 64 for value in stored)


OVERSEEING_AND_ADMINISTERING = [
    ("GET", "/v1/stats/queues", None),
    ("GET", "/v1/stats/agreement", None),
    ("GET", "/v1/stats/annotators", None),
    ("GET", "/v1/disputes", None),
    ("POST", "/v1/tasks/some-task/adjudication", {"answer": "normal"}),
    ("POST", "/v1/tasks/some-task/gold", {"answer": "normal"}),
    ("GET", "/v1/admin/annotators", None),
    ("POST", "/v1/admin/annotators", {"name": "mallory", "role": "admin"}),
    ("POST", "/v1/admin/annotators/ann-2/password", None),
    ("POST", "/v1/admin/rebuild", None),
]


def test_annotators_may_not_oversee_or_administer(client: httpx.Client) -> None:
    headers = _sign_in(client, "ann-1")
    for method, path, body in OVERSEEING_AND_ADMINISTERING:
        answer = client.request(method, path, json=body, headers=headers)
        assert (answer.status_code, answer.json()["reason"]) == (403, "forbidden"), path


def test_leads_oversee_and_admins_administer(client: httpx.Client, wiring: Wiring) -> None:
    lead = _sign_in(client, "lead")
    assert client.get("/v1/stats/queues", headers=lead).status_code == 200
    assert client.get("/v1/stats/annotators", headers=lead).status_code == 200
    assert client.get("/v1/admin/annotators", headers=lead).status_code == 403
    admin = _sign_in(client, "admin")
    created = client.post("/v1/admin/annotators", json={"name": "carol", "role": "lead"}, headers=admin)
    assert created.status_code == 201
    password = created.json()["password"]
    assert client.post("/v1/sessions", json={"name": "carol", "password": password}).status_code == 201
    assert client.post("/v1/admin/annotators", json={"name": "carol"}, headers=admin).status_code == 409
    reset = client.post("/v1/admin/annotators/carol/password", headers=admin).json()["password"]
    assert client.post("/v1/sessions", json={"name": "carol", "password": password}).status_code == 401
    assert client.post("/v1/sessions", json={"name": "carol", "password": reset}).status_code == 201
    assert client.post("/v1/admin/annotators/carol/disabled", headers=admin).status_code == 204
    assert client.post("/v1/sessions", json={"name": "carol", "password": reset}).status_code == 401
    assert client.delete("/v1/admin/annotators/carol/disabled", headers=admin).status_code == 204
    assert client.post("/v1/sessions", json={"name": "carol", "password": reset}).status_code == 201
    listed = {item["name"]: item["role"] for item in client.get("/v1/admin/annotators", headers=admin).json()}
    assert listed["carol"] == "lead" and listed["ann-1"] == "annotator"
    assert client.post("/v1/admin/rebuild", headers=admin).json() == {"tasks": 0}


def test_the_answer_loop_with_window_data(client: httpx.Client, wiring: Wiring, publisher: RecordingPublisher) -> None:
    upload = make_upload(media=("front.jpg",))
    _archive(wiring, upload)
    blobs = BlobStore(wiring.settings.resolved_blob_url())
    asyncio.run(blobs.put_bytes(media_key(upload.device_id, upload.upload_id, "front.jpg"), JPEG))
    request = make_request("window-http", upload=upload, window_offset_s=4.0, window_s=2.0, priority=60)
    wiring.service.intake(request)
    wiring.service.intake(make_request("no-archive"))
    ann = _sign_in(client, "ann-1")

    queues = client.get("/v1/queues", headers=ann).json()
    assert queues == [{"queue": "uncertain", "waiting": 2}]
    task = client.post("/v1/queues/uncertain/leases", headers=ann).json()
    assert task["task_id"] == "window-http" and task["suggestion"] == "harsh-braking"
    assert not {"reason", "priority", "known_answer"} & set(task)

    window = client.get(f"/v1/tasks/{task['task_id']}/window", headers=ann).json()
    assert window["available"] and window["window_duration_s"] == pytest.approx(2.0)
    assert len(window["imu_times_s"]) == len(window["accel_mps2"]["x"]) > 100
    assert min(window["imu_times_s"]) == pytest.approx(-2.0, abs=0.05) and max(window["imu_times_s"]) == pytest.approx(
        4.0, abs=0.05
    )
    assert min(window["accel_mps2"]["x"]) < -3.5  # the braking dip at 5 s is inside the window
    assert len(window["speed_mps"]) == len(window["latitude"]) >= 5
    [frame] = window["media"]
    assert frame["name"] == "front.jpg" and frame["content_type"] == "image/jpeg"
    media = client.get(frame["url"], headers=ann)
    assert media.status_code == 200 and media.content == JPEG
    # Another annotator may not look at a task they do not hold; a lead may.
    ann2 = _sign_in(client, "ann-2")
    assert client.get(f"/v1/tasks/{task['task_id']}/window", headers=ann2).status_code == 403
    assert client.get(f"/v1/tasks/{task['task_id']}/window", headers=_sign_in(client, "lead")).status_code == 200

    bad = client.post(
        f"/v1/tasks/{task['task_id']}/votes", json={"lease_id": task["lease_id"], "answer": "speeding"}, headers=ann
    )
    assert bad.status_code == 422 and bad.json()["field"] == "answer"
    vote = client.post(
        f"/v1/tasks/{task['task_id']}/votes",
        json={"lease_id": task["lease_id"], "answer": "harsh-braking"},
        headers=ann,
    )
    assert vote.json() == {"task_id": "window-http", "answer": "harsh-braking", "recorded_as": "counted"}
    stale = client.post(
        f"/v1/tasks/{task['task_id']}/votes", json={"lease_id": "no-such-lease", "answer": "normal"}, headers=ann
    )
    assert stale.status_code == 409 and stale.json()["reason"] == "unknown-lease"

    second = client.post("/v1/queues/uncertain/leases", headers=ann).json()
    assert second["task_id"] == "no-archive"
    empty = client.get(f"/v1/tasks/{second['task_id']}/window", headers=ann).json()
    assert not empty["available"] and empty["imu_times_s"] == []
    skipped = client.post(
        f"/v1/tasks/{second['task_id']}/skips", json={"lease_id": second["lease_id"], "reason": "no data"}, headers=ann
    )
    assert skipped.json() == {"task_id": "no-archive", "outcome": "skipped"}
    assert client.post("/v1/queues/uncertain/leases", headers=ann).status_code == 204

    task2 = client.post("/v1/queues/uncertain/leases", headers=ann2).json()
    assert task2["task_id"] == "window-http"
    client.post(
        "/v1/tasks/window-http/votes", json={"lease_id": task2["lease_id"], "answer": "harsh-braking"}, headers=ann2
    )
    [label] = publisher.labels
    assert label.lineage.window_id == "window-http" and label.lineage.upload_id == upload.upload_id
    assert label.source == labels_pb2.LABEL_SOURCE_CONSENSUS

    stats = client.get("/v1/me/stats", headers=ann).json()
    assert (stats["votes_total"], stats["votes_last_hour"], stats["skips_total"]) == (1, 1, 1)
    assert stats["accuracy"] is None and "gold" not in str(stats)
    queue_stats = client.get("/v1/stats/queues", headers=_sign_in(client, "lead")).json()
    assert queue_stats["queues"][0]["queue"] == "uncertain" and queue_stats["queues"][0]["labels_last_hour"] == 1
    agreement = client.get("/v1/stats/agreement", headers=_sign_in(client, "lead")).json()
    assert agreement["items"] == 1 and agreement["krippendorff_alpha"] is None  # one category only: undefined


def test_limits_and_error_bodies(client: httpx.Client, wiring: Wiring) -> None:
    headers = _sign_in(client, "ann-1")
    too_large = client.post(
        "/v1/tasks/x/votes",
        content=b"{" + b" " * 20_000 + b"}",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert too_large.status_code == 413 and too_large.json()["reason"] == "body-too-large"
    invalid = client.post("/v1/queues/NOT_A_QUEUE/leases", headers=headers)
    assert invalid.status_code == 422 and invalid.json()["reason"] == "invalid-request"
    assert client.get("/v1/nothing-here").json()["reason"] == "not-found"
    statuses = [client.get("/v1/me", headers=headers).status_code for _ in range(60)]
    assert 429 in statuses  # 50 requests a second per account
    assert client.get("/healthz").json() == {"status": "ok", "service": "annotation"}
    ready = client.get("/readyz").json()
    assert ready == {
        "status": "ready",
        "service": "annotation",
        "ready": True,
        "checks": {"redis": "ok", "database": "ok"},
    }
    metrics = client.get("/metrics").text
    assert "michi_annotation_refusals_total" in metrics and 'reason="rate-limited"' in metrics


def test_the_openapi_schema_documents_every_refusal(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    paths = schema["paths"]
    for path in ("/v1/queues/{queue}/leases", "/v1/tasks/{task_id}/votes", "/v1/tasks/{task_id}/skips", "/v1/me/stats"):
        operation = next(iter(paths[path].values()))
        for status in ("401", "422", "429", "503"):
            reference = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert reference.endswith("/ErrorBody")
    assert "204" in paths["/v1/queues/{queue}/leases"]["post"]["responses"]
    assert "403" in paths["/v1/tasks/{task_id}/adjudication"]["post"]["responses"]
    task_fields = set(schema["components"]["schemas"]["TaskModel"]["properties"])
    assert not task_fields & {"reason", "priority", "known_answer", "gold"}
