"""Trip and driver state in faust tables (memory store, recovered from their changelogs).

Writes name their changelog partition explicitly (the partition of the message
the state belongs to) instead of relying on faust's "current event": a batch can
hold messages of several partitions, and the deadline timer writes outside any
event. `sync()` waits until every changelog write was acknowledged, so the
handlers can finish a batch (and let faust commit its offsets) only once the
state is durable.

A state is encoded here (the same JSON faust's codec writes, orjson) and sent as
bytes, so `put` knows the size of the record it writes (`michi_scoring_state_bytes`);
the table's own codec reads it back when the changelog is recovered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
from faust.types import TableT

from services.scoring.domain.driver import DriverState
from services.scoring.domain.trip import TripState


class _ChangelogTable:
    def __init__(self, table: TableT) -> None:
        self._table = table
        self._pending: list[asyncio.Future[Any]] = []

    def _get(self, key: str) -> dict[str, Any] | None:
        value = self._table.data.get(key)
        return value if isinstance(value, dict) else None

    def _put(self, key: str, value: dict[str, Any], partition: int) -> int:
        encoded = orjson.dumps(value)
        self._table.data[key] = value
        self._pending.append(self._table.send_changelog(partition, key, encoded, value_serializer="raw"))
        return len(encoded)

    def delete(self, key: str, partition: int) -> None:
        if key in self._table.data:
            del self._table.data[key]
        self._pending.append(self._table.send_changelog(partition, key, None, value_serializer="raw"))

    async def sync(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    def __len__(self) -> int:
        return len(self._table.data)


class FaustTripStore(_ChangelogTable):
    def get(self, trip_id: str) -> TripState | None:
        value = self._get(trip_id)
        return TripState.from_dict(value) if value is not None else None

    def put(self, state: TripState) -> int:
        return self._put(state.trip_id, state.to_dict(), state.partition)

    def states(self) -> Iterator[TripState]:
        for value in list(self._table.data.values()):
            if isinstance(value, dict):
                yield TripState.from_dict(value)


class FaustDriverStore(_ChangelogTable):
    def get(self, driver_id: str) -> DriverState | None:
        value = self._get(driver_id)
        return DriverState.from_dict(value) if value is not None else None

    def put(self, state: DriverState, partition: int) -> int:
        return self._put(state.driver_id, state.to_dict(), partition)
