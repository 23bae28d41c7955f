// The browser paths of `gst-room bench latency` (issue 27): glass-to-glass latency from a
// publisher to a viewer where either side is a Chromium page, in mesh and SFU rooms, with
// Chromium's plain RTCPeerConnection loopback as the anchor. Run by `gst-room bench latency
// --path gst-browser,browser-gst,browser-browser` (which generates the Y4M camera and passes
// this script its binary as GST_ROOM_BIN); prints JSON sample lines for it on stdout:
//   {"figure":"displayed_gst-browser_sfu","samples":[ms…],"anchor":"loopback"}
//   {"anchor":"loopback","samples":[ms…]}
// and its progress on stderr. A plain script, not a node:test file.
//
// Every frame carries a code: 32 black/white blocks in two rows of 20 at the top (a 16-bit
// number and its complement; the Rust side, bench/src/latency/code.rs, draws and reads the same).
//   - gst publisher: `gst-room bench latency-peer publish` prints `stamp N MS` per frame.
//   - Chromium publisher: its fake camera plays the Y4M whose frame n carries n (looping); the
//     page's own preview of the camera reads each frame's code in requestVideoFrameCallback and
//     notes its captureTime (the camera's timestamp; presentationTime where Chromium gives none).
//   - gst viewer: `gst-room bench latency-peer view` prints `shown N MS` (fakesink sync=true).
//   - Chromium viewer: the remote <video> of the publisher, read the same way; the time noted is
//     the frame's expectedDisplayTime.
// All times are wall-clock ms of this host (page: performance.timeOrigin + performance.now()).
// A shown code is matched with the latest capture of that code before it (codes of the
// Chromium camera repeat every --camera-frames frames; a match older than half of that loop
// counts as unmatched, as do unreadable codes).

import { launchBrowser, poll, runScript, serverBinary, sleep, startProcess, startServer } from './harness.mjs';

const PUBLISHER = 'pub';
const VIEWER = 'view';

function parseArgs(argv) {
  const opts = {
    paths: ['gst-browser', 'browser-gst', 'browser-browser'],
    media: ['mesh'],
    runs: 300,
    warmup: 60,
    timeout: 40,
    camera: null,
    'camera-frames': 150,
    'camera-fps': 30,
    anchor: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const [key, inline] = argv[i].startsWith('--') ? argv[i].slice(2).split('=', 2) : [null];
    if (key === 'no-anchor') {
      opts.anchor = false;
      continue;
    }
    if (!key || !(key in opts)) throw new Error(`unknown argument ${argv[i]}`);
    const value = inline ?? argv[++i];
    if (key === 'paths' || key === 'media') opts[key] = value.split(',');
    else if (key === 'camera') opts.camera = value;
    else opts[key] = Number(value);
  }
  if (!opts.camera) throw new Error('--camera FILE.y4m is needed (gst-room bench latency writes one)');
  return opts;
}

// ---------------------------------------------------------------------------------------------
// In the page (serialised by addInitScript: no closure over this module)

function latencyHook({ participant }) {
  const lat = { captured: [], shown: [], captureTimes: 0 };
  window.__lat = lat;
  const wall = (t) => performance.timeOrigin + t;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });

  /** The code of the frame `video` shows now (see bench/src/latency/code.rs), or null. */
  function readCode(video, width, height) {
    const COLUMNS = 20;
    const block = Math.floor(width / COLUMNS);
    if (block < 4) return null;
    canvas.width = width;
    canvas.height = 2 * block;
    ctx.drawImage(video, 0, 0, width, height);
    const { data } = ctx.getImageData(0, 0, width, 2 * block);
    const inset = Math.floor(block / 4);
    const side = Math.floor(block / 2);
    let code = 0;
    for (let i = 0; i < 32; i++) {
      const x0 = (i % COLUMNS) * block + inset;
      const y0 = Math.floor(i / COLUMNS) * block + inset;
      let sum = 0;
      for (let y = y0; y < y0 + side; y++) {
        for (let x = x0; x < x0 + side; x++) {
          const p = (y * width + x) * 4;
          sum += 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
        }
      }
      code = code * 2 + (sum / (side * side) > 128 ? 1 : 0);
    }
    const number = Math.floor(code / 65536);
    const check = code % 65536;
    return (number ^ check) === 0xffff ? number : null;
  }

  function watch(video, kind) {
    const onFrame = (_now, meta) => {
      const code = readCode(video, meta.width, meta.height);
      if (kind === 'captured') {
        if (meta.captureTime !== undefined) lat.captureTimes++;
        if (code !== null) lat.captured.push([code, wall(meta.captureTime ?? meta.presentationTime)]);
      } else {
        lat.shown.push([code, wall(meta.expectedDisplayTime)]);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // The page's own preview of its camera (#local-video), the publisher's slot on a viewer's
  // page, and the loopback anchor's two videos (data-latency) are watched from the moment they
  // get their stream.
  const srcObject = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    ...srcObject,
    set(value) {
      srcObject.set.call(this, value);
      if (!value || this.__latWatched || !(this instanceof HTMLVideoElement)) return;
      let kind = this.dataset.latency;
      if (!kind && this.id === 'local-video') kind = 'captured';
      if (!kind && this.closest(`.slot[data-participant="${participant}"]`)) kind = 'shown';
      if (!kind) return;
      this.__latWatched = true;
      watch(this, kind);
    },
  });

  /** The anchor: camera → RTCPeerConnection → RTCPeerConnection → <video>, in this page. */
  window.__latLoopback = async ({ width, height, fps }) => {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: fps } },
    });
    const video = (kind) => {
      const v = document.createElement('video');
      v.muted = true;
      v.autoplay = true;
      v.playsInline = true;
      v.dataset.latency = kind;
      document.body.append(v);
      return v;
    };
    const local = video('captured');
    local.srcObject = stream;
    const remote = video('shown');
    const [pc1, pc2] = [new RTCPeerConnection(), new RTCPeerConnection()];
    pc1.onicecandidate = (e) => e.candidate && pc2.addIceCandidate(e.candidate);
    pc2.onicecandidate = (e) => e.candidate && pc1.addIceCandidate(e.candidate);
    pc2.ontrack = (e) => {
      remote.srcObject = new MediaStream([e.track]);
    };
    for (const track of stream.getTracks()) pc1.addTrack(track, stream);
    await pc1.setLocalDescription(await pc1.createOffer());
    await pc2.setRemoteDescription(pc1.localDescription);
    await pc2.setLocalDescription(await pc2.createAnswer());
    await pc1.setRemoteDescription(pc2.localDescription);
    window.__latPcs = [pc1, pc2];
  };
}

// ---------------------------------------------------------------------------------------------
// Matching

/**
 * Latencies (ms) of the shown frames after the first `warmup`, each against the latest capture
 * of its code before it. Returns {samples, unreadable, unmatched}.
 */
function match(captures, shows, warmup, loopMs) {
  const byCode = new Map();
  for (const [code, t] of captures) {
    if (!byCode.has(code)) byCode.set(code, []);
    byCode.get(code).push(t);
  }
  for (const times of byCode.values()) times.sort((a, b) => a - b);
  const samples = [];
  let unreadable = 0;
  let unmatched = 0;
  for (const [code, t] of shows.slice(warmup)) {
    if (code === null) {
      unreadable++;
      continue;
    }
    const times = byCode.get(code) ?? [];
    let captured = null;
    for (const tc of times) if (tc <= t + 0.5) captured = tc;
    if (captured === null || t - captured > loopMs / 2) unmatched++;
    else samples.push(t - captured);
  }
  return { samples, unreadable, unmatched };
}

// ---------------------------------------------------------------------------------------------
// Sides

async function openWatchedPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript(latencyHook, { participant: PUBLISHER });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  await page.goto(url);
  return { page, close: () => context.close().catch(() => {}) };
}

function roomUrl(server, room, user, extra) {
  const query = new URLSearchParams({ room, user, autojoin: '1', processing: '0', audio: '0', ...extra });
  return `${server.url}/?${query}`;
}

/** A gst side (`gst-room bench latency-peer ROLE`); its stamp/shown lines go into `into`. */
function gstPeer(role, server, room, username, into) {
  const args = ['bench', 'latency-peer', role, '--url', server.wsUrl, '--room', room, '--username', username, '--participant', PUBLISHER];
  return startProcess(serverBinary(), args, {
    name: `gst ${role}`,
    ready: /^ready$/,
    stdin: true,
    readyTimeout: 40000,
    env: { RUST_LOG: 'warn' },
    onStdoutLine: (line) => {
      const m = /^(stamp|shown) (\d+) ([\d.]+)$/.exec(line);
      if (m) into.push([Number(m[2]), Number(m[3])]);
      const u = /^unreadable ([\d.]+)$/.exec(line);
      if (u) into.push([null, Number(u[1])]);
    },
  });
}

/** Measures one path in one room; returns the matched latencies (ms). */
async function measurePath(path, media, server, browsers, opts) {
  const [from, to] = path.split('-');
  const room = `latency-${path}-${media}`;
  const captures = [];
  const shows = [];
  const ends = [];
  const loopMs = (opts['camera-frames'] * 1000) / opts['camera-fps'];
  try {
    let pubPage = null;
    if (from === 'gst') {
      const p = await gstPeer('publish', server, room, PUBLISHER, captures);
      ends.push(p.stop);
    } else {
      const fps = opts['camera-fps'];
      const side = await openWatchedPage(browsers.camera, roomUrl(server, room, PUBLISHER, { w: 320, h: 240, fps }));
      ends.push(side.close);
      pubPage = side.page;
      await poll(() => pubPage.evaluate(() => window.room.state.publish === 'PUBLISHING'), { timeout: 20000, what: 'the page publishing' });
    }
    let viewPage = null;
    if (to === 'gst') {
      const v = await gstPeer('view', server, room, VIEWER, shows);
      ends.push(v.stop);
    } else {
      const side = await openWatchedPage(browsers.viewer, roomUrl(server, room, VIEWER, { publish: '0' }));
      ends.push(side.close);
      viewPage = side.page;
    }
    const start = Date.now();
    let result = match(captures, shows, opts.warmup, loopMs);
    for (;;) {
      if (pubPage) captures.splice(0, captures.length, ...(await pubPage.evaluate(() => window.__lat.captured)));
      if (viewPage) shows.splice(0, shows.length, ...(await viewPage.evaluate(() => window.__lat.shown)));
      result = match(captures, shows, opts.warmup, loopMs);
      if (result.samples.length >= opts.runs) break;
      if (Date.now() - start > opts.timeout * 1000) {
        console.error(`${path} ${media}: fewer than ${opts.runs} samples within ${opts.timeout} s (kept what arrived)`);
        break;
      }
      await sleep(500);
    }
    const captureTimes = pubPage ? await pubPage.evaluate(() => window.__lat.captureTimes) : null;
    console.error(
      `${path} ${media}: ${captures.length} captures, ${shows.length} shown, ${result.samples.length} samples, ` +
        `${result.unreadable} unreadable, ${result.unmatched} unmatched` +
        (captureTimes === null ? '' : ` (publisher frames with a captureTime: ${captureTimes})`),
    );
    return result.samples.slice(0, opts.runs);
  } finally {
    for (const end of ends.reverse()) await end();
  }
}

/** The anchor: Chromium's loopback of its own camera in one page of the camera browser. */
async function loopback(server, browser, opts) {
  const side = await openWatchedPage(browser, `${server.url}/`);
  try {
    await side.page.evaluate((c) => window.__latLoopback(c), { width: 320, height: 240, fps: opts['camera-fps'] });
    const loopMs = (opts['camera-frames'] * 1000) / opts['camera-fps'];
    const start = Date.now();
    for (;;) {
      const { captured, shown } = await side.page.evaluate(() => window.__lat);
      const result = match(captured, shown, opts.warmup, loopMs);
      if (result.samples.length >= opts.runs || Date.now() - start > opts.timeout * 1000) {
        console.error(`loopback anchor: ${captured.length} captures, ${shown.length} shown, ${result.samples.length} samples, ${result.unreadable} unreadable, ${result.unmatched} unmatched`);
        return result.samples.slice(0, opts.runs);
      }
      await sleep(500);
    }
  } finally {
    await side.close();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const needsCamera = opts.anchor || opts.paths.some((p) => p.startsWith('browser-'));
  const browsers = {
    camera: needsCamera ? await launchBrowser({ camera: opts.camera }) : null,
    viewer: opts.paths.some((p) => p.endsWith('-browser')) ? await launchBrowser() : null,
  };
  for (const media of opts.media) {
    const server = await startServer({ maxParticipants: 8, args: ['--media', media], env: { RUST_LOG: 'warn' } });
    try {
      for (const path of opts.paths) {
        try {
          const samples = await measurePath(path, media, server, browsers, opts);
          const figure = `displayed_${path}${media === 'sfu' ? '_sfu' : ''}`;
          console.log(JSON.stringify({ figure, samples, anchor: opts.anchor ? 'loopback' : null }));
        } catch (e) {
          console.error(`${path} ${media}: failed: ${e.message}`);
        }
      }
      if (opts.anchor && media === opts.media[0]) {
        console.log(JSON.stringify({ anchor: 'loopback', samples: await loopback(server, browsers.camera, opts) }));
      }
    } finally {
      await server.stop();
    }
  }
}

await runScript('bench-latency', main);
