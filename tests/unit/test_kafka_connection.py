"""One typed Kafka connection (`michi.bus.connection.KafkaConnection`) reaches every Kafka client, secret kept.

No SASL/TLS broker runs here: the confluent-kafka constructors of every module are swapped for ones that
record their configuration (nothing connects), the faust app's settings are read from the app object,
and a source scan holds every client of michi/, services/ and benchmarks/ to the connection. One real
confluent-kafka client is built from the SASL_SSL configuration to prove librdkafka takes its names.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from michi.bus.connection import KafkaConnection, as_connection
from michi.settings import MichiSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Zq8-never-printed"
SERVERS = "broker-1.example:9096,broker-2.example:9096"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM), standing in for the CA and the client certificate."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=michi-test"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def secure_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, certificate: tuple[Path, Path]) -> Path:
    cert, key = certificate
    for name, value in {
        "MICHI_HOME": str(tmp_path / "home"),
        "MICHI_KAFKA_BOOTSTRAP": SERVERS,
        "MICHI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MICHI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "MICHI_KAFKA_SASL_USERNAME": "michi-svc",
        "MICHI_KAFKA_SASL_PASSWORD": PASSWORD,
        "MICHI_KAFKA_SSL_CA_FILE": str(cert),
        "MICHI_KAFKA_SSL_CERT_FILE": str(cert),
        "MICHI_KAFKA_SSL_KEY_FILE": str(key),
        "MICHI_DATABASE_URL": f"sqlite:///{tmp_path / 'michi.db'}",
        "MICHI_BLOB_URL": f"file://{tmp_path / 'blobs'}",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


# --- recording stand-ins for confluent-kafka's clients


class _Topics(dict[str, Any]):
    """Metadata that knows every topic asked about (two partitions each)."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> Any:
        return SimpleNamespace(partitions={0: None, 1: None}, error=None)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name]


class _Done:
    def result(self, timeout: float | None = None) -> Any:
        return SimpleNamespace(topic_partitions=[])


class Recorded:
    """The configurations given to each kind of client, in order."""

    def __init__(self) -> None:
        self.configs: list[tuple[str, dict[str, Any]]] = []

    def since(self, start: int) -> list[tuple[str, dict[str, Any]]]:
        return self.configs[start:]


def _client(kind: str, recorded: Recorded) -> type:
    class Client:
        def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
            recorded.configs.append((kind, dict(config)))

        def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
            return SimpleNamespace(topics=_Topics(), brokers={1: None})

        def create_topics(self, topics: list[Any], **kwargs: Any) -> dict[str, _Done]:
            return {topic.topic: _Done() for topic in topics}

        def delete_topics(self, names: list[str], **kwargs: Any) -> dict[str, _Done]:
            return {name: _Done() for name in names}

        def list_consumer_group_offsets(self, requests: list[Any], **kwargs: Any) -> dict[str, _Done]:
            return {request.group_id: _Done() for request in requests}

        def committed(self, partitions: list[Any], timeout: float = -1) -> list[Any]:
            return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=0) for tp in partitions]

        def get_watermark_offsets(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
            return (0, 0)

        def poll(self, timeout: float = 0) -> int:
            # Waits like a client with nothing to serve: a producer's delivery thread (which a test may leave
            # running) must not spin and starve every later test of the GIL.
            time.sleep(max(timeout, 0.0))
            return 0

        def flush(self, timeout: float = 0) -> int:
            return 0

        def __len__(self) -> int:
            return 0

        def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

        def subscribe(self, *args: Any, **kwargs: Any) -> None: ...
        def assign(self, *args: Any, **kwargs: Any) -> None: ...
        def close(self, *args: Any, **kwargs: Any) -> None: ...

    Client.__name__ = kind
    return Client


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """Every confluent-kafka client made in michi/, services/ and benchmarks/ records its configuration instead."""
    # Imported first: a module imported while the constructors are swapped would keep the stand-in.
    _import_every_kafka_module()
    log = Recorded()
    real = {
        confluent_kafka.Producer: _client("producer", log),
        confluent_kafka.Consumer: _client("consumer", log),
        confluent_kafka.admin.AdminClient: _client("admin", log),
    }
    monkeypatch.setattr(confluent_kafka, "Producer", real[confluent_kafka.Producer])
    monkeypatch.setattr(confluent_kafka, "Consumer", real[confluent_kafka.Consumer])
    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", real[confluent_kafka.admin.AdminClient])
    for name, module in list(sys.modules.items()):
        if not name.startswith(("michi.", "services.", "benchmarks.")) or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, type) and value in real:
                monkeypatch.setattr(module, attribute, real[value])
    return log


def _import_every_kafka_module() -> None:
    import services.annotation.wiring
    import services.inference.adapters.plans
    import services.inference.wiring
    import services.ingest.wiring
    import services.scoring.wiring
    import services.trainer.entrypoints.cli
    import services.trainer.wiring
    import services.warehouse.wiring  # noqa: F401


def _assert_secure(kind: str, config: dict[str, Any], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    assert config["bootstrap.servers"] == SERVERS, kind
    assert config["security.protocol"] == "sasl_ssl", kind
    assert config["sasl.mechanism"] == "SCRAM-SHA-512", kind
    assert config["sasl.username"] == "michi-svc", kind
    assert config["sasl.password"] == PASSWORD, kind
    assert config["ssl.ca.location"] == str(cert), kind
    assert config["ssl.certificate.location"] == str(cert), kind
    assert config["ssl.key.location"] == str(key), kind


# --- the connection itself


def test_settings_read_every_michi_kafka_variable(secure_env: Path, certificate: tuple[Path, Path]) -> None:
    connection = load_settings(MichiSettings).kafka_connection()
    assert connection.servers == ("broker-1.example:9096", "broker-2.example:9096")
    assert (connection.security_protocol, connection.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    _assert_secure("connection", connection.confluent_config(), certificate)
    assert connection.confluent_config({"group.id": "g"}, **{"client.id": "c"})["group.id"] == "g"


def test_a_bare_bootstrap_string_is_plaintext_as_the_embedded_broker_speaks() -> None:
    connection = as_connection("127.0.0.1:9092")
    assert connection == KafkaConnection.plain("127.0.0.1:9092")
    assert connection.confluent_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "plaintext"}
    assert as_connection(connection) is connection


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"MICHI_KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "MICHI_KAFKA_SECURITY_PROTOCOL"),
        ({"MICHI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "MICHI_KAFKA_SASL_MECHANISM"),
        ({"MICHI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "MICHI_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SASL_MECHANISM"),
        (
            {"MICHI_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "MICHI_KAFKA_SASL_MECHANISM": "plain"},
            "MICHI_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "MICHI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "MICHI_KAFKA_SASL_MECHANISM": "PLAIN",
                "MICHI_KAFKA_SASL_USERNAME": "u",
            },
            "MICHI_KAFKA_SASL_PASSWORD",
        ),
        ({"MICHI_KAFKA_SASL_USERNAME": "u"}, "MICHI_KAFKA_SASL_USERNAME is set but"),
        ({"MICHI_KAFKA_SECURITY_PROTOCOL": "SSL", "MICHI_KAFKA_SSL_CA_FILE": "/no/such/ca.pem"}, "SSL_CA_FILE"),
        ({"MICHI_KAFKA_SECURITY_PROTOCOL": "SSL", "MICHI_KAFKA_SSL_CERT_FILE": "/etc/hostname"}, "SSL_KEY_FILE"),
        ({"MICHI_KAFKA_BOOTSTRAP": "", "MICHI_KAFKA_SECURITY_PROTOCOL": "SSL"}, "embedded broker speaks PLAINTEXT"),
        ({"MICHI_KAFKA_REPLICATION_FACTOR": "0"}, "MICHI_KAFKA_REPLICATION_FACTOR"),
        ({"MICHI_KAFKA_REPLICATION_FACTOR": "three"}, "MICHI_KAFKA_REPLICATION_FACTOR"),
    ],
)
def test_a_bad_kafka_setting_stops_the_process_at_start_naming_the_variable(
    variables: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MICHI_KAFKA_BOOTSTRAP", "broker:9096")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(MichiSettings)
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("michi: configuration error: ") and message.count("\n") == 1
    assert named in message


def test_a_placeholder_sasl_password_is_refused_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MICHI_ENV": "production",
        "MICHI_TOKEN_SECRET": "a-real-token-secret-0123456789",
        "MICHI_KAFKA_BOOTSTRAP": "broker:9096",
        "MICHI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MICHI_KAFKA_SASL_MECHANISM": "PLAIN",
        "MICHI_KAFKA_SASL_USERNAME": "u",
        "MICHI_KAFKA_SASL_PASSWORD": "changethis",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="MICHI_KAFKA_SASL_PASSWORD must be set to a real secret"):
        MichiSettings()


def test_the_password_never_shows_in_repr_str_messages_or_logs(
    secure_env: Path, recorded: Recorded, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from michi.bus.producer import EventProducer
    from michi.bus.streams import create_app

    caplog.set_level(logging.DEBUG)
    settings = load_settings(MichiSettings)
    connection = settings.kafka_connection()
    app = create_app("secret-test", bootstrap=connection, data_dir=secure_env / "faust")
    EventProducer(connection, client_id="secret-test").close(timeout=1)
    shown = [repr(connection), str(connection), connection.describe(), repr(settings), str(settings)]
    shown += [repr(app.conf.broker_credentials), str(connection.model_dump())]
    try:  # a validation error quotes no input
        KafkaConnection(bootstrap_servers="", sasl_password=SecretStr(PASSWORD))
    except ValidationError as error:
        shown.append(str(error))
    try:
        KafkaConnection(bootstrap_servers="b:1", sasl_password=PASSWORD)  # type: ignore[arg-type]
    except ValidationError as error:
        shown.append(str(error))
    assert len(shown) == 9
    assert "**********" in repr(connection)
    output = capsys.readouterr()
    for text in [*shown, caplog.text, output.out, output.err]:
        assert PASSWORD not in text


# --- every client


def test_every_confluent_kafka_client_carries_the_sasl_and_tls_settings(
    secure_env: Path, recorded: Recorded, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from michi.bus.admin import delete_topics, ensure_topics
    from michi.bus.catalog import LABELS, UPLOADS
    from michi.bus.consumers import group_consumer_config
    from michi.bus.producer import EventProducer
    from michi.bus.reader import TopicReader, end_offsets
    from michi.bus.stalls import StreamWatch
    from michi.cli.status import collect_status
    from michi.infra.embedded import EmbeddedInfrastructure
    from michi.infra.kafka import broker_answers
    from michi.readiness import ConsumerProgress
    from michi.registry.commands import _registry
    from services.annotation.settings import AnnotationSettings
    from services.annotation.wiring import label_producer
    from services.inference.adapters.plans import RolloutPlanFeed
    from services.inference.wiring import uploads_partitions
    from services.ingest.settings import IngestSettings
    from services.ingest.wiring import upload_producer
    from services.scoring.adapters.progress import CommittedProgress
    from services.scoring.adapters.topics import prepare_topics
    from services.trainer.entrypoints import cli as trainer_cli
    from services.warehouse.settings import WarehouseSettings
    from services.warehouse.wiring import build_sink, progress_check

    settings = load_settings(MichiSettings)
    connection = settings.kafka_connection()
    places: dict[str, int] = {}

    def place(name: str, make: Any) -> None:
        start = len(recorded.configs)
        made = make()
        if hasattr(made, "close"):
            made.close()
        places[name] = len(recorded.configs) - start

    place("producer", lambda: EventProducer(connection, client_id="t"))
    place("group consumer", lambda: confluent_kafka.Consumer(group_consumer_config(connection, "michi.", "trainer")))
    place("topic reader", lambda: TopicReader(connection, UPLOADS))
    place("end offsets", lambda: end_offsets(connection, "michi.uploads.v1"))
    place("ensure topics", lambda: ensure_topics(connection, "michi.", [UPLOADS]))
    place("delete topics", lambda: delete_topics(connection, ["michi.uploads.v1"]))
    place("status", lambda: collect_status(connection))
    place("broker probe", lambda: broker_answers(connection))
    place("infra status", lambda: EmbeddedInfrastructure(settings).status())
    place("readiness progress", lambda: ConsumerProgress(connection, "g", ["t"])._read_from_broker())
    watch = StreamWatch(SimpleNamespace(conf=SimpleNamespace(id="g")), bootstrap=connection, service="s")  # type: ignore[arg-type]
    place("stream watch", lambda: watch._read_from_broker({("t", 0)}))
    place("rollout plan feed", lambda: RolloutPlanFeed(connection, "michi."))
    place("inference uploads partitions", lambda: uploads_partitions(connection, "michi."))
    place("scoring progress", lambda: CommittedProgress(connection, "g", ["t"]))
    place("scoring topics", lambda: prepare_topics(connection, "michi."))
    place("ingest producer", lambda: upload_producer(load_settings(IngestSettings)))
    place("annotation producer", lambda: label_producer(load_settings(AnnotationSettings)))
    warehouse = load_settings(WarehouseSettings)
    place("warehouse progress", lambda: progress_check(warehouse)._read_from_broker())
    sink_producer = EventProducer(connection)
    place("warehouse consumer", lambda: build_sink(warehouse, producer=sink_producer).consumer)
    sink_producer.close()

    def registry_publisher() -> None:
        with _registry(publishing=True):
            pass

    place("registry plan publisher", registry_publisher)

    class Stop(Exception):
        pass

    def stop_after_the_producer(*args: Any, **kwargs: Any) -> Any:
        raise Stop

    monkeypatch.setattr("services.trainer.wiring.build_wiring", stop_after_the_producer)

    def trainer_command() -> None:
        with pytest.raises(Stop):
            trainer_cli.train_command(
                dry_run=False, bootstrap=False, reason="test", epochs=None, seed=None, as_json=False
            )

    place("trainer cli producer", trainer_command)

    assert all(count >= 1 for count in places.values()), {name: n for name, n in places.items() if n < 1}
    kinds = {kind for kind, _ in recorded.configs}
    assert kinds == {"producer", "consumer", "admin"}
    for kind, config in recorded.configs:
        _assert_secure(kind, config, certificate)
    assert LABELS  # the catalog imported above is the one the clients used


def test_the_stream_apps_connect_faust_with_sasl_over_tls_to_every_server(
    secure_env: Path, recorded: Recorded, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from michi.bus.streams import create_app, stream_watch
    from services.scoring.settings import ScoringSettings
    from services.scoring.wiring import build_app as build_scoring

    # The replication factor of faust's topics comes with the connection too.
    monkeypatch.setenv("MICHI_KAFKA_REPLICATION_FACTOR", "3")

    connection = load_settings(MichiSettings).kafka_connection()
    apps = {
        "create_app": create_app("conn-test", bootstrap=connection, data_dir=secure_env / "faust"),
        "scoring": build_scoring(load_settings(ScoringSettings), producer=None),
    }
    for name, app in apps.items():
        assert [str(url) for url in app.conf.broker] == [
            "kafka://broker-1.example:9096",
            "kafka://broker-2.example:9096",
        ], name
        credentials = app.conf.broker_credentials
        assert isinstance(credentials, faust.SASLCredentials), name
        auth = credentials_to_aiokafka_auth(credentials, app.conf.ssl_context)
        assert auth["security_protocol"] == "SASL_SSL", name
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512", name
        assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("michi-svc", PASSWORD), name
        assert auth["ssl_context"] is not None and auth["ssl_context"].check_hostname, name
        watch = stream_watch(app)
        assert watch is not None and watch.connection == connection, name
        assert app.conf.topic_replication_factor == 3, name
    # Scoring's own clients (topic preparation, its producer, the progress reader) carry it too.
    assert recorded.configs
    for kind, config in recorded.configs:
        _assert_secure(kind, config, certificate)


def test_the_inference_app_is_built_from_the_connection(
    secure_env: Path, recorded: Recorded, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.inference.settings import InferenceSettings
    from services.inference.wiring import build_app

    monkeypatch.setenv("MICHI_INFERENCE_PARTITIONS", "2")
    built = build_app(load_settings(InferenceSettings), loader=lambda reference: None)  # type: ignore[arg-type,return-value]
    built.producer.close(timeout=1)
    assert isinstance(built.app.conf.broker_credentials, faust.SASLCredentials)
    assert [kind for kind, _ in recorded.configs] == ["producer"]
    for kind, config in recorded.configs:
        _assert_secure(kind, config, certificate)


def test_tls_only_gives_faust_ssl_credentials_and_librdkafka_the_ca(certificate: tuple[Path, Path]) -> None:
    from michi.bus.streams import faust_broker_settings

    cert, _ = certificate
    connection = KafkaConnection(bootstrap_servers="b:9093", security_protocol="SSL", ssl_ca_file=cert)
    assert connection.confluent_config() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "ssl",
        "ssl.ca.location": str(cert),
    }
    settings = faust_broker_settings(connection)
    assert isinstance(settings["broker_credentials"], faust.SSLCredentials)
    assert "broker_credentials" not in faust_broker_settings(KafkaConnection.plain("b:9092"))


def test_librdkafka_accepts_the_configuration(certificate: tuple[Path, Path]) -> None:
    """A real client from the SASL_SSL configuration: librdkafka refuses unknown names and unreadable files."""
    cert, key = certificate
    connection = KafkaConnection(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password=SecretStr(PASSWORD),
        ssl_ca_file=cert,
        ssl_cert_file=cert,
        ssl_key_file=key,
    )
    silent = logging.getLogger("test.kafka.silent")
    silent.disabled = True
    confluent_kafka.admin.AdminClient(connection.confluent_config({"logger": silent})).poll(0)
    with pytest.raises(confluent_kafka.KafkaException):
        confluent_kafka.admin.AdminClient(
            KafkaConnection(bootstrap_servers="127.0.0.1:1", security_protocol="SSL", ssl_ca_file=key).confluent_config(
                {"logger": silent}
            )
        )


# --- no client left behind


def _sources() -> Iterator[Path]:
    for folder in ("michi", "services", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_kafka_client_is_built_from_a_bare_address() -> None:
    """Hand-built `bootstrap.servers` or the bare resolved address would drop the security settings."""
    offenders = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if relative != "michi/bus/connection.py" and '"bootstrap.servers"' in text:
            offenders.append(f"{relative}: bootstrap.servers")
        if relative != "michi/settings/__init__.py" and re.search(r"resolved_kafka_bootstrap\(\)", text):
            offenders.append(f"{relative}: resolved_kafka_bootstrap()")
        if "kafka://" in text and relative != "michi/bus/streams.py":
            offenders.append(f"{relative}: kafka:// URL")
    assert offenders == []


def test_the_stall_watch_does_not_import_the_stream_module() -> None:
    """`stalls` (used by readiness checks in services without faust) and `streams` import in one direction only."""
    check = "import sys, michi.bus.stalls, michi.readiness; assert 'michi.bus.streams' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.stdout.strip() == "ok", result.stderr[-500:]
