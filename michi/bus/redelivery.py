"""Stopping a stream worker so that Kafka redelivers what it was doing: exit 75, nothing acknowledged.

faust acknowledges a batch when its loop moves on, also while an exception unwinds it or a
cancellation closes it, and commits what was acknowledged every second and again on a graceful
stop. A worker that cannot finish a batch (its processing failed, its input has a gap, it stopped
progressing, one of its faust services crashed) therefore leaves at once with `os._exit`, before
the event loop runs again: no acknowledgement, no commit, no graceful stop. The supervisor
(`michi up`, a Deployment) restarts it and Kafka redelivers from the committed offsets; effects are
idempotent by event id, so nothing is lost and nothing doubled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

logger = logging.getLogger(__name__)

# Exit status of a stream worker that stopped on purpose so its input is redelivered (EX_TEMPFAIL).
EXIT_REDELIVER = 75


def stop_without_acknowledging(service: str, reason: str, topic: str) -> NoReturn:
    """Exit now (from any thread): no acknowledgement, no commit; the supervisor restarts the service."""
    logger.critical(
        "stopping without acknowledging",
        extra={"service": service, "reason": reason, "topic": topic},
        exc_info=sys.exc_info()[0] is not None,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_REDELIVER)
