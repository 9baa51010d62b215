"""The deployment files (deploy/) agree with the Procfile, the app and each other."""

from __future__ import annotations

import glob
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from starlette.testclient import TestClient

from app.jobs import DRAIN_TIMEOUT_S
from app.settings import Settings
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
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
    }
    assert expected <= set(files)
    for name in files:
        docs = yaml_docs(DEPLOY / name)
        assert docs, f"{name} has no documents"
        assert all(isinstance(doc, dict) for doc in docs), name
    for doc in k8s_docs():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert "namespace" not in doc["metadata"], "manifests are namespace-agnostic"


def test_procfile_names_web_and_worker() -> None:
    assert procfile() == {"web": "injixo-freshchat web", "worker": "injixo-freshchat worker"}


def test_compose_services_run_the_procfile_commands() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "web", "worker"}
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
