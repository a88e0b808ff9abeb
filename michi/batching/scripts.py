"""Lua scripts on Redis, their calls from concurrent tasks sent as pipelines (see `GroupCommit`)."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from michi.batching.group import GroupCommit

# Beyond this many calls a pipeline is cut in two: the reply of a huge batch holds every caller up.
MAX_PIPELINE = 256

KeyOrArg = str | bytes | int | float


@dataclass(frozen=True)
class ScriptCall:
    sha: str
    keys: Sequence[KeyOrArg]
    args: Sequence[KeyOrArg]


class PipelinedScript:
    """One registered script; `await script(keys=[...], args=[...])` as with redis-py's `Script`."""

    def __init__(self, scripts: PipelinedScripts, source: str) -> None:
        self._scripts = scripts
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[KeyOrArg] = (), args: Sequence[KeyOrArg] = ()) -> Any:
        return await self._scripts.call(ScriptCall(self.sha, tuple(keys), tuple(args)))


class PipelinedScripts:
    """The scripts of one Redis client, whose concurrent calls share pipelines (no MULTI: each is atomic alone).

    A script Redis does not know (a restarted or flushed server) is loaded and the calls that
    missed it run again, once. A call is its own: a Lua error is its reply alone, a call whose
    arguments cannot be sent (`DataError`) is not sent and fails alone, and only Redis not answering
    (a `RedisError` or `OSError` raised by the pipeline) fails every call of the batch.
    """

    def __init__(self, redis: Redis, *, max_batch: int = MAX_PIPELINE) -> None:
        self.redis = redis
        self._sources: dict[str, str] = {}
        self._group: GroupCommit[ScriptCall, Any] = GroupCommit(
            self._run, max_batch=max_batch, batch_errors=(RedisError, OSError)
        )

    def register(self, source: str) -> PipelinedScript:
        script = PipelinedScript(self, source)
        self._sources[script.sha] = source
        return script

    async def call(self, call: ScriptCall) -> Any:
        return await self._group.submit(call)

    @property
    def pipelines(self) -> int:
        return self._group.flushes

    @property
    def calls(self) -> int:
        return self._group.items

    async def _run(self, calls: list[ScriptCall]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        # Packed one by one: a call with an argument Redis cannot take fails alone, before anything is sent.
        packed: dict[int, bytes] = {}
        for index, call in enumerate(calls):
            try:
                packed[index] = pack_script_call(call)
            except DataError as error:
                results[index] = error
        sent = list(packed)
        for index, result in zip(sent, await self._execute([packed[index] for index in sent]), strict=True):
            results[index] = result
        missed = [index for index in sent if isinstance(results[index], NoScriptError)]
        if missed:
            for sha in {calls[index].sha for index in missed}:
                await self.redis.script_load(self._sources[sha])
            again = await self._execute([packed[index] for index in missed])
            for index, result in zip(missed, again, strict=True):
                results[index] = result
        return results

    async def _execute(self, commands: list[bytes]) -> list[Any]:
        """The packed calls as one write of EVALSHA commands on a pooled connection, then their replies in order.

        redis-py's `Pipeline` did the same with ~2x the CPU per call (command stack, per-command
        packing, reply callbacks, a timer per reply); this keeps its connection handling: the
        connection's `socket_timeout` bounds the wait for the replies, a connection error or
        timeout disconnects and retries on the connection's `Retry`, and a broken connection is
        never handed back half-read.
        """
        if not commands:
            return []
        packed = b"".join(commands)
        pool = self.redis.connection_pool
        connection = await pool.get_connection()
        try:

            async def send_and_read() -> list[Any]:
                await connection.send_packed_command(packed, check_health=False)
                replies: list[Any] = []
                try:
                    # One deadline for all the replies: redis-py sets one per reply (an asyncio timer,
                    # ~4 µs each), which was a tenth of ingest's Redis cost.
                    async with asyncio.timeout(connection.socket_timeout):
                        for _ in commands:
                            try:
                                replies.append(await connection.read_response(timeout=math.inf))
                            except ResponseError as error:  # this call's own error (NOSCRIPT, a Lua error)
                                replies.append(error)
                except TimeoutError as error:
                    await connection.disconnect(nowait=True)
                    raise RedisTimeoutError(f"no reply from Redis within {connection.socket_timeout} s") from error
                return replies

            async def disconnect(_error: Exception) -> None:
                await connection.disconnect()

            replies: list[Any] = await connection.retry.call_with_retry(send_and_read, disconnect)
            return replies
        except BaseException:
            # Cancelled or failed between the write and the last reply: the replies left on the
            # socket would be read by the connection's next user.
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)


def pack_script_calls(calls: Sequence[ScriptCall]) -> bytes:
    """`EVALSHA sha numkeys key... arg...` per call in the Redis protocol (RESP), encoded as redis-py does."""
    return b"".join(pack_script_call(call) for call in calls)


def pack_script_call(call: ScriptCall) -> bytes:
    """One call's `EVALSHA` command; raises `DataError` for an argument Redis cannot take."""
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(call.keys) + len(call.args), call.sha.encode())]
    count = str(len(call.keys)).encode()
    parts.append(b"$%d\r\n%s\r\n" % (len(count), count))
    for value in (*call.keys, *call.args):
        data = _encode(value)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _encode(value: KeyOrArg) -> bytes:
    # redis-py's Encoder: bytes as they are, str as UTF-8, numbers by repr() (bool is refused).
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError as error:  # a lone surrogate: no UTF-8 for it
            raise DataError(f"invalid script argument {value!r}: not encodable as UTF-8") from error
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"invalid script argument {value!r}: use bytes, str, int or float")
    return repr(value).encode()
