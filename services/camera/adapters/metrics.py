"""Prometheus metrics of the camera service (one registry per process, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from michi.telemetry.metrics import service_registry

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CameraMetrics:
    def __init__(self) -> None:
        self.registry = registry = service_registry()
        self.media_received = Counter(
            "michi_camera_media_received_total",
            "Media items kept for the join, by camera",
            ["camera"],
            registry=registry,
        )
        self.uploads_received = Counter(
            "michi_camera_uploads_received_total", "Uploads kept for the join", registry=registry
        )
        self.media_analysed = Counter(
            "michi_camera_media_analysed_total",
            "Media items analysed and settled, by camera",
            ["camera"],
            registry=registry,
        )
        self.frames_analysed = Counter(
            "michi_camera_frames_analysed_total",
            "Frames decoded and fed to an analysis, by camera",
            ["camera"],
            registry=registry,
        )
        self.detections = Counter(
            "michi_camera_detections_total", "Detections published, by event type", ["event_type"], registry=registry
        )
        self.review_decisions = Counter(
            "michi_camera_review_decisions_total",
            "Published detections asked for review (reviewed) or left unreviewed by the review share (skipped), "
            "by event type",
            ["event_type", "decision"],
            registry=registry,
        )
        self.duplicates = Counter(
            "michi_camera_duplicates_total",
            "Redelivered or re-announced media and uploads that changed nothing",
            ["kind"],
            registry=registry,
        )
        self.media_dead_lettered = Counter(
            "michi_camera_media_dead_lettered_total",
            "Media items not analysed and sent to dead letters, by reason (upload-not-arrived, waiting-limit, "
            "media-not-found, undecodable-media, ...)",
            ["reason"],
            registry=registry,
        )
        self.out_of_order = Counter(
            "michi_camera_out_of_order_total",
            "Media items older than their stream's last analysed frame, analysed on their own",
            ["camera"],
            registry=registry,
        )
        self.rows = Gauge(
            "michi_camera_rows",
            "Rows the join keeps: uploads, waiting and settled media, analysis streams",
            ["kind"],
            registry=registry,
        )
        self.forgotten = Counter(
            "michi_camera_rows_forgotten_total",
            "Rows deleted at their age or count bound",
            ["kind"],
            registry=registry,
        )
        self.decode_seconds = Histogram(
            "michi_camera_decode_seconds",
            "Reading and decoding one media item",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.analysis_seconds = Histogram(
            "michi_camera_analysis_seconds",
            "Running the vision models and the analysis on one media item's frames",
            ["camera"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.models_missing = Gauge(
            "michi_camera_models_missing",
            "1 while the vision models are not built (`make models`) and the service analyses nothing",
            registry=registry,
        )
        self.dead_letters = Counter(
            "michi_camera_dead_letters_total", "Messages sent to dead letters", registry=registry
        )
