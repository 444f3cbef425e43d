#!/usr/bin/env bash
# Load comparison: attache with the issue-5 filters (sli, cors, web_security,
# cookie_audit) on its chain vs the same proxy without filters, to one NGINX origin
# on loopback. Prints per-round throughput, the medians and their ratio
# (filtered / plain; the target is >= 0.9), and the proxy's CPU time per request
# (from /proc), which stays meaningful when neighbours steal the proxy's core.
# See benches/RESULTS-filters.md.
#
#   benches/load/filters.sh                       # ROUNDS=5 DURATION=10s
#   ROUNDS=1 DURATION=3s benches/load/filters.sh  # a quick smoke run
#
# Environment (defaults in brackets):
#   ROUNDS [5]  DURATION [10s]  WARMUP [3s]  CONNECTIONS [64]
#   PROXY_CPU [0] (both proxies, one worker thread each)  LOAD_CPU [1] (wrk + origin)
#   SKIP_INSTALL=1 (never apt-get)  SKIP_BUILD=1 (use the existing release binary)
#   CARGO_TARGET_DIR [<repo>/target]  OUT [a new directory under /tmp]
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$(mktemp -d /tmp/attache-filters-load.XXXXXX)}
mkdir -p "$OUT"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

seconds() {
	case $1 in
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*) echo "$1" ;;
	esac
}
DUR_S=$(seconds "$DURATION")
WARMUP_S=$(seconds "$WARMUP")
[[ $DUR_S =~ ^[0-9]+$ && $DUR_S -gt 0 ]] || die "DURATION must be whole seconds, got $DURATION"
[[ $WARMUP_S =~ ^[0-9]+$ ]] || die "WARMUP must be whole seconds, got $WARMUP"

# --- tools -------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
	[[ ${SKIP_INSTALL:-} == 1 ]] && die "missing: ${need[*]} (SKIP_INSTALL=1)"
	log "installing ${need[*]}"
	SUDO=""
	[[ $(id -u) == 0 ]] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- build -------------------------------------------------------------------
BIN="$TARGET/release/attache"
if [[ ${SKIP_BUILD:-} != 1 ]]; then
	log "building attache (release) into $TARGET"
	(cd "$REPO" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet --bin attache)
fi
[[ -x $BIN ]] || die "no release binary at $BIN"

# --- processes ---------------------------------------------------------------
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
}
trap cleanup EXIT INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The origin: NGINX, one worker on the load core, a fixed 64-byte body and one
# policy-compliant Set-Cookie (so cookie_audit's response side has work to do).
ORIGIN_PORT=$(free_port)
mkdir -p "$OUT/nginx-tmp"
cat >"$OUT/origin.conf" <<EOF
$([[ $(id -u) == 0 ]] && echo "user root;")
worker_processes 1;
daemon off;
pid $OUT/origin.pid;
error_log $OUT/origin-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        default_type text/plain;
        location / {
            add_header Set-Cookie "session=0123456789abcdef; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600" always;
            return 200 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
        }
    }
}
EOF
taskset -c "$LOAD_CPU" "$NGINX" -c "$OUT/origin.conf" -p "$OUT/nginx-tmp" >"$OUT/origin.log" 2>&1 &
PIDS+=($!)

# Two proxies on the proxy core, one worker thread each: identical but for `filters:`.
write_config() { # name admin_port port filters_yaml
	cat >"$OUT/$1.yaml" <<EOF
admin:
  address: 127.0.0.1:$2
listeners:
  - name: $1
    address: 127.0.0.1:$3
    protocol: http
$4
    virtual_hosts:
      - name: site
        domains: ["*"]
        routes:
          - name: app
            match: { prefix: / }
            route: { cluster: origin, timeout: 10s }
clusters:
  - name: origin
    endpoints: ["127.0.0.1:$ORIGIN_PORT"]
    connect_timeout: 1s
EOF
}
FILTERS='    filters:
      - sli:
          objectives:
            - { name: site_availability, routes: [app], target: 99.9, window: 30d }
      - cors:
          allowed_origins: ["https://dashboards.example.com"]
          allow_credentials: true
      - web_security:
          csrf: { allowed_origins: [{ suffix: .example.com }] }
      - cookie_audit:
          mode: enforce
          unknown: strip
          cookies:
            - { name: session, max_lifetime: 12h }
            - { name: csrftoken, http_only: false }
          allowed: [theme, lang]'
declare -A PORT PROXY_PID
for c in plain filtered; do
	PORT[$c]=$(free_port)
	if [[ $c == filtered ]]; then f=$FILTERS; else f=""; fi
	write_config "$c" "$(free_port)" "${PORT[$c]}" "$f"
	"$BIN" validate --config "$OUT/$c.yaml" >/dev/null || die "$c config invalid"
	ATTACHE_LOG=warn taskset -c "$PROXY_CPU" "$BIN" run --config "$OUT/$c.yaml" --concurrency 1 \
		>"$OUT/$c.log" 2>&1 &
	PIDS+=($!)
	PROXY_PID[$c]=$!
done

wait_port() {
	for _ in $(seq 1 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	die "nothing listening on 127.0.0.1:$1 (see $OUT/*.log)"
}
wait_port "$ORIGIN_PORT"
for c in plain filtered; do wait_port "${PORT[$c]}"; done

# A typical browser request: known cookies, a cross-origin Origin from an allowed
# dashboard, Fetch Metadata.
WRK_HEADERS=(
	-H "Host: intranet.example.com"
	-H "Cookie: session=9f86d081884c7d659a2feaa0c55ad015; csrftoken=a3f9b2c1d4e5; theme=dark; lang=en-GB"
	-H "Origin: https://dashboards.example.com"
	-H "Sec-Fetch-Site: same-site"
	-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) attache-load"
	-H "Accept: text/html,application/xhtml+xml"
)
# The proxy's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run_wrk() { # contender seconds -> "requests/sec proxy-cpu-microseconds-per-request"
	local url="http://127.0.0.1:${PORT[$1]}/app/page?id=42"
	local out t0 t1 n
	t0=$(cpu_ticks "${PROXY_PID[$1]}")
	out=$(timeout $(($2 + 30)) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${2}s" \
		"${WRK_HEADERS[@]}" "$url") || die "wrk failed against $1"
	t1=$(cpu_ticks "${PROXY_PID[$1]}")
	echo "$out" >>"$OUT/wrk-$1.txt"
	if grep -q "Non-2xx" <<<"$out"; then
		die "$1 answered non-2xx responses: $out"
	fi
	n=$(awk '/requests in/ { print $1 }' <<<"$out")
	awk -v n="$n" -v t="$((t1 - t0))" -v us="$TICK_US" \
		'/^Requests\/sec:/ { printf "%s %.2f\n", $2, (n > 0 ? t * us / n : 0) }' <<<"$out"
}

# Sanity: the filtered proxy really runs the filters.
curl -s -o /dev/null -D "$OUT/headers-filtered.txt" "${WRK_HEADERS[@]}" \
	"http://127.0.0.1:${PORT[filtered]}/app/page" || die "curl failed"
grep -qi '^x-frame-options' "$OUT/headers-filtered.txt" || die "filtered proxy added no security headers"
grep -qi '^access-control-allow-origin' "$OUT/headers-filtered.txt" || die "filtered proxy added no CORS headers"

if ((WARMUP_S > 0)); then
	log "warm-up ${WARMUP_S}s each"
	for c in plain filtered; do run_wrk "$c" "$WARMUP_S" >/dev/null; done
fi

declare -A RESULTS CPU
printf 'round\tcontender\treq_per_s\tproxy_cpu_us_per_req\n' >"$OUT/results.tsv"
for r in $(seq 1 "$ROUNDS"); do
	# Alternate the order so drift (thermal, neighbours) hits both sides alike.
	if ((r % 2)); then order="plain filtered"; else order="filtered plain"; fi
	for c in $order; do
		read -r rps cpu < <(run_wrk "$c" "$DUR_S")
		RESULTS[$c]="${RESULTS[$c]:-} $rps"
		CPU[$c]="${CPU[$c]:-} $cpu"
		log "round $r $c: $rps req/s, proxy CPU ${cpu}us/req"
		printf '%s\t%s\t%s\t%s\n' "$r" "$c" "$rps" "$cpu" >>"$OUT/results.tsv"
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
PLAIN=$(median <<<"${RESULTS[plain]}")
FILTERED=$(median <<<"${RESULTS[filtered]}")
RATIO=$(awk -v f="$FILTERED" -v p="$PLAIN" 'BEGIN { printf "%.3f", f / p }')
PLAIN_CPU=$(median <<<"${CPU[plain]}")
FILTERED_CPU=$(median <<<"${CPU[filtered]}")
CPU_RATIO=$(awk -v f="$FILTERED_CPU" -v p="$PLAIN_CPU" 'BEGIN { printf "%.3f", (f > 0 ? p / f : 0) }')
echo
echo "connections=$CONNECTIONS duration=${DUR_S}s rounds=$ROUNDS proxy_cpu=$PROXY_CPU load_cpu=$LOAD_CPU"
echo "plain    req/s:${RESULTS[plain]}  median $PLAIN"
echo "filtered req/s:${RESULTS[filtered]}  median $FILTERED"
echo "plain    proxy CPU us/req:${CPU[plain]}  median $PLAIN_CPU"
echo "filtered proxy CPU us/req:${CPU[filtered]}  median $FILTERED_CPU"
echo "ratio (filtered / plain): $RATIO (target >= 0.9)"
echo "CPU-bound ratio (plain us/req / filtered us/req): $CPU_RATIO"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw output: $OUT"
