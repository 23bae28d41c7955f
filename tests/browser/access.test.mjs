// Who may join, and from where, in real Chromium against real servers: an access token in the
// link's #fragment joins (and never reaches a request or the server's trace-level log), a token
// without the publish grant is refused publishing and the page says why, a token for another
// room is refused plainly, a link naming another server never joins or opens the camera
// before a click and names that server, that server's Origin rule holds for a real browser, and
// the page works under its Content-Security-Policy and cannot be framed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { TEST_MEDIA, cleanup, launchBrowser, serverBinary, slot, startServer, waitFor } from './harness.mjs';

const SECRET = 'browser-access-test-secret-32byte';
const ROOM = 'access-suite';

let server; // token-protected, logging at trace level
let browser;

/** A token from `gst-room token` (the real command). */
function mint(room, username, ...flags) {
  return execFileSync(serverBinary(), ['token', '--room', room, '--username', username, '--ttl', '10m', ...flags], {
    env: { ...process.env, GST_ROOM_TOKEN_SECRET: SECRET },
    encoding: 'utf8',
  }).trim();
}

/**
 * A new page that records every request the browser makes (URL and headers), every WebSocket
 * the page opens, and every getUserMedia call, from before the page's own script runs.
 */
async function instrumentedPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.problems = [];
  page.console = [];
  page.requests = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    page.console.push(m.text());
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}`);
  });
  // A request still in flight when its page closes has no headers to read any more: its URL is
  // kept (the headers' promise rejecting would be an unhandled rejection failing the file).
  page.on('request', async (r) => {
    const headers = await r.allHeaders().catch(() => '(page closed)');
    page.requests.push(`${r.url()} ${JSON.stringify(headers)}`);
  });
  await page.addInitScript(() => {
    window.__opened = { websockets: [], getUserMedia: 0 };
    const NativeWebSocket = window.WebSocket;
    window.WebSocket = function (url, ...rest) {
      window.__opened.websockets.push(String(url));
      return new NativeWebSocket(url, ...rest);
    };
    window.WebSocket.prototype = NativeWebSocket.prototype;
    Object.assign(window.WebSocket, { OPEN: 1, CLOSED: 3, CONNECTING: 0, CLOSING: 2 });
    const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (c) => {
      window.__opened.getUserMedia += 1;
      return gum(c);
    };
  });
  return page;
}

function query(params) {
  return new URLSearchParams(Object.entries({ ...TEST_MEDIA, ...params }).map(([k, v]) => [k, String(v)]));
}

const status = (page) => page.evaluate(() => ({
  session: document.getElementById('session-status').textContent,
  failure: document.getElementById('failure').textContent,
  publish: document.getElementById('publish-status').textContent,
  joined: window.room.state.joined,
}));

before(async () => {
  server = await startServer({ args: ['--token-secret', SECRET], env: { RUST_LOG: 'trace' } });
  browser = await launchBrowser();
});

after(cleanup);

test('a token in #token= joins, leaves the address bar, and reaches no request and no server log', async () => {
  const token = mint(ROOM, 'alice');
  const page = await instrumentedPage();
  await page.goto(`${server.url}/?${query({ room: ROOM, user: 'alice', autojoin: 1 })}#token=${token}`);
  await waitFor(async () => (await status(page)).publish === 'PUBLISHING', 'alice joined and publishing', 20000, page);
  assert.ok(!page.url().includes(token), `the address bar keeps no token: ${page.url()}`);
  assert.ok(!page.url().includes('#token'), page.url());
  assert.deepEqual(page.problems, [], 'the page runs under its CSP without errors');
  for (const request of page.requests) assert.ok(!request.includes(token), `a request carried the token: ${request}`);
  // The join went over the WebSocket (the only place the token goes); the server ran with
  // RUST_LOG=trace all the while (the WebSocket crates capped at debug: their trace dumps
  // frames), and wrote the token down nowhere, not even hex-encoded.
  const log = server.proc.output();
  assert.match(log, /DEBUG/, 'the server really logs below info');
  const hex = Buffer.from(token).toString('hex');
  const signature = token.split('.')[2];
  assert.ok(!log.includes(token) && !log.includes(signature), 'token in the server log');
  assert.ok(!log.includes(hex.slice(0, 64)), 'hex-encoded token in the server log');
  await page.context().close();
});

test('a token without the publish grant joins and watches, publishing is refused and the page says why', async () => {
  const alice = await instrumentedPage();
  await alice.goto(`${server.url}/?${query({ room: `${ROOM}-grants`, user: 'alice', autojoin: 1 })}#token=${mint(`${ROOM}-grants`, 'alice')}`);
  await waitFor(async () => (await status(alice)).publish === 'PUBLISHING', 'alice publishing', 20000, alice);

  const bob = await instrumentedPage();
  const viewerToken = mint(`${ROOM}-grants`, 'bob', '--no-publish', '--no-chat');
  await bob.goto(`${server.url}/?${query({ room: `${ROOM}-grants`, user: 'bob', autojoin: 1 })}#token=${viewerToken}`);
  const refused = await waitFor(
    async () => {
      const s = await status(bob);
      return s.publish.startsWith('FAILED') && s;
    },
    'bob refused publishing',
    20000,
    bob,
  );
  assert.match(refused.publish, /FAILED: your token does not allow you to publish/);
  assert.equal(refused.joined, true);
  // Subscribing is granted: bob plays alice.
  await waitFor(async () => (await slot(bob, 'alice'))?.status === 'PLAYING', 'bob plays alice', 20000, bob);
  // Alice never sees a stream from bob.
  await waitFor(async () => (await slot(alice, 'bob'))?.name === 'bob', 'alice sees bob', 10000, alice);
  assert.equal(await alice.evaluate(() => window.room.state.remotes.find((r) => r.username === 'bob').streams.length), 0);
  // Chat is not granted either: refused with the reason, and alice gets nothing.
  await bob.fill('#chat-text', 'hello?');
  await bob.click('#chat-send');
  await waitFor(() => bob.evaluate(() => /does not allow you to chat/.test(document.getElementById('notice').textContent)), 'chat refusal shown', 10000, bob);
  assert.equal(await alice.locator('.chat-msg').count(), 0);
  await alice.context().close();
  await bob.context().close();
});

test('a token for another room is refused, in plain words', async () => {
  const page = await instrumentedPage();
  const token = mint('some-other-room', 'carol');
  await page.goto(`${server.url}/?${query({ room: ROOM, user: 'carol', autojoin: 1 })}#token=${token}`);
  const s = await waitFor(async () => {
    const s = await status(page);
    return s.session === 'FAILED' && s;
  }, 'carol refused', 10000, page);
  assert.match(s.failure, /^Not authorized: the token is for room some-other-room, not access-suite/);
  assert.equal(s.joined, false);
  assert.equal(await page.evaluate(() => window.__opened.getUserMedia), 0, 'no camera for a refused join');
  await page.context().close();
});

test('a token in the query string is ignored, with a notice, and the join is refused', async () => {
  const token = mint(ROOM, 'erin');
  const page = await instrumentedPage();
  await page.goto(`${server.url}/?${query({ room: ROOM, user: 'erin', autojoin: 1, token })}`);
  const s = await waitFor(async () => {
    const s = await status(page);
    return s.session === 'FAILED' && s;
  }, 'erin refused', 10000, page);
  assert.match(s.failure, /^Not authorized: this server needs a token/);
  assert.match(await page.textContent('#notice'), /token in the address \(\?token=\) was ignored/);
  await page.context().close();
});

test('a link naming another server joins nothing before a click, names that server, and joins it after the click', async () => {
  // The other server accepts this page's origin; a third one does not.
  const other = await startServer({ args: ['--allow-origin', server.url] });
  const closed = await startServer();
  const otherHost = new URL(other.url).host;
  const page = await instrumentedPage();
  await page.goto(`${server.url}/?${query({ room: 'elsewhere', user: 'dave', autojoin: 1, server: other.wsUrl })}`);
  const notice = await page.textContent('#server-notice');
  assert.ok(await page.isVisible('#server-notice'));
  assert.match(notice, new RegExp(`another server: ${otherHost}\\. Joining sends your camera and microphone to ${otherHost}`));
  assert.equal(await page.textContent('#join'), `Join ${otherHost}`);
  // autojoin=1 was ignored: autojoin would have opened the WebSocket synchronously at load.
  await page.waitForLoadState('load');
  assert.deepEqual(await page.evaluate(() => window.__opened), { websockets: [], getUserMedia: 0 });
  assert.deepEqual(await status(page), { session: 'DISCONNECTED', failure: '', publish: 'UNPUBLISHED', joined: false });

  await page.click('#join');
  await waitFor(async () => (await status(page)).publish === 'PUBLISHING', 'dave publishing on the other server', 20000, page);
  assert.deepEqual(await page.evaluate(() => window.__opened), { websockets: [other.wsUrl], getUserMedia: 1 });
  await page.click('#leave');

  // A server that does not list this page's origin refuses the browser (403 on /ws).
  await page.fill('#server-url', closed.wsUrl);
  assert.match(await page.textContent('#server-notice'), new RegExp(new URL(closed.url).host));
  await page.click('#join');
  const s = await waitFor(async () => {
    const s = await status(page);
    return s.session === 'FAILED' && s;
  }, 'refused by the closed server', 10000, page);
  assert.match(s.failure, /Cannot connect/);
  assert.match(closed.proc.output(), /refused a WebSocket: Origin "http:\/\/127\.0\.0\.1:\d+" may not/);
  await page.context().close();
});

test('the page cannot be framed by another site', async () => {
  const page = await instrumentedPage();
  await page.setContent(`<iframe id="f" src="${server.url}/"></iframe>`);
  await waitFor(() => page.console.some((t) => /frame-ancestors 'none'/.test(t)), 'a frame-ancestors refusal', 10000);
  const framed = page.frames().find((f) => f.url().startsWith(server.url));
  const joinButton = framed ? await framed.$('#join').catch(() => null) : null;
  assert.equal(joinButton, null, 'no Join button inside a frame');
  await page.context().close();
});
