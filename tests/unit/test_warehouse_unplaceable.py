"""A prediction or detection that decodes but lacks its lineage or time is a dead letter, not a row."""

from __future__ import annotations

import threading
from typing import Any

from michi.bus.catalog import DETECTIONS, PREDICTIONS
from michi.contracts.v1 import inference_pb2
from services.warehouse.domain.checks import unplaceable

from .test_warehouse import FakeMessage, build_fake_sink, make_prediction


def test_what_a_row_needs_is_named_when_it_is_missing() -> None:
    assert unplaceable(make_prediction("complete")) is None
    assert unplaceable(inference_pb2.Detection(event_id="hollow")) == (
        "Detection without lineage.device_id, lineage.trip_id, lineage.upload_id, lineage.window_id, occurred_at"
    )
    no_window = make_prediction("no-window")
    no_window.lineage.window_id = ""
    assert unplaceable(no_window) == "Prediction without lineage.window_id"


def test_hollow_records_are_dead_lettered_and_committed_with_the_rows_around_them() -> None:
    journal: list[Any] = []
    batches = [
        [
            FakeMessage("p", 0, 5, make_prediction("a").SerializeToString(), PREDICTIONS.schema),
            FakeMessage("p", 0, 6, inference_pb2.Prediction(event_id="hollow").SerializeToString(), PREDICTIONS.schema),
            FakeMessage("p", 0, 7, make_prediction("b").SerializeToString(), PREDICTIONS.schema),
            FakeMessage("d", 1, 3, inference_pb2.Detection(event_id="hollow").SerializeToString(), DETECTIONS.schema),
        ]
    ]
    sink = build_fake_sink(journal, batches)
    sink.poll_once()
    stop = threading.Event()
    stop.set()
    sink.run(stop)  # stopping writes what is buffered and commits it

    assert journal == [
        ("subscribe", ["d", "p"]),
        ("dead letter", 6, "schema-violation"),
        ("dead letter", 3, "schema-violation"),
        ("write", "warehouse/predictions/date=2026-11-28/hour=13/part-5-0.parquet", ["a", "b"]),
        ("commit", [("d", 1, 4), ("p", 0, 8)]),
        ("close",),
    ]
    assert sink.metrics.registry.get_sample_value("michi_warehouse_dead_letters_total") == 2
