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
# CI's whole budget. A failing test fails the run: nothing is rerun (a test that needs a rerun
# is a bug to find; `scripts/repeat-tests.sh` runs binaries many times to find such bugs).
timeout --signal=KILL 1200 cargo test --workspace --locked --no-fail-fast -- --test-threads=2

echo "== browser tests"
(cd tests/browser && timeout --signal=KILL 600 node --test --test-concurrency=1)
echo "== all tests passed"
