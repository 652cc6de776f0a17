"""deploy/kubernetes/ against the Kubernetes API schemas and against the service itself.

Every manifest validates (strictly: no unknown field) against the API of a pinned Kubernetes version,
with the schemas `kubernetes-validate` bundles (offline). Both kustomizations build with `kubectl
kustomize` (where kubectl is installed) into objects that validate too. The rest is what a schema
cannot see: the probes hit the service's real routes on the port it listens on, the Service and the
PodDisruptionBudget select the pods, the drain fits in the grace period, the containers run as the
image's non-root user on a read-only root, and the TOML in the ConfigMap loads as `serve` loads it, with
the secrets where the volumes (or the Vault Agent) put them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support import PROJECT_ROOT

from jwks_service.addresses import split_listen
from jwks_service.cli import GRACEFUL_SHUTDOWN_SECONDS
from jwks_service.config import load_settings, parse_duration, policy_warnings
from jwks_service.http.app import create_app
from jwks_service.runtime import Runtime

KUBERNETES_VERSION = "1.31.0"  # the oldest Kubernetes release still supported upstream when this was written
K8S = PROJECT_ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
VAULT_AGENT = K8S / "vault-agent"
KUSTOMIZATIONS = {"kustomization.yaml"}
PATCHES = {VAULT_AGENT / "deployment-patch.yaml"}  # partial objects: checked through `kubectl kustomize`


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def manifests() -> Iterator[Path]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name not in KUSTOMIZATIONS and path not in PATCHES:
            yield path


def objects(*paths: Path) -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind in `paths`."""
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        for doc in documents(path):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


def base() -> dict[str, dict[str, Any]]:
    return objects(*(p for p in manifests() if p.parent == BASE))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(main)


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations are not built (the manifests are still validated)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture
def app_routes(runtime: Runtime) -> set[tuple[str, str]]:
    app = create_app(runtime=runtime, background=False)
    return {(method, route.path) for route in app.routes for method in (getattr(route, "methods", None) or ())}


# --- The schemas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(manifests()), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("directory", [K8S, VAULT_AGENT], ids=["default", "vault-agent"])
def test_kustomization_builds_objects_that_validate(directory: Path) -> None:
    built = kustomize(directory)
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(k for k in base()), "the build holds the base's objects, no more, no less"
    assert "Secret" not in kinds, "applying must never overwrite the real Secret with the placeholder"
    for doc in built:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "jwks-service"
    (deployment,) = [d for d in built if d["kind"] == "Deployment"]
    assert container(deployment)["image"] == "registry.example.com/jwks-service:0.1.0"


def test_kustomizations_list_every_manifest() -> None:
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name not in KUSTOMIZATIONS)
    top = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    vault = yaml.safe_load((VAULT_AGENT / "kustomization.yaml").read_text())
    assert top["resources"] == ["base"]
    assert vault["resources"] == ["../base"]
    assert (vault["images"], vault["labels"]) == (top["images"], top["labels"]), "the overlay builds the same image"
    assert [p["path"] for p in vault["patches"]] == [p.name for p in PATCHES]


# --- What the schemas cannot see --------------------------------------------------------------------------


def test_probes_and_ports_match_the_service(app_routes: set[tuple[str, str]]) -> None:
    objs = base()
    deployment, service, pdb = objs["Deployment"], objs["Service"], objs["PodDisruptionBudget"]
    main = container(deployment)
    (port,) = main["ports"]
    listen = split_listen(option(main["args"], "--listen"))
    assert port["containerPort"] == listen[1]
    config = tomllib.loads(objs["ConfigMap"]["data"]["jwks.toml"])
    assert split_listen(config["listen"]) == listen, "the configuration and the command line listen alike"
    assert (main["readinessProbe"]["httpGet"]["path"], main["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = main[probe]["httpGet"]
        assert ("GET", get["path"]) in app_routes, f"{probe}: {get['path']} is no route of the service"
        assert get["port"] in (port["name"], port["containerPort"]), f"{probe} checks another port"
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz", "a start may wait for the store"

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])

    replicas = deployment["spec"]["replicas"]
    assert replicas == 3
    budget = pdb["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == replicas - 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_drain_fits_the_grace_period() -> None:
    deployment = base()["Deployment"]
    main = container(deployment)
    drain = parse_duration(option(main["args"], "--drain"), "--drain")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + GRACEFUL_SHUTDOWN_SECONDS, "SIGKILL would cut the drain or the graceful shutdown"
    ready = main["readinessProbe"]
    assert drain >= ready["periodSeconds"] * ready["failureThreshold"] + ready["timeoutSeconds"]
    live = main["livenessProbe"]
    # /healthz answers 503 while draining: liveness must not restart a pod that is draining.
    assert live["periodSeconds"] * live["failureThreshold"] > drain
    assert "lifecycle" not in main, "the drain is the preStop: a preStop sleep would only add to it"


def test_containers_run_unprivileged_on_a_read_only_root() -> None:
    deployment = base()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    image_user = re.search(r"--uid (\d+)", (PROJECT_ROOT / "Dockerfile").read_text())
    assert image_user is not None
    assert pod["securityContext"]["runAsUser"] == int(image_user.group(1)), "the image's own user owns the KEK"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    ctx = main["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    assert pod["automountServiceAccountToken"] is False


def mounted_files(deployment: dict[str, Any], secret: str) -> dict[str, str]:
    """Path in the container -> key of Secret `secret`, for the volumes that mount it."""
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    out = {}
    for volume in pod["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            if source.get("secret", {}).get("name") == secret:
                assert volume["projected"]["defaultMode"] & 0o077 == 0, "the KEK file must be the service's alone"
                for item in source["secret"]["items"]:
                    out[f"{mounts[volume['name']]}/{item['path']}"] = item["key"]
    return out


def settings_in(tmp_path: Path, deployment: dict[str, Any], toml: str) -> Any:
    """The settings as `serve` loads them in the container: the ConfigMap's file and the container's env."""
    path = tmp_path / "jwks.toml"
    path.write_text(toml)
    env = {e["name"]: e["value"] for e in container(deployment).get("env", [])}
    assert env.pop("JWKS_CONFIG") == option(container(deployment)["args"], "--config")
    return load_settings(str(path), environ=env)


def test_the_configmap_loads_with_the_secrets_where_the_volumes_put_them(tmp_path: Path) -> None:
    objs = base()
    deployment = objs["Deployment"]
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    (config_volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == objs["ConfigMap"]["metadata"]["name"]
    config_file = option(container(deployment)["args"], "--config")
    assert config_file == f"{mounts[config_volume['name']]['mountPath']}/jwks.toml"

    settings = settings_in(tmp_path, deployment, objs["ConfigMap"]["data"]["jwks.toml"])
    assert not settings.embedded, "replicas share a Redis"
    assert settings.issuer.startswith("https://")
    assert policy_warnings(settings) == []

    (secret,) = documents(K8S / "secret.yaml")
    files = mounted_files(deployment, secret["metadata"]["name"])
    assert files == {settings.kek_file: "kek", settings.redis.password_file: "redis-password"}
    assert set(secret["stringData"]) == set(files.values())
    assert all(value == "" for value in secret["stringData"].values()), "the placeholder holds no real value"


def test_vault_agent_renders_the_files_the_service_reads(tmp_path: Path) -> None:
    built = {d["kind"]: d for d in kustomize(VAULT_AGENT)}
    deployment = built["Deployment"]
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert pod["spec"]["automountServiceAccountToken"] is True, "Vault's Kubernetes auth needs the token"
    assert annotations["vault.hashicorp.com/agent-run-as-user"] == str(pod["spec"]["securityContext"]["runAsUser"])
    assert mounted_files(deployment, "jwks-service-secrets") == {}, "no Kubernetes Secret in this variant"

    settings = settings_in(tmp_path, deployment, built["ConfigMap"]["data"]["jwks.toml"])
    rendered = {}
    for key, value in annotations.items():
        if name := key.removeprefix("vault.hashicorp.com/agent-inject-secret-"):
            if name != key:
                rendered[f"/vault/secrets/{name}"] = value
                assert annotations[f"vault.hashicorp.com/agent-inject-perms-{name}"] == "0400"
                template = annotations[f"vault.hashicorp.com/agent-inject-template-{name}"]
                assert f'secret "{value}"' in template
    assert set(rendered) == {settings.kek_file, settings.redis.password_file}
