"""Gold label requests from the simulator's ground truth: windows whose answer is known.

Annotation mixes gold tasks into every queue to measure annotators (`docs/annotation.md`). A real
fleet gets them from leads (`POST /v1/tasks/{id}/gold`); a simulated one knows the truth, so
`michi up --simulate` publishes a sample of its events as `LabelRequest`s with reason GOLD and the
`known_answer` once the uploads behind them were accepted (the annotation page reads the window
from the raw archive).

The window is the 2 s analysis window (`michi.windows.features`: aligned on whole seconds from the
upload's start, hop 1 s) that best covers the event, so the window id is the one inference and the
trainer use. Sampling is by a hash of the event id: the same seed gives the same gold set.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2
from michi.simulator.truth import EVENT_TYPE_BY_KIND, GroundTruthEvent
from michi.windows.features import HOP_SECONDS, WINDOW_SECONDS, window_id

# Kinds people can answer from a window's traces (speeding is the map rule's, not a window's).
GOLD_KINDS = frozenset({"harsh_braking", "harsh_acceleration", "harsh_cornering", "pothole", "speed_bump"})


def sampled_for_gold(event_id: str, rate: float) -> bool:
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def gold_request(
    event: GroundTruthEvent, upload_starts: Mapping[str, float], upload_seconds: float
) -> labels_pb2.LabelRequest | None:
    """The gold request for `event` (None for kinds people cannot judge, or an upload not seen).

    `upload_starts` maps upload ids to their start (epoch seconds); the window is cut from the
    upload holding the middle of the event.
    """
    windows = math.floor(upload_seconds / HOP_SECONDS + 1e-3) - round(WINDOW_SECONDS / HOP_SECONDS) + 1
    known = [upload_id for upload_id in event.upload_ids if upload_id in upload_starts]
    if windows < 1 or event.kind not in GOLD_KINDS or not known:
        return None
    middle = (event.started_at + event.ended_at) / 2.0
    upload_id = next(
        (candidate for candidate in known if 0.0 <= middle - upload_starts[candidate] < upload_seconds), known[0]
    )
    started_at = upload_starts[upload_id]
    start = min(max(round(middle - started_at - WINDOW_SECONDS / 2.0), 0), windows - 1) * HOP_SECONDS
    window = window_id(upload_id, start)
    absolute = started_at + start
    return labels_pb2.LabelRequest(
        event_id=stable_event_id("label-request", window, "simulator-gold"),
        occurred_at=timestamp_from_seconds(absolute + WINDOW_SECONDS),
        lineage=common_pb2.Lineage(
            upload_id=upload_id,
            window_id=window,
            trip_id=event.trip_id,
            device_id=event.device_id,
            driver_id=event.driver_id,
        ),
        reason=labels_pb2.LABEL_REASON_GOLD,
        priority=0,
        window=common_pb2.TimeSpan(
            started_at=timestamp_from_seconds(absolute),
            ended_at=timestamp_from_seconds(absolute + WINDOW_SECONDS),
        ),
        known_answer=EVENT_TYPE_BY_KIND[event.kind],  # type: ignore[arg-type]
    )
