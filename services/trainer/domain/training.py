"""Reproducible training of `RiskNet`: same code, data and parameters ⇒ the same weights, bit for bit.

What makes it reproducible on CPU: every random draw (weight initialisation, the order of
batches) comes from generators seeded by `parameters.seed` inside `torch.random.fork_rng`;
`torch.use_deterministic_algorithms(True)`; the intra-op thread count is pinned to
`parameters.threads` (reductions split differently across threads round differently); the
dataset's rows arrive sorted by window id. The process-wide torch settings are restored afterwards.

Class imbalance: the cross-entropy weighs each class by (N / (K * n_class)) ** `class_weight_power`
(0: plain, 1: fully balanced), normalised so the average sample weight is 1. The learning rate
follows a cosine from `learning_rate` to zero over all steps (AdamW with `weight_decay`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from michi.windows.model_spec import CLASS_EVENT_TYPES
from services.trainer.domain.dataset import SPLIT_KEYS, LabeledWindows
from services.trainer.domain.model import RiskNet, normalisation


@dataclass(frozen=True)
class TrainingParameters:
    epochs: int = 12
    batch_size: int = 256
    learning_rate: float = 0.004
    weight_decay: float = 0.0001
    seed: int = 20260101
    threads: int = 1
    channels: int = 24
    hidden: int = 32
    class_weight_power: float = 0.5
    split_by: str = "trip"
    test_percent: int = 20

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.threads < 1 or self.channels < 1 or self.hidden < 1:
            raise ValueError("epochs must be >= 0; batch_size, threads, channels and hidden >= 1")
        if self.learning_rate <= 0 or self.weight_decay < 0 or not 0 <= self.class_weight_power <= 1:
            raise ValueError("learning_rate must be > 0, weight_decay >= 0, class_weight_power in [0, 1]")
        if self.split_by not in SPLIT_KEYS or not 0 < self.test_percent < 100:
            raise ValueError(f"split_by must be one of {', '.join(SPLIT_KEYS)}; test_percent in 1..99")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingParameters:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training parameters: {', '.join(sorted(unknown))}")
        return cls(**data)

    def with_overrides(self, **overrides: Any) -> TrainingParameters:
        return TrainingParameters.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class TrainingResult:
    model: RiskNet
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    class_weights: list[float] = field(default_factory=list)
    steps: int = 0


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    classes = len(CLASS_EVENT_TYPES)
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    total = max(float(counts.sum()), 1.0)
    weights = np.where(counts > 0, (total / (classes * np.maximum(counts, 1.0))) ** power, 0.0)
    mean_sample_weight = float((weights * counts).sum()) / total
    return weights / mean_sample_weight if mean_sample_weight > 0 else np.ones(classes)


def train_model(windows: LabeledWindows, parameters: TrainingParameters) -> TrainingResult:
    """Train on every row of `windows` (the caller passes the training split)."""
    began = time.perf_counter()
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(parameters.threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(parameters.seed)
            result = _train(windows, parameters)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
    result.seconds = time.perf_counter() - began
    return result


def _train(windows: LabeledWindows, parameters: TrainingParameters) -> TrainingResult:
    model = RiskNet(
        **normalisation(windows.features, windows.signals), channels=parameters.channels, hidden=parameters.hidden
    )
    weights = class_weights(windows.labels, parameters.class_weight_power)
    result = TrainingResult(model=model, class_weights=[float(weight) for weight in weights])
    count = windows.count
    if count == 0 or parameters.epochs == 0:
        model.eval()
        return result
    features = torch.from_numpy(np.ascontiguousarray(windows.features, dtype=np.float32))
    signals = torch.from_numpy(np.ascontiguousarray(windows.signals, dtype=np.float32))
    labels = torch.from_numpy(windows.labels.astype(np.int64))
    loss_function = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=parameters.learning_rate, weight_decay=parameters.weight_decay)
    batches_per_epoch = math.ceil(count / parameters.batch_size)
    total_steps = parameters.epochs * batches_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    order_generator = torch.Generator().manual_seed(parameters.seed)
    model.train()
    for _ in range(parameters.epochs):
        order = torch.randperm(count, generator=order_generator)
        epoch_loss = 0.0
        for first in range(0, count, parameters.batch_size):
            rows = order[first : first + parameters.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model.logits(features[rows], signals[rows]), labels[rows])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            scheduler.step()
            epoch_loss += float(loss.detach()) * int(rows.numel())
            result.steps += 1
        result.epoch_losses.append(epoch_loss / count)
    model.eval()
    return result


def predict_with_torch(model: RiskNet, features: np.ndarray, signals: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Probabilities from the PyTorch model (eager), in batches."""
    outputs = []
    with torch.inference_mode():
        for first in range(0, features.shape[0], batch):
            outputs.append(
                model(
                    torch.from_numpy(np.ascontiguousarray(features[first : first + batch], dtype=np.float32)),
                    torch.from_numpy(np.ascontiguousarray(signals[first : first + batch], dtype=np.float32)),
                ).numpy()
            )
    if not outputs:
        return np.zeros((0, len(CLASS_EVENT_TYPES)), dtype=np.float32)
    return np.concatenate(outputs)
