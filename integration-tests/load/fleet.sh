#!/usr/bin/env bash
# Embedded control plane (`weir run`) against a remote one (`weir control-plane` on PostgreSQL +
# `weir agent`), same load, same machine, one after the other. Prints weir-loadgen's JSON for
# both runs and how long the remote index took to list every row after the load stopped.
#   integration-tests/load/fleet.sh [RATE] [SECONDS]
# Needs a release build (cargo build --release -p weir-agent -p weir-integration-tests) and
# PostgreSQL binaries (scripts/pg-cluster.sh starts a throwaway cluster).
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${1:-100000} SECS=${2:-15}
BIN=${CARGO_TARGET_DIR:-target}/release
W=$(mktemp -d /tmp/weir-fleet.XXXXXX)
chmod 755 "$W"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PGPORT=$(port) CPPORT=$(port) HTTP=$(port) ADMIN=$(port)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; scripts/pg-cluster.sh stop "$W/pg"; rm -rf "$W"; }
trap cleanup EXIT
PG=$(scripts/pg-cluster.sh start "$W/pg" "$PGPORT")
TOKEN=fleet-bench-token-0123456789

common() { # $1 = data dir
  cat <<TOML
data_dir = "$1"
[sources.otlp]
http_address = "127.0.0.1:$HTTP"
grpc_address = ""
[sources.loki]
enabled = false
[sources.datadog]
enabled = false
[sources.fluent]
enabled = false
[sources.syslog]
enabled = false
[admin]
address = "127.0.0.1:$ADMIN"
[lake]
url = "file://$W/lake-$(basename "$1")"
max_file_age = "1s"
[compaction]
enabled = false
[log]
level = "warn"
TOML
}
wait_http() { for _ in $(seq 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
rows() { curl -sf -H "Authorization: Bearer $TOKEN" "$1/v1/segments?tenant=default&limit=10000" | python3 -c 'import json,sys; print(sum(s["row_count"] for s in json.load(sys.stdin)["segments"]))'; }

echo "== embedded (weir run)"
common "$W/run" > "$W/run.toml"
taskset -c 0 "$BIN/weir" run --config "$W/run.toml" & PIDS+=($!); AGENT=$!
wait_http "http://127.0.0.1:$ADMIN/readyz"
taskset -c 1 "$BIN/weir-loadgen" --url "http://127.0.0.1:$HTTP" --connections 4 --batch 1000 --seconds "$SECS" --rate "$RATE" --pid "$AGENT"
kill -TERM "$AGENT"; wait "$AGENT" || true

echo "== remote (weir agent + weir control-plane on PostgreSQL)"
cat > "$W/cp.toml" <<TOML
data_dir = "$W/cp"
[admin]
address = "127.0.0.1:$(port)"
[control_plane]
address = "127.0.0.1:$CPPORT"
index = "postgres"
postgres_url = "$PG"
[[control_plane.tokens]]
token = "$TOKEN"
[log]
level = "warn"
TOML
taskset -c 1 "$BIN/weir" control-plane --config "$W/cp.toml" & PIDS+=($!)
wait_http "http://127.0.0.1:$CPPORT/readyz"
{ common "$W/agent"; printf '[control_plane]\nurl = "http://127.0.0.1:%s"\ntoken = "%s"\n' "$CPPORT" "$TOKEN"; } > "$W/agent.toml"
taskset -c 0 "$BIN/weir" agent --config "$W/agent.toml" & PIDS+=($!); AGENT=$!
wait_http "http://127.0.0.1:$ADMIN/readyz"
OUT=$(taskset -c 1 "$BIN/weir-loadgen" --url "http://127.0.0.1:$HTTP" --connections 4 --batch 1000 --seconds "$SECS" --rate "$RATE" --pid "$AGENT")
echo "$OUT"
SENT=$(echo "$OUT" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["requests_ok"]*d["batch"])' 2>/dev/null || echo 0)
start=$(date +%s.%N)
for _ in $(seq 600); do
  [ "$(rows "http://127.0.0.1:$CPPORT")" -ge "$SENT" ] && break
  sleep 0.1
done
echo "remote index listed all $SENT rows $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s after the load stopped"
