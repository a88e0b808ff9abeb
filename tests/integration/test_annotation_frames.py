"""A camera detection's review over HTTP (real Redis and SQLite): the task as a reviewer leases it, the evidence
frames route (auth, bounds, caching headers), the camera answers, and the label that goes back to scoring.

`camera_request` and `clip` are shared with test_annotation_browser.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from michi.blobs import BlobStore, media_key
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2
from services.annotation.domain.roles import Role
from services.annotation.domain.tasks import InvalidRequest
from services.annotation.wiring import Wiring, build_app

from .annotation_support import RecordingPublisher, make_request, serving, settings_for, wire

PASSWORD = "a long enough password"


def clip(pictures: list[np.ndarray], fps: int = 5) -> bytes:
    """An MP4 (MPEG-4 part 2) of these RGB pictures."""
    import av

    height, width = pictures[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def camera_request(
    blobs: BlobStore,
    data: bytes,
    evidence_ms: list[int],
    *,
    name: str = "inward_0.mp4",
    content_type: str = "video/mp4",
    suggested: int = common_pb2.EVENT_TYPE_DROWSINESS,
    upload_id: str = "upload-cam-1",
    device_id: str = "device-1",
    started_s: float = 1_765_000_000.0,
) -> labels_pb2.LabelRequest:
    """What the camera service asks for one detection (services/camera/domain/review.py), its media stored."""
    asyncio.run(blobs.put_bytes(media_key(device_id, upload_id, name), data))
    detection_id = stable_event_id("camera-detection", upload_id, name, evidence_ms[0])
    window_id = stable_event_id("camera-window", upload_id, name, evidence_ms[0])
    start = started_s + evidence_ms[0] / 1000.0
    end = started_s + evidence_ms[-1] / 1000.0
    return labels_pb2.LabelRequest(
        event_id=stable_event_id("camera-review", detection_id),
        occurred_at=timestamp_from_seconds(start),
        lineage=common_pb2.Lineage(
            upload_id=upload_id,
            window_id=window_id,
            trip_id="trip-cam",
            device_id=device_id,
            driver_id="driver-1",
            model_name="vision-attention",
            model_version="v1",
            data_version="d1",
        ),
        reason=labels_pb2.LABEL_REASON_CAMERA_REVIEW,
        priority=60,
        suggested=suggested,  # type: ignore[arg-type]
        confidence=0.8,
        window=common_pb2.TimeSpan(started_at=timestamp_from_seconds(start), ended_at=timestamp_from_seconds(end)),
        detection_event_id=detection_id,
        camera=inference_pb2.CameraReference(
            media_name=name,
            camera=1,  # type: ignore[arg-type]
            blob_key=media_key(device_id, upload_id, name),
            frame_offsets_ms=evidence_ms,
            sha256=hashlib.sha256(data).hexdigest(),
            content_type=content_type,
        ),
    )


@pytest.fixture
def wiring(tmp_path: Path, redis_url: str) -> Iterator[Wiring]:
    built = wire(settings_for(tmp_path, redis_url, annotation_rate_per_s=100), publisher=RecordingPublisher())
    for name, role in (("ann-1", Role.ANNOTATOR), ("ann-2", Role.ANNOTATOR), ("lead", Role.LEAD)):
        built.accounts.add(name, role, actor="test", password=PASSWORD)
    yield built


@pytest.fixture
def client(wiring: Wiring) -> Iterator[httpx.Client]:
    with serving(build_app(wiring.settings, wiring=wiring)) as url, httpx.Client(base_url=url, timeout=20) as http:
        yield http


def _sign_in(client: httpx.Client, name: str) -> dict[str, str]:
    answer = client.post("/v1/sessions", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def _grey_clip(frames: int = 10) -> bytes:
    return clip([np.full((48, 64, 3), 20 * index, np.uint8) for index in range(frames)])


def test_a_camera_review_shows_its_evidence_frames_only_to_whom_may_see_it(
    client: httpx.Client, wiring: Wiring
) -> None:
    blobs = BlobStore(wiring.settings.resolved_blob_url())
    request = camera_request(blobs, _grey_clip(), [0, 400, 800])
    wiring.service.intake(request)
    task_id = request.lineage.window_id
    ann_1, ann_2, lead = (_sign_in(client, name) for name in ("ann-1", "ann-2", "lead"))

    assert {queue["queue"] for queue in client.get("/v1/queues", headers=ann_1).json()} == {"camera-review"}
    task = client.post("/v1/queues/camera-review/leases", headers=ann_1).json()
    assert (task["task_id"], task["kind"], task["suggestion"]) == (task_id, "camera", "drowsiness")
    assert task["frame_offsets_ms"] == [0, 400, 800]

    url = f"/v1/tasks/{task_id}/frames"
    assert client.get(f"{url}/0").status_code == 401
    assert client.get(f"{url}/0", headers=ann_2).json()["reason"] == "not-your-task"
    first = client.get(f"{url}/0", headers=ann_1)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content[:2] == b"\xff\xd8" and len(first.content) < 100_000
    assert first.headers["cache-control"] == "private, max-age=3600"
    assert first.headers["x-content-type-options"] == "nosniff"
    again = client.get(f"{url}/0", headers={**ann_1, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"{url}/2", headers=lead).status_code == 200  # a lead sees every task
    assert client.get(f"{url}/1", headers=ann_1).headers["etag"] != first.headers["etag"]
    # Bounds: only the request's frames, by index; never a key or a file name from the caller.
    assert client.get(f"{url}/3", headers=ann_1).json()["reason"] == "unknown-frame"
    assert client.get(f"{url}/16", headers=ann_1).status_code == 422
    assert client.get(f"{url}/-1", headers=ann_1).status_code == 422
    assert client.get(f"{url}/0?key=media/device-1/other/x.mp4", headers=ann_1).content == first.content
    assert client.get(f"/v1/tasks/{task_id}x/frames/0", headers=lead).json()["reason"] == "unknown-task"

    page = client.get("/")
    assert "img-src 'self' blob:" in page.headers["content-security-policy"]


def test_camera_answers_fit_camera_tasks_and_the_label_names_the_detection(
    client: httpx.Client, wiring: Wiring
) -> None:
    publisher = wiring.service.publisher
    assert isinstance(publisher, RecordingPublisher)
    blobs = BlobStore(wiring.settings.resolved_blob_url())
    request = camera_request(blobs, _grey_clip(), [0, 400], suggested=common_pb2.EVENT_TYPE_DISTRACTION)
    wiring.service.intake(request)
    motion = make_request("motion-window")
    wiring.service.intake(motion)
    task_id = request.lineage.window_id
    choices = {choice["answer"]: choice["tasks"] for choice in client.get("/v1/label-set").json()}
    assert choices["normal"] == ["motion", "camera"] and choices["tailgating"] == ["camera"]
    assert choices["harsh-braking"] == ["motion"]

    for name in ("ann-1", "ann-2"):
        headers = _sign_in(client, name)
        lease = client.post("/v1/queues/camera-review/leases", headers=headers).json()
        assert lease["task_id"] == task_id
        wrong = client.post(
            f"/v1/tasks/{task_id}/votes",
            headers=headers,
            json={"lease_id": lease["lease_id"], "answer": "harsh-braking"},
        )
        assert (wrong.status_code, wrong.json()["reason"]) == (422, "answer-does-not-fit")
        vote = client.post(
            f"/v1/tasks/{task_id}/votes", headers=headers, json={"lease_id": lease["lease_id"], "answer": "normal"}
        )
        assert vote.json()["recorded_as"] == "counted", vote.text
    [label] = publisher.by_window()[task_id]
    # What scoring needs to overturn the detection: its window, its event id, the trip, and the verdict.
    assert label.event_type == common_pb2.EVENT_TYPE_NORMAL
    assert label.detection_event_id == request.detection_event_id
    assert label.lineage.trip_id == "trip-cam" and label.lineage.window_id == task_id
    assert list(label.request_reasons) == [labels_pb2.LABEL_REASON_CAMERA_REVIEW]

    headers = _sign_in(client, "ann-1")
    lease = client.post("/v1/queues/uncertain/leases", headers=headers).json()
    misfit = client.post(
        f"/v1/tasks/{lease['task_id']}/votes",
        headers=headers,
        json={"lease_id": lease["lease_id"], "answer": "drowsiness"},
    )
    assert misfit.json()["reason"] == "answer-does-not-fit"
    assert client.get(f"/v1/tasks/{lease['task_id']}/frames/0", headers=headers).json()["reason"] == "no-frames"


def _dispute(client: httpx.Client, queue: str, answers: tuple[str, str, str]) -> None:
    """Three annotators, three answers: the task waits for a lead."""
    for name, answer in zip(("ann-1", "ann-2", "ann-3"), answers, strict=True):
        headers = _sign_in(client, name)
        lease = client.post(f"/v1/queues/{queue}/leases", headers=headers).json()
        vote = client.post(
            f"/v1/tasks/{lease['task_id']}/votes",
            headers=headers,
            json={"lease_id": lease["lease_id"], "answer": answer},
        )
        assert vote.json()["recorded_as"] == "counted", vote.text


def test_the_dispute_list_offers_only_the_answers_the_server_accepts_for_the_task(
    client: httpx.Client, wiring: Wiring
) -> None:
    from services.annotation.domain.labels import LABEL_SET

    wiring.accounts.add("ann-3", Role.ANNOTATOR, actor="test", password=PASSWORD)
    blobs = BlobStore(wiring.settings.resolved_blob_url())
    camera = camera_request(blobs, _grey_clip(), [0, 400], suggested=common_pb2.EVENT_TYPE_TAILGATING)
    wiring.service.intake(camera)
    wiring.service.intake(make_request("motion-window"))
    _dispute(client, "camera-review", ("normal", "distraction", "tailgating"))
    _dispute(client, "uncertain", ("normal", "harsh-braking", "confounder"))
    lead = _sign_in(client, "lead")

    disputes = {item["task_id"]: item for item in client.get("/v1/disputes", headers=lead).json()}
    assert set(disputes) == {camera.lineage.window_id, "motion-window"}
    offered = {disputes[task_id]["kind"]: disputes[task_id]["answers"] for task_id in disputes}
    assert offered == {
        "camera": ["normal", "distraction", "drowsiness", "tailgating"],
        "motion": ["normal", "harsh-braking", "harsh-acceleration", "harsh-cornering", "confounder"],
    }
    # Each answer of the label set: offered for a task exactly when the adjudication route takes it. Refusals leave
    # the task disputed, so every answer is tried against both; the last accepted one decides.
    for task_id, dispute in disputes.items():
        refused = []
        for choice in LABEL_SET:
            if choice.name in dispute["answers"]:
                continue
            answer = client.post(f"/v1/tasks/{task_id}/adjudication", headers=lead, json={"answer": choice.name})
            assert (answer.status_code, answer.json()["reason"]) == (422, "answer-does-not-fit"), choice.name
            refused.append(choice.name)
        assert refused and len(refused) + len(dispute["answers"]) == len(LABEL_SET)
        decided = client.post(
            f"/v1/tasks/{task_id}/adjudication", headers=lead, json={"answer": dispute["answers"][-1]}
        )
        assert decided.status_code == 200, decided.text
    assert client.get("/v1/disputes", headers=lead).json() == []


def test_a_camera_review_without_its_frames_is_refused(wiring: Wiring) -> None:
    request = make_request("camera-without-frames", reason=labels_pb2.LABEL_REASON_CAMERA_REVIEW)
    with pytest.raises(InvalidRequest):
        wiring.service.intake(request)


def test_a_media_item_that_changed_is_not_shown(client: httpx.Client, wiring: Wiring) -> None:
    blobs = BlobStore(wiring.settings.resolved_blob_url())
    request = camera_request(blobs, _grey_clip(), [0, 400])
    asyncio.run(blobs.put_bytes(media_key("device-1", "upload-cam-1", "inward_0.mp4"), _grey_clip(4)))
    wiring.service.intake(request)
    lead = _sign_in(client, "lead")
    refused = client.get(f"/v1/tasks/{request.lineage.window_id}/frames/0", headers=lead)
    assert (refused.status_code, refused.json()["reason"]) == (409, "media-changed")
