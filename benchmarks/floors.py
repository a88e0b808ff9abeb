"""Framework floors of the ingest benchmark: ingest's two doors with nothing behind them.

`python -m benchmarks ingest` drives these with the same load generators as ingest, in the same run:

- HTTP: an ASGI app on uvicorn with uvloop and httptools (as ingest) that reads the body, parses the
  `Upload` and answers 202 with a small JSON body;
- gRPC: a grpc.aio `michi.v1.Ingest/StreamUploads` on uvloop that parses each `Upload` and
  acknowledges it ACCEPTED.

What ingest costs above them is its work (authentication, rate limits, validation, idempotency, the raw
archive, Kafka with acks=all, tracing, metrics); what they cost is the framework's and the machine's.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from michi.infra.processes import free_port

HTTP = "http"
GRPC = "grpc"
START_TIMEOUT_S = 30.0


def _serve_http(port: int) -> None:
    import uvicorn

    from michi.contracts.v1 import upload_pb2

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            upload = upload_pb2.Upload.FromString(b"".join(chunks))
            status, answer = 202, {"upload_id": upload.upload_id, "event_id": "", "outcome": "accepted"}
        except Exception as error:  # the floor refuses what ingest would refuse as undecodable
            status, answer = 400, {"reason": "undecodable-body", "detail": str(error)}
        body = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )


def _serve_grpc(port: int) -> None:
    from collections.abc import AsyncIterator

    import grpc
    import uvloop

    from michi.contracts.v1 import ingest_pb2, upload_pb2

    async def stream_uploads(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[ingest_pb2.UploadAck]:
        async for body in requests:
            upload = upload_pb2.Upload.FromString(body)
            yield ingest_pb2.UploadAck(upload_id=upload.upload_id, outcome=ingest_pb2.UPLOAD_OUTCOME_ACCEPTED)

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 2 * 1024 * 1024)])
        handler = grpc.stream_stream_rpc_method_handler(
            stream_uploads, response_serializer=ingest_pb2.UploadAck.SerializeToString
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("michi.v1.Ingest", {"StreamUploads": handler}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


@contextmanager
def floor_server(kind: str) -> Iterator[tuple[int, int]]:
    """A floor server (`HTTP` or `GRPC`) in its own process on a free port: yields (port, pid)."""
    target = {HTTP: _serve_http, GRPC: _serve_grpc}[kind]
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=target, args=(port,), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} floor server did not start") from None
                time.sleep(0.05)
        assert process.pid is not None
        yield port, process.pid
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
