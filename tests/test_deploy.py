"""The deployment files (deploy/) agree with the Procfile, the app and each other."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

from app.jobs import DRAIN_TIMEOUT_S
from app.redis_keys import RedisKeys
from app.settings import Settings
from tests.redis_server import free_port
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The Redis Cluster layout (§14): a kustomize overlay of K8S (kustomize refuses an overlay
# inside its base's directory, hence a sibling).
CLUSTER = DEPLOY / "k8s-cluster"
CLUSTER_SCRIPT = CLUSTER / "redis-cluster.sh"
RQ_REDIS_SCRIPT = CLUSTER / "rq-redis.sh"
REDIS_CONF = DEPLOY / "redis.conf"
REDIS_CONF_PATH = "/usr/local/etc/redis/redis.conf"
SECRET_NAME = "injixo-freshchat"
SECRET_KEYS = ("ADMIN_TOKEN", "READER_TOKENS", "ENCRYPTION_KEY")
PROBE_PATHS = ("/healthz", "/readyz")
# HTTP paths the manifests may name besides the probes (served by the app, not probed here).
KNOWN_PATHS = (*PROBE_PATHS, "/metrics")
VERSION_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([.-][A-Za-z0-9.-]+)?$")


def procfile() -> dict[str, str]:
    """The repo-root Procfile as {process: command}."""
    processes: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.strip()
    return processes


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def compose() -> dict[str, Any]:
    """deploy/compose.yaml."""
    (doc,) = yaml_docs(DEPLOY / "compose.yaml")
    return doc


def k8s_docs() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s (the example Secret included)."""
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml_docs(path)
    ]


def k8s(kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name."""
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment or StatefulSet."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The single container of a workload."""
    (only,) = pod_spec(workload)["containers"]
    assert isinstance(only, dict)
    return only


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    """The pod template's labels."""
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def default_services() -> dict[str, Any]:
    """The compose services that run without a profile (`docker compose up`)."""
    return {n: s for n, s in compose()["services"].items() if not s.get("profiles")}


def profile_services(profile: str) -> dict[str, Any]:
    """The compose services of one profile."""
    return {n: s for n, s in compose()["services"].items() if profile in s.get("profiles", [])}


def cluster_kustomization() -> dict[str, Any]:
    """deploy/k8s-cluster/kustomization.yaml."""
    (doc,) = yaml_docs(CLUSTER / "kustomization.yaml")
    return doc


def cluster_docs() -> list[dict[str, Any]]:
    """The objects the overlay adds (its own resources, not the base's)."""
    files = [r for r in cluster_kustomization()["resources"] if r.endswith(".yaml")]
    return [doc for name in files for doc in yaml_docs(CLUSTER / name)]


def cluster_obj(kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name the overlay adds."""
    found = [d for d in cluster_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects in the overlay"
    return found[0]


def cluster_patches() -> dict[str, dict[str, Any]]:
    """The overlay's patch files as {kind: patch}."""
    paths = [p["path"] for p in cluster_kustomization()["patches"] if "path" in p]
    return {doc["kind"]: doc for path in paths for doc in yaml_docs(CLUSTER / path)}


def cluster_settings() -> dict[str, str]:
    """The settings the overlay gives web and worker (base ConfigMap + the overlay's patch)."""
    base: dict[str, str] = k8s("ConfigMap", "injixo-freshchat")["data"]
    patch = cluster_patches()["ConfigMap"]
    assert patch["metadata"]["name"] == "injixo-freshchat"
    overrides: dict[str, str] = patch["data"]
    return base | overrides


def env_values(spec: dict[str, Any]) -> dict[str, str]:
    """A container's plain `env` values."""
    return {e["name"]: e["value"] for e in spec.get("env", []) if "value" in e}


def sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """`redis+sentinel://h1:p1,h2:p2,.../<master name>/<db>` as (hosts, master, db)."""
    match = re.fullmatch(r"redis\+sentinel://([^/]+)/([^/]+)/(\d+)", url)
    assert match, f"not a redis+sentinel URL: {url}"
    hosts = []
    for part in match[1].split(","):
        host, _, port = part.rpartition(":")
        hosts.append((host, int(port)))
    return hosts, match[2], int(match[3])


def pod_dns_names(statefulset: dict[str, Any]) -> list[str]:
    """`<pod>.<headless service>` of every pod of a StatefulSet."""
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    return [f"{name}-{i}.{service}" for i in range(statefulset["spec"]["replicas"])]


def selects(selector_owner: dict[str, Any], workload: dict[str, Any]) -> bool:
    """Whether a Service's or PodDisruptionBudget's selector picks the workload's pods."""
    spec = selector_owner["spec"]
    selector = spec["selector"].get("matchLabels", spec["selector"])
    return bool(selector) and selector.items() <= pod_labels(workload).items()


def workloads() -> list[dict[str, Any]]:
    """Every Deployment and StatefulSet."""
    return [d for d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet")]


def command_text(command: str | list[str]) -> str:
    """A compose/Kubernetes/Dockerfile command as one shell-like string."""
    return command if isinstance(command, str) else shlex.join(command)


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def image_tag(image: str) -> str:
    """The tag of an image reference (`repo/name:tag@sha256:…` → `tag`), or ''."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rpartition(":")[2] if ":" in last else ""


def http_paths(text: str) -> list[str]:
    """The paths of the local HTTP URLs in a command or script."""
    return [urlsplit(url).path for url in re.findall(r"http://[^\s'\"]+", text)]


def conf_directives(text: str) -> dict[str, list[str]]:
    """A redis.conf as {directive: [value, ...]}."""
    directives: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            directives.setdefault(key.lower(), []).append(value.strip())
    return directives


def seconds(duration: str | int) -> int:
    """A compose duration (`330s`, `5m30s`, `1h`) in seconds."""
    if isinstance(duration, int):
        return duration
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, f"not a duration: {duration!r}"
    h, m, s = (int(part or 0) for part in match.groups())
    return h * 3600 + m * 60 + s


def test_every_yaml_file_parses() -> None:
    files = sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.yaml"))
    expected = {
        "compose.yaml",
        "k8s/keda.yaml",
        "k8s/kustomization.yaml",
        "k8s/redis.yaml",
        "k8s/secret.example.yaml",
        "k8s/web.yaml",
        "k8s/worker.yaml",
        "k8s-cluster/kustomization.yaml",
        "k8s-cluster/redis-cluster.yaml",
        "k8s-cluster/rq-redis.yaml",
        "k8s-cluster/config.yaml",
        "k8s-cluster/keda.yaml",
    }
    assert expected <= set(files)
    for name in files:
        docs = yaml_docs(DEPLOY / name)
        assert docs, f"{name} has no documents"
        assert all(isinstance(doc, dict) for doc in docs), name
    for doc in k8s_docs() + cluster_docs() + list(cluster_patches().values()):
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert "namespace" not in doc["metadata"], "manifests are namespace-agnostic"


def test_procfile_names_web_and_worker() -> None:
    assert procfile() == {"web": "injixo-freshchat web", "worker": "injixo-freshchat worker"}


def test_compose_services_run_the_procfile_commands() -> None:
    services = compose()["services"]
    assert set(default_services()) == {"redis", "web", "worker"}
    for name, command in procfile().items():
        assert command_text(services[name]["command"]) == command, name
        assert services[name]["image"] == services["web"]["image"], "one image for both"
    assert services["web"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / services["web"]["build"]["context"]).resolve() == ROOT


def test_compose_secrets_fail_loudly_when_missing() -> None:
    services = compose()["services"]
    for name in procfile():
        env = services[name]["environment"]
        for key in SECRET_KEYS:
            assert re.fullmatch(rf"\$\{{{key}:\?.+\}}", env[key]), (name, key, env[key])
        assert env["REDIS_URL"] == "redis://redis:6379/0"


def test_compose_web_and_worker_health() -> None:
    services = compose()["services"]
    web_check = command_text(services["web"]["healthcheck"]["test"])
    assert http_paths(web_check) == ["/readyz"]
    assert "8000:8000" in services["web"]["ports"]
    assert services["worker"]["healthcheck"] == {"disable": True}


def test_every_image_is_pinned() -> None:
    images = [service["image"] for service in compose()["services"].values()]
    images += [c["image"] for w in workloads() for c in pod_spec(w)["containers"]]
    images += [c["image"] for w in workloads() for c in pod_spec(w).get("initContainers", [])]
    images += [rest.split()[0] for keyword, rest in dockerfile() if keyword == "FROM"]
    assert len(images) >= 8
    for image in images:
        tag = image_tag(image)
        assert tag != "latest", image
        assert VERSION_TAG.match(tag), f"{image}: tag is not a version"
    redis_images = {compose()["services"]["redis"]["image"]}
    redis_images.add(container(k8s("StatefulSet", "redis"))["image"])
    assert len(redis_images) == 1, "compose and Kubernetes run the same Redis"
    kustomize_images = yaml_docs(K8S / "kustomization.yaml")[0]["images"]
    for entry in kustomize_images:
        assert VERSION_TAG.match(entry["newTag"]), entry


def test_redis_conf_makes_a_202_durable() -> None:
    directives = conf_directives(REDIS_CONF.read_text())
    assert directives["appendonly"] == ["yes"]
    assert directives["appendfsync"] == ["always"]
    assert directives["maxmemory-policy"] == ["noeviction"]
    assert directives["dir"] == ["/data"]


def test_compose_redis_runs_the_shipped_conf() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    assert command_text(redis["command"]) == f"redis-server {REDIS_CONF_PATH}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    assert (DEPLOY / mounts[REDIS_CONF_PATH]).resolve() == REDIS_CONF
    assert mounts["/data"] in doc["volumes"], "/data is a named volume"


def test_k8s_redis_runs_the_shipped_conf() -> None:
    statefulset = k8s("StatefulSet", "redis")
    redis = container(statefulset)
    assert redis["command"][:2] == ["redis-server", REDIS_CONF_PATH]
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(statefulset)["volumes"]}
    conf_volume = volumes[mounts[str(Path(REDIS_CONF_PATH).parent)]]
    config_map = k8s("ConfigMap", conf_volume["configMap"]["name"])
    shipped = REDIS_CONF.read_text()
    assert config_map["data"][Path(REDIS_CONF_PATH).name].rstrip("\n") == shipped.rstrip("\n")
    claims = [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]]
    assert mounts["/data"] in claims, "/data is on a PersistentVolumeClaim"
    service = k8s("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels(statefulset).items()


def test_k8s_containers_run_the_procfile_commands() -> None:
    for name, command in procfile().items():
        deployment = k8s("Deployment", name)
        assert command_text(container(deployment)["command"]) == command, name
        assert "args" not in container(deployment)


def test_k8s_env_comes_from_the_secret_and_points_at_redis() -> None:
    redis_service = k8s("Service", k8s("StatefulSet", "redis")["spec"]["serviceName"])
    redis_port = redis_service["spec"]["ports"][0]["port"]
    for name in procfile():
        spec = container(k8s("Deployment", name))
        env = {e["name"]: e for e in spec.get("env", [])}
        for key in SECRET_KEYS:
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": key}
        plain = {k: e["value"] for k, e in env.items() if "value" in e}
        for source in spec.get("envFrom", []):
            plain |= k8s("ConfigMap", source["configMapRef"]["name"])["data"]
        url = urlsplit(plain["REDIS_URL"])
        assert (url.scheme, url.hostname, url.port) == (
            "redis",
            redis_service["metadata"]["name"],
            redis_port,
        )
    secret = yaml_docs(K8S / "secret.example.yaml")[0]
    assert secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) == set(SECRET_KEYS)
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())


def test_k8s_probes_point_at_real_endpoints(client: TestClient) -> None:
    web = container(k8s("Deployment", "web"))
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["ports"][0]["containerPort"] == Settings.model_fields["port"].default
    probed: set[str] = set()
    named: set[str] = set()
    for workload in workloads():
        for spec in pod_spec(workload)["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "httpGet" in spec.get(probe, {}):
                    probed.add(spec[probe]["httpGet"]["path"])
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        named.update(v for k, v in annotations.items() if k.endswith("/path"))
    for keyword, rest in dockerfile():
        if keyword == "HEALTHCHECK":
            probed.update(http_paths(rest))
    probed.update(http_paths(command_text(compose()["services"]["web"]["healthcheck"]["test"])))
    assert probed == set(PROBE_PATHS)
    for path in sorted(probed):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    assert named <= set(KNOWN_PATHS), named


def test_workers_outlive_a_drain_job_when_stopped() -> None:
    worker = k8s("Deployment", "worker")
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > DRAIN_TIMEOUT_S
    assert seconds(compose()["services"]["worker"]["stop_grace_period"]) > DRAIN_TIMEOUT_S


def test_keda_scales_the_worker_on_backlog() -> None:
    (scaled,) = [d for d in k8s_docs() if d["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    worker = k8s("Deployment", target["name"])
    assert command_text(container(worker)["command"]) == procfile()["worker"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] <= Settings.model_fields["shards"].default
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    assert triggers.keys() <= {"redis", "prometheus"} and triggers
    if "redis" in triggers:
        queue = Settings.model_fields["rq_queue"].default
        assert triggers["redis"]["listName"] == f"rq:queue:{queue}"
        assert int(triggers["redis"]["listLength"]) >= 1
    if "prometheus" in triggers:
        assert "injixo_backlog_events" in triggers["prometheus"]["query"]
        assert float(triggers["prometheus"]["threshold"]) > 0


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    (kustomization,) = yaml_docs(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}
    assert all((K8S / name).exists() for name in listed)


def test_pods_run_as_non_root() -> None:
    uid_in_image = dockerfile_user().split(":")[0]
    for workload in workloads():
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert context["runAsUser"] != 0
        for spec in pod_spec(workload)["containers"]:
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        if workload["metadata"]["name"] in procfile():
            assert str(context["runAsUser"]) == uid_in_image


def dockerfile_user() -> str:
    """The last USER of the Dockerfile (the one the image runs as)."""
    users = [rest for keyword, rest in dockerfile() if keyword == "USER"]
    assert users, "the Dockerfile sets no USER"
    return users[-1]


def test_dockerfile_runs_the_web_process_as_non_root() -> None:
    instructions = dockerfile()
    user = dockerfile_user()
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"
    assert int(uid) != 0 and user.split(":")[0] != "root"
    stages = [rest.split() for keyword, rest in instructions if keyword == "FROM"]
    for stage in stages:
        assert re.search(r":\d+\.\d+\.\d+", stage[0]), f"FROM {stage[0]} is not pinned"
    (cmd,) = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert command_text(json.loads(cmd)) == procfile()["web"]
    assert not [k for k, _ in instructions if k == "ENTRYPOINT"]
    assert ("EXPOSE", "8000") in instructions
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in runs)


def test_dockerfile_copies_what_pip_install_needs() -> None:
    copied = [
        rest.split()[:-1]
        for keyword, rest in dockerfile()
        if keyword == "COPY" and not rest.startswith("--from")
    ]
    sources = {source for args in copied for source in args}
    assert {"pyproject.toml", "app", "workers"} <= sources
    for source in sorted(sources):
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = pyproject["project"].get("readme")
    if readme:
        assert readme in sources, "pip install . needs the readme named in pyproject.toml"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and ".env" in ignored


@pytest.mark.parametrize("package", ["app", "workers"])
def test_pip_install_ships_every_data_file(package: str) -> None:
    """`pip install .` (the image) gets the Lua scripts, templates and static files too."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools.get("package-data", {}).get(package, [])
    shipped = {p for pattern in patterns for p in glob.glob(pattern, root_dir=ROOT / package)}
    data_files = {
        p.relative_to(ROOT / package).as_posix()
        for p in (ROOT / package).rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert data_files <= shipped, f"not in the wheel: {sorted(data_files - shipped)}"


# --- the Redis Cluster layout (§14): deploy/k8s-cluster and the compose profile `cluster` ---


def test_cluster_overlay_replaces_the_single_redis_of_the_base() -> None:
    kustomization = cluster_kustomization()
    assert "../k8s" in kustomization["resources"]
    on_disk = {p.name for p in CLUSTER.glob("*.yaml")} - {"kustomization.yaml"}
    patch_files = {p["path"] for p in kustomization["patches"] if "path" in p}
    listed = {r for r in kustomization["resources"] if r.endswith(".yaml")}
    assert listed | patch_files == on_disk and not listed & patch_files
    generated = {
        g["name"]: [CLUSTER / f for f in g["files"]] for g in kustomization["configMapGenerator"]
    }
    assert all(f.is_file() for files in generated.values() for f in files)
    # Every ConfigMap a pod mounts is the base's redis-config or generated here.
    for workload in cluster_docs():
        if workload["kind"] in ("StatefulSet", "Job"):
            for volume in pod_spec(workload)["volumes"]:
                if "configMap" in volume:
                    name = volume["configMap"]["name"]
                    assert name in generated or k8s("ConfigMap", name), name
    # What it deletes from the base: the single Redis (its redis-config stays, in use).
    deleted = set()
    for entry in kustomization["patches"]:
        if "patch" in entry:
            doc = yaml.safe_load(entry["patch"])
            assert doc["$patch"] == "delete"
            deleted.add((doc["kind"], doc["metadata"]["name"]))
    redis = k8s("StatefulSet", "redis")
    assert deleted == {("StatefulSet", "redis"), ("Service", redis["spec"]["serviceName"])}
    # Patches apply to objects of the base.
    assert k8s("ConfigMap", cluster_patches()["ConfigMap"]["metadata"]["name"])
    assert [d for d in k8s_docs() if d["kind"] == "ScaledObject"]


def test_cluster_settings_are_settings_of_the_app() -> None:
    settings = cluster_settings()
    fields = {name.upper() for name in Settings.model_fields}
    patch = cluster_patches()["ConfigMap"]["data"]
    # REDIS_CLUSTER: §14's setting (`redis_cluster: bool` in app/settings.py).
    assert set(patch) >= {
        "REDIS_CLUSTER",
        "REDIS_URL",
        "RQ_REDIS_URL",
        "REDIS_REPLICA_ACKS",
        "SHARDS",
    }
    assert set(settings) <= fields, f"not settings of the app: {set(settings) - fields}"
    assert settings["REDIS_CLUSTER"] == "true"
    assert int(settings["REDIS_REPLICA_ACKS"]) >= 1, "a failover must lose no accepted event"
    assert 64 <= int(settings["SHARDS"]) <= 256, "64-256 shards spread well on a cluster"
    assert int(settings["SHARDS"]) >= Settings.model_fields["shards"].default, "never lower"


def validated(env: dict[str, str]) -> Settings:
    """Settings from these variables alone (plus placeholder secrets), as the app checks them."""
    secrets = {"ADMIN_TOKEN": "x" * 16, "ENCRYPTION_KEY": Fernet.generate_key().decode()}
    return Settings.model_validate({k.lower(): v for k, v in (secrets | env).items()})


def test_cluster_settings_validate() -> None:
    """The app accepts the overlay's settings as they are (secrets aside)."""
    env = cluster_settings()
    settings = validated(env)
    assert settings.redis_cluster is True
    assert settings.redis_url == env["REDIS_URL"]
    assert settings.rq_url == env["RQ_REDIS_URL"]
    sentinel = settings.rq_sentinel
    assert sentinel is not None
    parsed = (list(sentinel.sentinels), sentinel.master, sentinel.db)
    assert parsed == sentinel_url(env["RQ_REDIS_URL"])


def test_cluster_redis_url_reaches_the_cluster_nodes() -> None:
    statefulset = cluster_obj("StatefulSet", "redis-cluster")
    url = urlsplit(cluster_settings()["REDIS_URL"])
    service = cluster_obj("Service", str(url.hostname))
    assert service["spec"].get("clusterIP") != "None", "any ready node, not the pod list"
    assert selects(service, statefulset)
    ports = {p["port"] for p in service["spec"]["ports"]}
    assert (url.scheme, url.port, url.path) == ("redis", 6379, "/0") and url.port in ports
    nodes = cluster_obj("Service", statefulset["spec"]["serviceName"])
    assert nodes["spec"]["clusterIP"] == "None" and selects(nodes, statefulset)
    assert nodes["spec"]["publishNotReadyAddresses"] is True, "nodes meet before ready"


def test_cluster_is_six_nodes_on_the_shipped_redis_conf() -> None:
    statefulset = cluster_obj("StatefulSet", "redis-cluster")
    assert statefulset["spec"]["replicas"] == 6
    # All pods start together: a node is ready only once the cluster is ok.
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    redis = container(statefulset)
    assert command_text(redis["command"]).startswith(f"bash /scripts/{CLUSTER_SCRIPT.name} start")
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(statefulset)["volumes"]}
    conf = volumes[mounts[str(Path(REDIS_CONF_PATH).parent)]]["configMap"]["name"]
    shipped = k8s("ConfigMap", conf)["data"][Path(REDIS_CONF_PATH).name]
    directives = conf_directives(shipped)
    assert directives["appendonly"] == ["yes"] and directives["appendfsync"] == ["always"]
    assert directives["maxmemory-policy"] == ["noeviction"]
    claims = [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]]
    assert mounts["/data"] in claims
    script = CLUSTER_SCRIPT.read_text()
    assert 'exec redis-server "$REDIS_CONF"' in script, "redis.conf first, cluster options after"
    assert "--cluster-enabled yes" in script
    env = {e["name"] for e in redis["env"]}
    assert "ANNOUNCE_HOSTNAME" in env
    probes = command_text(redis["readinessProbe"]["exec"]["command"])
    assert probes.endswith(" ready")
    assert command_text(redis["lifecycle"]["preStop"]["exec"]["command"]).endswith(" pre-stop")


def test_cluster_create_job_makes_three_masters_with_a_replica_each() -> None:
    statefulset = cluster_obj("StatefulSet", "redis-cluster")
    (job,) = [d for d in cluster_docs() if d["kind"] == "Job"]
    create = container(job)
    assert command_text(create["command"]).endswith(f"{CLUSTER_SCRIPT.name} create")
    assert create["image"] == container(statefulset)["image"]
    env = env_values(create)
    nodes = env["CLUSTER_NODES"].split()
    assert nodes == [f"{name}:6379" for name in pod_dns_names(statefulset)]
    replicas = int(env["CLUSTER_REPLICAS"])
    assert (replicas, len(nodes) // (1 + replicas)) == (1, 3)
    script = CLUSTER_SCRIPT.read_text()
    assert re.search(r"redis-cli --cluster create .*--cluster-replicas \S+ --cluster-yes", script)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_cluster_pods_are_spread_and_disruptions_are_bounded() -> None:
    for name in ("redis-cluster", "rq-redis", "rq-sentinel"):
        statefulset = cluster_obj("StatefulSet", name)
        anti = pod_spec(statefulset)["affinity"]["podAntiAffinity"]
        terms = [t.get("podAffinityTerm", t) for rule in anti.values() for t in rule]
        assert any(
            t["topologyKey"] == "kubernetes.io/hostname"
            and t["labelSelector"]["matchLabels"].items() <= pod_labels(statefulset).items()
            for t in terms
        ), name
        budgets = [
            d
            for d in cluster_docs()
            if d["kind"] == "PodDisruptionBudget" and selects(d, statefulset)
        ]
        assert len(budgets) == 1, name
        assert budgets[0]["spec"]["maxUnavailable"] == 1, name


def test_rq_redis_is_highly_available_with_sentinel() -> None:
    redis = cluster_obj("StatefulSet", "rq-redis")
    sentinel = cluster_obj("StatefulSet", "rq-sentinel")
    assert redis["spec"]["replicas"] >= 3 and sentinel["spec"]["replicas"] == 3
    redis_env, sentinel_env = env_values(container(redis)), env_values(container(sentinel))
    quorum = int(sentinel_env["QUORUM"])
    assert quorum == sentinel["spec"]["replicas"] // 2 + 1
    assert redis_env["MASTER_NAME"] == sentinel_env["MASTER_NAME"]
    assert redis_env["SENTINELS"] == sentinel_env["SENTINELS"]
    assert redis_env["SEED_MASTER"] == sentinel_env["SEED_MASTER"]
    assert redis_env["SEED_MASTER"].startswith(pod_dns_names(redis)[0] + ".")
    sentinels = [s.rpartition(":")[0] for s in sentinel_env["SENTINELS"].split()]
    assert [s.split(".")[:2] for s in sentinels] == [n.split(".") for n in pod_dns_names(sentinel)]
    for statefulset in (redis, sentinel):
        service = cluster_obj("Service", statefulset["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None" and selects(service, statefulset)
        assert service["spec"]["publishNotReadyAddresses"] is True
    # RQ's Redis runs the shipped redis.conf (a plain Redis: RQ does not run on a cluster).
    volumes = {v["name"]: v for v in pod_spec(redis)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "redis-config"
    assert "--cluster-enabled" not in RQ_REDIS_SCRIPT.read_text()
    # The app finds it through the same Sentinels, by the same master name.
    hosts, master, db = sentinel_url(cluster_settings()["RQ_REDIS_URL"])
    assert [h for h, _ in hosts] == pod_dns_names(sentinel)
    port = container(sentinel)["ports"][0]["containerPort"]
    assert {p for _, p in hosts} == {port} and (master, db) == (redis_env["MASTER_NAME"], 0)


def test_cluster_keda_triggers_work_against_a_cluster() -> None:
    patch = cluster_patches()["ScaledObject"]
    (base,) = [d for d in k8s_docs() if d["kind"] == "ScaledObject"]
    assert patch["metadata"]["name"] == base["metadata"]["name"]
    triggers = patch["spec"]["triggers"]
    kinds = {t["type"] for t in triggers}
    assert "redis" not in kinds, "KEDA's plain redis scaler cannot read a cluster"
    assert kinds <= {"redis-sentinel", "redis-cluster-streams", "prometheus"}
    assert {"redis-sentinel", "redis-cluster-streams"} <= kinds
    settings = cluster_settings()
    shards = int(settings["SHARDS"])
    assert 1 <= patch["spec"]["maxReplicaCount"] <= shards
    # RQ's queue, on RQ's Redis, through its Sentinels.
    (queue,) = [t["metadata"] for t in triggers if t["type"] == "redis-sentinel"]
    hosts, master, _ = sentinel_url(settings["RQ_REDIS_URL"])
    assert queue["listName"] == f"rq:queue:{Settings.model_fields['rq_queue'].default}"
    assert int(queue["listLength"]) >= 1
    assert queue["sentinelMaster"] == master
    addresses = [a.strip() for a in queue["addresses"].split(",")]
    assert [(a.split(".")[:2], int(a.rpartition(":")[2])) for a in addresses] == [
        (h.split("."), p) for h, p in hosts
    ]
    # Pending events: one stream per shard on the data cluster, by XLEN (no consumer group).
    streams = [t["metadata"] for t in triggers if t["type"] == "redis-cluster-streams"]
    keys = RedisKeys(Settings.model_fields["key_prefix"].default)
    assert sorted(s["stream"] for s in streams) == sorted(keys.stream(i) for i in range(shards))
    service = urlsplit(settings["REDIS_URL"]).hostname
    for stream in streams:
        assert "consumerGroup" not in stream and int(stream["streamLength"]) >= 1
        assert stream["addresses"].split(".")[0] == service


def test_cluster_workloads_are_pinned_and_non_root() -> None:
    redis_image = container(k8s("StatefulSet", "redis"))["image"]
    for workload in cluster_docs():
        if workload["kind"] not in ("StatefulSet", "Job"):
            continue
        context = pod_spec(workload)["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
        for spec in pod_spec(workload)["containers"]:
            assert spec["image"] == redis_image, "one Redis image everywhere"
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False


def test_cluster_scripts_are_valid_bash() -> None:
    for script in (CLUSTER_SCRIPT, RQ_REDIS_SCRIPT):
        subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_cluster_overlay_renders() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(CLUSTER)], check=True, capture_output=True, text=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "redis") not in names and ("Service", "redis") not in names
    assert {("StatefulSet", "redis-cluster"), ("Job", "redis-cluster-create")} <= names
    assert ("ConfigMap", "redis-config") in names
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == SECRET_NAME
    ]
    assert config["data"] == cluster_settings()
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled["spec"]["triggers"] == cluster_patches()["ScaledObject"]["spec"]["triggers"]
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for workload in docs:
        if workload["kind"] in ("StatefulSet", "Job", "Deployment"):
            for volume in pod_spec(workload).get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps


def test_compose_default_profile_is_unchanged() -> None:
    services = default_services()
    assert set(services) == {"redis", "web", "worker"}
    for name in ("web", "worker"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert "REDIS_CLUSTER" not in services[name]["environment"]
        assert set(services[name]["depends_on"]) == {"redis"}


def test_compose_cluster_profile() -> None:
    services = profile_services("cluster")
    nodes = {
        name: s
        for name, s in services.items()
        if command_text(s["command"]).endswith(f"{CLUSTER_SCRIPT.name} start")
    }
    assert len(nodes) == 6
    for name, node in nodes.items():
        assert node["environment"]["ANNOUNCE_HOSTNAME"] == name
        mounts = {v.split(":")[1]: v.split(":")[0] for v in node["volumes"]}
        assert (DEPLOY / mounts[REDIS_CONF_PATH]).resolve() == REDIS_CONF
        script = mounts[command_text(node["command"]).split()[1]]
        assert (DEPLOY / script).resolve() == CLUSTER_SCRIPT, "the script Kubernetes runs"
        assert mounts["/data"] in compose()["volumes"]
    (create,) = [s for s in services.values() if command_text(s["command"]).endswith(" create")]
    assert create["environment"]["CLUSTER_NODES"].split() == [f"{n}:6379" for n in nodes]
    assert create["environment"]["CLUSTER_REPLICAS"] == "1"
    assert all(create["depends_on"][n]["condition"] == "service_healthy" for n in nodes)
    create_name = next(n for n, s in services.items() if s is create)
    apps = {
        n: s for n, s in services.items() if s.get("image") == compose()["services"]["web"]["image"]
    }
    assert {command_text(s["command"]) for s in apps.values()} == set(procfile().values())
    for app in apps.values():
        env = app["environment"]
        assert env["REDIS_CLUSTER"] == "true"
        assert urlsplit(env["REDIS_URL"]).hostname in nodes
        rq_host = urlsplit(env["RQ_REDIS_URL"]).hostname
        assert rq_host in services and rq_host not in nodes, "RQ on a Redis of its own"
        assert command_text(services[str(rq_host)]["command"]) == f"redis-server {REDIS_CONF_PATH}"
        assert int(env["REDIS_REPLICA_ACKS"]) >= 1
        for key in SECRET_KEYS:
            assert re.fullmatch(rf"\$\{{{key}:\?.+\}}", env[key]), key
        assert app["depends_on"][create_name]["condition"] == "service_completed_successfully"
        # The app accepts them (with compose's defaults, placeholder secrets).
        plain = {
            k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
            for k, v in env.items()
            if k not in SECRET_KEYS
        }
        assert validated(plain).redis_cluster is True
        assert app["depends_on"][rq_host]["condition"] == "service_healthy"
    (web,) = [s for s in apps.values() if command_text(s["command"]) == procfile()["web"]]
    (worker,) = [s for s in apps.values() if command_text(s["command"]) == procfile()["worker"]]
    assert http_paths(command_text(web["healthcheck"]["test"])) == ["/readyz"]
    assert "8000:8000" not in web["ports"], "runs next to the default web"
    assert seconds(worker["stop_grace_period"]) > DRAIN_TIMEOUT_S


# --- the cluster script on a real local cluster ---------------------------------------------


class ScriptCluster:
    """6 local nodes run by deploy/k8s-cluster/redis-cluster.sh, as the pods run them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        # deploy/redis.conf names /data; the nodes get their own directories.
        conf = re.sub(r"(?m)^dir .*$", f"dir {tmp}", REDIS_CONF.read_text())
        (tmp / "redis.conf").write_text(conf)
        ports: list[int] = []
        while len(ports) < 12:
            if (port := free_port()) not in ports:
                ports.append(port)
        self.ports, bus_ports = ports[:6], ports[6:]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port, bus in zip(self.ports, bus_ports, strict=True):
            data = tmp / str(port)
            data.mkdir()
            env = self.env(port) | {
                "ANNOUNCE_HOSTNAME": "localhost",
                "REDIS_CONF": str(tmp / "redis.conf"),
                "DATA_DIR": str(data),
            }
            command = ["bash", str(CLUSTER_SCRIPT), "start", "--cluster-port", str(bus)]
            command += ["--save", "", "--logfile", str(data / "log")]
            self.procs.append(subprocess.Popen(command, env=env))

    def env(self, port: int) -> dict[str, str]:
        return {**os.environ, "REDIS_PORT": str(port)}

    def run(self, action: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
        env = self.env(port or self.ports[0])
        env["CLUSTER_NODES"] = " ".join(f"localhost:{p}" for p in self.ports)
        return subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def role(self, port: int) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "role"], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[0]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


@pytest.fixture
def script_cluster(tmp_path: Path) -> Iterator[ScriptCluster]:
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("redis-server/redis-cli not installed")
    cluster = ScriptCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_cluster_script_creates_once_and_hands_over_on_stop(script_cluster: ScriptCluster) -> None:
    created = script_cluster.run("create")
    assert created.returncode == 0, created.stderr
    again = script_cluster.run("create")
    assert again.returncode == 0 and "exists already" in again.stdout, again.stdout
    deadline = time.monotonic() + 30
    while not all(script_cluster.run("ready", p).returncode == 0 for p in script_cluster.ports):
        assert time.monotonic() < deadline, "nodes not ready (cluster ok, replicas in sync)"
        time.sleep(0.5)
    roles = {p: script_cluster.role(p) for p in script_cluster.ports}
    assert sorted(roles.values()) == ["master"] * 3 + ["slave"] * 3
    master = next(p for p, role in roles.items() if role == "master")
    stopped = script_cluster.run("pre-stop", master)
    assert stopped.returncode == 0, stopped.stderr
    assert script_cluster.role(master) == "slave", "the replica took over before the stop"
