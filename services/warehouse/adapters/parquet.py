"""Writing warehouse rows as Parquet files into the blob store.

`BlobParquetWriter` serialises rows in `WAREHOUSE_SCHEMA` (zstd) and puts the bytes with
`BlobStore.put_bytes`, which moves a complete temporary into place: a reader never sees half a
file, and writing a key again replaces it. `existing_parts` and `delete` let the sink remove
files a rewound pass cut differently (listed once per partition assignment).
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Protocol

import fsspec
import pyarrow.parquet as pq

from michi.blobs import BlobStore
from michi.warehouse import Row, rows_to_table
from michi.warehouse.layout import ROOT, table_of_kind

PART_NAME = re.compile(r"part-(\d+)-(\d+)\.parquet$")


class ParquetWriter(Protocol):
    def write(self, key: str, rows: list[Row]) -> None: ...

    def existing_parts(self, kind: str, partition: int) -> dict[int, str]: ...

    def delete(self, key: str) -> None: ...


def parquet_bytes(rows: list[Row]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(rows_to_table(rows), buffer, compression="zstd")
    return buffer.getvalue()


class BlobParquetWriter:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._filesystem, root = fsspec.core.url_to_fs(store.url)
        self._root = root.rstrip("/")

    def write(self, key: str, rows: list[Row]) -> None:
        """Write (or replace) the file `key`; blocks until it is in place."""
        asyncio.run(self.store.put_bytes(key, parquet_bytes(rows)))

    def existing_parts(self, kind: str, partition: int) -> dict[int, str]:
        """The files of one Kafka partition already stored: first offset -> key."""
        folder = f"{self._root}/{ROOT}/{table_of_kind(kind)}"
        parts: dict[int, str] = {}
        for path in self._filesystem.glob(f"{folder}/**/part-*-{partition}.parquet"):
            match = PART_NAME.search(str(path))
            if match and int(match.group(2)) == partition:
                parts[int(match.group(1))] = str(path)[len(self._root) + 1 :]
        return parts

    def delete(self, key: str) -> None:
        self._filesystem.rm(self.store.path(key))
