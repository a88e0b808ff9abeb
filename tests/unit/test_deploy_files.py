"""The deploy files, checked offline against their formats and against what the code declares.

docker-compose.yml against the Compose Specification's schema (check-jsonschema's vendored copy); the kustomize
renderings of deploy/kubernetes (base and overlays, through deploy/kubernetes/render.sh and its pinned kustomize)
against the Kubernetes API schemas (kubernetes-validate, strict); and all of them, with deploy/prometheus,
deploy/grafana and deploy/otel-collector.yaml, against the service specs, the settings classes and the metric
names the services export. tests/unit/test_service_specs.py holds the specs' ports and variables to the same files.

    .venv/bin/pytest -q tests/unit/test_deploy_files.py
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from typer.testing import CliRunner

from michi.bus.catalog import CATALOG
from michi.kit import ServiceSpec, resolve, service_specs
from michi.settings import MichiSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SPECS = service_specs()
OVERLAYS = ("dev", "production")
RENDERINGS = ("base", *OVERLAYS)
# The oldest Kubernetes the manifests promise to work on, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
# Kinds that are not Kubernetes' own (no schema to validate against), and the overlays that may use them.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"): {"production"}}
# The image's user (Dockerfile `USER`) and its number in the Debian base image.
IMAGE_USERS = {"nobody": (65534, "nogroup")}
SERVERS = ("kafka", "redis", "postgres")


def _spec_ids(specs: tuple[ServiceSpec, ...] = SPECS) -> list[Any]:
    return [pytest.param(spec, id=spec.name) for spec in specs]


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def read_variables() -> set[str]:
    """Every MICHI_* variable some settings class reads (the shared base and each service's)."""
    classes = [MichiSettings, *(resolve(spec.settings) for spec in SPECS)]
    return {f"MICHI_{field.upper()}" for settings_class in classes for field in settings_class.model_fields}


def _service_variables(spec: ServiceSpec) -> set[str]:
    return {f"MICHI_{field.upper()}" for field in resolve(spec.settings).model_fields}


# --- the Kubernetes renderings


def _render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["bash", str(KUBERNETES / "render.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        if result.returncode == 2 and "Go is needed" in result.stderr and not os.environ.get("CI"):
            pytest.skip(f"kustomize unavailable here: {result.stderr.strip()} (.ci/run installs it)")
        raise AssertionError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@functools.cache
def kubernetes_manifests(rendering: str) -> tuple[dict[str, Any], ...]:
    """The documents `kustomize build` makes of deploy/kubernetes/base or an overlay.

    The production overlay reads its secrets from secret.env and trainer-secret.env, which are never committed:
    it is rendered in a copy of deploy/kubernetes with them made from their .example templates, as a user starts.
    """
    if rendering == "base":
        return tuple(_render(KUBERNETES / "base"))
    with tempfile.TemporaryDirectory(prefix="michi-kustomize-") as scratch:
        copy = Path(scratch) / "kubernetes"
        shutil.copytree(KUBERNETES, copy, ignore=shutil.ignore_patterns("*secret.env"))
        overlay = copy / "overlays" / rendering
        for example in overlay.glob("*.env.example"):
            shutil.copy(example, overlay / example.name.removesuffix(".example"))
        return tuple(_render(overlay))


def _of_kind(documents: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["name"]: document for document in documents if document["kind"] == kind}


def _michi_deployment(rendering: str, spec: ServiceSpec) -> dict[str, Any]:
    return _of_kind(kubernetes_manifests(rendering), "Deployment")[f"michi-{spec.name}"]


def _workloads(documents: tuple[dict[str, Any], ...]) -> Iterator[dict[str, Any]]:
    """Every object with a pod template (Deployments, StatefulSets, Jobs)."""
    for document in documents:
        if document["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            yield document


def _is_michi(workload: dict[str, Any]) -> bool:
    return any(container["image"].split("/")[-1].startswith("michi:") for container in _pod(workload)["containers"])


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def _only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = _pod(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def _environment(documents: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: its ConfigMaps and Secrets (envFrom), then its own `env`.

    A Secret the rendering lacks (the base has none: each overlay brings its own) adds nothing;
    `test_kubernetes_references_resolve` holds the overlays to having every one.
    """
    config_maps, secrets = _of_kind(documents, "ConfigMap"), _of_kind(documents, "Secret")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(config_maps[source["configMapRef"]["name"]].get("data", {}))
        if "secretRef" in source and source["secretRef"]["name"] in secrets:
            environment.update(_secret_data(secrets[source["secretRef"]["name"]]))
    for item in container.get("env", []):
        if "value" in item:
            environment[item["name"]] = str(item["value"])
    return environment


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def _port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port as a number: named ports resolve through the container's ports."""
    if isinstance(port, int):
        return port
    numbers = [item["containerPort"] for item in container.get("ports", []) if item.get("name") == port]
    assert len(numbers) == 1, f"the container names no port {port!r}"
    return int(numbers[0])


def _spec_port(spec: ServiceSpec, environment: dict[str, str], name: str = "http") -> int:
    port = next(port for port in spec.ports if port.name == name)
    return int(port.value(environment))


# --- the metrics the services export

# Exported by other programs the dashboards and alerts read: kafka-exporter (docker-compose.yml) and Prometheus.
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag": {"consumergroup", "topic", "partition"},
    "kafka_topic_partition_current_offset": {"topic", "partition"},
    "up": set(),
}
# Labels Prometheus puts on every scraped series.
TARGET_LABELS = {"job", "instance"}
METRICS_MODULES = ("metrics", "adapters.metrics", "entrypoints.metrics")


@functools.cache
def exported_metrics() -> dict[str, set[str]]:
    """Series name -> label names of every metric the services' metrics classes register.

    Counters are exported as `<name>_total` (prometheus_client adds the suffix when the code leaves it off),
    histograms as `_bucket` (with `le`), `_sum` and `_count`.
    """
    import importlib
    import importlib.util

    series: dict[str, set[str]] = {}
    for spec in SPECS:
        for suffix in METRICS_MODULES:
            module_name = f"services.{spec.name}.{suffix}"
            try:
                if importlib.util.find_spec(module_name) is None:
                    continue
            except ModuleNotFoundError:  # no such package (`adapters`) in this service
                continue
            module = importlib.import_module(module_name)
            for name, value in vars(module).items():
                if not (isinstance(value, type) and name.endswith("Metrics") and value.__module__ == module_name):
                    continue
                for metric in vars(value()).values():
                    if isinstance(metric, MetricWrapperBase):
                        series.update(_series(metric))
    return series


def _series(metric: MetricWrapperBase) -> dict[str, set[str]]:
    (description,) = metric.describe()
    # The label names a metric was declared with are not public in prometheus_client.
    labels = set(metric._labelnames)  # type: ignore[attr-defined]
    name, kind = description.name, description.type
    if kind == "counter":
        return {f"{name}_total": labels}
    if kind == "histogram":
        return {f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels}
    return {name: labels}


def known_metrics() -> dict[str, set[str]]:
    return {**exported_metrics(), **EXTERNAL_METRICS}


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def check_query(expression: str) -> set[str]:
    """Parse a PromQL expression; fail on a metric or label nothing exports. Returns the metric names it reads."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    tree = promql_parser.parse(expression)
    metrics = known_metrics()
    read: set[str] = set()
    problems: list[str] = []

    def labels_under(node: Any) -> set[str]:
        found: set[str] = set(TARGET_LABELS)

        def collect(inner: Any) -> bool:
            if isinstance(inner, promql_parser.VectorSelector) and inner.name in metrics:
                found.update(metrics[inner.name])
            return True

        promql_parser.walk(node, collect)
        return found

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None:
                problems.append("a selector names no metric (nothing to hold to the exported names)")
                return True
            read.add(node.name)
            if node.name not in metrics:
                problems.append(f"no service exports {node.name!r}")
                return True
            for matcher in node.matchers.matchers:
                if matcher.name != "__name__" and matcher.name not in metrics[node.name] | TARGET_LABELS:
                    problems.append(f"{node.name} has no label {matcher.name!r}")
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            missing = set(node.modifier.labels) - labels_under(node.expr)
            if missing:
                problems.append(f"grouped by {sorted(missing)}, which {node.expr} does not carry")
        return True

    promql_parser.walk(tree, visit)
    assert not problems, f"{expression}: {problems}"
    return read


# --- docker-compose.yml


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _read_yaml(ROOT / "docker-compose.yml")
    return compose


def _michi_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Michi image (the specs', the topics job, the volume's init)."""
    return {name: service for name, service in _compose()["services"].items() if service.get("image") == "michi:latest"}


def _check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_follows_the_compose_specification() -> None:
    result = _check_compose_schema(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = _compose()
    broken["services"]["ingest"]["healthcheck"]["interval"] = 10  # a duration is a string ("10s")
    broken["services"]["scoring"]["depends_on"]["kafka"]["condition"] = "healthy"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = _check_compose_schema(path)
    assert result.returncode != 0
    assert "interval" in result.stdout and "healthy" in result.stdout


@pytest.mark.parametrize("spec", _spec_ids())
def test_compose_checks_each_service_on_its_readiness_url(spec: ServiceSpec) -> None:
    service = _compose()["services"][spec.name]
    url = f"http://127.0.0.1:{_spec_port(spec, service.get('environment', {}))}{spec.readiness_path}"
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == url, test
    # The image has no curl: Python asks, and an HTTP error (503 not ready) fails the check.
    assert test[1:3] == ["python", "-c"] and "urlopen(sys.argv[1]" in test[3]


def test_compose_servers_have_healthchecks() -> None:
    services = _compose()["services"]
    for name in SERVERS:
        assert services[name]["healthcheck"]["test"], name
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_compose_starts_michi_after_healthy_servers_and_the_topics() -> None:
    services = _compose()["services"]
    for name, service in _michi_services().items():
        if name == "michi-data-init":
            continue
        depends = service["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on without conditions starts before its servers are up"
        for server in SERVERS:
            assert depends[server] == {"condition": "service_healthy"}, (name, server)
        assert depends["michi-data-init"] == {"condition": "service_completed_successfully"}, name
        if name != "topics":
            assert depends["topics"] == {"condition": "service_completed_successfully"}, name
    # And everything waited for as healthy has a healthcheck to be healthy by.
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target, condition in depends.items() if isinstance(depends, dict) else []:
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"


def test_compose_topics_job_creates_the_catalog_topics() -> None:
    topics = _compose()["services"]["topics"]
    assert topics["command"] == ["michi", "topics", "--create"]
    assert topics["restart"] == "no"
    _assert_michi_has_the_command(topics["command"])


def _assert_michi_has_the_command(command: list[str]) -> None:
    from michi.cli import app

    assert command[0] == "michi"
    result = CliRunner().invoke(app, [*command[1:-1], "--help"])
    assert result.exit_code == 0 and command[-1] in result.output, result.output


def _named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume of a compose service (bind mounts start with . or /)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if not source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def test_compose_keeps_kafka_postgres_and_michi_data_on_named_volumes() -> None:
    compose = _compose()
    services, declared = compose["services"], set(compose["volumes"])
    kafka = services["kafka"]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in _named_mounts(kafka)
    assert "/var/lib/postgresql/data" in _named_mounts(services["postgres"])
    home_volumes = set()
    for name, service in _michi_services().items():
        if name == "michi-data-init":
            continue
        environment = service["environment"]
        home = environment["MICHI_HOME"]
        assert home in _named_mounts(service), name
        home_volumes.add(_named_mounts(service)[home])
        blobs = urlsplit(environment["MICHI_BLOB_URL"])
        assert blobs.scheme == "file" and Path(blobs.path).is_relative_to(home), "blobs outside the volume"
    assert len(home_volumes) == 1, "every Michi container shares one home (blobs, models)"
    used = {volume for service in services.values() for volume in _named_mounts(service).values()}
    assert used <= declared
    assert {_named_mounts(kafka)["/var/lib/kafka/data"], *home_volumes} <= declared


def _image_user() -> str:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert users, "the Dockerfile sets no USER: the services would run as root"
    return users[-1]


def test_compose_hands_the_michi_volume_to_the_image_user() -> None:
    user = _image_user()
    assert user in IMAGE_USERS, f"the Dockerfile's user {user!r}: say its number in IMAGE_USERS"
    _, group = IMAGE_USERS[user]
    init = _compose()["services"]["michi-data-init"]
    assert init["user"] == "root"
    (home,) = _named_mounts(init)
    assert init["command"] == ["chown", "-R", f"{user}:{group}", home]
    for name, service in _michi_services().items():
        if name != "michi-data-init":
            assert _named_mounts(service) == _named_mounts(init), name
            assert "user" not in service, f"{name} runs as the image's user"


def test_compose_gives_each_container_only_variables_its_service_reads() -> None:
    """No container holds another service's settings (the trainer's API token stays in the trainer)."""
    for spec in SPECS:
        environment = _compose()["services"][spec.name]["environment"]
        assert {name for name in environment if name.startswith("MICHI_")} <= _service_variables(spec), spec.name


def test_compose_bind_mounts_name_committed_files() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_compose_sends_traces_through_the_collector_to_jaeger() -> None:
    compose = _compose()
    endpoint = urlsplit(compose["x-michi"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    protocol = compose["x-michi"]["environment"]["OTEL_EXPORTER_OTLP_PROTOCOL"]
    assert endpoint.hostname in compose["services"]
    collector = compose["services"][endpoint.hostname]
    mounted = {str(volume).split(":")[1]: str(volume).split(":")[0] for volume in collector["volumes"]}
    config_path = collector["command"][0].removeprefix("--config=")
    assert (ROOT / mounted[config_path]).resolve() == DEPLOY / "otel-collector.yaml"
    config = _read_yaml(DEPLOY / "otel-collector.yaml")
    receiver = config["receivers"]["otlp"]["protocols"][protocol]
    assert receiver["endpoint"].endswith(f":{endpoint.port}")
    pipelines = config["service"]["pipelines"]
    for pipeline in pipelines.values():
        for role in ("receivers", "processors", "exporters"):
            for component in pipeline.get(role, []):
                assert component in config[role], f"a pipeline uses {component}, which the config does not define"
    (traces_exporter,) = pipelines["traces"]["exporters"]
    jaeger = urlsplit(f"//{config['exporters'][traces_exporter]['endpoint']}")
    assert jaeger.hostname in compose["services"] and jaeger.port == 4317  # Jaeger's OTLP gRPC receiver
    (metrics_exporter,) = pipelines["metrics"]["exporters"]
    assert metrics_exporter == "prometheus"
    port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert f"{endpoint.hostname}:{port}" in _scrape_targets()


# --- Prometheus, alerts, Grafana


def _prometheus() -> dict[str, Any]:
    config: dict[str, Any] = _read_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    return config


def _scrape_targets() -> set[str]:
    return {
        target
        for job in _prometheus()["scrape_configs"]
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }


@pytest.mark.parametrize("spec", _spec_ids())
def test_prometheus_scrapes_each_service(spec: ServiceSpec) -> None:
    jobs = {job["job_name"]: job for job in _prometheus()["scrape_configs"]}
    job = jobs[f"michi-{spec.name}"]
    service = _compose()["services"][spec.name]
    (group,) = job["static_configs"]
    assert group["targets"] == [f"{spec.name}:{_spec_port(spec, service.get('environment', {}))}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_loads_the_alerts_compose_mounts() -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounted = {str(volume).split(":")[1]: str(volume).split(":")[0] for volume in prometheus["volumes"]}
    (config_flag,) = [argument for argument in prometheus["command"] if argument.startswith("--config.file=")]
    assert (ROOT / mounted[config_flag.split("=", 1)[1]]).resolve() == DEPLOY / "prometheus" / "prometheus.yml"
    rule_files = _prometheus()["rule_files"]
    assert [(ROOT / mounted[path]).resolve() for path in rule_files] == [DEPLOY / "prometheus" / "alerts.yml"]
    assert "kafka-exporter:9308" in _scrape_targets()


def test_kafka_exporter_watches_every_michi_consumer_group() -> None:
    command = _compose()["services"]["kafka-exporter"]["command"]
    (group_filter,) = [argument.split("=", 1)[1] for argument in command if argument.startswith("--group.filter=")]
    prefix = MichiSettings.model_fields["topic_prefix"].default
    for spec in SPECS:
        assert re.match(group_filter, f"{prefix}{spec.name}"), spec.name


def _alert_rules() -> dict[str, dict[str, Any]]:
    groups = _read_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_alerts_cover_downtime_dead_letters_lag_and_refusals() -> None:
    rules = _alert_rules()
    assert {"MichiServiceDown", "MichiDeadLettersRising", "MichiConsumerLagGrowing", "MichiIngestRefusalsSpike"} <= set(
        rules
    )
    reads = {name: check_query(rule["expr"]) for name, rule in rules.items()}
    assert "up" in reads["MichiServiceDown"]
    assert "kafka_topic_partition_current_offset" in reads["MichiDeadLettersRising"]
    assert "kafka_consumergroup_lag" in reads["MichiConsumerLagGrowing"]
    assert "michi_ingest_uploads_total" in reads["MichiIngestRefusalsSpike"]
    for name, rule in rules.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
    # The down alert watches exactly the scrape jobs of the services.
    jobs = {job["job_name"] for job in _prometheus()["scrape_configs"]}
    matched = {job for job in jobs if re.fullmatch("michi-.+", job)}
    assert matched == {f"michi-{spec.name}" for spec in SPECS}


def test_the_query_check_refuses_unknown_metrics_and_labels() -> None:
    check_query('sum by (reason) (rate(michi_ingest_uploads_total{outcome="refused"}[5m]))')
    with pytest.raises(AssertionError, match="no service exports"):
        check_query("rate(michi_ingest_uploads[5m])")  # a counter is exported with _total
    with pytest.raises(AssertionError, match="no label"):
        check_query('michi_inference_model_served{model_version="1"}')
    with pytest.raises(AssertionError, match="grouped by"):
        check_query("sum by (device_id) (rate(michi_inference_windows_total[5m]))")
    with pytest.raises(ValueError, match="parenthesis"):
        check_query("sum(rate(michi_inference_windows_total[5m])")


def _dashboards() -> dict[str, dict[str, Any]]:
    folder = DEPLOY / "grafana" / "dashboards"
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_grafana_is_provisioned_with_the_compose_mounts() -> None:
    grafana = _compose()["services"]["grafana"]
    mounted = {str(volume).split(":")[1]: (ROOT / str(volume).split(":")[0]).resolve() for volume in grafana["volumes"]}
    assert mounted["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    (provider,) = _read_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")["providers"]
    assert mounted[provider["options"]["path"]] == DEPLOY / "grafana" / "dashboards"
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.name in _dashboards() and str(home.parent) == provider["options"]["path"]
    sources = _read_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    for source in sources:
        assert urlsplit(source["url"]).hostname in _compose()["services"], source["name"]


def test_dashboard_shows_the_fleet_flow_with_real_metric_names() -> None:
    sources = _read_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    uids = {source["uid"]: source["type"] for source in sources}
    dashboards = _dashboards()
    assert "michi-fleet.json" in dashboards
    read: set[str] = set()
    grouped: set[tuple[str, str]] = set()
    for name, dashboard in dashboards.items():
        ids = [panel["id"] for panel in _panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in _panels(dashboard):
            position = panel["gridPos"]
            assert position["x"] + position["w"] <= 24, panel["title"]
            for target in panel.get("targets", []):
                assert uids.get(target["datasource"]["uid"]) == target["datasource"]["type"], panel["title"]
                metrics = check_query(target["expr"])
                read |= metrics
                for label in re.findall(r"by \(([^)]*)\)", target["expr"]):
                    grouped |= {(metric, item.strip()) for metric in metrics for item in label.split(",")}
    # Uploads, windows, detections, scored events, consumer lag, dead letters, models served.
    assert {
        "michi_ingest_uploads_total",
        "michi_inference_windows_total",
        "michi_inference_detections_total",
        "michi_scoring_detections_scored_total",
        "kafka_consumergroup_lag",
        "kafka_topic_partition_current_offset",
        "michi_inference_model_served",
    } <= read
    dead_letter_counters = {name for name in exported_metrics() if "dead_letters" in name}
    assert dead_letter_counters <= read, "a service's dead-letter counter is missing from the dashboard"
    # Refusals by reason, models by version.
    assert ("michi_ingest_uploads_total", "reason") in grouped
    assert ("michi_inference_model_served", "version") in grouped


# --- deploy/kubernetes


@pytest.mark.parametrize("rendering", RENDERINGS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_follow_the_api_schemas(rendering: str, version: str) -> None:
    documents = kubernetes_manifests(rendering)
    assert documents
    for document in documents:
        kind = (document["apiVersion"], document["kind"])
        if kind in CUSTOM_KINDS:
            assert rendering in CUSTOM_KINDS[kind] or rendering == "base", f"{kind} in {rendering}"
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_the_schema_check_refuses_a_broken_manifest() -> None:
    deployment = json.loads(json.dumps(_of_kind(kubernetes_manifests("base"), "Deployment")["michi-ingest"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["portt"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError, match="portt"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_overlays_leave_no_stale_custom_kinds_in_the_base() -> None:
    kinds = {(document["apiVersion"], document["kind"]) for document in kubernetes_manifests("base")}
    assert not kinds & set(CUSTOM_KINDS), "the base must apply on a cluster without KEDA"


@pytest.mark.parametrize("rendering", RENDERINGS)
@pytest.mark.parametrize("spec", _spec_ids())
def test_kubernetes_probes_use_the_spec_port_and_paths(rendering: str, spec: ServiceSpec) -> None:
    documents = kubernetes_manifests(rendering)
    deployment = _michi_deployment(rendering, spec)
    container = _only_container(deployment)
    port = _spec_port(spec, _environment(documents, container))
    readiness, liveness, startup = (
        container[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")
    )
    assert readiness["path"] == spec.readiness_path
    assert liveness["path"] == startup["path"] == "/healthz"
    for probe in (readiness, liveness, startup):
        assert _port_number(container, probe["port"]) == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port and annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("rendering", RENDERINGS)
@pytest.mark.parametrize("spec", _spec_ids())
def test_kubernetes_services_expose_the_spec_ports(rendering: str, spec: ServiceSpec) -> None:
    documents = kubernetes_manifests(rendering)
    container = _only_container(_michi_deployment(rendering, spec))
    service = _of_kind(documents, "Service")[f"michi-{spec.name}"]
    assert service["spec"]["selector"] == _michi_deployment(rendering, spec)["spec"]["selector"]["matchLabels"]
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(ports) == {port.name for port in spec.ports}
    for port in spec.ports:
        expected = _spec_port(spec, _environment(documents, container), port.name)
        assert _port_number(container, ports[port.name]["targetPort"]) == expected
        assert ports[port.name]["port"] == port.default


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_kubernetes_ingress_reaches_ingest_and_annotation(rendering: str) -> None:
    documents = kubernetes_manifests(rendering)
    services = _of_kind(documents, "Service")
    backends = set()
    for ingress in _of_kind(documents, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                names = {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in names, backend
                backends.add(backend["name"])
    assert backends == {"michi-ingest", "michi-annotation"}


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_kubernetes_topics_job_creates_the_catalog_topics(rendering: str) -> None:
    (job,) = _of_kind(kubernetes_manifests(rendering), "Job").values()
    container = _only_container(job)
    assert container["command"] == ["michi", "topics", "--create"]
    assert _pod(job)["restartPolicy"] == "OnFailure"
    _assert_michi_has_the_command(container["command"])


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_kubernetes_disruption_budgets_cover_every_scaled_service(rendering: str) -> None:
    documents = kubernetes_manifests(rendering)
    budgets = [budget["spec"] for budget in _of_kind(documents, "PodDisruptionBudget").values()]
    for spec in SPECS:
        labels = _michi_deployment(rendering, spec)["spec"]["template"]["metadata"]["labels"]
        covering = [budget for budget in budgets if budget["selector"]["matchLabels"].items() <= labels.items()]
        if spec.single_instance:
            # A budget over one pod either blocks every drain or protects nothing.
            assert covering == [], spec.name
        else:
            assert len(covering) == 1, spec.name
            assert covering[0].get("maxUnavailable") == 1 or covering[0].get("minAvailable") is not None


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_kubernetes_pods_run_as_non_root_without_capabilities(rendering: str) -> None:
    uid, _ = IMAGE_USERS[_image_user()]
    for workload in _workloads(kubernetes_manifests(rendering)):
        name, pod = workload["metadata"]["name"], _pod(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
        if not _is_michi(workload):
            continue
        # The image's own user, by number (the kubelet checks runAsNonRoot only against a numeric user).
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["securityContext"]["fsGroup"] == uid, name
        container = _only_container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        home = _environment(kubernetes_manifests(rendering), container)["MICHI_HOME"]
        for writable in (home, "/tmp"):
            assert writable in mounts, f"{name}: {writable} is on the read-only root filesystem"
            assert "emptyDir" in volumes[mounts[writable]] or "persistentVolumeClaim" in volumes[mounts[writable]]


@pytest.mark.parametrize("rendering", RENDERINGS)
@pytest.mark.parametrize("spec", _spec_ids())
def test_kubernetes_services_share_the_blob_store(rendering: str, spec: ServiceSpec) -> None:
    documents = kubernetes_manifests(rendering)
    deployment = _michi_deployment(rendering, spec)
    container = _only_container(deployment)
    blobs = urlsplit(_environment(documents, container)["MICHI_BLOB_URL"])
    assert blobs.scheme == "file"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _pod(deployment)["volumes"]}
    claim = volumes[mounts[blobs.path]]["persistentVolumeClaim"]["claimName"]
    assert claim in _of_kind(documents, "PersistentVolumeClaim")


@pytest.mark.parametrize("rendering", OVERLAYS)
def test_kubernetes_references_resolve(rendering: str) -> None:
    """Every ConfigMap, Secret and claim a pod names is in the rendering (production's Secret: from the template)."""
    documents = kubernetes_manifests(rendering)
    config_maps, secrets = _of_kind(documents, "ConfigMap"), _of_kind(documents, "Secret")
    claims = _of_kind(documents, "PersistentVolumeClaim")
    for workload in _workloads(documents):
        pod = _pod(workload)
        templates = {template["metadata"]["name"] for template in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for item in container.get("env", []):
                reference = item.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["key"] in _secret_data(secrets[reference["name"]]), reference
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in {volume["name"] for volume in pod.get("volumes", [])} | templates


def _secret_templates() -> dict[str, dict[str, str]]:
    """Secret name -> its variables and placeholder values, from overlays/production's *.env.example files."""
    production = KUBERNETES / "overlays" / "production"
    generators = _read_yaml(production / "kustomization.yaml")["secretGenerator"]
    templates = {}
    for generator in generators:
        (source,) = generator["envs"]
        lines = (production / f"{source}.example").read_text().splitlines()
        templates[generator["name"]] = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return templates


def test_kubernetes_secret_templates_list_what_every_overlay_provides() -> None:
    templates = _secret_templates()
    assert set(templates) == {"michi", "michi-trainer"}
    assert set(templates["michi"]) == {"MICHI_TOKEN_SECRET", "MICHI_DATABASE_URL"}
    assert set(templates["michi-trainer"]) == {"MICHI_TRAINER_API_TOKEN"}
    for rendering in OVERLAYS:
        secrets = _of_kind(kubernetes_manifests(rendering), "Secret")
        for name, variables in templates.items():
            (rendered,) = [secret for full, secret in secrets.items() if full.rsplit("-", 1)[0] == name]
            assert set(_secret_data(rendered)) == set(variables), (rendering, name)
    ignored = (KUBERNETES / "overlays" / "production" / ".gitignore").read_text().splitlines()
    generators = _read_yaml(KUBERNETES / "overlays" / "production" / "kustomization.yaml")["secretGenerator"]
    assert {source for generator in generators for source in generator["envs"]} <= set(ignored)


@pytest.mark.parametrize("rendering", OVERLAYS)
def test_kubernetes_sets_only_variables_the_code_reads(rendering: str) -> None:
    """Each Michi pod gets only MICHI_* variables its own settings read (no other service's secret, no typo)."""
    documents = kubernetes_manifests(rendering)
    read = read_variables()
    by_image = {spec.name: _service_variables(spec) for spec in SPECS}
    for workload in _workloads(documents):
        if not _is_michi(workload):
            continue
        container = _only_container(workload)
        environment = {name for name in _environment(documents, container) if name.startswith("MICHI_")}
        command = container["command"]
        own = by_image[command[2]] if command[:2] == ["michi", "run"] else read_variables() & _base_variables()
        assert environment - own == set(), workload["metadata"]["name"]
        assert environment <= read


def _base_variables() -> set[str]:
    return {f"MICHI_{field.upper()}" for field in MichiSettings.model_fields}


@pytest.mark.parametrize("rendering", OVERLAYS)
def test_kubernetes_secrets_and_settings_pass_the_services_own_checks(rendering: str) -> None:
    """Each service's settings class accepts what its pod gets (dev) or refuses the template's placeholders."""
    documents = kubernetes_manifests(rendering)
    for spec in SPECS:
        environment = _environment(documents, _only_container(_michi_deployment(rendering, spec)))
        variables = {name: value for name, value in environment.items() if name in _service_variables(spec)}
        settings_class = resolve(spec.settings)
        with pytest.MonkeyPatch.context() as patch:
            for name in read_variables():
                patch.delenv(name, raising=False)
            for name, value in variables.items():
                patch.setenv(name, value)
            if rendering == "dev":
                settings = settings_class()
                assert settings.env == "dev"
            else:
                with pytest.raises(ValueError, match="must be set to a real secret"):
                    settings_class()


def test_kubernetes_dev_database_password_is_postgres_own() -> None:
    documents = kubernetes_manifests("dev")
    postgres = _only_container(_of_kind(documents, "StatefulSet")["postgres"])
    server = {item["name"]: item for item in postgres["env"]}
    reference = server["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    password = _secret_data(_of_kind(documents, "Secret")[reference["name"]])[reference["key"]]
    spec = next(spec for spec in SPECS if spec.name == "annotation")
    url = urlsplit(_environment(documents, _only_container(_michi_deployment("dev", spec)))["MICHI_DATABASE_URL"])
    assert (url.username, url.password, url.path) == (
        server["POSTGRES_USER"]["value"],
        password,
        f"/{server['POSTGRES_DB']['value']}",
    )
    assert url.hostname in _of_kind(documents, "Service") and url.port == 5432


def test_compose_database_password_is_postgres_own() -> None:
    compose = _compose()
    url = urlsplit(compose["x-michi"]["environment"]["MICHI_DATABASE_URL"])
    server = compose["services"]["postgres"]["environment"]
    assert (url.username, url.password, url.path) == (
        server["POSTGRES_USER"],
        server["POSTGRES_PASSWORD"],
        f"/{server['POSTGRES_DB']}",
    )
    assert url.hostname == "postgres"


def test_kubernetes_autoscaling_reads_the_groups_and_topics_the_services_use() -> None:
    documents = kubernetes_manifests("production")
    environment = _environment(documents, _only_container(_michi_deployment("production", SPECS[0])))
    prefix = environment.get("MICHI_TOPIC_PREFIX", MichiSettings.model_fields["topic_prefix"].default)
    topics = {topic.name(prefix) for topic in CATALOG}
    deployments = _of_kind(documents, "Deployment")
    scaled = _of_kind(documents, "ScaledObject")
    assert scaled, "production scales the stream processors by lag"
    for scaled_object in scaled.values():
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        # A replica count in the manifest would undo the autoscaler's on every apply.
        assert "replicas" not in deployments[target]["spec"], target
        (trigger,) = scaled_object["spec"]["triggers"]
        service = target.removeprefix("michi-")
        assert trigger["metadata"]["consumerGroup"] == f"{prefix}{service}"
        assert trigger["metadata"]["topic"] in topics
        assert trigger["metadata"]["bootstrapServers"] == environment["MICHI_KAFKA_BOOTSTRAP"]
