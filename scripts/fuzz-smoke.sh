#!/usr/bin/env bash
# The CI fuzz smoke run: builds the six fuzz targets in fuzz/ and runs each for a short,
# fixed time (FUZZ_SECONDS, default 25 s). Exits non-zero when any target finds a crash,
# a timeout or a leak; the input that did it is left in fuzz/artifacts/<target>/.
#
# libFuzzer needs nightly compiler flags (-Zsanitizer, coverage instrumentation). No nightly
# is installed here, so the stable compiler is told to accept them with RUSTC_BOOTSTRAP=1;
# its x86_64 Linux standard library ships the sanitizer runtimes that needs.
#
# Budget on 2 cores: about 2 min of fuzzing plus the build. The build is incremental when
# FUZZ_TARGET_DIR (default target/fuzz) is kept between runs; from nothing it compiles the
# whole dependency tree with instrumentation, which takes far longer than the fuzzing.
#
# Longer campaigns (docs/fuzzing.md): FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-25}"
target_dir="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
targets=(telemetry login_body page_token assertion config edge)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
# Every target at once (one dependency build); the same flags as `run` below, so the runs
# do not rebuild.
(cd fuzz && cargo fuzz build -O --target-dir "$target_dir")
echo "fuzz build: $(( $(date +%s) - start )) s"

failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log="$target_dir/$target.log"
    if (cd fuzz && cargo fuzz run -O --target-dir "$target_dir" "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1); then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "fuzz $target: ok, $runs executions in ${seconds}s, corpus $(ls "fuzz/corpus/$target" | wc -l)"
    else
        echo "fuzz $target: FAILED (log: $log)" >&2
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" >&2 || tail -n 30 "$log" >&2
        failed=1
    fi
done
echo "fuzz smoke run: $(( $(date +%s) - start )) s in all"
exit "$failed"
