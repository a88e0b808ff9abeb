"""How many copies of each topic Michi creates: MICHI_KAFKA_REPLICATION_FACTOR, else the cluster's default.

The catalog's topics are created with replication factor -1 (the broker's `default.replication.factor`)
unless the variable sets one; faust's changelogs (scoring's tables) get the same number, read from the
cluster when the variable is unset, never faust's own default of 1. The embedded broker is one node, so
asking it for two copies must fail: that is how the tests see the setting reach the request.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from michi.bus.admin import ensure_topics, replication_factor
from michi.bus.catalog import LABELS
from michi.bus.connection import KafkaConnection
from michi.settings import load_settings
from services.scoring import wiring
from services.scoring.adapters.progress import CommittedProgress
from services.scoring.settings import ScoringSettings


def broker_default(bootstrap: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    controller = admin.describe_cluster().result(10).controller.id
    resource = ConfigResource(ConfigResource.Type.BROKER, str(controller))
    return int(admin.describe_configs([resource])[resource].result(10)["default.replication.factor"].value)


def test_without_the_variable_topics_get_the_clusters_default(kafka_bootstrap: str) -> None:
    assert replication_factor(kafka_bootstrap) == broker_default(kafka_bootstrap) == 1


def test_the_variable_reaches_every_topic_michi_creates(kafka_bootstrap: str) -> None:
    two = KafkaConnection(bootstrap_servers=kafka_bootstrap, replication_factor=2)
    assert replication_factor(two) == 2
    prefix = f"replication-{uuid.uuid4().hex[:8]}."
    # One broker cannot hold two copies: the broker refuses the request, so the number reached it.
    with pytest.raises(KafkaException, match=r"(?i)replication"):
        ensure_topics(two, prefix, [LABELS], timeout=10)
    one = KafkaConnection(bootstrap_servers=kafka_bootstrap, replication_factor=1)
    assert ensure_topics(one, prefix, [LABELS], timeout=10) == [LABELS.name(prefix)]


def test_scorings_changelogs_are_replicated_like_every_other_topic(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICHI_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("MICHI_TOPIC_PREFIX", f"replication-{uuid.uuid4().hex[:8]}.")
    monkeypatch.setenv("MICHI_HOME", str(tmp_path))
    monkeypatch.delenv("MICHI_KAFKA_REPLICATION_FACTOR", raising=False)
    # The app's progress readers, closed at the end (the worker that would close them never starts).
    readers: list[CommittedProgress] = []

    def progress(*arguments: object) -> CommittedProgress:
        readers.append(CommittedProgress(*arguments))  # type: ignore[arg-type]
        return readers[-1]

    monkeypatch.setattr(wiring, "CommittedProgress", progress)
    try:
        settings = load_settings(ScoringSettings)
        app = wiring.build_app(settings, producer=object())  # type: ignore[arg-type]
        assert app.conf.topic_replication_factor == broker_default(kafka_bootstrap)
        monkeypatch.setenv("MICHI_KAFKA_REPLICATION_FACTOR", "3")
        settings = load_settings(ScoringSettings)
        assert settings.kafka_connection().replication_factor == 3
        app = wiring.build_app(settings, producer=object())  # type: ignore[arg-type]
        assert app.conf.topic_replication_factor == 3
    finally:
        for reader in readers:
            reader.close()
