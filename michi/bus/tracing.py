"""The consumer span of the bus: one CONSUMER span per record handled, continuing the trace the record carried.

    with consumer_span("warehouse", topic=topic, partition=2, offset=41, context=extract_context(headers)):
        handle(record)

Every consumer opens its spans here (the faust stream workers through `michi.bus.streams.consumer_span`, the
plain consumers in `michi.kit.consumer.ConsumerLoop`), so each span of every service has one name,
`<topic> <operation>`, and the same OTel messaging attributes. The trace context travels in the `traceparent`
header (`michi.bus.headers`); the producer's `publish` span is `michi.bus.producer`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import trace

from michi.bus.headers import extract_context

tracer = trace.get_tracer("michi.bus")


def _messaging_attributes(
    service: str, topic: str, operation: str, *, partition: int | None = None, offset: int | None = None
) -> dict[str, str | int]:
    """The OTel messaging attributes every consumer span of the bus carries (the record's partition and offset
    when it has one at hand)."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.consumer.group.name": f"michi-{service}",
    }
    if partition is not None and offset is not None:
        attributes["messaging.kafka.destination.partition"] = partition
        attributes["messaging.kafka.message.offset"] = offset
    return attributes


def consumer_span(
    service: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    context: otel_context.Context,
    operation: str = "process",
) -> AbstractContextManager[trace.Span]:
    """A CONSUMER span (current while it is open) whose parent is the span in `context`: the record's producer."""
    return tracer.start_as_current_span(
        f"{topic} {operation}",
        context=context,
        kind=trace.SpanKind.CONSUMER,
        attributes=_messaging_attributes(service, topic, operation, partition=partition, offset=offset),
    )


def consumer_batch_span(
    service: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    context: otel_context.Context,
    records: int,
    links: Sequence[trace.Link] = (),
    operation: str = "process",
) -> trace.Span:
    """A started CONSUMER span (not current; the caller ends it) for the `records` records of one trace that a
    batch consumer handles together: its parent the first record's producer (`context`, its partition and
    offset in the attributes), links to the others' producers. The same name and attributes as `consumer_span`,
    and `messaging.batch.message_count`."""
    return tracer.start_span(
        f"{topic} {operation}",
        context=context,
        kind=trace.SpanKind.CONSUMER,
        links=links,
        attributes={
            **_messaging_attributes(service, topic, operation, partition=partition, offset=offset),
            "messaging.batch.message_count": records,
        },
    )


def resumed_span(traceparent: str, topic: str, service: str, operation: str) -> AbstractContextManager[object]:
    """A CONSUMER span (current while it is open) that takes up again, later, a record handled earlier: its
    parent the span `traceparent` names (the record's producer, kept with the record), a link to the span
    current now (what prompted it). Without a traceparent, nothing: the work stays in the current span.

    Inference re-runs an upload it held in hindsight this way, so what that yields is in the upload's own trace.
    """
    if not traceparent:
        return nullcontext()
    current = trace.get_current_span().get_span_context()
    return tracer.start_as_current_span(
        f"{topic} {operation}",
        context=extract_context({"traceparent": traceparent}),
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(current)] if current.is_valid else [],
        attributes=_messaging_attributes(service, topic, operation),
    )


__all__ = ["consumer_batch_span", "consumer_span", "resumed_span"]
