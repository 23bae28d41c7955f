// A page behind a strict firewall in a room whose media goes through the server, without TURN:
// the server's media port also takes ICE over TCP (`--media-tcp-port`, by default the
// --media-port number), and Chromium, whose UDP is dropped, connects to it by itself.
//
//   srv (10.77.0.2)  gst-room server --media sfu --tls-self-signed, and gst-room launch:
//                    roomsink (yellow) + roomsrc playing alice (UDP to the media port)
//   a   (10.77.0.3)  Chromium, all UDP dropped and TCP only to srv (tests/strict-firewall.nft)
//
// alice publishes red and plays gstbot: gst decodes her red, her page decodes gst's yellow,
// and both of the page's sessions with the server run over TCP.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  argb,
  TEST_MEDIA,
  WEB_DIR,
  cleanup,
  colourClose,
  describePage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  poll,
  remoteVideo,
  rgbFrameSink,
  sampleVideo,
  serverBinary,
  startGstLaunch,
  startProcess,
  tempDir,
  waitFor,
} from './harness.mjs';
import { allowOnlyTcpToServer, chromiumIn, createNetwork, strictCounts } from './netns.mjs';

const ROOM = 'sfutcp';
const RED = [200, 40, 40];
const YELLOW = [230, 200, 30];

after(cleanup);

/** The certificate's path and SPKI hash, once the server printed them. */
function serverPrinted(output) {
  const spki = output.match(/^ {2}SPKI SHA-256 \(Chromium [^)]*\): (\S+)$/m)?.[1];
  const cert = output.match(/^TLS certificate: (\S+)$/m)?.[1];
  return spki && cert ? { spki, cert } : null;
}

/** The protocol and remote address of the selected candidate pair of each of the page's
 * sessions (publishing and viewing). */
const selectedPairs = (page) =>
  page.evaluate(async () => {
    const out = [];
    const pcs = [...window.room.pcs.publish.values(), ...window.room.pcs.view.values()];
    for (const { pc } of pcs) {
      const stats = [...(await pc.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const chosen = stats.find((s) => s.id === transport?.selectedCandidatePairId);
      const local = stats.find((s) => s.id === chosen?.localCandidateId);
      const remote = stats.find((s) => s.id === chosen?.remoteCandidateId);
      out.push({ protocol: local?.protocol, remote: remote?.address, remoteProtocol: remote?.protocol });
    }
    return out;
  });

test('behind a firewall that drops UDP, a page publishes to and plays from the SFU over ICE-TCP, without TURN', async () => {
  const net = createNetwork(['srv', 'a']);
  const dir = tempDir('gst-room-sfu-tcp-');
  const [cmd, args] = net.exec('srv', serverBinary(), [
    'server', '--listen', '0.0.0.0:8443', '--tls-self-signed', '--tls-dir', path.join(dir, 'tls'), '--web-dir', WEB_DIR,
    '--media', 'sfu',
  ]);
  const server = await startProcess(cmd, args, { name: 'gst-room server (srv)', ready: /listening on https:\/\//, env: { RUST_LOG: 'info' } });
  const printed = await poll(() => serverPrinted(server.output()), { what: 'the certificate', timeout: 10000 });
  await poll(() => /ICE over TCP on tcp/.test(server.output()), { what: 'the server saying it listens for ICE over TCP', timeout: 10000 });
  const srv = net.address('srv');
  const wss = `wss://${srv}:8443/ws`;
  const framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  const gst = await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=${argb(YELLOW)}`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${wss} room=${ROOM} username=gstbot`,
      `roomsrc name=src server-url=${wss} room=${ROOM} username=gstbot participant=alice`,
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstbot (srv)', args: ['--tls-ca-file', printed.cert], wrap: (c, a) => net.exec('srv', c, a) },
  );

  allowOnlyTcpToServer(net, 'a', 'srv');
  const browser = await launchBrowser({
    executablePath: chromiumIn(net, 'a'),
    camera: makeY4m(path.join(dir, 'alice.y4m'), RED),
    args: [`--ignore-certificate-errors-spki-list=${printed.spki}`],
  });
  const page = await browser.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  const media = new URLSearchParams(Object.entries(TEST_MEDIA).map(([k, v]) => [k, String(v)]));
  await page.goto(`https://${srv}:8443/?room=${ROOM}&${media}`);
  await page.fill('#username', 'alice');
  await page.click('#join');
  await waitFor(() => page.evaluate(() => document.getElementById('publish-status').textContent === 'PUBLISHING'), 'alice PUBLISHING', 20000, page);

  await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo('gstbot')), YELLOW), "gstbot's yellow in alice's page", 40000, page);
  await poll(() => {
    if (gst.failure()) throw new Error(`gst stopped: ${gst.failure()}\n${gst.describe()}`);
    const f = newestFrameColour(framesDir);
    return f && colourClose(f.colour, RED);
  }, { what: "alice's red decoded by gst through the server", timeout: 40000 }).catch(async (e) => {
    e.message += `\n${gst.describe()}\n${await describePage(page)}\n${server.output().slice(-3000)}`;
    throw e;
  });

  const pairs = await selectedPairs(page);
  console.log(`alice's selected pairs: ${JSON.stringify(pairs)}; firewall counters: ${JSON.stringify(strictCounts(net, 'a'))}`);
  assert.equal(pairs.length, 2, 'a publishing and a viewing session');
  for (const pair of pairs) {
    assert.equal(pair.protocol, 'tcp', JSON.stringify(pairs));
    assert.equal(pair.remote, srv, JSON.stringify(pairs));
  }
  assert.ok(strictCounts(net, 'a').udp_dropped > 0, 'the page tried UDP');
  assert.deepEqual(page.problems, []);
  await gst.stop();
});
