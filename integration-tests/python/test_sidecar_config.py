"""configs/sidecar.toml says every source listens on localhost only: each source that is on by
default (as configs/local.toml, which documents every default, lists them) has each of its
addresses set to 127.0.0.1 in the sidecar file. (That the file loads and validates is the Rust
test that loads every file in configs/.)"""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sidecar_binds_every_default_source_to_localhost():
    defaults = tomllib.loads((ROOT / "configs/local.toml").read_text())["sources"]
    sidecar = tomllib.loads((ROOT / "configs/sidecar.toml").read_text())["sources"]
    on_by_default = {name: keys for name, keys in defaults.items() if keys.get("enabled") is True}
    assert {"otlp", "loki", "datadog", "fluent", "syslog"} <= set(on_by_default)
    for name, keys in on_by_default.items():
        mine = sidecar.get(name, {})
        if mine.get("enabled") is False:
            continue
        for key in (k for k in keys if k.endswith("address")):
            assert key in mine, f"sources.{name}.{key} keeps its default {keys[key]!r}"
            assert mine[key].startswith("127.0.0.1:"), f"sources.{name}.{key} = {mine[key]!r}"
