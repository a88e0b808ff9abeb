"""How every Michi process reaches Kafka: one typed, validated connection setting.

A `KafkaConnection` holds the bootstrap servers and the security settings (TLS, SASL); it is read
from the `MICHI_KAFKA_*` variables by `MichiSettings.kafka_connection()` and turned into each
client's configuration here, so no client is built from a bare address:

    connection = settings.kafka_connection()
    Consumer(connection.confluent_config({"group.id": "michi.warehouse"}))
    ssl_context = connection.ssl_context()          # for aiokafka (faust: `streams.faust_broker_settings`)

The password is a `SecretStr`: it is masked in `repr()`/`str()` and in validation errors, and leaves
the object only inside the configuration handed to a client. A bare bootstrap string is still
accepted wherever a connection is (`as_connection`): it means PLAINTEXT, which is what the embedded
broker of `michi up` and the tests speaks on loopback.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})

# The environment variable behind each field (`MichiSettings`), named in every validation message.
VARIABLES = {
    "bootstrap_servers": "MICHI_KAFKA_BOOTSTRAP",
    "security_protocol": "MICHI_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "MICHI_KAFKA_SASL_MECHANISM",
    "sasl_username": "MICHI_KAFKA_SASL_USERNAME",
    "sasl_password": "MICHI_KAFKA_SASL_PASSWORD",
    "ssl_ca_file": "MICHI_KAFKA_SSL_CA_FILE",
    "ssl_cert_file": "MICHI_KAFKA_SSL_CERT_FILE",
    "ssl_key_file": "MICHI_KAFKA_SSL_KEY_FILE",
    "replication_factor": "MICHI_KAFKA_REPLICATION_FACTOR",
}


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _upper_or_none(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().upper() or None
    return value


# The same values as settings: any case, surrounding blanks ignored, an empty mechanism meaning none.
ProtocolSetting = Annotated[SecurityProtocol, BeforeValidator(_upper)]
MechanismSetting = Annotated[SaslMechanism | None, BeforeValidator(_upper_or_none)]


class KafkaConnection(BaseModel):
    """Bootstrap servers and security of the Kafka cluster; frozen, validated on creation."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    bootstrap_servers: str
    security_protocol: ProtocolSetting = "PLAINTEXT"
    sasl_mechanism: MechanismSetting = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    # Copies of every topic Michi creates (the catalog's, scoring's own, faust's changelogs); None: the
    # cluster's `default.replication.factor` (`michi.bus.admin.replication_factor`).
    replication_factor: int | None = Field(default=None, ge=1)

    @classmethod
    def plain(cls, bootstrap_servers: str) -> KafkaConnection:
        """A PLAINTEXT connection (the embedded broker, tests)."""
        return cls(bootstrap_servers=bootstrap_servers)

    @model_validator(mode="after")
    def _check(self) -> KafkaConnection:
        name = VARIABLES
        if not self.servers:
            raise ValueError(f"{name['bootstrap_servers']} names no server (host:port[,host:port...])")
        protocol = self.security_protocol
        sasl_given = [field for field in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, field)]
        if self.uses_sasl:
            for field in ("sasl_mechanism", "sasl_username", "sasl_password"):
                value = getattr(self, field)
                present = value.get_secret_value() if isinstance(value, SecretStr) else value
                if not present:
                    raise ValueError(f"{name[field]} is required with {name['security_protocol']}={protocol}")
        elif sasl_given:
            raise ValueError(
                f"{name[sasl_given[0]]} is set but {name['security_protocol']} is {protocol}"
                " (SASL_SSL or SASL_PLAINTEXT use it)"
            )
        tls_given = [field for field in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file") if getattr(self, field)]
        if tls_given and not self.uses_tls:
            raise ValueError(
                f"{name[tls_given[0]]} is set but {name['security_protocol']} is {protocol} (SSL or SASL_SSL use it)"
            )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError(f"{name['ssl_cert_file']} and {name['ssl_key_file']} go together (a client certificate)")
        for field in tls_given:
            path = getattr(self, field)
            if not path.is_file():
                raise ValueError(f"{name[field]}: no such file: {path}")
        return self

    # --- what it says

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(server.strip() for server in self.bootstrap_servers.split(",") if server.strip())

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    def describe(self) -> str:
        """For logs and messages: servers, protocol and user, never the password."""
        user = f" as {self.sasl_username} ({self.sasl_mechanism})" if self.uses_sasl else ""
        return f"{','.join(self.servers)} over {self.security_protocol}{user}"

    # --- each client's configuration

    def confluent_config(self, settings: Mapping[str, Any] | None = None, /, **extra: Any) -> dict[str, Any]:
        """librdkafka properties for a confluent-kafka Producer, Consumer or AdminClient.

        `settings` (dotted librdkafka names) and `extra` are added; they may not override the connection's own.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.servers),
            "security.protocol": self.security_protocol.lower(),
        }
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked on creation
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_file is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_file)
        if self.ssl_cert_file is not None and self.ssl_key_file is not None:
            config["ssl.certificate.location"] = str(self.ssl_cert_file)
            config["ssl.key.location"] = str(self.ssl_key_file)
        for key, value in {**(settings or {}), **extra}.items():
            if key in config and config[key] != value:
                raise ValueError(f"{key} comes from the Kafka connection ({VARIABLES['bootstrap_servers']} and kin)")
            config[key] = value
        return config

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of an asyncio client (aiokafka): the CA file or the system's, the client certificate."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_ca_file) if self.ssl_ca_file is not None else None
        )
        if self.ssl_cert_file is not None and self.ssl_key_file is not None:
            context.load_cert_chain(str(self.ssl_cert_file), str(self.ssl_key_file))
        return context


def connection_problem(error: ValidationError) -> str:
    """One line for the operator, naming the variable at fault (from a `KafkaConnection` ValidationError)."""
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    field = str(first["loc"][0]) if first["loc"] else ""
    return f"{VARIABLES[field]}: {message}" if field in VARIABLES else message


def as_connection(value: KafkaConnection | str) -> KafkaConnection:
    """`value` itself, or a PLAINTEXT connection to a bare bootstrap string (the embedded broker, tests)."""
    return value if isinstance(value, KafkaConnection) else KafkaConnection.plain(value)
