#!/usr/bin/env bash
# Coverage-guided fuzzing of one attache parser with libFuzzer, on stable Rust.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags and inputs...]
#   fuzz/run.sh list
#
# Builds fuzz/ with SanitizerCoverage instrumentation (the flags cargo-fuzz passes,
# minus the nightly-only sanitizers), then runs TARGET for SECONDS. New inputs go
# to fuzz/out/TARGET (not committed); crashes, timeouts and out-of-memory inputs
# to fuzz/artifacts/TARGET/. The seed corpus fuzz/corpus/TARGET is read, never
# written. Inputs (files or folders) after the flags replace those two folders:
# files are replayed once, folders are the corpus (see docs/fuzzing.md).
# Needs a C++ compiler (g++ or clang++) for libFuzzer itself.
# FUZZ_JOBS=N runs N processes; FUZZ_NICE=N (default 10) sets their niceness.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$here/Cargo.toml" | grep -v '^attache-fuzz$')
if [ "${1:-}" = list ]; then
  echo "$targets"
  exit 0
fi
if [ $# -lt 2 ]; then
  echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags and inputs...]; targets:" >&2
  echo "$targets" >&2
  exit 64
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
nice -n "${FUZZ_NICE:-10}" cargo build --manifest-path "$here/Cargo.toml" \
  --release --target "$host" --bin "$target"

flags=() inputs=()
for a in "$@"; do
  case $a in
    -*) flags+=("$a") ;;
    *) inputs+=("$a") ;;
  esac
done
if [ ${#inputs[@]} -eq 0 ]; then
  mkdir -p "$here/out/$target"
  inputs=("$here/out/$target" "$here/corpus/$target")
fi
if [ -n "${FUZZ_JOBS:-}" ]; then
  flags+=("-jobs=$FUZZ_JOBS" "-workers=$FUZZ_JOBS")
fi
mkdir -p "$here/artifacts/$target"
exec nice -n "${FUZZ_NICE:-10}" "$here/target/$host/release/$target" \
  -max_total_time="$secs" \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -max_len=16384 \
  -use_value_profile=1 \
  -print_final_stats=1 \
  -artifact_prefix="$here/artifacts/$target/" \
  "${flags[@]}" \
  "${inputs[@]}"
