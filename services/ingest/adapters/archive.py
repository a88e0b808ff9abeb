"""Ingest's side of the raw archive: write every accepted upload before it is published.

The layout, the key and the readers are in `michi.archive` (shared with the trainer and annotation).
"""

from __future__ import annotations

import logging
from typing import Protocol

from michi.archive import archive_key
from michi.blobs import BlobError, BlobStore
from michi.contracts.v1 import upload_pb2

logger = logging.getLogger(__name__)


class ArchiveUnavailable(RuntimeError):
    """The blob store did not take the archive copy; the upload must not be published."""


class UploadArchiver(Protocol):
    async def store(self, upload: upload_pb2.Upload, canonical: bytes) -> str:
        """Archive `canonical` (the upload's deterministic serialization); returns its URI."""
        ...


class BlobUploadArchive:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def store(self, upload: upload_pb2.Upload, canonical: bytes) -> str:
        try:
            info = await self.blobs.put_bytes(archive_key(upload), canonical)
        except BlobError as error:
            logger.warning("raw archive write failed", extra={"upload_id": upload.upload_id}, exc_info=True)
            raise ArchiveUnavailable(f"raw archive not written: {error}") from error
        return info.uri
