"""The environment a container sees in Kubernetes, built from manifests the way the kubelet
builds it (pkg/kubelet/kubelet_pods.go makeEnvironmentVariables, pkg/kubelet/envvars):

- service links: for every Service of the pod's namespace that has a cluster IP, when the pod's
  `enableServiceLinks` is not false, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`,
  `<NAME>_SERVICE_PORT_<PORT NAME>` and the docker-link variables `<NAME>_PORT`,
  `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]` (NAME upper-cased, `-` → `_`); the
  `kubernetes` Service's variables are set whatever `enableServiceLinks` says;
- the container's `envFrom`, then its `env` in order, `$(VAR)` expanded from the variables
  defined before it and the service variables (an unknown reference stays as written, `$$` is
  a literal `$`); `env` wins over service variables of the same name.

Used by the tests that run `weir validate` on the example manifests and the Helm chart, so a
config that breaks on a variable Kubernetes injects fails here first."""

import re

# The API server's Service, in the `default` namespace of every cluster.
KUBERNETES_SERVICE = {
    "kind": "Service",
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
}

# A Service users commonly put in front of the agents; its name gives WEIR_PORT, WEIR_SERVICE_HOST...
USER_WEIR_SERVICE = {
    "kind": "Service",
    "metadata": {"name": "weir"},
    "spec": {
        "ports": [
            {"name": "otlp-grpc", "port": 4317, "protocol": "TCP"},
            {"name": "otlp-http", "port": 4318},
            {"name": "syslog-udp", "port": 1514, "protocol": "UDP"},
        ]
    },
}

FIELD_VALUES = {
    "spec.nodeName": "node-1",
    "spec.serviceAccountName": "weir",
    "metadata.name": "weir-agent-x7k2p",
    "metadata.namespace": "observability",
    "metadata.uid": "0f8b4c2e-6d1a-4f7e-9b3c-2a5d8e1f0c47",
    "status.podIP": "10.244.1.17",
    "status.hostIP": "192.0.2.10",
}


def _env_name(name):
    return name.upper().replace("-", "_")


def service_links(services):
    """The service-link variables of `services` (Service manifests), in the kubelet's order.
    A Service without `spec.clusterIP` is given one (10.96.1.N); `None` or "" means headless:
    no variables."""
    out = {}
    for i, svc in enumerate(services):
        spec = svc["spec"]
        ip = spec.get("clusterIP", f"10.96.1.{i + 10}")
        if ip in ("None", "", None) or spec.get("type") == "ExternalName":
            continue
        prefix = _env_name(svc["metadata"]["name"])
        ports = spec["ports"]
        out[prefix + "_SERVICE_HOST"] = ip
        out[prefix + "_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                out[prefix + "_SERVICE_PORT_" + _env_name(p["name"])] = str(p["port"])
        for n, p in enumerate(ports):
            proto = p.get("protocol", "TCP")
            url = f"{proto.lower()}://{ip}:{p['port']}"
            if n == 0:
                out[prefix + "_PORT"] = url
            pp = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
            out[pp] = url
            out[pp + "_PROTO"] = proto.lower()
            out[pp + "_PORT"] = str(p["port"])
            out[pp + "_ADDR"] = ip
    return out


def _expand(value, defined):
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return defined.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def container_env(pod_spec, container, services, secrets=None, config_maps=None, links=None):
    """The environment of `container` in a pod with `pod_spec`, in a namespace holding
    `services`. `secrets` maps (secret, key) to a value (default: a placeholder), and
    `config_maps` maps a ConfigMap name to its data. `links` overrides the pod's
    `enableServiceLinks` (True: inject every Service's variables, as a pod without the setting
    gets)."""
    secrets = secrets or {}
    config_maps = config_maps or {}
    enabled = pod_spec.get("enableServiceLinks", True) if links is None else links
    service_env = service_links([KUBERNETES_SERVICE])
    if enabled:
        service_env.update(service_links(services))

    def secret(name, key):
        return secrets.get((name, key), "k8s-secret-value-0123456789")

    env = {}
    for src in container.get("envFrom", []):
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            for k, v in config_maps.get(src["configMapRef"]["name"], {}).items():
                env[prefix + k] = v
        elif "secretRef" in src:
            for (name, k), v in secrets.items():
                if name == src["secretRef"]["name"]:
                    env[prefix + k] = v
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = _expand(e["value"], {**service_env, **env})
            continue
        ref = e.get("valueFrom", {})
        if "fieldRef" in ref:
            env[e["name"]] = FIELD_VALUES[ref["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in ref:
            env[e["name"]] = secret(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        elif "configMapKeyRef" in ref:
            env[e["name"]] = config_maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        elif "resourceFieldRef" in ref:
            env[e["name"]] = "1"
        else:
            env[e["name"]] = ""
    return {**service_env, **env}
