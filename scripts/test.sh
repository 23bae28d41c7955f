#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs the Rust tests (unit, server,
# real-media element tests, pipelines, launcher) and the Chromium tests. Exits non-zero on any
# failure. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== build"
# The workspace build also leaves the plugin as target/debug/libgstroom.so for gst-inspect and
# gst-launch tests, and the gst-room binary the browser tests start.
cargo build --workspace --all-targets --locked
bash scripts/install-plugin.sh debug

echo "== rust tests"
# Media tests each run a few pipelines with VP8 encoders; two at a time suits a 2-core machine.
# A hang (e.g. a deadlock in a media test) fails the run after 20 minutes instead of eating
# CI's whole budget.
#
# Known flaky (issue 9, open): roomsrc's mix sometimes produces no video at all (mix.rs, and the
# launcher's mix recording in cli.rs). A test binary that fails is run once more, on its own;
# failing again fails the run. Each rerun is reported on a line starting with FLAKY, so a flake
# is seen, not hidden.
mkdir -p target
log=target/rust-tests.log
if ! timeout --signal=KILL 1200 cargo test --workspace --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log"; then
  # cargo names each failed target as `-p CRATE --test NAME` (or --lib, --bin NAME).
  mapfile -t failed < <(grep -oE '`-p [^`]+`' "$log" | tr -d '`' | sort -u)
  if ((${#failed[@]} == 0)); then
    echo "== rust tests failed (no failed target named: a build error or a hang)" >&2
    exit 1
  fi
  for target in "${failed[@]}"; do
    echo "FLAKY? rerunning once: cargo test $target"
    # shellcheck disable=SC2086 # the target is several words on purpose
    timeout --signal=KILL 600 cargo test --locked $target -- --test-threads=2
    echo "FLAKY: $target failed once and passed on its rerun"
  done
fi

echo "== browser tests"
(cd tests/browser && timeout --signal=KILL 600 node --test --test-concurrency=1)
echo "== all tests passed"
