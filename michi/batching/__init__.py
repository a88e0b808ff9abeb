"""Group commit for the hot path: calls made while one batch is in flight go out together in the next.

    archive = GroupCommit(write_many, max_batch=128)       # write_many(items) -> results, one per item
    uri = await archive.submit(item)                         # waits for its own result (or error)

    scripts = PipelinedScripts(redis)
    claim = scripts.register(CLAIM_LUA)                      # same call shape as redis-py's Script
    existing, last = await claim(keys=[...], args=[...])     # one EVALSHA, sent in a pipeline

A service handling hundreds of concurrent requests pays a Redis round trip or a worker-thread hop
per call; batched, it pays one per batch, and a batch forms by itself under load (while one is in
flight the next fills up) and costs nothing when idle (a lone call goes out on the next loop turn).
Each caller gets its own result or its own exception; a batch that fails as a whole (Redis down, the
disk gone) fails every call in it with that error, exactly as the single calls would have. One bad
item never fails the others of its batch: a flush answers its failure in its place, and an error a
flush raises for any other reason is narrowed down by flushing the batch again in halves (`GroupCommit`).
"""

from michi.batching.group import GroupCommit
from michi.batching.scripts import PipelinedScript, PipelinedScripts

__all__ = ["GroupCommit", "PipelinedScript", "PipelinedScripts"]
