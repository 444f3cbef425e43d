#!/usr/bin/env bash
# User-space instructions per request (HTTP/1.1 keep-alive, or h2c), counted by
# callgrind: repeatable on a busy machine, unlike wall-clock load runs. See
# benches/README.md.
#
#   benches/load/callgrind.sh BIN [BIN...]   # attache binaries (say, before and after)
#   N=20000 SHAPES="direct forward" CONTENDERS="nginx" benches/load/callgrind.sh BIN
#   SHAPES="h2c-direct h2c-forward" benches/load/callgrind.sh BIN
#   SHAPES=tls-direct benches/load/callgrind.sh BEFORE AFTER   # HTTP/1.1 over TLS
#
# For each binary and shape, the proxy runs under valgrind with one worker,
# the client sends 2000 warm-up requests, the counters are zeroed
# (`callgrind_control -z`), N more requests are sent and the counters dumped.
# Shapes: `direct` (a direct_response route with the origin's 64-byte body) and
# `forward` (to the harness's NGINX origin over HTTP/1.1, the attache.yaml.in
# route), both with `h2load --h1 -c4`; `h2c-direct` and `h2c-forward` are the
# same routes with HTTP/2 by prior knowledge downstream, `h2load -c4 -m10`
# (4 connections, 10 streams in flight on each; the upstream side stays
# HTTP/1.1); `h2c-serial` is h2c-direct with one stream at a time per connection
# (`-m 1`: every request finds its connection idle, the case that pays for
# buffers released when idle). `tls-direct` is the direct route on a TLS listener (an ECDSA P-256
# certificate made per run), HTTP/1.1 keep-alive over TLS 1.3 with
# `h2load --h1 -c4`: the measured run's 4 handshakes are included (about 1% of
# its instructions at N=20000). CONTENDERS=nginx adds a bare NGINX reverse proxy (no forwarding
# headers, the SAME_HEADERS=0 config) on each forward shape selected. Build with
# line tables to read the profiles (`callgrind_annotate OUT/<name>.cg.1`):
#   cargo build --release --config 'profile.release.package.attache.debug="line-tables-only"' \
#     --config 'profile.release.package.attache.strip=false'
set -euo pipefail

N=${N:-20000}
SHAPES=${SHAPES:-direct forward}
CONTENDERS=${CONTENDERS:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$(mktemp -d /tmp/attache-callgrind.XXXXXX)}
mkdir -p "$OUT/origin-tmp" "$OUT/nginx-tmp"
(($# > 0)) || [[ -n $CONTENDERS ]] || {
	echo "usage: $0 ATTACHE_BINARY..." >&2
	exit 64
}

PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

read -r ORIGIN_PORT PROXY_PORT <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"

render() {
	local tmpl=$1 out=$2 kv text
	shift 2
	text=$(<"$tmpl")
	for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
	printf '%s\n' "$text" >"$out"
}
USER_LINE=""
((EUID == 0)) && USER_LINE="user root;"

wait_port() { # wait_port PORT [CURL_OPTION...] (-k: HTTPS, unverified)
	local port=$1 scheme=http
	shift
	[[ ${1:-} == -k ]] && scheme=https
	for _ in $(seq 1 600); do
		curl -s -o /dev/null "$@" "$scheme://127.0.0.1:$port/" && return 0
		sleep 0.2
	done
	echo "nothing answers on port $port" >&2
	exit 1
}

render "$HERE/origin.conf.in" "$OUT/origin.conf" WORKERS=1 DIR="$OUT" ORIGIN_PORT="$ORIGIN_PORT" USER="$USER_LINE"
nginx -c "$OUT/origin.conf" -p "$OUT" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

# The tls-direct shape's certificate (self-signed; h2load does not verify).
if [[ " $SHAPES " == *" tls-direct "* ]]; then
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
		-keyout "$OUT/server.key" -out "$OUT/server.pem" -days 1 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
fi

config() { # config SHAPE FILE
	local tls=""
	[[ $1 == tls-* ]] && tls="tls: { cert_chain: $OUT/server.pem, private_key: $OUT/server.key }"
	if [[ $1 == direct || $1 == h2c-direct || $1 == h2c-serial || $1 == tls-direct ]]; then
		cat >"$2" <<EOF
admin: { address: "127.0.0.1:0" }
listeners:
  - name: bench
    address: 127.0.0.1:$PROXY_PORT
    protocol: http
    $tls
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200, body: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n" }
EOF
	else
		render "$HERE/attache.yaml.in" "$2" ORIGIN_PORT="$ORIGIN_PORT" PROXY_PORT="$PROXY_PORT" TRACING="" TLS_LISTENER=""
	fi
}

# client SHAPE: the load generator's options for SHAPE (h2c shapes: HTTP/2 by
# prior knowledge, 10 streams in flight per connection).
client() {
	case $1 in
	h2c-serial) echo "-c 4 -m 1" ;;
	h2c-*) echo "-c 4 -m 10" ;;
	*) echo "--h1 -c 4" ;;
	esac
}

# measure NAME SHAPE COMMAND...: Ir per request of COMMAND (listening on PROXY_PORT).
measure() {
	local name=$1 shape=$2 opts pid ir url="http://127.0.0.1:$PROXY_PORT/"
	read -ra opts <<<"$(client "$shape")"
	shift 2
	rm -f "$OUT/$name.cg"*
	valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.cg" "$@" 2>"$OUT/$name.valgrind" &
	pid=$!
	case $shape in
	h2c-*) wait_port "$PROXY_PORT" --http2-prior-knowledge ;;
	tls-*)
		url="https://127.0.0.1:$PROXY_PORT/"
		wait_port "$PROXY_PORT" -k
		;;
	*) wait_port "$PROXY_PORT" ;;
	esac
	h2load "${opts[@]}" -n 2000 "$url" >/dev/null
	callgrind_control -z "$pid" >/dev/null 2>&1
	h2load "${opts[@]}" -n "$N" "$url" >"$OUT/$name.h2load"
	grep -q "$N succeeded" "$OUT/$name.h2load" || echo "warning: $name had failed requests" >&2
	callgrind_control -d "$pid" >/dev/null 2>&1
	kill "$pid"
	wait "$pid" || true
	ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUT/$name.cg.1")
	printf '%-28s %8d Ir/request\n' "$name" $((ir / N))
}

i=0
for bin in "$@"; do
	i=$((i + 1))
	for shape in $SHAPES; do
		config "$shape" "$OUT/attache-$shape.yaml"
		measure "attache$i-$shape" "$shape" "$bin" run -c "$OUT/attache-$shape.yaml" --concurrency 1 --log-level error
	done
done
# nginx_conf SHAPE FILE: the bare NGINX proxy; for h2c its listener speaks
# HTTP/2 by prior knowledge (`listen ... http2` on a cleartext port).
nginx_conf() {
	local h2=""
	[[ $1 == h2c-* ]] && h2=" http2"
	render "$HERE/nginx.conf.in" "$2" WORKERS=1 DIR="$OUT" ORIGIN_PORT="$ORIGIN_PORT" MAX_CONN=1024 \
		PROXY_PORT="$PROXY_PORT$h2" H2_LISTEN="" TLS_LISTEN="" USER="$USER_LINE" FWD_HEADERS="" FWD_NOTE="bare"
}
if [[ " $CONTENDERS " == *" nginx "* ]]; then
	for shape in $SHAPES; do
		[[ $shape == *forward ]] || continue
		nginx_conf "$shape" "$OUT/nginx-$shape.conf"
		# NGINX forks no worker with master_process off: the one process serves.
		measure "nginx-$shape" "$shape" nginx -c "$OUT/nginx-$shape.conf" -p "$OUT" -g "master_process off;"
	done
fi
echo "profiles in $OUT" >&2
