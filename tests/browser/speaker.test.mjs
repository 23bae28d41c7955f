// Who is speaking, on the page: a gst publisher plays a tone for a few seconds, then silence.
// The page playing it puts the speaking border on its tile while the tone plays (from the
// RFC 6464 levels roomsink sends), and takes it off within 2 s of the silence.
// In an SFU room (`--media sfu`) with many participants the server says who speaks
// (`active-speaker`) and the page shows that tile large, across the first row.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, joinPage, launchBrowser, poll, sleep, slot, startGstLaunch, startServer, waitFor } from './harness.mjs';

const ROOM = 'speaker';
/** The tone: 600 buffers of 20 ms (12 s from the publisher's start: it joins, publishes and
 * reaches the page within that), then the mixer carries only the silence. */
const TONE_BUFFERS = 600;

after(cleanup);

/** What the page says of gstbot: its tile's highlight and its latest level (0..127). */
const gstbot = (page) =>
  page.evaluate(() => {
    const el = document.querySelector('.slot[data-participant="gstbot"]');
    const remote = window.room.state.remotes.find((r) => r.username === 'gstbot');
    return {
      highlighted: !!el?.classList.contains('speaking'),
      level: remote?.level ?? null,
      speaker: window.room.state.speaker,
    };
  });

test('the tile of a gst publisher playing a tone is highlighted, and not after the tone stops', async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  const page = await joinPage(browser, server.url, ROOM, 'alice', { publish: 0 });
  await waitFor(() => page.evaluate(() => window.room.state.joined), 'alice joined', 15000, page);
  const gst = await startGstLaunch(
    [
      'videotestsrc is-live=true pattern=solid-color foreground-color=0xffc81e1e',
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      'audiotestsrc is-live=true wave=silence samplesperbuffer=960 ! audio/x-raw,rate=48000 ! mix.',
      `audiotestsrc is-live=true wave=sine volume=0.5 samplesperbuffer=960 num-buffers=${TONE_BUFFERS}`,
      '! audio/x-raw,rate=48000 ! mix.',
      'audiomixer name=mix ! sink.',
      `roomsink name=sink server-url=${server.wsUrl} room=${ROOM} username=gstbot`,
    ].join(' '),
    { name: 'gstbot' },
  );
  await waitFor(async () => (await slot(page, 'gstbot'))?.status === 'PLAYING', 'gstbot playing', 20000, page);
  await poll(async () => (await gstbot(page)).highlighted, { timeout: 6000, interval: 100, what: 'the highlight while the tone plays' });
  const during = await gstbot(page);
  assert.equal(during.speaker, 'gstbot');
  assert.ok(during.level <= 35, `a tone at -9 dBov reads as level ${during.level}`);

  // Until the highlight goes: the last time the page still read the tone.
  let lastLoud = Date.now();
  let goneAt = null;
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const now = await gstbot(page);
    if (now.level !== null && now.level <= 35) lastLoud = Date.now();
    if (!now.highlighted) {
      goneAt = Date.now();
      break;
    }
    await sleep(50);
  }
  assert.ok(goneAt, 'the highlight stayed after the tone stopped');
  const after = goneAt - lastLoud;
  console.log(`highlight gone ${after} ms after the last loud level`);
  assert.ok(after <= 2000, `the highlight went ${after} ms after the tone`);
  assert.ok(after >= 1000, `the highlight went ${after} ms after the tone: not held through a pause`);
  assert.equal((await gstbot(page)).speaker, null);
  assert.deepEqual(page.problems, []);
  await gst.stop();
});

/** A gst publisher of audio only (no video: cheap), playing a tone at `volume` (0: silence). */
const audioPublisher = (server, room, name, volume) =>
  startGstLaunch(
    [
      `audiotestsrc is-live=true wave=sine volume=${volume} samplesperbuffer=960 ! audio/x-raw,rate=48000 ! sink.`,
      `roomsink name=sink server-url=${server.wsUrl} room=${room} username=${name}`,
    ].join(' '),
    { name },
  );

test('in an SFU room with many participants the server names the speaker and the page shows it large', async () => {
  // --media-port 0: a free port (parallel runs must not collide on 7882).
  const server = await startServer({ maxParticipants: 5, args: ['--media', 'sfu', '--media-port', '0'] });
  const room = 'speaker-sfu';
  const browser = await launchBrowser();
  const page = await joinPage(browser, server.url, room, 'alice', { publish: 0 });
  await waitFor(() => page.evaluate(() => window.room.state.joined), 'alice joined', 15000, page);
  const gst = [
    await audioPublisher(server, room, 'talker', 0.5),
    await audioPublisher(server, room, 'quiet1', 0),
    await audioPublisher(server, room, 'quiet2', 0),
  ];
  const shown = () =>
    page.evaluate(() => {
      const box = (name) => document.querySelector(`.slot[data-participant="${name}"]`)?.getBoundingClientRect();
      return {
        speaker: window.room.state.speaker,
        large: document.getElementById('slots').classList.contains('large-speaker'),
        highlighted: !!document.querySelector('.slot[data-participant="talker"]')?.classList.contains('speaking'),
        talkerWidth: box('talker')?.width ?? 0,
        quietWidth: box('quiet1')?.width ?? 0,
        fromServer: window.room.log.filter((e) => e.dir === 'in' && e.msg.type === 'active-speaker').map((e) => e.msg.username ?? null),
      };
    });
  await poll(async () => (await shown()).large && (await shown()).highlighted, {
    timeout: 30000,
    interval: 200,
    what: 'the talker shown large',
  });
  const now = await shown();
  assert.equal(now.speaker, 'talker');
  // The server said so: nobody right after the join, then the talker.
  assert.deepEqual(now.fromServer.slice(0, 1), [null]);
  assert.ok(now.fromServer.includes('talker'), `active-speaker messages: ${JSON.stringify(now.fromServer)}`);
  assert.ok(now.talkerWidth > 1.5 * now.quietWidth, `talker ${now.talkerWidth} px wide, the others ${now.quietWidth}`);
  assert.deepEqual(page.problems, []);
  for (const p of gst) await p.stop();
});
