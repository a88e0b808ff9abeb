"""Everything inference remembers about one device between uploads (a faust table row).

Redelivery: the state keeps, for its last few uploads, the state as it was *before* each and
the model versions that handled it (the serving arm's, and the shadow's if one ran), with the arm's
variant and rollout id. When an upload it already processed comes again (a redelivery after a crash,
or a duplicate), it is recomputed from that earlier state with those same models as the same arm — so
it yields the same windows, detections and counts even after a model swap or a new split — and the
current state is left as it is.

Nothing here depends on the arm: the calibration, the open episode and the speeding episode are the
device's, whichever arm's model scored its last upload. A device moved to another arm by a plan revision
carries its open episode over; detection ids come from the model *name* (the same for every arm), so an
event that spans the move stays one detection.

Beyond the replay memory: the state also keeps short digests of the last `PROCESSED_UPLOADS` uploads it
processed. After a crash Kafka redelivers everything past the last committed offset, which in a burst from one
device (a backlog sent on reconnection) can be more than `RECENT_UPLOADS` uploads. One that left the replay
memory but is in this list was processed and its outputs published (the state is written only after they are
acknowledged): it is recognised as such and yields nothing again (`already_processed`), rather than being
folded into the calibration a second time and decided from a later state, which could give an event another
id.

Held uploads (`services.inference.domain.hindsight`): the uploads of the current mount session decided
before its forward axis was known. They are kept next to the replay memory, never in `core()`: each of the
`RECENT_UPLOADS` snapshots would otherwise copy them. A replay recomputes from a snapshot, which holds
none, so it never decides them again; a fresh processing after a crash (the state not written) finds them
as they were and decides them again with the same ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from michi.windows.calibration import CalibrationSums
from services.inference.domain.episodes import OpenEpisode
from services.inference.domain.hindsight import HeldUpload, held_with
from services.inference.domain.speeding import SpeedingEpisode

RECENT_UPLOADS = 16
# Digests of the uploads processed last (12 hex digits of the upload id's sha256 each: about 4 KiB in the row).
PROCESSED_UPLOADS = 256
# 2: replay memory entries carry the model versions that handled the upload (1 is still read).
# 3: and the serving arm's variant and rollout id (2 is still read: champion, no rollout).
# 4: and the held uploads (3 is still read: none held).
# 5: and the digests of the uploads processed last (4 is still read: none recorded).
STATE_VERSION = 5
VARIANT_CHAMPION = 1  # inference_pb2.VARIANT_CHAMPION, without importing the contracts into the state


@dataclass(frozen=True)
class ModelsUsed:
    """The model versions that handled one upload, and the arm that served it.

    `champion` is the version of the serving arm's model (the champion's before rollouts split traffic;
    the key keeps its name so state written by either release reads in both).
    """

    champion: str
    shadow: str | None = None
    variant: int = VARIANT_CHAMPION
    rollout_id: str = ""

    def to_dict(self) -> dict[str, str | int | None]:
        return {
            "champion": self.champion,
            "shadow": self.shadow,
            "variant": self.variant,
            "rollout_id": self.rollout_id,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelsUsed | None:
        if not isinstance(data, dict) or not data.get("champion"):
            return None
        shadow = data.get("shadow")
        variant = data.get("variant")
        return cls(
            str(data["champion"]),
            str(shadow) if shadow else None,
            int(variant) if isinstance(variant, int) and variant else VARIANT_CHAMPION,
            str(data.get("rollout_id") or ""),
        )


@dataclass
class RecentUpload:
    upload_id: str
    # The device state before this upload, as `DeviceState.core()`.
    before: dict[str, Any]
    # None for entries written before model versions were recorded.
    models: ModelsUsed | None = None


@dataclass
class DeviceState:
    calibration: CalibrationSums = field(default_factory=CalibrationSums)
    open_episode: OpenEpisode | None = None
    speeding: SpeedingEpisode | None = None
    # Replay memory, oldest first.
    recent: list[RecentUpload] = field(default_factory=list)
    # Uploads decided before the mount's forward axis was known, oldest first (not part of `core()`).
    held: list[HeldUpload] = field(default_factory=list)
    # `upload_digest` of the last `PROCESSED_UPLOADS` uploads processed, oldest first (not part of `core()`).
    processed: list[str] = field(default_factory=list)

    def core(self) -> dict[str, Any]:
        """The state without its replay memory and held uploads."""
        return {
            "calibration": self.calibration.to_dict(),
            "open_episode": self.open_episode.to_dict() if self.open_episode else None,
            "speeding": self.speeding.to_dict() if self.speeding else None,
        }

    @classmethod
    def from_core(cls, data: dict[str, Any], recent: list[RecentUpload] | None = None) -> DeviceState:
        return cls(
            calibration=CalibrationSums.from_dict(data.get("calibration") or {}),
            open_episode=OpenEpisode.from_dict(data["open_episode"]) if data.get("open_episode") else None,
            speeding=SpeedingEpisode.from_dict(data["speeding"]) if data.get("speeding") else None,
            recent=list(recent or []),
        )

    def _recent(self, upload_id: str) -> RecentUpload | None:
        return next((entry for entry in self.recent if entry.upload_id == upload_id), None)

    def state_before(self, upload_id: str) -> DeviceState | None:
        """The state as it was before `upload_id`, if that upload was processed recently."""
        entry = self._recent(upload_id)
        return DeviceState.from_core(entry.before) if entry is not None else None

    def models_used(self, upload_id: str) -> ModelsUsed | None:
        """The model versions that handled `upload_id`, if it was processed recently (and recorded)."""
        entry = self._recent(upload_id)
        return entry.models if entry is not None else None

    def remember(self, upload_id: str, before: dict[str, Any], models: ModelsUsed | None = None) -> None:
        self.recent.append(RecentUpload(upload_id, before, models))
        del self.recent[:-RECENT_UPLOADS]
        self.processed.append(upload_digest(upload_id))
        del self.processed[:-PROCESSED_UPLOADS]

    def processed_earlier(self, upload_id: str) -> bool:
        """Whether `upload_id` was processed, its outputs published, and has left the replay memory since."""
        return self._recent(upload_id) is None and upload_digest(upload_id) in self.processed

    def hold(self, entry: HeldUpload) -> None:
        """Keep `entry` for hindsight, within the store's bounds (the oldest go first)."""
        self.held = held_with(self.held, entry)

    def to_bytes(self) -> bytes:
        payload = {
            "version": STATE_VERSION,
            **self.core(),
            "recent": [
                [entry.upload_id, entry.before, entry.models.to_dict() if entry.models else None]
                for entry in self.recent
            ],
            "held": [entry.to_list() for entry in self.held],
            "processed": self.processed,
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, payload: bytes | None) -> DeviceState:
        if not payload:
            return cls()
        data = json.loads(payload)
        recent = [
            RecentUpload(str(entry[0]), entry[1], ModelsUsed.from_dict(entry[2]) if len(entry) > 2 else None)
            for entry in data.get("recent", [])
        ]
        state = cls.from_core(data, recent)
        state.held = [entry for entry in map(HeldUpload.from_list, data.get("held") or []) if entry is not None]
        state.processed = [str(digest) for digest in data.get("processed") or []][-PROCESSED_UPLOADS:]
        return state


def upload_digest(upload_id: str) -> str:
    """A short digest of an upload id (what `DeviceState.processed` keeps)."""
    return hashlib.sha256(upload_id.encode()).hexdigest()[:12]
