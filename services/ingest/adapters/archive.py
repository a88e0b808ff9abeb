"""The raw archive: every accepted upload's canonical protobuf bytes in the blob store.

Key: `archive/{yyyy}/{mm}/{dd}/{device_id}/{upload_id}.pb`, the date being the upload's
`started_at` (UTC), so a retried upload lands on the same key whatever the day it arrives.
The bytes are exactly those `UploadReceived.content_sha256` is computed over
(`Upload.SerializeToString(deterministic=True)`); `rebuild_upload()` reads them back and
checks them, which is how training jobs and audits get an accepted upload again, exactly.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC
from typing import Protocol

from google.protobuf.message import DecodeError

from michi.blobs import BlobError, BlobStore
from michi.contracts.v1 import upload_pb2

logger = logging.getLogger(__name__)


class ArchiveUnavailable(RuntimeError):
    """The blob store did not take the archive copy; the upload must not be published."""


class ArchiveCorrupt(ValueError):
    """An archived upload whose bytes do not check out (hash, canonical form, or key)."""


class UploadArchiver(Protocol):
    async def store(self, upload: upload_pb2.Upload, canonical: bytes) -> str:
        """Archive `canonical` (the upload's deterministic serialization); returns its URI."""
        ...


def archive_key(upload: upload_pb2.Upload) -> str:
    started = upload.started_at.ToDatetime(tzinfo=UTC)
    return f"archive/{started:%Y/%m/%d}/{upload.device_id}/{upload.upload_id}.pb"


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


async def rebuild_upload(
    blob_store: BlobStore, archive_uri: str, content_sha256: str | None = None
) -> upload_pb2.Upload:
    """The archived `Upload` behind `archive_uri` (from `UploadReceived.archive_uri`).

    Pass the event's `content_sha256` to verify the bytes against the hash published at
    acceptance (audits always should). Without it the bytes are still checked to be the
    canonical serialization of an upload that belongs at this key. Raises `ArchiveCorrupt`
    or `BlobNotFound`.
    """
    key = blob_store.key_for_uri(archive_uri)
    data = await blob_store.read_bytes(key)
    actual = hashlib.sha256(data).hexdigest()
    if content_sha256 is not None and actual != content_sha256.lower():
        raise ArchiveCorrupt(f"{archive_uri}: sha256 is {actual}, the event says {content_sha256}")
    upload = upload_pb2.Upload()
    try:
        upload.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise ArchiveCorrupt(f"{archive_uri}: not an Upload: {error}") from error
    if upload.SerializeToString(deterministic=True) != data:
        raise ArchiveCorrupt(f"{archive_uri}: not the canonical serialization of an Upload")
    if archive_key(upload) != key:
        raise ArchiveCorrupt(f"{archive_uri}: holds upload {upload.upload_id} of {upload.device_id}")
    return upload
