"""The device's mount calibration on its own storage, so a reboot does not make it learn its mount again.

    store = CalibrationStateFile(Path("/data/michi/calibration.json"), device_id, bundle.manifest)
    restored = store.load()          # RestoredCalibration: the sums, or fresh ones and why (never raises)
    store.save(sums, uploads=1234)   # temp file, fsync, rename, fsync of the folder

One file per device, JSON (docs/edge.md, "Calibration across reboots"):

    {"format": "michi-edge-calibration-1", "device_id": ..., "contract": {"preprocessing_version": ...,
     "calibration_contract_sha256": ...}, "uploads": <uploads folded since the state began>,
     "sums": CalibrationSums.to_dict(), "sha256": <of the canonical JSON of everything else>}

`sums` is `CalibrationSums.to_dict()`, what inference stores per device (`services/inference/domain/state.py`),
read back with `CalibrationSums.from_dict`: one serialisation of the sums, not a second. JSON floats are written
with `repr`, so the sums come back bit for bit and a rebooted device computes what it would have without the
reboot. The contract is the bundle manifest's preprocessing version and the sha256 of its canonical
`calibration_contract`: a bundle whose calibration contract differs starts fresh rather than misread the sums;
a new model with the same contract keeps them (the mount did not move because the model changed).

`load` never raises: a missing file, one over `MAX_STATE_BYTES`, not JSON, truncated, with a checksum that does
not match, of another format, another contract or another device, or whose sums are not the shape
`CalibrationSums` has (a non-finite number, a list of the wrong length) gives fresh sums and the reason.
`sums_to_json` and `sums_from_json` are the same sums without the envelope, as a device sends them with each
upload it sends in full (`Upload.device_calibration`, docs/edge.md): ingest refuses what `sums_from_json` refuses,
inference folds the upload from what it returns.
`save` writes the file under a temporary name in the same folder, fsyncs it, renames it over the old one and
fsyncs the folder: a crash at any point leaves either the old file or the new one, never a mixture.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from michi.contracts.v1 import upload_pb2
from michi.windows.calibration import TAIL_BLOCKS, CalibrationSums

logger = logging.getLogger(__name__)

STATE_FORMAT = "michi-edge-calibration-1"
# A device's state is about 2.5 KB (the sums' 23 evidence fields, the 6-block tail); anything larger is not one.
MAX_STATE_BYTES = 16 * 1024
# The sums alone, as an upload carries them (`Upload.device_calibration`): about 2.4 KB.
MAX_SUMS_BYTES = 16 * 1024
# Integers a float64 holds exactly: a count or a sum beyond it is not one calibration wrote.
MAX_EXACT_INTEGER = 2**53
TEMPORARY_SUFFIX = ".tmp"
# Rows of the carried tail (one per 1 s block: time, 3 accel, vibration, 3 gyro, stopped) and their width.
TAIL_WIDTH = 9
# Lists whose length varies: their bound (rows or values).
VARIABLE_LISTS = {"tail": TAIL_BLOCKS, "pending_brake": 5, "moved_candidate": 3, "calibrated_axes": 6}


class StateRefused(ValueError):
    """Calibration sums (a saved state, or sums an upload carries) that will not be used; the message says why.

    `reason` and `field` are what ingest answers with (`field` the `CalibrationSums` key, when one is at fault).
    """

    def __init__(self, message: str, reason: str = "invalid-device-calibration", field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class RestoredCalibration:
    """What `CalibrationStateFile.load` found: the sums to start from, and whether they are the saved ones."""

    sums: CalibrationSums
    restored: bool
    # "restored: ..." or why the device starts fresh ("no saved state", "checksum mismatch", ...).
    reason: str
    uploads: int = 0


def contract_of(manifest: dict[str, Any]) -> dict[str, str]:
    """The part of a bundle manifest the saved sums depend on: preprocessing version, calibration contract."""
    contract = json.dumps(manifest.get("calibration_contract", {}), sort_keys=True, separators=(",", ":"))
    return {
        "preprocessing_version": str(manifest.get("preprocessing", {}).get("version", "")),
        "calibration_contract_sha256": hashlib.sha256(contract.encode()).hexdigest(),
    }


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode_state(sums: CalibrationSums, device_id: str, contract: dict[str, str], uploads: int) -> bytes:
    """The file's bytes (`ValueError` for non-finite sums or a state over `MAX_STATE_BYTES`)."""
    body = {
        "format": STATE_FORMAT,
        "device_id": device_id,
        "contract": contract,
        "uploads": uploads,
        "sums": sums.to_dict(),
    }
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    encoded = _canonical(body) + b"\n"
    if len(encoded) > MAX_STATE_BYTES:
        raise ValueError(f"calibration state of {len(encoded)} bytes is over {MAX_STATE_BYTES}")
    return encoded


def decode_state(payload: bytes, device_id: str, contract: dict[str, str]) -> tuple[CalibrationSums, int]:
    """The sums and upload count in `payload`, or `StateRefused` saying why they cannot be used here."""
    if len(payload) > MAX_STATE_BYTES:
        raise StateRefused(f"{len(payload)} bytes, over the {MAX_STATE_BYTES} a calibration state holds")
    try:
        document = json.loads(payload)
    except ValueError as error:  # truncated or not JSON (UnicodeDecodeError is a ValueError)
        raise StateRefused(f"not a calibration state: {error}") from None
    if not isinstance(document, dict):
        raise StateRefused("not a calibration state: not a JSON object")
    if document.get("format") != STATE_FORMAT:
        raise StateRefused(f"format {document.get('format')!r}, this runtime reads {STATE_FORMAT}")
    recorded = document.pop("sha256", None)
    try:
        actual = hashlib.sha256(_canonical(document)).hexdigest()
    except ValueError:
        raise StateRefused("checksum mismatch: the file holds non-finite numbers") from None
    if recorded != actual:
        raise StateRefused("checksum mismatch: the file was changed or damaged")
    if document.get("device_id") != device_id:
        raise StateRefused(f"saved by device {document.get('device_id')!r}, this device is {device_id!r}")
    if document.get("contract") != contract:
        raise StateRefused(
            f"saved under calibration contract {document.get('contract')!r}, the bundle's is {contract!r}"
        )
    uploads = document.get("uploads")
    if not isinstance(uploads, int) or isinstance(uploads, bool) or uploads < 0:
        raise StateRefused(f"uploads {uploads!r} is not a count")
    return checked_sums(document.get("sums")), uploads


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    # An integer beyond float precision is no sum calibration writes (and would overflow `math.isfinite`).
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= MAX_EXACT_INTEGER


def _non_finite(value: Any) -> bool:
    if isinstance(value, list):
        return any(_non_finite(item) for item in value)
    return isinstance(value, float) and not math.isfinite(value)


def checked_sums(data: Any) -> CalibrationSums:
    """`CalibrationSums.from_dict(data)` once every value has the type and length the dataclass gives it.

    `StateRefused` otherwise, naming the field (`reason` `non-finite-value` for NaN or infinity, else
    `invalid-device-calibration`). Keys `CalibrationSums` does not have are ignored and missing ones take their
    defaults, as `from_dict` reads sums written by an older or newer release.
    """
    if not isinstance(data, dict):
        raise StateRefused("sums: not a JSON object")
    default = CalibrationSums()
    for item in fields(CalibrationSums):
        if item.name not in data:
            continue  # a field newer than the file: its default, as inference reads older state
        value, expected = data[item.name], getattr(default, item.name)
        if item.name == "tail":
            good = isinstance(value, list) and len(value) <= VARIABLE_LISTS["tail"]
            good = good and all(
                isinstance(row, list) and len(row) == TAIL_WIDTH and all(map(_number, row)) for row in value
            )
        elif item.name in VARIABLE_LISTS:
            good = isinstance(value, list) and len(value) <= VARIABLE_LISTS[item.name] and all(map(_number, value))
        elif isinstance(expected, list):
            good = isinstance(value, list) and len(value) == len(expected) and all(map(_number, value))
        elif isinstance(expected, int):
            good = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EXACT_INTEGER
        else:
            good = _number(value)
        if not good:
            if _non_finite(value):
                raise StateRefused(f"sums: {item.name} holds a non-finite number", "non-finite-value", item.name)
            raise StateRefused(f"sums: {item.name} is not what CalibrationSums holds", field=item.name)
    return CalibrationSums.from_dict(data)


def sums_to_json(sums: CalibrationSums) -> str:
    """The sums as `Upload.device_calibration.sums_json` carries them: `to_dict()` as canonical JSON (floats by
    `repr`, so they come back bit for bit); `ValueError` for non-finite sums."""
    return json.dumps(sums.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise StateRefused(f"sums: {name} is not a finite number", "non-finite-value")


def sums_from_json(text: str) -> CalibrationSums:
    """The sums a device sent (`sums_to_json`), or `StateRefused` with the reason: over `MAX_SUMS_BYTES`
    (`value-too-long`), NaN or infinity (`non-finite-value`), not a JSON object of `CalibrationSums`' shape
    (`invalid-device-calibration`)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SUMS_BYTES:
        raise StateRefused(f"{size} bytes, over the {MAX_SUMS_BYTES} calibration sums hold", "value-too-long")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except StateRefused:
        raise
    except (ValueError, RecursionError) as error:  # not JSON, or absurdly nested
        raise StateRefused(f"sums: not JSON: {error}") from None
    return checked_sums(data)


class CalibrationStateFile:
    """The calibration state of one device in one file it owns, under one bundle's calibration contract."""

    def __init__(self, path: Path, device_id: str, manifest: dict[str, Any]) -> None:
        self.path = path
        self.device_id = device_id
        self.contract = contract_of(manifest)

    @property
    def temporary_path(self) -> Path:
        return self.path.with_name(self.path.name + TEMPORARY_SUFFIX)

    def load(self) -> RestoredCalibration:
        """The saved sums, or fresh ones with the reason (never raises: a device must boot)."""
        try:
            with self.path.open("rb") as handle:
                payload = handle.read(MAX_STATE_BYTES + 1)  # bounded: a huge file is refused unread
        except FileNotFoundError:
            return RestoredCalibration(CalibrationSums(), False, "no saved state")
        except OSError as error:
            return RestoredCalibration(CalibrationSums(), False, f"unreadable: {error}")
        try:
            sums, uploads = decode_state(payload, self.device_id, self.contract)
        except StateRefused as error:
            return RestoredCalibration(CalibrationSums(), False, str(error))
        return RestoredCalibration(sums, True, f"restored after {uploads} uploads", uploads)

    def write_temporary(self, sums: CalibrationSums, uploads: int) -> Path:
        """The first half of `save`: the new state in the temporary file, fsynced, not yet in place."""
        encoded = encode_state(sums, self.device_id, self.contract, uploads)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.temporary_path
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = 0
            while written < len(encoded):
                written += os.write(descriptor, encoded[written:])
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return temporary

    def save(self, sums: CalibrationSums, uploads: int) -> None:
        """Replace the saved state atomically (`OSError` or `ValueError` when it cannot be written)."""
        temporary = self.write_temporary(sums, uploads)
        os.replace(temporary, self.path)
        # The rename is durable once the folder's entry is: fsync the folder (not possible everywhere).
        with contextlib.suppress(OSError):
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


def device_calibration(upload: upload_pb2.Upload) -> CalibrationSums | None:
    """The device's calibration sums an upload sent in full carries (`Upload.device_calibration`), or None.

    Used whenever present, not only when more confident than the cloud's: they are the device's fold over all its
    uploads (the cloud's own sums of an events-only device are the previous full upload's, at best), only the
    device knows when its mount moved and its sums restarted, the cloud's windows of the upload are then the
    device's bit for bit, and they touch only that device's scoring. Ingest refuses sums that are not
    `CalibrationSums`' shape; should such sums come another way, the cloud's own are used (logged).
    """
    if not upload.HasField("device_calibration") or upload.HasField("edge"):
        return None
    try:
        return sums_from_json(upload.device_calibration.sums_json)
    except StateRefused as refused:
        logger.warning(
            "device calibration ignored: %s",
            refused,
            extra={"upload_id": upload.upload_id, "device_id": upload.device_id},
        )
        return None
