"""From the model registry to a device bundle: `export_bundle(registry, blobs, "michi-risk")` (champion by default).

1. The version (the champion unless one is named) and its graph from the blob store, checked against the
   registry's sha256 (a changed artifact is refused, as inference refuses it).
2. The int8 graph (`quantisation.quantise`), calibrated on `reference_windows`' calibration set, and its
   agreement with the fp32 graph on the held-out set; below `min_agreement` the export is refused.
3. The bundle (`bundle.write_bundle`): both graphs, the registry's `model.json`, and the signed manifest with
   the preprocessing version and spec, the calibration contract, the inputs/outputs and the detection rule.

Same registry entry, same code and same key ⇒ the same bundle bytes (nothing time-dependent is written).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import onnx

from michi.blobs import BlobNotFound, BlobStore
from michi.contracts.v1 import common_pb2
from michi.edge.bundle import FP32_FILE, INT8_FILE, REGISTRY_MANIFEST_FILE, write_bundle
from michi.edge.quantisation import (
    NOT_QUANTISABLE,
    QUANTISATION_METHOD,
    Agreement,
    agreement,
    quantisable_weights,
    quantise,
)
from michi.edge.reference_windows import WindowSet, quantisation_windows
from michi.registry.layout import model_folder
from michi.registry.records import ModelVersion
from michi.windows.calibration import RELIABLE_CONFIDENCE
from michi.windows.features import (
    DATA_VERSION,
    FEATURE_NAMES,
    HOP_SECONDS,
    SIGNAL_CHANNELS,
    SIGNAL_RATE_HZ,
    SIGNAL_STEPS,
    WINDOW_SECONDS,
    feature_spec,
)
from michi.windows.model_spec import CLASS_EVENT_TYPES, DECISION_THRESHOLD, RISKY_EVENT_TYPES

logger = logging.getLogger(__name__)

# The int8 model must decide as the fp32 model on at least this share of held-out windows.
MIN_AGREEMENT = 0.99


class EdgeExportError(RuntimeError):
    """The bundle cannot be made; the message says why."""


class VersionSource(Protocol):
    """What the export reads from the registry (`michi.registry.ModelRegistry`)."""

    def get(self, name: str, version: str) -> ModelVersion: ...

    def champion(self, name: str) -> ModelVersion | None: ...


@dataclass(frozen=True)
class ExportedBundle:
    folder: Path
    manifest: dict[str, Any]
    agreement: Agreement | None


def export_bundle(
    registry: VersionSource,
    blobs: BlobStore,
    name: str,
    version: str | None,
    output: Path,
    key: bytes,
    *,
    windows: tuple[WindowSet, WindowSet] | None = None,
    min_agreement: float = MIN_AGREEMENT,
) -> ExportedBundle:
    """Write `<output>/<name>-<version>/` for `version` of `name` (the champion when None)."""
    chosen = registry.get(name, version) if version is not None else registry.champion(name)
    if chosen is None:
        raise EdgeExportError(f"{name} has no champion; name a version")
    fp32 = _read_artifact(blobs, chosen)
    registry_manifest = _read_registry_manifest(blobs, chosen)
    files = {FP32_FILE: fp32}
    if registry_manifest is not None:
        files[REGISTRY_MANIFEST_FILE] = registry_manifest
    precisions: dict[str, Any] = {"fp32": {"file": FP32_FILE}}
    measured: Agreement | None = None
    if quantisable_weights(onnx.load_from_string(fp32)) == 0:
        precisions["int8"] = {"file": None, "reason": NOT_QUANTISABLE}
    else:
        # Only now: simulating and reading the drives takes seconds, and a rule graph needs none of it.
        calibration, held_out = windows if windows is not None else quantisation_windows()
        try:
            int8 = quantise(fp32, calibration)
        except Exception as error:  # onnxruntime's quantiser raises its own types for graphs it cannot take
            raise EdgeExportError(f"{chosen.name} {chosen.version}: int8 quantisation failed: {error}") from error
        measured = agreement(fp32, int8, held_out)
        if min(measured.class_agreement, measured.call_agreement) < min_agreement:
            raise EdgeExportError(
                f"the int8 model agrees with fp32 on {measured.call_agreement:.2%} of held-out calls and "
                f"{measured.class_agreement:.2%} of classes, below {min_agreement:.0%}; not exported"
            )
        files[INT8_FILE] = int8
        precisions["int8"] = {
            "file": INT8_FILE,
            "method": QUANTISATION_METHOD,
            "calibration": {"windows": calibration.count, "sources": calibration.sources},
            "held_out": {**measured.to_dict(), "sources": held_out.sources, "minimum": min_agreement},
        }
        missing = calibration.sources_missing + held_out.sources_missing
        if missing:
            precisions["int8"]["sources_missing"] = missing
    manifest = {
        "model": {
            "name": chosen.name,
            "version": chosen.version,
            "stage": str(chosen.stage),
            "data_version": chosen.data_version,
            "code_version": chosen.code_version,
            "artifact_sha256": chosen.artifact_sha256,
        },
        "preprocessing": {"version": DATA_VERSION, "code": "michi.windows", "spec": feature_spec()},
        "calibration_contract": calibration_contract(),
        **graph_signature(fp32),
        "classes": [
            {"column": column, "name": common_pb2.EventType.Name(event_type), "event_type": int(event_type)}
            for column, event_type in enumerate(CLASS_EVENT_TYPES)
        ],
        "detection_rule": detection_rule(),
        "precisions": {
            precision: {**entry, **({"bytes": len(files[entry["file"]])} if entry.get("file") else {})}
            for precision, entry in precisions.items()
        },
        "default_precision": "int8" if INT8_FILE in files else "fp32",
    }
    folder = write_bundle(output / f"{chosen.name}-{chosen.version}", files, manifest, key)
    logger.info(
        "edge bundle exported",
        extra={"model": chosen.name, "version": chosen.version, "folder": str(folder), "int8": INT8_FILE in files},
    )
    return ExportedBundle(folder, json.loads((folder / "manifest.json").read_text()), measured)


def _read_artifact(blobs: BlobStore, chosen: ModelVersion) -> bytes:
    try:
        payload = asyncio.run(blobs.read_bytes(blobs.key_for_uri(chosen.artifact_uri)))
    except (BlobNotFound, ValueError) as error:
        raise EdgeExportError(f"{chosen.name} {chosen.version}: cannot read {chosen.artifact_uri}: {error}") from error
    actual = hashlib.sha256(payload).hexdigest()
    if actual != chosen.artifact_sha256:
        raise EdgeExportError(
            f"{chosen.name} {chosen.version}: the artifact's sha256 is {actual}, the registry says "
            f"{chosen.artifact_sha256}; refusing to ship it"
        )
    return payload


def _read_registry_manifest(blobs: BlobStore, chosen: ModelVersion) -> bytes | None:
    try:
        return asyncio.run(blobs.read_bytes(f"{model_folder(chosen.name, chosen.version)}/model.json"))
    except BlobNotFound:
        return None


def graph_signature(payload: bytes) -> dict[str, Any]:
    """Inputs and outputs as the graph declares them (`batch` for a symbolic dimension)."""
    graph = onnx.load_from_string(payload).graph
    initializers = {initializer.name for initializer in graph.initializer}

    def described(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": value.name,
                "shape": [dimension.dim_param or dimension.dim_value for dimension in value.type.tensor_type.shape.dim],
                "type": onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower(),
            }
            for value in values
            if value.name not in initializers
        ]

    return {"inputs": described(graph.input), "outputs": described(graph.output)}


def calibration_contract() -> dict[str, Any]:
    """What the device must compute before the model, in which axes (docs/edge.md, docs/inference.md)."""
    return {
        "sensors": {
            "accelerometer": "m/s², device axes x, y, z, gravity included (gravity-removed: acceleration_kind LINEAR)",
            "gyroscope": "rad/s, device axes x, y, z; optional (GYROSCOPE_ABSENT: zeros, calibration from stops and GPS)",
            "gps": "optional fixes (offset, latitude, longitude, speed m/s, heading degrees), about 1 Hz",
            "imu_rate_hz": "10 to 400, measured from the sample times (may be fractional)",
        },
        "mount": {
            "code": "michi.windows.calibration.update_calibration",
            "state": "per device, folded over every upload in order and carried across trips (michi.windows.chain)",
            "frame": "ISO 8855 vehicle axes forward-left-up: vehicle = rotation @ device",
            "states": {
                "calibrated": f"gravity and forward confidence >= {RELIABLE_CONFIDENCE}",
                "gravity-only": f"gravity confidence >= {RELIABLE_CONFIDENCE}, forward not yet known",
                "uncalibrated": "neither",
            },
            "before_forward_is_known": "the longitudinal and lateral signal channels are zero, never device axes",
        },
        "windows": {
            "code": "michi.windows.features.extract_windows",
            "seconds": WINDOW_SECONDS,
            "hop_seconds": HOP_SECONDS,
            "features": list(FEATURE_NAMES),
            "signal_channels": list(SIGNAL_CHANNELS),
            "signal_rate_hz": SIGNAL_RATE_HZ,
            "signal_steps": SIGNAL_STEPS,
        },
    }


def detection_rule() -> dict[str, Any]:
    return {
        "code": "michi.windows.model_spec.detection_allowed",
        "threshold": DECISION_THRESHOLD,
        "risky_classes": sorted(common_pb2.EventType.Name(event_type) for event_type in RISKY_EVENT_TYPES),
        "call": "the most likely class is risky with probability >= threshold, and the window is allowed",
        "allowed": {
            "calibrated": "always (the IMU alone is enough)",
            "gravity-only": "when GPS covers the window (feature gps_available > 0)",
            "uncalibrated": "never",
        },
    }
