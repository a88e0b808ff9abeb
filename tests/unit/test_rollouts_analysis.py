"""Canary analysis verdicts (`michi/rollouts/analysis.py`): PASS, FAIL, INCONCLUSIVE, and too little data never passing."""

from __future__ import annotations

import pytest

from michi.rollouts.analysis import AnalysisSpec, ArmFigures, Outcome, evaluate, parse_condition

ANALYSIS = AnalysisSpec(
    success=tuple(
        parse_condition(text)
        for text in (
            "agreement_with_labels >= champion - 0.02",
            "false_alerts_per_1000_km <= champion * 1.2",
            "errors_per_1000 <= 1",
            "latency_p99_ms <= 200",
            "drift_alerts == 0",
            "errors_per_1000_uploads <= 2",
            "detections_per_1000_km <= champion * 2",
        )
    ),
    failure=tuple(
        parse_condition(text)
        for text in (
            "agreement_with_labels < champion - 0.04",
            "false_alerts_per_1000_km > champion * 1.5",
            "errors_per_1000 > 5",
            "latency_p99_ms > 400",
            "drift_alerts > 0",
        )
    ),
    minimum_predictions=1000,
    minimum_labelled_windows=200,
    minimum_km=100.0,
    minimum_uploads=500,
)

CHAMPION = ArmFigures(
    predictions=20_000,
    labelled_windows=1000,
    correct=900,
    false_alerts=20,
    km=2000.0,
    errors=2,
    latency_p99_ms=120.0,
    uploads=8000,
    detections=200,
)
HEALTHY = ArmFigures(
    predictions=5000,
    labelled_windows=250,
    correct=224,
    false_alerts=5,
    km=500.0,
    errors=1,
    latency_p99_ms=130.0,
    uploads=2000,
    detections=60,
)


def figures(**changes: float | int | None) -> ArmFigures:
    values = {**HEALTHY.__dict__, **changes}
    return ArmFigures(**values)  # type: ignore[arg-type]


def test_a_healthy_candidate_passes_and_says_why() -> None:
    verdict = evaluate(ANALYSIS, candidate=HEALTHY, champion=CHAMPION)
    assert verdict.outcome is Outcome.PASS
    assert len(verdict.reasons) == 7
    assert "met: agreement_with_labels >= champion - 0.02: candidate 0.896 vs threshold 0.88 (champion 0.9)" in (
        verdict.reasons
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"correct": 212}, "failed: agreement_with_labels < champion - 0.04: candidate 0.848"),  # 5 points lower
        ({"false_alerts": 10}, "failed: false_alerts_per_1000_km > champion * 1.5: candidate 20"),  # double the rate
        ({"errors": 30}, "failed: errors_per_1000 > 5: candidate 6"),
        ({"latency_p99_ms": 450.0}, "failed: latency_p99_ms > 400"),
        ({"drift_alerts": 1}, "failed: drift_alerts > 0: candidate 1"),
    ],
)
def test_a_regression_fails_with_its_reason(changes: dict[str, float], reason: str) -> None:
    verdict = evaluate(ANALYSIS, candidate=figures(**changes), champion=CHAMPION)
    assert verdict.outcome is Outcome.FAIL
    assert any(line.startswith(reason) for line in verdict.reasons), verdict.reasons


def test_a_failure_needs_only_its_own_figures() -> None:
    # Errors on every window: failed before a single label came back.
    crashing = ArmFigures(predictions=2000, errors=2000)
    verdict = evaluate(ANALYSIS, candidate=crashing, champion=CHAMPION)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons == ("failed: errors_per_1000 > 5: candidate 1000 vs threshold 5",)


@pytest.mark.parametrize(
    ("candidate", "champion", "reason"),
    [
        (ArmFigures(), CHAMPION, "too little data: candidate has 0 of 1000 predictions"),
        (figures(labelled_windows=0, correct=0), CHAMPION, "too little data: candidate has 0 of 200 labelled windows"),
        (figures(labelled_windows=199, correct=180), CHAMPION, "no verdict: agreement_with_labels >= champion - 0.02"),
        (figures(km=99.0), CHAMPION, "no verdict: false_alerts_per_1000_km <= champion * 1.2: too little data on the"),
        (HEALTHY, ArmFigures(), "too little data on the champion for agreement_with_labels"),
        (figures(latency_p99_ms=None), CHAMPION, "no verdict: latency_p99_ms <= 200"),
        (figures(correct=216), CHAMPION, "not met: agreement_with_labels >= champion - 0.02: candidate 0.864"),
        (figures(errors=5), CHAMPION, "not met: errors_per_1000_uploads <= 2: candidate 2.5"),
        (figures(detections=120), CHAMPION, "not met: detections_per_1000_km <= champion * 2: candidate 240"),
        (figures(uploads=499), CHAMPION, "no verdict: latency_p99_ms <= 200: too little data on the candidate"),
    ],
    ids=[
        "no-traffic",
        "no-labels",
        "labels-below-minimum",
        "km-below-minimum",
        "champion-without-data",
        "no-latency",
        "between-success-and-failure",
        "errors-per-upload-not-met",
        "detections-per-km-not-met",
        "uploads-below-minimum",
    ],
)
def test_too_little_data_or_a_grey_zone_is_inconclusive(
    candidate: ArmFigures, champion: ArmFigures, reason: str
) -> None:
    verdict = evaluate(ANALYSIS, candidate=candidate, champion=champion)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert any(line.startswith(reason) or reason in line for line in verdict.reasons), verdict.reasons


def test_without_failure_conditions_a_success_condition_not_holding_fails_but_little_data_never_does() -> None:
    analysis = AnalysisSpec(
        success=(parse_condition("agreement_with_labels >= champion - 0.02"), parse_condition("predictions >= 10000")),
        minimum_predictions=100,
        minimum_labelled_windows=100,
    )
    worse = evaluate(analysis, candidate=figures(correct=215), champion=CHAMPION)
    assert worse.outcome is Outcome.FAIL
    assert worse.reasons[0].startswith("failed: agreement_with_labels < champion - 0.02")
    # 5,000 predictions of the 10,000 asked: wait for more, never fail for it.
    enough_quality = evaluate(analysis, candidate=HEALTHY, champion=CHAMPION)
    assert enough_quality.outcome is Outcome.INCONCLUSIVE
    assert any(line.startswith("not met: predictions >= 10000") for line in enough_quality.reasons)


def test_a_lenient_analysis_still_never_passes_without_traffic() -> None:
    lenient = AnalysisSpec(
        success=(parse_condition("drift_alerts == 0"),), minimum_predictions=1, minimum_labelled_windows=1
    )
    assert evaluate(lenient, candidate=ArmFigures(), champion=ArmFigures()).outcome is Outcome.INCONCLUSIVE
    only_predictions = ArmFigures(predictions=10)
    assert evaluate(lenient, candidate=only_predictions, champion=ArmFigures()).outcome is Outcome.INCONCLUSIVE
    # Drift is read once the arm served `minimum_uploads` uploads (500 by default): not before.
    some = ArmFigures(predictions=10, labelled_windows=1, correct=1)
    assert evaluate(lenient, candidate=some, champion=ArmFigures()).outcome is Outcome.INCONCLUSIVE
    served = ArmFigures(predictions=10, labelled_windows=1, correct=1, uploads=500)
    assert evaluate(lenient, candidate=served, champion=ArmFigures()).outcome is Outcome.PASS


def test_an_analysis_that_reads_no_labels_passes_on_traffic_before_any_label_and_never_without_traffic() -> None:
    # errors per upload, latency, drift and detections per km: measured from the fleet's uploads, not from people.
    unlabelled = AnalysisSpec(
        success=tuple(
            parse_condition(text)
            for text in (
                "errors_per_1000_uploads <= 2",
                "latency_p99_ms <= champion * 3",
                "drift_alerts == 0",
                "detections_per_1000_km <= champion + 100",
            )
        ),
        minimum_km=10.0,
        minimum_uploads=50,
    )
    traffic = ArmFigures(km=20.0, uploads=100, detections=1, latency_p99_ms=150.0)
    assert evaluate(unlabelled, candidate=traffic, champion=CHAMPION).outcome is Outcome.PASS
    assert evaluate(unlabelled, candidate=ArmFigures(), champion=CHAMPION).outcome is Outcome.INCONCLUSIVE
    little = ArmFigures(km=20.0, uploads=49, latency_p99_ms=150.0)
    assert evaluate(unlabelled, candidate=little, champion=CHAMPION).outcome is Outcome.INCONCLUSIVE
    # Reading one label-based figure brings the random-QA minimums back.
    labelled = AnalysisSpec(
        success=(*unlabelled.success, parse_condition("agreement_with_labels >= champion - 0.02")),
        minimum_km=10.0,
        minimum_uploads=50,
    )
    verdict = evaluate(labelled, candidate=traffic, champion=CHAMPION)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "too little data: candidate has 0 of 1000 predictions" in verdict.reasons


def test_without_failure_conditions_a_drift_episode_fails() -> None:
    analysis = AnalysisSpec(
        success=(parse_condition("drift_alerts == 0"),), minimum_predictions=1, minimum_labelled_windows=1
    )
    drifting = ArmFigures(predictions=10, labelled_windows=1, correct=1, uploads=500, drift_alerts=1)
    verdict = evaluate(analysis, candidate=drifting, champion=ArmFigures())
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons == ("failed: drift_alerts != 0: candidate 1 vs threshold 0",)


def test_figures_are_checked() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        ArmFigures(predictions=-1)
    with pytest.raises(ValueError, match="correct of"):
        ArmFigures(labelled_windows=3, correct=4)
    with pytest.raises(KeyError):
        ArmFigures().metric("accuracy")
