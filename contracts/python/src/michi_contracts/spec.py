"""What a topic of the catalog is: its name, key, value type, partitions and retention.

The same fields as Michi's own catalog (`michi.bus.catalog.TopicSpec`), without the platform.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

DAY_MS = 24 * 60 * 60 * 1000
# The `content-type` header of every Michi message; `schema` carries the value's full message name.
CONTENT_TYPE = "application/x-protobuf"
DEFAULT_PREFIX = "michi."


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (without prefix), key, value type, partitions and retention."""

    base_name: str
    # What the record key holds (a field of the value's lineage, or the original key for dead letters).
    key: str
    value_type: type[Message]
    partitions: int
    # None: kept forever (compacted topics keep the newest value of each key).
    retention_ms: int | None
    compacted: bool = False
    description: str = ""

    def name(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The topic's name on the broker; Michi's default prefix is `michi.` (`MICHI_TOPIC_PREFIX`)."""
        return f"{prefix}{self.base_name}"

    @property
    def schema(self) -> str:
        """The fully qualified proto message name carried in the `schema` header."""
        return self.value_type.DESCRIPTOR.full_name

    def decode(self, value: bytes) -> Message:
        """The record value as this topic's message; fields this version does not know are kept, not refused."""
        return self.value_type.FromString(value)
