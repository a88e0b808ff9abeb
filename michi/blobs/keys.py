"""The blob key layout shared by the services that write and read blobs.

Media a device sends with `PUT /v1/uploads/{upload_id}/media/{name}` lives at
`media/{device_id}/{upload_id}/{name}`; a consumer of an `UploadReceived` finds a clip
named in `upload.media_names` at `BlobStore(settings.resolved_blob_url()).uri(media_key(...))`.
"""

from __future__ import annotations

import re

# What one path segment of a key may be: no separators, nothing a filesystem treats specially.
SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
RESERVED_SEGMENTS = frozenset({".", ".."})


class InvalidKeySegment(ValueError):
    """A key segment that could escape its folder or is not a plain name."""


def check_segment(value: str, what: str) -> str:
    """`value` unchanged when it is safe as one key segment; `InvalidKeySegment` otherwise."""
    if SEGMENT_PATTERN.fullmatch(value) is None or value in RESERVED_SEGMENTS:
        raise InvalidKeySegment(f"{what} must be 1-128 characters of A-Z a-z 0-9 . _ : - and not '.' or '..'")
    return value


def media_key(device_id: str, upload_id: str, name: str) -> str:
    """`media/{device_id}/{upload_id}/{name}`: where ingest stores a device's media for an upload."""
    return "/".join(
        (
            "media",
            check_segment(device_id, "device_id"),
            check_segment(upload_id, "upload_id"),
            check_segment(name, "media name"),
        )
    )
