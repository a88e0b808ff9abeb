"""Ingest's side of the raw archive: write every accepted upload before it is published.

The layout, the key and the readers are in `michi.archive` (shared with the trainer and annotation).
Concurrent uploads' archive writes go to the blob store together: one worker-thread hop per batch
(`BlobStore.put_many`), each file still written on its own, all-or-nothing.
"""

from __future__ import annotations

import logging
from typing import Protocol

from michi.archive import archive_key
from michi.batching import GroupCommit
from michi.blobs import BlobError, BlobInfo, BlobStore
from michi.contracts.v1 import upload_pb2

logger = logging.getLogger(__name__)

# Uploads written per worker-thread hop at most (~13 KiB each for 10 s at 50 Hz).
MAX_BATCH = 64
# Batches written at once. More let the kernel create files on the other core meanwhile, but measured
# here they cost more CPU per upload for no more uploads/s (docs/benchmarks.md).
CONCURRENT_BATCHES = 1


class ArchiveUnavailable(RuntimeError):
    """The blob store did not take the archive copy; the upload must not be published."""


class UploadArchiver(Protocol):
    async def store(self, upload: upload_pb2.Upload, canonical: bytes) -> str:
        """Archive `canonical` (the upload's deterministic serialization); returns its URI."""
        ...


class BlobUploadArchive:
    def __init__(self, blobs: BlobStore, *, max_batch: int = MAX_BATCH) -> None:
        self.blobs = blobs
        self._writes: GroupCommit[tuple[str, bytes], BlobInfo] = GroupCommit(
            self._write_batch, max_batch=max_batch, concurrency=CONCURRENT_BATCHES
        )

    async def _write_batch(self, items: list[tuple[str, bytes]]) -> list[BlobInfo | BlobError]:
        return await self.blobs.put_many(items)

    async def store(self, upload: upload_pb2.Upload, canonical: bytes) -> str:
        try:
            info = await self._writes.submit((archive_key(upload), canonical))
        except BlobError as error:
            logger.warning("raw archive write failed", extra={"upload_id": upload.upload_id}, exc_info=True)
            raise ArchiveUnavailable(f"raw archive not written: {error}") from error
        return info.uri
