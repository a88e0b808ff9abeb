"""Inference serving from rollout plans, as a process against a real Kafka broker.

Models are built with `onnx.helper`, written into the blob store the service reads
(`<MICHI_HOME>/blobs`) under `models/michi-risk/<version>/model.onnx`, and rolled out by
publishing `RolloutPlan`s on `model-rollouts`:
(a) a hot swap in the middle of a stream of uploads: every upload gets exactly one segment, every
    window exactly one champion prediction from one version, every scripted event one detection;
(b) a shadow arm: SHADOW predictions and disagreement label requests appear, nothing of the shadow
    reaches the topics scoring reads (detections, trip segments); a champion whose artifact does
    not match its sha256 is refused and the served models stay;
(c) a canary plan with a rollout id: from the swap on, each device's predictions and detections come
    from its arm (CANARY and the canary's version, or CHAMPION), with the rollout id.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from michi.blobs.store import BlobStore
from michi.bus.catalog import DETECTIONS, LABEL_REQUESTS, MODEL_ROLLOUTS, PREDICTIONS, TRIP_SEGMENTS, UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.reader import Record, TopicReader, end_offsets
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, operations_pb2, upload_pb2
from michi.infra.processes import wait_until
from michi.rollouts.assignment import device_position
from michi.windows.features import FEATURE_NAMES
from michi.windows.model_spec import CLASS_EVENT_TYPES, MODEL_NAME
from services.inference.adapters.onnx_model import baseline_weights, build_baseline_model

from ..model_graphs import build_signals_model, rollout_plan, store_model
from ..scripted_drive import ScriptedDrive, ScriptedEvent
from .kafka_support import wait_until_committed
from .test_inference_service import running_service

pytestmark = pytest.mark.integration

BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
ACCELERATION = common_pb2.EVENT_TYPE_HARSH_ACCELERATION
VARIANT_CANARY = inference_pb2.VARIANT_CANARY
EVENTS = [
    ScriptedEvent("harsh_braking", 12.3, 1.5, 5.5),
    ScriptedEvent("harsh_acceleration", 42.3, 2.0, 4.2),
    ScriptedEvent("harsh_braking", 62.3, 1.5, 5.5),
]
WINDOWS_PER_UPLOAD = 9


def drives(count: int, duration_s: float) -> list[ScriptedDrive]:
    # Off the road map (no speed limits there): the only risky events are the scripted ones.
    return [
        ScriptedDrive(
            device_id=f"device-{index}",
            driver_id=f"driver-{index}",
            trip_id=f"trip-{index}",
            duration_s=duration_s,
            origin=(1.0, 1.0 + index * 0.01),
            seed=index + 1,
            events=[event for event in EVENTS if event.time_s < duration_s - 5.0],
        )
        for index in range(count)
    ]


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(condition, timeout):
        pytest.fail(f"timed out waiting for {what}")


def read_all(
    bootstrap: str, spec: object, prefix: str, done: Callable[[list[Record]], bool], timeout: float
) -> list[Record]:
    with TopicReader(bootstrap, spec, prefix) as reader:  # type: ignore[arg-type]
        records = reader.read_until(done, timeout=timeout)
        return records + reader.poll(1.0)


def segments_of(records: list[Record]) -> list[inference_pb2.TripSegment]:
    return [cast(inference_pb2.TripSegment, record.message) for record in records]


def swapped_baseline() -> bytes:
    """The baseline with harsh braking and harsh acceleration swapped: a shadow that disagrees on both."""
    weights, bias = baseline_weights()
    weights[:, [1, 2]] = weights[:, [2, 1]]
    bias[[1, 2]] = bias[[2, 1]]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "swapped",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(CLASS_EVENT_TYPES)])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    assert np.any(weights)
    return bytes(model.SerializeToString())


def test_hot_swap_under_a_live_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer
) -> None:
    store = BlobStore(f"file://{michi_home / 'blobs'}")
    first = asyncio.run(store_model(store, "1", build_baseline_model(1.2)))
    second = asyncio.run(store_model(store, "2", build_signals_model()))
    producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(1, first))
    fleet = drives(4, 80.0)
    rounds = [list(batch) for batch in zip(*(drive.uploads() for drive in fleet), strict=True)]
    assert len(rounds) == 8
    round_of = {received.upload.upload_id: index for index, batch in enumerate(rounds) for received in batch}

    def publish(batches: list[list[upload_pb2.UploadReceived]]) -> None:
        for batch in batches:
            for received in batch:
                producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
                time.sleep(0.05)

    with (
        running_service(kafka_bootstrap, topic_prefix, michi_home) as base,
        TopicReader(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix) as segment_reader,
    ):
        assert metric(base, "michi_inference_model_served", version="1", variant="champion") == 1
        seen: list[Record] = []
        publish(rounds[:3])
        seen += segment_reader.read_until(lambda records: len(records) >= 12, timeout=60)
        # Mid-stream: the new plan goes out while uploads keep coming.
        producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(2, second))
        publish(rounds[3:6])
        wait_for(
            lambda: metric(base, "michi_inference_model_served", version="2", variant="champion") == 1,
            60,
            "the swap to version 2",
        )
        publish(rounds[6:])
        seen += segment_reader.read_until(lambda records: len(seen) + len(records) >= 32, timeout=90)
        # Inference commits an upload only after its outputs are written: once every upload is
        # committed, reading the segments topic to its end sees every duplicate there will ever be.
        wait_until_committed(kafka_bootstrap, f"{topic_prefix}inference", [UPLOADS.name(topic_prefix)], timeout=60)
        written = sum(end_offsets(kafka_bootstrap, TRIP_SEGMENTS.name(topic_prefix)).values())
        seen += segment_reader.read_until(lambda records: len(seen) + len(records) >= written, timeout=30)
        assert len(seen) == written
        assert metric(base, "michi_inference_model_swaps_total") == 1
        assert metric(base, "michi_inference_model_served", version="1", variant="champion") == 0
        assert metric(base, "michi_inference_plan_revision") == 2

    segments = segments_of(seen)
    assert Counter(segment.lineage.upload_id for segment in segments) == Counter(dict.fromkeys(round_of, 1))
    detections = [
        cast(inference_pb2.Detection, record.message)
        for record in read_all(kafka_bootstrap, DETECTIONS, topic_prefix, lambda records: len(records) >= 12, 30)
    ]
    assert len({detection.event_id for detection in detections}) == len(detections) == 12
    by_trip: dict[str, list[int]] = defaultdict(list)
    for detection in sorted(detections, key=lambda d: d.window.started_at.seconds):
        by_trip[detection.lineage.trip_id].append(detection.event_type)
    assert by_trip == {drive.trip_id: [BRAKING, ACCELERATION, BRAKING] for drive in fleet}
    assert sorted(event_id for segment in segments for event_id in segment.detection_event_ids) == sorted(
        detection.event_id for detection in detections
    )
    predictions = [
        cast(inference_pb2.Prediction, record.message)
        for record in read_all(
            kafka_bootstrap, PREDICTIONS, topic_prefix, lambda records: len(records) >= 32 * WINDOWS_PER_UPLOAD, 60
        )
    ]
    assert len(predictions) == 32 * WINDOWS_PER_UPLOAD
    assert len({prediction.lineage.window_id for prediction in predictions}) == len(predictions)
    versions: dict[str, set[str]] = defaultdict(set)
    for prediction in predictions:
        versions[prediction.lineage.upload_id].add(prediction.lineage.model_version)
    assert all(len(found) == 1 for found in versions.values())  # one version per upload
    version_of = {upload_id: next(iter(found)) for upload_id, found in versions.items()}
    assert {version_of[upload_id] for upload_id, index in round_of.items() if index < 3} == {"1"}
    assert {version_of[upload_id] for upload_id, index in round_of.items() if index >= 6} == {"2"}
    for drive in fleet:  # per device (one partition, in order): v1 then v2, never back
        sequence = [version_of[received.upload.upload_id] for received in drive.uploads()]
        assert sequence == sorted(sequence)


def test_shadow_outputs_never_reach_the_scored_topics(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer
) -> None:
    store = BlobStore(f"file://{michi_home / 'blobs'}")
    champion = asyncio.run(store_model(store, "1", build_baseline_model(1.2)))
    shadow = asyncio.run(store_model(store, "2", swapped_baseline()))
    producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(3, champion, shadow))
    fleet = drives(2, 50.0)
    uploads = [received for drive in fleet for received in drive.uploads()]
    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        assert metric(base, "michi_inference_model_served", version="2", variant="shadow") == 1
        for received in uploads:
            producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
        segments = read_all(
            kafka_bootstrap, TRIP_SEGMENTS, topic_prefix, lambda records: len(records) >= len(uploads), 90
        )
        # A new champion whose blob is not what the registry recorded: refused, the served models stay.
        tampered = asyncio.run(store_model(store, "3", build_signals_model()))
        tampered.sha256 = "0" * 64
        producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(4, tampered, shadow))
        wait_for(
            lambda: (
                metric(base, "michi_inference_models_refused_total", reason="sha256-mismatch", variant="champion") == 1
            ),
            30,
            "the refusal",
        )
        assert metric(base, "michi_inference_model_served", version="1", variant="champion") == 1
        assert metric(base, "michi_inference_model_served", version="2", variant="shadow") == 1
        assert metric(base, "michi_inference_plan_revision") == 3
        disagreements = metric(base, "michi_inference_shadow_disagreements_total")

    assert len(segments) == len(uploads)
    windows = len(uploads) * WINDOWS_PER_UPLOAD
    predictions = [
        cast(inference_pb2.Prediction, record.message)
        for record in read_all(kafka_bootstrap, PREDICTIONS, topic_prefix, lambda r: len(r) >= 2 * windows, 60)
    ]
    by_variant = Counter((p.variant, p.lineage.model_version) for p in predictions)
    assert by_variant == {(inference_pb2.VARIANT_CHAMPION, "1"): windows, (inference_pb2.VARIANT_SHADOW, "2"): windows}
    detections = [
        cast(inference_pb2.Detection, record.message)
        for record in read_all(kafka_bootstrap, DETECTIONS, topic_prefix, lambda r: len(r) >= 4, 30)
    ]
    # Only the champion's: the shadow would have called each of these the other way round.
    assert sorted((d.lineage.trip_id, d.event_type) for d in detections) == sorted(
        (drive.trip_id, kind) for drive in fleet for kind in (BRAKING, ACCELERATION)
    )
    assert {(d.variant, d.lineage.model_version) for d in detections} == {(inference_pb2.VARIANT_CHAMPION, "1")}
    listed = {event_id for segment in segments_of(segments) for event_id in segment.detection_event_ids}
    assert listed == {d.event_id for d in detections}
    requests = [
        cast(labels_pb2.LabelRequest, record.message)
        for record in read_all(kafka_bootstrap, LABEL_REQUESTS, topic_prefix, lambda r: len(r) >= 4, 30)
    ]
    shadow_requests = [r for r in requests if r.reason == labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT]
    assert {(r.suggested, r.alternative) for r in shadow_requests} == {(BRAKING, ACCELERATION), (ACCELERATION, BRAKING)}
    assert {r.detection_event_id for r in shadow_requests} <= {d.event_id for d in detections}
    assert disagreements >= len(shadow_requests) >= 4


def test_redelivery_after_a_swap_and_a_restart_replays_with_the_first_version(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer
) -> None:
    store = BlobStore(f"file://{michi_home / 'blobs'}")
    first = asyncio.run(store_model(store, "1", build_baseline_model(1.2)))
    second = asyncio.run(store_model(store, "2", build_baseline_model(0.8)))
    producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(1, first))
    uploads = drives(1, 30.0)[0].uploads()
    brake = uploads[1]  # holds the brake at 12.3 s

    def segments_for(records: list[Record]) -> list[inference_pb2.TripSegment]:
        return [segment for segment in segments_of(records) if segment.lineage.upload_id == brake.upload.upload_id]

    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        for received in uploads:
            producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
        original = read_all(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix, lambda r: len(r) >= 3, 60)
        producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(2, second))
        wait_for(
            lambda: metric(base, "michi_inference_model_served", version="2", variant="champion") == 1, 30, "the swap"
        )
        producer.publish_and_wait(UPLOADS, brake.upload.device_id, brake)
        after_swap = read_all(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix, lambda r: len(r) >= 4, 60)
    # A new process serves version 2 only; the replay memory says version 1 handled the upload, and
    # an earlier plan on the topic says where version 1 is: it is loaded for the replay.
    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        assert metric(base, "michi_inference_model_served", version="2", variant="champion") == 1
        producer.publish_and_wait(UPLOADS, brake.upload.device_id, brake)
        after_restart = read_all(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix, lambda r: len(r) >= 5, 60)
        assert metric(base, "michi_inference_uploads_total", outcome="replayed") == 1
        assert metric(base, "michi_inference_replay_model_missing_total") == 0

    repeated = segments_for(after_restart)
    assert len(segments_for(original)) == 1 and len(segments_for(after_swap)) == 2 and len(repeated) == 3
    assert len({segment.SerializeToString() for segment in repeated}) == 1
    assert repeated[0].detection_count == 1
    predictions = [
        cast(inference_pb2.Prediction, record.message)
        for record in read_all(kafka_bootstrap, PREDICTIONS, topic_prefix, lambda r: len(r) >= 5 * 9, 30)
    ]
    of_brake = [p for p in predictions if p.lineage.upload_id == brake.upload.upload_id]
    assert len(of_brake) == 3 * WINDOWS_PER_UPLOAD
    assert len({p.event_id for p in of_brake}) == WINDOWS_PER_UPLOAD  # the same ids three times...
    assert {p.lineage.model_version for p in of_brake} == {"1"}  # ...from the version that first handled it
    detections = read_all(kafka_bootstrap, DETECTIONS, topic_prefix, lambda r: len(r) >= 3, 30)
    assert len({cast(inference_pb2.Detection, record.message).event_id for record in detections}) == 1


def test_canary_plan_under_a_live_stream_splits_devices_between_the_arms(
    kafka_bootstrap: str, topic_prefix: str, michi_home: Path, producer: EventProducer
) -> None:
    """(c) a canary plan with a rollout id, published mid-stream: each device's uploads go to one arm from then on."""
    store = BlobStore(f"file://{michi_home / 'blobs'}")
    champion = asyncio.run(store_model(store, "1", build_baseline_model(1.2)))
    canary = asyncio.run(store_model(store, "2", build_baseline_model(0.8)))
    producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, rollout_plan(1, champion))
    fleet = drives(6, 40.0)  # one brake each, at 12.3 s (the second upload)
    # A rollout id that puts devices of this small fleet on both arms of a 50/50 split.
    rollout_id = next(
        candidate
        for candidate in (f"rollout-it-{number}" for number in range(100))
        if 2 <= sum(device_position(candidate, drive.device_id) < 0.5 for drive in fleet) <= 4
    )
    arm_of = {
        drive.device_id: (VARIANT_CANARY, "2")
        if device_position(rollout_id, drive.device_id) < 0.5
        else (inference_pb2.VARIANT_CHAMPION, "1")
        for drive in fleet
    }
    plan = rollout_plan(2, champion)
    plan.rollout_id, plan.strategy = rollout_id, operations_pb2.ROLLOUT_STRATEGY_CANARY
    plan.arms.insert(0, operations_pb2.RolloutArm(model=canary, variant=VARIANT_CANARY, traffic_share=0.5))
    plan.arms[1].traffic_share = 0.5
    rounds = [list(batch) for batch in zip(*(drive.uploads() for drive in fleet), strict=True)]
    uploads = [received for batch in rounds for received in batch]

    with running_service(kafka_bootstrap, topic_prefix, michi_home) as base:
        for received in rounds[0]:
            producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
        read_all(kafka_bootstrap, TRIP_SEGMENTS, topic_prefix, lambda records: len(records) >= len(fleet), 60)
        producer.publish_and_wait(MODEL_ROLLOUTS, MODEL_NAME, plan)
        wait_for(
            lambda: metric(base, "michi_inference_model_served", version="2", variant="canary") == 1, 60, "the canary"
        )
        assert metric(base, "michi_inference_arm_share", version="2", variant="canary", rollout_id=rollout_id) == 0.5
        assert metric(base, "michi_inference_arm_share", version="1", variant="champion", rollout_id=rollout_id) == 0.5
        for batch in rounds[1:]:
            for received in batch:
                producer.publish_and_wait(UPLOADS, received.upload.device_id, received)
        segments = read_all(
            kafka_bootstrap, TRIP_SEGMENTS, topic_prefix, lambda records: len(records) >= len(uploads), 90
        )
        canary_uploads = metric(base, "michi_inference_arm_uploads_total", version="2", variant="canary")

    assert Counter(segment.lineage.upload_id for segment in segments_of(segments)) == Counter(
        received.upload.upload_id for received in uploads
    )
    assert canary_uploads == sum(arm[1] == "2" for arm in arm_of.values()) * (len(rounds) - 1)
    predictions = [
        cast(inference_pb2.Prediction, record.message)
        for record in read_all(
            kafka_bootstrap, PREDICTIONS, topic_prefix, lambda r: len(r) >= len(uploads) * WINDOWS_PER_UPLOAD, 60
        )
    ]
    first_round = {received.upload.upload_id for received in rounds[0]}
    arms: dict[str, set[tuple[int, str, str]]] = defaultdict(set)
    for prediction in predictions:
        arms[prediction.lineage.upload_id].add(
            (prediction.variant, prediction.lineage.model_version, prediction.rollout_id)
        )
    for received in uploads:
        expected = (
            (inference_pb2.VARIANT_CHAMPION, "1", "")
            if received.upload.upload_id in first_round
            else (*arm_of[received.upload.device_id], rollout_id)
        )
        assert arms[received.upload.upload_id] == {expected}, received.upload.upload_id
    assert {variant for found in arms.values() for variant, _, _ in found} == {
        inference_pb2.VARIANT_CHAMPION,
        VARIANT_CANARY,
    }
    detections = [
        cast(inference_pb2.Detection, record.message)
        for record in read_all(kafka_bootstrap, DETECTIONS, topic_prefix, lambda r: len(r) >= len(fleet), 30)
    ]
    assert sorted(
        (d.lineage.device_id, d.variant, d.lineage.model_version, d.rollout_id) for d in detections
    ) == sorted((device, *arm, rollout_id) for device, arm in arm_of.items())
