"""Logging and tracing set-up: the span files `michi trace` reads, and the OTEL_* variables tracing honours."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter

from michi import telemetry
from michi.telemetry import (
    JsonLinesSpanExporter,
    TracingConfigurationError,
    TracingSetup,
    configure_tracing,
    service_resource,
    span_exporters,
    tracing_setup,
)


def test_spans_are_written_as_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "ingest.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer", kind=trace.SpanKind.SERVER) as outer:
        outer.set_attribute("michi.ingest.upload_id", "u-1")
        outer.set_attribute("michi.ingest.samples", 500)
        with tracer.start_as_current_span("inner", attributes={"sizes": (1, 2), "ok": True, "ratio": 0.5}):
            pass
    provider.shutdown()

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    inner, outer_line = (json.loads(line) for line in lines)
    assert inner["name"] == "inner" and outer_line["name"] == "outer"
    assert inner["trace_id"] == outer_line["trace_id"] and len(inner["trace_id"]) == 32
    assert inner["parent_span_id"] == outer_line["span_id"] and len(outer_line["span_id"]) == 16
    assert outer_line["parent_span_id"] is None
    assert outer_line["kind"] == "SERVER" and outer_line["status"] == "UNSET"
    assert outer_line["attributes"] == {"michi.ingest.upload_id": "u-1", "michi.ingest.samples": 500}
    assert inner["attributes"] == {"sizes": [1, 2], "ok": True, "ratio": 0.5}
    assert inner["start_ns"] <= inner["end_ns"]


# --- the OTEL_* variables tracing reads (michi.telemetry.tracing_setup and span_exporters)


@pytest.fixture(autouse=True)
def no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the OTEL_* variables it is about and no others."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@contextmanager
def exporters_of(tmp_path: Path) -> Iterator[list[SpanExporter]]:
    exporters = span_exporters(tracing_setup(), "ingest", tmp_path)
    try:
        yield exporters
    finally:
        for exporter in exporters:
            exporter.shutdown()


def test_without_variables_spans_go_to_the_files_michi_trace_reads(tmp_path: Path) -> None:
    assert tracing_setup() == TracingSetup(("files",))
    with exporters_of(tmp_path) as exporters:
        assert [type(exporter) for exporter in exporters] == [JsonLinesSpanExporter]
        assert cast(JsonLinesSpanExporter, exporters[0]).path == tmp_path / "traces" / "ingest.jsonl"


def test_an_endpoint_alone_means_otlp_over_http_protobuf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:password@collector.example:4318/")
    setup = tracing_setup()
    # What is logged: no user info.
    assert setup == TracingSetup(
        ("otlp",), protocol="http/protobuf", endpoint="https://collector.example:4318/v1/traces"
    )
    with exporters_of(tmp_path) as exporters:
        assert [type(exporter) for exporter in exporters] == [HttpSpanExporter]


def test_the_traces_variables_override_the_general_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces-only:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    # The gRPC exporter itself would refuse "none", which the specification allows.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
    assert tracing_setup() == TracingSetup(
        ("otlp",), protocol="grpc", compression="none", endpoint="http://traces-only:4317"
    )
    with exporters_of(tmp_path) as exporters:
        assert [type(exporter) for exporter in exporters] == [GrpcSpanExporter]


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        ("console", [ConsoleSpanExporter]),
        ("none", []),
        ("otlp, console", [HttpSpanExporter, ConsoleSpanExporter]),
        ("OTLP", [HttpSpanExporter]),
    ],
)
def test_otel_traces_exporter_chooses_even_with_an_endpoint(
    chosen: str, expected: list[type], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", chosen)
    with exporters_of(tmp_path) as exporters:
        assert [type(exporter) for exporter in exporters] == expected


def test_otlp_without_an_endpoint_goes_to_the_standard_local_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert tracing_setup().endpoint == "http://localhost:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert tracing_setup().endpoint == "http://localhost:4317"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger' (otlp, console or none)"),
        ({"OTEL_TRACES_EXPORTER": "otlp,none"}, "OTEL_TRACES_EXPORTER: 'none' cannot be combined"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "udp"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: unknown",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: http/json is not supported",
        ),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER: unknown sampler 'sometimes'"),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5%"},
            "OTEL_TRACES_SAMPLER_ARG: '5%' is not a ratio from 0 to 1",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT: not an http:// or https://"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:port"}, "OTEL_EXPORTER_OTLP_ENDPOINT: not an http:// or https://"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
            | {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate"},
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: unknown compression 'deflate' with grpc (none, gzip)",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "10s"},
            "OTEL_EXPORTER_OTLP_TIMEOUT: '10s' is not a positive number",
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=maps,oops"}, "OTEL_RESOURCE_ATTRIBUTES: entry 2 is not key=value"),
    ],
)
def test_an_unknown_value_is_refused_naming_its_variable(
    variables: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TracingConfigurationError) as refused:
        tracing_setup()
    assert str(refused.value).startswith(message)


def test_a_malformed_header_stops_the_process_without_showing_its_value(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(telemetry, "_configured_tracing", False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example")
    # "Authorization: Bearer ..." is the usual slip: a colon where the variable wants '='.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=maps,Authorization: Bearer sk-very-secret")
    with caplog.at_level(logging.DEBUG), pytest.raises(SystemExit) as stopped:
        configure_tracing("ingest", tmp_path)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error == (
        "michi: configuration error: OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not name=value"
        " (URL-encode the value; it is not shown here)\n"
    )
    assert "sk-very-secret" not in error + caplog.text
    # Nothing was installed: the process stops before any span could be recorded.
    assert telemetry._configured_tracing is False


def test_service_name_defaults_to_michi_service_and_the_standard_variables_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert service_resource("scoring").attributes["service.name"] == "michi-scoring"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging,service.name=from-attributes")
    resource = service_resource("scoring")
    assert resource.attributes["service.name"] == "from-attributes"
    assert resource.attributes["deployment.environment.name"] == "staging"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "scoring-eu")
    assert service_resource("scoring").attributes["service.name"] == "scoring-eu"


def test_the_sdk_builds_the_sampler_the_variables_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.05")
    tracing_setup()
    provider = TracerProvider(resource=service_resource("ingest"))
    assert provider.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.05},")
    provider.shutdown()
