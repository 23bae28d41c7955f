#!/usr/bin/env bash
# Separate hosts for tests: network namespaces on one virtual LAN, nothing in the root namespace.
# This file is the only definition of the topology; Rust tests use it through
# tests/src/netns.rs, browser tests through tests/browser/netns.mjs. Needs root.
#
#   netns.sh up RUN HOST...   namespaces RUN-HOST, each with eth0 = 10.77.0.(2+i)/24 (i = the
#                             host's position), joined by bridge br0 in namespace RUN-hub;
#                             prints "HOST ADDRESS" per host. On failure, removes what it made.
#   netns.sh down RUN         removes every namespace RUN-* (their interfaces go with them)
#   netns.sh clean            removes the namespaces of runs whose process is gone
#
# RUN must be "gstroom-PID-N": PID is the process owning the run (`clean` keeps live ones),
# N tells one process's runs apart. Hosts have no route out and no loopback path to each
# other: traffic between them goes over the bridge, as between machines on a LAN.
set -euo pipefail

SUBNET=10.77.0
PREFIX=gstroom

die() { echo "netns.sh: $*" >&2; exit 1; }

namespaces_of() { ip netns list | awk '{print $1}' | grep -E "^$1-" || true; }

down() {
  local ns
  for ns in $(namespaces_of "$1"); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  local run=$1; shift
  [[ $run =~ ^$PREFIX-[0-9]+-[0-9]+$ ]] || die "RUN must be $PREFIX-PID-N, not $run"
  (($# >= 1 && $# <= 200)) || die "give 1 to 200 hosts"
  trap 'down "$run"' ERR
  local hub="$run-hub"
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  local i=0 host ns
  for host in "$@"; do
    [[ $host =~ ^[a-z0-9]{1,12}$ ]] || die "host names are 1-12 of a-z 0-9, not $host"
    ns="$run-$host"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both ends are created straight in their namespaces: no name in the root namespace.
    ip link add eth0 netns "$ns" type veth peer name "port$i" netns "$hub"
    ip -n "$hub" link set "port$i" master br0 up
    ip -n "$ns" addr add "$SUBNET.$((i + 2))/24" dev eth0
    ip -n "$ns" link set eth0 up
    echo "$host $SUBNET.$((i + 2))"
    i=$((i + 1))
  done
  trap - ERR
}

clean() {
  local ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-[0-9]+-" || true); do
    pid=${ns#"$PREFIX-"}
    pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
  done
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) [[ $# -eq 2 ]] || die "usage: netns.sh down RUN"; down "$2" ;;
  clean) clean ;;
  *) die "usage: netns.sh up RUN HOST... | down RUN | clean" ;;
esac
