"""The raw archive's segments: written and read back exactly, found by ids, checked on every read."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from michi.archive import (
    ArchiveCorrupt,
    ArchiveReader,
    SegmentUpload,
    archive_uploads,
    encode_segment,
    find_upload,
    legacy_key_for,
    plan_segments,
    read_segment_index,
    rebuild_upload,
    segments_folder,
)
from michi.blobs import BlobNotFound, BlobStore
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2

STARTED = datetime(2026, 11, 27, 23, 59, 50, tzinfo=UTC)


def make_upload(upload_id: str, device_id: str = "device-a", *, sequence: int = 1, started: datetime = STARTED):
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        trip_id=f"trip-{device_id}",
        sequence=sequence,
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(started.timestamp()),
    )
    upload.imu.offset_ms.extend(range(0, 1000, 20))
    upload.imu.accel_z.extend([9.81] * 50)
    return upload


def store_at(tmp_path: Path) -> BlobStore:
    return BlobStore(f"file://{tmp_path / 'blobs'}")


def test_a_segment_holds_its_uploads_after_a_header_naming_them(tmp_path: Path) -> None:
    uploads = [make_upload(f"u{index}", sequence=index) for index in range(3)]
    items = []
    for upload in uploads:
        canonical = upload.SerializeToString(deterministic=True)
        items.append(SegmentUpload(upload, canonical, hashlib.sha256(canonical).hexdigest()))
    path = tmp_path / "one.seg"
    path.write_bytes(encode_segment(items))
    with path.open("rb") as handle:
        index, payload_start = read_segment_index(handle, "one.seg")
    data = path.read_bytes()
    assert [entry.upload_id for entry in index.uploads] == ["u0", "u1", "u2"]
    for entry, item in zip(index.uploads, items, strict=True):
        assert data[payload_start + entry.offset : payload_start + entry.offset + entry.length] == item.canonical
        assert entry.content_sha256 == item.content_sha256
        assert entry.started_at.seconds == int(STARTED.timestamp())

    path.write_bytes(b"PK\x03\x04" + data[4:])
    with path.open("rb") as handle, pytest.raises(ArchiveCorrupt, match="not an archive segment"):
        read_segment_index(handle, "one.seg")


def test_uploads_are_filed_under_the_day_they_started_and_rebuild_exactly(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    late = make_upload("late")
    early = make_upload("early", started=STARTED + timedelta(seconds=20))  # just after midnight
    uris = asyncio.run(archive_uploads(store, [late, early]))
    assert f"/{segments_folder(STARTED)}/" in uris[0] and uris[0].endswith(".seg#late")
    assert f"/{segments_folder(STARTED + timedelta(days=1))}/" in uris[1]
    assert asyncio.run(rebuild_upload(store, uris[0])) == late
    assert (
        asyncio.run(
            rebuild_upload(store, uris[1], hashlib.sha256(early.SerializeToString(deterministic=True)).hexdigest())
        )
        == early
    )
    with pytest.raises(ArchiveCorrupt, match="the event says"):
        asyncio.run(rebuild_upload(store, uris[0], "0" * 64))
    with pytest.raises(BlobNotFound):
        asyncio.run(rebuild_upload(store, uris[0].replace("#late", "#absent")))
    # A window a minute into the next day still finds the upload that began before midnight.
    assert asyncio.run(find_upload(store, "device-a", "late", STARTED + timedelta(minutes=1))) == late
    with pytest.raises(BlobNotFound):
        asyncio.run(find_upload(store, "device-b", "late", STARTED))


def test_the_reader_sees_segments_written_after_its_first_look_and_the_latest_copy_wins(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    reader = ArchiveReader.for_store(store)
    asyncio.run(archive_uploads(store, [make_upload("first")]))
    assert reader.find("device-a", "first", STARTED) is not None
    assert reader.find("device-a", "second", STARTED) is None
    # Written after the reader read the day: a miss reads the new segments.
    asyncio.run(archive_uploads(store, [make_upload("second")]))
    assert reader.find("device-a", "second", STARTED) is not None
    # A retry after a failed publish archives the upload again; the latest copy is the one read.
    retried = make_upload("first", sequence=9)
    asyncio.run(archive_uploads(store, [retried]))
    reader = ArchiveReader.for_store(store)
    assert reader.find("device-a", "first", STARTED) == retried
    by_device = reader.device_uploads("device-a", STARTED)
    assert sorted((upload.upload_id, upload.sequence) for upload in by_device) == [("first", 9), ("second", 1)]
    assert reader.device_uploads("device-b", STARTED) == []


def test_archives_written_before_segments_are_still_read(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    old = make_upload("old")
    key = legacy_key_for("device-a", "old", STARTED)
    info = asyncio.run(store.put_bytes(key, old.SerializeToString(deterministic=True)))
    asyncio.run(archive_uploads(store, [make_upload("new")]))
    assert asyncio.run(rebuild_upload(store, info.uri)) == old
    reader = ArchiveReader.for_store(store)
    assert reader.find("device-a", "old", STARTED) == old
    assert sorted(upload.upload_id for upload in reader.device_uploads("device-a", STARTED)) == ["new", "old"]
    # The old layout is still checked: an upload at another device's key is refused.
    asyncio.run(store.put_bytes(legacy_key_for("device-b", "old", STARTED), old.SerializeToString(deterministic=True)))
    with pytest.raises(ArchiveCorrupt, match="holds upload"):
        reader.find("device-b", "old", STARTED)


def test_a_tampered_segment_is_refused_and_left_out(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    uris = asyncio.run(archive_uploads(store, [make_upload("kept"), make_upload("tampered")]))
    path = Path(uris[0].removeprefix("file://").partition("#")[0])
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the last upload's last byte
    path.write_bytes(bytes(data))
    reader = ArchiveReader.for_store(store)
    with pytest.raises(ArchiveCorrupt, match="sha256"):
        reader.find("device-a", "tampered", STARTED)
    assert [upload.upload_id for upload in reader.device_uploads("device-a", STARTED)] == ["kept"]


def test_a_batch_becomes_one_segment_per_day_each_bounded_in_bytes() -> None:
    uploads = [make_upload(f"u{index}") for index in range(5)] + [
        make_upload("next-day", started=STARTED + timedelta(hours=1))
    ]
    items = []
    for upload in uploads:
        canonical = upload.SerializeToString(deterministic=True)
        items.append(SegmentUpload(upload, canonical, hashlib.sha256(canonical).hexdigest()))
    assert [positions for _, _, positions in plan_segments(items)] == [[0, 1, 2, 3, 4], [5]]
    size = len(items[0].canonical)
    plans = plan_segments(items, max_segment_bytes=2 * size)
    assert [positions for _, _, positions in plans] == [[0, 1], [2, 3], [4], [5]]
    assert len({key for key, _, _ in plans}) == 4
    assert all(f"/{segments_folder(STARTED)}/" in f"/{key}" for key, _, _ in plans[:3])
    assert plans[3][0].startswith(segments_folder(STARTED + timedelta(days=1)))
