"""Michi's wire contracts for consumers: the generated protobuf classes and the topic catalog.

    from michi_contracts import catalog, topic_for_name
    from michi_contracts.v1 import scoring_pb2

    score = catalog.TRIP_SCORES.decode(record.value())    # a scoring_pb2.TripScore
    topic_for_name("michi.driver-scores.v1").key           # "driver_id"

`michi_contracts.v1` is generated from Michi's `proto/michi/v1/*.proto` and `michi_contracts.catalog`
from its topic catalog (`tools/generate_contracts.py`); both change only additively within `v1`.
See Michi's docs/consumers.md.
"""

from __future__ import annotations

from importlib import metadata

from michi_contracts.catalog import CATALOG
from michi_contracts.spec import CONTENT_TYPE, DEFAULT_PREFIX, TopicSpec

__all__ = ["CATALOG", "CONTENT_TYPE", "DEFAULT_PREFIX", "TopicSpec", "topic_for_name", "topic_for_schema"]

try:
    __version__ = metadata.version("michi-contracts")
except metadata.PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"


def topic_for_name(name: str, prefix: str = DEFAULT_PREFIX) -> TopicSpec:
    """The catalog entry of a topic by its full name (`michi.trip-scores.v1`); KeyError when there is none."""
    for spec in CATALOG:
        if spec.name(prefix) == name:
            return spec
    raise KeyError(f"{name} is not a topic of the catalog (prefix {prefix!r})")


def topic_for_schema(schema: str) -> TopicSpec | None:
    """The catalog entry whose values are `schema` (the `schema` header, e.g. `michi.v1.TripScore`)."""
    return next((spec for spec in CATALOG if spec.schema == schema), None)
