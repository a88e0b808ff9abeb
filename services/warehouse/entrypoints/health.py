"""/healthz, /readyz and /metrics of the warehouse sink on `host` (127.0.0.1 by default; a `http.server` thread).

`/readyz` answers 200 or 503 with the body of every service (`michi.readiness.readiness_body`):
`consumer` is `ready()` (polling and holding partitions), the others are the async `checks` (the
group's progress), each run in its own event loop per request, bounded like every `/readyz` check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from michi.readiness import ReadinessCheck, health_body, readiness_body, run_checks

SERVICE = "warehouse"


def readiness(ready: Callable[[], bool], checks: Mapping[str, ReadinessCheck]) -> tuple[bool, dict[str, str]]:
    """Whether the sink is ready, and what each check said ("ok" or "error: ...")."""
    outcomes = {"consumer": "ok" if ready() else "error: not polling, or holding no partition"}
    if checks:
        outcomes.update(asyncio.run(run_checks(checks))[1])
    return all(outcome == "ok" for outcome in outcomes.values()), outcomes


def serve_health(
    port: int,
    *,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
    registry: CollectorRegistry,
    checks: Mapping[str, ReadinessCheck] | None = None,
    host: str = "127.0.0.1",
) -> ThreadingHTTPServer:
    """Start the pages in a daemon thread; `server.shutdown()` and `server.server_close()` stop them."""
    more_checks = dict(checks or {})
    # One readiness answer at a time: the progress check keeps per-partition clocks.
    judging = threading.Lock()

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                healthy = alive()
                body = orjson.dumps(health_body(SERVICE) if healthy else {"status": "unavailable", "service": SERVICE})
                self._answer(200 if healthy else 503, body, "application/json")
            elif self.path == "/readyz":
                with judging:
                    is_ready, outcomes = readiness(ready, more_checks)
                body = orjson.dumps(readiness_body(SERVICE, outcomes))
                self._answer(200 if is_ready else 503, body, "application/json")
            else:
                self._answer(404, b'{"status": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # the pages log nothing per request
            return

    server = ThreadingHTTPServer((host, port), Pages)
    threading.Thread(target=server.serve_forever, name="warehouse-health", daemon=True).start()
    return server
