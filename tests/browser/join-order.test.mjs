// Issue 27: a page that joins a room shows the others without waiting for its own camera. The
// page sends `play` for everyone already publishing as soon as the room state arrives, and the
// remote picture comes in while getUserMedia is still pending; only then does the page publish.
//
// The camera is held back on purpose (an init script makes getUserMedia resolve only after the
// page has presented a remote frame, or after 20 s), so the order below is the page's, not luck:
// `play` sent → first remote frame presented → camera granted → `publish` sent.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, launchBrowser, startGstLaunch, startServer, TEST_MEDIA } from './harness.mjs';

const ROOM = 'join-order';
const PUBLISHER = 'gstbot';

let server;
let browser;

before(async () => {
  server = await startServer();
  const gst = await startGstLaunch(
    [
      'videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      `roomsink name=sink server-url=${server.wsUrl} room=${ROOM} username=${PUBLISHER}`,
    ].join(' '),
    { name: PUBLISHER },
  );
  await gst.waitForLine(/^sink: status: publishing main$/, { timeout: 30000 });
  browser = await launchBrowser();
});

after(cleanup);

/** In the page: notes the order of sent messages, the remote frame and the camera grant. */
function orderHook({ participant }) {
  const events = [];
  window.__order = events;
  const note = (what) => events.push(what);
  let framePresented;
  const presented = new Promise((resolve) => {
    framePresented = resolve;
  });
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    note('camera requested');
    const stream = await gum(constraints);
    await Promise.race([presented, new Promise((r) => setTimeout(r, 20000))]);
    note('camera granted');
    return stream;
  };
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try {
      note(`sent ${JSON.parse(data).type}`);
    } catch {
      /* not ours to judge */
    }
    return send.call(this, data);
  };
  const srcObject = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    ...srcObject,
    set(value) {
      srcObject.set.call(this, value);
      if (!value || this.__watched || !this.closest?.(`.slot[data-participant="${participant}"]`)) return;
      this.__watched = true;
      this.requestVideoFrameCallback(() => {
        note('remote frame');
        framePresented();
      });
    },
  });
}

test('the page plays the others before its camera is granted, and publishes after', async () => {
  const context = await browser.newContext();
  await context.addInitScript(orderHook, { participant: PUBLISHER });
  const page = await context.newPage();
  const query = new URLSearchParams({ room: ROOM, user: 'viewer', autojoin: '1', ...TEST_MEDIA });
  await page.goto(`${server.url}/?${query}`);
  let events = [];
  for (let i = 0; i < 150 && !events.includes('sent publish'); i++) {
    await new Promise((r) => setTimeout(r, 200));
    events = await page.evaluate(() => window.__order);
  }
  const at = (what) => {
    const i = events.indexOf(what);
    assert.ok(i >= 0, `no "${what}" in ${JSON.stringify(events)}`);
    return i;
  };
  assert.ok(at('sent play') < at('remote frame'), JSON.stringify(events));
  assert.ok(at('camera requested') < at('remote frame'), JSON.stringify(events));
  assert.ok(at('remote frame') < at('camera granted'), JSON.stringify(events));
  assert.ok(at('camera granted') < at('sent publish'), JSON.stringify(events));
  await context.close();
});
