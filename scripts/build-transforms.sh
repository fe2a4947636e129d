#!/usr/bin/env bash
# Builds the ready-made transforms (sdk/examples/*) to wasm32 with the project's toolchain
# (scripts/setup-wasm-toolchain.sh) and copies them to $OUT (default target/transforms).
# With rustup the normal way works too: rustup target add wasm32-unknown-unknown, then
# cargo build --profile guest --target wasm32-unknown-unknown -p weir-transform-redact.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/transforms}
ENV_FILE=$(scripts/setup-wasm-toolchain.sh | tail -1)
# shellcheck disable=SC1090
. "$ENV_FILE"
# Guests get their own target dir: they are built by another rustc than the workspace.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/guests
cargo build --locked --profile guest --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  -p weir-transform-redact -p weir-transform-filter -p weir-transform-enrich \
  -p weir-transform-parse-json -p weir-transform-attribute-guard
mkdir -p "$OUT"
for f in "$CARGO_TARGET_DIR"/wasm32-unknown-unknown/guest/weir_transform_*.wasm; do
  cp "$f" "$OUT/"
done
ls -l "$OUT"
