"""When the trainer starts a run by itself: enough new labels, the schedule, or a retrain alert.

- labels: at least `label_count` new human labels (consensus, gold, adjudication) were stored since
  the last run started (0 turns it off);
- schedule: `interval_s` seconds passed since the last run started, or since the service started
  when there was none (0 turns it off);
- alert: an `Alert` of kind "retrain" arrived (each alert event id triggers at most once).

A run asked for by a person (`michi train`, `POST /v1/runs`) is a "manual" trigger; the first model
trained from simulator ground truth is a "bootstrap".
"""

from __future__ import annotations

from dataclasses import dataclass

LABELS, SCHEDULE, ALERT, MANUAL, BOOTSTRAP = "labels", "schedule", "alert", "manual", "bootstrap"
RETRAIN_ALERT_KIND = "retrain"


@dataclass(frozen=True)
class TriggerPolicy:
    label_count: int = 100
    interval_s: float = 7 * 86_400.0


@dataclass(frozen=True)
class Trigger:
    kind: str
    reason: str
    # The alert's event id for an alert trigger (recorded so a redelivered alert does not retrain twice).
    alert_event_id: str | None = None
    # The run id to use, when the requester was told it in advance (`POST /v1/runs`).
    run_id: str | None = None
    # W3C traceparent of where the trigger came from (the alert's consumer span): the run's span links to it.
    traceparent: str = ""


@dataclass(frozen=True)
class TriggerState:
    new_labels: int
    last_run_started_at: float | None
    service_started_at: float
    pending_alert: Trigger | None = None


def due_trigger(policy: TriggerPolicy, state: TriggerState, now: float) -> Trigger | None:
    """The trigger that fires now, or None (an alert first, then labels, then the schedule)."""
    if state.pending_alert is not None:
        return state.pending_alert
    if policy.label_count > 0 and state.new_labels >= policy.label_count:
        return Trigger(LABELS, f"{state.new_labels} new labels since the last run (threshold {policy.label_count})")
    if policy.interval_s > 0:
        since = state.last_run_started_at if state.last_run_started_at is not None else state.service_started_at
        if now - since >= policy.interval_s:
            return Trigger(SCHEDULE, f"{now - since:.0f} s since the last run (interval {policy.interval_s:.0f} s)")
    return None
