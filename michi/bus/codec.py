"""Decoding and checking messages read from a topic."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import DecodeError, Message

from michi.bus.catalog import TopicSpec
from michi.bus.headers import CONTENT_TYPE


class UndecodableMessage(ValueError):
    """A message that cannot be processed; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_message(spec: TopicSpec, value: bytes | None, headers: Mapping[str, str]) -> Message:
    if not value:
        raise UndecodableMessage("empty-value", "message has no value")
    content_type = headers.get("content-type")
    if content_type and content_type != CONTENT_TYPE:
        raise UndecodableMessage("content-type", f"expected {CONTENT_TYPE}, got {content_type}")
    schema = headers.get("schema")
    if schema and schema != spec.schema:
        raise UndecodableMessage("schema-mismatch", f"expected {spec.schema}, got {schema}")
    message = spec.value_type()
    try:
        message.ParseFromString(value)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise UndecodableMessage("decode-error", str(error) or "invalid protobuf") from error
    if not getattr(message, "event_id", ""):
        raise UndecodableMessage("schema-violation", f"{spec.schema} without event_id")
    return message
