#!/usr/bin/env bash
# The property tests with many cases (CI runs a few thousand of each in `cargo test`):
# - protocol parsing: arbitrary and mutated input never panics, valid messages round-trip
#   (signaling/protocol/tests/props.rs);
# - the room rules under arbitrary operation sequences of several participants, with their
#   invariants checked after every step (signaling/src/rooms_props.rs);
# - the cluster's routing rules: three nodes behave as one, and agree after one dies
#   (signaling/src/cluster/rules_props.rs).
# PROPTEST_CASES sets the cases per property (default: a million). Release build: the cases run
# about ten times faster than in debug. A failure prints the minimal failing input and is saved
# under proptest-regressions/ so that `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-1000000}"
echo "== property tests, $PROPTEST_CASES cases each"
start=$(date +%s)
cargo test --release --locked -p gst-room-protocol --test props -- --test-threads=2
cargo test --release --locked -p gst-room-signaling --lib rooms::props -- --test-threads=2
cargo test --release --locked -p gst-room-signaling --lib cluster::rules::props -- --test-threads=2
echo "== $PROPTEST_CASES cases per property passed in $(( $(date +%s) - start )) s"
