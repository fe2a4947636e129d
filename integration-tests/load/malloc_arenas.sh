#!/usr/bin/env bash
# Peak RSS of the agent under glibc malloc arena limits (a benchmark, not a test; keep it out
# of CI). Starts `weir run` six times, pinned to the first core, with compare.sh's agent
# configuration (durable ack, lake.max_file_age = "1s"), and weir-loadgen on the second core
# for 20 s, paced at 100k records/s and then at full speed, with MALLOC_ARENA_MAX at glibc's
# own default (8 per core), 2 (the agent's cap) and 1. An operator's MALLOC_ARENA_MAX wins over
# the agent's cap, so each row gets exactly its value. Prints one line per run: VmHWM 10 s
# after the load, and the accepted rate.
#
#   integration-tests/load/malloc_arenas.sh [--bin DIR] [--cores "AGENT GEN"]
#
#   --bin DIR    where weir and weir-loadgen are (default ${CARGO_TARGET_DIR:-target}/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
. integration-tests/load/lib.sh
BIN=${CARGO_TARGET_DIR:-target}/release CORES="0 1"
while [ $# -gt 0 ]; do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
read -r ACORE GCORE <<<"$CORES"
W=$(mktemp -d "${TMPDIR:-/tmp}/weir-arenas.XXXXXX")
AGENT=""
cleanup() { [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

run() { # $1 = MALLOC_ARENA_MAX, $2 = rate arguments
  local http admin; http=$(port) admin=$(port)
  rm -rf "$W/data"
  { otlp_only_toml "$W/data" "$http" "$admin"; cat <<TOML; } > "$W/weir.toml"
[lake]
max_file_age = "1s"
[log]
level = "warn"
TOML
  taskset -c "$ACORE" env MALLOC_ARENA_MAX="$1" "$BIN/weir" run --config "$W/weir.toml" 2>"$W/weir.log" & AGENT=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
  taskset -c "$GCORE" "$BIN/weir-loadgen" --url "http://127.0.0.1:$http" --connections 8 --batch 1000 \
    --seconds 20 --trace-ids $2 > "$W/load.json"
  sleep 10
  local hwm rate
  hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$AGENT/status")
  rate=$(tail -1 "$W/load.json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_sec"]))')
  echo "MALLOC_ARENA_MAX=$1 ${2:-full speed}: peak RSS $hwm MiB, $rate records/s accepted"
  kill "$AGENT"; wait "$AGENT" 2>/dev/null || true; AGENT=""
}

for rate in "--rate 100000" ""; do
  for arenas in $((8 * $(nproc))) 2 1; do run "$arenas" "$rate"; done
done
