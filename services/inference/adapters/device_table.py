"""The faust table holding each device's `DeviceState` (JSON bytes), recovered from its changelog.

Faust picks a table write's changelog partition from the *current* event, which inside a
`take_events` batch is whichever event came last. A device's row must go to the partition its
uploads come from (the table is co-partitioned with the uploads topic by device_id), so writes
name their partition explicitly through `write_state`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import faust

_write_partition: ContextVar[int | None] = ContextVar("michi_inference_table_partition", default=None)

TABLE_NAME = "device-state"


class DeviceStateTable(faust.Table):
    def partition_for_key(self, key: Any) -> int | None:
        partition = _write_partition.get()
        if partition is not None:
            return partition
        result: int | None = super().partition_for_key(key)
        return result


def create_device_table(app: faust.App, partitions: int) -> DeviceStateTable:
    table = DeviceStateTable(
        app,
        name=TABLE_NAME,
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        beacon=app.tables.beacon,
        help="inference state per device: calibration, open episodes, replay memory",
    )
    app.tables.add(table)
    return table


def read_state(table: Any, device_id: str) -> bytes | None:
    value = table.get(device_id.encode())
    return value if isinstance(value, bytes | None) else bytes(value)


def write_state(table: Any, device_id: str, payload: bytes, partition: int) -> None:
    token = _write_partition.set(partition)
    try:
        table[device_id.encode()] = payload
    finally:
        _write_partition.reset(token)
