"""The Kubernetes examples in configs/kubernetes/: each ConfigMap's weir.toml, with the
environment the pod spec gives the container, passes `weir validate`."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import WEIR_BIN

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "configs" / "kubernetes").glob("*.yaml"))
SECRET = "k8s-secret-value-0123456789"


def pod_env(container):
    """The container's WEIR_ variables, secrets replaced by a placeholder, $(VAR) expanded."""
    plain = {}
    for e in container.get("env", []):
        plain[e["name"]] = e.get("value", SECRET if "secretKeyRef" in e.get("valueFrom", {}) else "node-1")
    if "postgres-url" in str(container):
        plain["WEIR_CONTROL_PLANE__POSTGRES_URL"] = "postgres://weir@db:5432/weir"
    out = {}
    for k, v in plain.items():
        if k.startswith("WEIR_"):
            out[k] = re.sub(r"\$\((\w+)\)", lambda m: plain.get(m.group(1), ""), v)
    return out


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_example_configs_validate(manifest, tmp_path):
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    configs = {d["metadata"]["name"]: d["data"]["weir.toml"] for d in docs if d["kind"] == "ConfigMap"}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    assert configs and workloads
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        container = spec["containers"][0]
        volume = next(v for v in spec["volumes"] if "configMap" in v)
        cfg = tmp_path / "weir.toml"
        cfg.write_text(configs[volume["configMap"]["name"]])
        env = {"PATH": "/usr/bin:/bin", **pod_env(container)}
        r = subprocess.run([WEIR_BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, f"{manifest.name}/{w['metadata']['name']}: {r.stdout}{r.stderr}"
        assert container["args"][0] in ("agent", "control-plane", "compactor", "run")


def test_daemonset_may_list_and_watch_pods():
    """The node agent's service account is bound to a ClusterRole that allows get, list and
    watch on pods: what `[sources.kubernetes_logs.api]` needs (docs/kubernetes-api.md)."""
    manifest = next(m for m in MANIFESTS if m.name == "daemonset.yaml")
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    account = ds["spec"]["template"]["spec"].get("serviceAccountName")
    assert account, "the DaemonSet runs under its own service account"
    assert any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account for d in docs)
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    bound = [
        roles[b["roleRef"]["name"]]
        for b in docs
        if b["kind"] == "ClusterRoleBinding"
        and b["roleRef"]["kind"] == "ClusterRole"
        and any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])
    ]
    granted = {
        verb
        for role in bound
        for rule in role["rules"]
        if "" in rule["apiGroups"] and "pods" in rule["resources"]
        for verb in rule["verbs"]
    }
    assert {"get", "list", "watch"} <= granted, granted
