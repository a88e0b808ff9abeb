"""Where a registered model's files live in the blob store, and what the reference profile file is.

    models/<model name>/<version>/model.onnx               the graph inference serves
    models/<model name>/<version>/model.json               its lineage and training record
    models/<model name>/<version>/reference_profile.json   per-input histograms the monitor compares with

The trainer writes these files (`services/trainer/adapters/artifacts.py`, `domain/profile.py`); the monitor
reads the profile (`services/monitor/adapters/profiles.py`). One definition, so both agree.
"""

from __future__ import annotations

REFERENCE_PROFILE_FILE = "reference_profile.json"
# The profile the trainer writes now: 1,000 equal-width bins per input between its minimum and maximum.
# Older models carry "reference-profile-1" (20 bins between the 0.5 % and 99.5 % quantiles).
REFERENCE_PROFILE_VERSION = "reference-profile-2"


def model_folder(model_name: str, version: str) -> str:
    """The blob-store folder of one model version."""
    return f"models/{model_name}/{version}"


def reference_profile_key(model_name: str, version: str) -> str:
    return f"{model_folder(model_name, version)}/{REFERENCE_PROFILE_FILE}"
