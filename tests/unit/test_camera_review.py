"""The camera service asks people to review each camera detection: one `LabelRequest` per Detection, with what
scoring matches the label by (window id, detection id), the evidence frames, stable ids, published with the
detections before the media item is settled (docs/camera.md, *Review*); or a share of them, chosen by a hash of
the detection's event id (the same choice on a redelivery), per event type, the least confident always.

The join runs with the fakes of tests/unit/test_camera_join.py (a fake analysis, real SQLite store).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from michi.contracts import stable_event_id
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from services.camera.adapters.store import DONE, WAITING
from services.camera.domain.review import ReviewSampling, review_priority, review_sample_point
from services.camera.handlers import JoinBounds, MediaJoin
from services.camera.settings import CameraSettings
from services.camera.wiring import review_sampling_of

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
    def __init__(self, tmp_path: Path, sampling: ReviewSampling | None = None) -> None:
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
            review_sampling=sampling,
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


# --- sampling: a share of the detections, chosen by their event ids


def detection(event_id: str, event_type: int = common_pb2.EVENT_TYPE_DROWSINESS, confidence: float = 0.9) -> Any:
    return inference_pb2.Detection(event_id=event_id, event_type=event_type, confidence=confidence)  # type: ignore[arg-type]


IDS = [
    stable_event_id("camera-detection", f"upload-{index}", "inward_0.mp4", "b" * 64, "drowsiness", 0)
    for index in range(10_000)
]


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_the_share_asked_for_is_the_share_set_within_two_points_over_ten_thousand_detections(share: float) -> None:
    sampling = ReviewSampling(share=share)
    asked = sum(sampling.asks_for(detection(event_id)) for event_id in IDS)
    assert abs(asked / len(IDS) - share) <= 0.02
    if share in (0.0, 1.0):
        assert asked == share * len(IDS)  # exactly none, exactly all


def test_the_choice_is_a_function_of_the_event_id_alone() -> None:
    half = ReviewSampling(share=0.5)
    choices = [half.asks_for(detection(event_id)) for event_id in IDS[:200]]
    # The same detection (another replica, a restart, a redelivery) gets the same answer, from a fixed hash.
    assert choices == [ReviewSampling(share=0.5).asks_for(detection(event_id)) for event_id in IDS[:200]]
    assert choices == [review_sample_point(event_id) < 0.5 for event_id in IDS[:200]]
    assert min(map(review_sample_point, IDS)) >= 0.0 and max(map(review_sample_point, IDS)) < 1.0
    # A larger share asks for a superset: raising it never drops a detection that was asked for.
    for event_id in IDS[:500]:
        if ReviewSampling(share=0.2).asks_for(detection(event_id)):
            assert ReviewSampling(share=0.6).asks_for(detection(event_id))


def test_a_share_per_event_type_and_the_least_confident_always() -> None:
    sampling = ReviewSampling(share=1.0, share_by_event_type={"tailgating": 0.0}, always_below_confidence=0.6)
    for event_id in IDS[:100]:
        assert sampling.asks_for(detection(event_id, common_pb2.EVENT_TYPE_DROWSINESS))
        assert not sampling.asks_for(detection(event_id, common_pb2.EVENT_TYPE_TAILGATING, confidence=0.6))
        assert sampling.asks_for(detection(event_id, common_pb2.EVENT_TYPE_TAILGATING, confidence=0.59))
    tailgating = ReviewSampling(share=0.0, share_by_event_type={"tailgating": 0.5})
    asked = sum(tailgating.asks_for(detection(event_id, common_pb2.EVENT_TYPE_TAILGATING)) for event_id in IDS)
    assert abs(asked / len(IDS) - 0.5) <= 0.02
    assert not any(tailgating.asks_for(detection(event_id, common_pb2.EVENT_TYPE_DISTRACTION)) for event_id in IDS)


def test_the_settings_default_to_every_detection_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert review_sampling_of(CameraSettings()) == ReviewSampling(1.0, {}, 0.0)
    monkeypatch.setenv("MICHI_CAMERA_REVIEW_SHARE", "0.25")
    monkeypatch.setenv("MICHI_CAMERA_REVIEW_SHARE_BY_EVENT_TYPE", '{"tailgating": 0.05}')
    monkeypatch.setenv("MICHI_CAMERA_REVIEW_BELOW_CONFIDENCE", "0.6")
    assert review_sampling_of(CameraSettings()) == ReviewSampling(0.25, {"tailgating": 0.05}, 0.6)
    monkeypatch.setenv("MICHI_CAMERA_REVIEW_SHARE_BY_EVENT_TYPE", '{"speeding": 0.5}')
    with pytest.raises(ValueError, match="tailgating"):
        CameraSettings()
    monkeypatch.setenv("MICHI_CAMERA_REVIEW_SHARE_BY_EVENT_TYPE", "{}")
    monkeypatch.setenv("MICHI_CAMERA_REVIEW_SHARE", "1.5")
    with pytest.raises(ValueError, match="camera_review_share"):
        CameraSettings()


def drivers_clips(built: ReviewRig, count: int) -> list[upload_pb2.MediaReceived]:
    """One detection from each of `count` drivers' inward clips (the fake analysis: one episode per stream)."""
    clips = []
    for index in range(count):
        upload_id = f"upload-{index}"
        built.join.upload(upload(upload_id=upload_id, driver_id=f"driver-{index}"))
        clip = media("inward_0.mp4", [0, 200, 400], upload_id=upload_id)
        built.join.media(clip, SOURCE)
        clips.append(clip)
    return clips


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_join_asks_for_the_sampled_detections_and_counts_the_others(tmp_path: Path, share: float) -> None:
    built = ReviewRig(tmp_path, ReviewSampling(share=share))
    try:
        clips = drivers_clips(built, 40)
        detections = built.publisher.published
        assert len(detections) == 40  # every detection is published and scored whatever the share
        expected = [item.event_id for item in detections if review_sample_point(item.event_id) < share]
        assert [request.detection_event_id for request in built.reviews.published] == expected
        expected_count = {0.0: range(0, 1), 0.5: range(10, 31), 1.0: range(40, 41)}[share]
        assert len(expected) in expected_count
        counted = {
            decision: built.metric(
                "michi_camera_review_decisions_total", {"event_type": "EVENT_TYPE_DROWSINESS", "decision": decision}
            )
            for decision in ("reviewed", "skipped")
        }
        assert counted == {"reviewed": len(expected), "skipped": 40 - len(expected)}
        # Redelivered: settled, nothing asked or counted again.
        for clip in clips:
            built.join.media(clip, SOURCE)
        assert len(built.reviews.published) == len(expected)
    finally:
        built.store.close()


def test_a_detection_analysed_again_after_a_crash_makes_the_same_choice(tmp_path: Path) -> None:
    built = ReviewRig(tmp_path, ReviewSampling(share=0.5))
    try:
        built.reviews.fail = True  # the broker goes away after the detections: an item asked for stays waiting
        failed = []
        for index in range(20):
            upload_id = f"upload-{index}"
            built.join.upload(upload(upload_id=upload_id, driver_id=f"driver-{index}"))
            try:
                built.join.media(media("inward_0.mp4", [0, 200, 400], upload_id=upload_id), SOURCE)
            except RuntimeError:
                failed.append(index)
        first = [item.event_id for item in built.publisher.published]
        # Only the items whose detection was chosen needed the broker; the others were settled at once.
        assert failed == [index for index in range(20) if review_sample_point(first[index]) < 0.5]
        assert 0 < len(failed) < 20
        built.reviews.fail = False
        for index in failed:  # Kafka redelivers them
            built.join.media(media("inward_0.mp4", [0, 200, 400], upload_id=f"upload-{index}"), SOURCE)
        again = [item.event_id for item in built.publisher.published[20:]]
        assert again == [first[index] for index in failed]  # the same detections, the same ids, the same choice
        assert [request.detection_event_id for request in built.reviews.published] == again
        counted = {
            decision: built.metric(
                "michi_camera_review_decisions_total", {"event_type": "EVENT_TYPE_DROWSINESS", "decision": decision}
            )
            for decision in ("reviewed", "skipped")
        }
        assert counted == {"reviewed": len(failed), "skipped": 20 - len(failed)}
    finally:
        built.store.close()
