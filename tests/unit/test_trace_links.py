"""Work that outlives its message keeps the trace it came from, and the span that finishes it links back.

- `michi.bus.headers.current_traceparent` and `links_to`: the trace context kept with such work, and the
  links made from it;
- a training run is one `trainer run` span with a child span per step that ran, linked to the trace of the
  retrain alert that triggered it (SQLite and a file:// blob store; a run with nothing to train on, so it
  fails fast at the train step).

The label a person gives to a task, linked to the trace of the upload the task came from, needs Redis:
`tests/integration/test_trace_links.py`.

    .venv/bin/pytest -q tests/unit/test_trace_links.py
"""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace

from michi.bus.catalog import ALERTS
from michi.bus.headers import build_headers, current_traceparent, extract_context, links_to, read_headers
from michi.bus.tracing import consumer_span
from services.trainer.domain.triggers import ALERT, MANUAL, RETRAIN_ALERT_KIND, Trigger
from services.trainer.handlers import STEPS, due, run_workflow
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import build_wiring

from ..fakes import RecordingPlanPublisher
from ..tracing_support import recorded_spans, traceparent_of


def test_the_trace_context_kept_with_work_and_the_links_made_from_it() -> None:
    with recorded_spans():
        assert current_traceparent() == ""  # no span: nothing to keep
        with trace.get_tracer("test").start_as_current_span("received") as received:
            kept = current_traceparent()
    assert kept == traceparent_of(received.get_span_context())
    [link] = links_to(kept)
    assert link.context.trace_id == received.get_span_context().trace_id
    assert link.context.span_id == received.get_span_context().span_id
    # Nothing kept, a value that is no traceparent, and a repeat make no (further) link.
    assert [found.context for found in links_to(None, "", "00-not-a-traceparent", kept, kept)] == [link.context]


def _settings(home: Path) -> TrainerSettings:
    return TrainerSettings(
        home=home,
        database_url=f"sqlite:///{home / 'michi.db'}",
        blob_url=f"file://{home / 'blobs'}",
        trainer_cache_dir=home / "cache" / "models",
        # Nothing to train on (no simulated fleet, no labels): the run fails fast at its train step.
        trainer_simulation={"fleets": []},
        trainer_reference_traffic={"fleets": []},
        trainer_parameters={"epochs": 1},
    )


def test_a_training_run_is_a_span_with_its_steps_linked_to_the_alert_that_triggered_it(tmp_path: Path) -> None:
    wiring = build_wiring(_settings(tmp_path / ".michi"), producer=RecordingPlanPublisher())
    try:
        with recorded_spans() as spans:
            # The monitor publishes a retrain alert; the trainer's consumer stores it in its consumer span.
            with trace.get_tracer("test").start_as_current_span("alerts.v1 publish") as published:
                headers = build_headers(ALERTS.schema)
            with consumer_span(
                "trainer", topic="alerts.v1", partition=0, offset=7, context=extract_context(read_headers(headers))
            ) as received:
                assert wiring.store.add_alert("alert-1", RETRAIN_ALERT_KIND, "drift on device-9")
            trigger = due(wiring)
            assert trigger is not None and (trigger.kind, trigger.alert_event_id) == (ALERT, "alert-1")
            outcome = run_workflow(wiring, trigger)
            manual = run_workflow(wiring, Trigger(MANUAL, "by hand"))
    finally:
        wiring.registry.close()
        wiring.store.close()

    assert outcome.status == manual.status == "failed" and outcome.reason.startswith("train failed"), outcome.reason
    run, manual_run = (span for span in spans if span.name == "trainer run")
    assert run.context is not None and received.get_span_context().trace_id == published.get_span_context().trace_id
    # A trace of its own (the worker's), linked to the span the alert was received in.
    assert run.parent is None and run.context.trace_id != published.get_span_context().trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in run.links] == [
        (received.get_span_context().trace_id, received.get_span_context().span_id)
    ]
    assert dict(run.attributes or {}) == {
        "michi.trainer.trigger": "alert",
        "michi.trainer.model_name": wiring.model_name,
        "michi.trainer.run_id": outcome.run_id,
        "michi.trainer.outcome": "failed",
    }
    assert run.status.status_code == trace.StatusCode.ERROR
    # One child span per step that ran, in order; the failed one says so. The skipped ones are events.
    steps = sorted(
        (span for span in spans if span.parent is not None and span.parent.span_id == run.context.span_id),
        key=lambda span: span.start_time or 0,
    )
    assert [span.name for span in steps] == ["trainer fetch", "trainer preprocess", "trainer train"]
    assert [(span.attributes or {}).get("michi.trainer.step_status") for span in steps] == [
        "succeeded",
        "succeeded",
        "failed",
    ]
    assert [span.status.status_code for span in steps] == [
        trace.StatusCode.UNSET,
        trace.StatusCode.UNSET,
        trace.StatusCode.ERROR,
    ]
    assert all(span.context is not None and span.context.trace_id == run.context.trace_id for span in steps)
    skipped = [event.attributes["michi.trainer.step"] for event in run.events if event.name == "step skipped"]  # type: ignore[index]
    assert skipped == list(STEPS[3:])
    # The alert was claimed by the first run; a run asked for by a person links to nothing.
    assert dict(manual_run.attributes or {})["michi.trainer.trigger"] == "manual" and not manual_run.links
    stored = wiring.store.run(outcome.run_id)
    assert stored is not None and [step.name for step in stored.steps][:3] == ["fetch", "preprocess", "train"]
