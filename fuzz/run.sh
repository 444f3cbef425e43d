#!/usr/bin/env bash
# Coverage-guided fuzzing of one attache parser with libFuzzer, on stable Rust.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#   fuzz/run.sh list
#
# Builds fuzz/ with SanitizerCoverage instrumentation (the flags cargo-fuzz passes,
# minus the nightly-only sanitizers), then runs TARGET for SECONDS. New inputs go
# to fuzz/out/TARGET (not committed); crashes, timeouts and leaks to
# fuzz/artifacts/TARGET/. The seed corpus fuzz/corpus/TARGET is read, never
# written. Needs a C++ compiler (g++ or clang++) for libFuzzer itself.
# FUZZ_JOBS=N runs N processes; FUZZ_NICE=N (default 10) lowers their priority.
set -euo pipefail
cd "$(dirname "$0")"

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^attache-fuzz$')
if [ "${1:-}" = list ] || [ $# -lt 2 ]; then
  [ "${1:-}" = list ] || echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...]" >&2
  echo "$targets"
  [ "${1:-}" = list ]
  exit
fi
target=$1 secs=$2
shift 2
if ! grep -qx "$target" <<<"$targets"; then
  echo "unknown target '$target'; one of:" >&2
  echo "$targets" >&2
  exit 64
fi

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cforce-frame-pointers"
# --target keeps the instrumentation away from build scripts and proc macros.
nice -n "${FUZZ_NICE:-10}" cargo build --release --target "$host" --bin "$target"

mkdir -p "out/$target" "artifacts/$target"
exec nice -n "${FUZZ_NICE:-10}" "target/$host/release/$target" \
  -max_total_time="$secs" \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -max_len=16384 \
  -use_value_profile=1 \
  -print_final_stats=1 \
  ${FUZZ_JOBS:+-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"} \
  -artifact_prefix="artifacts/$target/" \
  "$@" \
  "out/$target" "corpus/$target"
