// WHEP playback (`POST /whep/{room}/{participant}`) in a real browser: a player page on another
// origin, using the npm `whip-whep` library's WHEPClient, views a gst roomsink's green through
// the server (`--media sfu`); the player is no participant (the room does not see it), and
// DELETE of its resource ends its media session.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { argb, cleanup, colourClose, launchBrowser, startGstLaunch, startServer, track, waitFor } from './harness.mjs';

const ROOM = 'whep';
const GREEN = [40, 180, 60];
const WHEP_JS = path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules', 'whip-whep', 'whep.js');

/** The player page: one video element and `window.view(url)`, which starts a WHEPClient. */
const PLAYER = `<!doctype html><meta charset="utf-8"><title>WHEP player</title>
<video id="v" autoplay muted playsinline></video>
<script type="module">
import { WHEPClient } from './whep.js';
window.view = async (url) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.ontrack = (event) => { document.getElementById('v').srcObject = new MediaStream([event.track]); };
  window.whep = new WHEPClient();
  window.pc = pc;
  await window.whep.view(pc, url);
  return String(window.whep.resourceURL);
};
</script>`;

/** Serves the player page and whep.js on a free port of 127.0.0.1: another origin than the server's. */
async function startPlayerOrigin() {
  const server = http.createServer((req, res) => {
    if (req.url === '/whep.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(fs.readFileSync(WHEP_JS));
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(PLAYER);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  track('player origin', () => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}`;
}

/** The mean colour of the middle of the player's video, or null before it plays. */
function playerColour(page) {
  return page.evaluate(() => {
    const video = document.getElementById('v');
    if (!video || video.readyState < 2 || !video.videoWidth) return null;
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(video, 0, 0);
    const { data } = ctx.getImageData(canvas.width / 4, canvas.height / 4, canvas.width / 2, canvas.height / 2);
    const sum = [0, 0, 0];
    for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += data[i + c];
    return sum.map((s) => Math.round(s / (data.length / 4)));
  });
}

/** The media sessions the server carries, from /healthz. */
async function mediaSessions(server) {
  const text = await (await fetch(`${server.url}/healthz`)).text();
  const m = text.match(/^media sessions: (\d+) \((\d+) connected\)$/m);
  assert.ok(m, text);
  return { sessions: Number(m[1]), connected: Number(m[2]) };
}

let server;
before(async () => {
  server = await startServer({ maxParticipants: 1, args: ['--media', 'sfu', '--media-port', '0'] });
});
after(cleanup);

test('a WHEP player on another origin views a roomsink through the server, without a seat', async () => {
  await startGstLaunch(
    [
      `videotestsrc is-live=true pattern=solid-color foreground-color=${argb(GREEN)}`,
      '! video/x-raw,width=320,height=240,framerate=15/1 ! sink.',
      `roomsink name=sink server-url=${server.wsUrl} room=${ROOM} username=cam`,
    ].join(' '),
    { name: 'cam' },
  );
  const origin = await startPlayerOrigin();
  const browser = await launchBrowser();
  const page = await browser.newPage();
  await page.goto(origin);
  // The room has one seat, taken by cam: the player takes none.
  const resource = await page.evaluate((url) => window.view(url), `${server.url}/whep/${ROOM}/cam`);
  assert.match(resource, new RegExp(`^${server.url}/whep/${ROOM}/cam/main/[0-9a-f]{32}$`));
  await waitFor(async () => colourClose(await playerColour(page), GREEN), 'cam\'s green in the WHEP player', 20000);
  assert.equal((await mediaSessions(server)).sessions, 2, 'cam\'s ingest and the player\'s session');

  // DELETE (WHEPClient.stop) ends the player's session at the server.
  await page.evaluate(() => window.whep.stop());
  await waitFor(async () => (await mediaSessions(server)).sessions === 1, 'the player\'s session gone', 10000);
});
