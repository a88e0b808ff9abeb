"""Warehouse: protobuf-to-row mapping (4w2v), idempotent file keys, Parquet + DuckDB round trip, commit order."""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import TopicPartition
from opentelemetry import trace
from typer.testing import CliRunner

from michi.blobs import BlobStore
from michi.bus.catalog import DETECTIONS, PREDICTIONS
from michi.bus.headers import build_headers
from michi.cli import app
from michi.contracts import timestamp_from_datetime
from michi.contracts.v1 import common_pb2, inference_pb2
from michi.warehouse import (
    CLASS_NAMES,
    DETECTION,
    PREDICTION,
    WAREHOUSE_SCHEMA,
    detection_row,
    part_key,
    prediction_row,
    query,
    rows_to_table,
    table_counts,
)
from michi.warehouse.reports import shadow_comparison
from services.warehouse.adapters.parquet import BlobParquetWriter
from services.warehouse.domain.batches import PartitionBuffer
from services.warehouse.entrypoints.consumer import WarehouseSink
from services.warehouse.handlers import Source
from services.warehouse.metrics import WarehouseMetrics
from tests.fakes import ScriptedPolls

from .test_kit_consumer import recorded_spans, upload_headers

MOMENT = datetime(2026, 11, 28, 13, 45, 7, tzinfo=UTC)


def lineage(trip: str = "trip-1") -> common_pb2.Lineage:
    return common_pb2.Lineage(
        upload_id="upload-1",
        window_id="window-1",
        trip_id=trip,
        device_id="device-1",
        driver_id="driver-1",
        model_name="baseline",
        model_version="3",
        data_version="data-abc",
        trace_id="0" * 32,
    )


def window() -> common_pb2.TimeSpan:
    return common_pb2.TimeSpan(
        started_at=timestamp_from_datetime(MOMENT), ended_at=timestamp_from_datetime(MOMENT.replace(second=9))
    )


def make_prediction(event_id: str = "prediction-1", moment: datetime = MOMENT) -> inference_pb2.Prediction:
    return inference_pb2.Prediction(
        event_id=event_id,
        occurred_at=timestamp_from_datetime(moment),
        lineage=lineage(),
        predicted=common_pb2.EVENT_TYPE_HARSH_BRAKING,
        confidence=0.75,
        scores=[
            inference_pb2.ClassScore(event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING, probability=0.75),
            inference_pb2.ClassScore(event_type=common_pb2.EVENT_TYPE_NORMAL, probability=0.25),
        ],
        window=window(),
        location=common_pb2.GeoPoint(latitude=35.68, longitude=139.76),
        speed_mps=12.5,
        variant=inference_pb2.VARIANT_SHADOW,
        features={"peak_decel": 4.5, "jerk": 1.25},
        sample_rate_hz=100,
        vehicle_type="van",
        firmware_version="1.2.3",
        calibration=common_pb2.CalibrationSummary(
            state=common_pb2.CALIBRATION_STATE_GRAVITY_ONLY,
            gravity_confidence=1.0,
            forward_confidence=0.25,
            forward_method="stops",
        ),
        gps_available=True,
        sample_rate_exact_hz=100.5,
    )


def make_detection(event_id: str = "detection-1", trip: str = "trip-1") -> inference_pb2.Detection:
    return inference_pb2.Detection(
        event_id=event_id,
        occurred_at=timestamp_from_datetime(MOMENT),
        lineage=lineage(trip),
        event_type=common_pb2.EVENT_TYPE_SPEEDING,
        confidence=0.5,
        window=window(),
        location=common_pb2.GeoPoint(latitude=35.0, longitude=139.0),
        speed_mps=30.0,
        speed_limit_mps=25.0,
        peak_value=5.0,
        variant=inference_pb2.VARIANT_CHAMPION,
        features={"over_limit": 5.0},
        detector="map:speed-limit",
    )


def test_prediction_row_carries_every_4w2v_column() -> None:
    row = prediction_row(make_prediction(), topic="michi.predictions.v1", partition=2, offset=41)

    assert set(row) == set(WAREHOUSE_SCHEMA.names)
    assert row["record_kind"] == PREDICTION
    assert row["occurred_at"] == MOMENT
    assert (row["window_started_at"], row["window_ended_at"]) == (MOMENT, MOMENT.replace(second=9))
    assert (row["device_id"], row["driver_id"], row["trip_id"]) == ("device-1", "driver-1", "trip-1")
    assert (row["upload_id"], row["window_id"]) == ("upload-1", "window-1")
    assert (row["latitude"], row["longitude"]) == (35.68, 139.76)
    assert row["event_type"] == "harsh_braking"
    assert row["confidence"] == 0.75
    assert row["probabilities"] == {name: 0.0 for name in CLASS_NAMES} | {"harsh_braking": 0.75, "normal": 0.25}
    assert (row["model_name"], row["model_version"], row["data_version"]) == ("baseline", "3", "data-abc")
    assert row["variant"] == "shadow"
    assert (row["speed_mps"], row["speed_limit_mps"], row["sample_rate_hz"]) == (12.5, None, 100)
    assert (row["vehicle_type"], row["firmware_version"]) == ("van", "1.2.3")
    assert dict(row["features"]) == {"peak_decel": 4.5, "jerk": 1.25}
    assert (row["calibration_state"], row["forward_method"], row["gps_available"]) == ("gravity-only", "stops", True)
    assert (row["gravity_confidence"], row["forward_confidence"], row["sample_rate_exact_hz"]) == (1.0, 0.25, 100.5)
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == ("michi.predictions.v1", 2, 41)
    assert row["rollout_id"] is None  # routed by no rollout
    assert rows_to_table([row]).num_rows == 1
    canary = make_prediction()
    canary.variant, canary.rollout_id = inference_pb2.VARIANT_CANARY, "rollout-7f3a"
    assert (prediction_row(canary)["variant"], prediction_row(canary)["rollout_id"]) == ("canary", "rollout-7f3a")


def test_detection_row_carries_every_4w2v_column() -> None:
    row = detection_row(make_detection(), topic="michi.detections.v1", partition=1, offset=7)

    assert set(row) == set(WAREHOUSE_SCHEMA.names)
    assert row["record_kind"] == DETECTION
    assert row["event_type"] == "speeding"
    assert (row["speed_mps"], row["speed_limit_mps"], row["peak_value"]) == (30.0, 25.0, 5.0)
    assert (row["variant"], row["detector"]) == ("champion", "map:speed-limit")
    assert row["probabilities"] is None and row["sample_rate_hz"] is None
    # A map rule has no mount calibration: the columns stay empty.
    assert row["calibration_state"] is None and row["gps_available"] is None
    assert (row["model_version"], row["data_version"], row["trip_id"]) == ("3", "data-abc", "trip-1")
    assert row["hindsight"] is False and prediction_row(make_prediction())["hindsight"] is None
    assert rows_to_table([row]).num_rows == 1


def test_a_detection_in_hindsight_and_one_without_a_place_are_told_apart() -> None:
    detection = make_detection()
    detection.hindsight = True
    detection.ClearField("location")  # the upload carried no GPS fix
    row = detection_row(detection)
    assert row["hindsight"] is True
    assert (row["latitude"], row["longitude"]) == (None, None)


def test_files_written_before_a_column_existed_read_it_as_null(tmp_path: Path) -> None:
    blob_url = f"file://{tmp_path / 'blobs'}"
    writer = BlobParquetWriter(BlobStore(blob_url))
    row = detection_row(make_detection("detection-old"))
    older = pa.schema([field for field in WAREHOUSE_SCHEMA if field.name != "hindsight"])
    older_row = {name: value for name, value in row.items() if name != "hindsight"}
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([older_row], schema=older), buffer)
    asyncio.run(BlobStore(blob_url).put_bytes(part_key(DETECTION, MOMENT, 0, 0), buffer.getvalue()))
    # Only old files: the column is there, null.
    assert query("SELECT event_id, hindsight FROM detections", blob_url) == [
        {"event_id": "detection-old", "hindsight": None}
    ]
    # Old and new files together.
    writer.write(part_key(DETECTION, MOMENT, 0, 1), [detection_row(make_detection("detection-new"))])
    answer = query("SELECT event_id, hindsight FROM detections ORDER BY event_id", blob_url)
    assert answer == [
        {"event_id": "detection-new", "hindsight": False},
        {"event_id": "detection-old", "hindsight": None},
    ]


def test_file_key_depends_only_on_first_record() -> None:
    key = part_key(PREDICTION, MOMENT, 3, 120)

    assert key == "warehouse/predictions/date=2026-11-28/hour=13/part-120-3.parquet"
    assert part_key(PREDICTION, MOMENT.replace(minute=59), 3, 120) == key
    assert part_key(DETECTION, MOMENT, 3, 120).startswith("warehouse/detections/")


def test_buffer_is_cut_per_hour_and_commits_past_dead_letters() -> None:
    buffer = PartitionBuffer(PREDICTION, "topic", 0, opened_at=0.0)
    buffer.add(prediction_row(make_prediction("a"), offset=10), 10)
    buffer.add(prediction_row(make_prediction("b"), offset=11), 11)
    buffer.add(prediction_row(make_prediction("c", MOMENT.replace(hour=14)), offset=12), 12)
    buffer.add(None, 13)  # dead-lettered

    runs = buffer.file_runs()

    assert [run.key.rsplit("/", 2)[-2:] for run in runs] == [
        ["hour=13", "part-10-0.parquet"],
        ["hour=14", "part-12-0.parquet"],
    ]
    assert [len(run.rows) for run in runs] == [2, 1]
    assert [run.commit_offset for run in runs] == [12, 14]


def test_rewriting_a_file_replaces_its_rows(tmp_path: Path) -> None:
    blob_url = f"file://{tmp_path / 'blobs'}"
    writer = BlobParquetWriter(BlobStore(blob_url))
    rows = [detection_row(make_detection(f"detection-{index}"), offset=index) for index in range(3)]
    key = part_key(DETECTION, MOMENT, 0, 0)

    assert table_counts(blob_url) == {"predictions": 0, "detections": 0}
    writer.write(key, rows[:2])
    writer.write(key, rows)  # a redelivered batch that read further

    assert table_counts(blob_url) == {"predictions": 0, "detections": 3}
    answer = query(
        "SELECT event_id, model_version, data_version, date, hour FROM detections ORDER BY event_id", blob_url
    )
    assert [row["event_id"] for row in answer] == ["detection-0", "detection-1", "detection-2"]
    assert answer[0]["date"] == MOMENT.date() and answer[0]["hour"] == 13


class FakeMessage:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes,
        schema: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._coordinates = (topic, partition, offset)
        self._value = value
        self._headers = build_headers(schema) if headers is None else headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._coordinates[0]

    def partition(self) -> int:
        return self._coordinates[1]

    def offset(self) -> int:
        return self._coordinates[2]

    def key(self) -> bytes:
        return b"key"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class FakeConsumer(ScriptedPolls):
    """Subscribing assigns partitions 0-2 of every topic at once (the loop commits only partitions it holds)."""

    def __init__(self, journal: list[Any], batches: list[list[FakeMessage]]) -> None:
        self.journal = journal
        super().__init__(batches)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.journal.append(("subscribe", sorted(topics)))
        callbacks["on_assign"](self, [TopicPartition(topic, number) for topic in topics for number in range(3)])

    def seek(self, partition: TopicPartition) -> None:
        self.journal.append(("seek", partition.topic, partition.partition, partition.offset))

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.journal.append(("commit", [(item.topic, item.partition, item.offset) for item in offsets]))

    def close(self) -> None:
        self.journal.append(("close",))


class FakeWriter:
    def __init__(self, journal: list[Any], existing: dict[int, str] | None = None) -> None:
        self.journal = journal
        self.existing = existing or {}
        self.refusing = False

    def write(self, key: str, rows: list[Any]) -> None:
        if self.refusing:
            raise OSError(28, "No space left on device")
        self.journal.append(("write", key, [row["event_id"] for row in rows]))

    def existing_parts(self, kind: str, partition: int) -> dict[int, str]:
        return dict(self.existing)

    def delete(self, key: str) -> None:
        self.journal.append(("delete", key))


class FakeProducer:
    def __init__(self, journal: list[Any]) -> None:
        self.journal = journal

    def dead_letter_record(self, **fields: Any) -> Any:
        import concurrent.futures

        self.journal.append(("dead letter", fields["record"].offset(), fields["reason"]))
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future


def build_fake_sink(
    journal: list[Any],
    batches: list[list[FakeMessage]],
    *,
    flush_rows: int = 1000,
    existing: dict[int, str] | None = None,
) -> WarehouseSink:
    return WarehouseSink(
        consumer=FakeConsumer(journal, batches),  # type: ignore[arg-type]
        producer=FakeProducer(journal),  # type: ignore[arg-type]
        writer=FakeWriter(journal, existing),
        sources={
            "p": Source(PREDICTIONS, PREDICTION, prediction_row),
            "d": Source(DETECTIONS, DETECTION, detection_row),
        },
        flush_s=60.0,
        flush_rows=flush_rows,
        metrics=WarehouseMetrics(),
    )


def test_sink_commits_only_after_the_file_is_written() -> None:
    journal: list[Any] = []
    schema = PREDICTIONS.schema
    batches = [
        [
            FakeMessage("p", 0, 5, make_prediction("a").SerializeToString(), schema),
            FakeMessage("p", 0, 6, b"\xff garbage", schema),
            FakeMessage("p", 0, 7, make_prediction("b").SerializeToString(), schema),
        ]
    ]
    sink = build_fake_sink(journal, batches)
    sink.poll_once()
    assert ("commit", [("p", 0, 8)]) not in journal  # neither old nor full: still buffered
    stop = threading.Event()
    stop.set()

    sink.run(stop)  # stopping writes what is buffered

    assert journal == [
        ("subscribe", ["d", "p"]),
        ("dead letter", 6, "decode-error"),
        ("write", "warehouse/predictions/date=2026-11-28/hour=13/part-5-0.parquet", ["a", "b"]),
        ("commit", [("p", 0, 8)]),
        ("close",),
    ]


def test_a_rewound_pass_cut_elsewhere_deletes_the_files_it_supersedes() -> None:
    journal: list[Any] = []
    schema = PREDICTIONS.schema
    messages = [
        FakeMessage("p", 0, offset, make_prediction(f"event-{offset}").SerializeToString(), schema)
        for offset in range(4)
    ]
    folder = "warehouse/predictions/date=2026-11-28/hour=13"
    # The first pass wrote offsets 0..2 then 3 alone; this pass cuts every two rows.
    earlier = {0: f"{folder}/part-0-0.parquet", 3: f"{folder}/part-3-0.parquet"}
    sink = build_fake_sink(journal, [messages], flush_rows=2, existing=earlier)

    sink.poll_once()

    assert journal[1:] == [
        ("write", f"{folder}/part-0-0.parquet", ["event-0", "event-1"]),
        ("write", f"{folder}/part-2-0.parquet", ["event-2", "event-3"]),
        ("delete", f"{folder}/part-3-0.parquet"),
        ("commit", [("p", 0, 4)]),  # at the end of the batch, past both files
    ]


def test_a_failed_write_goes_back_to_the_first_buffered_record_of_an_earlier_batch_and_drops_the_buffers() -> None:
    journal: list[Any] = []
    schema = PREDICTIONS.schema
    message = [
        FakeMessage("p", 0, offset, make_prediction(f"event-{offset}").SerializeToString(), schema)
        for offset in range(4)
    ]
    sink = build_fake_sink(journal, [message[:2], message[2:], message], flush_rows=3)
    writer = sink.writer
    assert isinstance(writer, FakeWriter)

    sink.poll_once()  # two rows buffered, nothing due
    writer.refusing = True
    try:
        sink.poll_once()  # the third row fills the buffer, and its file is refused
        raise AssertionError("the refused file did not fail the batch")
    except OSError:
        pass
    assert journal[1:] == [("seek", "p", 0, 0)]
    assert sink.buffers == {} and sink.metrics.registry.get_sample_value("michi_warehouse_buffered_rows") == 0

    writer.refusing = False
    sink.poll_once()  # read again from the first record
    folder = "warehouse/predictions/date=2026-11-28/hour=13"
    assert journal[2:] == [
        ("write", f"{folder}/part-0-0.parquet", ["event-0", "event-1", "event-2"]),
        ("commit", [("p", 0, 3)]),
    ]


def test_each_records_span_continues_the_trace_of_its_upload() -> None:
    journal: list[Any] = []
    with recorded_spans() as spans:
        headers, upload = upload_headers(PREDICTIONS.schema)
        value = make_prediction("a").SerializeToString()
        build_fake_sink(journal, [[FakeMessage("p", 0, 5, value, PREDICTIONS.schema, headers)]]).poll_once()

    (span,) = [span for span in spans if span.kind == trace.SpanKind.CONSUMER]
    assert span.name == "p process"
    assert span.context is not None and span.context.trace_id == upload.trace_id
    assert span.parent is not None and span.parent.span_id == upload.span_id
    assert span.attributes is not None
    assert (span.attributes["messaging.consumer.group.name"], span.attributes["messaging.kafka.message.offset"]) == (
        "michi-warehouse",
        5,
    )


def test_operations_pages_answer_on_loopback() -> None:
    import json
    import urllib.error
    import urllib.request

    from michi.readiness import serve_operations

    sink = build_fake_sink([], [])  # never polled: not ready
    sink.metrics.rows_written.labels("predictions").inc(3)
    server = serve_operations(
        "warehouse", 0, alive=lambda: True, registry=sink.metrics.registry, ready={"consumer": sink.readiness}
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert (response.status, json.loads(response.read())) == (200, {"status": "ok", "service": "warehouse"})
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert b'michi_warehouse_rows_written_total{table="predictions"} 3.0' in response.read()
        try:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
            raise AssertionError("/readyz answered 200 while not ready")
        except urllib.error.HTTPError as error:
            with error:
                assert error.code == 503
                assert json.loads(error.read()) == {
                    "status": "not ready",
                    "service": "warehouse",
                    "ready": False,
                    "checks": {"consumer": "error: not polling, or holding no partition"},
                    "reason": "consumer: error: not polling, or holding no partition",
                }
    finally:
        server.shutdown()
        server.server_close()


def test_shadow_report_compares_the_variants_on_the_same_windows(tmp_path: Path) -> None:
    blob_url = f"file://{tmp_path / 'blobs'}"
    writer = BlobParquetWriter(BlobStore(blob_url))
    # (window, champion class, shadow class); window-4 has no shadow score and does not count.
    cases = [
        ("window-1", common_pb2.EVENT_TYPE_NORMAL, common_pb2.EVENT_TYPE_NORMAL),
        ("window-2", common_pb2.EVENT_TYPE_HARSH_BRAKING, common_pb2.EVENT_TYPE_HARSH_BRAKING),
        ("window-3", common_pb2.EVENT_TYPE_NORMAL, common_pb2.EVENT_TYPE_HARSH_BRAKING),
        ("window-4", common_pb2.EVENT_TYPE_NORMAL, None),
    ]
    rows = []
    messages = []
    for window_id, champion, shadow in cases:
        for variant, predicted, version in (
            (inference_pb2.VARIANT_CHAMPION, champion, "1"),
            (inference_pb2.VARIANT_SHADOW, shadow, "2"),
        ):
            if predicted is None:
                continue
            message = make_prediction(f"prediction-{window_id}-{variant}")
            message.lineage.window_id = window_id
            message.lineage.model_name = "michi-risk"
            message.lineage.model_version = version
            message.variant = variant
            message.predicted = predicted
            messages.append(message)
            rows.append(prediction_row(message, offset=len(rows)))
    rows.append(prediction_row(messages[5], offset=len(rows)))  # window-3's shadow score, redelivered
    writer.write(part_key(PREDICTION, MOMENT, 0, 0), rows)

    (report,) = shadow_comparison("michi-risk", blob_url)
    assert (report.champion_version, report.shadow_version, report.windows) == ("1", "2", 3)
    assert report.agreement == 2 / 3
    assert (report.shadow_only_risky, report.champion_only_risky) == (1, 0)
    assert report.disagreements == {("normal", "harsh_braking"): 1}
    assert shadow_comparison("another-model", blob_url) == []

    environment = {"MICHI_BLOB_URL": blob_url, "MICHI_HOME": str(tmp_path / ".michi")}
    printed = CliRunner().invoke(app, ["warehouse", "shadow-report"], env=environment)
    assert printed.exit_code == 0, printed.output
    assert "champion 1 vs shadow 2: 3 windows, agreement 0.667" in printed.output
    assert "normal -> harsh_braking" in printed.output
