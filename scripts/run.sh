#!/usr/bin/env bash
# Installs what is missing, builds (release), and runs the demo: the room server, a demo
# publisher in room "demo", and the invite link to open in a browser. Ctrl-C stops it.
# Arguments go to `gst-room demo` (e.g. --media sfu: media through the server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p gst-room -p gst-plugin-room
bash scripts/install-plugin.sh release
exec target/release/gst-room demo "$@"
