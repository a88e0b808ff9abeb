"""Blob storage for media and raw archives: `BlobStore` over fsspec, and the shared key layout.

store = BlobStore(settings.resolved_blob_url())        # file://... here, s3://bucket/prefix in production
info = await store.write_stream(media_key(device, upload, name), chunks, max_bytes=50 << 20,
                                expected_sha256=declared)
"""

from michi.blobs.keys import InvalidKeySegment, check_segment, media_key
from michi.blobs.store import (
    BlobError,
    BlobExists,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    ChecksumMismatch,
    InvalidKey,
)

__all__ = [
    "BlobError",
    "BlobExists",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "BlobStore",
    "BlobStoreUnavailable",
    "BlobTooLarge",
    "ChecksumMismatch",
    "InvalidKey",
    "InvalidKeySegment",
    "check_segment",
    "media_key",
]
