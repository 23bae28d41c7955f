// Several servers: a browser on one server and a gst participant on another, one room.
//
// A real redis-server on a free port and two `gst-room server --redis` processes sharing it.
// alice (Chromium, red camera) joins through server 1 first, so server 1 runs the room; the
// participant "gstbot" is one `gst-room launch` process connected to server 2: a roomsink
// publishing a solid yellow videotestsrc and an audiotestsrc, and a roomsrc playing alice whose
// decoded frames are written as 4x4 RGB files. Every message between them crosses the servers
// through Redis; the media flows peer to peer. Checked: gstbot's yellow decoded in alice's page
// with its audio packets, alice's red decoded by the roomsrc, chat both ways.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  argb,
  chatEntries,
  cleanup,
  colourClose,
  inboundStats,
  joinPage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  remoteVideo,
  rgbFrameSink,
  sampleVideo,
  sendChat,
  slot,
  startGstLaunch,
  startProcess,
  startServer,
  tempDir,
  waitFor,
} from './harness.mjs';

const ROOM = 'cluster';
const GST_USER = 'gstbot';
const RED = [200, 40, 40];
const YELLOW = [230, 200, 30];

let servers;
let gst;
let framesDir;
let browser;
let alice;

/** A free TCP port on 127.0.0.1 (closed again before redis-server takes it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

before(async () => {
  const port = await freePort();
  await startProcess(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', '/tmp'],
    { name: 'redis-server', ready: /Ready to accept connections/ },
  );
  const redis = `redis://127.0.0.1:${port}`;
  servers = [];
  for (const id of ['s1', 's2']) {
    servers.push(await startServer({ args: ['--redis', redis, '--node-id', id] }));
  }
  const dir = tempDir('gst-room-cluster-');
  framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  browser = await launchBrowser({ camera: makeY4m(path.join(dir, 'alice.y4m'), RED) });
});

after(cleanup);

test('a browser on server 1 and a gst participant on server 2 exchange media and chat', async () => {
  // alice first: server 1 runs the room, and everything of gstbot is forwarded to it.
  const a = (alice = await joinPage(browser, servers[0].url, ROOM, 'alice'));
  const w = servers[1].wsUrl;
  gst = await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=${argb(YELLOW)}`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${w} room=${ROOM} username=${GST_USER}`,
      `roomsrc name=src server-url=${w} room=${ROOM} username=${GST_USER} participant=alice`,
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstbot' },
  );

  // gst → browser, across the servers.
  await waitFor(async () => (await slot(a, GST_USER))?.name === GST_USER, 'gstbot\'s slot at alice', 15000, a);
  const stats = await waitFor(
    async () => {
      const s = await inboundStats(a, GST_USER);
      return s?.video?.framesDecoded > 0 && s?.audio?.packetsReceived > 0 && s;
    },
    'video frames and audio packets from gstbot',
    20000,
    a,
  );
  assert.ok(stats.audio.packetsReceived > 0);
  const seen = await waitFor(async () => {
    const c = await sampleVideo(a, remoteVideo(GST_USER));
    return colourClose(c, YELLOW) && c;
  }, 'gstbot\'s yellow in alice\'s page', 15000, a);
  assert.ok(!colourClose(seen, RED), `gstbot's video is not alice's own colour: ${seen}`);

  // browser → gst, across the servers: alice's red decoded by the roomsrc, frames keep coming.
  await gst.waitForLine(/^src: status: playing alice\/main$/, { timeout: 20000 });
  let first;
  await waitFor(async () => {
    const frame = newestFrameColour(framesDir);
    if (frame && colourClose(frame.colour, RED)) first = frame;
    return first;
  }, 'alice\'s red decoded by gstbot', 20000, a);
  assert.ok(!colourClose(first.colour, YELLOW), `not gstbot's own colour: ${first.colour}`);
  await waitFor(async () => newestFrameColour(framesDir)?.index > first.index + 5, 'more frames from alice', 5000, a);

  // Chat both ways.
  gst.write('hello from server 2');
  const got = await waitFor(async () => (await chatEntries(a)).find((m) => m.text === 'hello from server 2'), 'gst\'s message at alice', 10000, a);
  assert.equal(got.from, GST_USER);
  const mark = gst.mark();
  await sendChat(a, 'hello from server 1');
  await gst.waitForLine(/^sink: message from alice: hello from server 1$/, { since: mark });
  assert.equal(gst.failure(), null, 'the pipeline keeps running');
});
