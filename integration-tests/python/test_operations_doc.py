"""The PrometheusRule in docs/operations.md ("Alerts"): Prometheus' own promtool accepts it,
every metric it names is one the agent defines, and `promtool test rules` shows each alert
firing on the series it is meant for (and WeirNotFlushing staying quiet for an idle agent)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"

# Series at a 1-minute interval: instance "a" is in trouble, instance "idle" holds nothing.
SERIES = {
    'weir_buffer_bytes{instance="a",job="weir"}': "900000000+0x60",
    'weir_buffer_bytes{instance="idle",job="weir"}': "0+0x60",
    'weir_rejected_requests_total{instance="a",job="weir",source="otlp_http",reason="buffer_full"}': "0+10x60",
    'weir_rejected_requests_total{instance="a",job="weir",source="otlp_grpc",reason="malformed"}': "0+60x60",
    'weir_last_flush_seconds{instance="a",job="weir"}': "0+0x60",
    'weir_last_flush_seconds{instance="idle",job="weir"}': "0+0x60",
    'weir_buffer_entries{instance="a",job="weir"}': "5+0x60",
    'weir_buffer_entries{instance="idle",job="weir"}': "0+0x60",
    'weir_flush_errors_total{instance="a",job="weir",stage="upload"}': "0+1x60",
    'weir_outbox_segments{instance="a",job="weir"}': "0+1x60",
    'weir_outbox_registrations_total{instance="a",job="weir",result="rejected"}': "0+0x10 1+0x50",
    'weir_buffer_corrupt_entries{instance="a",job="weir"}': "0+0x5 2+0x55",
}

# alert → (when to evaluate, the labels of each alert expected then)
EXPECTED = {
    "WeirBufferFilling": ("15m", [{"severity": "warning", "instance": "a", "job": "weir"}]),
    "WeirRefusingData": ("15m", [{"severity": "critical", "instance": "a", "source": "otlp_http", "reason": "buffer_full"}]),
    "WeirNotFlushing": ("25m", [{"severity": "critical", "instance": "a", "job": "weir"}]),
    "WeirFlushErrors": ("30m", [{"severity": "warning", "instance": "a", "stage": "upload"}]),
    "WeirOutboxGrowing": ("45m", [{"severity": "warning", "instance": "a", "job": "weir"}]),
    "WeirSegmentsRejected": ("20m", [{"severity": "warning", "instance": "a", "job": "weir", "result": "rejected"}]),
    "WeirRejectingRequests": ("30m", [{"severity": "info", "instance": "a", "source": "otlp_grpc", "reason": "malformed"}]),
    "WeirCorruptBufferEntries": ("10m", [{"severity": "warning", "instance": "a", "job": "weir"}]),
}


def prometheus_rule():
    text = OPERATIONS.read_text()
    section = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)\n```", section, re.S)
    assert len(blocks) == 1, "one yaml block in the Alerts section"
    rule = yaml.safe_load(blocks[0])
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    return rule


@pytest.fixture
def promtool():
    tool = shutil.which("promtool")
    if not tool:
        pytest.fail("promtool not found: scripts/test.sh installs Debian's prometheus package, which has it")
    return tool


def test_alert_rules_name_real_metrics():
    defined = set(re.findall(r'"([a-z_]+)"', (ROOT / "pipelines/src/metrics.rs").read_text()))
    for group in prometheus_rule()["spec"]["groups"]:
        for r in group["rules"]:
            names = re.findall(r"\bweir_[a-z_]+", r["expr"])
            assert names, r["alert"]
            for name in names:
                assert name.removeprefix("weir_") in defined, f"{r['alert']}: {name} is not defined in pipelines/src/metrics.rs"


def test_alert_rules_pass_promtool_and_fire(tmp_path, promtool):
    groups = prometheus_rule()["spec"]["groups"]
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    alerts = [r["alert"] for g in groups for r in g["rules"]]
    assert sorted(alerts) == sorted(EXPECTED), "every alert has an expectation here"
    # The unit test compares annotations too: leave them out of its copy of the rules.
    bare = tmp_path / "bare.yml"
    bare.write_text(yaml.safe_dump({"groups": [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups
    ]}))
    tests = tmp_path / "tests.yml"
    tests.write_text(yaml.safe_dump({
        "rule_files": [str(bare)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in SERIES.items()],
            "alert_rule_test": [
                {"alertname": name, "eval_time": at, "exp_alerts": [{"exp_labels": labels} for labels in expected]}
                for name, (at, expected) in EXPECTED.items()
            ],
        }],
    }))
    run = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
