"""The learned risk model: a small 1D-CNN over the window's signals, joined with its summary features.

    probabilities = RiskNet(...)(features [N, 23], signals [N, 6, 50])     # [N, 5] softmax

Input normalisation is part of the model: the training set's mean and standard deviation of every
feature and of every signal channel are constants inside it (buffers exported into the ONNX graph),
and normalised values are clipped to ±`CLIP`, so serving feeds raw windows exactly as
`michi.windows.features.extract_windows` computes them.

Architecture: two 1D convolutions (kernel 5, ReLU, max-pool 2 between them) over the 6 signal
channels on the 25 Hz grid, global max and mean pooling over time, concatenated with the 23
normalised summary features (the evidence features the baseline weighs are strong), then a
hidden layer and a linear head to the 5 classes of `CLASS_EVENT_TYPES`, softmax last.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from michi.windows.features import FEATURE_NAMES, SIGNAL_CHANNELS
from michi.windows.model_spec import CLASS_EVENT_TYPES

CLIP = 8.0
KERNEL = 5
MIN_STD = 1e-3


class RiskNet(nn.Module):
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    signal_mean: torch.Tensor
    signal_std: torch.Tensor

    def __init__(
        self,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        signal_mean: np.ndarray,
        signal_std: np.ndarray,
        *,
        channels: int = 24,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.tensor(feature_mean, dtype=torch.float32).reshape(1, -1))
        self.register_buffer(
            "feature_std", torch.tensor(np.maximum(feature_std, MIN_STD), dtype=torch.float32).reshape(1, -1)
        )
        self.register_buffer("signal_mean", torch.tensor(signal_mean, dtype=torch.float32).reshape(1, -1, 1))
        self.register_buffer(
            "signal_std", torch.tensor(np.maximum(signal_std, MIN_STD), dtype=torch.float32).reshape(1, -1, 1)
        )
        signal_channels = len(SIGNAL_CHANNELS)
        self.convolutions = nn.Sequential(
            nn.Conv1d(signal_channels, channels, KERNEL, padding=KERNEL // 2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, KERNEL, padding=KERNEL // 2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * channels + len(FEATURE_NAMES), hidden),
            nn.ReLU(),
            nn.Linear(hidden, len(CLASS_EVENT_TYPES)),
        )

    def logits(self, features: torch.Tensor, signals: torch.Tensor) -> torch.Tensor:
        normalised_features = torch.clamp((features - self.feature_mean) / self.feature_std, -CLIP, CLIP)
        normalised_signals = torch.clamp((signals - self.signal_mean) / self.signal_std, -CLIP, CLIP)
        maps = self.convolutions(normalised_signals)
        pooled = torch.cat([maps.amax(dim=2), maps.mean(dim=2)], dim=1)
        result: torch.Tensor = self.head(torch.cat([pooled, normalised_features], dim=1))
        return result

    def forward(self, features: torch.Tensor, signals: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features, signals), dim=1)


def normalisation(features: np.ndarray, signals: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and standard deviation of the training windows (float64 sums: stable and order-independent enough)."""
    if features.shape[0] == 0:
        return {
            "feature_mean": np.zeros(len(FEATURE_NAMES)),
            "feature_std": np.ones(len(FEATURE_NAMES)),
            "signal_mean": np.zeros(len(SIGNAL_CHANNELS)),
            "signal_std": np.ones(len(SIGNAL_CHANNELS)),
        }
    as64 = features.astype(np.float64)
    per_channel = signals.astype(np.float64).transpose(1, 0, 2).reshape(len(SIGNAL_CHANNELS), -1)
    return {
        "feature_mean": as64.mean(axis=0),
        "feature_std": as64.std(axis=0),
        "signal_mean": per_channel.mean(axis=1),
        "signal_std": per_channel.std(axis=1),
    }
