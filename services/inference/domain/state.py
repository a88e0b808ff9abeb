"""Everything inference remembers about one device between uploads (a faust table row).

Redelivery: the state keeps, for its last few uploads, the state as it was *before* each.
When an upload it already processed comes again (a redelivery after a crash, or a duplicate),
it is recomputed from that earlier state — so it yields the same windows, detections and
counts — and the current state is left as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from michi.windows.calibration import CalibrationSums
from services.inference.domain.episodes import OpenEpisode
from services.inference.domain.speeding import SpeedingEpisode

RECENT_UPLOADS = 16
STATE_VERSION = 1


@dataclass
class DeviceState:
    calibration: CalibrationSums = field(default_factory=CalibrationSums)
    open_episode: OpenEpisode | None = None
    speeding: SpeedingEpisode | None = None
    # (upload_id, state before it as a dict), oldest first.
    recent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def core(self) -> dict[str, Any]:
        """The state without its replay memory."""
        return {
            "calibration": self.calibration.to_dict(),
            "open_episode": self.open_episode.to_dict() if self.open_episode else None,
            "speeding": self.speeding.to_dict() if self.speeding else None,
        }

    @classmethod
    def from_core(cls, data: dict[str, Any], recent: list[tuple[str, dict[str, Any]]] | None = None) -> DeviceState:
        return cls(
            calibration=CalibrationSums.from_dict(data.get("calibration") or {}),
            open_episode=OpenEpisode.from_dict(data["open_episode"]) if data.get("open_episode") else None,
            speeding=SpeedingEpisode.from_dict(data["speeding"]) if data.get("speeding") else None,
            recent=list(recent or []),
        )

    def state_before(self, upload_id: str) -> DeviceState | None:
        """The state as it was before `upload_id`, if that upload was processed recently."""
        for recorded, before in self.recent:
            if recorded == upload_id:
                return DeviceState.from_core(before)
        return None

    def remember(self, upload_id: str, before: dict[str, Any]) -> None:
        self.recent.append((upload_id, before))
        del self.recent[:-RECENT_UPLOADS]

    def to_bytes(self) -> bytes:
        payload = {
            "version": STATE_VERSION,
            **self.core(),
            "recent": [[upload_id, before] for upload_id, before in self.recent],
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, payload: bytes | None) -> DeviceState:
        if not payload:
            return cls()
        data = json.loads(payload)
        recent = [(str(upload_id), before) for upload_id, before in data.get("recent", [])]
        return cls.from_core(data, recent)
