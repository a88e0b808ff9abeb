"""uvicorn's HTTP/1.1 protocol, answering a request its parser refuses with ingest's JSON error body.

A request line or header that is not valid HTTP/1.1 (`Content-Length: abc`, `-1`, two Content-Length
headers, a bad chunk size) never reaches the app: httptools refuses it and uvicorn answered a plain-text
400. Devices read `{"reason", "detail", "field"}` on every refusal, so this protocol answers
`invalid-content-length` (anything about Content-Length) or `malformed-request` (anything else) in that
body, counts it in `michi_ingest_uploads_total{outcome="refused"}` and logs it like any refusal.
`wiring.serve` passes `json_error_protocol(metrics)` as uvicorn's `http` protocol class.
"""

from __future__ import annotations

import logging
import sys

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.ingest.entrypoints.metrics import IngestMetrics

logger = logging.getLogger(__name__)

INVALID_CONTENT_LENGTH = "invalid-content-length"
MALFORMED_REQUEST = "malformed-request"


def parser_refusal(problem: str) -> tuple[str, str]:
    """(reason, detail) for the parser's description of what was wrong with a request."""
    if "content-length" in problem.lower():
        return INVALID_CONTENT_LENGTH, f"Content-Length must be one number of bytes (decimal digits): {problem}"
    return MALFORMED_REQUEST, f"not a valid HTTP/1.1 request: {problem}"


def json_error_protocol(metrics: IngestMetrics) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (what it picks by itself) whose parser refusals carry ingest's JSON body."""

    class JsonErrorHttpProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this from its `except httptools.HttpParserError`: that error says what was wrong.
            error = sys.exc_info()[1]
            reason, detail = parser_refusal(str(error) if error is not None else msg)
            metrics.refused(reason)
            logger.info("upload refused", extra={"reason": reason, "status": 400, "device_id": "", "upload_id": ""})
            body = orjson.dumps({"reason": reason, "detail": detail, "field": None})
            content = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()

    return JsonErrorHttpProtocol
