"""Prometheus metrics of the warehouse sink (one registry per sink, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from michi.telemetry.metrics import service_registry


class WarehouseMetrics:
    def __init__(self) -> None:
        self.registry = service_registry()
        self.rows_written = Counter(
            "michi_warehouse_rows_written_total", "Rows written to Parquet", ["table"], registry=self.registry
        )
        self.files_written = Counter(
            "michi_warehouse_files_written_total", "Parquet files written", ["table"], registry=self.registry
        )
        self.dead_letters = Counter(
            "michi_warehouse_dead_letters_total", "Messages sent to dead letters", registry=self.registry
        )
        self.buffered_rows = Gauge(
            "michi_warehouse_buffered_rows", "Rows read but not yet written", registry=self.registry
        )
