"""`GroupCommit`: batches form under concurrency, each caller gets its own result or error."""

from __future__ import annotations

import asyncio

import pytest

from michi.batching import GroupCommit


class Recorder:
    """A flush that records its batches; items ending in '!' fail alone, 'boom' fails the batch."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s

    async def flush(self, items: list[str]) -> list[str | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay_s)
        if "boom" in items:
            raise ConnectionError("the server went away")
        return [ValueError(item) if item.endswith("!") else item.upper() for item in items]


@pytest.mark.asyncio
async def test_a_lone_call_goes_out_alone_and_concurrent_ones_together() -> None:
    recorder = Recorder(delay_s=0.01)
    group: GroupCommit[str, str] = GroupCommit(recorder.flush)
    assert await group.submit("a") == "A"
    assert recorder.batches == [["a"]]
    # Ten callers in one loop turn: one batch. Five more while it is in flight: the next one.
    first = [asyncio.create_task(group.submit(f"x{index}")) for index in range(10)]
    await asyncio.sleep(0.001)
    second = [asyncio.create_task(group.submit(f"y{index}")) for index in range(5)]
    assert await asyncio.gather(*first, *second) == [f"X{index}" for index in range(10)] + [
        f"Y{index}" for index in range(5)
    ]
    assert recorder.batches[1:] == [[f"x{index}" for index in range(10)], [f"y{index}" for index in range(5)]]
    assert (group.flushes, group.items) == (3, 16)


@pytest.mark.asyncio
async def test_batches_are_bounded_and_keep_submission_order() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder.flush, max_batch=4)
    results = await asyncio.gather(*(group.submit(str(index)) for index in range(10)))
    assert results == [str(index) for index in range(10)]
    assert [len(batch) for batch in recorder.batches] == [4, 4, 2]
    assert [item for batch in recorder.batches for item in batch] == [str(index) for index in range(10)]


@pytest.mark.asyncio
async def test_an_item_error_stays_with_its_caller_and_a_batch_error_reaches_all() -> None:
    group: GroupCommit[str, str] = GroupCommit(Recorder().flush)
    outcomes = await asyncio.gather(group.submit("a"), group.submit("b!"), group.submit("c"), return_exceptions=True)
    assert outcomes[0] == "A" and outcomes[2] == "C"
    assert isinstance(outcomes[1], ValueError)
    failed = await asyncio.gather(group.submit("d"), group.submit("boom"), return_exceptions=True)
    assert all(isinstance(outcome, ConnectionError) for outcome in failed)
    # The group works on after a failed batch.
    assert await group.submit("e") == "E"


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder(delay_s=0.02)
    group: GroupCommit[str, str] = GroupCommit(recorder.flush)
    leaving = asyncio.create_task(group.submit("gone"))
    staying = asyncio.create_task(group.submit("kept"))
    await asyncio.sleep(0.005)
    leaving.cancel()
    assert await staying == "KEPT"
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert recorder.batches == [["gone", "kept"]]


@pytest.mark.asyncio
async def test_a_flush_answering_the_wrong_number_of_results_fails_the_batch() -> None:
    async def short(items: list[str]) -> list[str | BaseException]:
        return items[:-1]

    group: GroupCommit[str, str] = GroupCommit(short)
    outcomes = await asyncio.gather(group.submit("a"), group.submit("b"), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


def test_max_batch_and_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(Recorder().flush, max_batch=0)
    with pytest.raises(ValueError):
        GroupCommit(Recorder().flush, concurrency=0)


@pytest.mark.asyncio
async def test_concurrent_flushes_are_bounded() -> None:
    running = 0
    most = 0

    async def flush(items: list[int]) -> list[int | BaseException]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1
        return [item * 2 for item in items]

    group: GroupCommit[int, int] = GroupCommit(flush, max_batch=2, concurrency=3)
    assert await asyncio.gather(*(group.submit(index) for index in range(20))) == [index * 2 for index in range(20)]
    assert most == 3
    assert group.items == 20 and group.flushes >= 10


@pytest.mark.asyncio
async def test_one_call_after_another_each_gets_flushed() -> None:
    # The caller resumes before the flusher task is reported done; its next call must still go out.
    for concurrency in (1, 2):
        recorder = Recorder()
        group: GroupCommit[str, str] = GroupCommit(recorder.flush, concurrency=concurrency)
        for index in range(5):
            assert await asyncio.wait_for(group.submit(str(index)), timeout=2) == str(index)
        assert recorder.batches == [[str(index)] for index in range(5)]
