#!/usr/bin/env bash
# Thrift load comparison: calls/s and latency straight to a Rust Thrift origin versus
# through attache (framed binary both sides).
#
#   attache: --concurrency 1, pinned to core 0
#   load generator: pinned to core 1
#   origin: core ORIGIN_CPU (default 1; the same in both runs)
#
# Usage: benches/load/thrift.sh [connections] [seconds]
# Env:   CARGO_TARGET_DIR (default target), NO_BUILD=1 to reuse release binaries,
#        ORIGIN_CPU=0|1.
set -euo pipefail

CONNS=${1:-32}
SECS=${2:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$TARGET/release
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "${NO_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --bin attache --example thrift_origin --example thrift_load)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "port $1 never opened" >&2; return 1
}

ORIGIN_PORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)

taskset -c "${ORIGIN_CPU:-1}" "$REL/examples/thrift_origin" "127.0.0.1:$ORIGIN_PORT" binary framed >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

cat >"$WORK/attache.yaml" <<YAML
admin:
  address: 127.0.0.1:$ADMIN_PORT
listeners:
  - name: thrift_bench
    address: 127.0.0.1:$PROXY_PORT
    protocol: thrift
    thrift:
      transport: framed
      protocol: binary
      routes:
        - name: get_user
          match: { method: getUser }
          route: { cluster: origin }
clusters:
  - name: origin
    endpoints: ["127.0.0.1:$ORIGIN_PORT"]
YAML

ATTACHE_LOG=warn taskset -c 0 "$REL/attache" run --config "$WORK/attache.yaml" --concurrency 1 >"$WORK/attache.log" 2>&1 &
PIDS+=($!)
wait_port "$PROXY_PORT"

load() { taskset -c 1 "$REL/examples/thrift_load" --addr "127.0.0.1:$1" --connections "$CONNS" --seconds "$SECS"; }

# Warm up both paths (connections, upstream pool, page cache).
taskset -c 1 "$REL/examples/thrift_load" --addr "127.0.0.1:$ORIGIN_PORT" --connections 4 --seconds 1 >/dev/null
taskset -c 1 "$REL/examples/thrift_load" --addr "127.0.0.1:$PROXY_PORT" --connections 4 --seconds 1 >/dev/null

DIRECT=$(load "$ORIGIN_PORT")
PROXIED=$(load "$PROXY_PORT")
read -r _ _ _ _ _ _ _ _ _ _ _ _ _ UT ST _ < "/proc/${PIDS[1]}/stat"
echo "attache cpu: $((UT + ST)) ticks in total (100 ticks = 1 core-second)"
echo "direct:  $DIRECT"
echo "attache: $PROXIED"
python3 - "$DIRECT" "$PROXIED" <<'PY'
import json, sys
d, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"calls/s  direct {d['calls_per_sec']:.0f}  attache {p['calls_per_sec']:.0f}  ratio {p['calls_per_sec']/max(d['calls_per_sec'],1):.2f}")
print(f"p50 us   direct {d['p50_us']}  attache {p['p50_us']}  (+{p['p50_us']-d['p50_us']})")
print(f"p99 us   direct {d['p99_us']}  attache {p['p99_us']}  (+{p['p99_us']-d['p99_us']})")
print(f"errors   direct {d['errors']}  attache {p['errors']}")
PY
curl -s "http://127.0.0.1:$ADMIN_PORT/stats?filter=attache_thrift_rq_total" || true
