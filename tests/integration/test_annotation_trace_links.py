"""A label is the trace of the person's answer, linked to the trace of the upload its task came from.

The annotation service runs as in production (uvicorn, its Kafka consumer) against the session's broker,
redis-server and a SQLite file, with the spans recorded in this process. A label request is published
inside an upload's span (as inference publishes it, in the upload's trace); annotation makes a task of it in
its consumer span and keeps that span's trace context with the task; two annotators answer over HTTP. The
consensus label is published in a `publish label` span of the second answer's request trace, with a link to
the span that made the task, and the `Label` record on Kafka carries the answer's trace, not the upload's.

    .venv/bin/pytest -q tests/integration/test_annotation_trace_links.py
"""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry import trace

from michi.bus.catalog import LABEL_REQUESTS, LABELS
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.contracts.v1 import labels_pb2
from michi.infra.processes import wait_until
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.domain.roles import Role
from services.annotation.wiring import build_app

from ..tracing_support import recorded_spans
from .annotation_support import make_request, serving, settings_for, wire

PASSWORD = "a long enough password"


def test_a_label_is_the_answer_s_trace_linked_to_the_upload_s(
    tmp_path: Path, redis_url: str, kafka_bootstrap: str, topic_prefix: str, producer: EventProducer
) -> None:
    settings = settings_for(
        tmp_path, redis_url, topic_prefix=topic_prefix, kafka_bootstrap=kafka_bootstrap, annotation_consume=True
    )
    request = make_request("window-traced")
    # Recording before the app is built: its request spans go to the SDK provider too.
    with recorded_spans() as spans:
        wiring = wire(settings, publisher=KafkaLabelPublisher(producer))
        for name in ("ann-1", "ann-2"):
            wiring.accounts.add(name, Role.ANNOTATOR, actor="test", password=PASSWORD)
        with trace.get_tracer("test").start_as_current_span("uploads.v1 process") as upload:
            producer.publish(LABEL_REQUESTS, request.lineage.window_id, request).result(30)
        upload_trace = upload.get_span_context().trace_id

        with (
            serving(build_app(settings, producer=producer, wiring=wiring)) as url,
            httpx.Client(base_url=url, timeout=10) as client,
        ):
            tokens = [
                client.post("/v1/sessions", json={"name": name, "password": PASSWORD}).json()["token"]
                for name in ("ann-1", "ann-2")
            ]
            first = {"Authorization": f"Bearer {tokens[0]}"}
            assert wait_until(lambda: client.get("/v1/queues", headers=first).json() != [], 60, 0.1), "no task"
            for token in tokens:
                headers = {"Authorization": f"Bearer {token}"}
                task = client.post("/v1/queues/uncertain/leases", headers=headers).json()
                vote = client.post(
                    f"/v1/tasks/{task['task_id']}/votes",
                    json={"lease_id": task["lease_id"], "answer": "harsh-braking"},
                    headers=headers,
                )
                assert vote.json()["recorded_as"] == "counted"
            with TopicReader(kafka_bootstrap, LABELS, topic_prefix) as reader:
                [record] = reader.read_until(lambda got: len(got) >= 1, 30)
        finished = list(spans)

    assert isinstance(record.message, labels_pb2.Label) and record.message.lineage.window_id == "window-traced"
    by_id = {span.context.span_id: span for span in finished if span.context is not None}
    # The task was made in annotation's consumer span, in the upload's trace.
    [made] = [span for span in finished if span.name == f"{topic_prefix}label-requests.v1 process"]
    assert made.context is not None and made.context.trace_id == upload_trace
    # The label went out in the second answer's trace, linked to the span that made its task.
    [published] = [span for span in finished if span.name == "publish label"]
    assert published.context is not None and published.context.trace_id != upload_trace
    assert [(link.context.trace_id, link.context.span_id) for link in published.links] == [
        (upload_trace, made.context.span_id)
    ]
    assert dict(published.attributes or {}) == {
        "michi.annotation.task_id": "window-traced",
        "michi.annotation.label_event_id": record.message.event_id,
        "michi.annotation.label_source": "LABEL_SOURCE_CONSENSUS",
    }
    ancestors = []
    parent = published.parent
    while parent is not None and parent.span_id in by_id:
        ancestors.append(by_id[parent.span_id])
        parent = ancestors[-1].parent
    assert ancestors and ancestors[-1].kind == trace.SpanKind.SERVER and "votes" in ancestors[-1].name
    # No span of the label's trace names the upload: `michi trace <upload>` (which gathers the traces whose
    # spans name it) shows the upload's trace alone, as before.
    naming_the_upload = {
        span.context.trace_id
        for span in finished
        if span.context is not None
        and request.lineage.upload_id in {str(value) for value in (span.attributes or {}).values()}
    }
    assert published.context.trace_id not in naming_the_upload
    # The record carries the label's own trace: its producer span, a child of the `publish label` span.
    [producer_span] = [span for span in finished if span.name == f"{topic_prefix}labels.v1 publish"]
    assert producer_span.parent is not None and producer_span.parent.span_id == published.context.span_id
    assert producer_span.context is not None
    _, trace_id, span_id, _ = record.headers["traceparent"].split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (producer_span.context.trace_id, producer_span.context.span_id)
