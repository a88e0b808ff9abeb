"""Reference profiles of served traffic: cohorts judged against their own part, unseen cohort values, calibration.

The trainer profiles the traffic a model serves (`traffic_profile`: per cohort counts on the whole's edges, the
values of each cohort dimension, calibrated windows only); the monitor reads it (`read_profile`) and judges a
cohort's window against its part, counts rows from cohort values the traffic never had, and leaves out rows read
with an uncalibrated mount.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from michi.contracts.v1 import common_pb2, inference_pb2
from michi.windows.features import FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from services.monitor.domain.drift import chi_square_p_value, mix_drift
from services.monitor.domain.profiles import ReferenceProfile, read_profile
from services.monitor.handlers import UNCALIBRATED, DriftMonitor, DriftPolicy
from services.trainer.adapters.simulation import SIGNAL_SAMPLE_EVERY, FleetRecipe, SimulationRecipe, traffic_windows
from services.trainer.domain.profile import MIN_COHORT_WINDOWS, traffic_profile

from .test_monitor_handlers import TOPIC, History, Publisher, Reports

SPEED = FEATURE_NAMES.index("gps_speed_mps")
ROWS = 2 * MIN_COHORT_WINDOWS


def traffic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]], list[str], list[str]]:
    """Vans at 10 m/s, sedans at 25 m/s, one firmware, a small bus cohort; one window in ten uncalibrated; ten
    devices (the buses: two)."""
    random = np.random.default_rng(seed)
    vans, sedans, buses = ROWS, ROWS, MIN_COHORT_WINDOWS // 4
    rows = vans + sedans + buses
    features = random.normal(1.0, 0.3, (rows, len(FEATURE_NAMES))).astype(np.float32)
    features[:vans, SPEED] = random.normal(10.0, 2.0, vans)
    features[vans : vans + sedans, SPEED] = random.normal(25.0, 2.0, sedans)
    features[vans + sedans :, SPEED] = random.normal(15.0, 2.0, buses)
    signals = np.zeros((rows, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32)
    cohorts = {
        "vehicle": ["van"] * vans + ["sedan"] * sedans + ["bus"] * buses,
        "rate": ["50"] * rows,
        "firmware": ["2.4.1"] * rows,
    }
    calibration = ["uncalibrated" if row % 10 == 0 else "calibrated" for row in range(rows)]
    devices = [f"device-{row // 100 % 10}" for row in range(vans + sedans)] + [f"bus-{row % 2}" for row in range(buses)]
    return features, signals, cohorts, calibration, devices


def test_a_traffic_profile_holds_its_cohorts_on_the_whole_edges_and_only_calibrated_windows() -> None:
    features, signals, cohorts, calibration, devices = traffic()
    document = traffic_profile(
        features, signals, cohorts, data_version="traffic-x", calibration=calibration, devices=devices
    )
    assert document["source"] == "traffic" and document["rows"] == "calibrated"
    assert document["calibrated_share"] == pytest.approx(0.9, abs=0.001)
    calibrated = int(np.sum(np.asarray(calibration) == "calibrated"))
    assert document["windows"] == calibrated
    # The buses are too few (windows and devices) to characterise; the others are counted on the whole's edges.
    assert document["population"] == {"firmware": ["2.4.1"], "rate": ["50"], "vehicle": ["sedan", "van"]}
    assert set(document["cohorts"]) == {"vehicle:van", "vehicle:sedan", "rate:50", "firmware:2.4.1"}
    assert document["cohorts"]["vehicle:van"]["devices"] == 10
    whole = document["features"]["gps_speed_mps"]
    van = document["cohorts"]["vehicle:van"]["features"]["gps_speed_mps"]
    assert len(van["counts"]) == len(whole["counts"])
    assert van["count"] == document["cohorts"]["vehicle:van"]["windows"] == sum(van["counts"])
    assert van["max"] < 20.0 < whole["max"]


def test_a_cohort_of_many_windows_from_too_few_devices_is_not_characterised() -> None:
    features, signals, cohorts, calibration, _ = traffic()
    few = ["device-0" if vehicle == "van" else f"device-{row % 10}" for row, vehicle in enumerate(cohorts["vehicle"])]
    document = traffic_profile(
        features, signals, cohorts, data_version="traffic-x", calibration=calibration, devices=few
    )
    assert "vehicle:van" not in document["cohorts"] and document["population"]["vehicle"] == ["sedan"]


def profile_read() -> ReferenceProfile:
    features, signals, cohorts, calibration, devices = traffic()
    return read_profile(
        traffic_profile(features, signals, cohorts, data_version="traffic-x", calibration=calibration, devices=devices)
    )


def test_the_monitor_reads_each_cohort_on_the_whole_edges_and_falls_back_to_the_whole() -> None:
    profile = profile_read()
    assert profile.source == "traffic" and profile.calibrated_only
    assert profile.population["vehicle"] == frozenset({"van", "sedan"})
    van = {feature.name: feature for feature in profile.features_of("vehicle:van")}
    whole = {feature.name: feature for feature in profile.features}
    assert np.array_equal(van["gps_speed_mps"].histogram.edges, whole["gps_speed_mps"].histogram.edges)
    assert van["gps_speed_mps"].histogram.total < whole["gps_speed_mps"].histogram.total
    assert profile.features_of("vehicle:bus") is profile.features
    assert profile.features_of("vehicle:tram") is profile.features


class TrafficProfiles:
    def __init__(self, profile: ReferenceProfile) -> None:
        self.fixed = profile

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return self.fixed


def monitor_of(profile: ReferenceProfile, **policy: object) -> tuple[DriftMonitor, Publisher, Reports]:
    publisher, reports = Publisher(), Reports()
    monitor = DriftMonitor(
        profiles=TrafficProfiles(profile),
        publisher=publisher,
        history=History(),
        reports=reports,
        policy=DriftPolicy(
            **{"window_rows": 1000, "min_rows": 1000, "max_cohorts": 8, "sustain_windows": 1, **policy}  # type: ignore[arg-type]
        ),
        clock=lambda: 0.0,
    )
    monitor.assigned({(TOPIC, 0): -1})
    return monitor, publisher, reports


def served(
    random: np.random.Generator,
    index: int,
    *,
    vehicle: str,
    speed: float,
    firmware: str = "2.4.1",
    state: int = common_pb2.CALIBRATION_STATE_CALIBRATED,
) -> inference_pb2.Prediction:
    message = inference_pb2.Prediction(
        variant=inference_pb2.VARIANT_CHAMPION, vehicle_type=vehicle, firmware_version=firmware, sample_rate_hz=50
    )
    message.lineage.model_name, message.lineage.model_version = "risk", "v1"
    message.lineage.window_id = f"window-{index}"
    message.lineage.device_id = f"device-{index % 20}"
    message.predicted = common_pb2.EVENT_TYPE_NORMAL
    message.confidence = 0.9
    message.calibration.state = state  # type: ignore[assignment]
    for name in FEATURE_NAMES:
        message.features[name] = float(random.normal(1.0, 0.3))
    message.features["gps_speed_mps"] = float(random.normal(speed, 2.0))
    message.occurred_at.seconds = 1_700_000_000
    return message


def test_a_fleet_of_another_vehicle_mix_is_compared_with_traffic_of_its_own_mix() -> None:
    profile = profile_read()
    monitor, publisher, reports = monitor_of(profile, cohorts=("vehicle",))
    random = np.random.default_rng(5)
    for index in range(1000):  # vans only: slower than the whole traffic, as the traffic's vans were
        monitor.handle(served(random, index, vehicle="van", speed=10.0), (TOPIC, 0), index)
    by_cohort = {closed.cohort: closed for closed in reports.closed}
    van = {result.feature: result for result in by_cohort["vehicle:van"].features}
    fleet = {result.feature: result for result in by_cohort["all"].features}
    assert van["gps_speed_mps"].psi < 0.1 and fleet["gps_speed_mps"].psi < 0.1
    # What changed is the mix itself (20 van drivers where the traffic had as many sedans): that figure alone.
    assert fleet["vehicle_mix"].status == "drift"
    assert [alert.attributes["features"] for alert in publisher.alerts] == ["vehicle_mix"]
    whole = profile.mixed("vehicle", {"tram": 1000})
    assert whole is profile.features
    assert profile.mixed("vehicle", {"van": 3, "sedan": 1})[SPEED].histogram.total == pytest.approx(
        profile.features[SPEED].histogram.total
    )


def test_vans_driven_otherwise_drift_in_their_cohort_and_in_the_fleet() -> None:
    monitor, publisher, reports = monitor_of(profile_read(), cohorts=("vehicle",))
    random = np.random.default_rng(5)
    for index in range(1000):
        vehicle, speed = ("van", 16.0) if index % 2 else ("sedan", 25.0)
        monitor.handle(served(random, index, vehicle=vehicle, speed=speed), (TOPIC, 0), index)
    verdicts = {closed.cohort: closed.verdict for closed in reports.closed}
    assert verdicts["all"] == "drift"
    assert [alert.attributes["cohort"] for alert in publisher.alerts] == ["all"]


def test_rows_from_a_firmware_the_traffic_never_had_are_a_drift_of_the_population() -> None:
    monitor, publisher, reports = monitor_of(profile_read(), cohorts=())
    random = np.random.default_rng(6)
    for index in range(1000):  # half the fleet on a new firmware, its inputs otherwise as before
        vehicle, speed = ("van", 10.0) if index % 2 else ("sedan", 25.0)
        firmware = "2.5.0" if index % 4 < 2 else "2.4.1"
        monitor.handle(served(random, index, vehicle=vehicle, speed=speed, firmware=firmware), (TOPIC, 0), index)
    (closed,) = reports.closed
    figures = {result.feature: result for result in closed.features}
    assert figures["firmware_unseen"].status == "drift" and figures["firmware_unseen"].psi > 1.0
    assert figures["vehicle_unseen"].psi == pytest.approx(0.0, abs=1e-9)
    assert figures["rate_unseen"].psi == pytest.approx(0.0, abs=1e-9)
    assert closed.drifted == ("firmware_unseen",)
    (alert,) = publisher.alerts
    assert alert.attributes["features"] == "firmware_unseen"


def test_rows_read_with_an_uncalibrated_mount_are_left_out_of_a_calibrated_profile() -> None:
    monitor, _, reports = monitor_of(profile_read(), cohorts=())
    random = np.random.default_rng(7)
    for index in range(1500):
        state = common_pb2.CALIBRATION_STATE_GRAVITY_ONLY if index % 3 == 0 else common_pb2.CALIBRATION_STATE_CALIBRATED
        vehicle, speed = ("van", 10.0) if index % 2 else ("sedan", 25.0)
        monitor.handle(served(random, index, vehicle=vehicle, speed=speed, state=state), (TOPIC, 0), index)
    assert reports.skipped.count(UNCALIBRATED) == 500
    (closed,) = reports.closed
    assert closed.rows == 1000


def test_a_window_of_too_few_devices_is_insufficient_data_whatever_its_rows() -> None:
    monitor, publisher, reports = monitor_of(profile_read(), cohorts=(), min_devices=5)
    random = np.random.default_rng(8)
    for index in range(1000):  # vans twice as fast as the traffic's, but from four devices
        message = served(random, index, vehicle="van", speed=20.0)
        message.lineage.device_id = f"device-{index % 4}"
        monitor.handle(message, (TOPIC, 0), index)
    (closed,) = reports.closed
    assert closed.verdict == "insufficient-data" and publisher.alerts == []


@pytest.mark.parametrize(
    ("statistic", "degrees"), [(0.5, 5), (2.0, 1), (6.2, 4), (10.83, 1), (18.47, 4), (30.0, 10), (71.0, 4), (100, 31)]
)
def test_the_chi_square_p_value_is_scipys(statistic: float, degrees: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert chi_square_p_value(statistic, degrees) == pytest.approx(float(stats.chi2.sf(statistic, degrees)), rel=1e-9)


def test_a_small_fleets_own_draw_of_vehicles_is_no_mix_drift_and_a_fleet_of_trucks_and_buses_is() -> None:
    shares = {"compact": 0.2, "sedan": 0.4, "van": 0.25, "truck": 0.1, "bus": 0.05}
    # 20 devices drawn from the mix as a fleet might be: more vans, no bus.
    drawn = mix_drift("vehicle_mix", {"compact": 2, "sedan": 6, "van": 9, "truck": 3}, shares, min_devices=5)
    assert drawn.status == "ok" and drawn.ks_p_value > 0.1
    changed = mix_drift("vehicle_mix", {"sedan": 1, "van": 3, "truck": 9, "bus": 7}, shares, min_devices=5)
    assert changed.status == "drift" and changed.ks_p_value < 1e-10 and changed.psi > 1.0
    assert mix_drift("vehicle_mix", {"bus": 4}, shares, min_devices=5).status == "insufficient-data"
    few_rows = mix_drift("vehicle_mix", {"sedan": 10, "van": 10}, shares, min_devices=5, rows=45, min_rows=300)
    assert few_rows.status == "insufficient-data"


def test_a_window_of_too_few_rows_neither_drifts_nor_resolves_its_episode_whatever_its_devices() -> None:
    monitor, publisher, _ = monitor_of(profile_read(), cohorts=(), min_rows=1000, idle_s=60.0)
    random = np.random.default_rng(10)
    for index in range(2000):  # two windows of 20 van drivers: the mix drifts, one episode, one alert
        monitor.handle(served(random, index, vehicle="van", speed=10.0), (TOPIC, 0), index)
    assert [alert.attributes["status"] for alert in publisher.alerts] == ["firing"]
    for index in range(2000, 2045):  # the fleet's last 45 rows close idle: insufficient data, not a clean window
        monitor.handle(served(random, index, vehicle="van", speed=10.0), (TOPIC, 0), index)
    monitor.clock = lambda: 120.0
    (last,) = monitor.close_idle()
    assert last.verdict == "insufficient-data"
    assert [alert.attributes["status"] for alert in publisher.alerts] == ["firing"]


def test_the_traffic_profile_holds_its_mix_of_vehicles_in_devices_and_the_fleets_mix_is_tested() -> None:
    profile = profile_read()
    assert profile.mix == {"vehicle": {"sedan": 0.5, "van": 0.5}}
    monitor, publisher, reports = monitor_of(profile, cohorts=())
    random = np.random.default_rng(9)
    for index in range(1000):  # 19 van drivers, 1 sedan driver
        vehicle, speed = ("sedan", 25.0) if index % 20 == 0 else ("van", 10.0)
        message = served(random, index, vehicle=vehicle, speed=speed)
        monitor.handle(message, (TOPIC, 0), index)
    (closed,) = reports.closed
    figures = {result.feature: result for result in closed.features}
    assert figures["vehicle_mix"].status == "drift" and figures["vehicle_mix"].rows == 20
    assert figures["gps_speed_mps"].status == "ok"  # each vehicle drives as the traffic's did
    assert [alert.attributes["features"] for alert in publisher.alerts] == ["vehicle_mix"]


def test_simulated_traffic_is_read_back_from_its_cache_as_it_was_simulated(tmp_path: Path) -> None:
    recipe = SimulationRecipe(fleets=(FleetRecipe(5, 50),), devices=2, duration_s=240.0)
    first = traffic_windows(recipe, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("traffic-*.npz")
    again = traffic_windows(recipe, cache_dir=tmp_path)
    assert first.count > 100 and again.count == first.count
    assert np.array_equal(first.features, again.features) and np.array_equal(first.signals, again.signals)
    assert again.cohorts == first.cohorts and set(first.cohorts) == {
        "vehicle",
        "rate",
        "firmware",
        "calibration",
        "device",
    }
    assert set(first.cohorts["rate"]) == {"50"} and len(set(first.cohorts["device"])) == 2
    assert first.signals.shape[0] == -(-first.count // SIGNAL_SAMPLE_EVERY)  # every tenth window's signals
    cached.write_bytes(b"not an archive")  # a damaged cache is simulated again, not an error
    assert traffic_windows(recipe, cache_dir=tmp_path).count == first.count
