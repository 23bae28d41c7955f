// Separate hosts for browser tests: network namespaces on one virtual LAN, made by the same
// script as the Rust tests' (tests/netns.sh, the only definition of the topology; see
// tests/src/netns.rs). Needs root, as CI has.
//
//   const net = createNetwork(['srv', 'a', 'b']);   // 10.77.0.2, .3, .4; removed at cleanup
//   net.address('srv'); net.exec('b', cmd, args) → ['ip', [...]] for startProcess
//   const browser = await launchBrowser({ executablePath: chromiumIn(net, 'a'), ... });
//
// Names are unique per process and call (gstroom-PID-N-HOST); namespaces left by dead runs are
// removed first. Chromium runs inside a namespace through a wrapper script given to Playwright
// as its executable (`ip netns exec NS chromium "$@"`).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CHROMIUM, ROOT, tempDir, track } from './harness.mjs';

const SCRIPT = path.join(ROOT, 'tests', 'netns.sh');
let nextRun = 0;

/** Creates the hosts (namespaces) and registers their removal for cleanup(). */
export function createNetwork(hosts) {
  execFileSync('bash', [SCRIPT, 'clean']);
  const run = `gstroom-${process.pid}-${nextRun++}`;
  let out;
  try {
    out = execFileSync('bash', [SCRIPT, 'up', run, ...hosts], { encoding: 'utf8' });
  } catch (e) {
    throw new Error(`cannot create network namespaces (root and iproute2 needed): ${e.stderr || e.message}`);
  }
  const addresses = new Map(out.trim().split('\n').map((l) => l.split(' ')));
  track(`network ${run}`, () => execFileSync('bash', [SCRIPT, 'down', run]));
  const namespace = (host) => {
    if (!addresses.has(host)) throw new Error(`no host ${host} in network ${run}`);
    return `${run}-${host}`;
  };
  return {
    namespace,
    address: (host) => namespace(host) && addresses.get(host),
    /** [command, args] running `cmd args` inside `host`, for startProcess. */
    exec: (host, cmd, args = []) => ['ip', ['netns', 'exec', namespace(host), cmd, ...args]],
  };
}

/**
 * An executable that starts Chromium inside `host`'s namespace (for Playwright); with `home`,
 * Chromium's HOME (where it finds its NSS certificate database, `HOME/.pki/nssdb`).
 */
export function chromiumIn(net, host, { home } = {}) {
  const file = path.join(tempDir('gst-room-chromium-'), 'chromium');
  const env = home ? `HOME=${home} ` : '';
  fs.writeFileSync(file, `#!/bin/sh\n${env}exec ip netns exec ${net.namespace(host)} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  return file;
}

/**
 * Makes `host` a strict firewall's client (tests/strict-firewall.nft, shared with the Rust
 * tests): all UDP dropped, and TCP to or from any address but `server`'s host.
 */
export function allowOnlyTcpToServer(net, host, server) {
  execFileSync('ip', ['netns', 'exec', net.namespace(host), 'nft', '-D', `SERVER=${net.address(server)}`, '-f', path.join(ROOT, 'tests', 'strict-firewall.nft')]);
}

/**
 * What `host`'s allowOnlyTcpToServer() rules counted (packets): {udp_dropped, other_dropped,
 * tls_handshakes_to_443, plain_turn_allocates_to_443}.
 */
export function strictCounts(net, host) {
  const out = execFileSync('ip', ['netns', 'exec', net.namespace(host), 'nft', '-j', 'list', 'counters', 'table', 'inet', 'strict'], { encoding: 'utf8' });
  const counters = JSON.parse(out).nftables.filter((e) => e.counter).map((e) => e.counter);
  return Object.fromEntries(counters.map((c) => [c.name, c.packets]));
}
