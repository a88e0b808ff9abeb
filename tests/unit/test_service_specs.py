"""The service specs (`services/<name>/spec.py`, `michi/kit`) against every place that repeats what they say:
the settings classes, the `michi` CLI, docker-compose.yml, deploy/kubernetes (as kustomize renders its base and
each overlay) and docs/architecture.md."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml  # PyYAML: pinned in constraints.txt (schemathesis needs it)
from typer.testing import CliRunner

from michi.bus.catalog import CATALOG
from michi.kit import ServicePort, ServiceSpec, resolve, service_names, service_spec, service_specs
from michi.settings import MichiSettings
from tests.unit.test_deploy_files import RENDERINGS, kubernetes_manifests

ROOT = Path(__file__).resolve().parents[2]
SPECS = service_specs()
# The order `michi up` started its services in before the specs existed; a new service may go anywhere.
TODAYS_START_ORDER = ("ingest", "inference", "scoring", "warehouse", "annotation", "trainer")


def _by_name(specs: tuple[ServiceSpec, ...] = SPECS) -> list[Any]:
    return [pytest.param(spec, id=spec.name) for spec in specs]


def _fields(settings_class: Any) -> dict[str, Any]:
    return dict(settings_class.model_fields)


def _field(variable: str) -> str:
    assert variable.startswith("MICHI_"), variable
    return variable.removeprefix("MICHI_").lower()


def _expected_port(port: ServicePort, environment: dict[str, Any]) -> int:
    return int(environment.get(port.variable, port.default))


# --- the specs themselves


def test_every_service_folder_has_a_spec_and_only_those() -> None:
    folders = {path.parent.name for path in (ROOT / "services").glob("*/__main__.py")}
    assert set(service_names()) == folders


def test_up_starts_todays_services_in_todays_order() -> None:
    names = service_names()
    assert [name for name in names if name in TODAYS_START_ORDER] == list(TODAYS_START_ORDER)
    orders = [spec.start_order for spec in SPECS]
    assert orders == sorted(orders) and len(set(orders)) == len(orders), "start_order must be unique"


def test_no_two_services_share_a_port_or_a_variable() -> None:
    ports = [port.default for spec in SPECS for port in spec.ports]
    variables = [variable for spec in SPECS for variable in spec.variables]
    assert len(ports) == len(set(ports)), ports
    assert len(variables) == len(set(variables)), variables


def test_a_spec_names_its_service_folder_and_unknown_names_are_refused() -> None:
    for spec in SPECS:
        assert spec.module == f"services.{spec.name}"
        assert service_spec(spec.name) is spec
    with pytest.raises(KeyError, match="choose one of ingest"):
        service_spec("monitor-that-does-not-exist")


@pytest.mark.parametrize("spec", _by_name())
def test_spec_agrees_with_the_settings_class(spec: ServiceSpec) -> None:
    settings_class = resolve(spec.settings)
    assert issubclass(settings_class, MichiSettings)
    fields = _fields(settings_class)
    for port in spec.ports:
        assert _field(port.variable) in fields, f"{spec.settings} reads no {port.variable}"
        assert fields[_field(port.variable)].default == port.default, port
    if spec.host_variable is not None:
        assert fields[_field(spec.host_variable)].default == "127.0.0.1"
    # And the other way: every port or host the service reads is in its spec.
    own = set(fields) - set(_fields(MichiSettings))
    listening = {name for name in own if name.endswith(("_port", "_host"))}
    assert listening == {_field(variable) for variable in spec.variables}


@pytest.mark.parametrize("spec", _by_name())
def test_python_dash_m_runs_what_michi_run_runs(spec: ServiceSpec) -> None:
    main = importlib.import_module(f"{spec.module}.__main__")
    assert main.run is resolve(spec.run)


def test_endpoints_follow_the_port_variables() -> None:
    ingest = service_spec("ingest")
    assert ingest.endpoints({}) == {"http": "http://127.0.0.1:8080", "grpc": "127.0.0.1:50051"}
    moved = {"MICHI_INGEST_HTTP_PORT": "18080", "MICHI_INGEST_GRPC_PORT": "15051"}
    assert ingest.endpoints(moved) == {"http": "http://127.0.0.1:18080", "grpc": "127.0.0.1:15051"}
    assert service_spec("trainer").readiness_url({}) == "http://127.0.0.1:8082/readyz"


# --- the CLI


def test_cli_services_ports_and_lag_come_from_the_specs() -> None:
    import michi.cli
    from michi.cli.platform import SERVICE_PORTS
    from michi.cli.status import CONSUMERS

    names = service_names()
    assert names == michi.cli.SERVICES
    assert [name for name in names if name in TODAYS_START_ORDER] == list(TODAYS_START_ORDER)
    assert SERVICE_PORTS == {
        "ingest": ("MICHI_INGEST_HTTP_PORT", 8080),
        "inference": ("MICHI_INFERENCE_PORT", 8084),
        "scoring": ("MICHI_SCORING_PORT", 8085),
        "warehouse": ("MICHI_WAREHOUSE_PORT", 8086),
        "monitor": ("MICHI_MONITOR_PORT", 8083),
        "annotation": ("MICHI_ANNOTATION_PORT", 8081),
        "trainer": ("MICHI_TRAINER_PORT", 8082),
        "rollouts": ("MICHI_ROLLOUTS_PORT", 8088),
        "camera": ("MICHI_CAMERA_PORT", 8087),
    }
    assert list(SERVICE_PORTS) == list(service_names())
    assert {service: [topic.base_name for topic in topics] for service, topics in CONSUMERS.items()} == {
        "inference": ["uploads.v1"],
        "scoring": ["detections.v1", "trip-segments.v1", "labels.v1"],
        "camera": ["media.v1", "uploads.v1"],
    }
    catalog = {topic.base_name for topic in CATALOG}
    assert {topic for spec in SPECS for topic in spec.lag_topics} <= catalog


def test_michi_run_offers_exactly_the_specs() -> None:
    from michi.cli import app, run_service

    argument = inspect.signature(run_service).parameters["service"].default
    assert argument.help == f"one of: {', '.join(service_names())}"
    result = CliRunner().invoke(app, ["run", "no-such-service"])
    assert result.exit_code == 1
    assert f"choose one of {', '.join(service_names())}" in result.output


def test_commands_services_add_are_michi_commands() -> None:
    from michi.cli import app

    groups = {info.name: info.typer_instance for info in app.registered_groups}
    commands = {info.name: info.callback for info in app.registered_commands}
    declared = [command for spec in SPECS for command in spec.commands]
    assert [command.name for command in declared] == ["annotators", "train", "experiments"]
    for command in declared:
        target = resolve(command.target)
        if isinstance(target, typer.Typer):
            assert groups[command.name] is target
        else:
            assert commands[command.name] is target


# --- docker-compose.yml


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _runs(command: Any) -> str | None:
    """The service a container command runs with `michi run <service>`."""
    if isinstance(command, list) and command[:2] == ["michi", "run"] and len(command) == 3:
        return str(command[2])
    return None


def test_compose_runs_every_service_and_nothing_else() -> None:
    services = _compose()["services"]
    run = {_runs(service.get("command")) for service in services.values()} - {None}
    assert run == set(service_names())
    for spec in SPECS:
        assert _runs(services[spec.name].get("command")) == spec.name


@pytest.mark.parametrize("spec", _by_name())
def test_compose_publishes_the_spec_ports(spec: ServiceSpec) -> None:
    compose = _compose()
    shared = compose["x-michi"]["environment"]
    service = compose["services"][spec.name]
    environment = service.get("environment", {})
    own = {name for name, value in environment.items() if shared.get(name) != value}
    fields = _fields(resolve(spec.settings))
    assert {name for name in own if name.startswith("MICHI_") and _field(name) not in fields} == set()
    published = [str(mapping) for mapping in service.get("ports", [])]
    if spec.host_variable is None:
        # It binds 127.0.0.1 inside its container: a published port would reach nothing.
        assert published == []
        return
    assert environment.get(spec.host_variable) == "0.0.0.0"
    expected = [f"{_expected_port(port, environment)}:{_expected_port(port, environment)}" for port in spec.ports]
    assert published == expected


def test_compose_shared_variables_are_read_by_some_service() -> None:
    shared = _compose()["x-michi"]["environment"]
    read = set(_fields(MichiSettings)).union(*(_fields(resolve(spec.settings)) for spec in SPECS))
    assert {name for name in shared if name.startswith("MICHI_") and _field(name) not in read} == set()


# --- deploy/kubernetes: the base and every overlay, as `kustomize build` renders them


def _manifests(rendering: str) -> list[dict[str, Any]]:
    return list(kubernetes_manifests(rendering))


def _deployments(rendering: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _manifests(rendering) if doc["kind"] == "Deployment"}


def _container(rendering: str, spec: ServiceSpec) -> dict[str, Any]:
    deployment = _deployments(rendering)[f"michi-{spec.name}"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    assert _runs(container["command"]) == spec.name
    return container


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def _by_rendering_and_name() -> list[Any]:
    return [pytest.param(rendering, spec, id=f"{rendering}-{spec.name}") for rendering in RENDERINGS for spec in SPECS]


def test_kubernetes_layout_is_a_kustomize_base_with_overlays() -> None:
    kubernetes = ROOT / "deploy" / "kubernetes"
    assert sorted(path.name for path in kubernetes.glob("*.yaml")) == [], "manifests live in base/ and overlays/"
    assert RENDERINGS == ("base", "dev", "production")
    for rendering in RENDERINGS:
        folder = kubernetes / ("base" if rendering == "base" else f"overlays/{rendering}")
        assert (folder / "kustomization.yaml").is_file(), folder


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_kubernetes_has_one_deployment_per_service(rendering: str) -> None:
    michi = {name for name, doc in _deployments(rendering).items() if name.startswith("michi-")}
    assert michi == {f"michi-{name}" for name in service_names()}


@pytest.mark.parametrize(("rendering", "spec"), _by_rendering_and_name())
def test_kubernetes_container_serves_the_spec_ports(rendering: str, spec: ServiceSpec) -> None:
    container = _container(rendering, spec)
    environment = _environment(container)
    ports = {(port["name"], port["containerPort"]) for port in container["ports"]}
    assert ports == {(port.name, _expected_port(port, environment)) for port in spec.ports}
    assert container["readinessProbe"]["httpGet"] == {"path": spec.readiness_path, "port": "http"}
    if spec.host_variable is not None:
        assert environment.get(spec.host_variable) == "0.0.0.0"


@pytest.mark.parametrize(("rendering", "spec"), _by_rendering_and_name())
def test_kubernetes_sets_only_variables_the_service_reads(rendering: str, spec: ServiceSpec) -> None:
    fields = _fields(resolve(spec.settings))
    unread = {
        name
        for name in _environment(_container(rendering, spec))
        if name.startswith("MICHI_") and _field(name) not in fields
    }
    assert unread == set()


def _references(container: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (kind, source[key]["name"])
        for source in container.get("envFrom", [])
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef"))
        if key in source
    }


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_kubernetes_shared_configuration_is_read_by_every_service(rendering: str) -> None:
    """What every service's pod loads (the ConfigMap and Secret michi) holds only variables every service reads."""
    shared = set.intersection(*(_references(_container(rendering, spec)) for spec in SPECS))
    assert "ConfigMap" in {kind for kind, _ in shared}, "the services share no ConfigMap"
    base = _fields(MichiSettings)
    for doc in _manifests(rendering):
        if (doc["kind"], doc["metadata"]["name"]) in shared:
            names = {**doc.get("data", {}), **doc.get("stringData", {})}
            assert {name for name in names if name.startswith("MICHI_") and _field(name) not in base} == set()


@pytest.mark.parametrize(("rendering", "spec"), _by_rendering_and_name())
def test_kubernetes_never_runs_two_of_a_single_instance_service(rendering: str, spec: ServiceSpec) -> None:
    deployment = _deployments(rendering)[f"michi-{spec.name}"]
    scaled = {
        doc["spec"]["scaleTargetRef"]["name"]
        for doc in _manifests(rendering)
        if doc["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}
    }
    if spec.single_instance:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"].get("strategy", {}).get("type") == "Recreate"
        assert deployment["metadata"]["name"] not in scaled
    else:
        # Unset (an autoscaler owns it) means 1 until the autoscaler acts.
        assert deployment["spec"].get("replicas", 1) >= 1


# --- docs/architecture.md


def _architecture() -> str:
    return (ROOT / "docs" / "architecture.md").read_text()


NONE = "\N{EN DASH}"  # an empty cell of the docs' tables


def _expected_row(spec: ServiceSpec) -> list[str]:
    def listed(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{item}`" for item in items) or NONE

    return [
        spec.name,
        str(spec.start_order),
        f"{spec.port} `{spec.port_variable}`",
        ", ".join(f"{port.name} {port.default} `{port.variable}`" for port in spec.other_ports) or NONE,
        f"`{spec.host_variable}`" if spec.host_variable else f"{NONE} (127.0.0.1)",
        "yes" if spec.single_instance else "no",
        listed(tuple(command.name for command in spec.commands)),
        listed(spec.lag_topics),
    ]


def test_docs_services_table_matches_the_specs() -> None:
    section = _architecture().split("\n## Services\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| service ")
    ]
    assert rows == [_expected_row(spec) for spec in SPECS]


def test_docs_ports_paragraph_matches_the_specs() -> None:
    paragraph = _architecture().split("\nPorts (each overridable", 1)[1].split("\n\n", 1)[0]
    mentioned = {int(port) for port in re.findall(r"\b(\d{4,5})\b", paragraph)}
    assert mentioned == {port.default for spec in SPECS for port in spec.ports}
    variables = {port.default: port.variable for spec in SPECS for port in spec.ports}
    for port, variable in re.findall(r"\b(\d{4,5}) \(`(MICHI_\w+)`\)", paragraph):
        assert variables[int(port)] == variable
    for spec in SPECS:
        assert re.search(rf"\b{spec.name}(?: HTTP)? {spec.port}\b", paragraph), spec.name
