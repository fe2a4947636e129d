"""`weir transform test` on a real guest and `weir transform new` scaffolding a crate whose own
test passes."""

import json
import os
import subprocess
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


def test_transform_new_scaffolds_a_crate_that_tests_green(tmp_path):
    crate = tmp_path / "my-filter"
    r = subprocess.run([WEIR_BIN, "transform", "new", "my-filter", "--dir", str(crate), "--sdk", str(ROOT / "sdk")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (crate / "Cargo.toml").exists() and (crate / "src/lib.rs").exists()
    env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    t = subprocess.run(["cargo", "test", "--quiet"], cwd=crate, capture_output=True, text=True, timeout=600, env=env)
    assert t.returncode == 0, t.stdout + t.stderr
    assert "1 passed" in t.stdout
    again = subprocess.run([WEIR_BIN, "transform", "new", "my-filter", "--dir", str(crate)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
