// A room whose media goes through the server (`gst-room server --media sfu`), in real browsers:
// three pages see each other by colour, a gst roomsrc decodes one of them, chat and mute work as
// in a mesh room — and each page uploads its camera once, to the server, however many watch it.
//
// One server (4 seats: three browsers and the gst viewer) with its media engine on a free UDP
// port of 127.0.0.1, one Chromium per participant with its own solid-colour fake camera. The
// tests run in order and build on each other.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ARTIFACTS,
  chatEntries,
  chatText,
  cleanup,
  colourClose,
  describePage,
  inboundStats,
  joinPage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  remoteVideo,
  rgbFrameSink,
  sampleVideo,
  sendChat,
  sleep,
  slot,
  startGstLaunch,
  startServer,
  tempDir,
  waitFor,
} from './harness.mjs';

const ROOM = 'sfu-browsers';
const NAMES = ['alice', 'bob', 'carol'];
const COLOURS = {
  alice: [200, 40, 40], // red-ish
  bob: [40, 60, 200], // blue-ish
  carol: [40, 180, 60], // green-ish
};
const BLACK = [0, 0, 0];

let server;
let gst;
let framesDir;
const browsers = {};
const pages = {};

/** The server's /healthz text. */
async function health() {
  const response = await fetch(`${server.url}/healthz`);
  assert.equal(response.status, 200);
  return response.text();
}

/** The media sessions the server carries, from /healthz (`media sessions: N (M connected)`). */
async function mediaSessions() {
  const text = await health();
  const m = text.match(/^media sessions: (\d+) \((\d+) connected\)$/m);
  assert.ok(m, `/healthz has no media sessions line:\n${text}`);
  return { sessions: Number(m[1]), connected: Number(m[2]) };
}

/** What a page's sessions are: publish sessions with their viewer, play sessions with their publisher. */
function pageSessions(page) {
  return page.evaluate(() => ({
    publish: [...window.room.pcs.publish.values()].map((s) => ({ viewer: s.viewer, state: s.pc?.connectionState })),
    view: window.room.pcs.view.size,
  }));
}

/** Polls the newest frame the gst roomsrc decoded until `ok(colour, frame)`; returns the frame. */
async function gstFrame(ok, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (gst.failure()) assert.fail(`the gst viewer stopped: ${gst.failure()}\n${gst.describe()}`);
    const frame = newestFrameColour(framesDir);
    if (frame && ok(frame.colour, frame)) return frame;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeout} ms waiting for ${what}; last frame: ${JSON.stringify(frame)}\n${gst.describe()}`);
    await sleep(200);
  }
}

before(async () => {
  // --media-port 0: a free port (parallel runs must not collide on 7882). With a loopback
  // --listen the engine binds every address and announces them: browsers gather no loopback
  // candidates.
  server = await startServer({ maxParticipants: 4, args: ['--media', 'sfu', '--media-port', '0'] });
  const dir = tempDir('gst-room-sfu-');
  framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  await Promise.all(
    NAMES.map(async (name) => {
      browsers[name] = await launchBrowser({ camera: makeY4m(path.join(dir, `${name}.y4m`), COLOURS[name]) });
    }),
  );
});

after(async () => {
  // The server's log, for a failure's post-mortem (the media engine logs its sessions).
  if (server) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    fs.writeFileSync(path.join(ARTIFACTS, 'sfu-server.log'), server.proc.output());
  }
  await cleanup();
});

test('three browsers in an SFU room see each other; each uploads once, to the server', async () => {
  assert.match(server.proc.output(), /media through the server: udp [^ ]+:\d+/);
  assert.match(await health(), /^media: sfu udp \d+$/m);
  for (const name of NAMES) {
    pages[name] = await joinPage(browsers[name], server.url, ROOM, name);
    await waitFor(() => pages[name].evaluate(() => window.room.state.publish === 'PUBLISHING'), `${name} publishing`, 15000, pages[name]);
  }
  for (const name of NAMES) {
    const page = pages[name];
    for (const other of NAMES.filter((n) => n !== name)) {
      await waitFor(
        async () => {
          const s = await inboundStats(page, other);
          return s?.video?.framesDecoded > 0 && s?.audio?.packetsReceived > 0 && s;
        },
        `video frames and audio packets from ${other} at ${name}`,
        30000,
        page,
      );
      await waitFor(async () => (await slot(page, other))?.status === 'PLAYING', `${other} PLAYING at ${name}`, 10000, page);
      // The colour proves the right stream reached the right slot through the server.
      await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo(other)), COLOURS[other]), `${other}'s colour at ${name}`, 15000, page);
    }
  }
  // Each page has one publish session, with the server, though two others watch it; in a
  // mesh room it would have two (one per viewer).
  for (const name of NAMES) {
    const sessions = await pageSessions(pages[name]);
    assert.equal(sessions.publish.length, 1, `${name}'s publish sessions: ${JSON.stringify(sessions)}`);
    assert.equal(sessions.view, 2, `${name}'s play sessions: ${JSON.stringify(sessions)}`);
  }
  // The server carries them all: 3 ingests + 3 × 2 viewer sessions, all connected.
  const media = await waitFor(async () => {
    const m = await mediaSessions();
    return m.connected === 9 && m;
  }, '9 connected media sessions on the server', 10000);
  assert.equal(media.sessions, 9, JSON.stringify(media));
  assert.match(await health(), /^media frames forwarded\/s: [1-9]\d*$/m, 'the server forwards frames');
});

test('a gst roomsrc in the SFU room decodes a browser\'s camera', async () => {
  gst = await startGstLaunch(
    [
      `roomsrc name=src server-url=${server.wsUrl} room=${ROOM} username=gstview participant=alice`,
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstview' },
  );
  await gst.waitForLine(/^src: status: playing alice\/main$/, { timeout: 30000 });
  const first = await gstFrame((c) => colourClose(c, COLOURS.alice), 'alice\'s red decoded by gstview', 30000);
  await gstFrame((c, frame) => frame.index > first.index + 5, 'more frames from alice', 5000);
  // Still one upload from alice: the new viewer's session is the server's.
  assert.equal((await pageSessions(pages.alice)).publish.length, 1);
  await waitFor(async () => (await mediaSessions()).connected === 10, '10 connected media sessions', 10000);
  // The browsers saw a participant without a stream join.
  for (const name of NAMES) {
    await waitFor(async () => (await slot(pages[name], 'gstview'))?.name === 'gstview', `gstview's slot at ${name}`, 10000, pages[name]);
  }
});

test('chat in the SFU room: room messages and a direct one, as in a mesh room', async () => {
  const { alice: a, bob: b, carol: c } = pages;
  await sendChat(a, 'hello through the sfu room');
  for (const page of [a, b, c]) {
    await waitFor(async () => (await chatEntries(page)).some((m) => m.from === 'alice' && m.text === 'hello through the sfu room'), 'alice\'s message', 10000, page);
  }
  await sendChat(b, 'just for carol', 'carol');
  const got = await waitFor(async () => (await chatEntries(c)).find((m) => m.text === 'just for carol'), 'direct message at carol', 10000, c);
  assert.deepEqual([got.from, got.to, got.direct], ['bob', 'carol', true]);
  await sendChat(c, 'for everyone again');
  await waitFor(async () => (await chatEntries(a)).some((m) => m.text === 'for everyone again'), 'room message at alice', 10000, a);
  assert.ok(!(await chatText(a)).includes('just for carol'), 'alice does not see the direct message');
  // The chat reaches the gst participant too.
  const mark = gst.mark();
  await sendChat(c, 'hello gstview');
  await gst.waitForLine(/^src: message from carol: hello gstview$/, { since: mark }).catch(async (e) => {
    e.message += `\n${await describePage(c)}`;
    throw e;
  });
});

test('mute V in the SFU room: indicator and black video at the browsers and at gst; unmute brings the colour back', async () => {
  const { alice: a, bob: b, carol: c } = pages;
  const mark = gst.mark();
  await a.click('#mute-video');
  assert.equal(await a.textContent('#mute-video'), 'Unmute V');
  for (const page of [b, c]) {
    const shown = await waitFor(async () => {
      const s = await slot(page, 'alice');
      return s?.videoMuted && s.mutedIndicator;
    }, 'muted indicator on alice\'s slot', 10000, page);
    assert.match(shown, /video/);
    await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo('alice')), BLACK, 30), 'alice\'s video black', 10000, page);
  }
  await gst.waitForLine(/^src: muted: alice\/main audio on video muted$/, { since: mark });
  await gstFrame((colour) => colourClose(colour, BLACK, 30), 'alice\'s frames black at gstview', 10000);
  // The others are unaffected.
  await waitFor(async () => colourClose(await sampleVideo(a, remoteVideo('bob')), COLOURS.bob), 'bob still blue at alice', 10000, a);
  await a.click('#mute-video');
  assert.equal(await a.textContent('#mute-video'), 'Mute V');
  for (const page of [b, c]) {
    await waitFor(async () => (await slot(page, 'alice'))?.mutedIndicator === null, 'indicator gone', 10000, page);
    await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo('alice')), COLOURS.alice), 'alice red again', 10000, page);
  }
  await gstFrame((colour) => colourClose(colour, COLOURS.alice), 'alice red again at gstview', 10000);
});

test('leave in the SFU room: the others free the seat and keep playing each other', async () => {
  const { alice: a, bob: b, carol: c } = pages;
  const before = (await mediaSessions()).sessions;
  await c.click('#leave');
  assert.equal(await c.textContent('#session-status'), 'DISCONNECTED');
  for (const page of [a, b]) {
    await waitFor(async () => (await slot(page, 'carol')) === null, 'carol\'s slot removed', 10000, page);
    assert.ok((await chatText(page)).includes('carol left'));
  }
  // carol's ingest and her two play sessions are gone from the server; alice's and bob's
  // sessions to carol too: 1 + 2 + 2 = 5 fewer.
  await waitFor(async () => (await mediaSessions()).sessions === before - 5, `${before - 5} media sessions after carol left`, 10000);
  for (const [page, other] of [[a, 'bob'], [b, 'alice']]) {
    assert.equal((await slot(page, other)).status, 'PLAYING');
    await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo(other)), COLOURS[other]), `${other} still shown`, 10000, page);
  }
  const frame = newestFrameColour(framesDir);
  await gstFrame((colour, f) => f.index > frame.index && colourClose(colour, COLOURS.alice), 'gstview still decodes alice', 5000);
});
