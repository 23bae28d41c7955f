// Interop: the conference page in Chromium and the GStreamer elements in one room.
//
// One server (3 seats). One `gst-room launch` process is the participant "gstbot": a roomsink
// publishing a solid-colour videotestsrc and an audiotestsrc, and, sharing that participant, a
// roomsrc playing alice whose decoded frames are written as 4x4 RGB files (checked by colour).
// alice and bob are browsers, each with its own solid-colour fake camera. The tests run in order
// and build on each other: alice meets gstbot (media both ways, chat both ways), bob takes the
// last seat, dave is refused, a screenshot, alice mutes her video, alice leaves, gstbot stops.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  argb,
  ARTIFACTS,
  chatEntries,
  chatText,
  cleanup,
  colourClose,
  describePage,
  expectRoomFull,
  inboundStats,
  joinPage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  remoteVideo,
  rgbFrameSink,
  sampleVideo,
  screenshotColours,
  sendChat,
  sleep,
  slot,
  startGstLaunch,
  startServer,
  tempDir,
  waitFor,
} from './harness.mjs';

const ROOM = 'interop';
const GST_USER = 'gstbot';
const COLOURS = {
  alice: [200, 40, 40], // red-ish
  bob: [40, 60, 200], // blue-ish
  [GST_USER]: [230, 200, 30], // yellow-ish: videotestsrc foreground-color
};
const BLACK = [0, 0, 0];

let server;
let gst;
let framesDir;
const browsers = {};
const pages = {};

/** The gst participant must be running (it is started by the first test). */
function needGst() {
  if (!gst) assert.fail('the gst-room launch pipeline was not started (see the first failing test)');
  if (gst.failure()) assert.fail(`the gst-room launch pipeline is not running: ${gst.failure()}\n${gst.describe()}`);
  return gst;
}

/** Waits for a gst stdout line; the page's state is added to the error on timeout. */
async function gstLine(re, { timeout = 15000, since = 0, page } = {}) {
  try {
    return await needGst().waitForLine(re, { timeout, since });
  } catch (e) {
    if (page) e.message += `\n${await describePage(page)}`;
    throw e;
  }
}

/** What a publishing page sends to `viewer` (outbound-rtp video statistics), for diagnostics. */
function outboundVideo(page, viewer) {
  return page.evaluate(async (viewer) => {
    for (const { pc, viewer: v } of window.room.pcs.publish.values()) {
      if (v !== viewer) continue;
      const out = { connectionState: pc.connectionState };
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          for (const key of ['framesEncoded', 'keyFramesEncoded', 'frameWidth', 'framesPerSecond', 'pliCount', 'nackCount']) {
            out[key] = s[key];
          }
        }
      });
      return out;
    }
    return null;
  }, viewer);
}

/**
 * Polls the newest frame gstbot's roomsrc decoded until `ok(colour, frame)`; returns it. On timeout the
 * error has the last frame, what `publisher` (a page) sends to gstbot, and gst's output.
 */
async function gstFrame(ok, what, timeout = 15000, publisher) {
  const deadline = Date.now() + timeout;
  for (;;) {
    needGst(); // fails at once when the pipeline has stopped
    const frame = newestFrameColour(framesDir);
    if (frame && ok(frame.colour, frame)) return frame;
    if (Date.now() > deadline) {
      const sent = publisher ? await outboundVideo(publisher, GST_USER).catch((err) => err.message) : null;
      assert.fail(
        `timed out after ${timeout} ms waiting for ${what}\nlast frame: ${JSON.stringify(frame)}\n` +
          `sent to gstbot: ${JSON.stringify(sent)}\n${gst.describe()}`,
      );
    }
    await sleep(200);
  }
}

before(async () => {
  server = await startServer({ maxParticipants: 3 }); // fails clearly without target/debug/gst-room
  const dir = tempDir('gst-room-interop-');
  framesDir = path.join(dir, 'frames');
  fs.mkdirSync(framesDir);
  await Promise.all(
    ['alice', 'bob'].map(async (name) => {
      browsers[name] = await launchBrowser({ camera: makeY4m(path.join(dir, `${name}.y4m`), COLOURS[name]) });
    }),
  );
});

after(cleanup);

test('a gst roomsink publisher reaches the browser: its colour on the slot, its audio packets', async () => {
  const w = server.wsUrl;
  gst = await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=${argb(COLOURS[GST_USER])}`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${w} room=${ROOM} username=${GST_USER}`,
      `roomsrc name=src server-url=${w} room=${ROOM} username=${GST_USER} participant=alice`,
      `src.video_alice ! ${rgbFrameSink(framesDir)}`,
    ].join(' '),
    { name: 'gstbot' },
  );
  await gstLine(new RegExp(`^sink: in room ${ROOM} as ${GST_USER} with nobody else$`));
  await gstLine(/^sink: status: publishing main$/);

  const a = (pages.alice = await joinPage(browsers.alice, server.url, ROOM, 'alice'));
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
  await waitFor(async () => (await slot(a, GST_USER))?.status === 'PLAYING', 'gstbot PLAYING at alice', 10000, a);
  const seen = await waitFor(async () => {
    const c = await sampleVideo(a, remoteVideo(GST_USER));
    return colourClose(c, COLOURS[GST_USER]) && c;
  }, 'gstbot\'s yellow in alice\'s page', 15000, a);
  assert.ok(!colourClose(seen, COLOURS.alice), `gstbot's video is not alice's own colour: ${seen}`);
  // The audio keeps flowing.
  const before = stats.audio.packetsReceived;
  await waitFor(async () => (await inboundStats(a, GST_USER))?.audio?.packetsReceived > before, 'more audio packets from gstbot', 5000, a);
  // gstbot saw alice join (both of its elements are the one participant gstbot).
  await gstLine(/^sink: joined: alice$/);
  await gstLine(/^src: joined: alice$/);
});

test('a gst roomsrc decodes the browser\'s camera colour', async () => {
  needGst();
  await gstLine(/^src: published: alice\/main \(audio\+video\)$/);
  await gstLine(/^src: status: playing alice\/main$/, { timeout: 20000 });
  const first = await gstFrame((c) => colourClose(c, COLOURS.alice), 'alice\'s red decoded by gstbot', 20000, pages.alice);
  assert.ok(!colourClose(first.colour, COLOURS[GST_USER]), `not gstbot's own colour: ${first.colour}`);
  // Frames keep coming (a live stream, not one stray frame).
  await gstFrame((c, frame) => frame.index > first.index + 5, 'more frames from alice', 5000, pages.alice);
});

test('chat both ways between the browser and gst, rendered as text', async () => {
  const a = pages.alice;
  const g = needGst();
  g.write('hello from gst');
  const got = await waitFor(async () => (await chatEntries(a)).find((m) => m.text === 'hello from gst'), 'gst\'s message at alice', 10000, a);
  assert.deepEqual([got.from, got.direct], [GST_USER, false]);
  assert.match(got.time, /^\d\d:\d\d:\d\d$/);

  const xss = '<img src=x onerror=alert(1)>';
  g.write(xss);
  const shown = await waitFor(async () => (await chatEntries(a)).find((m) => m.text === xss), 'the XSS string at alice', 10000, a);
  assert.equal(shown.from, GST_USER);
  assert.ok((await chatText(a)).includes(xss), 'the log shows the markup literally');
  assert.equal(await a.locator('#chat-log img').count(), 0, 'no <img> element was created');
  // No script ran: no alert() dialog, no page error (the browser's own favicon.ico 404 aside).
  assert.deepEqual(a.problems.filter((p) => !p.includes('/favicon.ico')), [], 'no dialog or page error');

  const mark = g.mark();
  await sendChat(a, 'hello from the browser');
  await gstLine(/^sink: message from alice: hello from the browser$/, { since: mark, page: a });
  // A room message: no "to" part on any gst line for it.
  assert.ok(!g.lines.slice(mark).some((l) => /message from alice to /.test(l)), g.describe());
});

test('bob takes the last seat; a fourth participant (browser) is refused with "Room is full"', async () => {
  const g = needGst();
  const a = pages.alice;
  const b = (pages.bob = await joinPage(browsers.bob, server.url, ROOM, 'bob'));
  for (const [page, others] of [[a, ['bob']], [b, ['alice', GST_USER]]]) {
    for (const other of others) {
      await waitFor(async () => (await slot(page, other))?.status === 'PLAYING', `${other} PLAYING`, 20000, page);
    }
  }
  await gstLine(/^sink: joined: bob$/);
  await waitFor(async () => /3 of 3/.test(await b.textContent('#room-info')), '3 of 3 seats at bob', 5000, b);
  assert.equal(await b.locator('.slot.free').count(), 0, 'room full: no free seat shown');

  // dave: a page in bob's browser (it never gets to publish).
  await expectRoomFull(browsers.bob, server.url, ROOM, 'dave');
  await sleep(1000);
  assert.ok(!g.lines.some((l) => /dave/.test(l)), `gst never heard of dave\n${g.describe()}`);
  for (const page of [a, b]) assert.equal(await slot(page, 'dave'), null, 'no slot for dave');

  // Direct messages across the two worlds: gst → bob only, bob → gst marked direct.
  g.write('@bob psst, bob');
  const direct = await waitFor(async () => (await chatEntries(b)).find((m) => m.text === 'psst, bob'), 'gst\'s direct message at bob', 10000, b);
  assert.deepEqual([direct.from, direct.to, direct.direct], [GST_USER, 'bob', true]);
  g.write('for everyone');
  await waitFor(async () => (await chatEntries(a)).some((m) => m.text === 'for everyone'), 'room message at alice', 10000, a);
  assert.ok(!(await chatText(a)).includes('psst, bob'), 'alice does not see the direct message');
  const mark = g.mark();
  await sendChat(b, 'psst, gstbot', GST_USER);
  await gstLine(/^sink: message from bob to gstbot: psst, gstbot$/, { since: mark, page: b });
});

test('screenshot of a 3-participant room: two browsers and a gst publisher', async () => {
  const b = pages.bob;
  for (const other of ['alice', GST_USER]) {
    await waitFor(async () => colourClose(await sampleVideo(b, remoteVideo(other)), COLOURS[other]), `${other}'s colour in bob's page`, 15000, b);
  }
  await waitFor(async () => colourClose(await sampleVideo(b, '#local-video'), COLOURS.bob), 'bob\'s own preview', 10000, b);
  const names = await b.evaluate(() => [...document.querySelectorAll('.stage .name-tag')].map((t) => t.textContent.replace(/\s+/g, ' ').trim()));
  // The own tile first, then the others in join order.
  assert.deepEqual(names, ['bob (you)', `${GST_USER} main`, 'alice main']);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, 'room-3.png');
  const png = await b.screenshot({ path: file, fullPage: true });
  // The picture shows each participant's colour in their tile.
  const tiles = [['bob', '#local-video', COLOURS.bob], [GST_USER, remoteVideo(GST_USER), COLOURS[GST_USER]], ['alice', remoteVideo('alice'), COLOURS.alice]];
  const shown = await screenshotColours(b, png, tiles.map(([, selector]) => selector));
  tiles.forEach(([who, , colour], i) => assert.ok(colourClose(shown[i], colour), `${who}'s tile in ${file} is ${JSON.stringify(shown[i])}, not ${JSON.stringify(colour)}`));
});

test('mute V in the browser: gst gets the MUTED event and decodes black frames', async () => {
  const a = pages.alice;
  const mark = needGst().mark();
  await a.click('#mute-video');
  assert.equal(await a.textContent('#mute-video'), 'Unmute V');
  await gstLine(/^src: muted: alice\/main audio on video muted$/, { since: mark, page: a });
  await gstLine(/^sink: muted: alice\/main audio on video muted$/, { since: mark, page: a });
  await gstFrame((c) => colourClose(c, BLACK, 30), 'alice\'s frames black at gstbot', 10000, a).catch(async (e) => {
    e.message += `\nalice's video at bob: ${JSON.stringify(await sampleVideo(pages.bob, remoteVideo('alice')))}`;
    throw e;
  });
  // The other browser agrees.
  const indicator = await waitFor(async () => (await slot(pages.bob, 'alice'))?.mutedIndicator, 'muted indicator at bob', 10000, pages.bob);
  assert.match(indicator, /video/);
  await waitFor(async () => colourClose(await sampleVideo(pages.bob, remoteVideo('alice')), BLACK, 30), 'alice\'s video black at bob', 10000, pages.bob);
});

test('leave in the browser: the other browser frees the seat, the gst roomsrc drops alice\'s pad', async () => {
  const [a, b] = [pages.alice, pages.bob];
  const mark = needGst().mark();
  await a.click('#leave');
  assert.equal(await a.textContent('#session-status'), 'DISCONNECTED');
  await waitFor(async () => (await slot(b, 'alice')) === null, 'alice\'s slot removed at bob', 10000, b);
  await waitFor(async () => (await b.locator('.slot.free').count()) === 1, 'one free seat at bob', 5000, b);
  assert.match(await b.textContent('#room-info'), /2 of 3/);
  assert.ok((await chatText(b)).includes('alice left'));
  await gstLine(/^src: left: alice$/, { since: mark });
  await gstLine(/^src: status: stopped alice\/main$/, { since: mark });
  // The pad is gone: no more frames are written; gstbot keeps publishing to bob.
  await sleep(300);
  const last = newestFrameColour(framesDir)?.index;
  await sleep(1500);
  assert.equal(newestFrameColour(framesDir)?.index, last, 'no frames after alice left');
  assert.equal(gst.failure(), null, 'the pipeline keeps running');
  assert.equal((await slot(b, GST_USER)).status, 'PLAYING');
  await waitFor(async () => colourClose(await sampleVideo(b, remoteVideo(GST_USER)), COLOURS[GST_USER]), 'gstbot still shown at bob', 5000, b);
});

test('Ctrl-C on gst-room launch: EOS, exit 0, and the browser sees gstbot leave', async () => {
  const b = pages.bob;
  const how = await needGst().stop(); // stdin closed, one SIGINT, SIGKILL after 5 s
  assert.match(gst.output(), /Ctrl-C: sending EOS/, `gst-room launch saw the SIGINT\n${gst.describe()}`);
  assert.deepEqual(how, { code: 0, signal: null }, `gst-room launch exits 0 after SIGINT\n${gst.describe()}`);
  await waitFor(async () => (await slot(b, GST_USER)) === null, 'gstbot\'s slot removed at bob', 10000, b);
  assert.ok((await chatText(b)).includes(`${GST_USER} left`));
});
