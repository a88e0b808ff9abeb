"""Monitor benchmarks: its drift update against Evidently on the same rows, and its throughput against a bare loop.

    .venv/bin/python -m benchmarks monitor [--quick]

Feature rows: simulated fleets (50, 25 and 100 Hz) cut into windows by `michi.windows` as serving does. The
reference is one simulation (the training windows a model's reference profile is built from, with the trainer's
`reference_profile`); the live rows are drawn with replacement from an independent simulation, float32 as a
`Prediction` carries them, with `DRIFTS` applied to six of the 26 features (`FEATURE_NAMES`).

1. Drift update: 1,000,000 live rows (100,000 with `--quick`) as one window of cohort `all`. The monitor's path as
   the service runs it, broker left out: serialized champion `Prediction`s (built and serialized outside the
   timing) as `confluent_kafka.Message`s with the headers a producer writes, handed in poll batches of 1,000 to
   the service's consumer (`services/monitor/entrypoints/consumer.py: MonitorConsumer` on the kit's batch loop,
   `michi/kit/consumer.py`): each record's headers checked and its `Prediction` decoded, the batch windowed
   columnar (`DriftMonitor.handle_batch`: one pass over the messages, then numpy), unpacked, binned on the
   profile's grid and counted (`DriftMonitor.flush`), and at the last row the window's close (`feature_drift` of
   every feature, PSI among them, and what else a close computes); SQL and Kafka publishing are replaced by
   objects that keep nothing. Cohort `all` only (the service adds each row to its vehicle, rate and firmware
   cohorts' windows too: part 2). Against it, in the same run, Evidently 0.7's
   `Report([DataDriftPreset(method="psi")])` on the same reference and live rows, in its own venv
   (`.venv-bench-evidently`, created on first use from `benchmarks/evidently-requirements.txt`: Evidently needs
   pandas < 3, which Michi's pins exclude), as a subprocess that reads the rows from .npy files and prints JSON;
   only `Dataset.from_pandas` and `Report.run` are timed, not the import or the file reads. Goal: the monitor
   at least 100x faster, its PSI within 0.02 of Evidently's on every feature, judged on the like-for-like
   comparison: the monitor's own update on columnar input (`columnar_drift`: the rows as float32 arrays per
   1,000, as Evidently gets a DataFrame, binned, counted and judged; the median of `COLUMNAR_RUNS` runs). The
   service's path above, with a message decoded per prediction, is reported beside it.
2. Throughput: 200,000 serialized champion `Prediction`s (20,000 with `--quick`) of the same live rows, with
   vehicle types, rates and firmware versions (the monitor's cohorts), on the predictions topic of the harness's
   Kafka, the served version's reference profile in the workspace's blob store (`michi.registry.layout`).
   `python -m services.monitor` (default settings, windows of 20,000) reads them; predictions/s is measured from
   the first prediction it reports windowed until the last (its /metrics: full windows and the open window's rows
   of cohort `all`; start-up and group join excluded; read every 0.2 s until the first, then less often while far
   from the end, `progress_pause`: each read costs the monitor's main thread 10-25 ms). Baseline in the same run and broker:
   a bare confluent-kafka loop that consumes the topic in batches of 1,000 and decodes each `Prediction`,
   measured from its first batch to its last record. Goal: the monitor at 70 % or more of the bare loop. Beside it,
   for reference only, the same bare loop with the monitor's prefetch settings (`services/monitor/wiring.py:
   PREFETCH`, librdkafka fetching again 10 ms after its queue was full instead of 1 s).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from confluent_kafka import Consumer, Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import (
    PREFIX,
    REPOSITORY,
    BenchmarkFailed,
    CpuMeter,
    Workspace,
    describe_cpu,
    note,
    print_table,
    ratio,
)
from michi.blobs import BlobStore
from michi.bus.catalog import PREDICTIONS
from michi.bus.connection import KafkaConnection
from michi.bus.headers import build_headers
from michi.bus.producer import EventProducer
from michi.contracts.v1 import common_pb2, inference_pb2
from michi.registry.layout import reference_profile_key
from michi.windows.features import FEATURE_INDEX, FEATURE_NAMES, pack_features
from michi.windows.model_spec import MODEL_NAME
from services.monitor.adapters.metrics import MonitorMetrics
from services.monitor.domain.drift import categorical, feature_drift
from services.monitor.domain.profiles import FeatureGrid, ReferenceProfile, read_profile
from services.monitor.domain.windows import COHORT_ALL, BatchColumns, DriftWindow, RowBatch
from services.monitor.entrypoints.consumer import MonitorConsumer
from services.monitor.handlers import ClosedWindow, ConceptDriftMonitor, ConceptPolicy, DriftMonitor, DriftPolicy
from services.monitor.wiring import PREFETCH
from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulated_windows
from services.trainer.domain.profile import reference_profile

MODEL_VERSION = "bench-1"
DATA_VERSION = "bench-simulated"
EVIDENTLY_VENV = REPOSITORY / ".venv-bench-evidently"
EVIDENTLY_REQUIREMENTS = Path(__file__).with_name("evidently-requirements.txt")
# The venv is reinstalled when the requirements differ from the ones it was built with.
EVIDENTLY_STAMP = EVIDENTLY_VENV / "requirements.installed"
PSI_GOAL = 0.02
SPEED_GOAL = 100.0
# The columnar update is timed this many times (a second or less each; Evidently once), its median reported.
COLUMNAR_RUNS = 3
THROUGHPUT_GOAL = 0.70
# The monitor's default threshold, to compare verdicts.
PSI_THRESHOLD = 0.2
PARTITIONS = PREDICTIONS.partitions
# The monitor's default window; the counts of predictions are multiples of it, so the last one closes a window.
WINDOW_ROWS = 20_000
# How often the monitor's /metrics is read for its progress (each read costs it 10-25 ms of its main thread, more
# on a busy machine): this often until the first prediction is windowed and near the expected end; in between,
# a read at half the time the rate so far says is left, at most `PROGRESS_POLL_MAX_S` apart.
PROGRESS_POLL_S = 0.2
PROGRESS_POLL_MIN_S = 0.05
PROGRESS_POLL_MAX_S = 1.0
DEVICES = 97
# What inference copies from the upload: the monitor's cohorts beside `all` (vehicle type, rate, firmware).
VEHICLE_TYPES = ("car", "van", "truck")
FIRMWARE_VERSIONS = ("2.3.1", "2.4.0")
CHUNK = 50_000
BARE_BATCH = 1000
# Evidently bins a numerical column with at most this many distinct reference values per value
# (`evidently.legacy.calculations.stattests.utils.get_binned_data`, 0.7.23).
EVIDENTLY_PER_VALUE_MAX = 20

# What changed in the live fleet, per drifted feature (everything else is only a different simulation).
DRIFTS = {
    "gps_speed_mps": "x1.25 (faster roads)",
    "vertical_peak_to_peak_mps2": "x1.6 (stiffer mount)",
    "vertical_jerk_max_mps3": "x1.6 (stiffer mount)",
    "sample_rate_hz": "half the 25 Hz devices at 50 Hz (firmware)",
    "calibration_confidence": "x0.6 on 30 % of rows (new mounts)",
    "gps_available": "0 on 10 % of rows (GPS lost)",
}


# --------------------------------------------------------------------------- feature rows


@dataclass
class FeatureRows:
    """Reference windows (what the profile is built from) and live rows, columns in `FEATURE_NAMES` order."""

    reference: np.ndarray  # [R, F] float32
    reference_signals: np.ndarray  # [R, C, T] float32
    current: np.ndarray  # [N, F] float32
    pool: int  # distinct simulated windows the live rows were drawn from


def _fleet(seed: int, devices: int, duration_s: float) -> SimulationRecipe:
    fleets = (FleetRecipe(seed, 50), FleetRecipe(seed + 1, 25), FleetRecipe(seed + 2, 100))
    return SimulationRecipe(fleets=fleets, devices=devices, duration_s=duration_s)


def apply_drifts(current: np.ndarray, random: np.random.Generator) -> None:
    """`DRIFTS`, in place."""
    rows = current.shape[0]
    current[:, FEATURE_INDEX["gps_speed_mps"]] *= 1.25
    current[:, FEATURE_INDEX["vertical_peak_to_peak_mps2"]] *= 1.6
    current[:, FEATURE_INDEX["vertical_jerk_max_mps3"]] *= 1.6
    rate = current[:, FEATURE_INDEX["sample_rate_hz"]]
    rate[(rate == 25.0) & (random.random(rows) < 0.5)] = 50.0
    confidence = current[:, FEATURE_INDEX["calibration_confidence"]]
    confidence[random.random(rows) < 0.3] *= 0.6
    current[random.random(rows) < 0.1, FEATURE_INDEX["gps_available"]] = 0.0


def feature_rows(rows: int, *, quick: bool) -> FeatureRows:
    began = time.perf_counter()
    reference = simulated_windows(_fleet(201, 8 if quick else 20, 400.0))
    pool = simulated_windows(_fleet(301, 4 if quick else 10, 400.0))
    note(
        f"monitor: {reference.count:,} reference and {pool.count:,} live windows simulated "
        f"in {time.perf_counter() - began:.0f} s"
    )
    random = np.random.default_rng(17)
    current = pool.features[random.integers(0, pool.count, rows)].astype(np.float32)
    apply_drifts(current, random)
    return FeatureRows(reference.features.astype(np.float32), reference.signals, current, pool.count)


def profile_document(rows: FeatureRows) -> bytes:
    """The reference profile file as the trainer writes it (`services/trainer/handlers.py`)."""
    document = reference_profile(rows.reference, rows.reference_signals, data_version=DATA_VERSION)
    return json.dumps(document, sort_keys=True).encode()


def prediction_message(values: np.ndarray, index: int) -> inference_pb2.Prediction:
    """A champion prediction of the served version carrying one row of features (as inference publishes it)."""
    device_number = index % DEVICES
    device = f"bench-device-{device_number}"
    message = inference_pb2.Prediction(
        event_id=f"bench-prediction-{index}",
        variant=inference_pb2.VARIANT_CHAMPION,
        predicted=common_pb2.EVENT_TYPE_NORMAL,
        confidence=0.9,
        sample_rate_hz=int(values[FEATURE_INDEX["sample_rate_hz"]]),
        gps_available=bool(values[FEATURE_INDEX["gps_available"]]),
        vehicle_type=VEHICLE_TYPES[device_number % len(VEHICLE_TYPES)],
        firmware_version=FIRMWARE_VERSIONS[device_number % len(FIRMWARE_VERSIONS)],
    )
    message.occurred_at.seconds = 1_790_000_000 + index // 10
    lineage = message.lineage
    lineage.device_id = device
    lineage.upload_id = f"bench-upload-{index // 9}"
    lineage.trip_id = f"bench-trip-{index // 900}"
    lineage.window_id = f"bench-window-{index}"
    lineage.model_name, lineage.model_version, lineage.data_version = MODEL_NAME, MODEL_VERSION, DATA_VERSION
    message.features.update(zip(FEATURE_NAMES, values.tolist(), strict=True))
    message.packed_features = pack_features(values[np.newaxis, :])[0]
    return message


# --------------------------------------------------------------------------- 1. drift update


@dataclass
class MonitorDrift:
    rows: int
    decode_s: float  # the kit's batch loop: poll batches handed over, each record's headers checked and decoded, wall
    handle_s: float  # DriftMonitor.handle_batch per poll batch, the window's close excluded, wall
    flush_s: float  # per poll batch: unpacked, binned, counted (DriftMonitor.flush), wall
    close_s: float  # the window's close: feature_drift of every feature (PSI among them) and the rest, wall
    cpu_s: float
    psi: dict[str, float]
    per_bin: dict[str, bool]  # compared per reference bin (few values), not on Sturges bins

    @property
    def total_s(self) -> float:
        return self.decode_s + self.handle_s + self.flush_s + self.close_s


class _Records:
    """A consumer handing over poll batches of `confluent_kafka.Message`s (the type the service's consumer
    returns, built here with the bytes and headers a producer writes), on the predictions topic's partitions."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self.at = 0

    def load(self, records: list[Any]) -> None:
        self.records, self.at = records, 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        callbacks["on_assign"](self, [TopicPartition(self.topic, number) for number in range(PARTITIONS)])

    def committed(self, partitions: list[TopicPartition], timeout: float = 0.0) -> list[TopicPartition]:
        return [TopicPartition(item.topic, item.partition, -1001) for item in partitions]

    def consume(self, count: int, timeout: float) -> list[Any]:
        batch = self.records[self.at : self.at + count]
        self.at += count
        return batch

    def commit(self, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _FixedProfile:
    def __init__(self, profile: ReferenceProfile) -> None:
        self.fixed = profile

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return self.fixed


class _Quiet:
    """Publisher, drift history and label outcomes that keep nothing (the drift update alone is timed)."""

    def publish_alert(self, alert: Any) -> None:
        pass

    def publish_label_requests(self, requests: list[Any]) -> None:
        pass

    def record_close(self, closed: ClosedWindow, latest_s: float, episode: Any) -> None:
        pass

    def progress(self, model_name: str, model_version: str, cohort: str) -> dict[tuple[str, int], int]:
        return {}

    def open_episode(self, model_name: str, model_version: str, cohort: str) -> None:
        return None

    def sequence_ready(self) -> list[Any]:
        return []

    def outcomes(self) -> list[Any]:
        return []

    def concept_drift_ids(self) -> set[str]:
        return set()


class _Closes(MonitorMetrics):
    """The service's metrics, keeping each closed window for its figures."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[ClosedWindow] = []

    def window_closed(self, closed: ClosedWindow) -> None:
        super().window_closed(closed)
        self.closed.append(closed)


class _Timer:
    """Wall seconds spent in a method of an object (patched on the instance: its own calls to it count too)."""

    def __init__(self, owner: Any, name: str) -> None:
        self.seconds = 0.0
        method = getattr(owner, name)

        def timed(*arguments: Any, **keywords: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*arguments, **keywords)
            finally:
                self.seconds += time.perf_counter() - began

        setattr(owner, name, timed)


def monitor_drift(profile: ReferenceProfile, current: np.ndarray) -> MonitorDrift:
    """The monitor's drift update over all of `current` as one window of cohort `all`: the service's consumer path
    (`MonitorConsumer` on the kit's batch loop: decode, `DriftMonitor.handle_batch`, `flush` per poll batch of
    1,000, the window's close), on `confluent_kafka.Message`s built beforehand, the broker left out."""
    count = current.shape[0]
    topic = PREDICTIONS.name(PREFIX)
    records = _Records(topic)
    quiet = _Quiet()
    metrics = _Closes()
    concept = ConceptDriftMonitor(outcomes=quiet, publisher=quiet, reports=metrics, policy=ConceptPolicy())  # type: ignore[arg-type]
    monitor = DriftMonitor(
        profiles=_FixedProfile(profile),
        publisher=quiet,
        history=quiet,  # type: ignore[arg-type]
        reports=metrics,
        # One window of every row (it closes, full, at the last), cohort `all` only.
        policy=DriftPolicy(window_rows=count, cohorts=(), psi_threshold=PSI_THRESHOLD),
        calibrations=concept.calibration,
    )
    consumer = MonitorConsumer(
        consumer=records,  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
        monitor=monitor,
        concept=concept,
        metrics=metrics,
        prefix=PREFIX,
    )
    handle, flush, close = (_Timer(monitor, name) for name in ("handle_batch", "flush", "_close"))
    headers: list[tuple[str, str | bytes | None]] = list(build_headers(PREDICTIONS.schema))
    wall = cpu_s = 0.0
    offsets = [0] * PARTITIONS
    for first in range(0, count, CHUNK):
        # Building and serialising the messages is the producer's work, not the monitor's: outside the timing.
        chunk = []
        for at, values in enumerate(current[first : first + CHUNK]):
            message = prediction_message(values, first + at)
            partition = (first + at) % PARTITIONS
            chunk.append(
                Message(
                    topic=topic,
                    partition=partition,
                    offset=offsets[partition],
                    key=message.lineage.device_id.encode(),
                    value=message.SerializeToString(),
                    headers=headers,
                )
            )
            offsets[partition] += 1
        records.load(chunk)
        # The messages stand for the broker's: kept out of the cyclic collector's scans as the service's own
        # long-lived objects are (`MonitorConsumer.run` freezes what starting made).
        gc.freeze()
        cpu_began, began = time.process_time(), time.perf_counter()
        while consumer.poll_once(0):
            pass
        wall += time.perf_counter() - began
        cpu_s += time.process_time() - cpu_began
        gc.unfreeze()
    if len(metrics.closed) != 1 or metrics.closed[0].rows != count:
        raise BenchmarkFailed(f"the monitor closed {[closed.rows for closed in metrics.closed]} rows, not {count:,}")
    (closed,) = metrics.closed
    return MonitorDrift(
        rows=closed.rows,
        decode_s=wall - handle.seconds - flush.seconds,
        handle_s=handle.seconds - close.seconds,
        flush_s=flush.seconds,
        close_s=close.seconds,
        cpu_s=cpu_s,
        psi={result.feature: result.psi for result in closed.features if result.feature in FEATURE_INDEX},
        per_bin={feature.name: categorical(feature.histogram) for feature in profile.features},
    )


@dataclass
class ColumnarDrift:
    """The same update on columnar input: no messages, the rows' features already float32 blocks."""

    rows: int
    wall_s: float
    cpu_s: float
    psi: dict[str, float]
    # Wall seconds of every run when this is the median of several (`median_columnar_drift`).
    runs: tuple[float, ...] = ()


def columnar_drift(profile: ReferenceProfile, current: np.ndarray) -> ColumnarDrift:
    """The monitor's own drift update when rows arrive columnar, as Evidently's DataFrame does (what a batch of
    predictions in one message, or a columnar topic, would hand over): per 1,000 rows a float32 block of their
    features in `FEATURE_NAMES` order and arrays of their calls into a `RowBatch` (`extend_columns`), taken by
    the window of cohort `all` (`DriftWindow.take_rows`: offsets, time), binned on the profile's grid and
    counted in one compiled pass (`flush`), and at the end every feature's figures (`feature_drift`, as the close computes
    them). No decoding, no per-message fields, no devices, vehicle mix or drift sample: a lower bound of the
    service's update."""
    count = current.shape[0]
    grid = FeatureGrid(profile)
    window = DriftWindow(MODEL_NAME, MODEL_VERSION, COHORT_ALL, profile, grid)
    topic = PREDICTIONS.name(PREFIX)
    chunks = []
    for first in range(0, count, BARE_BATCH):  # the input, built outside the timing
        rows = np.ascontiguousarray(current[first : first + BARE_BATCH], dtype=np.float32)
        size = rows.shape[0]
        columns = BatchColumns.anonymous((topic, 0), first, np.full(size, 1_790_000_000 + first // 10, dtype=np.int64))
        calls = np.zeros(size, dtype=np.int64), np.full(size, 0.9)
        chunks.append((rows, calls, columns, np.arange(size)))
    # The input stands for the broker's: kept out of the cyclic collector's scans, as in `monitor_drift`.
    gc.collect()
    gc.freeze()
    cpu_began, began = time.process_time(), time.perf_counter()
    for rows, (predicted, confidences), columns, taken in chunks:
        batch = RowBatch(grid)
        batch.extend_columns(rows, predicted, confidences)
        window.take_rows(batch, columns, taken)
        window.flush()
    results = [
        feature_drift(
            feature.name,
            feature.histogram,
            window.histogram(position),
            reference_std=feature.std,
            psi_threshold=PSI_THRESHOLD,
        )
        for position, feature in enumerate(profile.features)
    ]
    wall, cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
    gc.unfreeze()
    return ColumnarDrift(window.rows, wall, cpu_s, {result.feature: result.psi for result in results})


def median_columnar_drift(profile: ReferenceProfile, current: np.ndarray, runs: int) -> ColumnarDrift:
    """`columnar_drift` `runs` times: the run of median wall time, with every run's."""
    measured = sorted((columnar_drift(profile, current) for _ in range(runs)), key=lambda run: run.wall_s)
    median = measured[len(measured) // 2]
    if any(run.psi != median.psi for run in measured):
        raise BenchmarkFailed("the columnar update's PSI changed from run to run")
    return ColumnarDrift(median.rows, median.wall_s, median.cpu_s, median.psi, tuple(run.wall_s for run in measured))


def evidently_report(folder: str) -> None:
    """Evidently's DataDriftPreset(method="psi") on the rows in `folder`, JSON on stdout.

    Runs in the Evidently venv, where Michi is not installed: `run_evidently` ships this function's source there,
    so it imports everything it uses itself.
    """
    import json
    import pathlib
    import time
    import warnings

    import evidently
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Evidently's plots divide by empty bins; the figures are not affected.
    warnings.simplefilter("ignore")
    path = pathlib.Path(folder)
    names = json.loads((path / "names.json").read_text())
    reference = pd.DataFrame(np.load(path / "reference.npy").astype(np.float64), columns=names)
    current = pd.DataFrame(np.load(path / "current.npy").astype(np.float64), columns=names)
    definition = DataDefinition(numerical_columns=names)
    began, cpu_began = time.perf_counter(), time.process_time()
    reference_data = Dataset.from_pandas(reference, data_definition=definition)
    current_data = Dataset.from_pandas(current, data_definition=definition)
    built, cpu_built = time.perf_counter(), time.process_time()
    snapshot = Report([DataDriftPreset(method="psi")]).run(current_data=current_data, reference_data=reference_data)
    ran, cpu_ran = time.perf_counter(), time.process_time()
    psi = {
        metric["config"]["column"]: float(metric["value"])
        for metric in snapshot.dict()["metrics"]
        if metric["config"].get("column") is not None
    }
    print(
        json.dumps(
            {
                "version": evidently.__version__,
                "pandas": pd.__version__,
                "datasets_s": built - began,
                "report_s": ran - built,
                "datasets_cpu_s": cpu_built - cpu_began,
                "report_cpu_s": cpu_ran - cpu_built,
                "psi": psi,
            }
        )
    )


@dataclass
class EvidentlyDrift:
    version: str
    pandas: str
    datasets_s: float
    report_s: float
    datasets_cpu_s: float
    report_cpu_s: float
    psi: dict[str, float]


def evidently_python() -> Path:
    """The Evidently venv's interpreter: created (python -m venv, pip install -r) unless it is there already."""
    python = EVIDENTLY_VENV / "bin" / "python"
    wanted = EVIDENTLY_REQUIREMENTS.read_text()
    if python.exists() and EVIDENTLY_STAMP.exists() and EVIDENTLY_STAMP.read_text() == wanted:
        return python
    note(f"monitor: installing {EVIDENTLY_REQUIREMENTS.name} into {EVIDENTLY_VENV.name} (once; a minute or two)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(EVIDENTLY_REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        raise BenchmarkFailed(f"pip install -r {EVIDENTLY_REQUIREMENTS} failed:\n{installed.stderr[-3000:]}")
    EVIDENTLY_STAMP.write_text(wanted)
    return python


def run_evidently(python: Path, rows: FeatureRows) -> EvidentlyDrift:
    with tempfile.TemporaryDirectory(prefix="michi-bench-evidently-") as folder:
        path = Path(folder)
        (path / "names.json").write_text(json.dumps(list(FEATURE_NAMES)))
        np.save(path / "reference.npy", rows.reference)
        np.save(path / "current.npy", rows.current)
        script = path / "evidently_report.py"
        script.write_text(f"{inspect.getsource(evidently_report)}\n\nevidently_report({folder!r})\n")
        finished = subprocess.run([str(python), str(script)], capture_output=True, text=True, timeout=1800)
    if finished.returncode != 0:
        raise BenchmarkFailed(f"the Evidently report failed:\n{finished.stderr[-3000:]}")
    figures = json.loads(finished.stdout.strip().splitlines()[-1])
    return EvidentlyDrift(
        version=figures["version"],
        pandas=figures["pandas"],
        datasets_s=figures["datasets_s"],
        report_s=figures["report_s"],
        datasets_cpu_s=figures["datasets_cpu_s"],
        report_cpu_s=figures["report_cpu_s"],
        psi=figures["psi"],
    )


@dataclass
class DriftComparison:
    monitor: MonitorDrift
    evidently: EvidentlyDrift
    columnar: ColumnarDrift
    reference_rows: int
    # Cores of the whole machine busy while each ran (the benchmark's own process is one of them).
    machine_monitor: float
    machine_evidently: float

    @property
    def speed(self) -> float:
        """Evidently's report time over the service path's whole drift update, decoding included (wall)."""
        return self.evidently.report_s / self.monitor.total_s

    @property
    def columnar_speed(self) -> float:
        """Evidently's report time over the monitor's update on columnar input (wall): the goal's comparison."""
        return self.evidently.report_s / self.columnar.wall_s

    def difference(self, feature: str) -> float:
        return abs(self.monitor.psi[feature] - self.evidently.psi[feature])

    @property
    def worst(self) -> tuple[str, float]:
        feature = max(FEATURE_NAMES, key=self.difference)
        return feature, self.difference(feature)


def compare_drift(rows: FeatureRows, document: bytes) -> DriftComparison:
    python = evidently_python()
    profile = read_profile(json.loads(document))
    count = rows.current.shape[0]
    note(f"monitor: the monitor's drift update over {count:,} predictions")
    # Nothing else of the benchmark's runs meanwhile: `machine` says what other work took the cores.
    meter = CpuMeter({}).start()
    monitor = monitor_drift(profile, rows.current)
    monitor_cpu = meter.stop()
    note(f"monitor: the same update on columnar input over {count:,} rows ({COLUMNAR_RUNS} runs)")
    columnar = median_columnar_drift(profile, rows.current, COLUMNAR_RUNS)
    note(f"monitor: Evidently's DataDriftPreset(method='psi') over the same {count:,} rows")
    meter = CpuMeter({}).start()
    evidently = run_evidently(python, rows)
    evidently_cpu = meter.stop()
    missing = set(FEATURE_NAMES) - set(evidently.psi)
    if missing:
        raise BenchmarkFailed(f"Evidently reported no PSI for {', '.join(sorted(missing))}")
    return DriftComparison(
        monitor, evidently, columnar, rows.reference.shape[0], monitor_cpu["machine"], evidently_cpu["machine"]
    )


def print_drift(comparison: DriftComparison, rows: FeatureRows) -> None:
    monitor, evidently, columnar = comparison.monitor, comparison.evidently, comparison.columnar
    count = monitor.rows
    both = evidently.datasets_s + evidently.report_s
    table = [
        [
            f"monitor on columnar input (float32 arrays per 1,000 rows: binned, counted, feature_drift x 26; "
            f"median of {len(columnar.runs)})",
            f"{columnar.wall_s:.3f}",
            f"{columnar.cpu_s:.3f}",
            f"{count / columnar.wall_s:,.0f}",
            f"{comparison.columnar_speed:.1f}x",
        ],
        [
            "monitor: the service's batch path, decoding included (kit's loop, handle_batch, flush, close)",
            f"{monitor.total_s:.2f}",
            f"{monitor.cpu_s:.2f}",
            f"{count / monitor.total_s:,.0f}",
            f"{comparison.speed:.2f}x",
        ],
        ["  of which the kit's batch loop: headers checked, Prediction decoded", f"{monitor.decode_s:.2f}", "", "", ""],
        ["  of which DriftMonitor.handle_batch per poll batch", f"{monitor.handle_s:.2f}", "", "", ""],
        ["  of which DriftMonitor.flush per poll batch (unpack, bin, count)", f"{monitor.flush_s:.2f}", "", "", ""],
        [
            "  of which the close: feature_drift x 26 (PSI, JS, Wasserstein, KS) and more",
            f"{monitor.close_s:.3f}",
            "",
            "",
            "",
        ],
        [
            f"Evidently {evidently.version}: Report.run",
            f"{evidently.report_s:.2f}",
            f"{evidently.report_cpu_s:.2f}",
            f"{count / evidently.report_s:,.0f}",
            "1.00x",
        ],
        [
            "Evidently: Dataset.from_pandas + Report.run",
            f"{both:.2f}",
            f"{evidently.datasets_cpu_s + evidently.report_cpu_s:.2f}",
            f"{count / both:,.0f}",
            "",
        ],
    ]
    print_table(
        f"monitor drift update: {count:,} predictions x {len(FEATURE_NAMES)} features against "
        f"{comparison.reference_rows:,} reference windows (live rows drawn from {rows.pool:,} simulated windows; "
        f"Evidently {evidently.version}, pandas {evidently.pandas})",
        ["path", "wall s", "CPU s", "rows/s", "speed vs Evidently"],
        table,
    )
    met = "met" if comparison.columnar_speed >= SPEED_GOAL else "NOT met"
    print(
        f"  goal, like for like (columnar input, as Evidently's DataFrame): Evidently's Report.run / the monitor's "
        f"update = {comparison.columnar_speed:.1f}x (CPU: {evidently.report_cpu_s / columnar.cpu_s:.1f}x; runs "
        f"{', '.join(f'{run:.3f}' for run in columnar.runs)} s); goal >= {SPEED_GOAL:.0f}x: {met}"
    )
    print(
        f"  the service's path, a Prediction decoded per row: {comparison.speed:.2f}x "
        f"(CPU: {evidently.report_cpu_s / monitor.cpu_s:.2f}x; with Dataset.from_pandas {both / monitor.total_s:.2f}x; "
        f"without the decoding, handle_batch + flush + close, "
        f"{evidently.report_s / (monitor.total_s - monitor.decode_s):.1f}x)"
    )
    print(
        f"  the columnar update's PSI differs from the service path's by at most "
        f"{max(abs(columnar.psi[name] - monitor.psi[name]) for name in monitor.psi):.2g}"
    )
    print(
        f"  CPU cores, machine: {comparison.machine_monitor:.2f} during the monitor's update, "
        f"{comparison.machine_evidently:.2f} during Evidently's subprocess (with its import and file reads)"
    )
    print(
        f"  the close alone (the figures from the histograms): {monitor.close_s * 1000:.0f} ms, "
        f"{evidently.report_s / monitor.close_s:,.0f}x faster than Report.run"
    )
    reference_values = {name: len(np.unique(rows.reference[:, FEATURE_INDEX[name]])) for name in FEATURE_NAMES}
    psi_rows = []
    for name in FEATURE_NAMES:
        ours, theirs = monitor.psi[name], evidently.psi[name]
        psi_rows.append(
            [
                name,
                DRIFTS.get(name, ""),
                f"{ours:.4f}",
                f"{theirs:.4f}",
                f"{comparison.difference(name):.4f}" + (" !" if comparison.difference(name) > PSI_GOAL else ""),
                f"{'drift' if ours >= PSI_THRESHOLD else 'ok'} / {'drift' if theirs >= PSI_THRESHOLD else 'ok'}",
                f"{'per bin' if monitor.per_bin[name] else 'Sturges'} / "
                f"{'per value' if reference_values[name] <= EVIDENTLY_PER_VALUE_MAX else 'Sturges'}",
                f"{reference_values[name]:,}",
            ]
        )
    print_table(
        "PSI per feature (! = difference above the goal)",
        [
            "feature",
            "injected drift",
            "monitor",
            "Evidently",
            "|difference|",
            f"at {PSI_THRESHOLD:g}: monitor / Evidently",
            "bins: monitor / Evidently",
            "reference values",
        ],
        psi_rows,
    )
    worst, difference = comparison.worst
    within = sum(comparison.difference(name) <= PSI_GOAL for name in FEATURE_NAMES)
    agree = sum(
        (monitor.psi[name] >= PSI_THRESHOLD) == (evidently.psi[name] >= PSI_THRESHOLD) for name in FEATURE_NAMES
    )
    print(
        f"  max |PSI difference|: {difference:.4f} ({worst}); within {PSI_GOAL:g} on {within} of "
        f"{len(FEATURE_NAMES)} features; same verdict at PSI {PSI_THRESHOLD:g} on {agree} of {len(FEATURE_NAMES)}"
    )


# --------------------------------------------------------------------------- 2. throughput


@dataclass
class Throughput:
    predictions: int  # predictions counted over the span
    span_s: float
    cpu: dict[str, float]  # cores over the span
    process: str  # whose CPU is the path's

    @property
    def rate(self) -> float:
        return self.predictions / self.span_s if self.span_s > 0 else 0.0

    @property
    def cpu_ms_per_thousand(self) -> float:
        return self.cpu[self.process] * self.span_s / max(self.predictions, 1) * 1e6


def fill_predictions(workspace: Workspace, current: np.ndarray) -> None:
    producer = EventProducer(workspace.bootstrap, PREFIX, client_id="michi-bench-fill")
    try:
        for index, values in enumerate(current):
            message = prediction_message(values, index)
            producer.publish(PREDICTIONS, message.lineage.device_id, message)
            if index % 10_000 == 9_999:
                producer.flush(0)  # serve delivery callbacks as we go
        if producer.flush(120):
            raise BenchmarkFailed("the predictions topic could not be filled")
    finally:
        producer.close()


def committed_total(reader: Consumer, partitions: list[TopicPartition]) -> int:
    return sum(max(item.offset, 0) for item in reader.committed(partitions, timeout=10))


def windowed_rows(client: httpx.Client, base_url: str) -> int:
    """Predictions the monitor has windowed in cohort `all`: full windows x WINDOW_ROWS + the open window's rows.

    Read from its /metrics: its commits cannot tell, for they wait for the first row of every open window,
    cohort windows (vehicle type, rate, firmware) included, which fill more slowly.
    """
    full = opened = 0.0
    for family in text_string_to_metric_families(client.get(f"{base_url}/metrics").text):
        for sample in family.samples:
            if sample.labels.get("model_version") != MODEL_VERSION:
                continue
            if sample.labels.get("cohort", COHORT_ALL) != COHORT_ALL:
                continue
            if sample.name == "michi_monitor_windows_total" and sample.labels.get("reason") == "full":
                full += sample.value
            elif sample.name == "michi_monitor_open_window_rows":
                opened += sample.value
    return int(full) * WINDOW_ROWS + int(opened)


def progress_pause(first_at: float, first_count: int, windowed: int, count: int) -> float:
    """Seconds until the next read of the monitor's progress (`PROGRESS_POLL_S`): fewer reads while it is far from
    done, the end still seen within `PROGRESS_POLL_MIN_S` of a read."""
    if not first_at or windowed <= first_count:
        return PROGRESS_POLL_S
    rate = (windowed - first_count) / max(time.monotonic() - first_at, 1e-3)
    left = (count - windowed) / rate
    return min(PROGRESS_POLL_MAX_S, max(PROGRESS_POLL_MIN_S, left / 2.0))


def monitor_service(workspace: Workspace, count: int) -> tuple[Throughput, int, str, int]:
    """Run `python -m services.monitor` until it windowed every prediction: its figures, commits and log tail."""
    topic = PREDICTIONS.name(PREFIX)
    partitions = [TopicPartition(topic, number) for number in range(PARTITIONS)]
    # Same group id, never subscribed: it reads the group's commits without joining it.
    reader = Consumer(
        KafkaConnection.plain(workspace.bootstrap).confluent_config(
            {"group.id": f"{PREFIX}monitor", "enable.auto.commit": False}
        )
    )
    try:
        service = workspace.start_service(
            "monitor", "MICHI_MONITOR_PORT", environment={"MICHI_MONITOR_WINDOW_ROWS": str(WINDOW_ROWS)}
        )
        pids = workspace.pids()
        meter = CpuMeter({name: pids[name] for name in ("monitor", "kafka", "benchmark")})
        deadline = time.monotonic() + 900
        first_at, first_count, windowed, reads = 0.0, 0, 0, 0
        with httpx.Client(timeout=10.0) as client:
            while windowed < count and time.monotonic() < deadline:
                if service.process.poll() is not None:
                    raise BenchmarkFailed(
                        f"the monitor exited with {service.process.returncode}:\n{service.log_tail()}"
                    )
                time.sleep(progress_pause(first_at, first_count, windowed, count))
                windowed = windowed_rows(client, service.base_url)
                reads += 1
                if windowed > 0 and not first_at:
                    first_at, first_count = time.monotonic(), windowed
                    meter.start()
        if windowed < count or not first_at:
            raise BenchmarkFailed(f"the monitor windowed {windowed} of {count} predictions:\n{service.log_tail()}")
        span = time.monotonic() - first_at
        cpu = meter.stop()
        committed = committed_total(reader, partitions)
        log = service.log_tail(1500)
        service.stop()
    finally:
        reader.close()
    return Throughput(count - first_count, span, cpu, "monitor"), committed, log, reads


def bare_loop(workspace: Workspace, count: int, settings: dict[str, Any] | None = None) -> Throughput:
    """Consume and decode every prediction with confluent-kafka, nothing else: the least a consumer does
    (`settings`: librdkafka properties beside the defaults)."""
    consumer = Consumer(
        KafkaConnection.plain(workspace.bootstrap).confluent_config(
            {
                "group.id": f"michi-bench-bare-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,  # as the services' consumers
                **(settings or {}),
            }
        )
    )
    pids = workspace.pids()
    meter = CpuMeter({name: pids[name] for name in ("benchmark", "kafka")})
    handled, first_at, first_count = 0, 0.0, 0
    deadline = time.monotonic() + 300
    try:
        consumer.subscribe([PREDICTIONS.name(PREFIX)])
        while handled < count and time.monotonic() < deadline:
            for record in consumer.consume(BARE_BATCH, 0.5):
                if record.error() is None:
                    inference_pb2.Prediction.FromString(record.value() or b"")
                    handled += 1
            if handled and not first_at:
                first_at, first_count = time.monotonic(), handled
                meter.start()
        span = time.monotonic() - first_at
        cpu = meter.stop()
    finally:
        consumer.close()
    if handled < count:
        raise BenchmarkFailed(f"the bare loop read {handled} of {count} predictions")
    return Throughput(count - first_count, span, cpu, "benchmark")


@dataclass
class ThroughputComparison:
    monitor: Throughput
    bare: Throughput
    # The bare loop with the monitor's prefetch settings (`services/monitor/wiring.py: PREFETCH`), for reference.
    bare_prefetch: Throughput
    count: int
    committed: int  # the monitor group's committed offsets once every prediction was windowed
    log: str
    reads: int  # reads of the monitor's /metrics for its progress

    @property
    def share(self) -> float:
        return self.monitor.rate / self.bare.rate if self.bare.rate > 0 else 0.0


def compare_throughput(rows: FeatureRows, document: bytes, count: int) -> ThroughputComparison:
    with Workspace("monitor") as workspace:
        store = BlobStore(f"file://{workspace.home / 'blobs'}")
        asyncio.run(store.put_bytes(reference_profile_key(MODEL_NAME, MODEL_VERSION), document))
        note(f"monitor: publishing {count:,} predictions")
        fill_predictions(workspace, rows.current[:count])
        note("monitor: the monitor (python -m services.monitor)")
        monitor, committed, log, reads = monitor_service(workspace, count)
        note("monitor: bare confluent-kafka loop in one process")
        bare = bare_loop(workspace, count)
        note("monitor: the same bare loop with the monitor's prefetch settings")
        bare_prefetch = bare_loop(workspace, count, PREFETCH)
    return ThroughputComparison(monitor, bare, bare_prefetch, count, committed, log, reads)


def print_throughput(comparison: ThroughputComparison, drift: DriftComparison | None) -> None:
    monitor, bare = comparison.monitor, comparison.bare
    table = [
        [
            "monitor (python -m services.monitor)",
            f"{monitor.predictions:,}",
            f"{monitor.span_s:.1f}",
            f"{monitor.rate:,.0f}",
            f"{comparison.share:.1%}",
            f"{monitor.cpu_ms_per_thousand:.1f}",
        ],
        [
            "bare confluent-kafka loop (consume + decode)",
            f"{bare.predictions:,}",
            f"{bare.span_s:.1f}",
            f"{bare.rate:,.0f}",
            "100%",
            f"{bare.cpu_ms_per_thousand:.1f}",
        ],
        [
            f"  the same with the monitor's {', '.join(f'{key} {value}' for key, value in PREFETCH.items())}",
            f"{comparison.bare_prefetch.predictions:,}",
            f"{comparison.bare_prefetch.span_s:.1f}",
            f"{comparison.bare_prefetch.rate:,.0f}",
            f"{comparison.bare_prefetch.rate / bare.rate:.0%}",
            f"{comparison.bare_prefetch.cpu_ms_per_thousand:.1f}",
        ],
    ]
    print_table(
        f"monitor throughput: {comparison.count:,} pre-filled champion predictions ({len(FEATURE_NAMES)} features), "
        f"{PARTITIONS} partitions, windows of {WINDOW_ROWS:,}",
        ["path", "predictions", "span s", "predictions/s", "vs bare", "CPU ms per 1,000"],
        table,
    )
    print(f"  goal: >= {THROUGHPUT_GOAL:.0%} of the bare loop; measured {ratio(monitor.rate, bare.rate)}")
    print(
        f"  against the bare loop with the monitor's prefetch settings: "
        f"{ratio(monitor.rate, comparison.bare_prefetch.rate)} (not the goal's baseline)"
    )
    print(
        f"  the monitor's group had committed {comparison.committed:,} of {comparison.count:,} when the last one "
        "was windowed (commits wait for the first row of every open window, cohort windows included)"
    )
    print(
        f"  the monitor's /metrics was read {comparison.reads} times for its progress (each read costs its main "
        "thread 10-25 ms)"
    )
    print(f"  CPU cores, monitor run: {describe_cpu(monitor.cpu)}")
    print(f"  CPU cores, bare loop:   {describe_cpu(bare.cpu)}")
    print(f"  CPU cores, bare loop with the monitor's prefetch settings: {describe_cpu(comparison.bare_prefetch.cpu)}")
    if drift is not None:
        per_prediction = drift.monitor.total_s / drift.monitor.rows * 1e6
        print(
            f"  of the monitor's {monitor.cpu_ms_per_thousand:.0f} us CPU per prediction, the drift update of cohort "
            f"`all` with decoding (part 1) takes ~{per_prediction:.1f} us"
        )


# --------------------------------------------------------------------------- run


@dataclass
class MonitorFigures:
    drift: DriftComparison
    throughput: ThroughputComparison


def run(*, quick: bool = False) -> MonitorFigures:
    rows_count = 100_000 if quick else 1_000_000
    predictions = 20_000 if quick else 200_000
    rows = feature_rows(rows_count, quick=quick)
    document = profile_document(rows)
    drift = compare_drift(rows, document)
    print_drift(drift, rows)
    throughput = compare_throughput(rows, document, predictions)
    print_throughput(throughput, drift)
    return MonitorFigures(drift, throughput)
