"""Reference profiles from the blob store: `models/<name>/<version>/reference_profile.json`, next to the model.

The trainer writes the file before it registers the version, so a version inference serves has one. Profiles
are cached per version (they never change); a version without a readable profile is asked again after
`RETRY_MISSING_S`. An unreachable store raises `BlobStoreUnavailable` (the loop retries the record).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

from michi.blobs import BlobNotFound, BlobStore
from michi.registry.layout import reference_profile_key
from services.monitor.domain.profiles import ProfileError, ReferenceProfile, read_profile

logger = logging.getLogger(__name__)

SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RETRY_MISSING_S = 60.0


class BlobProfiles:
    def __init__(self, store: BlobStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._profiles: dict[tuple[str, str], ReferenceProfile] = {}
        self._missing: dict[tuple[str, str], float] = {}

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        key = (model_name, model_version)
        if key in self._profiles:
            return self._profiles[key]
        missing_since = self._missing.get(key)
        if missing_since is not None and self.clock() - missing_since < RETRY_MISSING_S:
            return None
        if not SAFE_SEGMENT.match(model_name) or not SAFE_SEGMENT.match(model_version):
            self._missing[key] = self.clock()
            return None
        try:
            document = json.loads(asyncio.run(self.store.read_bytes(reference_profile_key(model_name, model_version))))
            profile = read_profile(document)
        except BlobNotFound:
            logger.warning(
                "model version has no reference profile", extra={"model": model_name, "version": model_version}
            )
            self._missing[key] = self.clock()
            return None
        except (ProfileError, ValueError) as error:
            logger.warning(
                "reference profile unreadable",
                extra={"model": model_name, "version": model_version, "error": str(error)},
            )
            self._missing[key] = self.clock()
            return None
        if profile.low_resolution:
            logger.info(
                "low-resolution reference profile: figures reported, no alerts raised on them",
                extra={"model": model_name, "version": model_version, "profile_version": profile.version},
            )
        self._missing.pop(key, None)
        self._profiles[key] = profile
        return profile
