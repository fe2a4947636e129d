"""docs/getting-started.md, walked literally so the guide cannot rot.

The page marks the shell blocks to run with an HTML comment right above the fence:
`<!-- test: NAME -->` (run it, then check its output with CHECKS[NAME]), `<!-- test: NAME
background -->` (start it and leave it running: `weir run`, the S3 server) and `<!-- test:
interrupt NAME -->` (send that background step SIGINT, as Ctrl-C would, and expect exit 0).
Steps run in the page's order, each in its own `bash -euo pipefail`, in one temporary
directory. What the test changes, and the page says so in its leading comment:

- PATH starts with a directory holding `weir` (the binary under test) and the venv's bin
  (`python3` with DuckDB, `moto_server`);
- the agent's ports 4317, 4318 and 8686 become 0 in the steps that write its configuration
  (`127.0.0.1:PORT`): the agent binds free ones itself, and once it has started the test reads
  them from its `{data_dir}/listen.json` and puts them in the steps that follow, so no other
  process can take a port between its choice and the bind. The S3 server's port 5000 (moto,
  which cannot report the port it bound) becomes a free one picked by the test (`-p PORT`);
- the default sources the page does not configure (Loki, Datadog, Fluent forward, syslog) are
  moved to port 0 on loopback with WEIR_SOURCES__* variables, so parallel runs do not collide;
- `INSTALL httpfs; LOAD httpfs` becomes a LOAD of the extension file in the
  `duckdb-extension-httpfs` wheel (these machines cannot download extensions).

Steps that wait for a flush (`sleep`, then look) are run again, up to three more times, if
their check fails, as a reader would look again on a slow machine.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import WEIR_BIN, free_port, port_of, read_listen, remove_listen

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "getting-started.md"
MARKER = re.compile(r"<!-- test: (?P<spec>[^>]*?) -->\n(?:```sh\n(?P<body>.*?)\n```\n)?", re.S)
PORTS = (4317, 4318, 8686, 5000)
# The agent's default ports in the page, by the listen.json key that reports the bound one.
AGENT_PORTS = {4317: "sources.otlp.grpc_address", 4318: "sources.otlp.http_address", 8686: "admin.address"}
HTTPFS = "INSTALL httpfs; LOAD httpfs"
RETRY = {"lake", "s3-segments"}
SEGMENT = r"tenant={tenant}/signal=logs/dt=\d{{4}}-\d\d-\d\d/hour=\d\d/[0-9a-f-]{{36}}\.parquet"


def steps():
    """(kind, name, body) in page order; kind is run, background or interrupt."""
    out = []
    for m in MARKER.finditer(GUIDE.read_text()):
        spec = m["spec"].split()
        if spec[0] == "interrupt":
            assert len(spec) == 2 and m["body"] is None, m[0]
            out.append(("interrupt", spec[1], None))
        else:
            assert m["body"] is not None, f"no ```sh block right after {m[0]!r}"
            kind = "background" if spec[1:] == ["background"] else "run"
            assert spec[1:] in ([], ["background"]), m[0]
            out.append((kind, spec[0], m["body"]))
    return out


# Checks of the steps' output, by step name. `state` carries what a step found to later ones.
def check_config(out, state):
    assert out.strip() == "weir.toml: valid"


def check_ready(out, state):
    first, rest = out.split("\n", 1)
    assert first == "ready"
    listen = json.loads(rest)
    assert listen["sources.otlp.http_address"] == f"127.0.0.1:{state['ports'][4318]}"
    assert listen["admin.address"] == f"127.0.0.1:{state['ports'][8686]}"


def check_send(out, state):
    assert out.strip() == "{}"


def check_lake(out, state):
    files = out.split()
    assert len(files) == 1, out
    assert re.fullmatch("weir-data/lake/" + SEGMENT.format(tenant="default"), files[0]), files[0]
    state["lake_file"] = files[0]


def check_segments(out, state):
    seg = json.loads(out)
    assert seg["row_count"] == 1 and seg["services"] == ["checkout"]
    # The index lists the very file that appeared in the lake.
    assert "weir-data/lake/" + seg["object_key"] == state["lake_file"]


def check_duckdb(out, state):
    assert out.strip() == "[('checkout', 'INFO', 'hello from curl', '17')]"


def check_bucket(out, state):
    pass  # the step's exit status is checked for every step


def check_s3_config(out, state):
    assert out.strip() == "weir-s3.toml: valid"


def check_s3_send(out, state):
    refused, accepted = out.strip().split("\n")
    assert json.loads(refused) == {"code": 16, "message": "missing API key: send Authorization: Bearer <key> or X-API-Key"}
    assert accepted == "{}"


def check_s3_segments(out, state):
    status, *keys = out.strip().split("\n")
    assert status == "401"
    assert len(keys) == 1 and re.fullmatch(SEGMENT.format(tenant="team-a"), keys[0]), out
    # Written to the bucket, not to the local data directory.
    assert not list(Path(state["cwd"], "weir-data-s3").rglob("*.parquet"))


def check_s3_duckdb(out, state):
    assert out.strip() == "[('team-a', 'checkout', 'hello from curl, via S3')]"


CHECKS = {
    "config": check_config,
    "run": None,
    "ready": check_ready,
    "send": check_send,
    "lake": check_lake,
    "segments": check_segments,
    "duckdb": check_duckdb,
    "s3-server": None,
    "bucket": check_bucket,
    "s3-config": check_s3_config,
    "s3-run": None,
    "s3-send": check_s3_send,
    "s3-segments": check_s3_segments,
    "s3-duckdb": check_s3_duckdb,
}


def agent_data_dir(script, cwd):
    """The data_dir of the `weir run --config FILE` a background step starts (None for
    another server)."""
    import tomllib

    m = re.search(r"\bweir run --config (\S+)", script)
    if not m:
        return None
    return cwd / tomllib.loads((cwd / m[1]).read_text())["data_dir"]


def substitute(body, ports):
    for default, port in ports.items():
        body = re.sub(rf"(?<=127\.0\.0\.1:){default}\b|(?<=-p ){default}\b", str(port), body)
    if HTTPFS in body:
        import duckdb_extension_httpfs

        ext = glob.glob(str(Path(duckdb_extension_httpfs.__file__).parent / "**" / "httpfs.duckdb_extension"),
                        recursive=True)
        assert ext, "httpfs extension not found in the duckdb-extension-httpfs wheel"
        body = body.replace(HTTPFS, f"LOAD '{ext[0]}'")
    return body


def wait_http(url, proc, log, timeout=30, ok=lambda status: True):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if ok(r.status):
                    return
        except urllib.error.HTTPError as e:
            if ok(e.code):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()[-4000:]}")


def test_getting_started_walks_as_written(tmp_path):
    walk = steps()
    assert [name for kind, name, _ in walk if kind != "interrupt"] == list(CHECKS), "steps and CHECKS differ"
    assert [name for kind, name, _ in walk if kind == "interrupt"] == ["run", "s3-run"]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "weir").symlink_to(WEIR_BIN)
    cwd = tmp_path / "guide"
    cwd.mkdir()
    # While no agent runs, its ports are 0 (the configuration steps); while one runs, the
    # ports it reported in listen.json.
    ports = {p: 0 for p in AGENT_PORTS} | {5000: free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEIR_", "AWS_"))}
    env["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}"
    env.update({
        "WEIR_SOURCES__LOKI__ADDRESS": "127.0.0.1:0",
        "WEIR_SOURCES__DATADOG__ADDRESS": "127.0.0.1:0",
        "WEIR_SOURCES__FLUENT__ADDRESS": "127.0.0.1:0",
        "WEIR_SOURCES__SYSLOG__UDP_ADDRESS": "127.0.0.1:0",
        "WEIR_SOURCES__SYSLOG__TCP_ADDRESS": "127.0.0.1:0",
    })
    state = {"ports": ports, "cwd": cwd}
    background = {}
    try:
        for kind, name, body in walk:
            if kind == "interrupt":
                proc, log = background.pop(name)
                os.killpg(proc.pid, signal.SIGINT)
                assert proc.wait(30) == 0, f"{name} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                assert "SIGINT received, shutting down" in log.read_text()
                if name != "s3-server":
                    ports.update({p: 0 for p in AGENT_PORTS})
                continue
            script = substitute(body, ports)
            if kind == "background":
                data_dir = agent_data_dir(script, cwd)
                if data_dir:
                    remove_listen(data_dir)  # a file an earlier run left is not this one's
                log = tmp_path / f"{name}.log"
                proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                                        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
                background[name] = (proc, log)
                if data_dir is None:
                    wait_http(f"http://127.0.0.1:{ports[5000]}/", proc, log)
                else:
                    listen = read_listen(data_dir, proc, log)
                    ports.update({p: port_of(listen[key]) for p, key in AGENT_PORTS.items()})
                    wait_http(f"http://127.0.0.1:{ports[8686]}/readyz", proc, log, ok=lambda s: s == 200)
                continue
            for attempt in range(4 if name in RETRY else 1):
                r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                                   capture_output=True, text=True, timeout=120)
                try:
                    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
                    CHECKS[name](r.stdout, state)
                    break
                except AssertionError as e:
                    if attempt == (3 if name in RETRY else 0):
                        logs = "".join(f"\n--- {n}.log\n{lg.read_text()[-3000:]}" for n, (_, lg) in background.items())
                        raise AssertionError(f"step {name!r}: {e}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}{logs}") from e
    finally:
        for proc, _ in background.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
