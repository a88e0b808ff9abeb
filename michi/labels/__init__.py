"""What human labels say about the models that served: the shared rules for reading random-QA outcomes.

`outcomes` decides which label requests and labels are random-QA outcomes of a model version (pure functions
over the protobuf messages); the monitor (concept drift) and the rollout controller (per-arm label agreement)
both read them through it, so the two can never disagree on what counts. `qa_windows` keeps such a window in
SQL the same way for both (`upsert_qa_window`: one row per window and model version, the first label counts).
"""

from michi.labels.outcomes import (
    INCOMPLETE,
    NOT_RANDOM,
    REASONS_UNKNOWN,
    QaLabel,
    QaPrediction,
    Skipped,
    qa_label,
    qa_prediction,
)

__all__ = [
    "INCOMPLETE",
    "NOT_RANDOM",
    "REASONS_UNKNOWN",
    "QaLabel",
    "QaPrediction",
    "Skipped",
    "qa_label",
    "qa_prediction",
]
