"""The device runtime's calibration across reboots (michi.edge.calibration_state, docs/edge.md): a rebooted runtime
continues from the saved sums and decides as one that never rebooted; a damaged, foreign or other-contract file
starts fresh with the reason; a crash before the rename leaves the old file; a moved mount resets and is saved.

Run: python -m pytest -p no:cacheprovider tests/unit/test_edge_calibration_state.py -q   (a few seconds)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from michi.blobs import BlobStore
from michi.contracts.v1 import common_pb2, upload_pb2
from michi.edge.bundle import VerifiedBundle, verify_bundle
from michi.edge.calibration_state import (
    MAX_STATE_BYTES,
    STATE_FORMAT,
    CalibrationStateFile,
    contract_of,
    encode_state,
)
from michi.edge.export import export_bundle
from michi.edge.runtime import EdgeRuntime, EdgeUploadResult
from michi.recordings import recording_uploads, shared_recording
from michi.registry import ModelRegistry
from michi.registry.layout import model_folder
from michi.simulator.config import DEFAULT_START_TIME
from michi.windows.calibration import CalibrationSums
from michi.windows.model_spec import MODEL_NAME
from michi.windows.physics import build_physics_model

from ..fakes import RecordingPlanPublisher
from ..scripted_drive import ScriptedDrive, ScriptedEvent

KEY = b"fleet-key-for-calibration-state-tests"
DEVICE = "device-1"
# Two stops calibrate the mount (forward from their edges), then harsh brakes the rule graph calls: the first one
# in the first upload after the reboot.
WARM_UP = [ScriptedEvent("stop", 8.0, 3.0, 2.0), ScriptedEvent("stop", 24.0, 3.0, 2.0)]
BRAKES = [ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5), ScriptedEvent("harsh_braking", 69.4, 1.5, 5.5)]
# The reboot: the device is switched off after this many uploads (the warm-up) and boots for the rest.
REBOOT_AFTER = 4
# Uploads after the boot before the GPS receiver's first fix (a warm start takes tens of seconds).
NO_FIX_UPLOADS = 2


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifiedBundle]:
    """The rule graph `physics-3` exported as the fleet receives it (fp32 only: exported in a second)."""
    folder = tmp_path_factory.mktemp("edge-calibration-platform")
    blobs = BlobStore(f"file://{folder / 'blobs'}")
    registry = ModelRegistry.from_url(f"sqlite:///{folder / 'michi.db'}", RecordingPlanPublisher())
    payload = build_physics_model()
    key = f"{model_folder(MODEL_NAME, 'physics-3')}/model.onnx"
    uri = asyncio.run(blobs.put_bytes(key, payload)).uri
    sha256 = hashlib.sha256(payload).hexdigest()
    registry.register(MODEL_NAME, uri, sha256, "src-test", "ds-rules", {}, {}, created_by="test", version="physics-3")
    try:
        exported = export_bundle(registry, blobs, MODEL_NAME, "physics-3", folder / "bundles", KEY)
        yield verify_bundle(exported.folder, KEY)
    finally:
        registry.close()


@pytest.fixture(scope="module")
def drive() -> list[upload_pb2.Upload]:
    uploads = [
        received.upload
        for received in ScriptedDrive(device_id=DEVICE, duration_s=100.0, events=[*WARM_UP, *BRAKES]).uploads()
    ]
    for upload in uploads[REBOOT_AFTER : REBOOT_AFTER + NO_FIX_UPLOADS]:
        del upload.gps[:]
    return uploads


def runtime(bundle: VerifiedBundle, state: Path | None, **options: int) -> EdgeRuntime:
    if state is None:
        return EdgeRuntime(bundle)
    return EdgeRuntime(bundle, calibration_file=state, device_id=DEVICE, **options)


def summary(result: EdgeUploadResult) -> tuple:
    calibration = result.calibration
    assert calibration is not None
    return (
        result.window_ids,
        result.probabilities.tolist(),
        result.window_calls.tolist(),
        result.calibration_state,
        calibration.rotation.tolist(),
        calibration.forward_confidence,
        calibration.gravity_confidence,
    )


def test_a_rebooted_runtime_continues_calibrated_and_decides_as_without_the_reboot(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path
) -> None:
    state = tmp_path / "calibration.json"
    without_file = runtime(bundle, None)
    never_rebooted = [summary(without_file.process(upload)) for upload in drive]
    assert [item[3] for item in never_rebooted][REBOOT_AFTER - 1 :] == ["calibrated"] * (len(drive) - REBOOT_AFTER + 1)
    calls = [call for item in never_rebooted[REBOOT_AFTER:] for call in item[2] if call]
    assert set(calls) == {common_pb2.EVENT_TYPE_HARSH_BRAKING}

    # The first trip, then the device is switched off: the file holds the sums after its last upload.
    before = runtime(bundle, state)
    assert not before.restored.restored and before.restored.reason == "no saved state"
    for upload in drive[:REBOOT_AFTER]:
        before.process(upload)
    assert state.exists() and state.stat().st_size < MAX_STATE_BYTES
    # The reboot: a new runtime on the same file continues where the old one stopped, bit for bit.
    after = runtime(bundle, state)
    assert after.restored.restored and after.restored.reason == f"restored after {REBOOT_AFTER} uploads"
    assert after.calibration[DEVICE].to_dict() == before.calibration[DEVICE].to_dict()
    rebooted = [summary(after.process(upload)) for upload in drive[REBOOT_AFTER:]]
    assert rebooted == never_rebooted[REBOOT_AFTER:]  # same axes, confidences, probabilities and calls

    assert any(rebooted[0][2])  # the brake in the first upload after the reboot is called
    # Without the saved state the same second trip starts without a forward axis and misses that brake.
    new_device = runtime(bundle, None)
    fresh = [summary(new_device.process(upload)) for upload in drive[REBOOT_AFTER:]]
    assert fresh[0][3] != "calibrated" and fresh[0][5] < 0.5
    assert not any(fresh[0][2])


def test_saves_every_n_uploads_and_on_request(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path
) -> None:
    state = tmp_path / "calibration.json"
    device = runtime(bundle, state, save_every=3)
    for upload in drive[:2]:
        device.process(upload)
    assert not state.exists()
    device.process(drive[2])
    assert CalibrationStateFile(state, DEVICE, bundle.manifest).load().uploads == 3
    device.process(drive[3])
    assert device.save_calibration()  # ignition off
    restored = CalibrationStateFile(state, DEVICE, bundle.manifest).load()
    assert restored.uploads == 4 and restored.sums.to_dict() == device.calibration[DEVICE].to_dict()


def _saved(bundle: VerifiedBundle, drive: list[upload_pb2.Upload], state: Path) -> EdgeRuntime:
    device = runtime(bundle, state)
    for upload in drive[:REBOOT_AFTER]:
        device.process(upload)
    return device


def _checksummed(document: dict) -> bytes:
    document.pop("sha256", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    document["sha256"] = hashlib.sha256(canonical).hexdigest()
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda payload: payload[: len(payload) // 2], "not a calibration state"),  # truncated
        (lambda payload: b"", "not a calibration state"),  # created, never written
        (lambda payload: payload.replace(b'"uploads":4', b'"uploads":5'), "checksum mismatch"),  # a changed value
        (lambda payload: b"\x00\xff" * 100, "not a calibration state"),  # garbage
        (lambda payload: b" " * (MAX_STATE_BYTES + 1), "over the"),  # too large to be one
        (lambda payload: b'{"format": "something-else"}', "format 'something-else'"),  # another program's file
        (lambda payload: b"[1, 2]", "not a JSON object"),
    ],
    ids=["truncated", "empty", "changed", "garbage", "too-large", "foreign", "not-an-object"],
)
def test_a_damaged_or_foreign_file_starts_fresh_with_the_reason(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path, damage, reason: str
) -> None:
    state = tmp_path / "calibration.json"
    _saved(bundle, drive, state)
    state.write_bytes(damage(state.read_bytes()))
    device = runtime(bundle, state)
    assert not device.restored.restored and reason in device.restored.reason, device.restored.reason
    assert device.calibration[DEVICE].to_dict() == CalibrationSums().to_dict()
    # It runs, and its next save replaces the damaged file.
    device.process(drive[0])
    assert runtime(bundle, state).restored.restored


def test_a_file_of_another_device_or_another_calibration_contract_is_refused(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "calibration.json"
    saved = _saved(bundle, drive, state)
    other_device = EdgeRuntime(bundle, calibration_file=state, device_id="device-2")
    assert not other_device.restored.restored
    assert other_device.restored.reason == "saved by device 'device-1', this device is 'device-2'"

    # A bundle whose calibration contract changed (the same file, read under the new contract).
    changed = json.loads(json.dumps(bundle.manifest))
    changed["calibration_contract"]["mount"]["states"]["calibrated"] = "gravity and forward confidence >= 0.6"
    with caplog.at_level(logging.WARNING, logger="michi.edge.runtime"):
        other_contract = EdgeRuntime(
            VerifiedBundle(bundle.folder, changed, bundle.files), calibration_file=state, device_id=DEVICE
        )
    assert not other_contract.restored.restored and "calibration contract" in other_contract.restored.reason
    assert any("starts fresh" in record.getMessage() for record in caplog.records)
    # ...and one of another preprocessing version.
    other = contract_of(bundle.manifest) | {"preprocessing_version": "features-0"}
    state.write_bytes(encode_state(saved.calibration[DEVICE], DEVICE, other, 4))
    assert "calibration contract" in runtime(bundle, state).restored.reason

    # A new model under the same contract keeps the calibration (the mount did not move with the model).
    state.write_bytes(encode_state(saved.calibration[DEVICE], DEVICE, contract_of(bundle.manifest), 4))
    new_model = json.loads(json.dumps(bundle.manifest))
    new_model["model"]["version"] = "physics-4"
    assert EdgeRuntime(
        VerifiedBundle(bundle.folder, new_model, bundle.files), calibration_file=state, device_id=DEVICE
    ).restored.restored


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gravity_sum", [1.0, 2.0]),  # the wrong length
        ("gravity_weight", "heavy"),
        ("tail", [[0.0] * 8]),
        ("tail", [[0.0] * 9] * 7),
        ("orientation_changes", -1),
        ("stop_count", True),
    ],
)
def test_sums_of_the_wrong_shape_are_refused_even_with_a_good_checksum(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path, field: str, value: object
) -> None:
    state = tmp_path / "calibration.json"
    _saved(bundle, drive, state)
    document = json.loads(state.read_bytes())
    document["sums"][field] = value
    state.write_bytes(_checksummed(document))
    restored = runtime(bundle, state).restored
    assert not restored.restored and restored.reason == f"sums: {field} is not what CalibrationSums holds"


def test_a_crash_between_the_temporary_write_and_the_rename_leaves_the_old_state(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path
) -> None:
    state = tmp_path / "calibration.json"
    old = _saved(bundle, drive, state)
    old_bytes = state.read_bytes()
    # The next save gets as far as the fsynced temporary file; the power goes before the rename.
    newer = runtime(bundle, state)
    newer.process(drive[REBOOT_AFTER])
    store = CalibrationStateFile(state, DEVICE, bundle.manifest)
    state.write_bytes(old_bytes)  # as it was before that save
    temporary = store.write_temporary(newer.calibration[DEVICE], 5)
    assert temporary.exists() and temporary.parent == state.parent
    rebooted = runtime(bundle, state)
    assert rebooted.restored.restored and rebooted.restored.uploads == REBOOT_AFTER
    assert rebooted.calibration[DEVICE].to_dict() == old.calibration[DEVICE].to_dict()
    # A power cut halfway through the temporary file: the old file still reads, and the next save completes.
    temporary.write_bytes(temporary.read_bytes()[:100])
    assert runtime(bundle, state).restored.uploads == REBOOT_AFTER
    rebooted.process(drive[REBOOT_AFTER])
    assert runtime(bundle, state).restored.uploads == REBOOT_AFTER + 1 and not temporary.exists()


def test_a_moved_mount_resets_the_calibration_and_the_reset_is_saved(bundle: VerifiedBundle, tmp_path: Path) -> None:
    state = tmp_path / "calibration.json"
    drive = ScriptedDrive(
        device_id=DEVICE,
        duration_s=200.0,
        mount=(20.0, 8.0, -3.0),
        moved_mount=(55.0, 2.0, 3.0),
        events=[ScriptedEvent("mount_moved", 95.0)],
        seed=4,
    ).uploads()
    device = runtime(bundle, state, save_every=1000)  # only the reset forces a save
    results, gravity_weight = [], 0.0
    for received in drive:
        gravity_weight = device.calibration[DEVICE].gravity_weight
        results.append(device.process(received.upload))
        if results[-1].calibration is not None and results[-1].calibration.orientation_changed:
            break
    else:
        pytest.fail("the mount move was not seen")
    saved = CalibrationStateFile(state, DEVICE, bundle.manifest).load()
    assert saved.restored and saved.uploads == len(results)
    assert saved.sums.orientation_changes == 1
    assert saved.sums.to_dict() == device.calibration[DEVICE].to_dict()
    assert gravity_weight >= 20.0 and saved.sums.gravity_weight < gravity_weight / 2  # the evidence started afresh
    # A reboot right after the move starts from the reset, not from the old mount.
    assert runtime(bundle, state).calibration[DEVICE].orientation_changes == 1


def test_the_file_holds_calibration_sums_as_inference_serialises_them(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path
) -> None:
    from services.inference.domain.state import DeviceState

    state = tmp_path / "calibration.json"
    saved = _saved(bundle, drive, state)
    document = json.loads(state.read_bytes())
    assert document["format"] == STATE_FORMAT and document["device_id"] == DEVICE
    inference = DeviceState(calibration=saved.calibration[DEVICE]).core()["calibration"]
    assert document["sums"] == json.loads(json.dumps(inference))
    assert np.isfinite(document["sums"]["gravity_weight"])


def test_calibration_file_and_device_id_go_together(bundle: VerifiedBundle, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        EdgeRuntime(bundle, calibration_file=tmp_path / "calibration.json")


def _two_trips(name: str, *, gps: bool) -> tuple[list[upload_pb2.Upload], list[upload_pb2.Upload]]:
    """A real drive as two trips of one dashcam: its first half, an hour parked (the device off), its second half."""
    uploads = recording_uploads(
        shared_recording(name), device_id=DEVICE, trip_id="trip-1", started_at_s=DEFAULT_START_TIME
    )
    half = len(uploads) // 2
    for upload in uploads[half:]:
        upload.started_at.seconds += 3600
        upload.trip_id = "trip-2"
    for upload in uploads if not gps else []:
        del upload.gps[:]
    return uploads[:half], uploads[half:]


@pytest.mark.parametrize(("name", "gps"), [("auckland-forward", False), ("auckland-forward", True)])
def test_a_real_drive_split_by_a_reboot_is_calibrated_from_the_first_upload_of_its_second_trip(
    bundle: VerifiedBundle, tmp_path: Path, name: str, gps: bool
) -> None:
    first, second = _two_trips(name, gps=gps)
    state = tmp_path / "calibration.json"
    trip_one = runtime(bundle, state)
    assert [trip_one.process(upload).calibration_state for upload in first][-1] == "calibrated"
    rebooted = runtime(bundle, state)
    states = [rebooted.process(upload).calibration_state for upload in second]
    assert states == ["calibrated"] * len(second)
    # A device that forgets: without GPS not calibrated again in the whole second trip (3 minutes), with GPS only
    # from its third upload (docs/edge.md, "Calibration across reboots").
    forgetful = runtime(bundle, None)
    fresh = [forgetful.process(upload).calibration_state for upload in second]
    first_calibrated = fresh.index("calibrated") if "calibrated" in fresh else None
    assert first_calibrated == (2 if gps else None), fresh


def test_verify_says_whether_a_bundle_keeps_a_devices_calibration(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from michi.cli import app

    monkeypatch.setenv("MICHI_EDGE_BUNDLE_KEY", KEY.decode())
    state = tmp_path / "calibration.json"
    _saved(bundle, drive, state)
    runner = CliRunner()
    command = ["edge", "verify", str(bundle.folder), "--calibration-file", str(state)]
    kept = runner.invoke(app, [*command, "--device-id", DEVICE])
    assert kept.exit_code == 0, kept.output
    assert f"calibration: kept (restored after {REBOOT_AFTER} uploads): calibrated" in kept.output
    other = runner.invoke(app, [*command, "--device-id", "device-2"])
    assert other.exit_code == 0 and "starts fresh under this bundle: saved by device" in other.output
    assert runner.invoke(app, command).exit_code == 1


def test_a_state_that_cannot_be_read_or_written_leaves_the_device_running(
    bundle: VerifiedBundle, drive: list[upload_pb2.Upload], tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")
    device = runtime(bundle, blocked / "calibration.json")
    assert not device.restored.restored and device.restored.reason.startswith("unreadable:")
    result = device.process(drive[0])
    assert result.window_ids and device.save_error is not None and "FileExistsError" in device.save_error
