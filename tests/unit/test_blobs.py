"""`michi.blobs`: all-or-nothing streamed writes, bounds, checksums and round trips on `file://`."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from michi.blobs import (
    BlobExists,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    ChecksumMismatch,
    InvalidKey,
    InvalidKeySegment,
    media_key,
)


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def visible_files(root: Path) -> list[str]:
    """Every file under the store's root, temporaries included."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(root: Path) -> BlobStore:
    return BlobStore(f"file://{root}")


@pytest.mark.asyncio
async def test_write_stream_commits_with_size_checksum_and_uri(store: BlobStore, root: Path) -> None:
    data = bytes(range(256)) * 12_000  # 3 MB: several write blocks
    sha256 = hashlib.sha256(data).hexdigest()
    info = await store.write_stream("media/a/u/clip.mp4", chunks_of(data), max_bytes=len(data), expected_sha256=sha256)
    assert (info.size, info.sha256) == (len(data), sha256)
    assert info.uri == f"file://{root}/media/a/u/clip.mp4"
    assert (root / "media/a/u/clip.mp4").read_bytes() == data
    assert visible_files(root) == ["media/a/u/clip.mp4"]
    assert await store.exists("media/a/u/clip.mp4")
    assert store.key_for_uri(info.uri) == "media/a/u/clip.mp4"
    assert (await store.sha256("media/a/u/clip.mp4")).sha256 == sha256


@pytest.mark.asyncio
async def test_too_large_stops_reading_and_leaves_nothing(store: BlobStore, root: Path) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1000

    with pytest.raises(BlobTooLarge):
        await store.write_stream("media/a/u/big", endless(), max_bytes=10_000)
    assert consumed == 11
    assert visible_files(root) == []
    assert not await store.exists("media/a/u/big")


@pytest.mark.asyncio
async def test_checksum_mismatch_aborts_and_keeps_the_previous_blob(store: BlobStore, root: Path) -> None:
    await store.put_bytes("media/a/u/frame.jpg", b"first")
    with pytest.raises(ChecksumMismatch) as raised:
        await store.write_stream("media/a/u/frame.jpg", chunks_of(b"second"), max_bytes=100, expected_sha256="0" * 64)
    assert raised.value.actual == hashlib.sha256(b"second").hexdigest()
    assert (root / "media/a/u/frame.jpg").read_bytes() == b"first"
    assert visible_files(root) == ["media/a/u/frame.jpg"]


@pytest.mark.asyncio
async def test_checksum_is_case_insensitive(store: BlobStore) -> None:
    sha256 = hashlib.sha256(b"data").hexdigest().upper()
    info = await store.write_stream("k", chunks_of(b"data"), max_bytes=10, expected_sha256=sha256)
    assert info.sha256 == sha256.lower()


@pytest.mark.asyncio
async def test_failing_source_leaves_nothing(store: BlobStore, root: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.write_stream("media/a/u/clip", broken(), max_bytes=100)
    assert visible_files(root) == []


@pytest.mark.asyncio
async def test_no_overwrite_refuses_an_existing_key(store: BlobStore, root: Path) -> None:
    await store.put_bytes("k", b"one")
    with pytest.raises(BlobExists):
        await store.write_stream("k", chunks_of(b"two"), max_bytes=10, overwrite=False)
    with pytest.raises(BlobExists):
        await store.put_bytes("k", b"two", overwrite=False)
    assert (root / "k").read_bytes() == b"one"
    assert visible_files(root) == ["k"]


@pytest.mark.asyncio
async def test_put_and_read_round_trip(store: BlobStore) -> None:
    info = await store.put_bytes("archive/2025/01/02/a/u.pb", b"\x00\x01payload")
    assert info.sha256 == hashlib.sha256(b"\x00\x01payload").hexdigest()
    assert await store.read_bytes("archive/2025/01/02/a/u.pb") == b"\x00\x01payload"
    async with await store.open_read("archive/2025/01/02/a/u.pb") as reader:
        assert await reader.read(3) == b"\x00\x01p"
        assert await reader.read() == b"ayload"


@pytest.mark.asyncio
async def test_put_survives_folders_removed_behind_its_back(store: BlobStore, root: Path) -> None:
    await store.put_bytes("archive/2025/01/02/a/u.pb", b"one")
    shutil.rmtree(root)
    await store.put_bytes("archive/2025/01/02/a/v.pb", b"two")
    assert await store.read_bytes("archive/2025/01/02/a/v.pb") == b"two"
    assert visible_files(root) == ["archive/2025/01/02/a/v.pb"]


@pytest.mark.asyncio
async def test_missing_blob_and_unwritable_root(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        await store.read_bytes("nothing/here")
    assert not await store.exists("nothing/here")
    # A regular file where a folder should be: fails the same way for root and for everyone else.
    (tmp_path / "a-file").write_text("not a folder")
    broken = BlobStore(f"file://{tmp_path / 'a-file' / 'blobs'}")
    with pytest.raises(BlobStoreUnavailable):
        await broken.put_bytes("k", b"data")
    with pytest.raises(BlobStoreUnavailable):
        await broken.write_stream("k", chunks_of(b"data"), max_bytes=10)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../escape", "a/./b", "a/.."])
def test_keys_that_could_escape_the_root_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.path(key)


def test_key_for_uri_refuses_foreign_uris(store: BlobStore) -> None:
    with pytest.raises(InvalidKey):
        store.key_for_uri("file:///elsewhere/k")


def test_media_key_layout_and_segment_checks() -> None:
    assert media_key("device-a", "upload-1", "front.jpg") == "media/device-a/upload-1/front.jpg"
    for device_id, upload_id, name in (("..", "u", "n"), ("d", "a/b", "n"), ("d", "u", "."), ("d", "u", "")):
        with pytest.raises(InvalidKeySegment):
            media_key(device_id, upload_id, name)


@pytest.mark.asyncio
async def test_put_many_writes_each_blob_on_its_own(store: BlobStore, root: Path, tmp_path: Path) -> None:
    await store.put_bytes("taken", b"first")
    outcomes = await store.put_many(
        [("archive/a/1.pb", b"one"), ("taken", b"second"), ("archive/b/2.pb", b"two")], overwrite=False
    )
    first, refused, third = outcomes
    assert isinstance(first, BlobInfo) and first.sha256 == hashlib.sha256(b"one").hexdigest()
    assert isinstance(refused, BlobExists)
    assert isinstance(third, BlobInfo) and third.size == 3
    assert await store.read_bytes("archive/b/2.pb") == b"two"
    assert (root / "taken").read_bytes() == b"first"
    assert visible_files(root) == ["archive/a/1.pb", "archive/b/2.pb", "taken"]
    (tmp_path / "a-file").write_text("not a folder")
    broken = BlobStore(f"file://{tmp_path / 'a-file' / 'blobs'}")
    assert all(isinstance(outcome, BlobStoreUnavailable) for outcome in await broken.put_many([("k", b"x")]))


def test_the_documented_s3_setting_opens_an_s3_store_without_touching_the_network() -> None:
    """MICHI_BLOB_URL=s3://bucket/prefix is a production setting: its filesystem (s3fs) is installed with Michi."""
    from s3fs import S3FileSystem

    store = BlobStore("s3://michi-blobs/fleet-a")
    assert isinstance(store._fs, S3FileSystem)
    assert store._root == "michi-blobs/fleet-a"
