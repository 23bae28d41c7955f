// A room in real browsers: media both ways (checked by colour), chat (with an XSS string),
// direct messages, capacity, mute, leave, and a screenshot for people.
//
// One server (3 seats) and one Chromium per participant, each with its own fake camera: a Y4M of
// one saturated colour. The tests run in order and build on each other (like a meeting does):
// alice and bob meet, chat, carol joins, dave is refused, alice mutes her video, carol leaves.

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
  expectRoomFull,
  inboundStats,
  joinPage,
  launchBrowser,
  makeY4m,
  remoteVideo,
  sampleVideo,
  screenshotColours,
  sendChat,
  sleep,
  slot,
  startServer,
  tempDir,
  waitFor,
} from './harness.mjs';

const ROOM = 'browser-suite';
const COLOURS = {
  alice: [200, 40, 40], // red-ish
  bob: [40, 60, 200], // blue-ish
  carol: [40, 180, 60], // green-ish
};

let server;
const browsers = {};
const pages = {};

async function cameraBrowser(name, dir) {
  const camera = makeY4m(path.join(dir, `${name}.y4m`), COLOURS[name]);
  browsers[name] = await launchBrowser({ camera });
  return browsers[name];
}

before(async () => {
  server = await startServer({ maxParticipants: 3 });
  const dir = tempDir();
  await Promise.all(['alice', 'bob', 'carol'].map((n) => cameraBrowser(n, dir)));
});

after(cleanup);

test('two browsers join, show each other and decode each other\'s video and audio', async () => {
  pages.alice = await joinPage(browsers.alice, server.url, ROOM, 'alice');
  await waitFor(() => pages.alice.evaluate(() => window.room.state.publish === 'PUBLISHING'), 'alice publishing', 15000, pages.alice);
  pages.bob = await joinPage(browsers.bob, server.url, ROOM, 'bob');

  const [a, b] = [pages.alice, pages.bob];
  for (const [page, other] of [[a, 'bob'], [b, 'alice']]) {
    await waitFor(async () => (await slot(page, other))?.name === other, `slot of ${other}`, 15000, page);
    await waitFor(
      async () => {
        const s = await inboundStats(page, other);
        return s?.video?.framesDecoded > 0 && s?.audio?.packetsReceived > 0 && s;
      },
      `video frames and audio packets from ${other}`,
      20000,
      page,
    );
    await waitFor(async () => (await slot(page, other))?.status === 'PLAYING', `${other} PLAYING`, 10000, page);
  }
  assert.equal(await a.textContent('#session-status'), 'ESTABLISHED');
  assert.equal(await b.textContent('#publish-status'), 'PUBLISHING');
  assert.equal(await a.textContent('#invite'), `${server.url}/?room=${ROOM}`);
  // Each sees the other's camera colour: proves the right stream reached the right slot.
  const bobSeen = await waitFor(async () => {
    const c = await sampleVideo(a, remoteVideo('bob'));
    return colourClose(c, COLOURS.bob) && c;
  }, 'bob\'s blue in alice\'s page', 15000, a);
  const aliceSeen = await waitFor(async () => {
    const c = await sampleVideo(b, remoteVideo('alice'));
    return colourClose(c, COLOURS.alice) && c;
  }, 'alice\'s red in bob\'s page', 15000, b);
  assert.ok(!colourClose(bobSeen, COLOURS.alice), `bob's video is not alice's colour: ${bobSeen}`);
  assert.ok(!colourClose(aliceSeen, COLOURS.bob), `alice's video is not bob's colour: ${aliceSeen}`);
});

test('chat both ways, rendered as text', async () => {
  const [a, b] = [pages.alice, pages.bob];
  await sendChat(a, 'hello from alice');
  await waitFor(async () => (await chatEntries(b)).some((m) => m.from === 'alice' && m.text === 'hello from alice'), 'alice\'s message at bob', 10000, b);
  const xss = '<img src=x onerror=alert(1)>';
  await sendChat(b, xss);
  for (const page of [a, b]) {
    const entry = await waitFor(async () => (await chatEntries(page)).find((m) => m.from === 'bob' && m.text === xss), 'bob\'s message', 10000, page);
    assert.equal(entry.direct, false);
    assert.match(entry.time, /^\d\d:\d\d:\d\d$/);
    assert.ok((await chatText(page)).includes(xss), 'log shows the markup literally');
    assert.equal(await page.locator('#chat-log img').count(), 0, 'no <img> element was created');
  }
  // The sender's own message comes back from the server, stamped, once.
  assert.equal((await chatEntries(a)).filter((m) => m.text === 'hello from alice').length, 1);
});

test('a third participant joins; a fourth is refused with "Room is full"', async () => {
  pages.carol = await joinPage(browsers.carol, server.url, ROOM, 'carol');
  const c = pages.carol;
  for (const [page, others] of [[pages.alice, ['carol']], [pages.bob, ['carol']], [c, ['alice', 'bob']]]) {
    for (const other of others) {
      await waitFor(async () => (await slot(page, other))?.status === 'PLAYING', `${other} PLAYING`, 20000, page);
    }
  }
  // dave: another page in carol's browser; refused, so it never publishes.
  await expectRoomFull(browsers.carol, server.url, ROOM, 'dave');
  await sleep(1000);
  for (const page of [pages.alice, pages.bob, c]) {
    assert.equal(await slot(page, 'dave'), null, 'no slot for dave');
    assert.ok(!(await chatText(page)).includes('dave'), 'no mention of dave');
    assert.equal(await page.locator('.slot[data-participant]').count(), 2);
    assert.equal(await page.locator('.slot.free').count(), 0, 'room full: no free seat shown');
  }
});

test('a direct message reaches only its recipient (and its sender), marked direct', async () => {
  const [a, b, c] = [pages.alice, pages.bob, pages.carol];
  await sendChat(a, 'just for bob', 'bob');
  const got = await waitFor(async () => (await chatEntries(b)).find((m) => m.text === 'just for bob'), 'direct message at bob', 10000, b);
  assert.deepEqual([got.from, got.to, got.direct], ['alice', 'bob', true]);
  assert.ok(await b.locator('#chat-log .chat-msg.direct').count() >= 1);
  const mine = await waitFor(async () => (await chatEntries(a)).find((m) => m.text === 'just for bob'), 'direct message echoed to alice', 10000, a);
  assert.equal(mine.direct, true);
  // A room message sent after it reaches carol; the direct one never does.
  await sendChat(a, 'for everyone');
  await waitFor(async () => (await chatEntries(c)).some((m) => m.text === 'for everyone'), 'room message at carol', 10000, c);
  assert.ok(!(await chatText(c)).includes('just for bob'), 'carol does not see the direct message');
});

test('screenshot of the room with three participants', async () => {
  const a = pages.alice;
  for (const [other, colour] of [['bob', COLOURS.bob], ['carol', COLOURS.carol]]) {
    await waitFor(async () => colourClose(await sampleVideo(a, remoteVideo(other)), colour), `${other}'s colour in alice's page`, 15000, a);
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, 'room.png');
  const png = await a.screenshot({ path: file, fullPage: true });
  // The picture shows each participant's colour in their tile.
  const tiles = [['alice', '#local-video', COLOURS.alice], ['bob', remoteVideo('bob'), COLOURS.bob], ['carol', remoteVideo('carol'), COLOURS.carol]];
  const shown = await screenshotColours(a, png, tiles.map(([, selector]) => selector));
  tiles.forEach(([who, , colour], i) => assert.ok(colourClose(shown[i], colour), `${who}'s tile in ${file} is ${JSON.stringify(shown[i])}, not ${JSON.stringify(colour)}`));
});

test('mute V: the others see the muted indicator and a black video', async () => {
  const [a, b] = [pages.alice, pages.bob];
  await a.click('#mute-video');
  assert.equal(await a.textContent('#mute-video'), 'Unmute V');
  const shown = await waitFor(async () => {
    const s = await slot(b, 'alice');
    return s?.videoMuted && s.mutedIndicator;
  }, 'muted indicator on alice\'s slot at bob', 10000, b);
  assert.match(shown, /video/);
  assert.doesNotMatch(shown, /audio/);
  await waitFor(async () => colourClose(await sampleVideo(b, remoteVideo('alice')), [0, 0, 0], 30), 'alice\'s video black at bob', 10000, b);
  // Alice stays muted for the next tests: a newcomer must learn it from `state`.
});

test('leave: the others show the seat freed', async () => {
  const c = pages.carol;
  await c.click('#leave');
  assert.equal(await c.textContent('#session-status'), 'DISCONNECTED');
  assert.equal(await c.locator('.slot[data-participant]').count(), 0, 'carol\'s page emptied');
  assert.equal(await c.textContent('#publish-status'), 'UNPUBLISHED');
  for (const page of [pages.alice, pages.bob]) {
    await waitFor(async () => (await slot(page, 'carol')) === null, 'carol\'s slot removed', 10000, page);
    await waitFor(async () => (await page.locator('.slot.free').count()) === 1, 'one free seat', 5000, page);
    assert.match(await page.textContent('#room-info'), /2 of 3/);
    assert.ok((await chatText(page)).includes('carol left'));
  }
  // The remaining two still play each other.
  assert.equal((await slot(pages.alice, 'bob')).status, 'PLAYING');
});

test('rejoin: the newcomer learns the mute state from `state`; unmute reaches everyone', async () => {
  const [a, b, c] = [pages.alice, pages.bob, pages.carol];
  await c.click('#join');
  const seen = await waitFor(async () => {
    const s = await slot(c, 'alice');
    return s?.videoMuted && s.mutedIndicator;
  }, 'alice muted in carol\'s page', 10000, c);
  assert.match(seen, /video/);
  await waitFor(async () => colourClose(await sampleVideo(c, remoteVideo('alice')), [0, 0, 0], 30), 'alice black at carol', 15000, c);
  await a.click('#mute-video');
  assert.equal(await a.textContent('#mute-video'), 'Mute V');
  for (const page of [b, c]) {
    await waitFor(async () => (await slot(page, 'alice'))?.mutedIndicator === null, 'indicator gone', 10000, page);
    await waitFor(async () => colourClose(await sampleVideo(page, remoteVideo('alice')), COLOURS.alice), 'alice red again', 10000, page);
  }
});

test('Stop/Play a remote stream, audio toggle, and Stop/Publish the own stream', async () => {
  const [a, b] = [pages.alice, pages.bob];
  const bobSlot = '.slot[data-participant="bob"]';
  // alice stops playing bob: STOPPED, bob's publisher side closes the session.
  const bobSessions = () => b.evaluate(() => window.room.pcs.publish.size);
  const before = await bobSessions();
  await a.click(`${bobSlot} .play-toggle`);
  await waitFor(async () => (await slot(a, 'bob'))?.status === 'STOPPED', 'bob STOPPED at alice', 5000, a);
  assert.equal((await slot(a, 'bob')).playLabel, 'Play');
  await waitFor(async () => (await bobSessions()) === before - 1, 'bob closed the session', 5000, b);
  await a.click(`${bobSlot} .play-toggle`);
  await waitFor(async () => (await slot(a, 'bob'))?.status === 'PLAYING', 'bob PLAYING again at alice', 15000, a);
  await waitFor(async () => colourClose(await sampleVideo(a, remoteVideo('bob')), COLOURS.bob), 'bob blue again', 10000, a);
  // The audio toggle mutes only the local playback.
  assert.equal(await a.evaluate((s) => document.querySelector(`${s} video`).muted, bobSlot), false);
  await a.click(`${bobSlot} .audio-toggle`);
  assert.equal(await a.evaluate((s) => document.querySelector(`${s} video`).muted, bobSlot), true);
  assert.equal(await a.textContent(`${bobSlot} .audio-toggle`), 'Audio off');
  await a.click(`${bobSlot} .audio-toggle`);
  assert.equal(await a.evaluate((s) => document.querySelector(`${s} video`).muted, bobSlot), false);
  // bob stops publishing: UNPUBLISHED; alice's slot stays but shows STOPPED, Play disabled.
  await b.click('#publish-toggle');
  assert.equal(await b.textContent('#publish-status'), 'UNPUBLISHED');
  await waitFor(async () => (await slot(a, 'bob'))?.status === 'STOPPED', 'bob STOPPED after unpublish', 5000, a);
  await waitFor(() => a.locator(`${bobSlot} .play-toggle`).isDisabled(), 'Play disabled without a stream', 5000, a);
  assert.equal(await a.textContent(`${bobSlot} .stream-name`), 'not publishing');
  // bob publishes again: alice plays it automatically.
  await b.click('#publish-toggle');
  await waitFor(async () => (await b.textContent('#publish-status')) === 'PUBLISHING', 'bob PUBLISHING', 10000, b);
  await waitFor(async () => (await slot(a, 'bob'))?.status === 'PLAYING', 'bob PLAYING after republish', 15000, a);
  await waitFor(async () => colourClose(await sampleVideo(a, remoteVideo('bob')), COLOURS.bob), 'bob blue after republish', 10000, a);
});
