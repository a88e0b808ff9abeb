"""Turning a request body into an `Upload`: protobuf bytes or the proto3 JSON mapping."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from michi.contracts.v1 import upload_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SUPPORTED_MEDIA_TYPES = (PROTOBUF, JSON)


class UndecodableUpload(ValueError):
    """The body is not an `Upload` in the announced format."""


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json` ('' when absent)."""
    return (content_type or "").partition(";")[0].strip().lower()


def decode_upload(body: bytes, media: str) -> upload_pb2.Upload:
    """Decode once; JSON accepts camelCase and snake_case names and ignores unknown fields."""
    upload = upload_pb2.Upload()
    if not body:
        raise UndecodableUpload("empty body")
    if media == PROTOBUF:
        try:
            upload.ParseFromString(body)
        except (DecodeError, RuntimeWarning, ValueError) as error:
            raise UndecodableUpload(f"invalid protobuf: {error}") from error
        return upload
    if media == JSON:
        # json_format quietly accepts a top-level array as an empty message.
        if not body.lstrip().startswith(b"{"):
            raise UndecodableUpload("a JSON upload must be an object")
        try:
            json_format.Parse(body, upload, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
            raise UndecodableUpload(f"invalid JSON upload: {str(error)[:300]}") from error
        return upload
    raise ValueError(f"unsupported media type {media!r}")
