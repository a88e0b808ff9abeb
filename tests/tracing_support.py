"""Spans a test records in-process: `with recorded_spans() as spans:` keeps every span that ends inside the block.

The process's tracer provider is OpenTelemetry's SDK one (installed when there is none; a process can set it
only once), with one recording processor added once, so tests in one pytest process share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider


class _Recorder(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.spans is not None:
            self.spans.append(span)


_RECORDER = _Recorder()


@contextmanager
def recorded_spans() -> Iterator[list[ReadableSpan]]:
    """The spans ended inside the block (in the order they ended)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if not getattr(provider, "_michi_tracing_support_recorder", False):
        provider.add_span_processor(_RECORDER)
        provider._michi_tracing_support_recorder = True  # type: ignore[attr-defined]
    _RECORDER.spans = []
    try:
        yield _RECORDER.spans
    finally:
        _RECORDER.spans = None


def traceparent_of(context: trace.SpanContext) -> str:
    """The W3C traceparent naming the span of `context`."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
