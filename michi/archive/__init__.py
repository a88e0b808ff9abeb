"""The raw archive: every accepted upload's canonical protobuf bytes in the blob store.

Ingest writes accepted uploads in **segments**: one blob per batch of uploads that started on the
same UTC day, `archive/segments/{yyyy}/{mm}/{dd}/{segment}.seg`, where `{segment}` is
`{unix time in ns}-{random}` so a day's segments list in the order they were written. A segment is

    MICHI-ARCHIVE-SEGMENT-1\\n | header length (4 bytes, big-endian) | ArchiveSegmentIndex | uploads' bytes

and `ArchiveSegmentIndex` (proto/michi/v1/upload.proto) names each upload (ids, trip, sequence,
start) with where its bytes are and their sha256. An upload's `archive_uri` is the segment's URI
with the upload id as fragment: `file:///.../archive/segments/2026/11/28/1764...-3f9a.seg#upload-1`.
One blob per batch instead of one per upload: creating a file costs the kernel more than writing
one (55-750 µs here), and an object store bills per PUT.

The bytes are exactly those `UploadReceived.content_sha256` is computed over
(`Upload.SerializeToString(deterministic=True)`). `rebuild_upload()` reads them back and checks
them, which is how training jobs, annotation and audits get an accepted upload again, exactly.
`ArchiveReader` finds uploads by device and upload id (what a label or a label request carries)
when the `archive_uri` is not at hand, by reading the headers of the day's segments once and
remembering them; the same upload written twice (a retry after a failed publish) is read from its
latest segment.

Archives written before segments (`archive/{yyyy}/{mm}/{dd}/{device_id}/{upload_id}.pb`, one blob
per upload, `archive_uri` without a fragment) are still read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any, ParamSpec, TypeVar

from google.protobuf.message import DecodeError

from michi.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable
from michi.contracts.v1 import upload_pb2

SEGMENT_MAGIC = b"MICHI-ARCHIVE-SEGMENT-1\n"
SEGMENT_SUFFIX = ".seg"
SEGMENTS_FOLDER = "archive/segments"
_HEADER_LENGTH = struct.Struct(">I")
# A header larger than this is not one we wrote (64 uploads take ~10 KiB).
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Uploads' bytes per segment at most; more are split into several segments (uploads may be MBs).
MAX_SEGMENT_BYTES = 8 * 1024 * 1024
# A device's uploads of a day come from a listing of the day's segments at most this old (a training
# job asks for many devices of the same days: one listing serves them all).
DEVICE_LISTING_MAX_AGE_S = 1.0
# Days whose segment headers an ArchiveReader keeps (lookups go to the window's day and the one before).
MAX_REMEMBERED_DAYS = 4


logger = logging.getLogger(__name__)

Arguments = ParamSpec("Arguments")
Result = TypeVar("Result")


class ArchiveCorrupt(ValueError):
    """An archived upload whose bytes do not check out (hash, canonical form, or place)."""


# --- keys


def segments_folder(day: datetime) -> str:
    return f"{SEGMENTS_FOLDER}/{day.astimezone(UTC):%Y/%m/%d}"


def upload_day(upload: upload_pb2.Upload) -> datetime:
    """The UTC day an upload is filed under: the day its recording started.

    Raises `ValueError` for a `started_at` no Timestamp can hold (nanos outside 0-999,999,999, a year
    outside 1-9999); ingest refuses those at the door, and a batch writer fails only that upload.
    """
    try:
        return upload.started_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        stamp = upload.started_at
        raise ValueError(
            f"upload {upload.upload_id!r}: started_at {stamp.seconds} s {stamp.nanos} ns is not a valid timestamp"
        ) from error


def new_segment_key(day: datetime) -> str:
    return f"{segments_folder(day)}/{time.time_ns():020d}-{os.urandom(4).hex()}{SEGMENT_SUFFIX}"


def legacy_key_for(device_id: str, upload_id: str, started: datetime) -> str:
    """Where archives written before segments kept one upload."""
    return f"archive/{started.astimezone(UTC):%Y/%m/%d}/{device_id}/{upload_id}.pb"


# --- the segment format


@dataclass(frozen=True)
class SegmentUpload:
    """One upload to write into a segment: the message, its canonical bytes and their sha256."""

    upload: upload_pb2.Upload
    canonical: bytes
    content_sha256: str


def encode_segment(uploads: Sequence[SegmentUpload]) -> bytes:
    """A segment holding `uploads` in this order (see the module docstring for the layout)."""
    index = upload_pb2.ArchiveSegmentIndex()
    offset = 0
    for item in uploads:
        entry = index.uploads.add(
            upload_id=item.upload.upload_id,
            device_id=item.upload.device_id,
            trip_id=item.upload.trip_id,
            sequence=item.upload.sequence,
            offset=offset,
            length=len(item.canonical),
            content_sha256=item.content_sha256,
        )
        entry.started_at.CopyFrom(item.upload.started_at)
        offset += len(item.canonical)
    header = index.SerializeToString(deterministic=True)
    return b"".join((SEGMENT_MAGIC, _HEADER_LENGTH.pack(len(header)), header, *(item.canonical for item in uploads)))


def read_segment_index(handle: IO[bytes], source: str) -> tuple[upload_pb2.ArchiveSegmentIndex, int]:
    """The segment's header and where its uploads' bytes start (raises `ArchiveCorrupt`)."""
    prefix = handle.read(len(SEGMENT_MAGIC) + _HEADER_LENGTH.size)
    if len(prefix) < len(SEGMENT_MAGIC) + _HEADER_LENGTH.size or not prefix.startswith(SEGMENT_MAGIC):
        raise ArchiveCorrupt(f"{source}: not an archive segment")
    (header_length,) = _HEADER_LENGTH.unpack(prefix[len(SEGMENT_MAGIC) :])
    if header_length > MAX_HEADER_BYTES:
        raise ArchiveCorrupt(f"{source}: header of {header_length} bytes")
    header = handle.read(header_length)
    index = upload_pb2.ArchiveSegmentIndex()
    try:
        if len(header) != header_length:
            raise DecodeError("truncated header")
        index.ParseFromString(header)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise ArchiveCorrupt(f"{source}: unreadable header: {error}") from error
    return index, len(prefix) + header_length


def read_segment_upload(
    handle: IO[bytes],
    payload_start: int,
    entry: upload_pb2.ArchivedUpload,
    source: str,
    content_sha256: str | None = None,
) -> upload_pb2.Upload:
    """One upload of an open segment, checked against its header entry (and the event's hash if given)."""
    handle.seek(payload_start + entry.offset)
    data = handle.read(entry.length)
    if len(data) != entry.length:
        raise ArchiveCorrupt(f"{source}: truncated ({len(data)} of {entry.length} bytes)")
    if hashlib.sha256(data).hexdigest() != entry.content_sha256:
        raise ArchiveCorrupt(f"{source}: sha256 does not match the segment's header")
    upload = parse_archived(data, source, content_sha256)
    if (upload.device_id, upload.upload_id) != (entry.device_id, entry.upload_id):
        raise ArchiveCorrupt(f"{source}: holds upload {upload.upload_id} of {upload.device_id}")
    return upload


def parse_archived(data: bytes, source: str, content_sha256: str | None = None) -> upload_pb2.Upload:
    """Check and decode an archived upload's bytes (raises `ArchiveCorrupt`)."""
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
    return upload


def plan_segments(
    items: Sequence[SegmentUpload], max_segment_bytes: int = MAX_SEGMENT_BYTES
) -> list[tuple[str, bytes, list[int]]]:
    """The segments to write for `items`: (key, bytes, the positions of the items it holds).

    One UTC day per segment; a day's items are split so a segment's uploads stay within
    `max_segment_bytes` (a single larger upload gets a segment of its own).
    """
    by_day: dict[str, list[int]] = {}
    for position, item in enumerate(items):
        by_day.setdefault(segments_folder(upload_day(item.upload)), []).append(position)
    groups: list[list[int]] = []
    for positions in by_day.values():
        current: list[int] = []
        size = 0
        for position in positions:
            length = len(items[position].canonical)
            if current and size + length > max_segment_bytes:
                groups.append(current)
                current, size = [], 0
            current.append(position)
            size += length
        groups.append(current)
    plans = []
    for positions in groups:
        members = [items[position] for position in positions]
        plans.append((new_segment_key(upload_day(members[0].upload)), encode_segment(members), positions))
    return plans


async def archive_uploads(blob_store: BlobStore, uploads: Sequence[upload_pb2.Upload]) -> list[str]:
    """Write `uploads` as segments and return their `archive_uri`s, in order.

    What ingest does per batch, for tools, tests and benchmarks that fill an archive themselves.
    """
    items = []
    for upload in uploads:
        canonical = upload.SerializeToString(deterministic=True)
        items.append(SegmentUpload(upload, canonical, hashlib.sha256(canonical).hexdigest()))
    uris = [""] * len(items)
    for key, data, positions in plan_segments(items):
        info = await blob_store.put_bytes(key, data, overwrite=False)
        for position in positions:
            uris[position] = f"{info.uri}#{items[position].upload.upload_id}"
    return uris


# --- reading


class ArchiveReader:
    """Reads the archive under an fsspec location, synchronously (from asyncio: in a worker thread).

    It remembers the headers of the segments it read, for the `MAX_REMEMBERED_DAYS` days it used
    last; a lookup that misses lists the day again and reads only the segments it has not seen.
    Thread-safe.
    """

    def __init__(self, filesystem: Any, root: str) -> None:
        self._fs = filesystem
        self._root = root.rstrip("/")
        self._lock = threading.Lock()
        # day folder -> segment key -> its header entries, least recently used first
        self._segments: OrderedDict[str, dict[str, list[upload_pb2.ArchivedUpload]]] = OrderedDict()
        # day folder -> when it was last listed (monotonic)
        self._listed_at: dict[str, float] = {}

    @classmethod
    def for_store(cls, blob_store: BlobStore) -> ArchiveReader:
        return cls(*blob_store.fsspec_location())

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    # by archive_uri key

    def rebuild(self, key: str, upload_id: str | None, content_sha256: str | None = None) -> upload_pb2.Upload:
        """The upload at `key` (a segment when `upload_id` is given, else a pre-segment blob)."""
        try:
            with self._fs.open(self._path(key), "rb") as handle:
                if upload_id is None:
                    upload = parse_archived(handle.read(), key, content_sha256)
                    _check_legacy_place(upload, key)
                    return upload
                index, payload_start = read_segment_index(handle, key)
                entries = [entry for entry in index.uploads if entry.upload_id == upload_id]
                if not entries:
                    raise BlobNotFound(f"{key} holds no upload {upload_id}")
                return read_segment_upload(handle, payload_start, entries[-1], f"{key}#{upload_id}", content_sha256)
        except FileNotFoundError as error:
            raise BlobNotFound(key) from error

    # by device and upload id

    def find(self, device_id: str, upload_id: str, around: datetime) -> upload_pb2.Upload | None:
        """The archived upload of `device_id` with `upload_id` that covers the instant `around` (None: absent).

        An upload starts at most a few minutes before any of its windows, so its day is the day of
        `around` or the one before (an upload begun just before midnight). Raises `ArchiveCorrupt`.
        """
        for day in (around, around - timedelta(days=1)):
            located = self._locate(segments_folder(day), device_id, upload_id)
            if located is not None:
                key, entry = located
                return self._read_entry(key, entry)
            legacy = legacy_key_for(device_id, upload_id, day)
            try:
                return self.rebuild(legacy, None)
            except BlobNotFound:
                continue
        return None

    def device_uploads(self, device_id: str, day: datetime) -> list[upload_pb2.Upload]:
        """Every archived upload of a device that started on one UTC day; corrupt ones are logged and left out."""
        latest: dict[str, tuple[str, upload_pb2.ArchivedUpload]] = {}
        segments = self._day(segments_folder(day), listed_within_s=DEVICE_LISTING_MAX_AGE_S)
        for key, entries in sorted(segments.items()):
            for entry in entries:
                if entry.device_id == device_id:
                    latest[entry.upload_id] = (key, entry)
        uploads = []
        for key, entry in latest.values():
            with _logged_if_corrupt():
                uploads.append(self._read_entry(key, entry))
        legacy_folder = legacy_key_for(device_id, "x", day).rsplit("/", 1)[0]
        for path in self._list(legacy_folder):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(".pb") and name[: -len(".pb")] not in latest:
                with _logged_if_corrupt():
                    uploads.append(self.rebuild(f"{legacy_folder}/{name}", None))
        return uploads

    def _read_entry(self, key: str, entry: upload_pb2.ArchivedUpload) -> upload_pb2.Upload:
        source = f"{key}#{entry.upload_id}"
        try:
            with self._fs.open(self._path(key), "rb") as handle:
                _, payload_start = read_segment_index(handle, key)
                upload = read_segment_upload(handle, payload_start, entry, source)
        except FileNotFoundError as error:
            raise ArchiveCorrupt(f"{source}: the segment disappeared") from error
        if segments_folder(upload_day(upload)) != key.rsplit("/", 1)[0]:
            raise ArchiveCorrupt(f"{source}: started on another day than its segment's")
        return upload

    def _locate(self, folder: str, device_id: str, upload_id: str) -> tuple[str, upload_pb2.ArchivedUpload] | None:
        with self._lock:
            known = folder in self._segments
        # What was read before first; on a miss, the segments written since.
        for listed_within_s in (math.inf, 0.0) if known else (0.0,):
            found = None
            for key, entries in sorted(self._day(folder, listed_within_s=listed_within_s).items()):
                for entry in entries:
                    if entry.upload_id == upload_id and entry.device_id == device_id:
                        found = (key, entry)
            if found is not None:
                return found
        return None

    def _day(self, folder: str, *, listed_within_s: float) -> dict[str, list[upload_pb2.ArchivedUpload]]:
        """The day's segment headers; the folder is listed again unless it was within `listed_within_s`."""
        with self._lock:
            known = self._segments.get(folder)
            if known is not None:
                self._segments.move_to_end(folder)
                if time.monotonic() - self._listed_at[folder] <= listed_within_s:
                    return dict(known)
        listed_at = time.monotonic()
        seen = dict(known or {})
        for path in self._list(folder):
            name = path.rsplit("/", 1)[-1]
            key = f"{folder}/{name}"
            if not name.endswith(SEGMENT_SUFFIX) or key in seen:
                continue
            try:
                with self._fs.open(self._path(key), "rb") as handle:
                    index, _ = read_segment_index(handle, key)
            except FileNotFoundError:
                continue
            seen[key] = list(index.uploads)
        with self._lock:
            self._segments[folder] = seen
            self._listed_at[folder] = listed_at
            self._segments.move_to_end(folder)
            while len(self._segments) > MAX_REMEMBERED_DAYS:
                forgotten, _ = self._segments.popitem(last=False)
                del self._listed_at[forgotten]
        return dict(seen)

    def _list(self, folder: str) -> list[str]:
        try:
            return sorted(str(path) for path in self._fs.ls(self._path(folder), detail=False))
        except FileNotFoundError:
            return []


@contextlib.contextmanager
def _logged_if_corrupt() -> Iterator[None]:
    try:
        yield
    except ArchiveCorrupt as error:
        logger.warning("archived upload refused", extra={"error": str(error)})


def _check_legacy_place(upload: upload_pb2.Upload, key: str) -> None:
    if legacy_key_for(upload.device_id, upload.upload_id, upload_day(upload)) != key:
        raise ArchiveCorrupt(f"{key}: holds upload {upload.upload_id} of {upload.device_id}")


def split_archive_uri(blob_store: BlobStore, archive_uri: str) -> tuple[str, str | None]:
    """The blob key and upload id (None for a pre-segment URI) of an `archive_uri`."""
    location, _, upload_id = archive_uri.partition("#")
    return blob_store.key_for_uri(location), upload_id or None


async def rebuild_upload(
    blob_store: BlobStore, archive_uri: str, content_sha256: str | None = None
) -> upload_pb2.Upload:
    """The archived `Upload` behind `archive_uri` (from `UploadReceived.archive_uri`).

    Pass the event's `content_sha256` to verify the bytes against the hash published at
    acceptance (audits always should). Without it the bytes are still checked against the
    segment's header and to be the canonical serialization of the upload named there.
    Raises `ArchiveCorrupt` or `BlobNotFound`.
    """
    key, upload_id = split_archive_uri(blob_store, archive_uri)
    reader = ArchiveReader.for_store(blob_store)
    return await _in_thread(reader.rebuild, key, upload_id, content_sha256)


async def find_upload(
    blob_store: BlobStore,
    device_id: str,
    upload_id: str,
    around: datetime,
    *,
    reader: ArchiveReader | None = None,
) -> upload_pb2.Upload:
    """`ArchiveReader.find` from asyncio; pass a long-lived `reader` to keep its segment headers.

    Raises `BlobNotFound` when the archive does not have the upload, `ArchiveCorrupt`.
    """
    reader = reader or ArchiveReader.for_store(blob_store)
    upload = await _in_thread(reader.find, device_id, upload_id, around)
    if upload is None:
        raise BlobNotFound(f"no archived upload {upload_id} of {device_id} near {around.isoformat()}")
    return upload


async def _in_thread(
    function: Callable[Arguments, Result], *args: Arguments.args, **kwargs: Arguments.kwargs
) -> Result:
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except (ArchiveCorrupt, BlobNotFound):
        raise
    except OSError as error:
        raise BlobStoreUnavailable(f"{type(error).__name__}: {error}") from error
