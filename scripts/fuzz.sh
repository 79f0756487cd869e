#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets/: amount, rate_card, token, evaluate) for N seconds
# each, one after the other:
#
#   scripts/fuzz.sh [seconds] [target...]      # default: 60 seconds, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The invariants each target checks are
# in src/fuzzing.rs. New inputs go to fuzz/work/<target>/ (kept between runs, not committed),
# the committed seeds are read from fuzz/corpus/<target>/. A crash is saved under
# fuzz/artifacts/<target>/; replay it with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> artifacts/<target>/crash-…)
# and shrink it with `cargo fuzz tmin -s none <target> <file>` before making it a test.
#
# FUZZ_SANITIZER=address (or another of cargo-fuzz's) instruments with that sanitizer; the
# default is none: the code under test is safe Rust, and uninstrumented runs are ~2× faster.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(amount rate_card token evaluate)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer=…) when a sanitizer is on; this lets the
# stable toolchain take them. Harmless without one.
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}

cargo fuzz build -s "$sanitizer"

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    log="work/$target.log"
    echo "== $target: $seconds s"
    status=0
    cargo fuzz run -s "$sanitizer" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    corpus=$(find "work/$target" -type f | wc -l)
    line="$target: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $corpus"
    if [ "$status" -ne 0 ]; then
        line="$line — FAILED (exit $status), see fuzz/$log"
        failed+=("$target")
        grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" | head -5 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary ($seconds s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
