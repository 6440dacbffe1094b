#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo fuzz on
# nightly, installing cargo-fuzz from crates.io if it is missing, and prints
# each target's executions and executions per second.
#
#   fuzz/run.sh 60                          # what CI runs
#   fuzz/run.sh 3600                        # an hour per target
#   FUZZ_JOBS=2 fuzz/run.sh 600             # two libFuzzer processes per target
#   FUZZ_SANITIZER=address fuzz/run.sh 600  # with AddressSanitizer
#
# Targets are built with debug assertions and overflow checks, and without
# a sanitizer by default: pufa-core forbids unsafe code, and ASan cost 6-7x
# the executions per second here. cargo-fuzz (if not on PATH) and the
# builds go under the workspace's target dir (target/tools, target/fuzz), so
# a CI cache of target/ keeps them.
#
# New inputs go to fuzz/work/<target>/ (not committed); the committed seeds
# in fuzz/corpus/<target>/ are read, never written. A crash leaves its input
# in fuzz/artifacts/<target>/ and fails the script; reproduce it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
export CARGO_TERM_COLOR=never
target_dir="${CARGO_TARGET_DIR:-$PWD/../target}"
tools="$target_dir/tools"
export PATH="$tools/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz into $tools"
    cargo install cargo-fuzz --locked --root "$tools"
fi
fuzz=(cargo fuzz)
build_flags=(--sanitizer "$sanitizer" --debug-assertions --target-dir "$target_dir/fuzz")

targets=(push_body merge_order)
echo "== building fuzz targets (nightly, release, debug assertions, sanitizer: $sanitizer)"
started=$(date +%s)
for t in "${targets[@]}"; do
    rustup run nightly "${fuzz[@]}" build "${build_flags[@]}" "$t"
done
echo "   built in $(( $(date +%s) - started )) s"

summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t"
    log="work/$t.log"
    echo "== fuzzing $t for ${seconds} s"
    # -max_total_time bounds the run; the committed seeds come second so
    # that libFuzzer writes new inputs only to work/<target>.
    parallel=()
    if [ "$jobs" -gt 1 ]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
    if ! rustup run nightly "${fuzz[@]}" run "${build_flags[@]}" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${parallel[@]}" \
        >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    # With -jobs, libFuzzer writes each job's log to fuzz-<n>.log.
    stats=$(cat "$log" fuzz-*.log 2>/dev/null | grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" || true)
    rm -f fuzz-*.log
    execs=$(echo "$stats" | awk '/number_of_executed_units/ {s += $2} END {print s + 0}')
    rate=$(echo "$stats" | awk '/average_exec_per_sec/ {s += $2} END {print s + 0}')
    corpus=$(find "work/$t" -type f | wc -l)
    summary+=("$t: $execs executions in ${seconds} s ($rate exec/s), no crash; work corpus: $corpus inputs")
done
echo "== fuzz summary"
printf '   %s\n' "${summary[@]}"
