"""How a long-lived service process runs its Python heap: `tune_garbage_collection()` once built.

Every service's `run()` calls it after building its app, before it takes traffic.

CPython's cycle collector runs a young collection every 700 net allocations of container objects,
and now and then a full one that walks every object the process holds: the imported frameworks
(FastAPI, grpc, protobuf, OpenTelemetry), the app and its caches, hundreds of thousands of objects
that live as long as the process. Ingest allocates a few hundred objects per upload (messages,
futures, spans, log records), so at ~1,400 uploads per second the collector ran ~50 times a second
and its full passes walked the startup objects again and again: ~10% of ingest's main-thread CPU,
and each full pass stopped the process for 110-160 ms every ~2.5 s (measured under
`benchmarks/ingest.py`'s gRPC load; docs/benchmarks.md). The consumers (inference, scoring, warehouse) and the
annotation API allocate per message and per request the same way.

`tune_garbage_collection()` moves everything alive at startup into the permanent generation
(`gc.freeze()`: never walked again, never freed, as it would not be anyway) and collects the young
generation after `YOUNG_THRESHOLD` allocations instead of 700. Cycles are still collected: later,
in larger batches.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

# Net container allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000
# Young collections per middle one, middle ones per old one (CPython's defaults: 10, 10).
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def tune_garbage_collection(
    young: int = YOUNG_THRESHOLD, middle: int = MIDDLE_THRESHOLD, old: int = OLD_THRESHOLD
) -> None:
    """Freeze what startup left alive and space the collections out; call once the service is built."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
    logger.info(
        "garbage collection tuned",
        extra={"frozen_objects": gc.get_freeze_count(), "thresholds": [young, middle, old]},
    )
