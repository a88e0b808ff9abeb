"""Prometheus metrics of the monitor (one registry per process, served at /metrics).

The per-feature gauges hold the figures of the last closed window of each model version and cohort (NaN where
that window had too few rows of the feature: insufficient data).
"""

from __future__ import annotations

import math

from prometheus_client import Counter, Gauge

from michi.telemetry.metrics import service_registry
from services.monitor.domain.drift import INSUFFICIENT_DATA
from services.monitor.domain.performance import Calibration, RealisedPerformance
from services.monitor.handlers import ClosedWindow, LabelOutcome

FEATURE_LABELS = ["model_version", "cohort", "feature"]


class MonitorMetrics:
    def __init__(self) -> None:
        self.registry = registry = service_registry()
        self.psi = Gauge(
            "michi_monitor_feature_psi", "PSI of the last closed window", FEATURE_LABELS, registry=registry
        )
        self.jensen_shannon = Gauge(
            "michi_monitor_feature_jensen_shannon",
            "Jensen-Shannon distance (natural log) of the last closed window",
            FEATURE_LABELS,
            registry=registry,
        )
        self.wasserstein = Gauge(
            "michi_monitor_feature_wasserstein",
            "Wasserstein distance / reference std of the last closed window",
            FEATURE_LABELS,
            registry=registry,
        )
        self.ks = Gauge(
            "michi_monitor_feature_ks_statistic",
            "Kolmogorov-Smirnov statistic (binned) of the last closed window",
            FEATURE_LABELS,
            registry=registry,
        )
        self.drifted = Gauge(
            "michi_monitor_feature_drifted",
            "1 when the last closed window's PSI reached the threshold, else 0",
            FEATURE_LABELS,
            registry=registry,
        )
        self.insufficient = Gauge(
            "michi_monitor_feature_insufficient_data",
            "1 when the last closed window had too few rows of the feature to judge",
            FEATURE_LABELS,
            registry=registry,
        )
        self.windows = Counter(
            "michi_monitor_windows_total", "Windows closed", ["model_version", "cohort", "reason"], registry=registry
        )
        self.alerts = Counter("michi_monitor_alerts_total", "Alerts published", ["kind"], registry=registry)
        self.low_resolution = Gauge(
            "michi_monitor_profile_low_resolution",
            "1 when the model version's reference profile is low-resolution (no alerts from it by default)",
            ["model_version"],
            registry=registry,
        )
        self.open_window_rows = Gauge(
            "michi_monitor_open_window_rows", "Rows in the open window", ["model_version"], registry=registry
        )
        self.skipped = Counter(
            "michi_monitor_predictions_skipped_total", "Predictions not windowed", ["reason"], registry=registry
        )
        self.dead_letters = Counter(
            "michi_monitor_dead_letters_total", "Messages sent to dead letters", registry=registry
        )
        self.error_rate = Gauge(
            "michi_monitor_error_rate",
            "ADWIN's estimate of the model version's error rate on randomly sampled labels",
            ["model_version"],
            registry=registry,
        )
        self.error_window = Gauge(
            "michi_monitor_error_window_labels",
            "Labels in ADWIN's current window of the model version",
            ["model_version"],
            registry=registry,
        )
        self.outcomes = Counter(
            "michi_monitor_label_outcomes_total",
            "Randomly sampled labels compared with the model's call",
            ["model_version", "correct"],
            registry=registry,
        )
        self.expected_accuracy = Gauge(
            "michi_monitor_expected_accuracy",
            "Accuracy of the last closed window expected from the model's calibrated confidence (no labels)",
            ["model_version", "cohort"],
            registry=registry,
        )
        self.expected_false_alert_rate = Gauge(
            "michi_monitor_expected_false_alert_rate",
            "Share of wrong alerts among the last closed window's alerts, expected from the calibrated confidence",
            ["model_version", "cohort"],
            registry=registry,
        )
        self.realised_accuracy = Gauge(
            "michi_monitor_realised_accuracy",
            "Share of right calls among the version's latest random-QA labels",
            ["model_version"],
            registry=registry,
        )
        self.realised_false_alert_rate = Gauge(
            "michi_monitor_realised_false_alert_rate",
            "Share of wrong alerts among the alerts of the version's latest random-QA labels",
            ["model_version"],
            registry=registry,
        )
        self.calibration_labels = Gauge(
            "michi_monitor_calibration_labels",
            "Random-QA labels the version's confidence calibration rests on",
            ["model_version"],
            registry=registry,
        )
        self.labels_skipped = Counter(
            "michi_monitor_labels_skipped_total",
            "Labels and label requests that are no outcome for concept drift",
            ["reason"],
            registry=registry,
        )

    def window_closed(self, closed: ClosedWindow) -> None:
        version = closed.model_version
        self.windows.labels(version, closed.cohort, closed.reason).inc()
        self.low_resolution.labels(version).set(1.0 if closed.low_resolution else 0.0)
        for alert in (closed.alert, closed.retrain):
            if alert is not None:
                self.alerts.labels(alert.kind).inc()
        if closed.performance is not None:
            self.expected_accuracy.labels(version, closed.cohort).set(closed.performance.accuracy)
            self.expected_false_alert_rate.labels(version, closed.cohort).set(closed.performance.false_alert_rate)
        for result in closed.features:
            labels = (version, closed.cohort, result.feature)
            self.psi.labels(*labels).set(result.psi)
            self.jensen_shannon.labels(*labels).set(result.jensen_shannon)
            self.wasserstein.labels(*labels).set(result.wasserstein)
            self.ks.labels(*labels).set(result.ks_statistic)
            insufficient = result.status == INSUFFICIENT_DATA
            self.insufficient.labels(*labels).set(1.0 if insufficient else 0.0)
            self.drifted.labels(*labels).set(math.nan if insufficient else float(result.feature in closed.drifted))

    def label_skipped(self, reason: str) -> None:
        self.labels_skipped.labels(reason).inc()

    def outcome(
        self,
        outcome: LabelOutcome,
        error_rate: float,
        window: int,
        realised: RealisedPerformance,
        calibration: Calibration,
    ) -> None:
        version = outcome.model_version
        self.outcomes.labels(version, "true" if outcome.correct else "false").inc()
        self.error_rate.labels(version).set(error_rate)
        self.error_window.labels(version).set(window)
        self.realised_accuracy.labels(version).set(realised.accuracy)
        self.realised_false_alert_rate.labels(version).set(realised.false_alert_rate)
        self.calibration_labels.labels(version).set(calibration.labels)

    def prediction_skipped(self, reason: str) -> None:
        self.skipped.labels(reason).inc()

    def open_rows(self, model_version: str, rows: int) -> None:
        self.open_window_rows.labels(model_version).set(rows)
