#!/usr/bin/env bash
# HTTPS comparison: attache vs NGINX vs HAProxy terminating TLS with the same
# certificate (ECDSA P-256, generated per run) on loopback. Self-contained; does not
# need benches/load/run.sh.
#
# Each contender answers `GET /` itself with a 3-byte body, so what is measured is TLS
# termination + HTTP, not an upstream. Three tests per contender:
#   keepalive  wrk, CONNECTIONS keep-alive HTTPS/1.1 connections: requests/s
#   handshake  wrk with `Connection: close`: every request is a fresh TCP connection
#              and a full TLS handshake (session tickets and caches are off on NGINX
#              and HAProxy; wrk never resumes sessions): handshakes/s
#   h2         h2load, H2_CLIENTS TLS connections x H2_STREAMS streams: requests/s
# and, for each, the proxy's CPU-s per 100k requests (utime + stime from /proc, the
# proxy and its children).
#
#   benches/load/tls.sh                            # DURATION=10
#   DURATION=3 benches/load/tls.sh                 # a quick run
#
# Environment (defaults in brackets):
#   ROUNDS [3]: contenders take turns once per round (so a noisy neighbour hits all of
#   them alike); the report shows the median of the rounds
#   DURATION [10] seconds per test   CONNECTIONS [64]   HS_CONNECTIONS [32]
#   H2_CLIENTS [16]  H2_STREAMS [4]   CONTENDERS ["attache nginx haproxy"]
#   TESTS ["keepalive handshake h2"]
#   PROXY_CPU [0] (the proxy under test)   LOAD_CPU [1] (wrk / h2load)
#   OUT [a new directory under /tmp]: results.tsv, results.md, configs and logs
#   SKIP_INSTALL=1 (never apt-get)   SKIP_BUILD=1 (use the existing release binary)
#   CARGO_TARGET_DIR [<repo>/target]
#   BASELINE [unset]: another attache binary (say, a release build from before a
#   change); it runs as contender "baseline" with the same config, interleaved with
#   the others in every round, and the report gains a baseline column
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
HS_CONNECTIONS=${HS_CONNECTIONS:-32}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-4}
CONTENDERS=${CONTENDERS:-attache nginx haproxy}
BASELINE=${BASELINE:-}
if [[ -n $BASELINE && $CONTENDERS != *baseline* ]]; then CONTENDERS="$CONTENDERS baseline"; fi
TESTS=${TESTS:-keepalive handshake h2}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$(mktemp -d /tmp/attache-tls-load.XXXXXX)}
WORK="$OUT/run"
mkdir -p "$WORK"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be whole seconds"
# Every load run is killed if it overruns its duration by this much.
RUN_LIMIT=$((DURATION + 30))

# ---------------------------------------------------------------- processes ---
PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	local deadline=$((SECONDS + 10))
	for pid in "${PIDS[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	((rc == 0)) || log "failed (exit $rc); logs are in $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
	local pid=$1 deadline=$((SECONDS + 10))
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local keep=()
	for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# ------------------------------------------------------------------- tools ---
need() { command -v "$1" >/dev/null 2>&1; }
install_tools() {
	local pkgs=()
	need wrk || pkgs+=(wrk)
	need h2load || pkgs+=(nghttp2-client)
	need nginx || pkgs+=(nginx-light)
	need haproxy || pkgs+=(haproxy)
	need openssl || pkgs+=(openssl)
	need curl || pkgs+=(curl)
	((${#pkgs[@]} == 0)) && return
	[[ ${SKIP_INSTALL:-} == 1 ]] && die "missing tools (${pkgs[*]}) and SKIP_INSTALL=1"
	log "installing ${pkgs[*]}"
	local sudo=()
	((EUID == 0)) || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" >/dev/null
}
install_tools
for t in wrk h2load nginx haproxy openssl curl taskset; do need "$t" || die "$t not found"; done

# ------------------------------------------------------------------- build ---
ATTACHE="$TARGET/release/attache"
if [[ ${SKIP_BUILD:-} != 1 ]]; then
	log "cargo build --release (CARGO_TARGET_DIR=$TARGET)"
	(cd "$REPO" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet)
fi
[[ -x $ATTACHE ]] || die "$ATTACHE not built"

# ------------------------------------------------------------- certificate ---
CERTS="$WORK/certs"
mkdir -p "$CERTS"
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	-keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" -days 2 -subj "/CN=bench ca" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	-keyout "$CERTS/server.key" -out "$CERTS/server.csr" -subj "/CN=localhost" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$CERTS/ext.cnf"
openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
	-CAcreateserial -out "$CERTS/server.pem" -days 1 -extfile "$CERTS/ext.cnf" 2>/dev/null
# HAProxy wants the chain and the key in one file.
cat "$CERTS/server.pem" "$CERTS/server.key" >"$CERTS/server-combined.pem"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait (bounded) until an HTTPS GET on `port` answers 200.
wait_https() {
	local port=$1 deadline=$((SECONDS + 15))
	while ((SECONDS < deadline)); do
		if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --cacert "$CERTS/ca.pem" \
			"https://localhost:$port/") == 200 ]]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# ------------------------------------------------------------- contenders ---
PORT=""
ADMIN_PORT=""
start_attache() { # [binary]
	local bin=${1:-$ATTACHE}
	PORT=$(free_port)
	ADMIN_PORT=$(free_port)
	cat >"$WORK/attache.yaml" <<EOF
admin:
  address: 127.0.0.1:$ADMIN_PORT
listeners:
  - name: bench
    address: 127.0.0.1:$PORT
    protocol: http
    tls:
      cert_chain: $CERTS/server.pem
      private_key: $CERTS/server.key
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            direct_response: { status: 200, body: "ok\n" }
EOF
	"$bin" validate --config "$WORK/attache.yaml" >/dev/null
	taskset -c "$PROXY_CPU" "$bin" run --config "$WORK/attache.yaml" --concurrency 1 \
		--log-level warn >"$WORK/attache.log" 2>&1 &
	PIDS+=($!)
}

start_baseline() {
	[[ -x $BASELINE ]] || die "BASELINE=$BASELINE is not an executable"
	start_attache "$BASELINE"
}

start_nginx() {
	PORT=$(free_port)
	mkdir -p "$WORK/nginx"
	cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$PORT ssl http2;
        ssl_certificate $CERTS/server.pem;
        ssl_certificate_key $CERTS/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / { return 200 "ok\n"; }
    }
}
EOF
	taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
		-g 'daemon off;' >"$WORK/nginx/stdout.log" 2>&1 &
	PIDS+=($!)
}

start_haproxy() {
	PORT=$(free_port)
	cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192
    tune.ssl.cachesize 0
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend bench
    bind 127.0.0.1:$PORT ssl crt $CERTS/server-combined.pem alpn h2,http/1.1
    http-request return status 200 content-type text/plain string "ok\n"
EOF
	haproxy -c -q -f "$WORK/haproxy.cfg"
	taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
	PIDS+=($!)
}

# --------------------------------------------------------------- load runs ---
# Prints requests/s (and appends errors to the log).
run_wrk() {
	local name=$1 test=$2
	shift 2
	local out="$WORK/$name-$test.txt"
	timeout "$RUN_LIMIT" taskset -c "$LOAD_CPU" wrk -t1 -d"${DURATION}s" "$@" \
		"https://localhost:$PORT/" >"$out" 2>&1 || true
	awk '/Requests\/sec:/ {print $2}' "$out"
}

run_h2load() {
	local name=$1
	local out="$WORK/$name-h2.txt"
	timeout "$RUN_LIMIT" taskset -c "$LOAD_CPU" h2load -D "$DURATION" -c "$H2_CLIENTS" \
		-m "$H2_STREAMS" -t 1 "https://localhost:$PORT/" >"$out" 2>&1 || true
	# "finished in 10.00s, 12345.60 req/s, ..."
	awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^req\/s/) print $i}' "$out" |
		tr -d ','
}

# CPU ticks (utime + stime) of a process and its children: NGINX's worker is a child
# of the master that PIDS records.
CLK_TCK=$(getconf CLK_TCK)
tree_ticks() {
	local total=0 pid stat rest
	local -a f
	for pid in "$1" $(pgrep -P "$1" || true); do
		stat=$(<"/proc/$pid/stat") || continue
		rest=${stat##*) } # fields from 3 on; comm may contain spaces
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12])) # fields 14 and 15
	done
	echo "$total"
}

errors_of() {
	local f=$1
	awk '/Non-2xx|Socket errors|failed/ {printf "%s ", $0}' "$f" 2>/dev/null
}

TSV="$OUT/results.tsv"
printf 'round\tcontender\ttest\tvalue\tunit\tcpu_s\n' >"$TSV"
for round in $(seq 1 "$ROUNDS"); do
	for c in $CONTENDERS; do
		log "round $round/$ROUNDS: starting $c on cpu $PROXY_CPU (load average $(cut -d' ' -f1-3 /proc/loadavg))"
		"start_$c"
		wait_https "$PORT" || die "$c did not answer on port $PORT (see $WORK)"
		# Warm up (not recorded).
		timeout 15 taskset -c "$LOAD_CPU" wrk -t1 -c8 -d1s "https://localhost:$PORT/" >/dev/null 2>&1 || true
		for t in $TESTS; do
			ticks=$(tree_ticks "${PIDS[-1]}")
			case $t in
			keepalive) v=$(run_wrk "$c" keepalive -c"$CONNECTIONS") unit="req/s" ;;
			handshake) v=$(run_wrk "$c" handshake -c"$HS_CONNECTIONS" -H 'Connection: close') unit="handshakes/s" ;;
			h2) v=$(run_h2load "$c") unit="req/s" ;;
			*) die "unknown test $t" ;;
			esac
			cpu=$(awk -v a="$(tree_ticks "${PIDS[-1]}")" -v b="$ticks" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (a - b) / t }')
			f="$WORK/$c-$t.txt"
			cp "$f" "$WORK/$c-$t.round$round.txt"
			e=$(errors_of "$f")
			log "$c $t: ${v:-?} $unit, cpu ${cpu}s ${e:+(}${e}${e:+)}"
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$t" "${v:-0}" "$unit" "$cpu" >>"$TSV"
		done
		if [[ $c == attache || $c == baseline ]]; then
			# Sanity: every handshake-test request was its own TLS handshake.
			curl -s "http://127.0.0.1:$ADMIN_PORT/stats?filter=attache_tls_handshake_total" \
				>"$WORK/$c-handshakes.round$round.txt" || true
		fi
		stop_pid "${PIDS[-1]}"
	done
done

# ------------------------------------------------------------------ report ---
MD="$OUT/results.md"
# The median of the numbers on stdin (0 when there are none).
mid() {
	sort -g | awk '{v[NR]=$1} END { if (NR == 0) print 0; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'
}
# Median over rounds of one contender's test.
median() {
	awk -F'\t' -v c="$1" -v t="$2" '$2==c && $3==t {print $4}' "$TSV" | mid
}
# Median over rounds of one contender's CPU-s per 100k requests in one test.
median_cpu() {
	awk -F'\t' -v c="$1" -v t="$2" -v d="$DURATION" '$2==c && $3==t && $4 > 0 {print $6 / ($4 * d) * 100000}' "$TSV" | mid
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
{
	b_head="" b_rule=""
	[[ -n $BASELINE ]] && b_head=" baseline | attache / baseline |" b_rule=" ---: | ---: |"
	echo "| test (median of $ROUNDS) | attache | nginx | haproxy | attache / nginx |$b_head"
	echo "| --- | ---: | ---: | ---: | ---: |$b_rule"
	for t in $TESTS; do
		a=$(median attache "$t")
		n=$(median nginx "$t")
		h=$(median haproxy "$t")
		u=$(awk -F'\t' -v t="$t" '$3==t {print $5; exit}' "$TSV")
		printf '| %s (%s) | %.0f | %.0f | %.0f | %s |' "$t" "$u" "$a" "$n" "$h" "$(ratio "$a" "$n")"
		if [[ -n $BASELINE ]]; then
			b=$(median baseline "$t")
			printf ' %.0f | %s |' "$b" "$(ratio "$a" "$b")"
		fi
		echo
	done
	echo
	echo "CPU-s per 100k requests (the proxy's utime + stime, all its processes; median of $ROUNDS):"
	echo
	echo "| test | attache | nginx | haproxy | attache / nginx | attache / haproxy |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	for t in $TESTS; do
		a=$(median_cpu attache "$t")
		n=$(median_cpu nginx "$t")
		h=$(median_cpu haproxy "$t")
		printf '| %s | %.2f | %.2f | %.2f | %s | %s |\n' "$t" "$a" "$n" "$h" "$(ratio "$a" "$n")" "$(ratio "$a" "$h")"
	done
} >"$MD"
cat "$MD"
log "results: $TSV $MD (raw output in $WORK)"
