from __future__ import annotations

import json
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from michi.telemetry import JsonLinesSpanExporter


def test_spans_are_written_as_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "ingest.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer", kind=trace.SpanKind.SERVER) as outer:
        outer.set_attribute("michi.ingest.upload_id", "u-1")
        outer.set_attribute("michi.ingest.samples", 500)
        with tracer.start_as_current_span("inner", attributes={"sizes": (1, 2), "ok": True, "ratio": 0.5}):
            pass
    provider.shutdown()

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    inner, outer_line = (json.loads(line) for line in lines)
    assert inner["name"] == "inner" and outer_line["name"] == "outer"
    assert inner["trace_id"] == outer_line["trace_id"] and len(inner["trace_id"]) == 32
    assert inner["parent_span_id"] == outer_line["span_id"] and len(outer_line["span_id"]) == 16
    assert outer_line["parent_span_id"] is None
    assert outer_line["kind"] == "SERVER" and outer_line["status"] == "UNSET"
    assert outer_line["attributes"] == {"michi.ingest.upload_id": "u-1", "michi.ingest.samples": 500}
    assert inner["attributes"] == {"sizes": [1, 2], "ok": True, "ratio": 0.5}
    assert inner["start_ns"] <= inner["end_ns"]
