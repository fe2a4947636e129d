"""The SDK's ready-made transforms, built to wasm32 by scripts/build-transforms.sh, in a
pipeline of the running agent fed by the OpenTelemetry Python SDK: DuckDB finds no email or
card number and no record below the configured severity."""

import logging
import os
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

ROOT = Path(__file__).resolve().parents[2]
WASM = Path(os.environ.get("TEST_WEIR_TRANSFORMS") or ROOT / "target" / "transforms")


def test_redact_and_filter_from_the_sdk(weir_factory):
    redact, filt = WASM / "weir_transform_redact.wasm", WASM / "weir_transform_filter.wasm"
    assert redact.exists() and filt.exists(), f"build the guests first: scripts/build-transforms.sh ({WASM})"
    w = weir_factory(f'''
[[pipelines]]
name = "pii"
sources = ["otlp"]
signals = ["logs"]
[[pipelines.transforms]]
name = "filter"
module = "{filt}"
config = {{ min_severity = 9 }}
[[pipelines.transforms]]
name = "redact"
module = "{redact}"
config = {{ patterns = ["hunter2"] }}
''')
    lp = LoggerProvider(resource=Resource.create({"service.name": "shop"}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=w.http + "/v1/logs")))
    log = logging.getLogger("weir.sdk.e2e")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    h = LoggingHandler(level=logging.DEBUG, logger_provider=lp)
    log.addHandler(h)
    log.info("order 17 paid by jane.doe@example.com with 4111 1111 1111 1111", extra={"client.address": "10.1.2.3"})
    log.warning("password hunter2 rejected for bob@corp.example.org")
    log.debug("debug line with eve@example.net that the filter drops")
    log.info("GET /healthz 200")
    log.error("order 4111111111111112 is not a card (Luhn fails)")
    log.removeHandler(h)
    lp.shutdown()

    w.wait_rows("logs", 3)
    con = w.duck("default", "logs")
    bodies = sorted(r[0] for r in con.sql("SELECT body FROM lake").fetchall())
    assert bodies == sorted([
        "order 17 paid by [REDACTED] with [REDACTED]",
        "password [REDACTED] rejected for [REDACTED]",
        "order 4111111111111112 is not a card (Luhn fails)",
    ])
    assert con.sql("SELECT count(*) FROM lake WHERE regexp_matches(body, '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[a-z]{2,}')").fetchone()[0] == 0
    assert con.sql("SELECT count(*) FROM lake WHERE severity_number < 9").fetchone()[0] == 0
    attrs = con.sql("SELECT map_extract(attributes, 'client.address') FROM lake WHERE body LIKE 'order 17%'").fetchone()[0]
    assert attrs in (["[REDACTED]"], "[REDACTED]")
