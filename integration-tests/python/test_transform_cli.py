"""`weir transform test` on a real guest, and `weir transform new` scaffolding a crate that
resolves its SDK dependency offline, passes its own test, builds to wasm32 with the release
profile it writes, and runs in the agent's host."""

import json
import os
import subprocess
import tomllib
from pathlib import Path

from conftest import WEIR_BIN
from test_sdk_transforms import WASM

ROOT = Path(__file__).resolve().parents[2]


def test_transform_test_prints_otlp_json_and_stats():
    r = subprocess.run([WEIR_BIN, "transform", "test", "--module", str(WASM / "weir_transform_redact.wasm"),
                        "--input", str(ROOT / "sdk/examples/redact/sample-logs.json"), "--config", '{"mask": "***"}'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    records = out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [x["body"]["stringValue"] for x in records] == ["paid by *** with ***", "nothing personal here"]
    assert records[0]["attributes"][0]["value"]["stringValue"] == "***"
    assert "2 records in, 2 out" in r.stderr
    bad = subprocess.run([WEIR_BIN, "transform", "test", "--module", str(WASM / "weir_transform_redact.wasm"),
                          "--input", str(ROOT / "sdk/examples/redact/sample-logs.json"), "--config", '{"emails": "yes"}'],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid transform config" in bad.stderr


def scaffold(tmp_path, *sdk):
    crate = tmp_path / "my-filter"
    r = subprocess.run([WEIR_BIN, "transform", "new", "my-filter", "--dir", str(crate), *sdk],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (crate / "Cargo.toml").exists() and (crate / "src/lib.rs").exists()
    return crate


def sdk_manifest(crate):
    """Where cargo resolves the crate's weir-sdk dependency, without the network."""
    m = subprocess.run(["cargo", "metadata", "--offline", "--format-version", "1"], cwd=crate,
                       capture_output=True, text=True, timeout=120)
    assert m.returncode == 0, m.stderr
    return Path(next(p["manifest_path"] for p in json.loads(m.stdout)["packages"] if p["name"] == "weir-sdk"))


def test_transform_new_writes_the_recommended_profile_and_a_resolvable_sdk(tmp_path):
    crate = scaffold(tmp_path / "a", "--sdk", str(ROOT / "sdk"))
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    # docs/performance.md: "s" saves 12% of size and costs 1.5x in speed.
    assert manifest["profile"]["release"]["opt-level"] == 3
    assert manifest["profile"]["release"]["lto"] is True and manifest["profile"]["release"]["panic"] == "abort"
    assert manifest["lib"]["crate-type"] == ["cdylib", "rlib"]
    # Its own workspace, so the profile applies wherever the crate is created.
    assert "workspace" in manifest
    # weir-sdk is not on crates.io: a path dependency on the checkout's sdk/.
    assert manifest["dependencies"]["weir-sdk"] == {"path": str((ROOT / "sdk").resolve())}
    assert sdk_manifest(crate) == (ROOT / "sdk" / "Cargo.toml").resolve()

    # Without --sdk: the sdk/ of the checkout the binary was built from.
    default = scaffold(tmp_path / "b")
    found = sdk_manifest(default)
    assert found.parent.name == "sdk" and 'name = "weir-sdk"' in found.read_text()

    bad = subprocess.run([WEIR_BIN, "transform", "new", "x", "--dir", str(tmp_path / "x"), "--sdk", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "give the sdk/ directory of a Weir checkout" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_transform_new_scaffolds_a_crate_that_tests_green(tmp_path):
    crate = scaffold(tmp_path, "--sdk", str(ROOT / "sdk"))
    env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    t = subprocess.run(["cargo", "test", "--quiet"], cwd=crate, capture_output=True, text=True, timeout=600, env=env)
    assert t.returncode == 0, t.stdout + t.stderr
    assert "1 passed" in t.stdout
    again = subprocess.run([WEIR_BIN, "transform", "new", "my-filter", "--dir", str(crate)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_transform_new_crate_builds_to_wasm_and_runs_in_the_host(tmp_path):
    """The generated crate, built as docs/transforms.md says (`cargo build --release --target
    wasm32-unknown-unknown`), with the project's wasm toolchain standing in for rustup's target
    (scripts/setup-wasm-toolchain.sh, which test.sh has already set up for the examples)."""
    crate = scaffold(tmp_path, "--sdk", str(ROOT / "sdk"))
    env_file = subprocess.run([str(ROOT / "scripts/setup-wasm-toolchain.sh")], capture_output=True, text=True,
                              timeout=600, check=True).stdout.strip().splitlines()[-1]
    target = Path(os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))) / "guests"
    b = subprocess.run(["bash", "-c", f'. "{env_file}" && cargo build --release --target wasm32-unknown-unknown '
                        "-Zbuild-std=std,panic_abort"],
                       cwd=crate, capture_output=True, text=True, timeout=1200,
                       env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
    assert b.returncode == 0, b.stderr[-4000:]
    module = target / "wasm32-unknown-unknown" / "release" / "my_filter.wasm"
    assert module.exists()
    r = subprocess.run([WEIR_BIN, "transform", "test", "--module", str(module),
                        "--input", str(ROOT / "sdk/examples/redact/sample-logs.json"), "--config", '{"min_severity": 10}'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [x["body"]["stringValue"] for x in records] == ["nothing personal here"]
    assert "2 records in, 1 out" in r.stderr


def test_transforms_doc_pod_spec_is_a_valid_pod():
    """The pod spec of docs/transforms.md ("Shipping a module to pods"), as a Pod, against the
    Kubernetes schemas (no API server can run here)."""
    import re

    import kubernetes_validate
    import yaml

    section = (ROOT / "docs/transforms.md").read_text().split("## Shipping a module to pods", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)\n```", section, re.S)
    assert len(blocks) == 1
    spec = yaml.safe_load(blocks[0])["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "weir"}, "spec": spec}
    kubernetes_validate.validate(pod, kubernetes_validate.utils.latest_version(), strict=True)
    init, weir = spec["initContainers"][0], spec["containers"][0]
    # The init container fills the volume the agent reads the modules from.
    shared = {m["name"] for m in init["volumeMounts"]} & {m["name"] for m in weir["volumeMounts"]}
    assert {v["name"] for v in spec["volumes"] if "emptyDir" in v} == shared
