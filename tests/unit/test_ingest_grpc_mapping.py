"""The gRPC door's pure parts: status mapping, trailing metadata, bearer tokens, stream sequencing."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from michi.contracts.v1 import ingest_pb2, upload_pb2
from services.ingest.entrypoints.grpc import (
    StreamSequencer,
    bearer_token,
    refusal_metadata,
    rejected_ack,
    status_code,
)
from services.ingest.handlers import OutgoingUpload, UploadRefused


@pytest.mark.parametrize(
    ("http_status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (409, grpc.StatusCode.ALREADY_EXISTS),
        (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (422, grpc.StatusCode.INVALID_ARGUMENT),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (503, grpc.StatusCode.UNAVAILABLE),
        (500, grpc.StatusCode.INTERNAL),  # internal-error: a failure of ingest itself
        (502, grpc.StatusCode.UNAVAILABLE),
        (418, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_http_statuses_map_to_grpc_codes(http_status: int, code: grpc.StatusCode) -> None:
    assert status_code(http_status) == code


def test_refusal_metadata_carries_reason_field_and_retry_delay() -> None:
    refusal = UploadRefused(422, "non-finite-value", "NaN", "imu.gyro_y[17]")
    assert refusal_metadata(refusal) == (("michi-reason", "non-finite-value"), ("michi-field", "imu.gyro_y[17]"))
    limited = UploadRefused(429, "rate-limited", "slow down", headers={"Retry-After": "3"})
    assert refusal_metadata(limited) == (("michi-reason", "rate-limited"), ("michi-retry-after-s", "3"))
    # Metadata values must be ASCII, whatever a field path holds.
    assert refusal_metadata(UploadRefused(422, "invalid-id", "x", "é"))[1] == ("michi-field", "\\xe9")


def test_rejected_ack_names_the_field_in_its_detail() -> None:
    ack = rejected_ack("upload-1", UploadRefused(422, "non-finite-value", "value is NaN", "gps[3].speed_mps"))
    assert (ack.outcome, ack.reason, ack.detail) == (
        ingest_pb2.UPLOAD_OUTCOME_REJECTED,
        "non-finite-value",
        "gps[3].speed_mps: value is NaN",
    )


def test_bearer_token_comes_from_the_authorization_metadata() -> None:
    assert bearer_token((("traceparent", "x"), ("Authorization", "Bearer  abc "))) == "abc"
    for metadata in ((), (("authorization", "Basic abc"),), (("authorization", "Bearer "),)):
        with pytest.raises(UploadRefused) as caught:
            bearer_token(metadata)
        assert (caught.value.status, caught.value.reason) == (401, "missing-token")


def test_sequencer_lets_tickets_go_in_order_whatever_order_they_ask() -> None:
    async def scenario() -> list[int]:
        sequencer = StreamSequencer()
        tickets = [sequencer.issue() for _ in range(5)]
        went: list[int] = []

        async def publish(ticket: int, delay: float) -> None:
            await asyncio.sleep(delay)
            await sequencer.wait_turn(ticket)
            went.append(ticket)
            sequencer.done(ticket)

        # Ticket 2 never publishes (refused): it is done without its turn, and must not block 3 and 4.
        sequencer.done(tickets[2])
        await asyncio.gather(*(publish(ticket, 0.01 * (5 - ticket)) for ticket in tickets if ticket != 2))
        return went

    assert asyncio.run(scenario()) == [0, 1, 3, 4]


def test_sequencer_drops_gaps_the_stream_itself_is_filling() -> None:
    sequencer = StreamSequencer()

    def received(sequence: int, missing: list[int]) -> upload_pb2.UploadReceived:
        upload = upload_pb2.Upload(trip_id="trip-1", sequence=sequence)
        outgoing = OutgoingUpload(upload_pb2.UploadReceived(missing_sequences=missing), upload, b"")
        sequencer.correct_gaps(outgoing)
        return outgoing.received

    assert list(received(4, []).missing_sequences) == []
    # Claimed while 4 was in flight, Redis still said 3: only 5..6 can be missing, and 5 was never sent.
    assert list(received(7, [4, 5, 6]).missing_sequences) == [5, 6]
    assert list(received(9, [8]).missing_sequences) == [8]
