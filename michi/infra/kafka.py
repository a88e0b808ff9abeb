"""A real single-node Apache Kafka broker in KRaft mode, run from Maven Central jars.

The jars are fetched once with `mvn` into a cache outside the clone
(`$MICHI_CACHE_DIR`, default `~/.cache/michi`), the storage directory is formatted
with Kafka's StorageTool, and the broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from michi.bus.connection import KafkaConnection, as_connection
from michi.infra.processes import (
    InfrastructureError,
    require_free_port,
    start_process,
    stop_pid,
    stop_process,
    wait_until,
)

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.michi</groupId><artifactId>embedded-kafka</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = error
name = MichiEmbeddedKafka
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.server.name = org.apache.kafka
logger.server.level = WARN
"""


def cache_root() -> Path:
    return Path(os.environ.get("MICHI_CACHE_DIR", Path.home() / ".cache" / "michi"))


def kafka_libs() -> Path:
    """The broker's jar folder, fetched from Maven Central on first use."""
    libs = cache_root() / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise InfrastructureError(
            "Maven (`mvn`) is needed once to fetch the Kafka jars; install it (apt-get install maven) or set MICHI_KAFKA_BOOTSTRAP"
        )
    print(
        f"michi: fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} (once)",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "pom.xml").write_text(_POM)
        staging = libs.parent / f"libs.partial-{uuid.uuid4().hex[:8]}"
        command = [
            "mvn",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        process = subprocess.Popen(command, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        fetched = 0
        tail: list[str] = []
        for line in process.stdout:
            tail = [*tail[-20:], line.rstrip()]
            if line.startswith("Downloaded from"):
                fetched += 1
                if fetched % 10 == 0:
                    print(f"michi:   {fetched} artifacts downloaded", file=sys.stderr, flush=True)
        if process.wait() != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise InfrastructureError("mvn could not fetch the Kafka jars: " + " | ".join(tail[-5:]))
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    marker.write_text(KAFKA_VERSION)
    return libs


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise InfrastructureError(
            "Java 17+ is needed to run the embedded Kafka broker; install it (apt-get install openjdk-17-jre-headless) or set MICHI_KAFKA_BOOTSTRAP"
        )
    return java


@dataclass
class KafkaBroker:
    """One combined broker+controller node on loopback."""

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    detached: bool = False
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str((self.data_dir / "logs").resolve()),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created explicitly from the catalog, never by accident.
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(log_file=self.log_path.resolve()))
        return path

    def _java_command(self, java: str, libs: Path, main_class: str, *arguments: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}" if self.heap.endswith("m") and int(self.heap[:-1]) <= 256 else "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(self.data_dir / 'log4j2.properties').resolve()}",
            "-cp",
            str(libs / "*"),
            main_class,
            *arguments,
        ]

    def start(self, timeout: float = 90.0) -> None:
        java = require_java()
        libs = kafka_libs()
        require_free_port(self.port, "Kafka")
        require_free_port(self.controller_port, "the Kafka controller")
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = _kafka_uuid()
            format_command = self._java_command(
                java,
                libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                "--ignore-formatted",
            )
            result = subprocess.run(format_command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise InfrastructureError(
                    f"formatting Kafka storage failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}"
                )
        process = self.launch()
        if (
            not wait_until(lambda: process.poll() is not None or broker_answers(self.bootstrap), timeout, 0.3)
            or process.poll() is not None
        ):
            self.stop()
            raise InfrastructureError(
                f"Kafka did not become ready within {timeout:.0f}s; see {self.log_path} and {self.data_dir / 'stdout.log'}"
            )
        logger.info("kafka ready", extra={"bootstrap": self.bootstrap, "pid": self.pid})

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the broker on the configured ports and storage, without waiting for it to answer.

        `start()` uses it once the storage is formatted; the supervisor of `michi up` uses it to restart a
        broker that died (same ports, same `log.dirs`, so topics, offsets and the cluster id are kept).
        """
        process = start_process(
            self._java_command(require_java(), kafka_libs(), "kafka.Kafka", str(self.data_dir / "server.properties")),
            self.data_dir / "stdout.log",
            detached=self.detached,
        )
        self.pid = process.pid
        self._process = process
        return process

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The broker process this object started last (None before `start()` and after `stop()`)."""
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout=30.0)
        elif self.pid is not None:
            stop_pid(self.pid, timeout=30.0)
        self.pid = None
        self._process = None


def _kafka_uuid() -> str:
    """A random Kafka cluster id; one starting with '-' would read as an option, so draw again."""
    import base64

    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def broker_answers(bootstrap: KafkaConnection | str, timeout: float = 2.0) -> bool:
    """True when the broker returns cluster metadata with at least one broker."""
    from confluent_kafka.admin import AdminClient

    try:
        probe_config = as_connection(bootstrap).confluent_config(
            {"socket.timeout.ms": int(timeout * 1000), "log_level": 0, "logger": _silent_logger}
        )
        admin = AdminClient(probe_config)
        metadata = admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(metadata.brokers)


class _SilentLogger(logging.Logger):
    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        return None


_silent_logger = _SilentLogger("michi.infra.kafka.probe")
