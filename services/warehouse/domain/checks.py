"""What a prediction or detection needs before the warehouse stores it (pure, no I/O)."""

from __future__ import annotations

from michi.contracts.v1 import inference_pb2

# The ids every row is found and joined by (4w2v: who, which trip, which upload, which window).
REQUIRED_LINEAGE = ("device_id", "trip_id", "upload_id", "window_id")


def unplaceable(message: inference_pb2.Prediction | inference_pb2.Detection) -> str | None:
    """Why the record cannot be stored, or None when it can.

    Inference gives every prediction and detection its lineage and the moment it occurred (the hour a row
    is filed under); a record without them decodes but says nothing anyone could find or join, so it is a
    dead letter (`schema-violation`), not a row filed under 1970 with empty ids.
    """
    missing = [f"lineage.{name}" for name in REQUIRED_LINEAGE if not getattr(message.lineage, name)]
    if not message.HasField("occurred_at"):
        missing.append("occurred_at")
    return f"{message.DESCRIPTOR.name} without {', '.join(missing)}" if missing else None
