"""Everything inference remembers about one device between uploads (a faust table row).

Redelivery: the state keeps, for its last few uploads, the state as it was *before* each and
the model versions that handled it (champion, and shadow if one ran). When an upload it already
processed comes again (a redelivery after a crash, or a duplicate), it is recomputed from that
earlier state with those same models — so it yields the same windows, detections and counts even
after a model swap — and the current state is left as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from michi.windows.calibration import CalibrationSums
from services.inference.domain.episodes import OpenEpisode
from services.inference.domain.speeding import SpeedingEpisode

RECENT_UPLOADS = 16
# 2: replay memory entries carry the model versions that handled the upload (1 is still read).
STATE_VERSION = 2


@dataclass(frozen=True)
class ModelsUsed:
    """The model versions that handled one upload."""

    champion: str
    shadow: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"champion": self.champion, "shadow": self.shadow}

    @classmethod
    def from_dict(cls, data: Any) -> ModelsUsed | None:
        if not isinstance(data, dict) or not data.get("champion"):
            return None
        shadow = data.get("shadow")
        return cls(str(data["champion"]), str(shadow) if shadow else None)


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

    def core(self) -> dict[str, Any]:
        """The state without its replay memory."""
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

    def to_bytes(self) -> bytes:
        payload = {
            "version": STATE_VERSION,
            **self.core(),
            "recent": [
                [entry.upload_id, entry.before, entry.models.to_dict() if entry.models else None]
                for entry in self.recent
            ],
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
        return cls.from_core(data, recent)
