"""The Kubernetes files, checked without a cluster: every manifest against the Kubernetes API
schemas (strict: an unknown field fails), every Secret, ConfigMap and volume claim a workload
names defined with the keys it reads, Services and the autoscaler pointing at workloads that
exist, and the Dagster instance and executor config validated by Dagster itself."""

import copy
import importlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dagster import DagsterInvalidConfigError, job, op, validate_run_config
from dagster._config import process_config
from dagster_k8s import k8s_job_executor

from ml.data.sources import demand_source_of
from ml.settings import Settings
from orchestration.definitions import KUBERNETES, build_definitions

KUBERNETES_VERSION = "1.35.0"
EXECUTOR_FILE = KUBERNETES / "executor.yaml"


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path != EXECUTOR_FILE:
            found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str, docs: list[dict] | None = None) -> dict[str, dict]:
    docs = [doc for _, doc in manifests()] if docs is None else docs
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def walk(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def pod_specs(docs: list[dict] | None = None) -> dict[str, dict]:
    return {
        name: doc["spec"]["template"]["spec"] for name, doc in of_kind("Deployment", docs).items()
    }


def test_the_folder_holds_every_component() -> None:
    deployments = set(of_kind("Deployment"))
    assert {"dagster-webserver", "dagster-daemon", "mlops-user-code"} <= deployments
    assert {"mlflow", "label-studio", "request-service"} <= deployments
    assert "request-service" in {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind("HorizontalPodAutoscaler").values()
    }


@pytest.mark.parametrize(
    ("file", "doc"),
    manifests(),
    ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in manifests()],
)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(file: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_refuses_a_wrong_type_and_a_misspelt_field() -> None:
    service = of_kind("Deployment")["request-service"]
    wrong_type = copy.deepcopy(service)
    wrong_type["spec"]["replicas"] = "two"
    misspelt = copy.deepcopy(service)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")

    for broken in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def undefined_references(docs: list[dict]) -> list[str]:
    """What a workload, the run launcher or the executor names that `docs` do not define."""
    secrets = {name: set(doc["stringData"]) for name, doc in of_kind("Secret", docs).items()}
    config_maps = {name: doc["data"] for name, doc in of_kind("ConfigMap", docs).items()}
    claims = set(of_kind("PersistentVolumeClaim", docs))
    missing = []
    for name, spec in pod_specs(docs).items():
        for node in walk(spec):
            ref = node.get("secretKeyRef")
            if ref and ref["key"] not in secrets.get(ref["name"], ()):
                missing.append(f"{name}: secret {ref['name']} key {ref['key']}")
            if (ref := node.get("secretRef")) and ref["name"] not in secrets:
                missing.append(f"{name}: secret {ref['name']}")
            if (ref := node.get("configMapRef")) and ref["name"] not in config_maps:
                missing.append(f"{name}: config map {ref['name']}")
            if (volume := node.get("secret")) and isinstance(volume, dict):
                keys = {item["key"] for item in volume.get("items", [])}
                if not keys <= secrets.get(volume["secretName"], set()):
                    missing.append(f"{name}: secret volume {volume['secretName']} {keys}")
            if (volume := node.get("configMap")) and volume["name"] not in config_maps:
                missing.append(f"{name}: config map volume {volume['name']}")
            if (claim := node.get("persistentVolumeClaim")) and claim["claimName"] not in claims:
                missing.append(f"{name}: volume claim {claim['claimName']}")
    for mount in (m for spec in pod_specs(docs).values() for m in walk(spec) if "subPath" in m):
        if mount["name"] == "instance" and mount["subPath"] not in config_maps["dagster-instance"]:
            missing.append(f"instance file {mount['subPath']}")
    instance = yaml.safe_load(config_maps["dagster-instance"]["dagster.yaml"])
    executor = yaml.safe_load(EXECUTOR_FILE.read_text())
    for where, config in (
        ("run launcher", instance["run_launcher"]["config"]),
        ("executor", executor),
    ):
        missing += [f"{where}: secret {s}" for s in config["env_secrets"] if s not in secrets]
        missing += [
            f"{where}: config map {c}" for c in config["env_config_maps"] if c not in config_maps
        ]
    return missing


def test_every_secret_config_map_and_claim_named_is_defined_with_the_keys_read() -> None:
    docs = [doc for _, doc in manifests()]
    assert undefined_references(docs) == []

    renamed = copy.deepcopy(docs)
    for doc in renamed:
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "mlops-serving":
            doc["stringData"]["API_KEYS"] = doc["stringData"].pop("MLOPS_SERVING_API_KEYS")
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "mlops-settings":
            doc["metadata"]["name"] = "settings"
    missing = undefined_references(renamed)
    assert "request-service: secret mlops-serving key MLOPS_SERVING_API_KEYS" in missing
    assert "request-service: config map mlops-settings" in missing
    assert "executor: config map mlops-settings" in missing


def config_maps_data(name: str) -> dict[str, str]:
    return of_kind("ConfigMap")[name]["data"]


def test_services_and_the_autoscaler_point_at_workloads_that_exist() -> None:
    deployments = of_kind("Deployment")
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"].items()
        matched = [
            d
            for d, doc in deployments.items()
            if selector <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, f"service {name} selects no deployment"
        ports = {
            p["name"]
            for d in matched
            for c in pod_specs()[d]["containers"]
            for p in c.get("ports", [])
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name
    for name, doc in deployments.items():
        assert doc["spec"]["selector"]["matchLabels"].items() <= (
            doc["spec"]["template"]["metadata"]["labels"].items()
        ), name
    for hpa in of_kind("HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


def test_every_container_has_resources_and_a_health_probe() -> None:
    for name, spec in pod_specs().items():
        for container in spec["containers"]:
            resources = container.get("resources", {})
            assert {"requests", "limits"} <= set(resources), f"{name}: no requests and limits"
            probes = {"readinessProbe", "livenessProbe"} & set(container)
            assert probes, f"{name}: no probe"
            if name != "dagster-daemon":  # a daemon serves nothing: it is only kept alive
                assert "readinessProbe" in container, f"{name}: no readiness probe"
    bento = pod_specs()["request-service"]["containers"][0]
    assert bento["readinessProbe"]["httpGet"]["path"] == "/readyz"


def _configurable(section: dict):
    return getattr(importlib.import_module(section["module"]), section["class"])


def test_the_instance_config_is_valid_to_dagster_and_a_misspelt_key_is_not(tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    text = config_maps_data("dagster-instance")["dagster.yaml"]
    (tmp_path / "dagster.yaml").write_text(text)
    dagster_instance_config(str(tmp_path))
    launcher = yaml.safe_load(text)["run_launcher"]
    assert process_config(_configurable(launcher).config_type(), launcher["config"]).success

    launcher["config"]["image_pull_polcy"] = "IfNotPresent"
    checked = process_config(_configurable(launcher).config_type(), launcher["config"])
    assert not checked.success and "image_pull_polcy" in checked.errors[0].message


def test_the_executor_config_is_valid_to_dagster_and_a_wrong_value_is_not() -> None:
    @op
    def step() -> None: ...

    @job(executor_def=k8s_job_executor)
    def probe() -> None:
        step()

    config = yaml.safe_load(EXECUTOR_FILE.read_text())
    validate_run_config(probe, {"execution": {"config": config}})
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent"):
        validate_run_config(probe, {"execution": {"config": {**config, "max_concurrent": "8x"}}})


def test_mlops_executor_k8s_gives_every_job_the_pod_per_step_executor() -> None:
    settings = replace(Settings.from_env(), executor="k8s")
    defs = build_definitions(settings, demand_source_of(settings))
    assert defs.resolve_job_def("request_ingest_job").executor_def.name == "k8s_job_executor"

    with pytest.raises(ValueError, match="MLOPS_EXECUTOR='celery-typo'"):
        unknown = replace(settings, executor="celery-typo")
        build_definitions(unknown, demand_source_of(unknown))
