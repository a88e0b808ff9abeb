"""The bus's pure parts: catalog, headers, decoding, settings."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from michi.bus.catalog import CATALOG, DRIVER_SCORES, UPLOADS, spec_for_schema
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.headers import build_headers, read_headers, trace_id_of
from michi.contracts import stable_event_id
from michi.contracts.v1 import upload_pb2
from michi.settings import MichiSettings, load_settings


def test_catalog_names_are_unique_and_prefixed() -> None:
    names = [spec.name("michi.") for spec in CATALOG]
    assert len(names) == len(set(names))
    assert UPLOADS.name("michi.") == "michi.uploads.v1"
    assert UPLOADS.name("acme.") == "acme.uploads.v1"
    assert spec_for_schema("michi.v1.UploadReceived") is UPLOADS


def test_compacted_topics_say_so_in_their_config() -> None:
    assert DRIVER_SCORES.config()["cleanup.policy"] == "compact"
    assert UPLOADS.config()["cleanup.policy"] == "delete"
    assert UPLOADS.config()["retention.ms"] == str(7 * 24 * 3600 * 1000)


def test_headers_carry_schema_content_type_and_the_current_trace() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("upload") as span:
        headers = read_headers(build_headers(UPLOADS.schema))
        expected_trace = format(span.get_span_context().trace_id, "032x")
    assert headers["schema"] == "michi.v1.UploadReceived"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["traceparent"].split("-")[1] == expected_trace
    assert trace_id_of(headers) == expected_trace
    assert trace.get_current_span().get_span_context().is_valid is False


def _valid_bytes() -> bytes:
    return upload_pb2.UploadReceived(event_id="e1", upload=upload_pb2.Upload(upload_id="u1")).SerializeToString()


def test_decode_accepts_a_valid_message() -> None:
    message = decode_message(UPLOADS, _valid_bytes(), {"schema": UPLOADS.schema})
    assert isinstance(message, upload_pb2.UploadReceived)
    assert message.upload.upload_id == "u1"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"", {}, "empty-value"),
        (b"\xff\xff\xff", {}, "decode-error"),
        (_valid_bytes(), {"schema": "michi.v1.Detection"}, "schema-mismatch"),
        (_valid_bytes(), {"content-type": "application/json"}, "content-type"),
        (b"\x0a\x05ab", {}, "decode-error"),
        (
            upload_pb2.UploadReceived(upload=upload_pb2.Upload(upload_id="u")).SerializeToString(),
            {},
            "schema-violation",
        ),
    ],
)
def test_decode_refuses_bad_messages_with_a_reason(value: bytes, headers: dict[str, str], reason: str) -> None:
    with pytest.raises(UndecodableMessage) as refused:
        decode_message(UPLOADS, value, headers)
    assert refused.value.reason == reason


def test_stable_event_ids_repeat_for_the_same_inputs_only() -> None:
    assert stable_event_id("detection", "w1", 2) == stable_event_id("detection", "w1", 2)
    assert stable_event_id("detection", "w1", 2) != stable_event_id("detection", "w1", 3)
    assert stable_event_id("a", "bc") != stable_event_id("ab", "c")


def test_placeholder_secret_is_refused_outside_dev(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MICHI_ENV", "production")
    with pytest.raises(SystemExit):
        load_settings(MichiSettings)
    assert "MICHI_TOKEN_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("MICHI_TOKEN_SECRET", "a-real-secret-of-enough-length")
    assert load_settings(MichiSettings).env == "production"


def test_secrets_are_masked_when_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICHI_TOKEN_SECRET", "super-secret-value")
    settings = MichiSettings()
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings.model_dump())


def test_external_urls_win_over_embedded_endpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("MICHI_KAFKA_BOOTSTRAP", "kafka.internal:9092")
    monkeypatch.setenv("MICHI_HOME", str(tmp_path))
    settings = MichiSettings()
    assert settings.resolved_kafka_bootstrap() == "kafka.internal:9092"
    assert settings.resolved_database_url().startswith("sqlite:///")


def test_stall_detector_trips_only_on_lag_without_progress() -> None:
    from michi.bus.stalls import StallDetector

    detector = StallDetector(timeout_s=45.0)
    waiting = {("detections", 0): (10, 20), ("detections", 1): (5, 5)}
    assert detector.stalled(waiting, 0.0) == []
    assert detector.stalled(waiting, 44.0) == []
    assert detector.stalled(waiting, 45.0) == [("detections", 0)]  # 10 records waiting, no commit for 45 s
    assert detector.stalled({("detections", 0): (11, 20)}, 46.0) == []  # it moved: the clock restarts
    assert detector.stalled({("detections", 0): (11, 20)}, 90.0) == []
    assert detector.stalled({("detections", 0): (11, 20)}, 91.0) == [("detections", 0)]
    assert detector.stalled({("detections", 0): (20, 20)}, 500.0) == []  # caught up: idle is fine
    assert detector.stalled({("detections", 0): (20, 20)}, 900.0) == []
