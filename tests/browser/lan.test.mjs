// A conference between machines over TLS: three network namespaces on one virtual LAN
// (tests/netns.sh), no loopback between them.
//
//   srv (10.77.0.2)  gst-room server --listen 0.0.0.0:8443 --tls-self-signed
//   a   (10.77.0.3)  Chromium, trusting the certificate by its SPKI hash only
//                    (--ignore-certificate-errors-spki-list, not "ignore all errors")
//   b   (10.77.0.4)  gst-room launch: roomsink (yellow) + roomsrc playing alice, over wss://
//                    with --tls-ca-file = the server's certificate
//
// alice opens the invite link the server printed, presses Join, publishes from a secure
// context; gst decodes her red, the browser decodes gst's yellow.

import { test, before, after } from 'node:test';
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
import { chromiumIn, createNetwork } from './netns.mjs';

const ROOM = 'lan';
const RED = [200, 40, 40];
const YELLOW = [230, 200, 30];

let net;
let dir;
let server;
let printed; // {links, spki, cert}
let browser; // Chromium in namespace a

/** What the server printed: invite links, the certificate's path and SPKI hash. */
function serverPrinted(output) {
  const links = [...output.matchAll(/^ {2}(https?:\/\/\S+)$/gm)].map((m) => m[1]);
  const spki = output.match(/^ {2}SPKI SHA-256 \(Chromium [^)]*\): (\S+)$/m)?.[1];
  const cert = output.match(/^TLS certificate: (\S+)$/m)?.[1];
  return links.length && spki && cert && output.includes('Elements and gst-room commands') ? { links, spki, cert } : null;
}

before(async () => {
  net = createNetwork(['srv', 'a', 'b']);
  dir = tempDir('gst-room-lan-');
  const [cmd, args] = net.exec('srv', serverBinary(), [
    'server', '--listen', '0.0.0.0:8443', '--tls-self-signed', '--tls-dir', path.join(dir, 'tls'), '--web-dir', WEB_DIR,
  ]);
  server = await startProcess(cmd, args, { name: 'gst-room server (srv)', ready: /listening on https:\/\//, env: { RUST_LOG: 'info' } });
  printed = await poll(() => serverPrinted(server.output()), { what: 'invite links and certificate', timeout: 10000 });
});

after(cleanup);

test('the server prints invite links people can open: no wildcard, its LAN address, https', () => {
  const srv = net.address('srv');
  for (const link of printed.links) {
    assert.doesNotMatch(link, /0\.0\.0\.0|\[::\]/, link);
    assert.match(link, /^https:\/\//);
  }
  assert.ok(printed.links.includes(`https://${srv}:8443/`), printed.links.join(' '));
});

test('alice in another namespace opens the invite link, joins and publishes from a secure context; gst in a third decodes her and she decodes gst', async () => {
  const srv = net.address('srv');
  const link = `https://${srv}:8443/`;
  const framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  const wss = `wss://${srv}:8443/ws`;
  const gst = await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=${argb(YELLOW)}`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${wss} room=${ROOM} username=gstbot`,
      `roomsrc name=src server-url=${wss} room=${ROOM} username=gstbot participant=alice`,
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstbot (b)', args: ['--tls-ca-file', printed.cert], wrap: (c, a) => net.exec('b', c, a) },
  );

  browser = await launchBrowser({
    executablePath: chromiumIn(net, 'a'),
    camera: makeY4m(path.join(dir, 'alice.y4m'), RED),
    args: [`--ignore-certificate-errors-spki-list=${printed.spki}`],
  });
  const page = await browser.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  // The invite link as printed, plus the test-sized media parameters.
  const media = new URLSearchParams(Object.entries(TEST_MEDIA).map(([k, v]) => [k, String(v)]));
  await page.goto(`${link}?room=${ROOM}&${media}`);
  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  assert.equal(await page.inputValue('#server-url'), wss, 'the page defaults to wss:// of its own host');
  await page.fill('#username', 'alice');
  await page.click('#join');
  await waitFor(() => page.evaluate(() => document.getElementById('publish-status').textContent === 'PUBLISHING'), 'alice PUBLISHING', 20000, page);
  assert.equal(await page.textContent('#invite'), `${link}?room=${ROOM}`, 'the page invites with the address the browser used');

  await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo('gstbot')), YELLOW), "gstbot's yellow in alice's page", 30000, page);
  const frame = await poll(() => {
    if (gst.failure()) throw new Error(`gst stopped: ${gst.failure()}\n${gst.describe()}`);
    const f = newestFrameColour(framesDir);
    return f && colourClose(f.colour, RED) && f;
  }, { what: "alice's red decoded by gst in namespace b", timeout: 30000 }).catch(async (e) => {
    e.message += `\n${gst.describe()}\n${await describePage(page)}`;
    throw e;
  });
  assert.ok(frame.index >= 0);
  // The media really went between the namespaces: alice's session to gstbot runs from a's
  // address to b's.
  const pair = await page.evaluate(async () => {
    for (const { pc } of window.room.pcs.publish.values()) {
      const stats = [...(await pc.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const chosen = stats.find((s) => s.id === transport?.selectedCandidatePairId);
      const local = stats.find((s) => s.id === chosen?.localCandidateId);
      const remote = stats.find((s) => s.id === chosen?.remoteCandidateId);
      return { local: local?.address, remote: remote?.address };
    }
    return null;
  });
  assert.deepEqual(pair, { local: net.address('a'), remote: net.address('b') });
  await gst.stop();
});

test('a wss:// server whose certificate the browser does not trust, or ws:// from an https page, fails in plain words', async () => {
  assert.ok(browser, 'the conference test launched the browser');
  const srv = net.address('srv');
  // Another server with its own self-signed certificate: not the key Chromium was told to trust.
  const [cmd, args] = net.exec('srv', serverBinary(), [
    'server', '--listen', '0.0.0.0:8444', '--tls-self-signed', '--tls-dir', path.join(dir, 'tls-other'), '--web-dir', WEB_DIR,
  ]);
  await startProcess(cmd, args, { name: 'untrusted server (srv)', ready: /listening on https:\/\// });
  const page = await browser.newPage();
  await page.goto(`https://${srv}:8443/?room=${ROOM}`);
  const failure = async (url) => {
    await page.fill('#server-url', url);
    await page.fill('#username', 'carol');
    await page.click('#join');
    return waitFor(
      () => page.evaluate(() => document.getElementById('session-status').textContent === 'FAILED' && document.getElementById('failure').textContent),
      `FAILED for ${url}`,
      15000,
      page,
    );
  };
  assert.match(await failure(`wss://${srv}:8444/ws`), new RegExp(`Cannot open a secure connection to ${srv}:8444: .*does not trust its certificate`));
  assert.match(await failure(`ws://${srv}:8443/ws`), /this page is secure \(https\) and browsers do not allow it an insecure ws:\/\/ connection/);
});
