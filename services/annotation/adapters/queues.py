"""The live queues in Redis: sorted sets of waiting tasks, leases with expiry, all moves in Lua scripts.

Every key shares one hash tag, `{<prefix>annotation}`, so the scripts touch one slot (Redis Cluster).

    {b}:queue:<name>      ZSET  waiting tasks of a queue -> score (priority, then age; lowest first)
    {b}:gold              ZSET  the gold pool (mixed into every queue)
    {b}:leases            ZSET  leased task -> lease expiry (ms)
    {b}:lease:<task>      HASH  lease_id, annotator, expires of the task's current lease
    {b}:lease-record:<id> HASH  task, annotator, expires, used: outlives the lease (late answers)
    {b}:holding:<name>    STR   the task an annotator holds (expires with the lease)
    {b}:processing        ZSET  task -> ms since an answer took it off its lease (until SQL committed)
    {b}:task:<task>       HASH  pool, score: where the task returns to
    {b}:excluded:<task>   SET   annotators who answered or skipped it (never served it again)
    {b}:built             STR   set by `rebuild`: its absence means Redis lost the queues

A task is in exactly one of: its pool, `leases`, `processing` (or nowhere once decided). Each
script moves it atomically, so no two annotators can ever hold it, and an expired lease puts it
back in its pool the next time anyone leases (or at the next upkeep).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis

from services.annotation.domain.tasks import GOLD_POOL, LiveTask

# Lua helpers shared by the scripts.
_POOL_KEY = """
local function pool_key(base, pool)
  if pool == 'gold' then return base .. ':gold' end
  return base .. ':queue:' .. pool
end
local function reclaim(base, leases_key, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now, 'LIMIT', 0, limit)
  for _, task in ipairs(expired) do
    redis.call('ZREM', leases_key, task)
    redis.call('DEL', base .. ':lease:' .. task)
    local info = redis.call('HMGET', base .. ':task:' .. task, 'pool', 'score')
    if info[1] then redis.call('ZADD', pool_key(base, info[1]), info[2], task) end
  end
  return #expired
end
"""

# KEYS: queue, gold, leases. ARGV: base, annotator, now_ms, lease_ms, prefer_gold, scan, lease_id, record_ttl_s
LEASE = (
    _POOL_KEY
    + """
local base, annotator = ARGV[1], ARGV[2]
local now, lease_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local prefer_gold, scan, lease_id, record_ttl = ARGV[5] == '1', tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local queue_key, gold_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
reclaim(base, leases_key, now, 100)
local holding_key = base .. ':holding:' .. annotator
local held = redis.call('GET', holding_key)
if held then
  local lease = redis.call('HMGET', base .. ':lease:' .. held, 'lease_id', 'annotator', 'expires')
  if lease[2] == annotator and tonumber(lease[3]) > now then
    return {held, lease[3], lease[1], 'held'}
  end
end
local function pick(key)
  local candidates = redis.call('ZRANGE', key, 0, scan - 1)
  for _, task in ipairs(candidates) do
    if redis.call('SISMEMBER', base .. ':excluded:' .. task, annotator) == 0 then return task end
  end
  return false
end
-- Gold is served only when real work is waiting for this annotator, so it cannot be told apart.
local task = pick(queue_key)
if not task then return false end
local taken_from = queue_key
if prefer_gold then
  local gold = pick(gold_key)
  if gold then task = gold; taken_from = gold_key end
end
redis.call('ZREM', taken_from, task)
local expires = now + lease_ms
redis.call('ZADD', leases_key, expires, task)
redis.call('HSET', base .. ':lease:' .. task, 'lease_id', lease_id, 'annotator', annotator, 'expires', expires)
redis.call('SET', holding_key, task, 'PX', lease_ms)
local record = base .. ':lease-record:' .. lease_id
redis.call('HSET', record, 'task', task, 'annotator', annotator, 'expires', expires)
redis.call('EXPIRE', record, record_ttl)
return {task, tostring(expires), lease_id, 'new'}
"""
)

# KEYS: leases, processing. ARGV: base, task, lease_id, annotator, now_ms, allow_late
TAKE = (
    _POOL_KEY
    + """
local base, task, lease_id, annotator = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, allow_late = tonumber(ARGV[5]), ARGV[6] == '1'
local leases_key, processing_key = KEYS[1], KEYS[2]
local record_key = base .. ':lease-record:' .. lease_id
local record = redis.call('HMGET', record_key, 'task', 'annotator', 'used')
if record[1] ~= task or record[2] ~= annotator then return 'unknown-lease' end
if record[3] then return 'used' end
local lease_key = base .. ':lease:' .. task
local lease = redis.call('HMGET', lease_key, 'lease_id', 'expires')
local holding_key = base .. ':holding:' .. annotator
if lease[1] == lease_id then
  redis.call('ZREM', leases_key, task)
  redis.call('DEL', lease_key)
  if redis.call('GET', holding_key) == task then redis.call('DEL', holding_key) end
  redis.call('ZADD', processing_key, now, task)
  redis.call('HSET', record_key, 'used', '1')
  if tonumber(lease[2]) < now then return 'late' end
  return 'current'
end
-- The lease ended and the task went back to its pool, or on to someone else.
if not allow_late then return 'lease-expired' end
redis.call('HSET', record_key, 'used', '1')
if lease[1] then return 'extra' end
if redis.call('ZSCORE', processing_key, task) then return 'extra' end
local info = redis.call('HMGET', base .. ':task:' .. task, 'pool')
if not info[1] then return 'extra' end
if redis.call('ZREM', pool_key(base, info[1]), task) == 1 then
  redis.call('ZADD', processing_key, now, task)
  return 'late'
end
return 'extra'
"""
)

# KEYS: leases, processing. ARGV: base, task, lease_id, annotator
# Undo TAKE when the SQL write failed: the annotator holds the task again (until the lease's
# original expiry) and may retry; an already expired lease is returned to the pool by the next reclaim.
RESTORE = """
local base, task, lease_id, annotator = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local leases_key, processing_key = KEYS[1], KEYS[2]
local expires = redis.call('HGET', base .. ':lease-record:' .. lease_id, 'expires')
if not expires then return 0 end
if redis.call('ZREM', processing_key, task) == 0 then return 0 end
redis.call('ZADD', leases_key, expires, task)
redis.call('HSET', base .. ':lease:' .. task, 'lease_id', lease_id, 'annotator', annotator, 'expires', expires)
redis.call('HDEL', base .. ':lease-record:' .. lease_id, 'used')
return 1
"""

# KEYS: leases, processing. ARGV: base, task, annotator, outcome, pool, score, held_by_caller
# outcome: requeue (back to its pool) | remove (decided: leaves the queues) | exclude (extra vote only)
FINISH = (
    _POOL_KEY
    + """
local base, task, annotator, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pool, score, held = ARGV[5], ARGV[6], ARGV[7] == '1'
local leases_key, processing_key = KEYS[1], KEYS[2]
local task_key, excluded_key = base .. ':task:' .. task, base .. ':excluded:' .. task
if held then redis.call('ZREM', processing_key, task) end
if outcome == 'remove' then
  local info = redis.call('HMGET', task_key, 'pool')
  if info[1] then redis.call('ZREM', pool_key(base, info[1]), task) end
  redis.call('DEL', task_key, excluded_key)
  return 'removed'
end
if annotator ~= '' then redis.call('SADD', excluded_key, annotator) end
if outcome == 'requeue' then
  redis.call('HSET', task_key, 'pool', pool, 'score', score)
  if held and not redis.call('ZSCORE', leases_key, task) and not redis.call('ZSCORE', processing_key, task) then
    redis.call('ZADD', pool_key(base, pool), score, task)
    return 'queued'
  end
end
return 'kept'
"""
)

# KEYS: leases, processing. ARGV: base, task, pool, score, excluded...
# Make Redis hold `task` as SQL says (intake, merge, gold, rebuild): idempotent.
UPSERT = (
    _POOL_KEY
    + """
local base, task, pool, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local leases_key, processing_key = KEYS[1], KEYS[2]
local task_key = base .. ':task:' .. task
local before = redis.call('HMGET', task_key, 'pool')
if before[1] and before[1] ~= pool then redis.call('ZREM', pool_key(base, before[1]), task) end
redis.call('HSET', task_key, 'pool', pool, 'score', score)
if #ARGV > 4 then redis.call('SADD', base .. ':excluded:' .. task, unpack(ARGV, 5)) end
redis.call('SADD', base .. ':queues', pool)
if redis.call('ZSCORE', leases_key, task) or redis.call('ZSCORE', processing_key, task) then return 'held' end
redis.call('ZADD', pool_key(base, pool), score, task)
return 'queued'
"""
)

# KEYS: leases. ARGV: base, now_ms, limit
RECLAIM = (
    _POOL_KEY
    + """
return reclaim(ARGV[1], KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)

# KEYS: counter. ARGV: window_s. A counter that expires window_s after its first increment.
COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@dataclass(frozen=True)
class Lease:
    task_id: str
    lease_id: str
    expires_at_s: float
    # False: the annotator already held this task (e.g. the page was reloaded).
    new: bool


class TakeStatus:
    CURRENT = "current"  # the annotator's lease, still running
    LATE = "late"  # the lease ran out, but nobody else took the task: counts as usual
    EXTRA = "extra"  # the lease ran out and the task moved on: kept as an extra vote
    USED = "used"  # this lease was already answered (a retried request)
    UNKNOWN = "unknown-lease"  # no such lease of this annotator for this task
    EXPIRED = "lease-expired"  # (skips only) the lease ran out


class RedisQueues:
    def __init__(self, redis: Redis, prefix: str, *, lease_record_ttl_s: float = 24 * 3600) -> None:
        self.redis = redis
        self.base = "{" + prefix + "annotation}"
        self.leases_key = f"{self.base}:leases"
        self.processing_key = f"{self.base}:processing"
        self.gold_key = f"{self.base}:gold"
        self.built_key = f"{self.base}:built"
        self.record_ttl_s = max(1, int(lease_record_ttl_s))
        self._lease = redis.register_script(LEASE)
        self._take = redis.register_script(TAKE)
        self._restore = redis.register_script(RESTORE)
        self._finish = redis.register_script(FINISH)
        self._upsert = redis.register_script(UPSERT)
        self._reclaim = redis.register_script(RECLAIM)
        self._count = redis.register_script(COUNT)

    def queue_key(self, queue: str) -> str:
        return self.gold_key if queue == GOLD_POOL else f"{self.base}:queue:{queue}"

    # --- the hot path

    def lease(
        self, queue: str, annotator: str, *, lease_id: str, now_s: float, lease_s: float, prefer_gold: bool, scan: int
    ) -> Lease | None:
        answer = self._lease(
            keys=[self.queue_key(queue), self.gold_key, self.leases_key],
            args=[
                self.base,
                annotator,
                int(now_s * 1000),
                max(1, int(lease_s * 1000)),
                "1" if prefer_gold else "0",
                scan,
                lease_id,
                self.record_ttl_s,
            ],
        )
        if not answer:
            return None
        task_id, expires_ms, held_lease_id, kind = (_text(value) for value in answer)
        return Lease(task_id, held_lease_id, int(expires_ms) / 1000.0, kind == "new")

    def take(self, task_id: str, lease_id: str, annotator: str, *, now_s: float, allow_late: bool) -> str:
        """Take a leased task off its lease to record an answer (see `TakeStatus`)."""
        return _text(
            self._take(
                keys=[self.leases_key, self.processing_key],
                args=[self.base, task_id, lease_id, annotator, int(now_s * 1000), "1" if allow_late else "0"],
            )
        )

    def restore(self, task_id: str, lease_id: str, annotator: str) -> bool:
        return bool(
            self._restore(keys=[self.leases_key, self.processing_key], args=[self.base, task_id, lease_id, annotator])
        )

    def finish(self, task_id: str, annotator: str, outcome: str, live: LiveTask | None, *, held: bool) -> str:
        """After SQL committed: `requeue` to `live`'s pool, `remove` from the queues, or `exclude` only."""
        return _text(
            self._finish(
                keys=[self.leases_key, self.processing_key],
                args=[
                    self.base,
                    task_id,
                    annotator,
                    outcome,
                    live.pool if live else "",
                    repr(live.score) if live else "0",
                    "1" if held else "0",
                ],
            )
        )

    def upsert(self, task: LiveTask) -> str:
        return _text(self._upsert(keys=[self.leases_key, self.processing_key], args=self._upsert_args(task)))

    def _upsert_args(self, task: LiveTask) -> list[str]:
        return [self.base, task.task_id, task.pool, repr(task.score), *sorted(task.excluded)]

    def remove(self, task_id: str) -> None:
        """The task is no longer served (decided or disputed); a lease on it stays until answered or expired."""
        self._finish(keys=[self.leases_key, self.processing_key], args=[self.base, task_id, "", "remove", "", "0", "0"])

    def reclaim_expired(self, now_s: float, limit: int = 1000) -> int:
        return int(self._reclaim(keys=[self.leases_key], args=[self.base, int(now_s * 1000), limit]))

    def stale_processing(self, older_than_s: float) -> list[str]:
        cutoff = int(older_than_s * 1000)
        return [
            _text(value) for value in self.redis.zrangebyscore(self.processing_key, "-inf", cutoff, start=0, num=100)
        ]

    def clear_processing(self, task_id: str) -> None:
        self.redis.zrem(self.processing_key, task_id)

    def holder(self, task_id: str) -> str | None:
        """The annotator holding a live lease on the task (None: not leased)."""
        value = self.redis.hget(f"{self.base}:lease:{task_id}", "annotator")
        return None if value is None else _text(value)

    # --- figures

    def waiting(self, queues: Iterable[str]) -> dict[str, int]:
        names = list(queues)
        pipeline = self.redis.pipeline(transaction=False)
        for name in names:
            pipeline.zcard(self.queue_key(name))
        return dict(zip(names, (int(value) for value in pipeline.execute()), strict=True))

    def known_queues(self) -> list[str]:
        return sorted(_text(value) for value in self.redis.smembers(f"{self.base}:queues") if _text(value) != GOLD_POOL)

    def leased_count(self) -> int:
        return int(self.redis.zcard(self.leases_key))

    # --- limits

    def allow_request(self, annotator: str, per_second: int, now_s: float) -> bool:
        """A fixed one-second window per account."""
        key = f"{self.base}:rate:{annotator}:{int(now_s)}"
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.incr(key)
        pipeline.expire(key, 2)
        count = pipeline.execute()[0]
        return int(count) <= per_second

    def signin_failures(self, name: str) -> int:
        value = self.redis.get(f"{self.base}:signin:{name}")
        return int(value) if value is not None else 0

    def count_signin_failure(self, name: str, window_s: int) -> None:
        """Count a failure; the count starts over `window_s` after the first one."""
        self._count(keys=[f"{self.base}:signin:{name}"], args=[window_s])

    # --- rebuild

    def built(self) -> bool:
        return bool(self.redis.exists(self.built_key))

    def clear(self) -> int:
        """Delete the queues' structure (not lease records, limits or sign-in counters)."""
        kept = (":lease-record:", ":rate:", ":signin:")
        deleted = 0
        batch: list[str] = []
        for key in self.redis.scan_iter(match=_glob_escape(self.base) + ":*", count=1000):
            name = _text(key)
            if any(marker in name for marker in kept):
                continue
            batch.append(name)
            if len(batch) >= 500:
                deleted += int(self.redis.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(self.redis.delete(*batch))
        return deleted

    def load(self, tasks: Iterable[LiveTask], batch: int = 500) -> int:
        """Upsert many tasks (pipelined)."""
        count = 0
        pipeline = self.redis.pipeline(transaction=False)
        for task in tasks:
            self._upsert(keys=[self.leases_key, self.processing_key], args=self._upsert_args(task), client=pipeline)
            count += 1
            if count % batch == 0:
                pipeline.execute()
        pipeline.execute()
        return count

    def mark_built(self, now_s: float | None = None) -> None:
        self.redis.set(self.built_key, str(now_s if now_s is not None else time.time()))

    def ping(self) -> None:
        self.redis.ping()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{character}" if character in "*?[]\\" else character for character in text)
