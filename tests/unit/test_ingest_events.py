"""The UploadReceived ingest publishes: assembled from the event's fields and the upload's canonical bytes."""

from __future__ import annotations

from michi.contracts import timestamp_from_seconds
from michi.contracts.v1 import common_pb2, upload_pb2
from services.ingest.handlers import OutgoingUpload


def test_the_assembled_event_parses_as_the_event_with_its_upload_set() -> None:
    for samples in (0, 3, 6_000):  # the upload's length takes one, two and three varint bytes
        upload = upload_pb2.Upload(
            upload_id="u-1",
            device_id="d-1",
            trip_id="t-1",
            sequence=7,
            sample_rate_hz=50,
            started_at=timestamp_from_seconds(1_764_000_000.5),
        )
        upload.imu.offset_ms.extend(range(0, 20 * samples, 20))
        upload.imu.accel_z.extend([9.81] * samples)
        received = upload_pb2.UploadReceived(
            event_id="e-1",
            lineage=common_pb2.Lineage(upload_id="u-1", device_id="d-1", trip_id="t-1"),
            content_sha256="ab" * 32,
            missing_sequences=[5, 6],
        )
        canonical = upload.SerializeToString(deterministic=True)
        outgoing = OutgoingUpload(received, upload, canonical)

        expected = upload_pb2.UploadReceived()
        expected.CopyFrom(received)
        expected.upload.CopyFrom(upload)
        assert upload_pb2.UploadReceived.FromString(outgoing.serialized()) == expected
        assert not received.HasField("upload"), "the upload is never copied into the event"
