"""Gold label requests from simulator ground truth: the right window, the known answer, published once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from michi.cli.platform import GoldPublisher
from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import labels_pb2
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig
from michi.simulator.gold import GOLD_KINDS, gold_request, sampled_for_gold
from michi.simulator.truth import EVENT_TYPE_BY_KIND
from michi.windows.features import window_id, window_offsets


@dataclass
class Result:
    upload_id: str
    outcome: str = "accepted"


class CapturingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, str, labels_pb2.LabelRequest]] = []

    def publish(self, spec: Any, key: str, message: labels_pb2.LabelRequest) -> None:
        self.sent.append((spec, key, message))


def simulated() -> tuple[FleetSimulator, list[Any]]:
    simulator = FleetSimulator(SimulationConfig(devices=4, duration_s=600.0, seed=5), road_map=RoadMap.default())
    return simulator, list(simulator.uploads())


def test_gold_windows_are_inference_windows_covering_the_event() -> None:
    simulator, uploads = simulated()
    starts = {upload.upload_id: timestamp_to_seconds(upload.started_at) for upload in uploads}
    windows_of = {
        upload.upload_id: {window_id(upload.upload_id, float(start)) for start in window_offsets(10.0)[0]}
        for upload in uploads
    }
    judged = [event for event in simulator.ground_truth if event.kind in GOLD_KINDS]
    assert len(judged) >= 5
    for event in judged:
        request = gold_request(event, starts, 10.0)
        assert request is not None
        assert request.reason == labels_pb2.LABEL_REASON_GOLD
        assert request.known_answer == EVENT_TYPE_BY_KIND[event.kind]
        assert request.lineage.upload_id in event.upload_ids
        assert request.lineage.window_id in windows_of[request.lineage.upload_id]
        middle = (event.started_at + event.ended_at) / 2.0
        start, end = timestamp_to_seconds(request.window.started_at), timestamp_to_seconds(request.window.ended_at)
        assert end - start == 2.0
        assert start - 1.0 <= middle <= end + 1.0
    speeding = [event for event in simulator.ground_truth if event.kind == "speeding"]
    assert all(gold_request(event, starts, 10.0) is None for event in speeding)


def test_publisher_waits_for_every_upload_and_publishes_each_sample_once() -> None:
    simulator, uploads = simulated()
    producer = CapturingProducer()
    publisher = GoldPublisher(producer, rate=1.0)  # type: ignore[arg-type]
    publisher.upload_starts.update({upload.upload_id: timestamp_to_seconds(upload.started_at) for upload in uploads})
    events = simulator.ground_truth
    publisher.accepted(Result(uploads[0].upload_id, "refused"), events, 10.0)
    assert producer.sent == []
    for upload in uploads:
        publisher.accepted(Result(upload.upload_id), events, 10.0)
    for upload in uploads[:5]:
        publisher.accepted(Result(upload.upload_id, "duplicate"), events, 10.0)
    judged = [event for event in events if event.kind in GOLD_KINDS]
    assert len(producer.sent) == len(judged) == publisher.published
    assert len({message.event_id for _, _, message in producer.sent}) == len(judged)
    assert all(key == message.lineage.window_id for _, key, message in producer.sent)


def test_sampling_is_a_stable_share() -> None:
    ids = [f"event-{index}" for index in range(10_000)]
    share = sum(sampled_for_gold(event_id, 0.3) for event_id in ids) / len(ids)
    assert 0.27 < share < 0.33
    assert not any(sampled_for_gold(event_id, 0.0) for event_id in ids)
