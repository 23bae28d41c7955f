// The browser figure of `gst-room bench join` (issue 6): a Chromium page joining a room where a
// GStreamer participant already publishes, from navigation to the first decoded frame.
//
//   node tests/browser/bench-join.mjs [--runs 10] [--warmup 1] [--timeout 30]
//   (or `gst-room bench join --browser [--runs N]`, which runs this script with its own binary)
//
// A plain script, not a node:test file: `node --test` never runs it (no *.test.mjs name).
//
// Setup (not timed): the real `gst-room server` (3 seats), one `gst-room launch` process
// publishing as "gstbot" (roomsink, videotestsrc 640x480@30 with a moving picture + audiotestsrc,
// VP8 + Opus), and one headless Chromium. Each run opens a fresh browser context (empty cache,
// no state), then times `page.goto(/?room=R&user=viewerK&autojoin=1&publish=0)` → the first
// frame of gstbot's video presented by the page's <video> element. The viewer then leaves, and
// the next run starts once gstbot has seen it leave (so the room never fills up).
//
// Method: an init script (runs in the page before its own scripts) wraps WebSocket and
// RTCPeerConnection to note when each step first happens, and registers
// `requestVideoFrameCallback` on gstbot's <video> the moment the page gives it its MediaStream
// (before the offer is even applied). `first_frame` is that callback's `presentationTime` (the
// frame handed to the compositor, i.e. decoded), `t_frame_received` its `receiveTime` (last packet
// of that frame received). Page and Node times are both wall-clock milliseconds (Date.now()) of
// the same machine; every figure is milliseconds after `page.goto` was called.
//
// Anchor (same run, runs alternating with ours): Chromium ↔ Chromium over a plain
// RTCPeerConnection, with a minimal signalling relay in this process (plain HTTP page + a
// WebSocket that forwards every message to the other sockets, TCP_NODELAY). A publisher page with
// the fake camera (video only, 640x480) waits on the relay; each timed run opens a fresh context
// on the relay's viewer page, which says hello, gets the offer, answers, and shows the video.
// The same init script times it: `first_frame` of the anchor is its rVFC presentationTime.
//
// Prints a markdown table and one JSON line per figure, like `gst-room bench`:
//   {"bench":"join-browser","name":"first_frame","unit":"ms","median":…,"p95":…,"p99":…,
//    "runs":10,"anchor":null,"ratio":null}
// Exits non-zero only when something does not work at all (server, publisher or browser does not
// start, or no run ever shows a frame); timing never fails it.

import crypto from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { launchBrowser, runScript, serverBinary, sleep, startGstLaunch, startServer, track } from './harness.mjs';

const ROOM = 'bench-join';
const PUBLISHER = 'gstbot';
// Same picture as `gst-room bench join` (launcher/src/bench/mod.rs PICTURE): the whole frame
// scrolls, so every frame has motion to encode.
const PICTURE = 'pattern=smpte horizontal-speed=4';

/** The figures, in the order of a join: [mark noted in the page, figure name, what it is]. */
const MILESTONES = [
  ['ws_created', 't_script', 'page script ran (it creates the WebSocket; = DOMContentLoaded)'],
  ['load', 't_load', 'page loaded (load event)'],
  ['ws_open', 't_ws_open', 'WebSocket open'],
  ['welcome', 't_welcome', 'server welcome received'],
  ['state', 't_state', 'room state received (joined)'],
  ['session-started', 't_session_started', 'play answered: session started'],
  ['sdp_offer', 't_offer', "gstbot's offer received"],
  ['track_video', 't_track', 'remote video track (ontrack, while applying the offer)'],
  ['answer_sent', 't_answer', 'answer sent'],
  ['ice_connected', 't_ice_connected', 'ICE connected'],
  ['dtls_connected', 't_dtls_connected', 'peer connection connected (DTLS done)'],
  ['frame_received', 't_frame_received', 'first frame received (rVFC receiveTime)'],
  ['first_frame', 'first_frame', 'first frame presented (rVFC presentationTime)'],
];

function parseArgs(argv) {
  const opts = { runs: 10, warmup: 1, timeout: 30, anchor: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--no-anchor') {
      opts.anchor = false;
      continue;
    }
    const [key, inline] = arg.startsWith('--') ? arg.slice(2).split('=', 2) : [null];
    if (key === 'help' || arg === '-h') {
      console.log('usage: node tests/browser/bench-join.mjs [--runs N (10)] [--warmup N (1)] [--timeout SECONDS (30)] [--no-anchor]');
      process.exit(0);
    }
    if (!key || !(key in opts)) throw new Error(`unknown argument ${arg} (try --help)`);
    const value = Number(inline ?? argv[++i]);
    if (!Number.isInteger(value) || value < (key === 'warmup' ? 0 : 1)) throw new Error(`--${key} needs a whole number, got ${inline ?? argv[i]}`);
    opts[key] = value;
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// In the page (serialised by addInitScript: no closure over this module)

function pageHook({ participant }) {
  const marks = {};
  const mark = (name, t = Date.now()) => {
    if (!(name in marks)) marks[name] = t;
  };
  let resolveDone;
  let rejectDone;
  const done = new Promise((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  done.catch(() => {}); // read by the bench; never an unhandled rejection in the page
  const info = {};
  window.__bench = { marks, info, done };

  window.addEventListener('load', () => mark('load'));

  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      mark('ws_created');
      this.addEventListener('open', () => mark('ws_open'));
      this.addEventListener('message', (ev) => {
        const t = Date.now();
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        mark(msg.type === 'sdp' ? `sdp_${msg.description?.type}` : msg.type, t);
        if (msg.type === 'failed') rejectDone(new Error(`join refused: ${ev.data}`));
      });
      this.addEventListener('close', (ev) => rejectDone(new Error(`WebSocket closed (code ${ev.code})`)));
    }

    send(data) {
      try {
        const msg = JSON.parse(data);
        mark(msg.type === 'sdp' ? `${msg.description?.type}_sent` : `sent_${msg.type}`);
      } catch {
        /* not ours to judge */
      }
      return super.send(data);
    }
  };

  const NativePeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePeerConnection {
    constructor(...args) {
      super(...args);
      mark('pc_created');
      this.addEventListener('track', (ev) => mark(`track_${ev.track.kind}`));
      this.addEventListener('iceconnectionstatechange', () => {
        if (['connected', 'completed'].includes(this.iceConnectionState)) mark('ice_connected');
      });
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected') mark('dtls_connected');
        if (this.connectionState === 'failed') rejectDone(new Error('peer connection failed'));
      });
    }
  };

  // The page sets the remote <video>'s srcObject before it applies the offer: register the frame
  // callback right then, so no frame can be missed.
  const srcObject = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    ...srcObject,
    set(value) {
      srcObject.set.call(this, value);
      if (!value || this.__benchWatched || !(this instanceof HTMLVideoElement)) return;
      if (this.id !== 'anchor-video' && !this.closest(`.slot[data-participant="${participant}"]`)) return;
      this.__benchWatched = true;
      mark('video_attached');
      this.addEventListener('playing', () => mark('playing'));
      this.requestVideoFrameCallback((now, meta) => {
        // Same-instant pair of clocks: converts performance.now() times to Date.now() times.
        const wall = Date.now();
        const perf = performance.now();
        const toWall = (t) => wall - (perf - t);
        mark('frame_callback', wall);
        mark('first_frame', toWall(meta.presentationTime));
        if (meta.receiveTime !== undefined) mark('frame_received', toWall(meta.receiveTime));
        Object.assign(info, { width: meta.width, height: meta.height, presentedFrames: meta.presentedFrames });
        resolveDone();
      });
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Statistics and output (same rules as launcher/src/bench/mod.rs)

function percentile(sorted, p) {
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

function summary(samples) {
  const sorted = samples.filter(Number.isFinite).sort((a, b) => a - b);
  if (!sorted.length) return null;
  return { median: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99), n: sorted.length };
}

const round3 = (v) => Math.round(v * 1000) / 1000;

function buildName(bin) {
  if (bin.includes(`${path.sep}release${path.sep}`)) return 'release build';
  if (bin.includes(`${path.sep}debug${path.sep}`)) return 'debug build';
  return bin;
}

const ratio = (f) => (f.anchor ? f.median / f.anchor : null);

function printFigures(bench, figures, build, notes) {
  const cell = (v) => (v === null || v === undefined ? '–' : round3(v).toFixed(3));
  const out = [];
  out.push('', `### gst-room bench ${bench} (${build})`, '');
  out.push('| figure | unit | median | p95 | p99 | runs | anchor | ratio |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const f of figures) {
    out.push(`| ${f.name} | ${f.unit} | ${cell(f.median)} | ${cell(f.p95)} | ${cell(f.p99)} | ${f.runs} | ${cell(f.anchor)} | ${cell(ratio(f))} |`);
  }
  out.push('', ...notes, '');
  for (const f of figures) {
    out.push(
      JSON.stringify({
        bench,
        name: f.name,
        unit: f.unit,
        median: round3(f.median),
        p95: round3(f.p95),
        p99: round3(f.p99),
        runs: f.runs,
        anchor: f.anchor === null || f.anchor === undefined ? null : round3(f.anchor),
        ratio: ratio(f) === null ? null : round3(ratio(f)),
      }),
    );
  }
  console.log(out.join('\n'));
}

// ---------------------------------------------------------------------------------------------
// One join

/**
 * Opens a fresh context, times one join of `user`, leaves, and closes the context. Resolves to
 * {marks (ms after goto), info}; throws when the join does not reach a frame.
 */
async function timeJoin(browser, server, gst, user, timeoutMs) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const problems = [];
  try {
    await context.addInitScript(pageHook, { participant: PUBLISHER });
    const page = await context.newPage();
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.location()?.url?.endsWith('/favicon.ico')) problems.push(`console: ${m.text()}`);
    });
    const query = new URLSearchParams({ room: ROOM, user, autojoin: '1', publish: '0', processing: '0' });
    const url = `${server.url}/?${query}`;
    const since = gst.mark();

    const t0 = Date.now();
    await page.goto(url, { waitUntil: 'commit', timeout: timeoutMs });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no frame of ${PUBLISHER} within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([page.evaluate(() => window.__bench.done), timeout]);
    } catch (e) {
      const state = await page
        .evaluate(() => ({ marks: window.__bench?.marks, state: window.room?.state, log: window.room?.log.slice(-12) }))
        .catch((err) => `(page not readable: ${err.message})`);
      e.message += `\npage: ${JSON.stringify(state)}${problems.length ? `\nproblems: ${problems.join('; ')}` : ''}`;
      throw e;
    } finally {
      clearTimeout(timer);
    }
    // Not timed: what was reached, and a sanity check that frames are really decoded.
    const { marks, info } = await page.evaluate(() => ({ marks: window.__bench.marks, info: window.__bench.info }));
    const stats = await page.evaluate((p) => window.room.inboundStats(p), PUBLISHER);
    info.framesDecoded = stats?.video?.framesDecoded ?? null;
    if (!(info.framesDecoded > 0)) throw new Error(`a frame was presented but getStats shows no decoded video of ${PUBLISHER}: ${JSON.stringify(stats)}`);
    const relative = Object.fromEntries(Object.entries(marks).map(([k, t]) => [k, t - t0]));

    // Leave, and wait until gstbot has seen it (its session ended, the seat free again).
    await page.evaluate(() => window.room.leave());
    await gst.waitForLine(new RegExp(`^sink: left: ${user}$`), { since, timeout: 10000 });
    return { marks: relative, info };
  } finally {
    await context.close().catch(() => {});
  }
}


// ---------------------------------------------------------------------------------------------
// The anchor: plain RTCPeerConnection between two Chromium pages, a minimal relay in between

const ANCHOR_VIEWER_PAGE = `<!doctype html><meta charset="utf-8"><title>anchor viewer</title>
<video id="anchor-video" autoplay playsinline muted></video>
<script>
const ws = new WebSocket('ws://' + location.host + '/ws');
const pc = new RTCPeerConnection();
const video = document.getElementById('anchor-video');
pc.ontrack = (e) => { if (!video.srcObject) video.srcObject = new MediaStream([e.track]); };
pc.onicecandidate = (e) => { if (e.candidate) ws.send(JSON.stringify({ candidate: e.candidate })); };
ws.onopen = () => ws.send(JSON.stringify({ hello: true }));
let chain = Promise.resolve();
ws.onmessage = (ev) => {
  const m = JSON.parse(ev.data);
  chain = chain.then(async () => {
    if (m.offer) {
      await pc.setRemoteDescription(m.offer);
      await pc.setLocalDescription(await pc.createAnswer());
      ws.send(JSON.stringify({ answer: pc.localDescription }));
    } else if (m.candidate) {
      await pc.addIceCandidate(m.candidate);
    }
  });
};
</script>`;

const ANCHOR_PUBLISHER_PAGE = `<!doctype html><meta charset="utf-8"><title>anchor publisher</title>
<script>
window.ready = (async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: false, video: { width: 640, height: 480 } });
  const ws = new WebSocket('ws://' + location.host + '/ws');
  await new Promise((resolve) => { ws.onopen = resolve; });
  let pc = null;
  let chain = Promise.resolve();
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    chain = chain.then(async () => {
      if (m.hello) {
        pc?.close();
        pc = new RTCPeerConnection();
        pc.onicecandidate = (e) => { if (e.candidate) ws.send(JSON.stringify({ candidate: e.candidate })); };
        for (const t of stream.getTracks()) pc.addTrack(t, stream);
        await pc.setLocalDescription(await pc.createOffer());
        ws.send(JSON.stringify({ offer: pc.localDescription }));
      } else if (m.answer) {
        await pc.setRemoteDescription(m.answer);
      } else if (m.candidate) {
        await pc.addIceCandidate(m.candidate);
      }
    });
  };
  return true;
})();
</script>`;

/** One WebSocket text frame (server → client: unmasked). */
function wsFrame(text) {
  const payload = Buffer.from(text);
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x81, n]) : n < 65536 ? Buffer.from([0x81, 126, n >> 8, n & 255]) : null;
  if (!head) throw new Error('relay: message too long');
  return Buffer.concat([head, payload]);
}

/** Splits masked client frames off `buffer`; returns [texts, rest]. Close frames end with null. */
function wsParse(buffer) {
  const texts = [];
  for (;;) {
    if (buffer.length < 2) return [texts, buffer];
    const opcode = buffer[0] & 15;
    let n = buffer[1] & 127;
    let offset = 2;
    if (n === 126) {
      if (buffer.length < 4) return [texts, buffer];
      n = buffer.readUInt16BE(2);
      offset = 4;
    } else if (n === 127) {
      texts.push(null); // never this large here
      return [texts, Buffer.alloc(0)];
    }
    if (buffer.length < offset + 4 + n) return [texts, buffer];
    const mask = buffer.subarray(offset, offset + 4);
    const payload = Buffer.from(buffer.subarray(offset + 4, offset + 4 + n));
    for (let i = 0; i < n; i++) payload[i] ^= mask[i % 4];
    if (opcode === 8) texts.push(null);
    else if (opcode === 1) texts.push(payload.toString());
    buffer = buffer.subarray(offset + 4 + n);
  }
}

/** The anchor's relay: GET / (viewer page), /publisher, and /ws forwarding to every other socket. */
async function startRelay() {
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const body = req.url === '/publisher' ? ANCHOR_PUBLISHER_PAGE : ANCHOR_VIEWER_PAGE;
    res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'no-store' });
    res.end(body);
  });
  server.on('upgrade', (req, socket) => {
    const accept = crypto.createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.setNoDelay(true);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    sockets.add(socket);
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      const [texts, rest] = wsParse(Buffer.concat([pending, chunk]));
      pending = rest;
      for (const text of texts) {
        if (text === null) {
          socket.end();
          return;
        }
        for (const other of sockets) if (other !== socket) other.write(wsFrame(text));
      }
    });
    const gone = () => sockets.delete(socket);
    socket.on('close', gone);
    socket.on('error', gone);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  track('anchor relay', () => {
    for (const s of sockets) s.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return { url };
}

/** Times one anchor join: fresh context on the relay's viewer page → first frame presented. */
async function timeAnchorJoin(browser, relay, timeoutMs) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    await context.addInitScript(pageHook, { participant: PUBLISHER });
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${relay.url}/`, { waitUntil: 'commit', timeout: timeoutMs });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`anchor: no frame within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([page.evaluate(() => window.__bench.done), timeout]);
    } finally {
      clearTimeout(timer);
    }
    const marks = await page.evaluate(() => window.__bench.marks);
    return marks.first_frame - t0;
  } finally {
    await context.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const bin = serverBinary();
  const build = buildName(bin);
  console.error(`join-browser: ${bin} (${build}); ${opts.runs} runs after ${opts.warmup} warm-up`);

  const server = await startServer({ maxParticipants: 3 });
  const gst = await startGstLaunch(
    [
      `videotestsrc is-live=true ${PICTURE} ! video/x-raw,width=640,height=480,framerate=30/1 ! sink.`,
      'audiotestsrc is-live=true volume=0.1 ! sink.',
      `roomsink name=sink server-url=${server.wsUrl} room=${ROOM} username=${PUBLISHER}`,
    ].join(' '),
    { name: PUBLISHER },
  );
  await gst.waitForLine(/^sink: status: publishing main$/, { timeout: 30000 });
  const browser = await launchBrowser();
  console.error(`join-browser: server ${server.url}, ${PUBLISHER} publishing, Chromium ${browser.version()}`);
  let relay = null;
  const anchorSamples = [];
  if (opts.anchor) {
    relay = await startRelay();
    const publisherPage = await (await browser.newContext()).newPage();
    await publisherPage.goto(`${relay.url}/publisher`);
    await publisherPage.evaluate(() => window.ready);
    console.error(`join-browser: anchor relay ${relay.url}, its publisher page has the camera`);
  }

  const samples = Object.fromEntries(MILESTONES.map(([mark]) => [mark, []]));
  let failures = 0;
  let lastInfo = null;
  const total = opts.warmup + opts.runs;
  for (let i = 0; i < total; i++) {
    const warm = i < opts.warmup;
    const label = warm ? `warm-up ${i + 1}` : `run ${i - opts.warmup + 1}`;
    if (gst.failure()) throw new Error(`${PUBLISHER} stopped: ${gst.failure()}\n${gst.describe()}`);
    try {
      const { marks, info } = await timeJoin(browser, server, gst, `viewer${i}`, opts.timeout * 1000);
      lastInfo = info;
      const line = MILESTONES.filter(([m]) => m in marks).map(([m, name]) => `${name.replace(/^t_/, '')} ${marks[m].toFixed(0)}`);
      console.error(`join-browser ${label}: ${line.join(', ')} (${info.width}x${info.height}, ${info.framesDecoded} frames decoded when checked)`);
      if (!warm) for (const [m] of MILESTONES) if (m in marks) samples[m].push(marks[m]);
    } catch (e) {
      if (!warm) failures++;
      console.error(`join-browser ${label}: failed: ${e.message}`);
    }
    // Let the publisher end its session before the next viewer comes (as in `bench join`).
    await sleep(500);
    if (relay) {
      try {
        const t = await timeAnchorJoin(browser, relay, opts.timeout * 1000);
        if (!warm) anchorSamples.push(t);
        console.error(`join-browser ${label} anchor: first_frame ${t.toFixed(0)}`);
      } catch (e) {
        console.error(`join-browser ${label} anchor: failed: ${e.message}`);
      }
      await sleep(500);
    }
  }

  if (!samples.first_frame.length) throw new Error(`no join reached a first frame (${failures} of ${opts.runs} runs failed)`);
  if (failures) console.error(`join-browser: ${failures} of ${opts.runs} runs failed`);

  const figures = [];
  // first_frame first, then the breakdown in order (as `gst-room bench join`).
  for (const [mark, name] of [MILESTONES.at(-1), ...MILESTONES.slice(0, -1)]) {
    const s = summary(samples[mark]);
    if (s) figures.push({ name, unit: 'ms', median: s.median, p95: s.p95, p99: s.p99, runs: s.n });
  }
  figures[0].anchor = summary(anchorSamples)?.median ?? null;
  printFigures('join-browser', figures, build, [
    `Chromium ${browser.version()} (headless), fresh context per run, viewer only (publish=0); ` +
      `${PUBLISHER}: \`gst-room launch\` roomsink, videotestsrc 640x480@30 + audiotestsrc ` +
      `(received ${lastInfo?.width}x${lastInfo?.height}).`,
    'All figures: ms after `page.goto` (fresh context, empty cache). first_frame = ' +
      "requestVideoFrameCallback presentationTime of gstbot's first video frame, registered when the " +
      'page attaches the stream; t_frame_received = its receiveTime; the rest from WebSocket / ' +
      'RTCPeerConnection events in the page.',
    'anchor (first_frame only): Chromium ↔ Chromium over a plain RTCPeerConnection, a minimal ' +
      'WebSocket relay in the bench process, same timing; runs alternate with ours.',
  ]);
}

await runScript('join-browser', main);
