"""Where the page's window data comes from: ingest's raw archive and media in the blob store.

A label request carries the device and upload ids and the window's time span; `michi.archive.find_upload`
finds the archived upload from those (in the segments of the day the upload started, whose headers
this source's `ArchiveReader` remembers) and checks it is the canonical upload the segment names;
anything else counts as absent. Media frames are at
`michi.blobs.media_key(device, upload, name)` for each of the upload's `media_names`.
"""

from __future__ import annotations

import logging
from datetime import datetime

from michi.archive import ArchiveCorrupt, ArchiveReader, find_upload
from michi.blobs import BlobError, BlobNotFound, BlobReader, BlobStore, InvalidKeySegment, check_segment, media_key
from michi.contracts.v1 import common_pb2, upload_pb2

logger = logging.getLogger(__name__)

MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".mp4": "video/mp4",
    ".h264": "video/h264",
}


def media_type_of(name: str) -> str:
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return MEDIA_TYPES.get(suffix, "application/octet-stream")


class ArchiveWindowSource:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.reader = ArchiveReader.for_store(blobs)

    async def upload(self, lineage: common_pb2.Lineage, window_started_at: datetime) -> upload_pb2.Upload | None:
        """The archived upload the lineage names, or None when the archive does not have it."""
        try:
            device_id = check_segment(lineage.device_id, "device_id")
            upload_id = check_segment(lineage.upload_id, "upload_id")
        except InvalidKeySegment:
            return None
        try:
            return await find_upload(self.blobs, device_id, upload_id, window_started_at, reader=self.reader)
        except BlobNotFound:
            return None
        except ArchiveCorrupt:
            logger.warning("archived upload does not check out", extra={"upload_id": upload_id}, exc_info=True)
            return None
        except BlobError:
            logger.warning("archive read failed", extra={"upload_id": upload_id}, exc_info=True)
            return None

    async def media(self, lineage: common_pb2.Lineage, name: str) -> tuple[BlobReader, str] | None:
        """An open reader on one of the upload's media files and its Content-Type (None: absent)."""
        try:
            key = media_key(lineage.device_id, lineage.upload_id, name)
        except InvalidKeySegment:
            return None
        try:
            return await self.blobs.open_read(key), media_type_of(name)
        except BlobNotFound:
            return None
