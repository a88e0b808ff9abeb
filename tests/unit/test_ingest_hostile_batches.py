"""One bad item fails only itself: group commit and the raw archive's batched writes (no servers).

An upload with an impossible `started_at` used to fail the whole raw-archive batch it was written
in, so other devices' uploads sent at the same moment got 500. Pipelined Redis scripts are tested on
a real redis-server in tests/integration/test_batching_redis.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from michi.archive import SegmentUpload, rebuild_upload
from michi.batching import GroupCommit
from michi.blobs import BlobStore
from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import upload_pb2
from services.ingest.adapters.archive import BlobUploadArchive

STARTED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class PoisonedFlush:
    """A flush that raises (as a whole) whenever its batch holds an item starting with 'poison'."""

    def __init__(self, error: type[Exception] = ValueError) -> None:
        self.batches: list[list[str]] = []
        self.error = error

    async def flush(self, items: list[str]) -> list[str | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if any(item.startswith("poison") for item in items):
            raise self.error(f"cannot flush {[item for item in items if item.startswith('poison')]}")
        return [item.upper() for item in items]


@pytest.mark.asyncio
async def test_an_item_that_makes_the_flush_raise_fails_alone() -> None:
    flush = PoisonedFlush()
    group: GroupCommit[str, str] = GroupCommit(flush.flush, max_batch=16)
    items = [f"item-{index}" for index in range(16)]
    items[5] = "poison-5"
    outcomes = await asyncio.gather(*(group.submit(item) for item in items), return_exceptions=True)

    assert [outcome for index, outcome in enumerate(outcomes) if index != 5] == [
        item.upper() for index, item in enumerate(items) if index != 5
    ]
    assert isinstance(outcomes[5], ValueError) and str(outcomes[5]) == "cannot flush ['poison-5']"
    # One batch of 16, then halves down to the poisoned item: 1 + 2 + 2 + 2 + 2 flushes, each item
    # written once successfully.
    assert flush.batches[0] == items
    assert len(flush.batches) == 9
    succeeded = [item for batch in flush.batches if not any(i.startswith("poison") for i in batch) for item in batch]
    assert sorted(succeeded) == sorted(item for item in items if item != "poison-5")
    # The group goes on.
    assert await group.submit("after") == "AFTER"


@pytest.mark.asyncio
async def test_two_bad_items_fail_alone_too() -> None:
    group: GroupCommit[str, str] = GroupCommit(PoisonedFlush().flush)
    items = ["a", "poison-1", "b", "c", "poison-2", "d"]
    outcomes = await asyncio.gather(*(group.submit(item) for item in items), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [str, ValueError, str, str, ValueError, str]
    assert [outcome for outcome in outcomes if isinstance(outcome, str)] == ["A", "B", "C", "D"]


@pytest.mark.asyncio
async def test_a_server_or_disk_error_still_fails_the_whole_batch_once() -> None:
    # OSError (the default batch error) means the flush itself failed: no retries in halves.
    flush = PoisonedFlush(ConnectionResetError)
    group: GroupCommit[str, str] = GroupCommit(flush.flush)
    outcomes = await asyncio.gather(*(group.submit(item) for item in ("a", "poison", "b")), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionResetError) for outcome in outcomes)
    assert flush.batches == [["a", "poison", "b"]]
    # A group may name its own batch errors.
    custom = PoisonedFlush(KeyError)
    named: GroupCommit[str, str] = GroupCommit(custom.flush, batch_errors=(KeyError,))
    outcomes = await asyncio.gather(*(named.submit(item) for item in ("a", "poison")), return_exceptions=True)
    assert all(isinstance(outcome, KeyError) for outcome in outcomes) and len(custom.batches) == 1


def make_upload(upload_id: str, device_id: str, *, nanos: int = 0) -> SegmentUpload:
    upload = upload_pb2.Upload(
        upload_id=upload_id,
        device_id=device_id,
        driver_id="driver-1",
        trip_id=f"trip-{device_id}",
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(STARTED.timestamp()),
    )
    upload.started_at.nanos = nanos
    upload.imu.offset_ms.extend([0, 20])
    upload.imu.accel_x.extend([0.5, 0.25])
    canonical = upload.SerializeToString(deterministic=True)
    return SegmentUpload(upload, canonical, hashlib.sha256(canonical).hexdigest())


@pytest.mark.asyncio
@pytest.mark.parametrize("nanos", [1_500_000_000, -1])
async def test_an_upload_with_an_invalid_start_fails_alone_in_its_archive_batch(tmp_path: Path, nanos: int) -> None:
    store = BlobStore(f"file://{tmp_path / 'blobs'}")
    archive = BlobUploadArchive(store)
    items = [make_upload(f"b-{index}", "device-b") for index in range(6)]
    items.insert(3, make_upload("a-bad", "device-a", nanos=nanos))
    outcomes = await asyncio.gather(
        *(archive.store(item.upload, item.canonical, item.content_sha256) for item in items), return_exceptions=True
    )

    bad = outcomes.pop(3)
    assert isinstance(bad, ValueError) and "not a valid timestamp" in str(bad)
    good = [item for item in items if item.upload.upload_id != "a-bad"]
    assert all(isinstance(outcome, str) for outcome in outcomes), outcomes
    # The others were written together, in one segment, and each rebuilds exactly.
    assert len({str(outcome).partition("#")[0] for outcome in outcomes}) == 1
    for item, uri in zip(good, outcomes, strict=True):
        assert isinstance(uri, str) and uri.endswith(f"#{item.upload.upload_id}")
        assert await rebuild_upload(store, uri, item.content_sha256) == item.upload
