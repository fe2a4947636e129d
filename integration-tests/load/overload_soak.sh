#!/usr/bin/env bash
# Overload soak (a benchmark, not a test; keep it out of CI): more offered than the agent can
# take, for minutes. `weir run` is pinned to the first core with compare.sh's configuration and
# a small buffer (so it fills within the first minute), weir-loadgen on the second core sends
# as fast as the agent answers over 8 connections. Every 10 s the agent's RSS, its buffer
# bytes and its refused requests (weir_rejected_requests_total) are printed; at the end, peak
# RSS (VmHWM), the accepted rate, the requests refused, and the compactions' largest
# peak_input_bytes (their inputs' decoded batches, which compaction.memory bounds).
#
#   integration-tests/load/overload_soak.sh [--minutes M] [--buffer-bytes B] [--bin DIR]
#                                           [--cores "AGENT GEN"]
#
#   --minutes M       how long the overload lasts (default 5)
#   --buffer-bytes B  buffer.max_bytes (default 256MiB)
#   --bin DIR         where weir and weir-loadgen are (default ${CARGO_TARGET_DIR:-target}/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
. integration-tests/load/lib.sh
BIN=${CARGO_TARGET_DIR:-target}/release CORES="0 1" MINUTES=5 BUFFER=256MiB
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    --buffer-bytes) BUFFER=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
read -r ACORE GCORE <<<"$CORES"
W=$(mktemp -d "${TMPDIR:-/tmp}/weir-soak.XXXXXX")
AGENT="" GEN=""
cleanup() {
  [ -n "$GEN" ] && kill "$GEN" 2>/dev/null
  [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null
  wait 2>/dev/null; rm -rf "$W"
}
trap cleanup EXIT
http=$(port) admin=$(port)
{ otlp_only_toml "$W/data" "$http" "$admin"; cat <<TOML; } > "$W/weir.toml"
[buffer]
max_bytes = "$BUFFER"
[lake]
max_file_age = "1s"
[log]
level = "error,weir_pipelines::compactor=info"
TOML
taskset -c "$ACORE" "$BIN/weir" run --config "$W/weir.toml" 2>"$W/weir.log" & AGENT=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
SECS=$((MINUTES * 60))
taskset -c "$GCORE" "$BIN/weir-loadgen" --url "http://127.0.0.1:$http" --connections 8 --batch 1000 \
  --seconds "$SECS" --trace-ids --pid "$AGENT" > "$W/load.json" & GEN=$!
metric() { # sums the samples of metric $1 on /metrics
  curl -sf "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%d", s}'
}
echo "t_s rss_mib buffer_mib rejected_requests"
for t in $(seq 10 10 "$SECS"); do
  sleep 10
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$AGENT/status")
  echo "$t $rss $(( $(metric weir_buffer_bytes) >> 20 )) $(metric weir_rejected_requests_total)"
done
wait "$GEN"; GEN=""
hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$AGENT/status")
echo "peak RSS (VmHWM) $hwm MiB; buffer.max_bytes $BUFFER; loadgen: $(tail -1 "$W/load.json")"
# The compactions' own account of their inputs' memory (compaction.memory bounds half of it).
grep -o 'peak_input_bytes=[0-9]*' "$W/weir.log" | cut -d= -f2 | sort -n |
  awk '{n++; m=$1} END {printf "compactions committed %d; largest peak_input_bytes %.1f MiB\n", n, m / 1048576}'
grep -c "held more than their share" "$W/weir.log" | sed 's/^/over-budget warnings /' || true
