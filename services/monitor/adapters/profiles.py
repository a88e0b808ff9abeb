"""Reference profiles from the blob store: `models/<name>/<version>/reference_profile.json`, next to the model.

The trainer writes the file before it registers the version, so a version inference serves has one. Profiles
are cached per version and read again every `refresh_s` (`MICHI_MONITOR_PROFILE_REFRESH_S`, 60 s): a person may
replace one with a period of the fleet's own traffic (`michi models reprofile`), and the monitor then judges the
version's next windows against it (a new `ReferenceProfile` object; `DriftMonitor` closes the windows binned on the
old one). An unchanged file (same SHA-256) keeps the cached object; a file that became unreadable keeps the last
good one. A version without a readable profile is asked again after `RETRY_MISSING_S`. An unreachable store raises
`BlobStoreUnavailable` (the loop retries the record).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable

from michi.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable
from michi.registry.layout import reference_profile_key
from services.monitor.domain.profiles import ProfileError, ReferenceProfile, read_profile

logger = logging.getLogger(__name__)

SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RETRY_MISSING_S = 60.0


REFRESH_S = 60.0


class BlobProfiles:
    def __init__(
        self, store: BlobStore, *, clock: Callable[[], float] = time.monotonic, refresh_s: float = REFRESH_S
    ) -> None:
        self.store = store
        self.clock = clock
        self.refresh_s = refresh_s
        self._profiles: dict[tuple[str, str], ReferenceProfile] = {}
        # Per cached version: the SHA-256 of the file it was read from, and when it was last read.
        self._digests: dict[tuple[str, str], str] = {}
        self._read_at: dict[tuple[str, str], float] = {}
        self._missing: dict[tuple[str, str], float] = {}

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        key = (model_name, model_version)
        cached = self._profiles.get(key)
        if cached is not None:
            if self.clock() - self._read_at[key] >= self.refresh_s:
                self._refresh(key)
            return self._profiles[key]
        missing_since = self._missing.get(key)
        if missing_since is not None and self.clock() - missing_since < RETRY_MISSING_S:
            return None
        if not SAFE_SEGMENT.match(model_name) or not SAFE_SEGMENT.match(model_version):
            self._missing[key] = self.clock()
            return None
        try:
            data = asyncio.run(self.store.read_bytes(reference_profile_key(model_name, model_version)))
            profile = read_profile(json.loads(data))
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
        self._keep(key, profile, data)
        return profile

    def _keep(self, key: tuple[str, str], profile: ReferenceProfile, data: bytes) -> None:
        self._profiles[key] = profile
        self._digests[key] = hashlib.sha256(data).hexdigest()
        self._read_at[key] = self.clock()

    def _refresh(self, key: tuple[str, str]) -> None:
        """Read a cached version's profile again; replace the cached one only with a changed, readable file."""
        self._read_at[key] = self.clock()
        try:
            data = asyncio.run(self.store.read_bytes(reference_profile_key(*key)))
        except BlobNotFound:
            logger.warning(
                "reference profile gone: the last one read is kept", extra={"model": key[0], "version": key[1]}
            )
            return
        except BlobStoreUnavailable:
            return  # the store is down: judge on with the profile in hand, read it again at the next refresh
        if hashlib.sha256(data).hexdigest() == self._digests[key]:
            return
        try:
            profile = read_profile(json.loads(data))
        except (ProfileError, ValueError) as error:
            logger.warning(
                "changed reference profile unreadable: the last one read is kept",
                extra={"model": key[0], "version": key[1], "error": str(error)},
            )
            return
        logger.info(
            "reference profile changed: the version's next windows are judged against it",
            extra={"model": key[0], "version": key[1], "source": profile.source},
        )
        self._keep(key, profile, data)
