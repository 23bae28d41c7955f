// TURN with the conference page: the server mints TURN REST credentials for coturn
// (`gst-room server --turn-secret --turn-url`), Chromium publishes with `?relay=1` (relayed
// candidates only) and a gst-room viewer decodes its colour. The page's selected candidate
// pair is a relayed one and coturn logged an allocation for the page's minted username.
//
// The page is served on 127.0.0.1 (it needs a secure context to use the camera, and localhost
// is one); coturn runs on the machine's LAN address with a free port and a generated secret.
//
// Strict firewalls: in network namespaces (tests/netns.sh) whose UDP is dropped and whose TCP
// may reach only the server's host (tests/strict-firewall.nft), the server hands out only
// turns:SRV:443?transport=tcp; coturn's certificate comes from a CA of the test's own
// (tests/test-ca.sh), which Chromium trusts through an NSS database in its HOME — no
// certificate-error flags. The gst-only cross-namespace TURN tests are in
// tests/tests/network.rs.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ROOT,
  WEB_DIR,
  cleanup,
  colourClose,
  joinPage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  remoteVideo,
  rgbFrameSink,
  sampleVideo,
  serverBinary,
  startGstLaunch,
  startProcess,
  startServer,
  tempDir,
  waitFor,
} from './harness.mjs';
import { allowOnlyTcpToServer, chromiumIn, createNetwork, strictCounts } from './netns.mjs';

const ROOM = 'turn';
const GREEN = [0, 200, 0];
const RED = [200, 40, 40];
const YELLOW = [230, 200, 30];

after(cleanup);

/**
 * The machine's first non-loopback IPv4 address: coturn listens and relays there, as peers
 * reach each other there (Chromium gathers no loopback candidates, and loopback relays do not
 * get replies from other addresses).
 */
function lanAddress() {
  const all = Object.values(os.networkInterfaces()).flat();
  const found = all.find((a) => a.family === 'IPv4' && !a.internal);
  if (!found) throw new Error('no non-loopback IPv4 address for coturn');
  return found.address;
}

/** A UDP port nobody uses right now on `address`. */
async function freeUdpPort(address) {
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, address, resolve));
  const { port } = socket.address();
  await new Promise((resolve) => socket.close(resolve));
  return port;
}

/**
 * coturn with TURN REST auth; returns {url, secret, proc}. By default on the machine's LAN
 * address with a free port, handing out turn:…?transport=udp. With `net` and `host`, in that
 * namespace on the standard port; with `tls` ({cert, key} PEM files) also TURN over TLS on 443,
 * and `url` is turns:ADDRESS:443?transport=tcp.
 */
async function startCoturn(dir, { net, host, tls } = {}) {
  const address = net ? net.address(host) : lanAddress();
  const port = net ? 3478 : await freeUdpPort(address);
  const secret = crypto.randomBytes(16).toString('hex');
  // A relay range of its own, away from the usual ephemeral ports.
  const minPort = 40000 + crypto.randomInt(0, 99) * 100;
  const tlsArgs = tls ? ['--tls-listening-port=443', `--cert=${tls.cert}`, `--pkey=${tls.key}`] : ['--no-tls'];
  const args = [
    '-oL', 'turnserver', '--verbose',
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=gst-room.test',
    `--listening-ip=${address}`, `--relay-ip=${address}`, `--listening-port=${port}`,
    `--min-port=${minPort}`, `--max-port=${minPort + 99}`,
    ...tlsArgs, '--no-dtls', '--no-cli', '--fingerprint', '--simple-log', '--log-file=stdout',
    `--pidfile=${path.join(dir, 'turnserver.pid')}`, `--userdb=${path.join(dir, 'turndb')}`,
  ];
  const [cmd, cmdArgs] = net ? net.exec(host, 'stdbuf', args) : ['stdbuf', args];
  const ready = tls ? new RegExp(`TLS/TCP listener opened on : ${address.replaceAll('.', '\\.')}:443`) : /UDP listener opened on/;
  const proc = await startProcess(cmd, cmdArgs, { name: 'coturn', ready, readyTimeout: 10000 });
  const url = tls ? `turns:${address}:443?transport=tcp` : `turn:${address}:${port}?transport=udp`;
  return { url, secret, proc };
}

/**
 * A CA of the test's own and a certificate it signed for `name` (tests/test-ca.sh); returns
 * {ca, cert, key} (PEM files).
 */
function makeTestCa(dir, name) {
  execFileSync('bash', [path.join(ROOT, 'tests', 'test-ca.sh'), dir, name]);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
}

/** A HOME whose NSS database (where Chromium on Linux looks) trusts the CA `caPem` for TLS servers. */
function homeTrusting(caPem) {
  const home = tempDir('gst-room-home-');
  const db = `sql:${path.join(home, '.pki', 'nssdb')}`;
  fs.mkdirSync(path.join(home, '.pki', 'nssdb'), { recursive: true });
  try {
    execFileSync('certutil', ['-d', db, '-N', '--empty-password']);
    execFileSync('certutil', ['-d', db, '-A', '-t', 'C,,', '-n', 'gst-room test CA', '-i', caPem]);
  } catch (e) {
    throw new Error(`certutil failed (Debian package libnss3-tools, installed by scripts/setup.sh): ${e.stderr || e.message}`);
  }
  return home;
}

/**
 * The selected pair of each connection of the page (publishing ones, or `kind` 'view'): the
 * candidate types, and the local one's relay protocol (to the TURN server: udp, tcp or tls).
 */
function selectedPairs(page, kind = 'publish') {
  return page.evaluate(async (kind) => {
    const out = [];
    for (const { pc } of window.room.pcs[kind].values()) {
      const stats = await pc.getStats();
      stats.forEach((t) => {
        if (t.type !== 'transport' || !t.selectedCandidatePairId) return;
        const pair = stats.get(t.selectedCandidatePairId);
        const local = stats.get(pair.localCandidateId);
        out.push({
          local: local?.candidateType,
          remote: stats.get(pair.remoteCandidateId)?.candidateType,
          relayProtocol: local?.relayProtocol,
        });
      });
    }
    return out;
  }, kind);
}

test('a relay-only page publishes to gst through coturn with minted credentials', async () => {
  const dir = tempDir('gst-room-turn-');
  const coturn = await startCoturn(dir);
  const server = await startServer({ args: ['--turn-secret', coturn.secret, '--turn-url', coturn.url] });
  const framesDir = tempDir('gst-room-turn-frames-');
  const gst = await startGstLaunch(
    `roomsrc name=src server-url=${server.wsUrl} room=${ROOM} username=gstview participant=alice ` +
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
  );
  const browser = await launchBrowser({ camera: makeY4m(path.join(dir, 'alice.y4m'), GREEN) });
  const page = await joinPage(browser, server.url, ROOM, 'alice', { relay: 1 });

  await waitFor(
    () => colourClose(newestFrameColour(framesDir)?.colour ?? [0, 0, 0], GREEN),
    'the page\'s green decoded by gst',
    30000,
    page,
  ).catch((e) => {
    const log = coturn.proc.output().split('\n').filter((l) => /session|error|denied|forbidden/i.test(l));
    throw new Error(`${e.message}\n${gst.describe()}\ncoturn:\n${log.slice(-40).join('\n')}`);
  });
  const pairs = await selectedPairs(page);
  assert.ok(pairs.length >= 1, 'a publishing connection with a selected pair');
  for (const pair of pairs) assert.equal(pair.local, 'relay', JSON.stringify(pairs));
  assert.match(coturn.proc.output(), /user <\d+:alice>: incoming packet ALLOCATE processed, success/);
  assert.deepEqual(page.problems, []);
});

test('behind firewalls that drop UDP, a page and gst conference through coturn over TLS on 443, the page trusting its CA', async () => {
  const net = createNetwork(['srv', 'a', 'b']);
  for (const host of ['a', 'b']) allowOnlyTcpToServer(net, host, 'srv');
  const dir = tempDir('gst-room-turns-');
  const srv = net.address('srv');
  const tls = makeTestCa(path.join(dir, 'ca'), srv);
  const coturn = await startCoturn(dir, { net, host: 'srv', tls });
  const [cmd, args] = net.exec('srv', serverBinary(), [
    'server', '--listen', '0.0.0.0:8443', '--web-dir', WEB_DIR, '--turn-secret', coturn.secret, '--turn-url', coturn.url,
  ]);
  await startProcess(cmd, args, { name: 'gst-room server (srv)', ready: /listening on http:\/\// });
  const origin = `http://${srv}:8443`;

  // gst in a: publishes yellow, plays alice. Chromium in b: publishes red, plays gstbot.
  const framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  const ws = `ws://${srv}:8443/ws`;
  const gst = await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=0xffe6c81e`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${ws} room=${ROOM} username=gstbot`,
      `roomsrc name=src server-url=${ws} room=${ROOM} username=gstbot participant=alice`,
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstbot (a)', wrap: (c, a) => net.exec('a', c, a) },
  );
  const browser = await launchBrowser({
    executablePath: chromiumIn(net, 'b', { home: homeTrusting(tls.ca) }),
    camera: makeY4m(path.join(dir, 'alice.y4m'), RED),
    // A camera on plain http (the server's TLS is not what this test is about).
    args: [`--unsafely-treat-insecure-origin-as-secure=${origin}`],
  });
  const page = await joinPage(browser, origin, ROOM, 'alice');

  const coturnLog = () => coturn.proc.output().split('\n').filter((l) => /session|error|denied|forbidden|TLS/i.test(l)).slice(-40).join('\n');
  await waitFor(() => colourClose(newestFrameColour(framesDir)?.colour ?? [0, 0, 0], RED), "alice's red decoded by gst", 40000, page).catch((e) => {
    throw new Error(`${e.message}\n${gst.describe()}\ncoturn:\n${coturnLog()}`);
  });
  await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo('gstbot')), YELLOW), "gstbot's yellow in alice's page", 40000, page);

  const pairs = [...(await selectedPairs(page, 'publish')), ...(await selectedPairs(page, 'view'))];
  console.log("alice's selected pairs:", JSON.stringify(pairs), '\ncounted in a (gst):', strictCounts(net, 'a'), '\ncounted in b (Chromium):', strictCounts(net, 'b'));
  assert.ok(pairs.length >= 2, `a publishing and a viewing connection: ${JSON.stringify(pairs)}`);
  for (const pair of pairs) {
    assert.equal(pair.local, 'relay', JSON.stringify(pairs));
    assert.equal(pair.relayProtocol, 'tls', JSON.stringify(pairs));
  }
  // Chromium tried UDP (dropped) and spoke TLS to coturn's port 443, never TURN in the clear.
  const counted = strictCounts(net, 'b');
  assert.ok(counted.udp_dropped > 0, JSON.stringify(counted));
  assert.ok(counted.tls_handshakes_to_443 > 0, JSON.stringify(counted));
  assert.equal(counted.plain_turn_allocates_to_443, 0, JSON.stringify(counted));
  assert.match(coturn.proc.output(), /user <\d+:alice>: incoming packet ALLOCATE processed, success/);
  assert.match(coturn.proc.output(), /user <\d+:gstbot>: incoming packet ALLOCATE processed, success/);
  assert.deepEqual(page.problems, []);
  await gst.stop();
});
