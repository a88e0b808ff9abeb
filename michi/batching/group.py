"""`GroupCommit`: one flush per batch of concurrent submissions, a bounded number of flushes in flight."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# What a flush returns for each item, in order: its result, or the exception that item alone raises.
Flush = Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]]

# What a flush raises when the server or the disk is gone: the whole batch failed, as each call would have.
BATCH_ERRORS: tuple[type[Exception], ...] = (OSError,)


class GroupCommit(Generic[Item, Result]):
    """Batches `submit()` calls made on one event loop into calls of `flush(items)`.

    The first submission schedules a flusher task; everything submitted before it runs (the same
    loop turn) joins its batch, up to `max_batch` items. Up to `concurrency` flushes run at once
    (1: strictly one after the other, the largest batches); a submission that finds them all busy
    joins a later batch. More than one suits flushes that wait on a device rather than a server,
    such as file writes in worker threads.
    A submitter that is cancelled no longer waits, but its item may already be in a batch: the flush
    is not undone (as a request already written to a socket is not).

    One item must not fail the others of its batch. A flush answers an item's own failure in its
    place in the results; when the flush itself raises, an error of `batch_errors` (the server or
    the disk is gone, by default any `OSError`) fails every item, and any other error is taken as
    caused by one of the items: the batch is flushed again in halves, down to single items, so only
    the items that raise it get it and the others their results. Such a flush must raise before
    doing any of its work (or its work must be harmless to repeat): planning, packing, encoding.
    """

    def __init__(
        self,
        flush: Flush[Item, Result],
        *,
        max_batch: int = 256,
        concurrency: int = 1,
        batch_errors: tuple[type[Exception], ...] = BATCH_ERRORS,
    ) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.batch_errors = batch_errors
        self._pending: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # How many flushes and items so far (items / flushes: the mean batch size).
        self.flushes = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._flushers) < self.concurrency:
            self._flushers.add(asyncio.ensure_future(self._drain()))
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            # Out of the set now, not in a done callback a loop turn later: a submission made
            # meanwhile would find every flusher "busy" and wait for ever.
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _drain_pending(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            items = [item for item, _ in batch]
            self.items += len(items)
            try:
                results = await self._flush_isolating(items)
            except asyncio.CancelledError:
                # The loop is shutting down: nobody will flush these, so nobody should wait for them.
                for _, future in (*batch, *self._pending):
                    future.cancel()
                self._pending.clear()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its submitter was cancelled
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _flush_isolating(self, items: list[Item]) -> Sequence[Result | BaseException]:
        """One result or error per item; an error the flush raises reaches only the items that cause it."""
        self.flushes += 1
        try:
            results = await self._flush(items)
        except self.batch_errors as error:  # the server or the disk is gone: every caller gets the error
            return [error] * len(items)
        except Exception as error:
            if len(items) == 1:
                return [error]
            # Caused by some item: halves again until the items that raise it are alone with it.
            middle = len(items) // 2
            return [*await self._flush_isolating(items[:middle]), *await self._flush_isolating(items[middle:])]
        if len(results) != len(items):  # the flush's own bug, not an item's
            return [RuntimeError(f"flush returned {len(results)} results for {len(items)} items")] * len(items)
        return results
