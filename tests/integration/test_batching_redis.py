"""`PipelinedScripts` on a real redis-server: pipelined calls, per-call errors, scripts reloaded after a flush."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from michi.batching import PipelinedScripts

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
