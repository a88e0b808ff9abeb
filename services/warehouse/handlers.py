"""What the warehouse does with each decoded prediction or detection: the row it files, or why not.

    row = row_of(record.message, sources[topic], topic=topic, partition=partition, offset=offset)

Pure: a record without the lineage and time a row needs (`domain/checks.py`) is refused with
`Rejected(SCHEMA_VIOLATION, why)`, which the kit's consumer loop turns into a dead letter; any other
record becomes its row (`michi.warehouse`). Buffering, writing the Parquet files and committing are the
sink's (`entrypoints/consumer.py`, through the `ParquetWriter` port of `adapters/parquet.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from michi.bus.catalog import TopicSpec
from michi.kit.consumer import Rejected
from michi.warehouse import Row
from services.warehouse.domain.checks import unplaceable

SERVICE = "warehouse"
# Dead-letter reason of a record that decodes but cannot be filed (`domain/checks.py`), besides the decoder's.
SCHEMA_VIOLATION = "schema-violation"


@dataclass(frozen=True)
class Source:
    """One topic the sink reads: its catalog entry, record kind and row mapping."""

    spec: TopicSpec
    kind: str
    to_row: Callable[..., Row]


def row_of(message: Message, source: Source, *, topic: str, partition: int, offset: int) -> Row:
    """The row `message` is filed as (`Rejected` with `SCHEMA_VIOLATION` when it cannot be one)."""
    problem = unplaceable(message)  # type: ignore[arg-type]
    if problem is not None:
        raise Rejected(SCHEMA_VIOLATION, problem)
    return source.to_row(message, topic=topic, partition=partition, offset=offset)
