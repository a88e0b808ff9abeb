"""/healthz, /readyz and /metrics of the warehouse sink on 127.0.0.1 (a `http.server` thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve_health(
    port: int, *, alive: Callable[[], bool], ready: Callable[[], bool], registry: CollectorRegistry
) -> ThreadingHTTPServer:
    """Start the pages in a daemon thread; `server.shutdown()` and `server.server_close()` stop them."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path in ("/healthz", "/readyz"):
                healthy = alive() if self.path == "/healthz" else ready()
                body = b'{"status": "ok"}' if healthy else b'{"status": "unavailable"}'
                self._answer(200 if healthy else 503, body, "application/json")
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

    server = ThreadingHTTPServer(("127.0.0.1", port), Pages)
    threading.Thread(target=server.serve_forever, name="warehouse-health", daemon=True).start()
    return server
