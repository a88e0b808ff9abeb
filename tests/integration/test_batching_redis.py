"""`PipelinedScripts` on a real redis-server: pipelined calls, per-call errors, scripts reloaded after a flush."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Connection, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from michi.batching import PipelinedScripts
from michi.batching.scripts import ScriptCall, pack_script_calls

INCREMENT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ON_NEGATIVE = """
if tonumber(ARGV[1]) < 0 then
  return redis.error_reply('negative: ' .. ARGV[1])
end
return ARGV[1]
"""


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def key(redis: Redis) -> AsyncIterator[str]:
    name = f"test:batching:{uuid.uuid4().hex}"
    yield name
    await redis.delete(name)


@pytest.mark.asyncio
async def test_concurrent_calls_share_pipelines_and_keep_their_own_results(redis: Redis, key: str) -> None:
    scripts = PipelinedScripts(redis)
    increment = scripts.register(INCREMENT)
    totals = await asyncio.gather(*(increment(keys=[key], args=[1]) for _ in range(200)))
    # Every call ran exactly once, atomically, in submission order.
    assert totals == list(range(1, 201))
    assert int(await redis.get(key)) == 200
    assert scripts.calls == 200
    assert scripts.pipelines < 10


@pytest.mark.asyncio
async def test_a_script_error_fails_only_its_call(redis: Redis) -> None:
    checked = PipelinedScripts(redis).register(FAIL_ON_NEGATIVE)
    outcomes = await asyncio.gather(checked(args=[1]), checked(args=[-2]), checked(args=[3]), return_exceptions=True)
    assert outcomes[0] == b"1" and outcomes[2] == b"3"
    assert isinstance(outcomes[1], ResponseError) and "negative: -2" in str(outcomes[1])


@pytest.mark.asyncio
async def test_a_call_whose_arguments_cannot_be_sent_fails_alone_in_its_pipeline(redis: Redis, key: str) -> None:
    scripts = PipelinedScripts(redis)
    increment = scripts.register(INCREMENT)
    bad_arguments: list[object] = [True, None, object(), "\udcff"]  # a bool, nothing, an object, no UTF-8 for it
    calls = [increment(keys=[key], args=[1]) for _ in range(3)]
    calls[1:1] = [increment(keys=[key], args=[argument]) for argument in bad_arguments]  # type: ignore[list-item]
    calls.append(increment(keys=["\udcff"], args=[1]))  # a key Redis cannot be sent
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    assert [type(outcome) for outcome in outcomes] == [
        int,
        DataError,
        DataError,
        DataError,
        DataError,
        int,
        int,
        DataError,
    ]
    # The good calls ran, each once, in one pipeline: the bad ones were never sent.
    assert [outcome for outcome in outcomes if isinstance(outcome, int)] == [1, 2, 3]
    assert int(await redis.get(key)) == 3
    assert (scripts.calls, scripts.pipelines) == (8, 1)


@pytest.mark.asyncio
async def test_scripts_are_loaded_again_after_redis_forgot_them(redis: Redis, key: str) -> None:
    increment = PipelinedScripts(redis).register(INCREMENT)
    assert await increment(keys=[key], args=[2]) == 2
    await redis.script_flush()
    # Each call still runs once: the ones that missed the script run again after loading it.
    assert sorted(await asyncio.gather(*(increment(keys=[key], args=[1]) for _ in range(5)))) == [3, 4, 5, 6, 7]


@pytest.mark.asyncio
async def test_an_unreachable_redis_fails_every_call_in_the_batch() -> None:
    redis = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    scripts = PipelinedScripts(redis)
    increment = scripts.register(INCREMENT)
    try:
        outcomes = await asyncio.gather(*(increment(keys=["k"], args=[1]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    finally:
        await redis.aclose()


def test_calls_are_packed_as_redis_py_packs_them() -> None:
    calls = [
        ScriptCall("a" * 40, ("key:1", b"key:\xff"), (1, 2.5, "text", b"raw", -7)),
        ScriptCall("b" * 40, (), ("é", 1e-7, 10**20)),
    ]
    connection = Connection()
    expected = b"".join(
        connection.pack_commands(
            [("EVALSHA", call.sha, len(call.keys), *call.keys, *call.args) for call in calls],
        )
    )
    assert pack_script_calls(calls) == expected
    with pytest.raises(DataError):
        pack_script_calls([ScriptCall("c" * 40, (), (True,))])


@pytest.mark.asyncio
async def test_a_batch_cancelled_before_its_replies_leaves_no_reply_for_the_next_user(redis_url: str, key: str) -> None:
    # A pool of one connection: the next batch must use the connection the cancelled one had.
    single = Redis.from_pool(BlockingConnectionPool.from_url(redis_url, max_connections=1))
    try:
        scripts = PipelinedScripts(single)
        slow = scripts.register("return redis.call('INCRBY', KEYS[1], 1)")
        increment = scripts.register(INCREMENT)
        call = asyncio.ensure_future(slow(keys=[key]))
        await asyncio.sleep(0)  # the batch is in flight (written, replies not read yet)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The cancelled call may or may not have run; the next one gets its own reply, not the stale one.
        assert await increment(keys=[key], args=[100]) in (100, 101)
        assert await increment(keys=[key], args=[1]) in (101, 102)
    finally:
        await single.aclose()


@pytest.mark.asyncio
async def test_a_connection_killed_by_the_server_fails_its_batch_or_is_retried_as_the_client_says(
    redis_url: str, key: str
) -> None:
    plain = Redis.from_url(redis_url)  # redis-py's default: no retry
    retrying = Redis.from_url(redis_url, retry=Retry(NoBackoff(), 1))
    try:
        for client in (plain, retrying):
            increment = PipelinedScripts(client).register(INCREMENT)
            await increment(keys=[key], args=[1])
        # The server drops every client connection, including the pooled ones the next batches take.
        await plain.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no")
        with pytest.raises(RedisConnectionError):
            await PipelinedScripts(plain).register(INCREMENT)(keys=[key], args=[1])
        assert await PipelinedScripts(retrying).register(INCREMENT)(keys=[key], args=[1]) == 3
        # The failed batch's connection was dropped, not returned half-read: the next call works.
        assert await PipelinedScripts(plain).register(INCREMENT)(keys=[key], args=[1]) == 4
    finally:
        await plain.aclose()
        await retrying.aclose()


BUSY_FOR_MS = """
local started = redis.call('TIME')
local started_ms = started[1] * 1000 + math.floor(started[2] / 1000)
while true do
  local now = redis.call('TIME')
  if now[1] * 1000 + math.floor(now[2] / 1000) - started_ms >= tonumber(ARGV[1]) then
    return 1
  end
end
"""


@pytest.mark.asyncio
async def test_replies_that_do_not_come_in_time_fail_the_batch_with_a_redis_timeout(redis_url: str, key: str) -> None:
    busy_client = Redis.from_url(redis_url)
    impatient = Redis.from_url(redis_url, socket_timeout=0.2)
    try:
        await impatient.ping()  # connected before the server is busy: the wait is for the replies
        # A script that keeps the (single-threaded) server busy for 1.5 s, well under way before the batch.
        busy = asyncio.ensure_future(busy_client.eval(BUSY_FOR_MS, 0, 1500))
        await asyncio.sleep(0.3)
        increment = PipelinedScripts(impatient).register(INCREMENT)
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await increment(keys=[key], args=[1])
        # One deadline for the batch (its connection's socket_timeout), not the busy script's end.
        assert time.monotonic() - started < 1.0
        assert await busy == 1
        # The timed-out connection was dropped; its call may have run once the server was free.
        assert await increment(keys=[key], args=[1]) in (1, 2)
    finally:
        await busy_client.aclose()
        await impatient.aclose()
