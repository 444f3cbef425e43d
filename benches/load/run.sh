#!/usr/bin/env bash
# Load comparison: attache vs NGINX vs HAProxy as reverse proxies to one origin on
# loopback. See benches/README.md for how to read the output.
#
#   benches/load/run.sh                      # ROUNDS=3 DURATION=10s
#   ROUNDS=1 DURATION=3s benches/load/run.sh # a quick smoke run
#
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [10s]  CONNECTIONS [64] (wrk)
#   H2_CLIENTS [16]  H2_STREAMS [4] (h2load: clients x streams in flight)
#   RATE [5000] req/s and RATE_CONNECTIONS [32] for the fixed-rate latency run
#   WARMUP [2s] per contender before round 1
#   CONTENDERS ["attache nginx haproxy"]  TESTS ["h1 h2 rate idle"]; "close" (not in
#     the default list) is HTTP/1.1 with a new connection per request: wrk with
#     `Connection: close` over CLOSE_CONNECTIONS [32] connections
#   IDLE_CONNECTIONS [10000] and IDLE_ROUNDS [1] for the idle-connection memory test
#     (HTTP/1.1, h2c, HTTP/1.1 over TLS and HTTP/2 over TLS (ALPN h2), with a
#     certificate made per run)
#   PROXY_CPU [0] (the proxies)  LOAD_CPU [1] (load generator and origin)
#   WORKERS [1]: proxy workers (attache --concurrency, NGINX worker_processes,
#     HAProxy nbthread) and load-generator threads (wrk -t, h2load -t). For the
#     scaling run give both sides both cores: WORKERS=2 PROXY_CPU=0,1 LOAD_CPU=0,1
#   OUT [a new directory under /tmp] where results.tsv, results.md and logs go
#   SKIP_INSTALL=1 (never apt-get)  SKIP_BUILD=1 (use the existing binaries)
#   SAME_HEADERS [1]: NGINX and HAProxy add x-forwarded-for, x-forwarded-proto and
#     x-request-id (when absent) like attache's defaults; 0 runs them bare
#   CARGO_TARGET_DIR [<repo>/target]
#   BASELINE [unset]: path to another attache binary (say, a release build of the
#     commit before a change); it runs as contender "baseline" with the same config,
#     so a before/after comparison is interleaved in one run
#   Contenders trace100 and trace1 (not in the default list) run the same attache
#     with distributed tracing on, sampling 100% and 1% of requests, exporting OTLP
#     to the origin (which answers 200 and discards): tracing's cost, measured
#     against contender attache (tracing off) in the same run, e.g.
#     CONTENDERS="attache trace100 trace1"
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-4}
RATE=${RATE:-5000}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-32}
CLOSE_CONNECTIONS=${CLOSE_CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
CONTENDERS=${CONTENDERS:-attache nginx haproxy${BASELINE:+ baseline}}
TESTS=${TESTS:-h1 h2 rate idle}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_ROUNDS=${IDLE_ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WORKERS=${WORKERS:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$(mktemp -d /tmp/attache-load.XXXXXX)}
mkdir -p "$OUT"
WORK="$OUT/run"
mkdir -p "$WORK"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# "10s" / "2m" / "10" -> whole seconds.
seconds() {
	case $1 in
	*ms) echo $((${1%ms} / 1000)) ;;
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*) echo "$1" ;;
	esac
}
DUR_S=$(seconds "$DURATION")
WARMUP_S=$(seconds "$WARMUP")
[[ $DUR_S =~ ^[0-9]+$ && $DUR_S -gt 0 ]] || die "DURATION must be whole seconds, got $DURATION"
# Every load run is killed if it overruns its duration by this much.
RUN_LIMIT=$((DUR_S + 30))

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
	if ((rc != 0)); then
		log "failed (exit $rc); logs are in $WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait until something accepts on 127.0.0.1:$1, or fail after $3 seconds; $2 is the
# pid that should be serving it (fail early if it dies).
wait_port() {
	local port=$1 pid=$2 limit=${3:-20}
	local deadline=$((SECONDS + limit))
	while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || die "process $pid exited before listening on $port"
		((SECONDS < deadline)) || die "nothing listening on 127.0.0.1:$port after ${limit}s"
		sleep 0.05
	done
}

# N distinct free loopback ports (held open together while choosing).
free_ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --------------------------------------------------------------- /proc reads ---
CLK_TCK=$(getconf CLK_TCK)

# utime + stime in clock ticks, summed over the given pids (all threads included).
cpu_ticks() {
	local total=0 pid stat rest
	local -a f
	for pid in "$@"; do
		stat=$(<"/proc/$pid/stat") || die "process $pid is gone"
		rest=${stat##*) } # fields from 3 on; comm may contain spaces
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12])) # fields 14 and 15
	done
	echo "$total"
}

status_kib() { # $1 = pid, $2 = VmRSS | VmHWM
	awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# Reset VmHWM so the next read is this run's peak (Linux >= 4.0, needs owner/root).
HWM_RESET=yes
reset_hwm() {
	echo 5 >"/proc/$1/clear_refs" 2>/dev/null || HWM_RESET=no
}

# ------------------------------------------------------------------ tooling ---
install_tools() {
	local missing=() pkgs=()
	command -v nginx >/dev/null || missing+=(nginx)
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v h2load >/dev/null || missing+=(nghttp2-client)
	command -v python3 >/dev/null || missing+=(python3)
	command -v taskset >/dev/null || missing+=(util-linux)
	command -v openssl >/dev/null || missing+=(openssl)
	((${#missing[@]} == 0)) && return 0
	[[ ${SKIP_INSTALL:-} == 1 ]] && die "missing tools: ${missing[*]} (SKIP_INSTALL=1)"
	((EUID == 0)) || die "missing tools: ${missing[*]}; run as root or install them"
	log "installing ${missing[*]} with apt-get"
	timeout 300 apt-get update -qq
	for p in "${missing[@]}"; do
		if [[ $p == nginx ]]; then
			if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
		else
			pkgs+=("$p")
		fi
	done
	DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
	# Debian's postinst may start a system nginx on :80; it is not ours to keep.
	if [[ " ${pkgs[*]} " == *" nginx"* ]] && command -v service >/dev/null; then
		service nginx stop >/dev/null 2>&1 || true
	fi
}

build() {
	if [[ ${SKIP_BUILD:-} == 1 ]]; then
		log "SKIP_BUILD=1: using binaries in $TARGET/release"
	else
		log "building attache and the load generator (release; fat LTO takes minutes)"
		# Two invocations: building the example pulls in dev-dependency features, and
		# attache should be the same binary a plain `cargo build --release` makes.
		(cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin attache)
		(cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --example loadgen)
	fi
	ATTACHE=$TARGET/release/attache
	LOADGEN=$TARGET/release/examples/loadgen
	[[ -x $ATTACHE ]] || die "$ATTACHE not built"
	[[ -x $LOADGEN || " $TESTS " != *" rate "* ]] || die "$LOADGEN not built"
}

# Fill @KEY@ placeholders: render TEMPLATE OUTPUT KEY=VALUE...
render() {
	local tmpl=$1 out=$2 kv text
	shift 2
	text=$(<"$tmpl")
	for kv in "$@"; do
		text=${text//@${kv%%=*}@/${kv#*=}}
	done
	printf '%s\n' "$text" >"$out"
}

USER_LINE=""
((EUID == 0)) && USER_LINE="user root;"

# The idle test holds IDLE_CONNECTIONS connections at once: the proxies' connection
# limits (NGINX worker_connections, HAProxy maxconn) and the file limit grow to fit.
# HAProxy reserves two descriptors per connection (client and server side) and
# refuses to start when its maxconn does not fit the file limit, so under a low hard
# limit it holds fewer idle connections (the table says how many).
MAX_CONN=4096 HAPROXY_MAX_CONN=4096
declare -A IDLE_N
if [[ " $TESTS " == *" idle "* ]]; then
	[[ $IDLE_CONNECTIONS =~ ^[0-9]+$ && $IDLE_CONNECTIONS -gt 0 ]] || die "IDLE_CONNECTIONS must be a whole number"
	MAX_CONN=$((IDLE_CONNECTIONS + 1024 > 4096 ? IDLE_CONNECTIONS + 1024 : 4096))
	fd_hard=$(ulimit -Hn)
	[[ $fd_hard == unlimited ]] && fd_hard=$((4 * MAX_CONN))
	((fd_hard >= MAX_CONN + 1024)) ||
		die "the idle test needs $((MAX_CONN + 1024)) open files (ulimit -Hn is $fd_hard); lower IDLE_CONNECTIONS"
	ulimit -n "$fd_hard"
	HAPROXY_MAX_CONN=$(((fd_hard - 256) / 2 < MAX_CONN ? (fd_hard - 256) / 2 : MAX_CONN))
	IDLE_N[haproxy]=$((HAPROXY_MAX_CONN - 64 < IDLE_CONNECTIONS ? HAPROXY_MAX_CONN - 64 : IDLE_CONNECTIONS))
fi

# ---------------------------------------------------------------- contenders ---
declare -A PORT H2PORT TLSPORT PROCS SERVING IDLE_KIB

# The idle test's TLS row: every contender terminates TLS on one more port with the
# same certificate (ECDSA P-256, made per run as benches/load/tls.sh makes it), with
# its TLS defaults otherwise. Without the idle test the configs carry no TLS.
TLS_ON=no
[[ " $TESTS " == *" idle "* ]] && TLS_ON=yes
make_certs() {
	CERTS="$WORK/certs"
	mkdir -p "$CERTS"
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
		-keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" -days 2 -subj "/CN=bench ca" \
		-addext "basicConstraints=critical,CA:true" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
		-keyout "$CERTS/server.key" -out "$CERTS/server.csr" -subj "/CN=localhost" 2>/dev/null
	printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:false" \
		"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$CERTS/ext.cnf"
	openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
		-CAcreateserial -out "$CERTS/server.pem" -days 1 -extfile "$CERTS/ext.cnf" 2>/dev/null
	# HAProxy wants the chain and the key in one file.
	cat "$CERTS/server.pem" "$CERTS/server.key" >"$CERTS/server-combined.pem"
}

start_origin() {
	mkdir -p "$WORK/origin-tmp"
	render "$HERE/origin.conf.in" "$WORK/origin.conf" WORKERS="$WORKERS" DIR="$WORK" ORIGIN_PORT="$ORIGIN_PORT" USER="$USER_LINE"
	taskset -c "$LOAD_CPU" nginx -p "$WORK" -c "$WORK/origin.conf" -e "$WORK/origin-error.log" 2>>"$WORK/origin-error.log" &
	PIDS+=($!)
	wait_port "$ORIGIN_PORT" "$!"
	log "origin (nginx, $WORKERS worker(s)) on 127.0.0.1:$ORIGIN_PORT, cpu $LOAD_CPU"
}

NGINX_H2=no
# The forwarding headers attache adds by default, for NGINX and HAProxy to do the
# same work (SAME_HEADERS=1), or nothing (0).
if [[ ${SAME_HEADERS:-1} == 1 ]]; then
	NGINX_FWD='proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Request-ID $bench_request_id;'
	HAPROXY_FWD='option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Request-ID %[uuid] unless { req.hdr(x-request-id) -m found }'
	FWD_NOTE="Adds x-forwarded-for, x-forwarded-proto and x-request-id like attache."
else
	NGINX_FWD='' HAPROXY_FWD='' FWD_NOTE="No forwarding headers (SAME_HEADERS=0)."
fi

start_nginx() {
	local port=$1 h2port=$2 h2listen="listen 127.0.0.1:$2 http2;" tls="" tls_h1=""
	if [[ $TLS_ON == yes ]]; then
		TLSPORT[nginx]=$(free_ports 1)
		# HTTP/1.1 and HTTP/2 (ALPN) on the TLS port; HTTP/1.1 only without h2 support.
		tls_h1="listen 127.0.0.1:${TLSPORT[nginx]} ssl; ssl_certificate $CERTS/server.pem; ssl_certificate_key $CERTS/server.key;"
		tls="listen 127.0.0.1:${TLSPORT[nginx]} ssl http2; ssl_certificate $CERTS/server.pem; ssl_certificate_key $CERTS/server.key;"
	fi
	mkdir -p "$WORK/nginx-tmp"
	render "$HERE/nginx.conf.in" "$WORK/nginx.conf" DIR="$WORK" ORIGIN_PORT="$ORIGIN_PORT" MAX_CONN="$MAX_CONN" \
		WORKERS="$WORKERS" PROXY_PORT="$port" H2_LISTEN="$h2listen" TLS_LISTEN="$tls" USER="$USER_LINE" FWD_HEADERS="$NGINX_FWD" FWD_NOTE="$FWD_NOTE"
	if nginx -t -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" >/dev/null 2>&1; then
		NGINX_H2=yes
	else
		log "this nginx cannot serve HTTP/2; skipping it for h2load and the idle h2 rows"
		render "$HERE/nginx.conf.in" "$WORK/nginx.conf" DIR="$WORK" ORIGIN_PORT="$ORIGIN_PORT" MAX_CONN="$MAX_CONN" \
			WORKERS="$WORKERS" PROXY_PORT="$port" H2_LISTEN="" TLS_LISTEN="$tls_h1" USER="$USER_LINE" FWD_HEADERS="$NGINX_FWD" FWD_NOTE="$FWD_NOTE"
	fi
	taskset -c "$PROXY_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" 2>>"$WORK/nginx-error.log" &
	local master=$!
	PIDS+=("$master")
	wait_port "$port" "$master"
	local workers="" deadline=$((SECONDS + 10))
	while (($(wc -w <<<"$workers") < WORKERS)); do
		workers=$(pgrep -P "$master" | head -n "$WORKERS" | tr '\n' ' ' || true)
		(($(wc -w <<<"$workers") >= WORKERS)) || ((SECONDS < deadline)) || die "nginx workers did not start"
		(($(wc -w <<<"$workers") >= WORKERS)) || sleep 0.05
	done
	PROCS[nginx]="$master $workers"
	SERVING[nginx]=${workers%% *}
	[[ $NGINX_H2 == yes ]] && H2PORT[nginx]=$h2port
	return 0
}

start_haproxy() {
	local port=$1 h2port=$2 tls=""
	if [[ $TLS_ON == yes ]]; then
		TLSPORT[haproxy]=$(free_ports 1)
		tls="bind 127.0.0.1:${TLSPORT[haproxy]} ssl crt $CERTS/server-combined.pem alpn h2,http/1.1"
	fi
	render "$HERE/haproxy.cfg.in" "$WORK/haproxy.cfg" WORKERS="$WORKERS" ORIGIN_PORT="$ORIGIN_PORT" PROXY_PORT="$port" H2_PORT="$h2port" MAX_CONN="$HAPROXY_MAX_CONN" \
		TLS_BIND="$tls" FWD_HEADERS="$HAPROXY_FWD" FWD_NOTE="$FWD_NOTE"
	haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"
	taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	wait_port "$port" "$pid"
	wait_port "$h2port" "$pid"
	PROCS[haproxy]=$pid
	SERVING[haproxy]=$pid
	H2PORT[haproxy]=$h2port
}

# The `tracing:` block for a sampling rate: spans exported to the origin, which
# answers POST /v1/traces with 200 (its `return 200` serves every path).
tracing_block() { # sampling
	echo "tracing: { collector: 127.0.0.1:$ORIGIN_PORT, service_name: bench, sampling: $1 }"
}

# The idle test's TLS listener: the bench listener's routes, over TLS.
attache_tls_listener() { # port
	cat <<EOF
  - name: bench_tls
    address: 127.0.0.1:$1
    protocol: http
    tls: { cert_chain: $CERTS/server.pem, private_key: $CERTS/server.key }
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: / }
            route: { cluster: origin }
EOF
}

start_attache() { # port [name binary sampling]: baseline is another build; trace* trace
	local port=$1 name=${2:-attache} bin=${3:-$ATTACHE} tracing="" tls=""
	[[ -n ${4:-} ]] && tracing=$(tracing_block "$4")
	if [[ $TLS_ON == yes ]]; then
		TLSPORT[$name]=$(free_ports 1)
		tls=$(attache_tls_listener "${TLSPORT[$name]}")
	fi
	render "$HERE/attache.yaml.in" "$WORK/$name.yaml" ORIGIN_PORT="$ORIGIN_PORT" PROXY_PORT="$port" TRACING="$tracing" \
		TLS_LISTENER="$tls"
	"$bin" validate --config "$WORK/$name.yaml" >/dev/null || die "$name rejected $WORK/$name.yaml"
	rm -f "$WORK/$name.ready"
	ATTACHE_LOG=warn taskset -c "$PROXY_CPU" "$bin" run --config "$WORK/$name.yaml" \
		--concurrency "$WORKERS" --ready-file "$WORK/$name.ready" >>"$WORK/$name.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	local deadline=$((SECONDS + 20))
	until [[ -s $WORK/$name.ready ]]; do
		kill -0 "$pid" 2>/dev/null || die "$name exited; see $WORK/$name.log"
		((SECONDS < deadline)) || die "$name not ready after 20s"
		sleep 0.05
	done
	wait_port "$port" "$pid"
	PROCS[$name]=$pid
	SERVING[$name]=$pid
	H2PORT[$name]=$port # h1 and h2c on one listener
}

# ---------------------------------------------------------------- load runs ---
# Each prints "requests rps p50_us p99_us errors" on stdout.
load_h1() { # port seconds tag
	local f="$WORK/$3.wrk"
	taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" \
		wrk -t"$WORKERS" -c"$CONNECTIONS" -d"$2s" --latency "http://127.0.0.1:$1/" >"$f" 2>&1 ||
		die "wrk failed; see $f"
	python3 "$HERE/report.py" parse wrk "$f"
}

# A new connection per request: every response closes its connection and wrk opens
# the next one, so accept, the first read and the close are in every request's cost.
load_close() {
	local f="$WORK/$3.wrk"
	taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" \
		wrk -t"$WORKERS" -c"$CLOSE_CONNECTIONS" -d"$2s" --latency -H 'Connection: close' \
		"http://127.0.0.1:$1/" >"$f" 2>&1 || die "wrk failed; see $f"
	python3 "$HERE/report.py" parse wrk "$f"
}

load_h2() {
	local f="$WORK/$3.h2load" lf="$WORK/$3.h2log"
	taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" \
		h2load -t"$WORKERS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$2" --log-file="$lf" "http://127.0.0.1:$1/" >"$f" 2>&1 ||
		die "h2load failed; see $f"
	python3 "$HERE/report.py" parse h2load "$f" "$lf"
	rm -f "$lf"
}

load_rate() {
	local f="$WORK/$3.loadgen"
	taskset -c "$LOAD_CPU" timeout "$RUN_LIMIT" \
		"$LOADGEN" --url "http://127.0.0.1:$1/" --rate "$RATE" --duration "$2" \
		--connections "$RATE_CONNECTIONS" >"$f" 2>&1 || die "loadgen failed; see $f"
	python3 "$HERE/report.py" parse loadgen "$f"
}

RESULTS="$OUT/results.tsv"

# measure ROUND TEST CONTENDER: one recorded run, appended to results.tsv.
measure() {
	local round=$1 test=$2 who=$3 port
	if [[ $test == h2 ]]; then
		port=${H2PORT[$who]:-}
		[[ -n $port ]] || return 0
	else
		port=${PORT[$who]}
	fi
	local serving=${SERVING[$who]} procs=${PROCS[$who]}
	reset_hwm "$serving"
	local before t0 after t1 vals
	# shellcheck disable=SC2086 # procs is a list of pids
	before=$(cpu_ticks $procs)
	t0=$(date +%s.%N)
	vals=$("load_$test" "$port" "$DUR_S" "r$round-$test-$who")
	t1=$(date +%s.%N)
	# shellcheck disable=SC2086
	after=$(cpu_ticks $procs)
	local peak cpu wall
	peak=$(status_kib "$serving" VmHWM)
	cpu=$(awk -v a="$after" -v b="$before" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (a - b) / t }')
	wall=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
	read -r requests rps p50 p99 errors <<<"$vals"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$test" "$who" \
		"$requests" "$rps" "$p50" "$p99" "$errors" "$cpu" "$wall" "$peak" "${IDLE_KIB[$who]}" >>"$RESULTS"
	log "round $round $test $who: $(printf '%.0f' "$rps") req/s, p50 ${p50}us, p99 ${p99}us, cpu ${cpu}s, errors $errors"
}

# Stop a contender's processes (TERM, then KILL after 30 s) and wait for them.
stop_contender() {
	local pid deadline=$((SECONDS + 30))
	for pid in ${PROCS[$1]}; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in ${PROCS[$1]}; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

rss_sum_kib() { # VmRSS summed over the given pids
	local total=0 pid
	for pid in "$@"; do total=$((total + $(status_kib "$pid" VmRSS))); done
	echo "$total"
}

IDLE_RESULTS="$OUT/idle.tsv"

# measure_idle ROUND CONTENDER PROTO (h1 | h2c | tls | tls-h2): memory per idle keep-alive
# connection. The contender is restarted first: memory an earlier run left in its
# allocator would otherwise absorb the new connections and hide their cost.
# benches/load/idle.py opens IDLE_CONNECTIONS connections, one request each, and
# holds them; the cost is the RSS growth of all the contender's processes.
measure_idle() {
	local round=$1 who=$2 proto=$3 args
	# (NGINX without HTTP/2 support has neither h2 row.)
	if [[ $proto == h2c || $proto == tls-h2 ]] && [[ -z ${H2PORT[$who]:-} ]]; then
		return 0
	fi
	stop_contender "$who"
	start_contender "$who"
	case $proto in
	h1) args=(--port "${PORT[$who]}") ;;
	h2c) args=(--port "${H2PORT[$who]}" --proto h2c) ;;
	tls) args=(--port "${TLSPORT[$who]}" --tls) ;;
	tls-h2) args=(--port "${TLSPORT[$who]}" --proto h2) ;;
	esac
	local f="$WORK/idle$round-$proto-$who.out" before after client deadline=$((SECONDS + 300))
	local n=${IDLE_N[$who]:-$IDLE_CONNECTIONS}
	# shellcheck disable=SC2086 # PROCS is a list of pids
	before=$(rss_sum_kib ${PROCS[$who]})
	taskset -c "$LOAD_CPU" python3 "$HERE/idle.py" "${args[@]}" --connections "$n" >"$f" 2>&1 &
	client=$!
	until grep -q '^ready' "$f" 2>/dev/null; do
		kill -0 "$client" 2>/dev/null || die "idle client failed against $who; see $f"
		((SECONDS < deadline)) || die "idle client not done after 300 s; see $f"
		sleep 0.2
	done
	# shellcheck disable=SC2086
	after=$(rss_sum_kib ${PROCS[$who]})
	kill -TERM "$client" 2>/dev/null || true
	wait "$client" 2>/dev/null || true
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$proto" "$who" "$n" "$before" "$after" >>"$IDLE_RESULTS"
	log "idle $round $proto $who: $n connections, RSS $before -> $after KiB ($(((after - before) * 1024 / n)) B each)"
}

# The span counters of the tracing contenders, from their admin endpoints (named in
# the ready file): every sampled span should be `exported`, none `dropped`/`failed`.
tracing_stats() {
	local who admin
	for who in "${order[@]}"; do
		[[ $who == trace* ]] || continue
		admin=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$WORK/$who.ready")
		echo
		echo "$who spans: $(timeout 10 python3 -c 'import sys, urllib.request as u
print(", ".join(l for l in u.urlopen(sys.argv[1], timeout=5).read().decode().splitlines()
                if l.startswith("attache_tracing_spans_total")) or "none")' "http://$admin/stats?filter=attache_tracing")"
	done
}

# ---------------------------------------------------------------------- main ---
install_tools
build
command -v taskset >/dev/null || die "taskset not found"
(($(nproc) >= 2)) || log "warning: fewer than 2 cores; the pinning below cannot isolate anything"

read -r ORIGIN_PORT P_ATTACHE P_NGINX P_NGINX_H2 P_HAPROXY P_HAPROXY_H2 P_BASELINE P_TRACE100 P_TRACE1 \
	<<<"$(free_ports 9)"
start_origin
[[ $TLS_ON == yes ]] && make_certs

start_contender() {
	case $1 in
	attache) PORT[attache]=$P_ATTACHE && start_attache "$P_ATTACHE" ;;
	nginx) PORT[nginx]=$P_NGINX && start_nginx "$P_NGINX" "$P_NGINX_H2" ;;
	haproxy) PORT[haproxy]=$P_HAPROXY && start_haproxy "$P_HAPROXY" "$P_HAPROXY_H2" ;;
	baseline)
		[[ -x ${BASELINE:-} ]] || die "contender baseline needs BASELINE=/path/to/attache"
		PORT[baseline]=$P_BASELINE && start_attache "$P_BASELINE" baseline "$BASELINE"
		;;
	trace100) PORT[trace100]=$P_TRACE100 && start_attache "$P_TRACE100" trace100 "$ATTACHE" 1.0 ;;
	trace1) PORT[trace1]=$P_TRACE1 && start_attache "$P_TRACE1" trace1 "$ATTACHE" 0.01 ;;
	*) die "unknown contender $1" ;;
	esac
}

read -r -a order <<<"$CONTENDERS"
for who in "${order[@]}"; do
	start_contender "$who"
	IDLE_KIB[$who]=$(status_kib "${SERVING[$who]}" VmRSS)
	log "$who on 127.0.0.1:${PORT[$who]} (h2c: ${H2PORT[$who]:-none}), cpu $PROXY_CPU, idle RSS ${IDLE_KIB[$who]} KiB"
done

# Every contender must answer 200 before anything is measured.
for who in "${order[@]}"; do
	code=$(timeout 10 python3 -c 'import sys, urllib.request as u
try:
    print(u.urlopen(sys.argv[1], timeout=5).status)
except Exception as e:
    print(getattr(e, "code", e))' "http://127.0.0.1:${PORT[$who]}/")
	[[ $code == 200 ]] || die "$who answered $code instead of 200"
done

if ((WARMUP_S > 0)); then
	for who in "${order[@]}"; do
		log "warming up $who for ${WARMUP_S}s"
		load_h1 "${PORT[$who]}" "$WARMUP_S" "warmup-$who" >/dev/null
	done
fi

printf '# round\ttest\tcontender\trequests\trps\tp50_us\tp99_us\terrors\tcpu_s\twall_s\tpeak_kib\tidle_kib\n' >"$RESULTS"
read -r -a tests <<<"$TESTS"
for ((round = 1; round <= ROUNDS; round++)); do
	# Rotate the order each round so no contender always runs first or last.
	n=${#order[@]}
	rotated=()
	for ((i = 0; i < n; i++)); do rotated+=("${order[$(((i + round - 1) % n))]}"); done
	for test in "${tests[@]}"; do
		[[ $test == idle ]] && continue # after the load rounds, on fresh processes
		for who in "${rotated[@]}"; do
			measure "$round" "$test" "$who"
		done
	done
done

if [[ " $TESTS " == *" idle "* ]]; then
	printf '# round\tproto\tcontender\tconnections\trss_before_kib\trss_after_kib\n' >"$IDLE_RESULTS"
	for ((round = 1; round <= IDLE_ROUNDS; round++)); do
		for who in "${order[@]}"; do
			measure_idle "$round" "$who" h1
			measure_idle "$round" "$who" h2c
			measure_idle "$round" "$who" tls
			measure_idle "$round" "$who" tls-h2
		done
	done
fi

{
	echo "# attache load comparison, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
	echo "- proxies pinned to cpu $PROXY_CPU; load generator and origin (nginx, $WORKERS worker(s)) to cpu $LOAD_CPU"
	echo "- attache $("$ATTACHE" --version | awk '{print $2}') --concurrency $WORKERS; $(nginx -v 2>&1 | sed 's/^nginx version: //') $WORKERS worker(s), upstream keepalive; $(haproxy -v | head -n1 | awk '{print "haproxy " $3}') nbthread $WORKERS, http-reuse always"
	echo "- NGINX and HAProxy: $FWD_NOTE"
	echo "- h1: wrk -t1 -c$CONNECTIONS -d${DUR_S}s; h2: h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS -D$DUR_S (nginx h2c: $NGINX_H2); rate: loadgen $RATE req/s over $RATE_CONNECTIONS connections, ${DUR_S}s; close: wrk -t$WORKERS -c$CLOSE_CONNECTIONS with Connection: close"
	echo "- VmHWM reset per run: $HWM_RESET"
	echo
	python3 "$HERE/report.py" table "$RESULTS"
	if [[ -s $IDLE_RESULTS ]]; then
		echo
		python3 "$HERE/report.py" idle "$IDLE_RESULTS"
	fi
	tracing_stats
} >"$OUT/results.md"
cat "$OUT/results.md"
log "raw results: $RESULTS; logs: $WORK"
