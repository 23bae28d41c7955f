#!/usr/bin/env bash
# A certificate authority of a test's own and a server certificate it signed, for TLS servers
# in tests (coturn's turns: listener): the client side trusts ca.pem (an NSS database for
# Chromium, a CA file for others), as users' machines trust a public CA. This file is the only
# definition; Rust tests use it through tests/src/coturn.rs, browser tests through
# tests/browser/turn.test.mjs. Needs openssl.
#
#   test-ca.sh DIR NAME   writes DIR/ca.pem (the CA's certificate), DIR/cert.pem and
#                         DIR/key.pem (for NAME, an IPv4 address or a DNS name, signed by the CA)
set -euo pipefail

(($# == 2)) || { echo "usage: test-ca.sh DIR NAME" >&2; exit 2; }
dir=$1 name=$2
if [[ $name =~ ^[0-9.]+$ ]]; then san="IP:$name"; else san="DNS:$name"; fi
mkdir -p "$dir"
cd "$dir"
# P-256 keys: small and quick to make; coturn (OpenSSL) and Chromium (BoringSSL) accept them.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=gst-room test CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
  -keyout key.pem -out cert.csr 2>/dev/null
openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out cert.pem \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") 2>/dev/null
rm -f cert.csr ca.srl
