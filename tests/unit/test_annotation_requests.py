"""Annotation's `handle_label_request`: what a consumed label request yields, with fake ports (no servers)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, upload_pb2
from michi.kit.consumer import Rejected
from services.annotation.handlers import AnnotationService, handle_label_request

START = 1_764_000_000.0


class TakenIn:
    """Stands for `AnnotationService.intake`, keeping what it was given."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, tuple[float, float] | None]] = []

    def intake(self, request: labels_pb2.LabelRequest, *, location: tuple[float, float] | None = None) -> Any:
        self.requests.append((request.event_id, location))
        return "taken"


class ArchivedUploads:
    """The `WindowUploads` port over a dict: (upload id) → upload, remembering every lookup."""

    def __init__(self, *uploads: upload_pb2.Upload) -> None:
        self.uploads = {upload.upload_id: upload for upload in uploads}
        self.lookups: list[tuple[str, datetime]] = []

    async def upload(self, lineage: common_pb2.Lineage, window_started_at: datetime) -> upload_pb2.Upload | None:
        self.lookups.append((lineage.upload_id, window_started_at))
        return self.uploads.get(lineage.upload_id)


def archived_upload() -> upload_pb2.Upload:
    upload = upload_pb2.Upload(upload_id="upload-1", device_id="device-1", started_at=timestamp_from_seconds(START))
    for second in range(10):
        upload.gps.append(upload_pb2.GpsFix(offset_ms=second * 1000, latitude=35 + second / 1000, longitude=139.0))
    return upload


def request(upload_id: str = "upload-1", *, window: bool = True, **fields: Any) -> labels_pb2.LabelRequest:
    values: dict[str, Any] = {"event_id": "request-1", "reason": labels_pb2.LABEL_REASON_UNCERTAIN, **fields}
    message = labels_pb2.LabelRequest(**values)
    message.lineage.window_id = "window-1"
    message.lineage.upload_id = upload_id
    message.lineage.device_id = "device-1"
    if window:
        message.window.started_at.CopyFrom(timestamp_from_seconds(START + 4))
        message.window.ended_at.CopyFrom(timestamp_from_seconds(START + 6))
    return message


def handle(service: TakenIn, message: labels_pb2.LabelRequest, windows: ArchivedUploads | None) -> Any:
    return asyncio.run(handle_label_request(cast(AnnotationService, service), message, windows))


def test_a_request_is_located_from_its_archived_upload_and_taken_in() -> None:
    service, windows = TakenIn(), ArchivedUploads(archived_upload())
    assert handle(service, request(), windows) == "taken"
    assert windows.lookups == [("upload-1", datetime.fromtimestamp(START + 4, UTC))]
    assert service.requests == [("request-1", (pytest.approx(35.005), 139.0))]


@pytest.mark.parametrize(
    ("message", "has_windows"),
    [
        (request("upload-elsewhere"), True),  # not archived
        (request(window=False), True),  # no window start: nothing to look up
        (request(), False),  # no archive
    ],
)
def test_a_request_without_a_location_is_taken_in_without_one(
    message: labels_pb2.LabelRequest, has_windows: bool
) -> None:
    service = TakenIn()
    windows = ArchivedUploads(archived_upload()) if has_windows else None
    handle(service, message, windows)
    assert service.requests == [("request-1", None)]


def test_a_request_that_cannot_become_a_task_is_refused_before_any_lookup() -> None:
    service, windows = TakenIn(), ArchivedUploads(archived_upload())
    gold_without_answer = request(reason=labels_pb2.LABEL_REASON_GOLD)
    with pytest.raises(Rejected) as refusal:
        handle(service, gold_without_answer, windows)
    assert refusal.value.reason == "invalid-request"
    assert windows.lookups == [] and service.requests == []
