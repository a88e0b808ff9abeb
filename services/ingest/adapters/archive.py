"""Ingest's side of the raw archive: write every accepted upload before it is published.

The format, the keys and the readers are in `michi.archive` (shared with the trainer and annotation).
Concurrent uploads' archive writes are gathered (`GroupCommit`) and written as segments: one blob per
batch and UTC day, all in one worker-thread hop (`BlobStore.put_many`). A segment is all-or-nothing,
so either every upload in it is archived or each of them is refused 503. An upload that cannot be
placed in a segment at all (a `started_at` no day can be computed for, which validation refuses
first) fails alone with its `ValueError`; the others of its batch are written.
"""

from __future__ import annotations

import logging

from michi.archive import MAX_SEGMENT_BYTES, SegmentUpload, plan_segments, upload_day
from michi.batching import GroupCommit
from michi.blobs import BlobError, BlobStore
from michi.contracts.v1 import upload_pb2
from services.ingest.handlers import ArchiveUnavailable

logger = logging.getLogger(__name__)

# Uploads gathered per batch at most (~13 KiB each for 10 s at 50 Hz).
MAX_BATCH = 64
# Batches written at once.
CONCURRENT_BATCHES = 1


class BlobUploadArchive:
    """The handler's `UploadArchiver` port: `ArchiveUnavailable` when the blob store does not take a segment."""

    def __init__(self, blobs: BlobStore, *, max_batch: int = MAX_BATCH, max_segment_bytes: int = MAX_SEGMENT_BYTES):
        self.blobs = blobs
        self.max_segment_bytes = max_segment_bytes
        self._writes: GroupCommit[SegmentUpload, str] = GroupCommit(
            self._write_batch, max_batch=max_batch, concurrency=CONCURRENT_BATCHES, batch_errors=(BlobError, OSError)
        )

    async def _write_batch(self, items: list[SegmentUpload]) -> list[str | Exception]:
        answers: list[str | Exception] = [BlobError("not written")] * len(items)
        placed: list[int] = []
        for position, item in enumerate(items):
            try:
                upload_day(item.upload)
            except ValueError as error:
                answers[position] = error
            else:
                placed.append(position)
        plans = plan_segments([items[position] for position in placed], self.max_segment_bytes)
        outcomes = await self.blobs.put_many([(key, data) for key, data, _ in plans], overwrite=False)
        for (_, _, members), outcome in zip(plans, outcomes, strict=True):
            for member in members:
                position = placed[member]
                answers[position] = (
                    outcome if isinstance(outcome, BlobError) else f"{outcome.uri}#{items[position].upload.upload_id}"
                )
        return answers

    async def store(self, upload: upload_pb2.Upload, canonical: bytes, content_sha256: str) -> str:
        try:
            return await self._writes.submit(SegmentUpload(upload, canonical, content_sha256))
        except BlobError as error:
            logger.warning("raw archive write failed", extra={"upload_id": upload.upload_id}, exc_info=True)
            raise ArchiveUnavailable(f"raw archive not written: {error}") from error
