"""Floors of the ingest benchmark: ingest's two doors with nothing, or only the I/O, behind them.

`python -m benchmarks ingest` drives these with the same load generators as ingest, in the same run:

- HTTP: an ASGI app on uvicorn with uvloop and httptools (as ingest) that reads the body, parses the
  `Upload` and answers 202 with a small JSON body;
- gRPC: a grpc.aio `michi.v1.Ingest/StreamUploads` on uvloop that parses each `Upload` and
  acknowledges it ACCEPTED;
- the I/O floors: the same HTTP app and gRPC stream, each upload also hashed and put through the Redis
  and Kafka work no ingest can skip, with ingest's own adapters (rate-limit token, idempotency claim,
  the `UploadReceived` published with acks=all and awaited, the claim settled); on the stream 8 in
  flight as in ingest, acknowledged in stream order. No authentication, validation, archive, tracing
  or metrics. Several processes share the port as ingest's workers do.

What ingest costs above them is its work (authentication, rate limits, validation, idempotency, the raw
archive, Kafka with acks=all, tracing, metrics); what they cost is the framework's and the machine's.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from michi.infra.processes import free_port

HTTP = "http"
GRPC = "grpc"
GRPC_IO = "grpc-io"
HTTP_IO = "http-io"
START_TIMEOUT_S = 30.0


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(send: Any, status: int, answer: dict[str, str]) -> None:
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _run_uvicorn(app: Any, port: int) -> None:
    """uvicorn with uvloop and httptools, as ingest, on a SO_REUSEPORT socket several processes can share."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="off", log_config=None, access_log=False, server_header=False
    )
    uvicorn.Server(config).run(sockets=[listener])


def _run_stream_server(port: int, stream_uploads: Callable[..., Any], before: Callable[[], None] | None = None) -> None:
    """A grpc.aio server of `michi.v1.Ingest/StreamUploads` on uvloop; `before` runs in the loop first."""
    import grpc
    import uvloop

    from michi.contracts.v1 import ingest_pb2

    async def main() -> None:
        if before is not None:
            before()
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


def _serve_http(port: int) -> None:
    from michi.contracts.v1 import upload_pb2

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            upload = upload_pb2.Upload.FromString(await _read_body(receive))
        except Exception as error:  # the floor refuses what ingest would refuse as undecodable
            await _send_json(send, 400, {"reason": "undecodable-body", "detail": str(error)})
            return
        await _send_json(send, 202, {"upload_id": upload.upload_id, "event_id": "", "outcome": "accepted"})

    _run_uvicorn(app, port)


def _serve_grpc(port: int) -> None:
    from collections.abc import AsyncIterator

    from michi.contracts.v1 import ingest_pb2, upload_pb2

    async def stream_uploads(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[ingest_pb2.UploadAck]:
        async for body in requests:
            upload = upload_pb2.Upload.FromString(body)
            yield ingest_pb2.UploadAck(upload_id=upload.upload_id, outcome=ingest_pb2.UPLOAD_OUTCOME_ACCEPTED)

    _run_stream_server(port, stream_uploads)


def _ingest_io(bootstrap: str, redis_url: str, prefix: str) -> Callable[[bytes], Awaitable[tuple[str, str]]]:
    """Per upload, the I/O no ingest can skip, with ingest's adapters: -> (upload_id, event_id).

    Parse, take a rate-limit token, hash and claim the upload id, publish the `UploadReceived` with
    acks=all and await the acknowledgement, settle the claim. Call it inside the serving event loop.
    """
    import hashlib

    from redis.asyncio import Redis

    from michi.batching import PipelinedScripts
    from michi.bus.producer import EventProducer
    from michi.contracts import stable_event_id
    from michi.contracts.v1 import common_pb2, upload_pb2
    from services.ingest.adapters.claims import UploadClaims
    from services.ingest.adapters.publisher import KafkaUploadPublisher
    from services.ingest.adapters.rate_limits import RateLimiter
    from services.ingest.handlers import OutgoingUpload

    redis = Redis.from_url(redis_url)
    scripts = PipelinedScripts(redis)
    limiter = RateLimiter(
        redis,
        scripts=scripts,
        key_prefix=f"{prefix}floor.",
        device_rate_per_s=1_000_000,
        device_burst=1_000_000,
        global_rate_per_s=1_000_000,
    )
    claims = UploadClaims(redis, scripts=scripts, key_prefix=f"{prefix}floor.", accepted_ttl_s=3600, pending_ttl_s=30)
    # Ingest's producer settings (EventProducer's: idempotent, acks=all, linger 2 ms).
    publisher = KafkaUploadPublisher(EventProducer(bootstrap, prefix, client_id="michi-floor"), 10.0)

    async def one(body: bytes) -> tuple[str, str]:
        upload = upload_pb2.Upload.FromString(body)
        await limiter.check(upload.device_id)
        content_sha256 = hashlib.sha256(body).hexdigest()
        await claims.claim(upload.upload_id, upload.trip_id, content_sha256)
        event_id = stable_event_id("upload", upload.upload_id)
        received = upload_pb2.UploadReceived(
            event_id=event_id,
            lineage=common_pb2.Lineage(upload_id=upload.upload_id, trip_id=upload.trip_id, device_id=upload.device_id),
            content_sha256=content_sha256,
        )
        await publisher.publish(OutgoingUpload(received, upload, body))
        await claims.accept(upload.upload_id, upload.trip_id, upload.sequence, content_sha256, event_id)
        return upload.upload_id, event_id

    return one


def _serve_http_io(port: int, bootstrap: str, redis_url: str, prefix: str, window: int) -> None:
    io: list[Callable[[bytes], Awaitable[tuple[str, str]]]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not io:  # made in the serving loop
            io.append(_ingest_io(bootstrap, redis_url, prefix))
        upload_id, event_id = await io[0](await _read_body(receive))
        await _send_json(send, 202, {"upload_id": upload_id, "event_id": event_id, "outcome": "accepted"})

    _run_uvicorn(app, port)


def _serve_grpc_io(port: int, bootstrap: str, redis_url: str, prefix: str, window: int) -> None:
    import asyncio
    from collections.abc import AsyncIterator

    from michi.contracts.v1 import ingest_pb2

    io: list[Callable[[bytes], Awaitable[tuple[str, str]]]] = []

    async def acknowledged(body: bytes) -> ingest_pb2.UploadAck:
        upload_id, event_id = await io[0](body)
        return ingest_pb2.UploadAck(upload_id=upload_id, outcome=ingest_pb2.UPLOAD_OUTCOME_ACCEPTED, event_id=event_id)

    async def stream_uploads(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[ingest_pb2.UploadAck]:
        slots = asyncio.Semaphore(window)
        pending: asyncio.Queue[asyncio.Task[ingest_pb2.UploadAck] | None] = asyncio.Queue()

        async def read() -> None:
            iterator = aiter(requests)
            try:
                while True:
                    await slots.acquire()
                    try:
                        body = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    pending.put_nowait(asyncio.create_task(acknowledged(body)))
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                ack = await task
                slots.release()
                yield ack
        finally:
            reader.cancel()

    _run_stream_server(port, stream_uploads, before=lambda: io.append(_ingest_io(bootstrap, redis_url, prefix)))


def _serve_several(target: Callable[..., None], processes: int, *arguments: Any) -> None:
    """`processes` copies of a floor server sharing its port (SO_REUSEPORT), as ingest's workers do."""
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=target, args=arguments, daemon=True) for _ in range(processes)]
    for child in children:
        child.start()

    def stop(signal_number: int, frame: object) -> None:
        for child in children:
            child.terminate()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.join()


def _listening(pid: int, port: int) -> int:
    """How many of `pid` and its children listen on `port`."""
    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0
    listening = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            connections = process.net_connections(kind="tcp")
            listening += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)
    return listening


@contextmanager
def floor_server(kind: str, *arguments: Any, processes: int = 1) -> Iterator[tuple[int, int]]:
    """A floor server (`HTTP`, `GRPC`, or `HTTP_IO`/`GRPC_IO` with bootstrap, Redis URL, prefix and window)
    on a free port: yields (port, pid). With `processes` > 1 the pid is a supervisor's whose children
    serve (measure it with its children)."""
    targets: dict[str, Callable[..., None]] = {
        HTTP: _serve_http,
        GRPC: _serve_grpc,
        HTTP_IO: _serve_http_io,
        GRPC_IO: _serve_grpc_io,
    }
    port = free_port()
    context = multiprocessing.get_context("spawn")
    if processes == 1:
        process = context.Process(target=targets[kind], args=(port, *arguments), daemon=True)
    else:
        process = context.Process(target=_serve_several, args=(targets[kind], processes, port, *arguments))
    process.start()
    try:
        assert process.pid is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        # Every serving process listens before the load starts, or the kernel gives them no connections.
        while _listening(process.pid, port) < processes:
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} floor server did not start")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
