"""`michi replay` against a real ingest process (`python -m services.ingest`), Kafka and redis-server.

The recording is a real phone drive (auckland-forward: 16.7 Hz, microsecond times, no gyroscope);
the device is registered on the fly in the test's home, as a developer's `michi replay` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from michi.bus.catalog import UPLOADS
from michi.bus.reader import TopicReader
from michi.cli import app
from michi.contracts.v1 import upload_pb2

from .ingest_support import ingest_environment, start_ingest, uploads_count, wait_for_ingest

pytestmark = pytest.mark.integration


@pytest.fixture
def replay_environment(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> Iterator[dict[str, str]]:
    """A running ingest on a free port; yields the MICHI_* environment it and the CLI share."""
    environment = ingest_environment(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    process = start_ingest(environment, michi_home)
    url = f"http://127.0.0.1:{environment['MICHI_INGEST_HTTP_PORT']}"
    try:
        wait_for_ingest(url, michi_home)
        yield {**environment, "MICHI_TEST_INGEST_URL": url}
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_shipped_recording_is_replayed_and_every_upload_accepted(
    replay_environment: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    url = replay_environment["MICHI_TEST_INGEST_URL"]
    arguments = ["replay", "auckland-forward", "--target", url, "--speed", "0", "--limit-seconds", "60"]
    result = CliRunner().invoke(
        app, [*arguments, "--device", "cam-replay", "--trip-id", "trip-1"], env=replay_environment
    )
    assert result.exit_code == 0, result.output
    # 60 s in 10 s uploads: sequences 0-5, each accepted on its first attempt.
    for sequence in range(6):
        assert f"upload    {sequence} ({sequence * 10:7.1f} s): 202 accepted\n" in result.output, result.output
    assert "sent 6, accepted 6, duplicates 0, refused 0" in result.output
    assert "FROM detections WHERE trip_id = 'trip-1' ORDER BY occurred_at" in result.output  # where to look next
    assert uploads_count(kafka_bootstrap, topic_prefix) == 6

    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= 6, timeout=20)
    uploads = sorted((record.message.upload for record in records), key=lambda upload: upload.sequence)
    assert all(isinstance(record.message, upload_pb2.UploadReceived) for record in records)
    assert [upload.sequence for upload in uploads] == list(range(6))
    assert {(upload.device_id, upload.trip_id) for upload in uploads} == {("cam-replay", "trip-1")}
    assert [upload.trip_end for upload in uploads] == [False] * 5 + [True]
    first = uploads[0]
    assert first.sample_rate_exact_hz == pytest.approx(16.667, abs=0.01)
    assert first.gyroscope == upload_pb2.GYROSCOPE_ABSENT and not first.imu.gyro_x
    assert first.imu.offset_us and not first.imu.offset_ms
    # The phone's GPS fixes start 46 s into the drive: in upload 4 onwards only.
    assert [bool(upload.gps) for upload in uploads] == [False] * 4 + [True] * 2
    # As fast as possible, the drive is rebased to end now: every upload is in the past, none older than the drive.
    started = [upload.started_at.seconds + upload.started_at.nanos / 1e9 for upload in uploads]
    assert started == sorted(started)
    assert time.time() - 60 - 30 < started[0] and started[-1] + 10 <= time.time()

    # The same trip again: the same upload ids, but with times rebased to the new now they are other
    # content, which ingest refuses; replay says why and exits non-zero. (The device, registered by the
    # first run, gets a new token.)
    again = CliRunner().invoke(
        app, [*arguments, "--device", "cam-replay", "--trip-id", "trip-1"], env=replay_environment
    )
    assert again.exit_code == 1, again.output
    assert "sent 6, accepted 0, duplicates 0, refused 6\n  refused 6 x upload-id-reused\n" in again.output
    assert "issued a new token for device cam-replay" in again.output
    assert uploads_count(kafka_bootstrap, topic_prefix) == 6


def test_a_faster_than_real_time_replay_is_paced_and_never_ahead_of_the_clock(
    replay_environment: dict[str, str], kafka_bootstrap: str, topic_prefix: str
) -> None:
    url = replay_environment["MICHI_TEST_INGEST_URL"]
    began = time.monotonic()
    result = CliRunner().invoke(
        app,
        ["replay", "auckland-backwards", "--target", url, "--speed", "30", "--limit-seconds", "60", "--no-gps"],
        env=replay_environment,
    )
    elapsed = time.monotonic() - began
    assert result.exit_code == 0, result.output
    assert "sent 6, accepted 6, duplicates 0, refused 0" in result.output
    assert "registered device replay-auckland-backwards-gps-removed in the local device registry" in result.output
    # 60 s of driving at 30x: the last upload leaves 2 s after the start (each once its slice has passed).
    assert elapsed >= 60 / 30
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= 6, timeout=20)
    assert all(not record.message.upload.gps for record in records)
    # Rebased so that each upload had ended when it was received (ingest refuses uploads from the future).
    for record in records:
        received = record.message
        ended = received.upload.started_at.seconds + received.upload.started_at.nanos / 1e9 + 10
        assert ended <= received.received_at.seconds + received.received_at.nanos / 1e9 + 0.05


@pytest.mark.parametrize(("rate_hz", "declared_hz"), [(500.0, 250.0), (9.7, 10.0)])
def test_a_logger_at_the_edges_of_ingests_rates_is_replayed_and_accepted(
    replay_environment: dict[str, str],
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    rate_hz: float,
    declared_hz: float,
) -> None:
    """A phone logging at its fastest (500 Hz, averaged down) and a 10 Hz one whose clock measures 9.7 Hz: every
    upload is accepted by the real ingest, at the rate the replay declares."""
    path = tmp_path / "TotalAcceleration.csv"
    rows = [
        f"{1_700_000_000_000_000_000 + round(index / rate_hz * 1e9)},{index / rate_hz:.6f},9.8,0.2,{0.01 * index % 1:.3f}"
        for index in range(round(30 * rate_hz))
    ]
    path.write_text("time,seconds_elapsed,z,y,x\n" + "\n".join(rows) + "\n")
    url = replay_environment["MICHI_TEST_INGEST_URL"]
    result = CliRunner().invoke(app, ["replay", str(path), "--target", url, "--speed", "0"], env=replay_environment)
    assert result.exit_code == 0, result.output
    assert "sent 3, accepted 3, duplicates 0, refused 0" in result.output
    with TopicReader(kafka_bootstrap, UPLOADS, topic_prefix) as reader:
        records = reader.read_until(lambda records: len(records) >= 3, timeout=20)
    assert all(record.message.upload.sample_rate_exact_hz == pytest.approx(declared_hz, rel=1e-3) for record in records)
