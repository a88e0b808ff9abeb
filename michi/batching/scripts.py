"""Lua scripts on Redis, their calls from concurrent tasks sent as pipelines (see `GroupCommit`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

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
    missed it run again, once.
    """

    def __init__(self, redis: Redis, *, max_batch: int = MAX_PIPELINE) -> None:
        self.redis = redis
        self._sources: dict[str, str] = {}
        self._group: GroupCommit[ScriptCall, Any] = GroupCommit(self._run, max_batch=max_batch)

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
        results = await self._execute(calls)
        missed = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missed:
            for sha in {calls[index].sha for index in missed}:
                await self.redis.script_load(self._sources[sha])
            again = await self._execute([calls[index] for index in missed])
            for index, result in zip(missed, again, strict=True):
                results[index] = result
        return results

    async def _execute(self, calls: list[ScriptCall]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipeline:
            for call in calls:
                pipeline.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
            return list(await pipeline.execute(raise_on_error=False))
