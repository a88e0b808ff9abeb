"""Configuration: one pydantic-settings class per service on this shared base.

Every variable has the `MICHI_` prefix. Infrastructure URLs left unset mean
"use the embedded server" (started by `michi infra up` / `michi up`), whose
addresses are read from `.michi/endpoints.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from michi.bus.connection import KafkaConnection, MechanismSetting, ProtocolSetting, connection_problem

PLACEHOLDER_SECRETS = {"", "changethis", "changeme", "secret"}
DEV_TOKEN_SECRET = "michi-dev-token-secret-not-for-production"


SettingsType = TypeVar("SettingsType", bound=BaseSettings)


class MichiSettings(BaseSettings):
    """Settings every process shares."""

    model_config = SettingsConfigDict(env_prefix="MICHI_", frozen=True, extra="ignore", hide_input_in_errors=True)

    env: str = "dev"
    home: Path = Path(".michi")
    kafka_bootstrap: str | None = None
    # How to reach that Kafka (`michi.bus.connection.KafkaConnection`): PLAINTEXT, SSL, SASL_PLAINTEXT or
    # SASL_SSL; SASL with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; TLS with a CA file and a client certificate.
    kafka_security_protocol: ProtocolSetting = "PLAINTEXT"
    kafka_sasl_mechanism: MechanismSetting = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_replication_factor: int | None = Field(default=None, ge=1)
    redis_url: str | None = None
    database_url: str | None = None
    blob_url: str | None = None
    topic_prefix: str = "michi."
    # Ports of the embedded servers (used only when the matching URL above is unset).
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    log_level: str = "INFO"
    # Signs device tokens; must be set to a real secret outside MICHI_ENV=dev.
    token_secret: SecretStr = SecretStr(DEV_TOKEN_SECRET)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> MichiSettings:
        secret = self.token_secret.get_secret_value()
        if self.env != "dev" and (secret in PLACEHOLDER_SECRETS or secret == DEV_TOKEN_SECRET):
            raise ValueError("MICHI_TOKEN_SECRET must be set to a real secret outside MICHI_ENV=dev")
        return self

    @model_validator(mode="after")
    def _check_kafka_connection(self) -> MichiSettings:
        # The embedded broker (no MICHI_KAFKA_BOOTSTRAP) speaks PLAINTEXT on loopback only.
        if not self.kafka_bootstrap and self.kafka_security_protocol != "PLAINTEXT":
            raise ValueError(
                "MICHI_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol} but MICHI_KAFKA_BOOTSTRAP is unset"
                " (the embedded broker speaks PLAINTEXT only)"
            )
        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password is not None else None
        if self.env != "dev" and password is not None and password in PLACEHOLDER_SECRETS:
            raise ValueError("MICHI_KAFKA_SASL_PASSWORD must be set to a real secret outside MICHI_ENV=dev")
        try:
            self.kafka_connection(self.kafka_bootstrap or "127.0.0.1:9092")
        except ValidationError as error:
            raise ValueError(connection_problem(error)) from None
        return self

    # --- resolved addresses: explicit variable first, then the embedded servers' endpoints file

    @property
    def endpoints_path(self) -> Path:
        return self.home / "endpoints.json"

    def _endpoints(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.endpoints_path.read_text())
            return loaded
        except (OSError, ValueError):
            return {}

    def resolved_kafka_bootstrap(self) -> str:
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        bootstrap = self._endpoints().get("kafka", {}).get("bootstrap")
        return str(bootstrap) if bootstrap else "127.0.0.1:9092"

    def kafka_connection(self, bootstrap: str | None = None) -> KafkaConnection:
        """The Kafka connection of every client: `bootstrap` (default: `resolved_kafka_bootstrap()`) and MICHI_KAFKA_*."""
        return KafkaConnection(
            bootstrap_servers=bootstrap or self.resolved_kafka_bootstrap(),
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_ca_file=self.kafka_ssl_ca_file,
            ssl_cert_file=self.kafka_ssl_cert_file,
            ssl_key_file=self.kafka_ssl_key_file,
            replication_factor=self.kafka_replication_factor,
        )

    def resolved_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return str(self._endpoints().get("redis") or "redis://127.0.0.1:6379/0")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return str(self._endpoints().get("database") or f"sqlite:///{self.home / 'michi.db'}")

    def resolved_blob_url(self) -> str:
        if self.blob_url:
            return self.blob_url
        return str(self._endpoints().get("blobs") or f"file://{self.home / 'blobs'}")


def load_settings(settings_class: type[SettingsType], **overrides: Any) -> SettingsType:
    """Build settings or stop the process with a one-line message naming the bad variable."""
    try:
        return settings_class(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        location = "_".join(str(part) for part in first["loc"]).upper()
        prefix = settings_class.model_config.get("env_prefix", "MICHI_")
        # A check across variables names them in its message.
        named = f"{prefix}{location}: {first['msg']}" if location else _first_message(error)
        print(f"michi: configuration error: {named}", file=sys.stderr)
        raise SystemExit(2) from error


def _first_message(error: ValidationError) -> str:
    """The first error's message, without pydantic's "Value error, " in front."""
    message = str(error.errors()[0]["msg"])
    return message.removeprefix("Value error, ")
