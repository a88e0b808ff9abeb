"""The service kit: what the platform knows about each service, declared once in `services/<name>/spec.py`.

Every service folder holds a `spec.py` with a module-level `SPEC = ServiceSpec(...)`: its name, ports and their
`MICHI_*` variables, settings class, how to run it, readiness path, the `michi` commands it adds. The CLI
(`michi up`, `michi run`, `michi status`, the endpoints file) reads the specs through `service_specs()`;
`tests/unit/test_service_specs.py` holds docker-compose.yml, deploy/kubernetes and the docs to them.

Reading the specs imports nothing heavy: classes and functions are named by dotted path (`resolve` imports
them when they are needed).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Where the services live: each folder of this package with a spec.py is a service (one without is skipped).
SERVICES_PACKAGE = "services"
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class ServicePort:
    """A port a service serves: `name` is its key in `.michi/endpoints.json` and its Kubernetes port name."""

    name: str
    default: int
    variable: str

    def value(self, environ: Mapping[str, str] = os.environ) -> str:
        """The port as configured (the variable if set, else the default), as the service reads it."""
        return str(environ.get(self.variable, self.default))

    def endpoint(self, host: str = LOCALHOST, environ: Mapping[str, str] = os.environ) -> str:
        """`http://host:port` for HTTP, `host:port` for any other protocol (gRPC)."""
        address = f"{host}:{self.value(environ)}"
        return f"http://{address}" if self.name == "http" else address


@dataclass(frozen=True)
class CliCommand:
    """A `michi` subcommand a service adds: `target` names a `typer.Typer` (a group) or a function (a command)."""

    name: str
    target: str


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the platform runs it. Paths are dotted (`package.module.attribute`), imported on use."""

    name: str
    description: str
    # `michi up` starts the services and waits for each to be ready in ascending order.
    start_order: int
    settings: str
    # What `python -m` runs (the supervisor of `michi up`) and what `michi run <name>` calls in process.
    module: str
    run: str
    port: int
    port_variable: str
    # The variable the service reads for the address it binds (default 127.0.0.1); None: loopback only.
    host_variable: str | None = None
    other_ports: tuple[ServicePort, ...] = ()
    # One process per platform (one registry, one trainer): never scaled out, never rolled over two copies.
    single_instance: bool = False
    readiness_path: str = "/readyz"
    # How long `michi up` waits for it to answer ready (a first-ever start may have work to do first).
    ready_within_s: float = 180.0
    commands: tuple[CliCommand, ...] = ()
    # Catalog base names (`uploads.v1`) of the topics whose lag `michi status` shows for this consumer group.
    lag_topics: tuple[str, ...] = ()
    # The optional dependencies (pyproject.toml's extra) the service needs beyond the base install, and the
    # modules that show they are installed: the trainer's `training` (torch). Without them `michi run` and the
    # service's commands stop with one line naming the extra, and `michi up` starts the other services.
    extra: str | None = None
    extra_modules: tuple[str, ...] = ()

    @property
    def http(self) -> ServicePort:
        return ServicePort("http", self.port, self.port_variable)

    @property
    def ports(self) -> tuple[ServicePort, ...]:
        return (self.http, *self.other_ports)

    @property
    def variables(self) -> tuple[str, ...]:
        """Every `MICHI_*` variable of where the service listens."""
        host = (self.host_variable,) if self.host_variable else ()
        return (*(port.variable for port in self.ports), *host)

    def url(self, environ: Mapping[str, str] = os.environ) -> str:
        """The service's HTTP base URL on this machine."""
        return self.http.endpoint(LOCALHOST, environ)

    def readiness_url(self, environ: Mapping[str, str] = os.environ) -> str:
        return f"{self.url(environ)}{self.readiness_path}"

    def endpoints(self, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The service's entry in `.michi/endpoints.json` (`{"http": ..., "grpc": ...}`)."""
        return {port.name: port.endpoint(LOCALHOST, environ) for port in self.ports}

    def missing_extra(self) -> str | None:
        """Why this install cannot run the service (one line naming the extra to install), or None if it can.

        Looks the modules up without importing them (`importlib.util.find_spec`): no torch is loaded to ask.
        """
        missing = [module for module in self.extra_modules if importlib.util.find_spec(module) is None]
        if not missing:
            return None
        return (
            f"the {self.name} needs the {self.extra!r} extra ({', '.join(missing)} not installed): "
            f"pip install 'michi[{self.extra}]'"
        )


def resolve(path: str) -> Any:
    """The object a dotted path names (`services.ingest.settings.IngestSettings`), importing its module."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not a dotted path to an attribute of a module")
    return getattr(importlib.import_module(module_name), attribute)


class SpecError(RuntimeError):
    """A `services/<name>/spec.py` that does not declare its service properly."""


@functools.cache
def service_specs() -> tuple[ServiceSpec, ...]:
    """Every service's spec, in the order `michi up` starts them (`start_order`, then name)."""
    package = importlib.import_module(SERVICES_PACKAGE)
    specs: list[ServiceSpec] = []
    for module in pkgutil.iter_modules(package.__path__):
        if not module.ispkg:
            continue
        spec_module = f"{SERVICES_PACKAGE}.{module.name}.spec"
        if importlib.util.find_spec(spec_module) is None:
            continue
        spec = getattr(importlib.import_module(spec_module), "SPEC", None)
        if not isinstance(spec, ServiceSpec):
            raise SpecError(f"{spec_module} has no module-level SPEC = ServiceSpec(...)")
        if spec.name != module.name:
            raise SpecError(f"{spec_module} declares the service {spec.name!r}; its folder is {module.name!r}")
        specs.append(spec)
    specs.sort(key=lambda spec: (spec.start_order, spec.name))
    return tuple(specs)


def service_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in service_specs())


def service_spec(name: str) -> ServiceSpec:
    """The spec of service `name`; `KeyError` naming the known services when there is none."""
    for spec in service_specs():
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}; choose one of {', '.join(service_names())}")


__all__ = [
    "CliCommand",
    "ServicePort",
    "ServiceSpec",
    "SpecError",
    "resolve",
    "service_names",
    "service_spec",
    "service_specs",
]
