"""The device side of the edge bundle: verify it, then calibrate, window, score and decide as the cloud does.

    runtime = EdgeRuntime.load(Path("/data/bundles/michi-risk-7"), key=fleet_key)   # BundleRefused if not trusted
    result = runtime.process(upload)          # one upload_pb2.Upload, in the device's own order
    for call in result.calls: ...             # (window id, event type, probability): the windows the rule calls
    to_send = runtime.upload_to_send(upload)  # process, then the events-only upload (or, 1 in 100, the upload
                                              # with the device's calibration sums from before it)

    runtime = EdgeRuntime.load(folder, key, calibration_file=Path("/data/michi/calibration.json"), device_id=device)
    runtime.restored.reason                   # "restored after 1234 uploads", or why it starts fresh

Preprocessing is `michi.windows` itself — the mount calibration folded over the device's uploads in order
(`michi.windows.chain.windows_in_order`, sums carried from one upload to the next as inference keeps them per
device) and `extract_windows` — so the features are the cloud's bit for bit, and the bundle is refused when its
preprocessing version is not the one this code computes. The decision per window is
`michi.edge.decisions.window_calls`: the cloud's threshold and `detection_allowed`. Merging consecutive calls
into one detection stays the cloud's job (inference's episodes), so an event is counted once whichever side
decided it. ONNX Runtime runs on one intra-op thread by default (a dashcam's spare core).

With `calibration_file` and `device_id` the device's sums survive a reboot (`michi.edge.calibration_state`): read
once when the runtime starts (a missing, damaged, foreign or other-contract file starts fresh, with the reason in
`restored` and the log), saved atomically after every `save_every` uploads that changed them and at once when the
mount moved (the reset is what must survive), and by `save_calibration()` (call it at ignition off).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from michi.contracts.v1 import upload_pb2
from michi.edge.bundle import MANIFEST_FILE, VerifiedBundle, verify_bundle
from michi.edge.calibration_state import CalibrationStateFile, RestoredCalibration, sums_to_json
from michi.edge.decisions import NO_CALL, window_calls
from michi.edge.quantisation import model_feeds, session
from michi.edge.reports import FULL_EVERY, events_only_upload, sampled_in_full
from michi.windows.calibration import Calibration, CalibrationSums
from michi.windows.chain import windows_in_order
from michi.windows.features import FEATURE_INDEX, FEATURE_NAMES, window_id
from michi.windows.model_spec import PROBABILITIES_OUTPUT, detection_allowed
from michi.windows.upload import upload_from_proto

logger = logging.getLogger(__name__)

# Save the calibration after this many uploads that changed it (about 2.5 KB written per save; one 10 s upload
# between saves loses at most that upload's evidence at a power cut).
SAVE_EVERY = 1


@dataclass(frozen=True)
class WindowCall:
    window_id: str
    start_s: float  # absolute (epoch seconds)
    end_s: float
    event_type: int  # a risky common_pb2.EventType
    probability: float


@dataclass
class EdgeUploadResult:
    """What the device decided for one upload."""

    upload_id: str
    device_id: str
    trip_id: str
    calibration_state: str
    window_ids: list[str] = field(default_factory=list)
    starts_s: list[float] = field(default_factory=list)  # absolute (epoch seconds)
    ends_s: list[float] = field(default_factory=list)
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), dtype=np.float32))
    window_calls: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    skipped_reason: str | None = None
    # What an events-only upload reports: window starts from started_at, the features [N, 26], the
    # calibration estimate the calls were made with, and the driving the upload covers.
    offsets_s: list[float] = field(default_factory=list)
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32))
    calibration: Calibration | None = None
    duration_s: float = 0.0

    @property
    def calls(self) -> list[WindowCall]:
        return [
            WindowCall(
                self.window_ids[position],
                self.starts_s[position],
                self.ends_s[position],
                int(event_type),
                float(self.probabilities[position].max()),
            )
            for position, event_type in enumerate(self.window_calls)
            if event_type != NO_CALL
        ]


class EdgeRuntime:
    """One verified bundle, one ONNX Runtime session, and the mount calibration of the device(s) it serves."""

    def __init__(
        self,
        bundle: VerifiedBundle,
        *,
        precision: str | None = None,
        threads: int = 1,
        calibration_file: Path | None = None,
        device_id: str | None = None,
        save_every: int = SAVE_EVERY,
    ) -> None:
        self.bundle = bundle
        self.precision = precision or str(bundle.manifest["default_precision"])
        self._session = session(bundle.model_bytes(self.precision), threads)
        self.model_name = str(bundle.manifest["model"]["name"])
        self.model_version = str(bundle.manifest["model"]["version"])
        # device id → calibration sums: a dashcam holds one, a test or a gateway may serve several.
        self.calibration: MutableMapping[str, CalibrationSums] = {}
        # The saved state of `device_id` (only its sums are saved; another device's uploads are processed, not saved).
        self.restored = RestoredCalibration(CalibrationSums(), False, "no calibration file")
        self.save_error: str | None = None  # why the latest save failed, None once one succeeds
        self._state: CalibrationStateFile | None = None
        self._device_id = device_id
        self._save_every = max(1, save_every)
        self._uploads = 0  # uploads folded into the saved state since it began
        self._unsaved = 0
        if (calibration_file is None) != (device_id is None):
            raise ValueError("calibration_file and device_id go together: the file holds that device's calibration")
        if calibration_file is not None and device_id is not None:
            self._state = CalibrationStateFile(calibration_file, device_id, bundle.manifest)
            self.restored = self._state.load()
            self.calibration[device_id] = self.restored.sums
            self._uploads = self.restored.uploads
            if self.restored.restored:
                logger.info("edge calibration %s", self.restored.reason, extra={"device_id": device_id})
            else:
                logger.warning(
                    "edge calibration starts fresh: %s", self.restored.reason, extra={"device_id": device_id}
                )

    @classmethod
    def load(
        cls,
        folder: Path,
        key: bytes,
        *,
        precision: str | None = None,
        threads: int = 1,
        calibration_file: Path | None = None,
        device_id: str | None = None,
        save_every: int = SAVE_EVERY,
    ) -> EdgeRuntime:
        return cls(
            verify_bundle(folder, key),
            precision=precision,
            threads=threads,
            calibration_file=calibration_file,
            device_id=device_id,
            save_every=save_every,
        )

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """Probabilities [N, 5] of windows (CLASS_EVENT_TYPES order)."""
        if features.shape[0] == 0:
            return np.zeros((0, 5), dtype=np.float32)
        (probabilities,) = self._session.run([PROBABILITIES_OUTPUT], model_feeds(self._session, features, signals))
        return np.asarray(probabilities, dtype=np.float32)

    def process(self, upload: upload_pb2.Upload) -> EdgeUploadResult:
        """Calibrate with this upload, cut its windows, score and decide them (uploads in the device's order)."""
        before = self.calibration.get(upload.device_id)
        result = decide_upload(upload, self.calibration, self.predict)
        mine = self._state is not None and upload.device_id == self._device_id
        # A degenerate upload leaves the sums as they were: nothing new to save.
        if not mine or self.calibration.get(upload.device_id) is before:
            return result
        self._uploads += 1
        self._unsaved += 1
        moved = result.calibration is not None and result.calibration.orientation_changed
        if moved:
            logger.warning("device mount moved: calibration restarted", extra={"device_id": upload.device_id})
        if moved or self._unsaved >= self._save_every:
            self.save_calibration()
        return result

    def save_calibration(self) -> bool:
        """Save the device's sums now (atomically); False, with `save_error` and a log line, when it cannot."""
        if self._state is None or self._device_id is None:
            return False
        sums = self.calibration.get(self._device_id) or CalibrationSums()
        try:
            self._state.save(sums, self._uploads)
        except (OSError, ValueError) as error:
            self.save_error = f"{type(error).__name__}: {error}"
            logger.warning("edge calibration not saved: %s", self.save_error, extra={"device_id": self._device_id})
            return False
        self.save_error, self._unsaved = None, 0
        return True

    @property
    def edge_model(self) -> upload_pb2.EdgeModel:
        """The model an events-only upload names: the bundle's, with its manifest's sha256 and the precision run."""
        model = self.bundle.manifest["model"]
        manifest = (self.bundle.folder / MANIFEST_FILE).read_bytes()
        return upload_pb2.EdgeModel(
            name=str(model["name"]),
            version=str(model["version"]),
            data_version=str(model.get("data_version", "")),
            bundle_sha256=hashlib.sha256(manifest).hexdigest(),
            precision=self.precision,
        )

    def upload_to_send(self, upload: upload_pb2.Upload, *, full_every: int = FULL_EVERY) -> upload_pb2.Upload:
        """Process `upload` (in the device's order), then what to send: itself, carrying the device's calibration
        sums from before it (`device_calibration`), when it is one of the 1 in `full_every` sampled in full
        (`sampled_in_full`) or when the runtime could not window it; else its events-only form
        (`michi.edge.reports.events_only_upload`)."""
        before = (self.calibration.get(upload.device_id) or CalibrationSums()).copy()
        result = self.process(upload)
        if sampled_in_full(upload.upload_id, full_every) or result.skipped_reason is not None:
            return with_device_calibration(upload, before)
        return events_only(upload, result, self.edge_model)


def with_device_calibration(upload: upload_pb2.Upload, sums: CalibrationSums) -> upload_pb2.Upload:
    """A copy of `upload` carrying `sums` (the device's, from before it) in `device_calibration`, so the cloud folds
    it from the device's calibration and computes the device's windows (docs/edge.md). Sums that cannot be
    serialised (non-finite: never written by calibration) are left out, with a log line: the upload still goes."""
    full = upload_pb2.Upload()
    full.CopyFrom(upload)
    try:
        full.device_calibration.sums_json = sums_to_json(sums)
    except ValueError as error:
        full.ClearField("device_calibration")
        logger.warning("device calibration not attached: %s", error, extra={"device_id": upload.device_id})
    return full


def events_only(upload: upload_pb2.Upload, result: EdgeUploadResult, model: upload_pb2.EdgeModel) -> upload_pb2.Upload:
    """The events-only form of `upload` from what the runtime decided about it."""
    return events_only_upload(
        upload,
        model=model,
        calibration=result.calibration,
        duration_s=result.duration_s,
        offsets_s=result.offsets_s,
        probabilities=result.probabilities,
        window_calls=result.window_calls,
        features=result.features,
    )


def decide_upload(
    upload: upload_pb2.Upload,
    sums: MutableMapping[str, CalibrationSums],
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> EdgeUploadResult:
    """What `EdgeRuntime.process` does with any model: `sums` (device id → calibration sums) updated in place."""
    data = upload_from_proto(upload_pb2.UploadReceived(upload=upload))
    (chained,) = windows_in_order([data], sums)
    calibration = chained.calibration
    state = calibration.state if calibration is not None else "uncalibrated"
    result = EdgeUploadResult(upload.upload_id, upload.device_id, upload.trip_id, state)
    result.calibration, result.duration_s = calibration, data.duration_s
    if chained.skipped_reason is not None or not chained.windows.count:
        result.skipped_reason = chained.skipped_reason or "no-windows"
        return result
    windows = chained.windows
    result.window_ids = [window_id(data.upload_id, float(start)) for start in windows.starts_s]
    result.offsets_s = [float(start) for start in windows.starts_s]
    result.starts_s = [data.started_at_s + float(start) for start in windows.starts_s]
    result.ends_s = [data.started_at_s + float(end) for end in windows.ends_s]
    result.features = windows.features
    result.probabilities = np.asarray(predict(windows.features, windows.signals), dtype=np.float32)
    allowed = detection_allowed(state, windows.features[:, FEATURE_INDEX["gps_available"]] > 0)
    result.window_calls = window_calls(result.probabilities, allowed)
    return result
