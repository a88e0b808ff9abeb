"""The raw archive: every accepted upload's canonical protobuf bytes in the blob store.

Key: `archive/{yyyy}/{mm}/{dd}/{device_id}/{upload_id}.pb`, the date being the upload's
`started_at` (UTC), so a retried upload lands on the same key whatever the day it arrives.
The bytes are exactly those `UploadReceived.content_sha256` is computed over
(`Upload.SerializeToString(deterministic=True)`). Ingest writes them; `rebuild_upload()` reads
them back and checks them, which is how training jobs, annotation and audits get an accepted
upload again, exactly. `find_upload()` finds one by device, upload id and a time inside it
(what a label or a label request carries) when the `archive_uri` is not at hand.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError

from michi.blobs import BlobNotFound, BlobStore
from michi.contracts.v1 import upload_pb2


class ArchiveCorrupt(ValueError):
    """An archived upload whose bytes do not check out (hash, canonical form, or key)."""


def archive_key_for(device_id: str, upload_id: str, started: datetime) -> str:
    day = started.astimezone(UTC)
    return f"archive/{day:%Y/%m/%d}/{device_id}/{upload_id}.pb"


def archive_key(upload: upload_pb2.Upload) -> str:
    return archive_key_for(upload.device_id, upload.upload_id, upload.started_at.ToDatetime(tzinfo=UTC))


def parse_archived(data: bytes, key: str, source: str, content_sha256: str | None = None) -> upload_pb2.Upload:
    """Check and decode archived bytes read from `key` (raises `ArchiveCorrupt`)."""
    actual = hashlib.sha256(data).hexdigest()
    if content_sha256 is not None and actual != content_sha256.lower():
        raise ArchiveCorrupt(f"{source}: sha256 is {actual}, the event says {content_sha256}")
    upload = upload_pb2.Upload()
    try:
        upload.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise ArchiveCorrupt(f"{source}: not an Upload: {error}") from error
    if upload.SerializeToString(deterministic=True) != data:
        raise ArchiveCorrupt(f"{source}: not the canonical serialization of an Upload")
    if archive_key(upload) != key:
        raise ArchiveCorrupt(f"{source}: holds upload {upload.upload_id} of {upload.device_id}")
    return upload


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
    return parse_archived(await blob_store.read_bytes(key), key, archive_uri, content_sha256)


async def find_upload(blob_store: BlobStore, device_id: str, upload_id: str, around: datetime) -> upload_pb2.Upload:
    """The archived upload of `device_id` with `upload_id` that covers the instant `around`.

    An upload starts at most a few minutes before any of its windows, so its day is the day of
    `around` or the one before (an upload begun just before midnight). Raises `BlobNotFound`.
    """
    for day in (around, around - timedelta(days=1)):
        key = archive_key_for(device_id, upload_id, day)
        try:
            data = await blob_store.read_bytes(key)
        except BlobNotFound:
            continue
        return parse_archived(data, key, key)
    raise BlobNotFound(f"no archived upload {upload_id} of {device_id} near {around.isoformat()}")
