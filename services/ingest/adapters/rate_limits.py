"""Redis guards at the door, shared by every ingest replica: request rate limits and signed-request nonces.

`RateLimiter.check(device_id)` is one EVALSHA per request (pipelined with the concurrent ones): a Lua token bucket per device and one
for the whole fleet, refilled from Redis' own clock (so replicas with skewed clocks agree), taken
from only when both have a token. It returns None (go ahead) or the seconds to wait.
`NonceRegistry.remember(device_id, nonce)` is one `SET NX EX`: False means the nonce was seen.
"""

from __future__ import annotations

from redis.asyncio import Redis

from michi.batching import PipelinedScripts

# KEYS: device bucket, global bucket. ARGV: device rate/s, device burst, global rate/s, global burst.
# Returns 0 when a token was taken from both buckets, else the milliseconds until both have one.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local function level(key, rate, burst)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then
    return burst
  end
  return math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
end
local function store(key, tokens, rate, burst)
  redis.call('HSET', key, 'tokens', tokens, 'at', now)
  -- Gone once it would be full again: an idle device costs no memory.
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
end
local device_rate, device_burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local global_rate, global_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local device_tokens = level(KEYS[1], device_rate, device_burst)
local global_tokens = level(KEYS[2], global_rate, global_burst)
local wait = 0
if device_tokens < 1 then
  wait = math.max(wait, (1 - device_tokens) * 1000 / device_rate)
end
if global_tokens < 1 then
  wait = math.max(wait, (1 - global_tokens) * 1000 / global_rate)
end
if wait > 0 then
  return math.max(1, math.ceil(wait))
end
store(KEYS[1], device_tokens - 1, device_rate, device_burst)
store(KEYS[2], global_tokens - 1, global_rate, global_burst)
return 0
"""


class RateLimiter:
    """Per-device and global token buckets in Redis (atomic across replicas: one script call)."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        device_rate_per_s: float,
        device_burst: int,
        global_rate_per_s: float,
        global_burst: int | None = None,
        scripts: PipelinedScripts | None = None,
    ) -> None:
        if device_rate_per_s <= 0 or global_rate_per_s <= 0 or device_burst < 1:
            raise ValueError("rates must be positive and the burst at least 1")
        self.redis = redis
        self._key_prefix = key_prefix
        # A second of the fleet's rate absorbs the jitter of many devices uploading on the same tick.
        global_burst = global_burst or max(1, int(global_rate_per_s))
        self._args = [device_rate_per_s, device_burst, global_rate_per_s, global_burst]
        self._take = (scripts or PipelinedScripts(redis)).register(_TAKE)

    def _device_key(self, device_id: str) -> str:
        return f"{self._key_prefix}ingest:rate:device:{device_id}"

    def _global_key(self) -> str:
        return f"{self._key_prefix}ingest:rate:global"

    async def check(self, device_id: str) -> float | None:
        """None when the request may go ahead (a token was taken), else the seconds until it may be retried.

        Raises `redis.exceptions.RedisError` when Redis does not answer.
        """
        wait_ms = await self._take(keys=[self._device_key(device_id), self._global_key()], args=self._args)
        return int(wait_ms) / 1000 if int(wait_ms) > 0 else None


class NonceRegistry:
    """Nonces of signed requests, each remembered per device for `ttl_s` (longer than the signing window)."""

    def __init__(self, redis: Redis, *, key_prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self._key_prefix = key_prefix
        self._ttl_s = ttl_s

    async def remember(self, device_id: str, nonce: str) -> bool:
        """True the first time this device uses `nonce` inside the TTL, False for a replay."""
        key = f"{self._key_prefix}ingest:nonce:{device_id}:{nonce}"
        return bool(await self.redis.set(key, b"1", nx=True, ex=self._ttl_s))
