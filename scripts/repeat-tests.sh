#!/usr/bin/env bash
# Runs test binaries again and again to find flaky tests: each named binary RUNS times in a
# row (default 10), with the same two test threads as scripts/test.sh, and prints one line per
# run (binary, run, result, seconds) and a summary. `--load` runs a CPU hog on every core
# meanwhile (a loaded CI machine). Exits non-zero when any run failed; the failing runs' output
# is kept in target/repeat-tests/.
#
#   bash scripts/repeat-tests.sh [--runs N] [--load] [BINARY ...]
#   bash scripts/repeat-tests.sh --runs 10 --load mix cli browser/unlinked
#
# Without binaries: every integration test binary of the workspace. `browser` is the Chromium
# suite (tests/browser, as scripts/test.sh runs it), `browser/NAME` its file NAME.test.mjs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10 load=0 targets=()
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --load) load=1; shift ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ((${#targets[@]} == 0)); then
  # A name two crates share (cluster, tls) runs both binaries.
  mapfile -t targets < <(for f in tests/tests/*.rs launcher/tests/*.rs signaling/protocol/tests/*.rs; do
    basename "$f" .rs
  done | sort -u)
fi
cargo build --workspace --all-targets --locked
mkdir -p target/repeat-tests
hogs=()
if ((load)); then
  for _ in $(seq "$(nproc)"); do (while :; do :; done) & hogs+=($!); done
  trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
fi
run_binary() {
  case "$1" in
    browser) (cd tests/browser && timeout --signal=KILL 900 node --test --test-concurrency=1) ;;
    browser/*) (cd tests/browser && timeout --signal=KILL 900 node --test "${1#browser/}.test.mjs") ;;
    *) timeout --signal=KILL 900 cargo test --locked -q --workspace --test "$1" -- --test-threads=2 ;;
  esac
}
failed=0
for binary in "${targets[@]}"; do
  for run in $(seq "$runs"); do
    out="target/repeat-tests/${binary//\//-}-$run.log"
    start=$(date +%s)
    if run_binary "$binary" >"$out" 2>&1; then
      echo "$binary run $run ok $(($(date +%s) - start)) s"
      rm -f "$out"
    else
      echo "$binary run $run FAILED $(($(date +%s) - start)) s (output: $out)"
      failed=$((failed + 1))
    fi
  done
done
echo "repeat-tests: $failed failed run(s)"
((failed == 0))
