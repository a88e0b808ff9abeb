"""What each arm of a rollout served, read from the warehouse (`michi rollouts status`).

Real Parquet written as the warehouse sink writes it (`michi.warehouse.rows`, `layout.part_key`), read back with
DuckDB: per serving arm the windows, devices, hours driven (per upload, its windows' span), risky windows and
detections of that rollout only; shadows, other rollouts and files written before `rollout_id` existed are left
out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2
from michi.warehouse.layout import part_key
from michi.warehouse.reports import describe_arm, rollout_arms
from michi.warehouse.rows import DETECTION, PREDICTION, Row, detection_row, prediction_row, rows_to_table

START = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
ROLLOUT = "ro-risk-2-36ad48e9"


def span(message: inference_pb2.Prediction | inference_pb2.Detection, start: datetime, seconds: float) -> None:
    message.window.started_at.CopyFrom(timestamp_from_seconds(start.timestamp()))
    message.window.ended_at.CopyFrom(timestamp_from_seconds(start.timestamp() + seconds))
    message.occurred_at.CopyFrom(timestamp_from_seconds(start.timestamp() + seconds))


def served(device: int, upload: int, *, variant: int, version: str, rollout: str, risky: bool = False) -> list[Row]:
    """One 10 s upload of a device: windows of 4 s every 2 s (0-4, 2-6, 4-8, 6-10)."""
    rows = []
    for position in range(4):
        message = inference_pb2.Prediction(
            event_id=f"p-{rollout}-{variant}-{device}-{upload}-{position}",
            variant=variant,  # type: ignore[arg-type]
            rollout_id=rollout,
            predicted=common_pb2.EVENT_TYPE_HARSH_BRAKING if risky and position == 1 else common_pb2.EVENT_TYPE_NORMAL,
        )
        message.lineage.device_id, message.lineage.upload_id = f"device-{device}", f"upload-{device}-{upload}"
        message.lineage.model_name, message.lineage.model_version = "risk", version
        span(message, START + timedelta(seconds=upload * 10 + position * 2), 4.0)
        rows.append(prediction_row(message))
    return rows


def detection(device: int, *, variant: int, version: str, rollout: str) -> Row:
    message = inference_pb2.Detection(
        event_id=f"d-{rollout}-{device}",
        variant=variant,
        rollout_id=rollout,
        event_type=common_pb2.EVENT_TYPE_HARSH_BRAKING,  # type: ignore[arg-type]
    )
    message.lineage.device_id, message.lineage.model_name, message.lineage.model_version = (
        f"device-{device}",
        "risk",
        version,
    )
    span(message, START, 2.0)
    return detection_row(message)


def write(root: Path, kind: str, rows: list[Row], partition: int, *, without: tuple[str, ...] = ()) -> None:
    filesystem, base = fsspec.core.url_to_fs(f"file://{root}")
    path = f"{base}/{part_key(kind, START, partition, 0)}"
    filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with filesystem.open(path, "wb") as handle:
        pq.write_table(rows_to_table(rows).drop_columns(list(without)), handle)


def test_each_serving_arm_of_the_rollout_with_its_windows_devices_hours_and_detections(tmp_path: Path) -> None:
    champion, canary, shadow = (
        inference_pb2.VARIANT_CHAMPION,
        inference_pb2.VARIANT_CANARY,
        inference_pb2.VARIANT_SHADOW,
    )
    predictions: list[Row] = []
    for device in range(6):  # devices 0-1 on the canary, 2-5 on the champion, 3 uploads each
        variant, version = (canary, "2") if device < 2 else (champion, "1")
        for upload in range(3):
            predictions += served(device, upload, variant=variant, version=version, rollout=ROLLOUT, risky=upload == 0)
            predictions += served(device, upload, variant=shadow, version="3", rollout=ROLLOUT)  # never counted
    predictions += served(9, 0, variant=canary, version="2", rollout="ro-other")  # another rollout
    write(tmp_path, PREDICTION, predictions, 0)
    detections = [
        detection(
            device, variant=canary if device < 2 else champion, version="2" if device < 2 else "1", rollout=ROLLOUT
        )
        for device in (0, 2, 3)
    ]
    write(tmp_path, DETECTION, detections, 0)

    arms = rollout_arms(ROLLOUT, f"file://{tmp_path}")
    assert [(arm.variant, arm.model_version) for arm in arms] == [("champion", "1"), ("canary", "2")]
    first, second = arms
    assert (first.windows, first.devices, first.risky_windows, first.detections) == (48, 4, 4, 2)
    assert (second.windows, second.devices, second.risky_windows, second.detections) == (24, 2, 2, 1)
    # 10 s per upload (its windows span 0-10 s): 12 uploads and 6 uploads.
    assert first.hours == pytest.approx(120 / 3600) and second.hours == pytest.approx(60 / 3600)
    assert second.detections_per_hour == pytest.approx(60.0)
    assert (
        describe_arm(second)
        == "canary 2: 24 windows from 2 devices, 0.0 h driven, 2 risky windows, 1 detections (60.00/h)"
    )


def test_a_warehouse_without_rollout_windows_reports_no_arm(tmp_path: Path) -> None:
    assert rollout_arms(ROLLOUT, f"file://{tmp_path}") == []  # no file at all
    old = served(0, 0, variant=inference_pb2.VARIANT_CHAMPION, version="1", rollout="")
    write(tmp_path, PREDICTION, old, 0, without=("rollout_id",))  # written before the column existed
    assert rollout_arms(ROLLOUT, f"file://{tmp_path}") == []
