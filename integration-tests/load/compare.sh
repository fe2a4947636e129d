#!/usr/bin/env bash
# Weir against Fluent Bit, the same OTLP/HTTP load for every agent, one after the other on one
# machine (a benchmark, not a test; keep it out of CI). Rows:
#   Weir durable            defaults: ack = "durable", compaction on, embedded index
#   Weir buffered           ack = "buffered"
#   Weir compaction off     ack = "durable", [compaction] enabled = false (reference)
#   Fluent Bit filesystem   storage.type filesystem, storage.sync full -> null output
#   Fluent Bit memory       storage.type memory -> null output
# For each: records/s accepted (2xx) by weir-loadgen, end-to-end records/s (every accepted
# record in the agent's output, from the load's start), and the agent's peak RSS (VmHWM).
# End to end: Weir, the row_count sum of the index's GET /v1/segments; Fluent Bit, the null
# output's proc_records from its metrics API. Every Weir run uses lake.max_file_age = "1s"
# (Fluent Bit flushes every 1 s), otherwise defaults.
#
#   integration-tests/load/compare.sh [--seconds N] [--fluent-bit PATH] [--rate R|max]
#                                     [--cores "AGENT GEN"] [--connections C] [--bin DIR]
#
#   --seconds N       load duration per run (default 20)
#   --fluent-bit PATH the Fluent Bit binary (default ../shared/peers/fluent-bit from the repo;
#                     its rows are skipped when it is absent)
#   --rate R|max      records/s over all connections, or max: as fast as the agent answers
#                     (default max). `--rate 100000` is the paced mode: compare peak RSS with
#                     the target of 150 MiB at 100k records/s.
#   --cores "A G"     the agent is pinned to core A, the load generator to core G (default "0 1")
#   --bin DIR         where weir and weir-loadgen are (default ${CARGO_TARGET_DIR:-target}/release)
#
# Load: weir-loadgen, 8 keep-alive connections, OTLP/HTTP protobuf requests of 1000 log records
# (163 B each on the wire: a ~75 B body, one attribute, random trace and span ids), the same
# body for every agent. Needs a release build:
#   cargo build --release -p weir-agent -p weir-integration-tests
# Prints a Markdown table and the Weir / Fluent Bit (filesystem) ratios on stdout; progress
# goes to stderr. Data (Weir's buffer and lake, Fluent Bit's chunks) goes under $TMPDIR (/tmp):
# on tmpfs an fsync costs nothing, so keep it on a disk for the durable rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
. integration-tests/load/lib.sh

SECS=20 RATE=max CORES="0 1" CONNS=8
FB=$(cd .. && pwd)/shared/peers/fluent-bit
BIN=${CARGO_TARGET_DIR:-target}/release
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS=$2; shift 2 ;;
    --fluent-bit) FB=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
read -r ACORE GCORE <<<"$CORES"
[ -n "${GCORE:-}" ] || { echo "--cores takes two cores, like \"0 1\"" >&2; exit 2; }
case "$RATE" in max) RATEARG=() ;; *[!0-9]*|'') echo "--rate takes a number or max" >&2; exit 2 ;; *) RATEARG=(--rate "$RATE") ;; esac
for b in weir weir-loadgen; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: cargo build --release -p weir-agent -p weir-integration-tests" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/weir-compare.XXXXXX")
AGENT="" GEN=""   # pids of the running agent and load generator, empty once reaped
stop() { # $1 = pid of a child: SIGTERM, then SIGKILL after 10 s, then reap it
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() { [ -z "$GEN" ] || stop "$GEN"; [ -z "$AGENT" ] || stop "$AGENT"; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
log() { echo "$*" >&2; }
# CPU seconds the agent's threads used so far, summed by thread name (digits dropped), top 6.
threads_cpu() {
  python3 - "$1" <<'PY' || true
import collections, os, re, sys
pid, hz, by = sys.argv[1], os.sysconf("SC_CLK_TCK"), collections.Counter()
for t in os.listdir(f"/proc/{pid}/task"):
    try:
        stat = open(f"/proc/{pid}/task/{t}/stat").read()
    except OSError:
        continue
    name = re.sub(r"[-_]?\d+$", "", stat[stat.index("(") + 1:stat.rindex(")")])
    f = stat[stat.rindex(")") + 2:].split()
    by[name] += (int(f[11]) + int(f[12])) / hz
print(", ".join(f"{n} {s:.1f}" for n, s in by.most_common(6)))
PY
}
hwm_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
wait_http() { for _ in $(seq 400); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; log "not ready: $1"; return 1; }

# Polls until the agent's output holds $2 records ($1 = weir ADMIN_URL | fluent-bit METRICS_URL);
# prints the time it got there and the count, or gives up after 600 s.
wait_output() {
  python3 - "$@" <<'PY'
import json, sys, time, urllib.request
kind, url, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
def get(u):
    with urllib.request.urlopen(u, timeout=10) as r:
        return json.load(r)
def count():
    if kind == "fluent-bit":
        return get(url + "/api/v1/metrics")["output"]["null.0"]["proc_records"]
    total, cursor = 0, None
    while True:
        page = get(url + "/v1/segments?tenant=default&signal=logs&limit=10000" + (f"&cursor={cursor}" if cursor else ""))
        total += sum(s["row_count"] for s in page["segments"])
        cursor = page.get("next_cursor")
        if not cursor:
            return total
deadline, got = time.time() + 600, 0
while time.time() < deadline:
    got = count()
    if got >= want:
        break
    time.sleep(0.2)
print(f"{time.time():.3f} {got}")
PY
}

# Runs the load against $1 (OTLP/HTTP base URL), the agent being pid $2; sets LOAD (JSON) and T0.
load() {
  T0=$(now)
  taskset -c "$GCORE" "$BIN/weir-loadgen" --url "$1" --connections "$CONNS" --batch 1000 \
    --seconds "$SECS" --trace-ids --pid "$2" "${RATEARG[@]}" > "$W/load.json" & GEN=$!
  wait "$GEN"; GEN=""
  LOAD=$(tail -1 "$W/load.json")
}

ROWS=()
# Measures one agent already started as pid $2: $1 = row name, $3 = OTLP URL, $4/$5 = wait_output's kind and URL.
measure() {
  local name=$1 pid=$2 url=$3 kind=$4 out=$5
  log "   load: $SECS s, $CONNS connections, rate $RATE"
  load "$url" "$pid"
  local accepted t1 got
  accepted=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["requests_ok"]*d["batch"])' "$LOAD")
  log "   loadgen: $LOAD"
  read -r t1 got < <(wait_output "$kind" "$out" "$accepted")
  local rss; rss=$(hwm_mib "$pid")
  log "   CPU s by thread: $(threads_cpu "$pid")"
  log "   $got of $accepted accepted records in the output $(python3 -c "print(round($t1 - $T0, 1))") s after the load started; peak RSS $rss MiB"
  ROWS+=("$(python3 -c '
import json, sys
name, load, accepted, got, t0, t1, rss = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
complete = got >= accepted
print(json.dumps({"name": name, "accepted_per_sec": load["records_per_sec"], "accepted": accepted,
  "refused_requests": load["requests_refused"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
  "in_output": got, "seconds": t1 - t0, "e2e_per_sec": (got / (t1 - t0)) if complete else None, "rss_mib": rss}))
' "$name" "$LOAD" "$accepted" "$got" "$T0" "$t1" "$rss")")
}

weir_run() { # $1 = row name, $2 = ack, $3 = compaction enabled
  local d="$W/weir" http admin; http=$(port) admin=$(port)
  mkdir -p "$d"
  { otlp_only_toml "$d/data" "$http" "$admin"; cat <<TOML; } > "$d/weir.toml"
[buffer]
ack = "$2"
[lake]
max_file_age = "1s"
[compaction]
enabled = $3
[log]
level = "warn"
TOML
  log "== $1"
  taskset -c "$ACORE" "$BIN/weir" run --config "$d/weir.toml" 2>"$d/weir.log" & AGENT=$!
  wait_http "http://127.0.0.1:$admin/readyz"
  measure "$1" "$AGENT" "http://127.0.0.1:$http" weir "http://127.0.0.1:$admin"
  stop "$AGENT"; AGENT=""
  rm -rf "$d"
}

fb_run() { # $1 = row name, $2 = storage.type
  local d="$W/fb" http mport; http=$(port) mport=$(port)
  mkdir -p "$d/store"
  local sync=""
  [ "$2" = filesystem ] && sync="    storage.sync full"
  cat > "$d/fluent-bit.conf" <<CONF
[SERVICE]
    flush 1
    log_level warn
    http_server on
    http_listen 127.0.0.1
    http_port $mport
    storage.path $d/store
$sync
[INPUT]
    name opentelemetry
    listen 127.0.0.1
    port $http
    storage.type $2
[OUTPUT]
    name null
    match *
CONF
  log "== $1"
  taskset -c "$ACORE" "$FB" -c "$d/fluent-bit.conf" >"$d/fluent-bit.log" 2>&1 & AGENT=$!
  wait_http "http://127.0.0.1:$mport/api/v1/metrics"
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null && break; sleep 0.05; done
  measure "$1" "$AGENT" "http://127.0.0.1:$http" fluent-bit "http://127.0.0.1:$mport"
  stop "$AGENT"; AGENT=""
  rm -rf "$d"
}

log "weir: $("$BIN/weir" --version 2>&1 | head -1); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -x "$FB" ] && log "fluent-bit: $("$FB" --version 2>&1 | head -1) ($FB)" || log "fluent-bit: $FB absent, its rows are skipped"
log "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), agent on core $ACORE, generator on core $GCORE"
log "data under $W: $(df -h --output=fstype,avail "$W" | tail -1 | xargs) free"

weir_run "Weir durable (defaults)" durable true
weir_run "Weir buffered ack" buffered true
weir_run "Weir durable, compaction off" durable false
if [ -x "$FB" ]; then
  fb_run "Fluent Bit filesystem (storage.sync full) → null" filesystem
  fb_run "Fluent Bit memory → null" memory
fi

python3 - "$RATE" "$SECS" "$CONNS" "${ROWS[@]}" <<'PY'
import json, sys
rate, secs, conns, rows = sys.argv[1], sys.argv[2], sys.argv[3], [json.loads(r) for r in sys.argv[4:]]
k = lambda v: f"{v / 1000:,.0f} k" if v is not None else "incomplete"
print(f"\n{secs} s per agent, {conns} connections, rate {rate}, 1000 records per request\n")
print("| agent | records/s accepted | end-to-end records/s | accepted records in output | s to last record | p50 / p99 | peak RSS |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['name']} | {k(r['accepted_per_sec'])} | {k(r['e2e_per_sec'])} | {r['in_output']:,} / {r['accepted']:,}"
          f"{' (' + str(r['refused_requests']) + ' requests refused)' if r['refused_requests'] else ''} | {r['seconds']:.1f} |"
          f" {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms | {r['rss_mib']:,} MiB |")
by = {r["name"]: r for r in rows}
fb = next((r for r in rows if r["name"].startswith("Fluent Bit filesystem")), None)
if fb:
    print("\nWeir / Fluent Bit filesystem:\n")
    print("| Weir run | end-to-end records/s | accepted records/s | peak RSS |")
    print("| --- | --- | --- | --- |")
    ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "n/a"
    for r in rows:
        if r["name"].startswith("Weir"):
            print(f"| {r['name']} | {ratio(r['e2e_per_sec'], fb['e2e_per_sec'])} | {ratio(r['accepted_per_sec'], fb['accepted_per_sec'])} | {ratio(r['rss_mib'], fb['rss_mib'])} |")
if rate != "max":
    print(f"\nPaced at {int(rate):,} records/s; target: peak RSS ≤ 150 MiB at 100k records/s.")
PY
