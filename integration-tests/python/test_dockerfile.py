"""The Dockerfile, without Docker (it cannot be installed here): parsed by BuildKit's own
parser (PyPI `dockerfile`), its build context cut by .dockerignore as Docker cuts it (the
`docker` SDK's `exclude_paths`) and checked to hold a workspace cargo can resolve with the lock
file, the release profile it builds with checked for no debug info, and the image's user
checked to be non-root (test_helm.py checks the chart runs as the same user)."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import dockerfile
from docker.utils.build import exclude_paths

ROOT = Path(__file__).resolve().parents[2]


def stages():
    """The Dockerfile's stages: lists of parsed instructions, each starting with its FROM."""
    out = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd.upper() == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def test_multi_stage_release_build_without_debug_info():
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert build[0].value[-2:] == ("AS", "build"), build[0].value
    runs = " ".join(" ".join(c.value) for c in build if c.cmd.upper() == "RUN")
    assert re.search(r"cargo build --locked --release -p weir-agent --bin weir\b", runs), runs
    # The final stage takes only the binary from the build stage.
    copies = [c for c in final if c.cmd.upper() == "COPY"]
    assert copies and all("--from=build" in c.flags for c in copies), copies
    # The release profile carries no debug info; a profile with symbols is kept for perf.
    profiles = tomllib.loads((ROOT / "Cargo.toml").read_text())["profile"]
    release = profiles["release"]
    assert release.get("debug", False) in (False, 0, "none"), release
    assert release.get("strip") in ("debuginfo", "symbols", True), release
    assert profiles["profiling"]["inherits"] == "release"
    assert profiles["profiling"]["debug"] not in (False, 0, "none")


def image_user():
    """(uid, gid) of the final stage's USER."""
    [user] = [c.value[0] for c in stages()[-1] if c.cmd.upper() == "USER"]
    uid, gid = (int(x) for x in user.split(":"))
    return uid, gid


def test_final_stage_runs_weir_as_a_non_root_user():
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    [entry] = [c for c in stages()[-1] if c.cmd.upper() == "ENTRYPOINT"]
    assert entry.json and entry.value == ("/usr/local/bin/weir",)
    # The runtime image's Debian release is the build image's (the binary links its glibc).
    args = {
        k: v
        for c in dockerfile.parse_file(str(ROOT / "Dockerfile"))
        if c.cmd.upper() == "ARG"
        for k, _, v in [c.value[0].partition("=")]
    }
    rust, runtime = args["RUST_IMAGE"], args["RUNTIME_IMAGE"]
    assert rust.split("-")[-1] == runtime.split(":")[1].split("-")[0], (rust, runtime)
    # And its Rust is at least the workspace's rust-version.
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]
    wanted = tuple(int(x) for x in workspace["rust-version"].split("."))
    have = tuple(int(x) for x in re.match(r"rust:(\d+\.\d+)", rust).group(1).split("."))
    assert have >= wanted[:2], (rust, workspace["rust-version"])


def test_build_context_holds_a_workspace_cargo_resolves(tmp_path):
    """The files .dockerignore lets through are copied to a fresh directory (what `COPY . .`
    gets), and cargo resolves the workspace there with the lock file unchanged (`--locked`)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kept = exclude_paths(str(ROOT), patterns)
    assert "Cargo.lock" in kept and "Cargo.toml" in kept
    assert not any(p.startswith(("target/", ".git/", ".venv/")) for p in kept)
    ctx = tmp_path / "ctx"
    for rel in kept:
        src = ROOT / rel
        if src.is_file():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / rel)
    host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout, re.M).group(1)
    # The host's packages only (what a Linux build needs), from the local cache when there.
    r = subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1", "--filter-platform", host],
        cwd=ctx,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for m in members:
        assert (ctx / m / "Cargo.toml").is_file(), m
    assert (ctx / "agent" / "src" / "main.rs").is_file()
