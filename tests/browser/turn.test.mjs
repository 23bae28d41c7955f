// TURN with the conference page: the server mints TURN REST credentials for coturn
// (`gst-room server --turn-secret --turn-url`), Chromium publishes with `?relay=1` (relayed
// candidates only) and a gst-room viewer decodes its colour. The page's selected candidate
// pair is a relayed one and coturn logged an allocation for the page's minted username.
//
// The page is served on 127.0.0.1 (it needs a secure context to use the camera, and localhost
// is one); coturn runs on the machine's LAN address with a free port and a generated secret.
// The cross-namespace TURN tests are in tests/tests/network.rs.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import {
  cleanup,
  colourClose,
  joinPage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  rgbFrameSink,
  startGstLaunch,
  startProcess,
  startServer,
  tempDir,
  waitFor,
} from './harness.mjs';

const ROOM = 'turn';
const GREEN = [0, 200, 0];

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

/** coturn on the LAN address with TURN REST auth; returns {url, secret, proc}. */
async function startCoturn(dir) {
  const address = lanAddress();
  const port = await freeUdpPort(address);
  const secret = crypto.randomBytes(16).toString('hex');
  // A relay range of its own, away from the usual ephemeral ports.
  const minPort = 40000 + crypto.randomInt(0, 99) * 100;
  const proc = await startProcess(
    'stdbuf',
    [
      '-oL', 'turnserver', '--verbose',
      '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=gst-room.test',
      `--listening-ip=${address}`, `--relay-ip=${address}`, `--listening-port=${port}`,
      `--min-port=${minPort}`, `--max-port=${minPort + 99}`,
      '--no-tls', '--no-dtls', '--no-cli', '--fingerprint', '--simple-log', '--log-file=stdout',
      `--pidfile=${path.join(dir, 'turnserver.pid')}`, `--userdb=${path.join(dir, 'turndb')}`,
    ],
    { name: 'coturn', ready: /UDP listener opened on/, readyTimeout: 10000 },
  );
  return { url: `turn:${address}:${port}?transport=udp`, secret, proc };
}

/** The candidate types of the selected pair of each publishing connection of the page. */
function publishingPairs(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const { pc } of window.room.pcs.publish.values()) {
      const stats = await pc.getStats();
      stats.forEach((t) => {
        if (t.type !== 'transport' || !t.selectedCandidatePairId) return;
        const pair = stats.get(t.selectedCandidatePairId);
        out.push({
          local: stats.get(pair.localCandidateId)?.candidateType,
          remote: stats.get(pair.remoteCandidateId)?.candidateType,
        });
      });
    }
    return out;
  });
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
  const pairs = await publishingPairs(page);
  assert.ok(pairs.length >= 1, 'a publishing connection with a selected pair');
  for (const pair of pairs) assert.equal(pair.local, 'relay', JSON.stringify(pairs));
  assert.match(coturn.proc.output(), /user <\d+:alice>: incoming packet ALLOCATE processed, success/);
  assert.deepEqual(page.problems, []);
});
