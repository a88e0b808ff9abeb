"""Ingest's side of the raw archive: write every accepted upload before it is published.

The format, the keys and the readers are in `michi.archive` (shared with the trainer and annotation).
Concurrent uploads' archive writes are gathered (`GroupCommit`) and written as segments: one blob per
batch and UTC day, all in one worker-thread hop (`BlobStore.put_many`). A segment is all-or-nothing,
so either every upload in it is archived or each of them is refused 503.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from michi.archive import SegmentUpload, encode_segment, new_segment_key, segments_folder, upload_day
from michi.batching import GroupCommit
from michi.blobs import BlobError, BlobInfo, BlobStore
from michi.contracts.v1 import upload_pb2

logger = logging.getLogger(__name__)

# Uploads gathered per batch at most (~13 KiB each for 10 s at 50 Hz).
MAX_BATCH = 64
# A segment holds at most this many bytes of uploads; a larger batch is split (uploads may be MBs).
MAX_SEGMENT_BYTES = 8 * 1024 * 1024
# Batches written at once.
CONCURRENT_BATCHES = 1


class ArchiveUnavailable(RuntimeError):
    """The blob store did not take the archive copy; the upload must not be published."""


class UploadArchiver(Protocol):
    async def store(self, upload: upload_pb2.Upload, canonical: bytes, content_sha256: str) -> str:
        """Archive `canonical` (the upload's deterministic serialization, with its sha256); returns its URI."""
        ...


class BlobUploadArchive:
    def __init__(self, blobs: BlobStore, *, max_batch: int = MAX_BATCH, max_segment_bytes: int = MAX_SEGMENT_BYTES):
        self.blobs = blobs
        self.max_segment_bytes = max_segment_bytes
        self._writes: GroupCommit[SegmentUpload, str] = GroupCommit(
            self._write_batch, max_batch=max_batch, concurrency=CONCURRENT_BATCHES
        )

    def _segments(self, items: list[SegmentUpload]) -> list[list[int]]:
        """The batch's items (by position) grouped into segments: one day each, bounded in bytes."""
        by_day: defaultdict[str, list[int]] = defaultdict(list)
        for position, item in enumerate(items):
            by_day[segments_folder(upload_day(item.upload))].append(position)
        segments: list[list[int]] = []
        for positions in by_day.values():
            current: list[int] = []
            size = 0
            for position in positions:
                length = len(items[position].canonical)
                if current and size + length > self.max_segment_bytes:
                    segments.append(current)
                    current, size = [], 0
                current.append(position)
                size += length
            segments.append(current)
        return segments

    async def _write_batch(self, items: list[SegmentUpload]) -> list[str | BlobError]:
        segments = self._segments(items)
        writes = []
        for positions in segments:
            members = [items[position] for position in positions]
            writes.append((new_segment_key(upload_day(members[0].upload)), encode_segment(members)))
        outcomes: list[BlobInfo | BlobError] = await self.blobs.put_many(writes, overwrite=False)
        answers: list[str | BlobError] = [BlobError("not written")] * len(items)
        for positions, outcome in zip(segments, outcomes, strict=True):
            for position in positions:
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
