"""WebAssembly transform pipelines in the running agent, with guests written in WAT (the
Rust SDK guests come with the SDK): identity, a guest that spins forever (dead-lettered after
its deadline), one that traps (dropped), hot reload under load, and a failed reload."""

import os
import re
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from test_durability import logs_request, post_logs
from test_otlp_sdk import send_summary

IDENTITY = (Path(__file__).resolve().parents[2] / "transforms" / "tests" / "guests" / "identity.wat").read_text()


def with_transform(body):
    start = IDENTITY.index('(func (export "weir_transform")')
    return IDENTITY[:start] + '(func (export "weir_transform") (param $signal i32) (param $ptr i32) (param $len i32) (result i64)\n' + body + "))"


def pipelines_toml(d):
    return f'''
[[pipelines]]
name = "loki"
sources = ["loki"]
[[pipelines.transforms]]
name = "hog"
module = "{d}/hog.wat"
max_memory = "4MiB"
on_error = "pass"

[[pipelines]]
name = "logs"
signals = ["logs"]
[[pipelines.transforms]]
name = "logs-id"
module = "{d}/logs.wat"

[[pipelines]]
name = "traces"
signals = ["traces"]
sources = ["otlp"]
[[pipelines.transforms]]
name = "spin"
module = "{d}/spin.wat"
timeout = "100ms"
on_error = "dead_letter"

[[pipelines]]
name = "metrics"
signals = ["metrics"]
[[pipelines.transforms]]
name = "trap"
module = "{d}/trap.wat"
on_error = "drop"
'''


def metric(w, series):
    found = re.search("^" + re.escape(series) + r" (\S+)$", w.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def test_pipelines_dead_letter_drop_and_identity(weir_factory, tmp_path):
    (tmp_path / "logs.wat").write_text(IDENTITY)
    (tmp_path / "spin.wat").write_text(with_transform("(loop $l (br $l)) (i64.const 0)"))
    (tmp_path / "trap.wat").write_text(with_transform("unreachable"))
    (tmp_path / "hog.wat").write_text(with_transform("(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable"))
    w = weir_factory(pipelines_toml(tmp_path))

    for b in range(5):
        assert post_logs(w, logs_request(b, 20)).status_code == 200
    tp = TracerProvider(resource=Resource.create({"service.name": "dl"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=w.http + "/v1/traces")))
    with tp.get_tracer("t").start_as_current_span("will be dead-lettered"):
        pass
    tp.shutdown()
    send_summary(w, "default")

    # Loki logs hit the memory hog, whose policy is pass: they arrive unchanged.
    import requests
    r = requests.post(f"http://127.0.0.1:{w.loki_port}/loki/api/v1/push",
                      json={"streams": [{"stream": {"app": "l"}, "values": [["1700000000000000000", "through the hog"]]}]}, timeout=10)
    assert r.status_code == 204
    w.wait_rows("logs", 101)
    assert sorted(r["body"] for r in w.rows()) == sorted([f"b{b}-r{i}-" + "x" * 40 for b in range(5) for i in range(20)] + ["through the hog"])
    # The spans are in the dead-letter prefix with the reason, not in the lake; the index
    # lists the file only when asked for dead letters.
    deadline = time.time() + 30
    dead = []
    while time.time() < deadline and not dead:
        dead = list((w.lake / "_dead_letter" / "tenant=default" / "signal=traces").rglob("*.parquet"))
        time.sleep(0.2)
    assert dead, "no dead-letter file"
    t = pq.read_table(dead[0])
    assert t.column("name").to_pylist() == ["will be dead-lettered"]
    reasons = pq.read_metadata(dead[0]).metadata[b"weir.dead_letter_reasons"].decode()
    assert "pipeline traces" in reasons and "timed out after 100 ms" in reasons
    assert w.files("default", "traces") == []
    assert w.segments("default", "traces") == []
    deadline = time.time() + 30
    listed = []
    while time.time() < deadline and not listed:
        listed = w.get_json("/v1/segments?tenant=default&signal=traces&dead_letter=true")["segments"]
        time.sleep(0.2)
    assert [s["object_key"] for s in listed] == [str(dead[0].relative_to(w.lake))], listed
    assert listed[0]["row_count"] == 1
    # The metrics batch was dropped by policy, and counted.
    time.sleep(1.5)
    assert w.files("default", "metrics") == []
    assert metric(w, 'weir_transform_errors_total{kind="trap",on_error="drop",transform="trap"}') == 1
    assert metric(w, 'weir_transform_errors_total{kind="timeout",on_error="dead_letter",transform="spin"}') == 1
    assert metric(w, 'weir_transform_errors_total{kind="memory_limit",on_error="pass",transform="hog"}') == 1
    assert metric(w, 'weir_transform_records_in_total{transform="logs-id"}') == 100
    assert metric(w, 'weir_transform_records_out_total{transform="logs-id"}') == 100


def test_hot_reload_under_load(weir_factory, tmp_path):
    (tmp_path / "logs.wat").write_text(IDENTITY)
    (tmp_path / "spin.wat").write_text(IDENTITY)
    (tmp_path / "trap.wat").write_text(IDENTITY)
    (tmp_path / "hog.wat").write_text(IDENTITY)
    w = weir_factory(pipelines_toml(tmp_path))
    sent, stop = [], threading.Event()

    def sender():
        b = 0
        while not stop.is_set():
            assert post_logs(w, logs_request(b, 10)).status_code == 200
            sent.append((b, time.time()))
            b += 1

    t = threading.Thread(target=sender)
    t.start()
    # Long enough that batches acknowledged before `reloaded_at - 2` exist however fast the
    # reload is noticed (it is noticed after the swap, so reloaded_at - 2 >= start + 1).
    time.sleep(3.0)
    # Swap in a guest that drops every row (returns no output), atomically.
    tmp = tmp_path / "logs.wat.new"
    tmp.write_text(with_transform("(i64.const 0)"))
    os.replace(tmp, tmp_path / "logs.wat")
    deadline = time.time() + 20
    while metric(w, 'weir_transform_reloads_total{result="ok",transform="logs-id"}') < 1:
        assert time.time() < deadline, "module was not reloaded"
        time.sleep(0.1)
    reloaded_at = time.time()
    time.sleep(1.0)
    stop.set()
    t.join()
    kept_before = [b for b, at in sent if at < reloaded_at - 2]
    dropped_after = [b for b, at in sent if at > reloaded_at + 0.5]
    assert kept_before and dropped_after
    # Every batch kept before the swap is in the lake (however slow the flush on a busy
    # machine), then the files are read.
    deadline = time.time() + 30
    while True:
        per_batch = {}
        for r in w.rows():
            b = int(r["body"].split("-")[0][1:])
            per_batch[b] = per_batch.get(b, 0) + 1
        if all(b in per_batch for b in kept_before) or time.time() > deadline:
            break
        time.sleep(0.2)
    # Every batch ran wholly on one module: 10 rows or none, never partial, never twice.
    assert set(per_batch.values()) <= {10}
    assert all(b in per_batch for b in kept_before)
    assert not any(b in per_batch for b in dropped_after)
    # A broken module does not replace the running one.
    (tmp_path / "logs.wat").write_text("(module this is not wat")
    deadline = time.time() + 20
    while metric(w, 'weir_transform_reloads_total{result="failed",transform="logs-id"}') < 1:
        assert time.time() < deadline, "failed reload not reported"
        time.sleep(0.1)
    assert post_logs(w, logs_request(99999, 10)).status_code == 200
    time.sleep(2.5)
    assert not any(r["body"].startswith("b99999-") for r in w.rows())
