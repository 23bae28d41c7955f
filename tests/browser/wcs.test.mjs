// Clients of the original room API: the unmodified "Video Conferencing" example page of
// Flashphoner's Web SDK (npm @flashphoner/websdk, a devDependency), served statically by this
// test from another origin, against `gst-room server --media sfu`. People type the server's
// address (ws://HOST:PORT) and a login and press Join, as on the original server.
//
// One server (2 seats per room, the test's static origin allowed) and one Chromium per
// participant with its own solid-colour camera. The tests run in order and build on each other:
// two pages see and hear each other (pixels by colour), chat both ways, a third page is refused
// (the SDK's FAILED path), garbage frames get `fail` and change nothing, a leave reaches the
// other page; then a page and a gst roomsink/roomsrc share a room. The frames the SDK sent are
// written to target/browser-artifacts/wcs-frames.json (and, with WCS_FIXTURE=1, to the protocol
// crate's fixture, signaling/protocol/tests/wcs-frames.json).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  argb,
  ARTIFACTS,
  ROOT,
  cleanup,
  colourClose,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  poll,
  rgbFrameSink,
  sampleVideo,
  sleep,
  startGstLaunch,
  startServer,
  tempDir,
  track,
} from './harness.mjs';

const SDK_DIR = path.join(ROOT, 'tests', 'browser', 'node_modules', '@flashphoner', 'websdk');
const EXAMPLE = '/examples/demo/streaming/conference/conference.html';
const COLOURS = {
  alice: [200, 40, 40], // red-ish
  bob: [40, 60, 200], // blue-ish
  carol: [200, 200, 200],
  erin: [40, 180, 60], // green-ish
};
const GST_COLOUR = [230, 220, 30]; // yellow

let server;
let site;
let dir;
const browsers = {};
const pages = {};
const sentFrames = [];

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png', '.jpg': 'image/jpeg', '.gif': 'image/gif', '.mp4': 'video/mp4', '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.svg': 'image/svg+xml' };

/** Serves the SDK package's files as they are, on a free port of 127.0.0.1. */
async function serveSdk() {
  const httpServer = http.createServer((req, res) => {
    const file = path.join(SDK_DIR, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!file.startsWith(SDK_DIR) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': MIME[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  track('static SDK site', () => new Promise((resolve) => httpServer.close(resolve)));
  httpServer.closeAllConnections?.();
  return `http://127.0.0.1:${httpServer.address().port}`;
}

/** The example page in a new context of `name`'s browser, at `url` (the site's, by default). */
async function openExample(name, url = `${site}${EXAMPLE}`, { record = false } = {}) {
  const context = await browsers[name].newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.received = [];
  page.on('websocket', (ws) => {
    ws.on('framereceived', (f) => page.received.push(f.payload));
    if (record) ws.on('framesent', (f) => sentFrames.push(f.payload));
  });
  await page.goto(url);
  pages[name] = page;
  return page;
}

/** Types the server URL and the login and presses Join, as a person would. */
async function join(page, login) {
  await page.fill('#url', server.wsRoot);
  await page.fill('#login', login);
  await page.click('#joinBtn');
}

const text = (page, selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector);

/** What the page shows, for assertion messages. */
async function describe(page) {
  const shown = await page.evaluate(() => ({
    status: document.getElementById('status').textContent,
    failed: document.getElementById('failedInfo').textContent,
    local: document.getElementById('localStatus').textContent,
    p1: document.getElementById('participant1Name').textContent,
    p2: document.getElementById('participant2Name').textContent,
    chat: document.getElementById('chat').textContent,
  }));
  return JSON.stringify({ shown, problems: page.problems, received: page.received.slice(-8).map((f) => String(f).slice(0, 300)) }, null, 1);
}

async function waitFor(fn, what, page, timeout = 20000) {
  try {
    return await poll(fn, { what, timeout });
  } catch (e) {
    e.message += `\n${page ? await describe(page) : ''}\nserver log tail:\n${server.proc.output().split('\n').slice(-25).join('\n')}`;
    throw e;
  }
}

/** The slot (participant1/2) that shows `login`, or null. */
function slotOf(page, login) {
  return page.evaluate((login) => {
    for (const id of ['participant1', 'participant2']) {
      if (document.getElementById(`${id}Name`).textContent === login) return id;
    }
    return null;
  }, login);
}

/** Waits until the slot of `login` on `page` shows a video of `colour`. */
async function waitForVideo(page, login, colour) {
  const slot = await waitFor(() => slotOf(page, login), `${login} shown`, page);
  let last;
  await waitFor(async () => {
    last = await sampleVideo(page, `#${slot}Display video`);
    return colourClose(last, colour, 45);
  }, `${login}'s video (${colour}) on the page`, page).catch((e) => {
    e.message += `\nlast colour ${JSON.stringify(last)}`;
    throw e;
  });
  return slot;
}

before(async () => {
  site = await serveSdk();
  // Two seats: a third page is refused. --media-port 0: a free UDP port.
  server = await startServer({ maxParticipants: 2, args: ['--media', 'sfu', '--media-port', '0', '--allow-origin', site] });
  server.wsRoot = server.url.replace(/^http/, 'ws');
  dir = tempDir('gst-room-wcs-');
  for (const name of Object.keys(COLOURS)) {
    browsers[name] = await launchBrowser({ camera: makeY4m(path.join(dir, `${name}.y4m`), COLOURS[name]) });
  }
});

after(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  if (server) fs.writeFileSync(path.join(ARTIFACTS, 'wcs-server.log'), server.proc.output());
  const frames = sentFrames.map((f) => JSON.parse(f));
  fs.writeFileSync(path.join(ARTIFACTS, 'wcs-frames.json'), `${JSON.stringify(frames, null, 1)}\n`);
  if (process.env.WCS_FIXTURE === '1') {
    fs.writeFileSync(path.join(ROOT, 'signaling', 'protocol', 'tests', 'wcs-frames.json'), `${JSON.stringify(frames, null, 1)}\n`);
  }
  await cleanup();
});

test('two example pages join one room by URL and login, see each other and chat', async () => {
  const alice = await openExample('alice', undefined, { record: true });
  await join(alice, 'alice');
  await waitFor(async () => (await text(alice, '#status')) === 'ESTABLISHED' && (await text(alice, '#localStatus')) === 'PUBLISHING', 'alice publishing', alice);
  assert.match(await text(alice, '#chat'), /room is empty/);
  // The invite link carries the room, as on the original server.
  const invite = await text(alice, '#inviteAddress');
  assert.match(invite, /\?roomName=room-[0-9a-z]+$/);

  const bob = await openExample('bob', invite);
  await join(bob, 'bob');
  await waitFor(async () => (await text(bob, '#localStatus')) === 'PUBLISHING', 'bob publishing', bob);
  assert.match(await text(bob, '#chat'), /participants: alice/);

  // Each plays the other's camera through the server.
  await waitForVideo(alice, 'bob', COLOURS.bob);
  await waitForVideo(bob, 'alice', COLOURS.alice);
  assert.match(await text(alice, '#chat'), /bob - joined/);

  // Chat both ways.
  await alice.fill('#message', 'hello from alice');
  await alice.click('#sendMessageBtn');
  await waitFor(async () => /alice - hello from alice/.test(await text(bob, '#chat')), 'alice\'s message at bob', bob);
  await bob.fill('#message', 'hi alice');
  await bob.click('#sendMessageBtn');
  await waitFor(async () => /bob - hi alice/.test(await text(alice, '#chat')), 'bob\'s message at alice', alice);

  // Mute A / unmute: the server takes the SDK's stream events (nothing else changes).
  await alice.click('#localAudioToggle');
  await alice.click('#localAudioToggle');
  await sleep(300);
  const fails = alice.received.filter((f) => /"message":"fail"/.test(f));
  assert.deepEqual(fails, [], 'alice got no fail');
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('a third page is refused at capacity 2: the SDK\'s FAILED path shows why', async () => {
  const invite = await text(pages.alice, '#inviteAddress');
  const carol = await openExample('carol', invite);
  await join(carol, 'carol');
  const failed = await waitFor(async () => (await text(carol, '#failedInfo')) || null, 'carol refused', carol);
  assert.match(failed, /is full \(2 of 2\)/);
  // The page disconnects on FAILED, as the example does; the room did not hear of carol.
  await waitFor(async () => (await text(carol, '#status')) === 'DISCONNECTED', 'carol disconnected', carol);
  assert.doesNotMatch(await text(pages.alice, '#chat'), /carol/);
  assert.doesNotMatch(await text(pages.bob, '#chat'), /carol/);
  await carol.context().close();
});

test('garbage frames get fail and change nothing in the room', async () => {
  const replies = await pages.bob.evaluate(async (url) => {
    const ws = new WebSocket(url);
    const got = [];
    ws.onmessage = (e) => got.push(typeof e.data === 'string' ? e.data : 'binary');
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('no WebSocket'));
    });
    const garbage = [
      'not json',
      '{"message":"publishStream","data":[{"mediaSessionId":"m1","name":"x","sdp":"v=0"}]}', // before connection
      '{"message":"connection","data":[{"appKey":"roomApp","custom":{"login":"mallory"}}]}',
      '{"message":"call","data":[{"callId":"1"}]}',
      '{"message":"sendData","data":[{"operationId":"o1","payload":{"command":"kick","options":{}}}]}',
      '{"message":"publishStream","data":[{"mediaSessionId":"m2","name":"x","sdp":"v=0"}]}', // not in a room
      new Uint8Array([1, 2, 3]),
      '[1,2,3]',
    ];
    for (const g of garbage) ws.send(g);
    const deadline = Date.now() + 5000;
    while (got.length < garbage.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const open = ws.readyState === WebSocket.OPEN;
    ws.close();
    return { got, open };
  }, server.wsRoot);
  assert.equal(replies.open, true, 'the connection stays');
  const parsed = replies.got.map((t) => JSON.parse(t));
  assert.deepEqual(
    parsed.map((f) => f.message),
    ['fail', 'fail', 'getUserData', 'fail', 'fail', 'notifyStreamStatusEvent', 'fail', 'fail'],
    JSON.stringify(parsed),
  );
  assert.equal(parsed[1].data[0].info, 'send connection first');
  assert.equal(parsed[3].data[0].apiMethod, 'call');
  assert.equal(parsed[5].data[0].status, 'FAILED');
  assert.match(parsed[5].data[0].info, /join a room first/);
  // The room goes on: video both ways, chat, nobody joined.
  await waitForVideo(pages.alice, 'bob', COLOURS.bob);
  await waitForVideo(pages.bob, 'alice', COLOURS.alice);
  await pages.bob.fill('#message', 'still here');
  await pages.bob.click('#sendMessageBtn');
  await waitFor(async () => /bob - still here/.test(await text(pages.alice, '#chat')), 'chat after the garbage', pages.alice);
  assert.doesNotMatch(await text(pages.alice, '#chat'), /mallory/);
});

test('a page that leaves is LEFT at the other', async () => {
  const { alice, bob } = pages;
  await alice.click('#joinBtn'); // "Leave"
  await waitFor(async () => (await text(alice, '#joinBtn')) === 'Join', 'alice left', alice);
  await waitFor(async () => /alice - left/.test(await text(bob, '#chat')), 'LEFT at bob', bob);
  await waitFor(async () => (await slotOf(bob, 'alice')) === null, 'alice\'s slot freed at bob', bob);
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
  await alice.context().close();
  await bob.context().close();
});

test('the example page and a gst roomsink / roomsrc in one room', async () => {
  const room = 'wcs-gst';
  const framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  const erin = await openExample('erin', `${site}${EXAMPLE}?roomName=${room}`);
  await join(erin, 'erin');
  await waitFor(async () => (await text(erin, '#localStatus')) === 'PUBLISHING', 'erin publishing', erin);
  // Her native stream is what follows `ROOM-LOGIN-` in the SDK's name; roomsrc names its pads
  // video_<participant>_<stream>.
  const published = erin.received.map((f) => JSON.parse(f)).find((f) => f.message === 'notifyStreamStatusEvent' && f.data[0].status === 'PUBLISHING');
  const stream = published.data[0].name.replace(`${room}-erin-`, '');
  assert.match(stream, /^[0-9a-f]{4}$/);
  const w = `${server.url.replace(/^http/, 'ws')}/ws`;
  const gst = await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=${argb(GST_COLOUR)}`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${w} room=${room} username=gstbot`,
      `roomsrc name=src server-url=${w} room=${room} username=gstbot participant=erin`,
      `src.video_erin_${stream} ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstbot' },
  );
  // The page plays the roomsink's yellow; the roomsrc decodes the page's green.
  await waitForVideo(erin, 'gstbot', GST_COLOUR);
  let frame;
  await waitFor(() => {
    if (gst.failure()) throw new Error(`gst stopped: ${gst.failure()}\n${gst.describe()}`);
    frame = newestFrameColour(framesDir);
    return frame && colourClose(frame.colour, COLOURS.erin, 45);
  }, 'erin\'s green decoded by the roomsrc', erin).catch((e) => {
    e.message += `\nlast frame ${JSON.stringify(frame)}\n${gst.describe()}`;
    throw e;
  });
  // Chat from gst reaches the page.
  gst.write('hello from gst');
  await waitFor(async () => /gstbot - hello from gst/.test(await text(erin, '#chat')), 'gst chat on the page', erin);
  await erin.fill('#message', 'hi gst');
  await erin.click('#sendMessageBtn');
  await gst.waitForLine(/message from erin.*hi gst/);
  const stopped = await gst.stop();
  assert.equal(stopped.code, 0, gst.describe());
  await waitFor(async () => /gstbot - left/.test(await text(erin, '#chat')), 'gstbot LEFT on the page', erin);
  assert.deepEqual(erin.problems, []);
});
