"""`BlobStore`: keys and bytes on any fsspec filesystem (`file://` here, `s3://` in production).

Only the generic fsspec API is used (`open`, `mv`, `exists`, `makedirs`, `rm`), so an
`s3://bucket/prefix` URL works once s3fs is installed. Every blocking filesystem call runs
in a worker thread (`asyncio.to_thread`): the event loop never waits on a disk or a socket.

Writes are all-or-nothing: bytes go to a temporary key under `.tmp/` and are moved to
their key only once the size bound held and the checksum matched, so a reader never sees
half a blob. A failed write leaves at most a stray temporary (removed on a best-effort basis).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

# Chunks are gathered to this size before one thread hop writes (and hashes) them.
WRITE_BLOCK_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
TEMPORARY_FOLDER = ".tmp"

Result = TypeVar("Result")


class BlobError(Exception):
    """Base of the blob store's errors."""


class BlobTooLarge(BlobError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"blob exceeds {limit} bytes")
        self.limit = limit


class ChecksumMismatch(BlobError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"sha256 is {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


class BlobExists(BlobError):
    """The key already holds a blob and the write asked not to overwrite it."""


class BlobNotFound(BlobError):
    pass


class InvalidKey(BlobError, ValueError):
    pass


class BlobStoreUnavailable(BlobError):
    """The filesystem failed (permissions, disk full, network); the message says why."""


@dataclass(frozen=True)
class BlobInfo:
    uri: str
    size: int
    sha256: str


class BlobReader:
    """An open blob; `read()` runs in a worker thread. Use as `async with await store.open_read(key)`."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    async def read(self, size: int = -1) -> bytes:
        return await asyncio.to_thread(self._handle.read, size)

    async def close(self) -> None:
        await asyncio.to_thread(self._handle.close)

    async def __aenter__(self) -> BlobReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


class BlobStore:
    """Blobs under one fsspec URL. Keys are relative, `/`-separated, without `.`/`..` segments."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        self._fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self._root = root.rstrip("/")
        # Local disk: small writes skip fsspec (its exists/isdir/move cost more than the write itself).
        self._local = isinstance(self._fs, LocalFileSystem)
        self._known_folders: set[str] = set()

    # --- keys and URIs (no I/O)

    def fsspec_location(self) -> tuple[Any, str]:
        """The fsspec filesystem and root path under which the keys are (for synchronous readers)."""
        return self._fs, self._root

    def path(self, key: str) -> str:
        """The filesystem path of `key` (refusing keys that could leave the store's root)."""
        segments = key.split("/")
        if not key or any(segment in ("", ".", "..") for segment in segments):
            raise InvalidKey(f"invalid blob key {key!r}")
        return f"{self._root}/{key}"

    def uri(self, key: str) -> str:
        """The full URL of `key`, e.g. `file:///var/michi/blobs/media/...` or `s3://bucket/media/...`."""
        uri: str = self._fs.unstrip_protocol(self.path(key))
        return uri

    def key_for_uri(self, uri: str) -> str:
        """The key of a URI this store handed out (`ValueError` for a URI outside the store)."""
        root_uri = str(self._fs.unstrip_protocol(self._root)).rstrip("/") + "/"
        if not uri.startswith(root_uri):
            raise InvalidKey(f"{uri} is not under {root_uri}")
        key = uri[len(root_uri) :]
        self.path(key)
        return key

    # --- writing

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        expected_sha256: str | None = None,
        overwrite: bool = True,
    ) -> BlobInfo:
        """Stream `chunks` to `key`, visible only if at most `max_bytes` long and matching `expected_sha256`.

        Raises `BlobTooLarge` as soon as the bound is crossed (the rest is not read),
        `ChecksumMismatch`, `BlobExists` (when `overwrite` is False) or `BlobStoreUnavailable`.
        Memory held: one write block (1 MiB) plus the chunk in hand.
        """
        final = self.path(key)
        temporary = f"{self._root}/{TEMPORARY_FOLDER}/{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        handle = await self._run(self._open_for_write, temporary)
        committed = False
        try:
            block = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes)
                block += chunk
                if len(block) >= WRITE_BLOCK_BYTES:
                    await self._run(_write_block, handle, digest, block)
                    block.clear()
            if block:
                await self._run(_write_block, handle, digest, block)
            await self._run(handle.close)
            actual = digest.hexdigest()
            if expected_sha256 is not None and actual != expected_sha256.lower():
                raise ChecksumMismatch(expected_sha256.lower(), actual)
            await self._run(self._commit, temporary, final, overwrite)
            committed = True
        finally:
            if not committed:
                await self._discard(handle, temporary)
        return BlobInfo(self.uri(key), size, actual)

    async def put_bytes(self, key: str, data: bytes, *, overwrite: bool = True) -> BlobInfo:
        """Write `data` to `key` in one go (temporary + move, one thread hop)."""
        sha256 = await self._run(self._put, self.path(key), data, overwrite)
        return BlobInfo(self.uri(key), len(data), sha256)

    async def put_many(
        self, items: Sequence[tuple[str, bytes]], *, overwrite: bool = True
    ) -> list[BlobInfo | BlobError]:
        """Write several small blobs in one thread hop; each one is all-or-nothing on its own.

        The answer has one entry per item, in order: its `BlobInfo`, or the `BlobError` that item
        met (`BlobExists`, or `BlobStoreUnavailable` wrapping the OS error). A batch of many small
        writes (ingest's raw archive under load) pays one hop instead of one per blob.
        """

        def put_all() -> list[BlobInfo | BlobError]:
            outcomes: list[BlobInfo | BlobError] = []
            for key, data in items:
                try:
                    outcomes.append(BlobInfo(self.uri(key), len(data), self._put(self.path(key), data, overwrite)))
                except BlobError as error:
                    outcomes.append(error)
                except Exception as error:
                    outcomes.append(BlobStoreUnavailable(f"{type(error).__name__}: {error}"))
            return outcomes

        return await self._run(put_all)

    # --- reading

    async def exists(self, key: str) -> bool:
        path = self.path(key)
        return bool(await self._run(self._fs.exists, path))

    async def open_read(self, key: str) -> BlobReader:
        """An open reader on `key` (`BlobNotFound` if absent)."""
        path = self.path(key)

        def open_file() -> IO[bytes]:
            try:
                handle: IO[bytes] = self._fs.open(path, "rb")
            except FileNotFoundError as error:
                raise BlobNotFound(key) from error
            return handle

        return BlobReader(await self._run(open_file))

    async def read_bytes(self, key: str) -> bytes:
        """The whole blob (for small blobs such as archived uploads)."""
        async with await self.open_read(key) as reader:
            return await reader.read()

    async def sha256(self, key: str) -> BlobInfo:
        """Size and sha256 of the stored blob, read in chunks in a worker thread."""
        path = self.path(key)

        def digest_file() -> tuple[int, str]:
            digest = hashlib.sha256()
            size = 0
            try:
                with self._fs.open(path, "rb") as handle:
                    while chunk := handle.read(READ_CHUNK_BYTES):
                        size += len(chunk)
                        digest.update(chunk)
            except FileNotFoundError as error:
                raise BlobNotFound(key) from error
            return size, digest.hexdigest()

        size, sha256 = await self._run(digest_file)
        return BlobInfo(self.uri(key), size, sha256)

    # --- internals (run in worker threads)

    async def _run(self, function: Callable[..., Result], *args: Any) -> Result:
        try:
            return await asyncio.to_thread(function, *args)
        except BlobError:
            raise
        except Exception as error:
            raise BlobStoreUnavailable(f"{type(error).__name__}: {error}") from error

    def _put(self, final: str, data: bytes, overwrite: bool) -> str:
        """Write one blob (temporary, then moved to `final`); its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        temporary = f"{self._root}/{TEMPORARY_FOLDER}/{uuid.uuid4().hex}"
        if self._local:
            self._put_local(temporary, final, data, overwrite)
            return sha256
        try:
            with self._open_for_write(temporary) as handle:
                handle.write(data)
            self._commit(temporary, final, overwrite)
        except BaseException:
            self._remove_quietly(temporary)
            raise
        return sha256

    def _ensure_local_folder(self, folder: str) -> None:
        if folder not in self._known_folders:
            os.makedirs(folder, exist_ok=True)
            self._known_folders.add(folder)

    def _put_local(self, temporary: str, final: str, data: bytes, overwrite: bool) -> None:
        """Temporary file then an atomic rename (or a hard link, which refuses an existing key)."""
        try:
            self._write_local(temporary, final, data, overwrite)
        except FileNotFoundError:
            # A folder vanished under us (someone cleaned the store): forget what we knew, try once more.
            self._known_folders.clear()
            self._write_local(temporary, final, data, overwrite)

    def _write_local(self, temporary: str, final: str, data: bytes, overwrite: bool) -> None:
        self._ensure_local_folder(_parent(temporary))
        self._ensure_local_folder(_parent(final))
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
            if overwrite:
                os.replace(temporary, final)
            else:
                try:
                    os.link(temporary, final)
                except FileExistsError as error:
                    raise BlobExists(final) from error
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def _open_for_write(self, path: str) -> IO[bytes]:
        self._fs.makedirs(_parent(path), exist_ok=True)
        handle: IO[bytes] = self._fs.open(path, "wb")
        return handle

    def _commit(self, temporary: str, final: str, overwrite: bool) -> None:
        # Without a conditional put in the generic fsspec API, "no overwrite" is check-then-move:
        # it narrows a race between two writers of one key to the move itself.
        if not overwrite and self._fs.exists(final):
            raise BlobExists(final)
        self._fs.makedirs(_parent(final), exist_ok=True)
        self._fs.mv(temporary, final)

    def _remove_quietly(self, path: str) -> None:
        try:
            if self._fs.exists(path):
                self._fs.rm(path)
        except Exception:
            logger.warning("temporary blob not removed", extra={"path": path}, exc_info=True)

    async def _discard(self, handle: IO[bytes], temporary: str) -> None:
        def discard() -> None:
            try:
                handle.close()
            except Exception:
                logger.debug("temporary blob not closed cleanly", exc_info=True)
            self._remove_quietly(temporary)

        # Shielded: a cancelled request still cleans up behind itself.
        try:
            await asyncio.shield(asyncio.to_thread(discard))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("temporary blob not discarded", extra={"path": temporary}, exc_info=True)


def _write_block(handle: IO[bytes], digest: Any, block: bytearray) -> None:
    # Hashing here, off the event loop (hashlib releases the GIL on large buffers).
    digest.update(block)
    handle.write(block)
