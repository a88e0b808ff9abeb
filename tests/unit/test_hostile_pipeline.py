"""The whole pipeline against a hostile device: ingest's door, inference and scoring, in process, beside a normal one.

hypothesis makes uploads that protobuf accepts but no honest device sends — sequences up to 2^64-1,
timestamps and durations out of range, rates from 0 to 2^32, sample times that go backwards or jump
by days, NaN and infinite readings, arrays of unequal length, hundreds of GPS fixes at the poles,
unicode ids — all from one registered device. Each goes through ingest's own decoding and checks
(`decode_body`, `check_upload`): a refused one stops there with a 4xx reason. An accepted one is
analysed by inference (`process_uploads`, one `DeviceState` per device, as the stream worker keeps
them) and its outputs are scored (`ScoringHandlers` with in-memory tables), interleaved with a normal
device's drive. Asserted for every example:

- nothing but `UploadRefused` (4xx) escapes ingest, and nothing escapes inference or scoring;
- each hostile upload costs at most 1 s of CPU and 50 MB of extra peak memory in inference, and in
  scoring; the hostile device's inference state stays under 256 KiB;
- the normal device's detections and trip score are exactly what they are without the hostile device.
"""

from __future__ import annotations

import asyncio
import math
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context

from michi.bus.catalog import DETECTIONS, TRIP_SCORES, TRIP_SEGMENTS
from michi.bus.streams import Inbound
from michi.contracts import stable_event_id
from michi.contracts.v1 import scoring_pb2, upload_pb2
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.domain.state import DeviceState
from services.inference.handlers import InferencePipeline, process_uploads
from services.ingest.domain.validation import UploadLimits
from services.ingest.handlers import UploadRefused, check_upload, decode_body
from services.scoring.handlers import TRIP_OF_ANOTHER_DEVICE, ScoringHandlers

from ..scripted_drive import ScriptedDrive, ScriptedEvent
from .test_scoring_handlers import Journal, build

NORMAL, HOSTILE = "normal-1", "hostile-1"
PROTOBUF = "application/x-protobuf"
CPU_BOUND_S = 1.0
MEMORY_BOUND_BYTES = 50 * 1024 * 1024
STATE_BOUND_BYTES = 256 * 1024
UINT64 = 2**64 - 1
EXTREME_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1e38, -1e38, 159.9, -159.9, math.nan, math.inf, -math.inf]),
)


def drive(device_id: str, trip_id: str, start_s: float, events: list[ScriptedEvent]) -> list[upload_pb2.Upload]:
    scripted = ScriptedDrive(
        device_id=device_id,
        driver_id=f"driver-of-{device_id}",
        trip_id=trip_id,
        duration_s=60.0,
        start_time_s=start_s,
        events=events,
        seed=7,
    )
    return [received.upload for received in scripted.uploads()]


TURNS = [ScriptedEvent("turn", 2.0 + 7.0 * index, 5.0, 2.2 if index % 2 else -2.2) for index in range(5)]


@dataclass
class Run:
    """One pass of uploads through inference and scoring, and what came out for each device."""

    states: dict[str, DeviceState]
    handlers: ScoringHandlers
    journal: Journal
    pipeline: InferencePipeline
    detections: dict[str, list[tuple[str, int]]]

    @classmethod
    def start(cls, pipeline: InferencePipeline) -> Run:
        handlers, journal, _ = build()
        return cls({}, handlers, journal, pipeline, {NORMAL: [], HOSTILE: []})

    def analyse(self, upload: upload_pb2.Upload) -> None:
        received = upload_pb2.UploadReceived(event_id=stable_event_id("received", upload.upload_id), upload=upload)
        batch = process_uploads([received], self.states, self.pipeline)
        inputs: list[Inbound] = []
        for outcome in batch.uploads:
            assert outcome.failure is None, outcome.failure
            for detection in outcome.detections:
                self.detections.setdefault(detection.lineage.device_id, []).append(
                    (detection.event_id, detection.event_type)
                )
                inputs.append(_inbound(detection, detection.lineage.trip_id, DETECTIONS.base_name))
            segment = outcome.segment
            if segment.event_id:
                inputs.append(_inbound(segment, segment.lineage.trip_id, TRIP_SEGMENTS.base_name))
        detections = [item for item in inputs if item.topic == DETECTIONS.base_name]
        segments = [item for item in inputs if item.topic == TRIP_SEGMENTS.base_name]
        if detections:
            asyncio.run(self.handlers.on_detections(detections))
        if segments:
            asyncio.run(self.handlers.on_segments(segments))

    def trip_scores(self, trip_id: str) -> list[scoring_pb2.TripScore]:
        scores: list[scoring_pb2.TripScore] = self.journal.of("publish", TRIP_SCORES.base_name)  # type: ignore[assignment]
        return [score for score in scores if score.lineage.trip_id == trip_id]


def _inbound(message: Any, key: str, topic: str) -> Inbound:
    return Inbound(message, key, {}, topic, 0, 0, otel_context.Context())


def measured(action: Callable[[], None]) -> tuple[float, int]:
    """CPU seconds and peak traced bytes above the start of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    cpu = time.process_time()
    try:
        action()
    finally:
        spent = time.process_time() - cpu
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return spent, peak - base


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> InferencePipeline:
    return InferencePipeline(OnnxDetector(install_baseline_model(Path(tmp_path_factory.mktemp("models")))), None)


@pytest.fixture(scope="module")
def now_s() -> float:
    return time.time()


@pytest.fixture(scope="module")
def normal(now_s: float) -> list[upload_pb2.Upload]:
    return drive(NORMAL, "normal-trip", now_s - 600.0, [*TURNS, ScriptedEvent("harsh_braking", 45.2, 1.5, 5.5)])


@pytest.fixture(scope="module")
def reference(pipeline: InferencePipeline, normal: list[upload_pb2.Upload]) -> tuple[list[tuple[str, int]], Any]:
    run = Run.start(pipeline)
    for upload in normal:
        run.analyse(upload)
    (score,) = run.trip_scores("normal-trip")
    assert run.detections[NORMAL], "the normal drive must hold a detection to compare"
    return run.detections[NORMAL], _score_facts(score)


def _score_facts(score: scoring_pb2.TripScore) -> tuple[Any, ...]:
    return (
        score.event_id,
        round(score.score, 4),
        round(score.distance_km, 4),
        score.uploads,
        [(count.event_type, count.count) for count in score.event_counts],
        list(score.missing_sequences),
    )


@st.composite
def hostile_uploads(draw: st.DrawFn, template: upload_pb2.Upload) -> upload_pb2.Upload:
    """The template upload of the hostile device with a few fields made extreme."""
    upload = upload_pb2.Upload()
    upload.CopyFrom(template)
    mutations = draw(
        st.lists(
            st.sampled_from(
                [
                    "sequence",
                    "trip",
                    "started",
                    "rate",
                    "offsets",
                    "readings",
                    "lengths",
                    "gps",
                    "kinds",
                    "ids",
                    "span",
                ]
            ),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    imu = upload.imu
    count = len(imu.accel_x)
    if "sequence" in mutations:
        upload.sequence = draw(st.one_of(st.integers(0, UINT64), st.sampled_from([8_640, 8_641, 100_000, UINT64])))
        upload.trip_end = draw(st.booleans())
    if "trip" in mutations:
        upload.trip_id = draw(st.sampled_from(["normal-trip", template.trip_id, "x" * 128]))
    if "started" in mutations:
        upload.started_at.seconds = draw(st.integers(-(2**40), 2**40))
        upload.started_at.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    if "rate" in mutations:
        upload.sample_rate_hz = draw(st.integers(0, 2**32 - 1))
        upload.sample_rate_exact_hz = draw(EXTREME_FLOATS)
    if "offsets" in mutations:
        kind = draw(st.sampled_from(["backwards", "huge", "equal", "spread"]))
        offsets = list(imu.offset_ms)
        if kind == "backwards":
            offsets.reverse()
        elif kind == "huge":
            offsets[-1] = draw(st.integers(0, 2**32 - 1))
        elif kind == "equal":
            offsets = [offsets[0]] * count
        else:
            factor = draw(st.integers(2, 10_000))
            offsets = [offset * factor for offset in offsets]
        del imu.offset_ms[:]
        imu.offset_ms.extend(offsets)
    if "readings" in mutations:
        value = draw(EXTREME_FLOATS)
        where = draw(st.integers(0, count - 1))
        column = draw(st.sampled_from([imu.accel_x, imu.accel_y, imu.accel_z, imu.gyro_x]))
        if draw(st.booleans()):
            column[where] = value
        else:
            for index in range(count):
                column[index] = value
    if "lengths" in mutations:
        keep = draw(st.integers(0, count))
        column = draw(st.sampled_from(["accel_x", "gyro_z", "offset_ms"]))
        del getattr(imu, column)[keep:]
    if "gps" in mutations:
        fixes = draw(st.integers(0, 700))
        del upload.gps[:]
        latitude = draw(st.sampled_from([90.0, -90.0, 0.0, 89.999999]))
        for index in range(fixes):
            upload.gps.add(
                offset_ms=index * draw(st.sampled_from([0, 1, 100, 1000])),
                latitude=latitude,
                longitude=draw(st.sampled_from([180.0, -180.0, 0.0])),
                speed_mps=draw(st.sampled_from([0.0, 89.0, 1e9, math.nan])),
                heading_deg=draw(st.sampled_from([0.0, 359.9, 720.0, math.inf])),
            )
    if "kinds" in mutations:
        upload.gyroscope = draw(st.integers(0, 3))  # type: ignore[assignment]
        upload.acceleration_kind = draw(st.integers(0, 3))  # type: ignore[assignment]
    if "ids" in mutations:
        upload.upload_id = draw(st.one_of(st.just(template.upload_id), st.text(min_size=1, max_size=80)))
        upload.driver_id = draw(st.text(min_size=0, max_size=300))
        upload.firmware_version = draw(st.text(max_size=100))
    if "span" in mutations:
        # Many samples over a long time at the declared rate: the most the door lets through.
        rate = draw(st.sampled_from([10, 50, 400]))
        samples = draw(st.integers(10, 24_000))
        upload.sample_rate_hz = rate
        upload.sample_rate_exact_hz = 0.0
        del imu.offset_ms[:]
        imu.offset_ms.extend(round(index * 1000 / rate) for index in range(samples))
        for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
            values = list(getattr(imu, name))
            del getattr(imu, name)[:]
            getattr(imu, name).extend((values * (samples // max(len(values), 1) + 1))[:samples])
    return upload


def test_hostile_uploads_cannot_stop_or_change_what_a_normal_device_gets(
    pipeline: InferencePipeline,
    normal: list[upload_pb2.Upload],
    reference: tuple[list[tuple[str, int]], Any],
    now_s: float,
) -> None:
    template = drive(HOSTILE, "hostile-trip", now_s - 600.0, [ScriptedEvent("harsh_braking", 20.2, 1.5, 5.5)])[1]
    limits = UploadLimits()
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(hostile_uploads(template), min_size=1, max_size=4))
    def check(hostile: list[upload_pb2.Upload]) -> None:
        run = Run.start(pipeline)
        for index, upload in enumerate(normal):
            run.analyse(upload)
            if index < len(hostile):
                try:
                    body = hostile[index].SerializeToString()
                    decoded = decode_body(body, PROTOBUF, limits)
                    check_upload(decoded, HOSTILE, now_s, limits)
                except UploadRefused as refused:
                    assert 400 <= refused.status < 500 and refused.reason, refused
                    outcomes[refused.reason] = outcomes.get(refused.reason, 0) + 1
                    continue
                outcomes["accepted"] = outcomes.get("accepted", 0) + 1
                cpu, peak = measured(lambda upload=decoded: run.analyse(upload))
                assert cpu <= CPU_BOUND_S, (cpu, decoded.upload_id)
                assert peak <= MEMORY_BOUND_BYTES, (peak, decoded.upload_id)
                state = run.states.get(HOSTILE)
                assert state is None or len(state.to_bytes()) <= STATE_BOUND_BYTES
        cpu, peak = measured(lambda: asyncio.run(run.handlers.close_overdue_trips()))
        assert cpu <= CPU_BOUND_S and peak <= MEMORY_BOUND_BYTES
        # The normal device got exactly what it gets alone.
        expected_detections, expected_score = reference
        assert run.detections[NORMAL] == expected_detections
        scores = run.trip_scores("normal-trip")
        assert scores and _score_facts(scores[0]) == expected_score

    check()
    print(f"\nhostile uploads by outcome: {dict(sorted(outcomes.items()))}")
    # The property saw both doors: refusals, and hostile uploads that were let through and analysed.
    assert outcomes.get("accepted", 0) > 0 and sum(outcomes.values()) > outcomes.get("accepted", 0)


def test_another_device_cannot_write_into_a_devices_trip(
    pipeline: InferencePipeline, normal: list[upload_pb2.Upload], reference: tuple[list[tuple[str, int]], Any]
) -> None:
    """What the door lets through (sequence 8,640, trip_end) from another device, on the normal device's trip id."""
    run = Run.start(pipeline)
    hostile = upload_pb2.Upload()
    hostile.CopyFrom(normal[2])
    hostile.device_id, hostile.upload_id = HOSTILE, "hostile-upload"
    hostile.sequence, hostile.trip_end = 8_640, True
    for upload in normal:
        run.analyse(upload)
    cpu, peak = measured(lambda: run.analyse(hostile))
    assert cpu <= CPU_BOUND_S and peak <= MEMORY_BOUND_BYTES
    asyncio.run(run.handlers.close_overdue_trips())
    # The trip is the normal device's: the other device's segment is dead-lettered, its score unchanged.
    (score,) = run.trip_scores("normal-trip")
    assert _score_facts(score) == reference[1]
    assert run.journal.of("dead-letter", TRIP_SEGMENTS.base_name) == [TRIP_OF_ANOTHER_DEVICE]
