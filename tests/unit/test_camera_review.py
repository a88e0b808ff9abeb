"""The camera service asks people to review each camera detection: one `LabelRequest` per Detection, with what
scoring matches the label by (window id, detection id), the evidence frames, stable ids, published with the
detections before the media item is settled (docs/camera.md, *Review*).

The join runs with the fakes of tests/unit/test_camera_join.py (a fake analysis, real SQLite store).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from michi.contracts import stable_event_id
from michi.contracts.v1 import common_pb2, labels_pb2
from services.camera.adapters.store import DONE, WAITING
from services.camera.domain.review import review_priority
from services.camera.handlers import JoinBounds, MediaJoin

from .test_camera_join import SOURCE, Rig, media, upload


class FakeReviews:
    def __init__(self) -> None:
        self.published: list[labels_pb2.LabelRequest] = []
        self.fail = False

    def publish(self, requests: Sequence[labels_pb2.LabelRequest]) -> None:
        if self.fail:
            raise RuntimeError("broker away")
        self.published.extend(requests)


class ReviewRig(Rig):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.reviews = FakeReviews()
        self.join = MediaJoin(
            store=self.store,
            frames=self.frames,
            analyses=self.analyses,
            publisher=self.publisher,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            bounds=JoinBounds(interval_s=0.0),
            now=self.now,
            clock=self.tick,
            reviews=self.reviews,
        )


@pytest.fixture
def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    built = ReviewRig(tmp_path)
    yield built
    built.store.close()


def test_each_camera_detection_is_asked_for_with_what_scoring_matches_and_its_frames(rig: ReviewRig) -> None:
    rig.join.upload(upload())
    clip = media("inward_0.mp4", [0, 200, 400, 600])
    rig.join.media(clip, SOURCE)
    [detection] = rig.publisher.published
    [request] = rig.reviews.published
    assert request.reason == labels_pb2.LABEL_REASON_CAMERA_REVIEW
    # Scoring keys a verdict by the window id and matches it to the detection by the detection's event id.
    assert request.lineage == detection.lineage
    assert request.lineage.window_id and request.detection_event_id == detection.event_id
    assert request.suggested == common_pb2.EVENT_TYPE_DROWSINESS
    assert request.confidence == pytest.approx(detection.confidence)
    assert request.window == detection.window and request.occurred_at == detection.occurred_at
    assert request.camera == detection.camera
    assert list(request.camera.frame_offsets_ms) == [0, 200, 400]
    assert list(request.media_frame_offsets_ms) == [0, 200, 400, 600]
    assert request.event_id == stable_event_id("camera-review", detection.event_id)
    assert request.priority == review_priority(detection.confidence) == 55


def test_reviews_go_out_before_the_item_is_settled_and_a_redelivery_repeats_the_same_ids(rig: ReviewRig) -> None:
    rig.join.upload(upload())
    clip = media("inward_0.mp4", [0, 200, 400])
    rig.reviews.fail = True
    with pytest.raises(RuntimeError):
        rig.join.media(clip, SOURCE)
    # Not settled: the redelivery analyses it again and asks again, under the same ids.
    assert rig.store.media(clip.event_id).status == WAITING  # type: ignore[union-attr]
    rig.reviews.fail = False
    rig.join.media(clip, SOURCE)
    assert rig.store.media(clip.event_id).status == DONE  # type: ignore[union-attr]
    [request] = rig.reviews.published
    assert [detection.event_id for detection in rig.publisher.published] == [request.detection_event_id] * 2
    rig.join.media(clip, SOURCE)  # settled: nothing new
    assert len(rig.reviews.published) == 1


def test_no_detection_no_request_and_without_a_review_port_nobody_is_asked(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    reviewing = ReviewRig(tmp_path / "a")
    plain = Rig(tmp_path / "b")
    try:
        for built in (reviewing, plain):
            built.join.upload(upload())
            built.join.media(media("inward_0.jpg", [0]), SOURCE)  # one frame: no episode
        assert reviewing.reviews.published == [] and reviewing.publisher.published == []
        plain.join.media(media("inward_1.mp4", [200, 400]), SOURCE)
        assert len(plain.publisher.published) == 1  # detections as before, no review asked
    finally:
        reviewing.store.close()
        plain.store.close()


def test_less_confident_detections_are_served_first() -> None:
    priorities: list[Any] = [review_priority(confidence) for confidence in (-1.0, 0.0, 0.5, 0.999, 1.0, 7.0)]
    assert priorities == [100, 100, 75, 50, 50, 50]
