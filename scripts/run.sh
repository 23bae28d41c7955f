#!/usr/bin/env bash
# Installs what is missing, builds (release), and runs the demo: the room server, a demo
# publisher in room "demo", and the invite link to open in a browser. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p gst-room -p gst-plugin-room
bash scripts/install-plugin.sh release
exec target/release/gst-room demo "$@"
