"""`michi trace`: follow one upload through every service's spans (.michi/traces/*.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(folder.glob("*.jsonl")):
        with path.open() as lines:
            for line in lines:
                try:
                    spans.append(json.loads(line))
                except ValueError:
                    continue
    return spans


def find_trace(folder: Path, identifier: str) -> list[dict[str, Any]]:
    """Spans of the trace with this id, or of the trace whose spans name this upload id."""
    spans = _spans(folder)
    trace_ids = {identifier} if len(identifier) == 32 else set()
    for span in spans:
        if identifier in {str(value) for value in span.get("attributes", {}).values()}:
            trace_ids.add(span["trace_id"])
    return sorted((span for span in spans if span["trace_id"] in trace_ids), key=lambda span: span["start_ns"])


def render_trace(spans: list[dict[str, Any]]) -> str:
    origin = spans[0]["start_ns"]
    children: dict[str | None, list[dict[str, Any]]] = {}
    known = {span["span_id"] for span in spans}
    for span in spans:
        parent = span.get("parent_span_id") if span.get("parent_span_id") in known else None
        children.setdefault(parent, []).append(span)
    lines = [f"trace {spans[0]['trace_id']}"]

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            start_ms = (span["start_ns"] - origin) / 1e6
            duration_ms = (span["end_ns"] - span["start_ns"]) / 1e6
            lines.append(
                f"{start_ms:9.1f} ms {duration_ms:8.1f} ms  {'  ' * depth}{span['service']}: {span['name']} [{span['status']}]"
            )
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)
