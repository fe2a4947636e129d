"""The Kubernetes examples in configs/kubernetes/: each ConfigMap's weir.toml, with the
environment Kubernetes gives the container (its declared env, and the variables the kubelet
injects for every Service of the namespace), passes `weir validate`."""

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import WEIR_BIN
from k8s_env import USER_WEIR_SERVICE, container_env

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "configs" / "kubernetes").glob("*.yaml"))
SECRETS = {("weir-control-plane", "postgres-url"): "postgres://weir@db:5432/weir"}


def load(manifest):
    return [d for d in yaml.safe_load_all(manifest.read_text()) if d]


def all_services():
    """Every Service of the examples (they are applied in one namespace), and the `weir`
    Service a user may add in front of the agents."""
    return [d for m in MANIFESTS for d in load(m) if d["kind"] == "Service"] + [USER_WEIR_SERVICE]


def test_examples_define_the_services_whose_variables_collide():
    """The injected variables the next test runs with include WEIR_CONTROL_PLANE_PORT (from the
    example's own Service) and WEIR_PORT: the shapes that used to fail with "unknown field"."""
    [workload] = [d for d in load(next(m for m in MANIFESTS if m.name == "daemonset.yaml")) if d["kind"] == "DaemonSet"]
    spec = workload["spec"]["template"]["spec"]
    env = container_env(spec, spec["containers"][0], all_services(), links=True)
    assert env["WEIR_CONTROL_PLANE_PORT"].startswith("tcp://")
    assert "WEIR_CONTROL_PLANE_PORT_8700_TCP_ADDR" in env
    assert env["WEIR_PORT"].startswith("tcp://")
    assert env["WEIR_SERVICE_PORT_OTLP_GRPC"] == "4317"
    assert env["WEIR_PORT_1514_UDP_PROTO"] == "udp"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_example_configs_validate(manifest, tmp_path):
    docs = load(manifest)
    configs = {d["metadata"]["name"]: d["data"]["weir.toml"] for d in docs if d["kind"] == "ConfigMap"}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    assert configs and workloads
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        name = f"{manifest.name}/{w['metadata']['name']}"
        # The examples turn service links off; Weir must start without that too, so the
        # config is validated with every Service's variables injected, as a pod gets by default.
        assert spec.get("enableServiceLinks") is False, f"{name}: enableServiceLinks: false"
        container = spec["containers"][0]
        assert container["args"][0] in ("agent", "control-plane", "compactor", "run")
        volume = next(v for v in spec["volumes"] if "configMap" in v)
        cfg = tmp_path / "weir.toml"
        cfg.write_text(configs[volume["configMap"]["name"]])
        env = container_env(spec, container, all_services(), SECRETS, links=True)
        assert "WEIR_CONTROL_PLANE_SERVICE_HOST" in env and "WEIR_PORT" in env
        r = subprocess.run(
            [WEIR_BIN, "validate", "--config", str(cfg)],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
            timeout=30,
        )
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"
        assert "WEIR_CONTROL_PLANE_PORT" in r.stderr, r.stderr  # named as ignored


def test_daemonset_may_list_and_watch_pods():
    """The node agent's service account is bound to a ClusterRole that allows get, list and
    watch on pods: what `[sources.kubernetes_logs.api]` needs (docs/kubernetes-api.md)."""
    docs = load(next(m for m in MANIFESTS if m.name == "daemonset.yaml"))
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
