#!/usr/bin/env bash
# Makes the room plugin of this checkout visible to every GStreamer program of this user
# (gst-inspect-1.0 roomsink, gst-launch-1.0 ... roomsink ...) without GST_PLUGIN_PATH: links
# target/PROFILE/libgstroom.so into the user's plugin folder, which GStreamer always scans.
# Usage: bash scripts/install-plugin.sh [release|debug]   (run.sh and test.sh run it)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
plugin="$PWD/target/$profile/libgstroom.so"
[ -f "$plugin" ] || { echo "install-plugin: $plugin not built yet" >&2; exit 1; }
folder="${XDG_DATA_HOME:-$HOME/.local/share}/gstreamer-1.0/plugins"
mkdir -p "$folder"
ln -sfn "$plugin" "$folder/libgstroom.so"
echo "install-plugin: $folder/libgstroom.so -> $plugin"
