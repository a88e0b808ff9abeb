"""Upload claims in Redis: idempotency by upload_id and the last sequence seen per trip.

A claim is one string key per upload_id, `<content sha256> <state>`, where state is
`pending` while the first copy is being published and `accepted:<event_id>` once
Kafka acknowledged it. Claiming is one script that also reads the trip's highest accepted
sequence and, in the same atomic step, refuses a new upload whose sequence jumps more than
the allowed gap past it (`ClaimAttempt.too_far_ahead`; nothing is claimed then);
settling is one more (state + trip sequence + the media owner). Calls from concurrent uploads
go to Redis together, one pipeline per batch (`michi.batching.PipelinedScripts`).
`media-owner:{upload_id}` names the one device that may PUT the upload's media: the
accepted upload's device, or before that the first device that sent media for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from michi.batching import PipelinedScripts

PENDING = "pending"
ACCEPTED_PREFIX = "accepted:"

# KEYS: claim, trip. ARGV: claim value, pending ttl, sequence, largest jump past the trip's highest accepted
# sequence (negative: no bound). Returns {existing claim or false, trip's highest accepted sequence or false, 1 when the sequence
# jumps too far (then nothing is claimed) else 0}. A trip never seen has no highest sequence: any jump passes.
# A copy of a claimed upload is answered from its claim, never refused for its sequence (retries stay safe).
_CLAIM = """
local existing = redis.call('GET', KEYS[1])
local last = redis.call('GET', KEYS[2])
if existing then
  return {existing, last, 0}
end
local gap = tonumber(ARGV[4])
if last and gap >= 0 and tonumber(ARGV[3]) > tonumber(last) + gap then
  return {false, last, 1}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {false, last, 0}
"""

# KEYS: claim, trip, media owner. ARGV: expected pending value, accepted value, claim ttl, sequence, trip ttl,
# the device owning the upload's media ('' to leave it).
_SETTLE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[3])
end
local last = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[4]) > last then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
else
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
"""

# KEYS: media owner. ARGV: device, ttl. The owner after the call (this device if there was none).
_BIND_MEDIA_OWNER = """
local owner = redis.call('GET', KEYS[1])
if owner then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

# Delete the claim only if it is still ours (never someone else's later claim).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """What was found under an upload_id: the content hash and the state (`pending` / `accepted:<id>`)."""

    content_sha256: str
    state: str

    @property
    def event_id(self) -> str | None:
        return self.state[len(ACCEPTED_PREFIX) :] if self.state.startswith(ACCEPTED_PREFIX) else None

    @classmethod
    def parse(cls, raw: bytes | str) -> Claim:
        text = raw.decode() if isinstance(raw, bytes) else raw
        content_sha256, _, state = text.partition(" ")
        return cls(content_sha256, state)


@dataclass(frozen=True)
class ClaimAttempt:
    """`existing` is None when this caller now holds the claim (unless `too_far_ahead`: then nobody does)."""

    existing: Claim | None
    last_sequence: int | None
    too_far_ahead: bool = False


class UploadClaims:
    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        accepted_ttl_s: int,
        pending_ttl_s: int,
        scripts: PipelinedScripts | None = None,
    ) -> None:
        self.redis = redis
        self._key_prefix = key_prefix
        self._accepted_ttl_s = accepted_ttl_s
        # A pending claim outlives a publish attempt but not a crashed process for long.
        self._pending_ttl_s = pending_ttl_s
        # Concurrent uploads' claims and settlements share pipelines (one round trip per batch).
        scripts = scripts or PipelinedScripts(redis)
        self._claim = scripts.register(_CLAIM)
        self._settle = scripts.register(_SETTLE)
        self._release = scripts.register(_RELEASE)
        self._bind_media_owner = scripts.register(_BIND_MEDIA_OWNER)

    def _claim_key(self, upload_id: str) -> str:
        return f"{self._key_prefix}ingest:upload:{upload_id}"

    def _trip_key(self, trip_id: str) -> str:
        return f"{self._key_prefix}ingest:trip-sequence:{trip_id}"

    def _media_owner_key(self, upload_id: str) -> str:
        return f"{self._key_prefix}ingest:media-owner:{upload_id}"

    async def claim(
        self, upload_id: str, trip_id: str, content_sha256: str, sequence: int = 0, max_gap: int | None = None
    ) -> ClaimAttempt:
        """Claim `upload_id`, unless it is claimed already or `sequence` is more than `max_gap` past the trip's
        highest accepted sequence (None: no bound)."""
        existing, last, too_far = await self._claim(
            keys=[self._claim_key(upload_id), self._trip_key(trip_id)],
            args=[f"{content_sha256} {PENDING}", self._pending_ttl_s, sequence, -1 if max_gap is None else max_gap],
        )
        return ClaimAttempt(Claim.parse(existing) if existing else None, int(last) if last else None, bool(too_far))

    async def current(self, upload_id: str) -> Claim | None:
        raw = await self.redis.get(self._claim_key(upload_id))
        return Claim.parse(raw) if raw else None

    async def accept(
        self,
        upload_id: str,
        trip_id: str,
        sequence: int,
        content_sha256: str,
        event_id: str,
        media_owner: str = "",
    ) -> None:
        """Settle the claim; `media_owner` (the upload's device) becomes the only device that may PUT its media."""
        await self._settle(
            keys=[self._claim_key(upload_id), self._trip_key(trip_id), self._media_owner_key(upload_id)],
            args=[
                f"{content_sha256} {PENDING}",
                f"{content_sha256} {ACCEPTED_PREFIX}{event_id}",
                self._accepted_ttl_s,
                sequence,
                self._accepted_ttl_s,
                media_owner,
            ],
        )

    async def bind_media_owner(self, upload_id: str, device_id: str) -> str:
        """The device owning `upload_id`'s media: the accepted upload's device, else the first to PUT media."""
        owner = await self._bind_media_owner(
            keys=[self._media_owner_key(upload_id)], args=[device_id, self._accepted_ttl_s]
        )
        return owner.decode() if isinstance(owner, bytes) else str(owner)

    async def release(self, upload_id: str, content_sha256: str) -> None:
        await self._release(keys=[self._claim_key(upload_id)], args=[f"{content_sha256} {PENDING}"])

    async def ping(self) -> None:
        await self.redis.ping()
