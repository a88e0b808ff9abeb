"""Labelled windows rebuilt from the raw archive (`michi.archive`): what a label's window looked like.

For each labelled upload: find its archived bytes by device, upload id and the label's window time
(in the archive segments of the day of the window or the one before), verified by
`michi.archive.ArchiveReader` against the segment's header.

Calibration depends on the device's history, so it is rebuilt deterministically: **the device's
archived uploads of the same trip, in sequence order, from the first one up to the labelled one,
chained from empty calibration sums** (`michi.windows.chain`). Serving also carries the sums over
from the device's previous trips; within a trip the estimate converges (the sums decay by 0.97 per
upload), so windows a few minutes into a trip match serving, and the first windows of a trip may be
calibrated with less evidence than serving had. The trip's uploads are found in the headers of the
archive segments of the labelled upload's day and the day before.

Labels whose upload is not archived, whose window id is not among the rebuilt windows, or whose
event type names no class are counted by reason (`unresolved`) and left out.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec

from michi.archive import ArchiveCorrupt, ArchiveReader
from michi.contracts.v1 import upload_pb2
from michi.edge.calibration_state import device_calibration
from michi.windows.chain import windows_in_order
from michi.windows.features import window_id
from michi.windows.upload import upload_from_proto
from services.trainer.domain.dataset import LabeledWindows, labeled_rows
from services.trainer.domain.labels import NORMAL_CLASS, WindowLabel, class_of_event_type, winning_labels

logger = logging.getLogger(__name__)


class ArchiveWindowSource:
    """Reads archived uploads from the blob store at `blob_url` (file://, s3://, memory://)."""

    def __init__(self, blob_url: str, **storage_options: Any) -> None:
        self.blob_url = blob_url
        filesystem, root = fsspec.core.url_to_fs(blob_url, **storage_options)
        self._reader = ArchiveReader(filesystem, root)
        self._days: dict[tuple[str, str], list[upload_pb2.Upload]] = {}

    def find(self, device_id: str, upload_id: str, around_s: float) -> upload_pb2.Upload | None:
        try:
            return self._reader.find(device_id, upload_id, datetime.fromtimestamp(around_s, UTC))
        except ArchiveCorrupt as error:
            logger.warning("archived upload refused", extra={"upload_id": upload_id, "error": str(error)})
            return None

    def device_uploads(self, device_id: str, day: datetime) -> list[upload_pb2.Upload]:
        """Every archived upload of a device on one UTC day (cached for this source's lifetime)."""
        cache_key = (device_id, f"{day.astimezone(UTC):%Y-%m-%d}")
        if cache_key not in self._days:
            self._days[cache_key] = self._reader.device_uploads(device_id, day)
        return self._days[cache_key]

    def trip_uploads_until(self, labelled: upload_pb2.Upload) -> list[upload_pb2.Upload]:
        """The device's archived uploads of the same trip with sequence ≤ the labelled one's, in sequence order."""
        started = labelled.started_at.ToDatetime(tzinfo=UTC)
        by_sequence: dict[int, upload_pb2.Upload] = {}
        for day in (started - timedelta(days=1), started):
            for upload in self.device_uploads(labelled.device_id, day):
                if upload.trip_id == labelled.trip_id and upload.sequence <= labelled.sequence:
                    by_sequence.setdefault(upload.sequence, upload)
        by_sequence[labelled.sequence] = labelled
        return [by_sequence[sequence] for sequence in sorted(by_sequence)]

    def labeled_windows(self, labels: Sequence[WindowLabel]) -> tuple[LabeledWindows, dict[str, int]]:
        """The windows of the winning label of each window, and how many labels could not be used, by reason."""
        unresolved: Counter[str] = Counter()
        winners = winning_labels(labels)
        by_upload: dict[tuple[str, str], list[WindowLabel]] = defaultdict(list)
        for label in winners.values():
            if class_of_event_type(label.event_type) is None:
                unresolved["no-class"] += 1
                continue
            by_upload[(label.device_id, label.upload_id)].append(label)
        found: dict[tuple[str, str], upload_pb2.Upload] = {}
        for (device, upload_id), group in sorted(by_upload.items()):
            upload = self.find(device, upload_id, min(label.window_started_at_s for label in group))
            if upload is None:
                unresolved["upload-not-archived"] += len(group)
            else:
                found[(device, upload_id)] = upload
        # One chain per trip, up to its last labelled upload.
        trips: dict[tuple[str, str], list[upload_pb2.Upload]] = defaultdict(list)
        for upload in found.values():
            trips[(upload.device_id, upload.trip_id)].append(upload)
        parts = []
        for _, labelled_uploads in sorted(trips.items()):
            last = max(labelled_uploads, key=lambda upload: upload.sequence)
            wanted = {upload.upload_id for upload in labelled_uploads}
            archived = self.trip_uploads_until(last)
            history = (upload_from_proto(upload_pb2.UploadReceived(upload=upload)) for upload in archived)
            # An edge device's uploads sent in full carry its own sums: rebuilt from them, as inference scored them.
            starting = {
                upload.upload_id: sums for upload in archived if (sums := device_calibration(upload)) is not None
            }
            for chained in windows_in_order(history, starting=starting):
                if chained.data.upload_id not in wanted:
                    continue
                of_window = {
                    label.window_id: label for label in by_upload[(chained.data.device_id, chained.data.upload_id)]
                }
                ids = [window_id(chained.data.upload_id, float(start)) for start in chained.windows.starts_s]
                rows = [row for row, identifier in enumerate(ids) if identifier in of_window]
                missing = len(of_window) - len(rows)
                if missing:
                    unresolved["window-not-found" if chained.skipped_reason is None else "upload-not-analysable"] += (
                        missing
                    )
                if rows:
                    chosen = [of_window[ids[row]] for row in rows]
                    parts.append(
                        labeled_rows(
                            chained,
                            rows,
                            [class_of_event_type(label.event_type) or NORMAL_CLASS for label in chosen],
                            [label.source for label in chosen],
                        )
                    )
        self._days.clear()
        return LabeledWindows.concatenate(parts), dict(unresolved)
