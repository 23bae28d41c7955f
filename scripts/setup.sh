#!/usr/bin/env bash
# Installs what a fresh Debian 12 / Ubuntu machine lacks for gst-room: GStreamer (with dev
# packages), Chromium for the browser tests, and the browser tests' npm packages.
# Idempotent and quick when everything is present: it only calls apt/npm for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-tools
  libssl-dev pkg-config chromium nodejs npm redis-server
  iproute2 curl openssl nginx
  coturn nftables python3-pip libnss3-tools
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  # nodejs/npm may come from elsewhere (nvm, NodeSource): a working command is enough.
  case "$pkg" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  # Another apt may hold the lock (unattended upgrades): wait for it rather than fail.
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust 1.95+ with rustup" >&2; exit 1; }

if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  echo "setup: npm ci in tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# aiortc, the Python WebRTC stack, for the interop tests (tests/aiortc, tests/tests/aiortc.rs),
# from PyPI: Debian's 1.4 still accepts RSA cipher suites, 1.16 offers only ECDHE-ECDSA ones
# (what an RSA-only DTLS certificate fails against).
if ! python3 -c 'import aiortc, websockets, numpy' 2>/dev/null; then
  echo "setup: installing aiortc for python3"
  python3 -m pip install --quiet 'aiortc==1.16.*' websockets numpy \
    || python3 -m pip install --quiet --break-system-packages 'aiortc==1.16.*' websockets numpy
fi

# A GStreamer registry scanned while apt was still unpacking (any gst-inspect/gst-launch run
# meanwhile) can mark a plugin as broken for good: libav's elements then are "no such element"
# although the package is installed (see UPSTREAM.md). `gst-inspect-1.0 -b` lists such files;
# when it lists any, the registry is dropped and rebuilt on the next GStreamer start.
if command -v gst-inspect-1.0 >/dev/null \
  && ! gst-inspect-1.0 -b 2>/dev/null | grep -q '^Total count: 0 blacklisted'; then
  echo "setup: GStreamer's registry blacklists plugins; rebuilding it"
  gst-inspect-1.0 -b 2>/dev/null | sed 's/^/setup:   /'
  rm -f "${XDG_CACHE_HOME:-$HOME/.cache}"/gstreamer-1.0/registry.*.bin
fi
