"""Prometheus metrics of the rollout controller (one registry per process, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from michi.rollouts.bandit import BanditDecision
from michi.telemetry.metrics import service_registry
from services.rollouts.domain.figures import ArmCounts

ARM_LABELS = ["model", "arm", "model_version"]


class RolloutsMetrics:
    def __init__(self) -> None:
        self.registry = registry = service_registry()
        self.watched_rollouts = Gauge(
            "michi_rollouts_watched",
            "Running or paused rollouts the controller drives (canaries by steps, A/B tests)",
            ["strategy"],
            registry=registry,
        )
        self.decisions = Counter(
            "michi_rollouts_decisions_total",
            "Rollout decisions the controller carried out through the registry",
            ["action"],
            registry=registry,
        )
        self.refusals = Counter(
            "michi_rollouts_refusals_total",
            "Rollout decisions the registry refused (no longer applicable)",
            ["action"],
            registry=registry,
        )
        self.qa_records = Counter(
            "michi_rollouts_qa_records_total",
            "Random-QA label requests (prediction) and labels (label) kept",
            ["side"],
            registry=registry,
        )
        self.skipped = Counter(
            "michi_rollouts_labels_skipped_total",
            "Label requests and labels that are not random-QA outcomes",
            ["reason"],
            registry=registry,
        )
        self.arm_requested = Gauge(
            "michi_rollouts_arm_qa_windows",
            "Random-QA windows the arm served since its rollout started",
            ARM_LABELS,
            registry=registry,
        )
        self.arm_labelled = Gauge(
            "michi_rollouts_arm_labelled_windows",
            "Random-QA windows of the arm labelled since its rollout started",
            ARM_LABELS,
            registry=registry,
        )
        self.arm_correct = Gauge(
            "michi_rollouts_arm_correct_windows",
            "Labelled random-QA windows the arm called as people did",
            ARM_LABELS,
            registry=registry,
        )
        self.bandit_share = Gauge(
            "michi_rollouts_bandit_share",
            "Share of devices a bandit's last look allocates to the arm (published when it moved enough)",
            ARM_LABELS,
            registry=registry,
        )
        self.bandit_probability_best = Gauge(
            "michi_rollouts_bandit_probability_best",
            "Probability that the arm is the best under the bandit's posteriors",
            ARM_LABELS,
            registry=registry,
        )
        self.bandit_posterior_mean = Gauge(
            "michi_rollouts_bandit_posterior_mean",
            "Mean of the arm's Beta posterior of label agreement",
            ARM_LABELS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "michi_rollouts_dead_letters_total", "Messages sent to dead letters", registry=registry
        )
        self.awaiting = Gauge(
            "michi_rollouts_awaiting_promotion",
            "1 while the model's rollout would promote and the policy leaves the promotion to a person",
            ["model"],
            registry=registry,
        )
        self.signal_records = Counter(
            "michi_rollouts_signals_total",
            "Arm signals handed to the store (segment, detection, label, error, drift; redeliveries included)",
            ["kind"],
            registry=registry,
        )

    # --- ControllerReports

    def label_skipped(self, reason: str) -> None:
        self.skipped.labels(reason).inc()

    def recorded(self, side: str, count: int = 1) -> None:
        self.qa_records.labels(side).inc(count)

    def watched(self, counts: dict[str, int]) -> None:
        for strategy, count in counts.items():
            self.watched_rollouts.labels(strategy).set(count)

    def decision(self, action: str) -> None:
        self.decisions.labels(action).inc()

    def refused(self, action: str) -> None:
        self.refusals.labels(action).inc()

    def arm(self, model_name: str, arm: str, version: str, counts: ArmCounts) -> None:
        self.arm_requested.labels(model_name, arm, version).set(counts.requested)
        self.arm_labelled.labels(model_name, arm, version).set(counts.labelled)
        self.arm_correct.labels(model_name, arm, version).set(counts.correct)

    def bandit(self, model_name: str, roles: dict[str, str], decision: BanditDecision) -> None:
        for version, role in roles.items():
            self.bandit_share.labels(model_name, role, version).set(decision.shares[version])
            self.bandit_probability_best.labels(model_name, role, version).set(decision.probability_best[version])
            self.bandit_posterior_mean.labels(model_name, role, version).set(decision.posteriors[version].mean)

    def signals(self, kind: str, count: int) -> None:
        self.signal_records.labels(kind).inc(count)

    def awaiting_promotion(self, model_name: str, awaiting: bool) -> None:
        self.awaiting.labels(model_name).set(1 if awaiting else 0)
