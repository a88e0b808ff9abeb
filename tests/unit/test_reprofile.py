"""`michi models reprofile`: a period of the fleet's own traffic, read back from the warehouse, becomes a version's
reference profile; the monitor picks the new profile up and judges the version's next windows against it.

The warehouse here is real Parquet written the way the warehouse sink writes it (`michi.warehouse.rows`,
`layout.part_key`) under the home's blob store, read back with DuckDB by the command. The fleet rolled out a new
firmware ("3.0") that the simulated traffic never had: against the old profile every window is `firmware_unseen`;
once a person accepts a healthy period of the new firmware, the population includes it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from michi.blobs import BlobStore
from michi.cli import app
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, inference_pb2
from michi.registry import ModelRegistry
from michi.registry.layout import reference_profile_key
from michi.settings import MichiSettings, load_settings
from michi.warehouse.layout import part_key
from michi.warehouse.rows import PREDICTION, prediction_row, rows_to_table
from michi.windows.features import FEATURE_INDEX, FEATURE_NAMES, pack_features
from services.monitor.domain.profiles import read_profile
from services.trainer.adapters.live_traffic import read_live_traffic
from services.trainer.domain.profile import traffic_profile

MODEL = "michi-risk"
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
DEVICES = 8
PER_DEVICE = 3000  # 24,000 windows: above the default minimum of 20,000


def features_of(random: np.random.Generator, count: int, *, speed: float = 12.0) -> np.ndarray:
    rows = np.abs(random.normal(1.0, 0.5, (count, len(FEATURE_NAMES)))).astype(np.float32)
    rows[:, FEATURE_INDEX["gps_speed_mps"]] = random.gamma(4.0, speed / 4.0, count)
    rows[:, FEATURE_INDEX["sample_rate_hz"]] = 50.0
    rows[:, FEATURE_INDEX["gps_available"]] = 1.0
    return rows


def prediction(
    row: np.ndarray, index: int, at: datetime, *, firmware: str, variant: int, calibrated: bool = True
) -> inference_pb2.Prediction:
    device = index % DEVICES
    message = inference_pb2.Prediction(
        event_id=f"prediction-{variant}-{index}-{at.timestamp()}",
        variant=variant,  # type: ignore[arg-type]
        predicted=common_pb2.EVENT_TYPE_NORMAL,
        confidence=0.9,
        sample_rate_hz=50,
        vehicle_type=("car", "van")[device % 2],
        firmware_version=firmware,
        occurred_at=timestamp_from_seconds(at.timestamp()),
        gps_available=True,
    )
    message.lineage.device_id, message.lineage.window_id = f"device-{device}", f"window-{index}"
    message.lineage.model_name, message.lineage.model_version = MODEL, "1"
    message.calibration.state = (
        common_pb2.CALIBRATION_STATE_CALIBRATED if calibrated else common_pb2.CALIBRATION_STATE_UNCALIBRATED
    )
    message.features.update(zip(FEATURE_NAMES, (float(value) for value in row), strict=True))
    message.packed_features = pack_features(row[np.newaxis, :])[0]
    return message


def write_warehouse(blob_url: str, messages: list[inference_pb2.Prediction], partition: int) -> None:
    filesystem, root = fsspec.core.url_to_fs(blob_url)
    first = datetime.fromtimestamp(messages[0].occurred_at.seconds, UTC)
    path = f"{root}/{part_key(PREDICTION, first, partition, 0)}"
    filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    rows = [prediction_row(message, partition=partition, offset=offset) for offset, message in enumerate(messages)]
    with filesystem.open(path, "wb") as handle:
        pq.write_table(rows_to_table(rows), handle)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A home with version 1 registered under its simulated traffic profile, and the warehouse of a fleet on 3.0."""
    database_url = f"sqlite:///{tmp_path / 'michi.db'}"
    for variable, value in {
        "MICHI_DATABASE_URL": database_url,
        "MICHI_HOME": str(tmp_path / ".michi"),
        "USER": "dana",
    }.items():
        monkeypatch.setenv(variable, value)
    blob_url = load_settings(MichiSettings).resolved_blob_url()
    registry = ModelRegistry.from_url(database_url)
    registry.register(
        MODEL,
        artifact_uri="file:///models/1.onnx",
        sha256="ab" * 32,
        code_version="0123abcd",
        data_version="data-1",
        parameters={},
        metrics={},
        created_by="test",
    )
    registry.close()
    random = np.random.default_rng(5)
    simulated = features_of(random, 8000)
    cohorts = {
        "vehicle": ["car", "van"] * 4000,
        "rate": ["50"] * 8000,
        "firmware": ["2.4.0"] * 8000,
    }
    devices = [f"sim-{index % 10}" for index in range(8000)]
    old = traffic_profile(
        simulated,
        np.zeros((10, 8, 4), dtype=np.float32),
        cohorts,
        data_version="traffic-x",
        calibration=["calibrated"] * 8000,
        devices=devices,
    )
    asyncio.run(BlobStore(blob_url).put_bytes(reference_profile_key(MODEL, "1"), json.dumps(old).encode()))
    # The period: 24,000 champion windows of firmware 3.0 (a tenth uncalibrated), their shadow twins, and champion
    # windows of the day before with other speeds (outside the period: never read).
    live = features_of(random, DEVICES * PER_DEVICE, speed=15.0)
    inside = [
        prediction(
            row, index, START + timedelta(seconds=index * 0.5), firmware="3.0", variant=1, calibrated=index % 10 != 3
        )
        for index, row in enumerate(live)
    ]
    shadow = [
        prediction(row, index, START + timedelta(seconds=index * 0.5), firmware="3.0", variant=2)
        for index, row in enumerate(live[:5000])
    ]
    before = [
        prediction(row, index, START - timedelta(days=1) + timedelta(seconds=index), firmware="2.4.0", variant=1)
        for index, row in enumerate(features_of(random, 3000, speed=40.0))
    ]
    write_warehouse(blob_url, inside, 0)
    write_warehouse(blob_url, shadow, 1)
    write_warehouse(blob_url, before, 2)
    return blob_url, json.dumps(old, sort_keys=True)


def period() -> list[str]:
    return ["--since", START.isoformat(), "--until", (START + timedelta(hours=4)).isoformat()]


def test_a_healthy_period_becomes_the_reference_and_the_replaced_profile_is_kept(home: tuple[str, str]) -> None:
    blob_url, old = home
    store = BlobStore(blob_url)
    before = read_profile(json.loads(asyncio.run(store.read_bytes(reference_profile_key(MODEL, "1")))))
    assert before.population["firmware"] == {"2.4.0"}

    result = CliRunner().invoke(
        app, ["models", "reprofile", MODEL, "1", *period(), "--reason", "firmware 3.0 fleet-wide"]
    )
    assert result.exit_code == 0, result.output
    assert "21,600 calibrated windows of 24,000 from 8 devices" in result.output

    document = json.loads(asyncio.run(store.read_bytes(reference_profile_key(MODEL, "1"))))
    assert document["source"] == "live" and document["rows"] == "calibrated"
    accepted = document["accepted"]
    assert (accepted["by"], accepted["reason"], accepted["windows_read"]) == ("dana", "firmware 3.0 fleet-wide", 24_000)
    assert accepted["replaced_source"] == "traffic"
    # Champion windows of the period only: no shadow twin, nothing of the day before (speeds of 40 m/s).
    speed = document["features"]["gps_speed_mps"]
    assert speed["count"] == 21_600 and speed["max"] < 40.0 * 2
    # The replaced profile, byte for byte, beside the new one.
    kept = asyncio.run(store.read_bytes(accepted["replaced"]))
    assert json.dumps(json.loads(kept), sort_keys=True) == old
    # The signal channels' histograms come from the profile it replaced (live predictions carry none).
    assert document["signals"] == json.loads(old)["signals"]

    after = read_profile(document)
    assert after.population["firmware"] == {"3.0"} and after.population["vehicle"] == {"car", "van"}
    assert after.source == "live" and not after.low_resolution and after.calibrated_only
    assert set(after.mix["vehicle"]) == {"car", "van"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--min-devices", "9"], "21,600 calibrated windows from 8 devices"),
        (["--min-windows", "30000"], "a reference needs at least 30,000 from 5 devices"),
        (["--since", "2026-11-01T00:00:00", "--until", "2026-11-02T00:00:00"], "0 calibrated windows from 0 devices"),
        (["--since", "2026-12-02T00:00:00", "--until", "2026-12-01T00:00:00"], "the period is empty"),
        (["--since", "yesterday"], "neither an ISO 8601 time"),
    ],
)
def test_a_period_that_cannot_describe_a_fleet_is_refused_and_nothing_changes(
    home: tuple[str, str], arguments: list[str], message: str
) -> None:
    blob_url, old = home
    given = [*period(), *arguments] if "--since" not in arguments else arguments
    result = CliRunner().invoke(app, ["models", "reprofile", MODEL, "1", *given, "--reason", "try"])
    assert result.exit_code == 1 and message in result.output, result.output
    now = asyncio.run(BlobStore(blob_url).read_bytes(reference_profile_key(MODEL, "1")))
    assert json.dumps(json.loads(now), sort_keys=True) == old


def test_a_dry_run_says_what_it_would_write_and_writes_nothing(home: tuple[str, str]) -> None:
    blob_url, old = home
    result = CliRunner().invoke(app, ["models", "reprofile", MODEL, "1", *period(), "--reason", "see", "--dry-run"])
    assert result.exit_code == 0 and "dry run: nothing written" in result.output and "firmware 3.0" in result.output
    now = asyncio.run(BlobStore(blob_url).read_bytes(reference_profile_key(MODEL, "1")))
    assert json.dumps(json.loads(now), sort_keys=True) == old


def test_an_unknown_version_is_refused_by_the_registry(home: tuple[str, str]) -> None:
    result = CliRunner().invoke(app, ["models", "reprofile", MODEL, "7", *period(), "--reason", "try"])
    assert result.exit_code == 1 and "7" in result.output


def test_a_period_larger_than_the_read_limit_is_sampled_evenly_in_time_order(home: tuple[str, str]) -> None:
    blob_url, _ = home
    since, until = START, START + timedelta(hours=4)
    whole = read_live_traffic(blob_url, since, until)
    assert (whole.count, whole.available) == (24_000, 24_000)
    # 24,000 windows with at most 7,000 read: every 4th, in time order, and the period's size is still told.
    sampled = read_live_traffic(blob_url, since, until, max_windows=7_000)
    assert (sampled.count, sampled.available) == (6_000, 24_000)
    assert np.array_equal(sampled.features, whole.features[3::4])
    assert sampled.first_at == whole.first_at + timedelta(seconds=1.5)
    empty = read_live_traffic(blob_url, until, until + timedelta(hours=1))
    assert (empty.count, empty.available, empty.first_at) == (0, 0, None)
