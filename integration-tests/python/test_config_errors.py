"""`weir validate` as a user runs it: every problem of a file and the environment at once, each
with its file or variable and key path; `--print` masks secrets; `--role` runs a role's
start-up checks."""

import os
import subprocess

from conftest import WEIR_BIN


def validate(cfg, *args, env=None):
    return subprocess.run(
        [WEIR_BIN, "validate", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        timeout=30,
    )


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = tmp_path / "weir.toml"
    cfg.write_text(
        'data_dir = 7\n[lake]\nmax_file_age = "soon"\nflush_byts = "1MiB"\nurl = "s3://${BUCKET}/x"\n'
        '[[pipelines]]\nname = "p"\nsources = ["otlp"]\n[[pipelines.transforms]]\nname = "t"\nmodule = "/x.wasm"\ntimeout = true\n'
    )
    r = validate(cfg, env={"WEIR_BUFFER__MAX_BYTES": "lots"})
    assert r.returncode == 2, r.stderr
    for line in [
        f"{cfg}: data_dir: expected a path",
        f"{cfg}: lake.max_file_age: \"soon\" is not a duration",
        f"{cfg}: lake.flush_byts: unknown key (did you mean `flush_bytes`?",
        f"{cfg}: lake.url: environment variable BUCKET is not set",
        f"{cfg}: pipelines[0].transforms[0].timeout: expected a duration",
        "environment variable WEIR_BUFFER__MAX_BYTES: buffer.max_bytes: \"lots\" is not a size",
    ]:
        assert line in r.stderr, r.stderr
    assert "(6 problems)" in r.stderr, r.stderr
    assert "default." not in r.stderr and "untagged" not in r.stderr, r.stderr


def test_kubernetes_forms_and_typed_environment(tmp_path):
    cfg = tmp_path / "weir.yaml"
    cfg.write_text("buffer:\n  max_bytes: 4Gi\nlake:\n  max_file_age: 30\nagent:\n  id: ${NODE_ID}\n")
    r = validate(cfg, "--print", env={"NODE_ID": "0042", "WEIR_CONTROL_PLANE__TOKEN": "12345678901234567890"})
    assert r.returncode == 0, r.stderr
    assert 'id = "0042"' in r.stdout and 'max_bytes = "4GiB"' in r.stdout and 'max_file_age = "30s"' in r.stdout, r.stdout
    assert "12345678901234567890" not in r.stdout and 'token = "***"' in r.stdout, r.stdout
    assert "valid" in r.stderr


def test_role_checks_and_file_types(tmp_path):
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[lake]\nzstd_level = 5\n')
    assert validate(cfg).returncode == 0
    r = validate(cfg, "--role", "agent")
    assert r.returncode == 2 and "control_plane.url must be set for weir agent" in r.stderr, r.stderr
    token = tmp_path / "token"
    token.write_text("agent-token-0123456789\n")
    r = validate(cfg, "--role", "agent", env={"WEIR_CONTROL_PLANE__URL": "http://cp:8700", "WEIR_CONTROL_PLANE__TOKEN_FILE": str(token)})
    assert r.returncode == 0 and "valid for weir agent" in r.stdout, r.stderr
    other = tmp_path / "weir.conf"
    other.write_text(cfg.read_text())
    r = validate(other)
    assert r.returncode == 2 and "must end in .toml, .yaml or .yml" in r.stderr, r.stderr


def test_roles_refuse_to_start_with_the_checks_validate_runs(tmp_path):
    cfg = tmp_path / "weir.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[admin]\naddress = "127.0.0.1:0"\n')
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for role, message in [
        ("control-plane", "[[control_plane.tokens]]"),
        ("compactor", "control_plane.url must be set for weir compactor"),
        ("retention", "no retention configured"),
    ]:
        r = subprocess.run([WEIR_BIN, role, "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 2 and f"cannot start weir {role}" in r.stderr and message in r.stderr, (role, r.stderr)
        v = validate(cfg, "--role", role)
        assert v.returncode == 2 and message in v.stderr, (role, v.stderr)
    assert not (tmp_path / "data").exists()  # nothing was opened


def test_windows_too_small_for_clock_skew_are_refused(tmp_path):
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[buffer]\nlate_window = "10m"\nfuture_window = "5s"\n')
    r = validate(cfg)
    assert r.returncode == 2, r.stderr
    assert 'buffer.late_window = "10m" is below 1h' in r.stderr, r.stderr
    assert 'buffer.future_window = "5s" is below 1m' in r.stderr, r.stderr
    cfg.write_text('[buffer]\nlate_window = "40d"\n')
    r = validate(cfg)
    assert r.returncode == 2, r.stderr
    assert "buffer.late_window + buffer.future_window is 961 hours, over 31 days" in r.stderr, r.stderr


def test_a_compaction_memory_too_small_to_merge_is_refused(tmp_path):
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[compaction]\nmemory = "8MiB"\n')
    r = validate(cfg)
    assert r.returncode == 2, r.stderr
    assert 'compaction.memory = "8MiB" is below 16MiB' in r.stderr, r.stderr
    cfg.write_text('[compaction]\nmemory = "16MiB"\n')
    assert validate(cfg).returncode == 0
