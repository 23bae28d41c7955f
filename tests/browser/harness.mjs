// Test harness for the browser tests: the real gst-room server, Debian Chromium with fake media,
// generated Y4M cameras, and cleanup of all of it even when a test fails.
//
// Everything started here is registered in `running`; `cleanup()` (call it from `after`) ends it
// in reverse order. Adding another subprocess (e.g. a gst-launch-1.0 pipeline) is one call:
//   const gst = await startProcess('gst-launch-1.0', ['-e', ...pipeline], { name: 'publisher' });
//   ...; await gst.stop();
// with `ready: /pattern/` to wait for a line on stdout/stderr first.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository root: the nearest parent folder with a workspace Cargo.toml. */
export function repoRoot() {
  let dir = here;
  for (;;) {
    const manifest = path.join(dir, 'Cargo.toml');
    if (fs.existsSync(manifest) && /^\[workspace\]/m.test(fs.readFileSync(manifest, 'utf8'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no workspace Cargo.toml above ${here}`);
    dir = parent;
  }
}

export const ROOT = repoRoot();
export const WEB_DIR = path.join(ROOT, 'signaling', 'web');
export const ARTIFACTS = path.join(ROOT, 'target', 'browser-artifacts');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** A colour `[r, g, b]` as GStreamer's videotestsrc `foreground-color` takes it (`0xAARRGGBB`). */
export const argb = ([r, g, b]) => `0xff${[r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;

/** Chromium flags: fake media, no sandbox (root), and nothing that reaches for the network. */
export const CHROMIUM_FLAGS = [
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Remote videos start with sound and without a click, as the page expects.
  '--autoplay-policy=no-user-gesture-required',
];

const running = [];

export function track(name, stop) {
  const entry = { name, stop };
  running.push(entry);
  return () => {
    const i = running.indexOf(entry);
    if (i >= 0) running.splice(i, 1);
    return stop();
  };
}

/** Ends everything the harness started, newest first. Never throws. */
export async function cleanup() {
  while (running.length) {
    const { name, stop } = running.pop();
    try {
      await stop();
    } catch (e) {
      console.error(`cleanup of ${name} failed:`, e);
    }
  }
}

// Last resort when the runner exits without running `after` (e.g. an uncaught error).
process.on('exit', () => {
  for (const { kill } of running) kill?.();
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` (sync or async) every `interval` ms until it returns a truthy value, and returns
 * that value. On timeout throws, naming `what` and the last value (or error) seen.
 */
export async function poll(fn, { timeout = 15000, interval = 250, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${seen}`);
    }
    await sleep(interval);
  }
}

/**
 * Starts a subprocess, keeps its output (`proc.output()`), optionally waits for a line matching
 * `ready` (returns the match as `proc.ready`), and registers it for cleanup.
 */
export async function startProcess(
  cmd,
  args,
  { name = path.basename(cmd), ready, readyTimeout = 30000, env, cwd = ROOT, stdin = false, stopSignal = 'SIGTERM', stopTimeout = 3000, beforeStop, onStdoutLine } = {},
) {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  // A child that exits while we write to its stdin must not crash the test runner.
  child.stdin?.on('error', () => {});
  let output = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (err) => {
      exited = { code: null, signal: null, error: err };
      resolve(exited);
    });
  });
  let onLine = () => {};
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      output += chunk;
      if (output.length > 1_000_000) output = output.slice(-500_000);
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const line of lines) {
        if (stream === child.stdout) onStdoutLine?.(line);
        onLine(line);
      }
    });
  }
  const stop = async () => {
    if (exited) return exited;
    beforeStop?.(child);
    child.kill(stopSignal);
    const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeout);
    const result = await exitPromise;
    clearTimeout(timer);
    return result;
  };
  const untrack = track(name, stop);
  running[running.length - 1].kill = () => exited || child.kill('SIGKILL');
  const proc = {
    name,
    child,
    output: () => output,
    exited: () => exited,
    stop: untrack,
    ready: null,
  };
  if (ready) {
    proc.ready = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${name} printed nothing matching ${ready} within ${readyTimeout} ms; output:\n${output}`));
      }, readyTimeout);
      onLine = (line) => {
        const m = line.match(ready);
        if (m) {
          clearTimeout(timer);
          onLine = () => {};
          resolve(m);
        }
      };
      exitPromise.then((how) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${JSON.stringify(how)}) before it was ready; output:\n${output}`));
      });
    }).catch(async (e) => {
      await untrack();
      throw e;
    });
  }
  return proc;
}

/** The gst-room binary (server and `launch`); a clear error when it has not been built. */
export function serverBinary() {
  const bin = process.env.GST_ROOM_BIN || path.join(ROOT, 'target', 'debug', 'gst-room');
  if (!fs.existsSync(bin)) {
    throw new Error(
      `gst-room binary not found at ${bin}: build it first with ` +
        '`cargo build -p gst-room` (or set GST_ROOM_BIN to a built binary)',
    );
  }
  return bin;
}

/**
 * Runs `gst-room launch --quiet PIPELINE` (the room elements built in): room events arrive as
 * stdout lines like `sink: joined: alice`, stdin lines are sent as chat through the first
 * roomsink. Resolves once a stdout line matches `ready` (default: the first `in room ...` line,
 * i.e. joined). The returned process also has:
 *   lines        every stdout line so far
 *   mark()       the current line count, for waitForLine({since})
 *   waitForLine(re, {timeout, since})  the first stdout line (at index >= since) matching re
 *   write(text)  one line to stdin (chat; `@name text` for a direct message)
 *   describe()   the output tail, for assertion messages
 *   failure()    null while the pipeline runs, else why not (its error line, or the exit)
 * `stop()` closes stdin, sends SIGINT (EOS, exit 0) and SIGKILL after `stopTimeout` ms; it
 * resolves to {code, signal}. Also stopped at cleanup.
 */
export async function startGstLaunch(pipeline, { name = 'gst-room launch', ready = /: in room /, readyTimeout = 30000, env, stopTimeout = 5000, args = [], wrap } = {}) {
  const bin = serverBinary();
  // `wrap(cmd, args)` → [cmd, args] runs it otherwise (e.g. in a network namespace).
  const [cmd, cmdArgs] = (wrap ?? ((c, a) => [c, a]))(bin, ['launch', '--quiet', ...args, pipeline]);
  const lines = [];
  const waiters = new Set();
  const onStdoutLine = (line) => {
    lines.push(line);
    for (const w of [...waiters]) w(line, lines.length - 1);
  };
  const proc = await startProcess(cmd, cmdArgs, {
    name,
    ready,
    readyTimeout,
    stdin: true,
    stopSignal: 'SIGINT',
    stopTimeout,
    // Close stdin first: `gst-room launch` reads it with tokio's blocking stdin, and a pending
    // read keeps the process alive after Ctrl-C's EOS until a line arrives or stdin closes.
    beforeStop: (child) => child.stdin?.end(),
    onStdoutLine,
    env: { RUST_LOG: process.env.RUST_LOG || 'warn', ...env },
  });
  proc.lines = lines;
  proc.mark = () => lines.length;
  proc.describe = () => `${name} output (tail):\n${proc.output().split('\n').slice(-60).join('\n')}`;
  // Why the pipeline is no longer running, or null: it exited, or it printed its final error
  // (`gst-room: <reason>`; the process may linger after that, see stop()).
  proc.failure = () => {
    const error = proc.output().match(/^gst-room: .*$/m);
    if (error) return error[0];
    return proc.exited() ? `exited ${JSON.stringify(proc.exited())}` : null;
  };
  proc.write = (text) => {
    if (proc.exited()) throw new Error(`${name} has exited (${JSON.stringify(proc.exited())}): cannot write ${JSON.stringify(text)}`);
    proc.child.stdin.write(`${text}\n`);
  };
  proc.waitForLine = (re, { timeout = 15000, since = 0 } = {}) => {
    const found = lines.slice(since).find((l) => re.test(l));
    if (found !== undefined) return Promise.resolve(found.match(re));
    return new Promise((resolve, reject) => {
      const done = (fn, value) => {
        clearTimeout(timer);
        clearInterval(exitCheck);
        waiters.delete(waiter);
        fn(value);
      };
      const waiter = (line, index) => {
        if (index >= since && re.test(line)) done(resolve, line.match(re));
      };
      const timer = setTimeout(() => done(reject, new Error(`${name}: no stdout line matching ${re} within ${timeout} ms\n${proc.describe()}`)), timeout);
      const exitCheck = setInterval(() => {
        if (proc.failure()) done(reject, new Error(`${name} stopped (${proc.failure()}) while waiting for ${re}\n${proc.describe()}`));
      }, 200);
      waiters.add(waiter);
    });
  };
  return proc;
}

/**
 * Starts `gst-room server` on a free port serving signaling/web, with extra `args` and
 * environment `env` (e.g. {RUST_LOG: 'trace'}). Returns {url, wsUrl, proc, stop} where url is
 * like http://127.0.0.1:PORT (no trailing slash); `proc.output()` is its log so far.
 */
export async function startServer({ maxParticipants = 3, args = [], env = {} } = {}) {
  const bin = serverBinary();
  const proc = await startProcess(
    bin,
    ['server', '--listen', '127.0.0.1:0', '--max-participants', String(maxParticipants), '--web-dir', WEB_DIR, ...args],
    { name: 'gst-room server', ready: /listening on (http:\/\/[^\s/]+)/, env: { RUST_LOG: process.env.RUST_LOG || 'info', ...env } },
  );
  const url = proc.ready[1];
  return { url, wsUrl: `${url.replace(/^http/, 'ws')}/ws`, proc, stop: proc.stop };
}

// ---------------------------------------------------------------------------------------------
// Colours and fake cameras

const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));

/** BT.601 limited-range YCbCr of an sRGB colour (what a video pipeline decodes back to RGB). */
export function rgbToYuv([r, g, b]) {
  return [
    clamp(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255),
    clamp(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255),
    clamp(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255),
  ];
}

/**
 * Writes a Y4M file of `frames` frames of one solid colour, for
 * --use-file-for-fake-video-capture. Returns the path.
 */
export function makeY4m(file, rgb, { width = 320, height = 240, fps = 15, frames = 15 } = {}) {
  const [y, u, v] = rgbToYuv(rgb);
  const ySize = width * height;
  const cSize = (width / 2) * (height / 2);
  const frame = Buffer.alloc(6 + ySize + 2 * cSize);
  frame.write('FRAME\n', 0, 'ascii');
  frame.fill(y, 6, 6 + ySize);
  frame.fill(u, 6 + ySize, 6 + ySize + cSize);
  frame.fill(v, 6 + ySize + cSize);
  const header = Buffer.from(`YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`, 'ascii');
  fs.writeFileSync(file, Buffer.concat([header, ...Array(frames).fill(frame)]));
  return file;
}

/** A fresh temporary folder, removed at cleanup. */
export function tempDir(prefix = 'gst-room-browser-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  track(`temp dir ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Browsers and pages

/**
 * Launches Debian Chromium with fake media; `camera` is a Y4M file for the fake camera (each
 * browser has one camera shared by its pages). Closed at cleanup.
 */
export async function launchBrowser({ camera, args = [], executablePath = CHROMIUM } = {}) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
  const flags = [...CHROMIUM_FLAGS, ...args];
  if (camera) flags.push(`--use-file-for-fake-video-capture=${camera}`);
  const browser = await chromium.launch({ executablePath, args: flags, timeout: 30000 });
  const close = track('chromium', () => browser.close());
  browser.closeTracked = close;
  return browser;
}

/** Test-sized media: 320x240@15, no audio processing. */
export const TEST_MEDIA = { w: 320, h: 240, fps: 15, processing: 0 };

/**
 * Opens the conference page in a new context of `browser` with URL parameters `params`
 * (see the top of signaling/web/conference.js). Page errors, console errors (with the resource)
 * and dialogs (alert() etc., dismissed) are kept in `page.problems`.
 */
export async function openPage(browser, baseUrl, params = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}${m.location()?.url ? ` (${m.location().url})` : ''}`);
  });
  page.on('dialog', (d) => {
    page.problems.push(`dialog: ${d.type()} ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  await page.goto(`${baseUrl}/?${query}`);
  return page;
}

/** Opens the page and joins: room, user, plus TEST_MEDIA and autojoin. */
export function joinPage(browser, baseUrl, room, user, extra = {}) {
  return openPage(browser, baseUrl, { room, user, autojoin: 1, ...TEST_MEDIA, ...extra });
}

/** What a remote slot shows, or null when the page has no slot for `user`. */
export function slot(page, user) {
  return page.evaluate((user) => {
    const el = document.querySelector(`.slot[data-participant="${user}"]`);
    if (!el) return null;
    return {
      name: el.querySelector('.name').textContent,
      status: el.querySelector('.stream-status').textContent,
      audioMuted: el.dataset.audioMuted === 'true',
      videoMuted: el.dataset.videoMuted === 'true',
      mutedIndicator: el.querySelector('.muted-indicator').hidden ? null : el.querySelector('.muted-indicator').textContent,
      playLabel: el.querySelector('.play-toggle').textContent,
    };
  }, user);
}

/** inbound-rtp statistics of the session playing `user` ({video, audio} or null). */
export function inboundStats(page, user) {
  return page.evaluate((user) => window.room.inboundStats(user), user);
}

/**
 * Mean colour [r, g, b] of the middle half of the remote video of `user`, read through a
 * canvas; null while the video has no frame.
 */
export function sampleVideo(page, selector) {
  return page.evaluate((selector) => {
    const video = document.querySelector(selector);
    if (!video || video.readyState < 2 || !video.videoWidth) return null;
    const w = video.videoWidth;
    const h = video.videoHeight;
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, w, h);
    const data = ctx.getImageData(Math.floor(w / 4), Math.floor(h / 4), Math.floor(w / 2), Math.floor(h / 2)).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < data.length; i += 4) {
      sum[0] += data[i];
      sum[1] += data[i + 1];
      sum[2] += data[i + 2];
    }
    const n = data.length / 4;
    return sum.map((s) => Math.round(s / n));
  }, selector);
}

export const remoteVideo = (user) => `.slot[data-participant="${user}"] video`;

/** True when every channel of `a` is within `tolerance` of `b`. */
export function colourClose(a, b, tolerance = 40) {
  return !!a && a.every((v, i) => Math.abs(v - b[i]) <= tolerance);
}

/**
 * Mean colour [r, g, b] of the middle half of each element of `selectors` in `png`, a full-page
 * screenshot of `page`: what the picture people look at shows there, not what the video
 * element decodes. The page itself decodes the PNG (no image library in the tests).
 */
export async function screenshotColours(page, png, selectors) {
  const boxes = [];
  for (const selector of selectors) {
    const box = await page.locator(selector).boundingBox();
    assert.ok(box, `${selector} is on the page`);
    boxes.push(box);
  }
  return page.evaluate(async ({ data, boxes }) => {
    // createImageBitmap, not an <img> with a data: URL, which the page's CSP refuses.
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const image = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(image, 0, 0);
    // Bounding boxes are in CSS pixels of the viewport; the full-page PNG is in device pixels
    // of the page.
    const scale = window.devicePixelRatio;
    return boxes.map((b) => {
      const x = Math.round((b.x + window.scrollX + b.width / 4) * scale);
      const y = Math.round((b.y + window.scrollY + b.height / 4) * scale);
      const w = Math.max(1, Math.round((b.width / 2) * scale));
      const h = Math.max(1, Math.round((b.height / 2) * scale));
      const pixels = ctx.getImageData(x, y, w, h).data;
      const sum = [0, 0, 0];
      for (let i = 0; i < pixels.length; i += 4) {
        sum[0] += pixels[i];
        sum[1] += pixels[i + 1];
        sum[2] += pixels[i + 2];
      }
      return sum.map((v) => Math.round(v / (pixels.length / 4)));
    });
  }, { data: png.toString('base64'), boxes });
}

/** The text of the page's chat log. */
export function chatText(page) {
  return page.evaluate(() => document.getElementById('chat-log').textContent);
}

/** Diagnostics for a failed assertion: page problems and the last protocol messages. */
export async function describePage(page) {
  try {
    const state = await page.evaluate(() => ({ state: window.room?.state, log: window.room?.log.slice(-30) }));
    return JSON.stringify({ problems: page.problems, ...state }, null, 1);
  } catch (e) {
    return `(page not readable: ${e.message})`;
  }
}

/** Polls `fn`; on timeout the error carries the pages' state and protocol log. */
export async function waitFor(fn, what, timeout = 20000, ...debugPages) {
  try {
    return await poll(fn, { what, timeout });
  } catch (e) {
    const details = await Promise.all(debugPages.map((p) => describePage(p)));
    e.message += `\n${details.join('\n')}`;
    throw e;
  }
}

/** Sends a chat message from the page (`to` = '' for the whole room). */
export async function sendChat(page, text, to = '') {
  await page.selectOption('#chat-to', to);
  await page.fill('#chat-text', text);
  await page.click('#chat-send');
}

/** Chat entries of a page: {from, to, direct, text, time}. */
export function chatEntries(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#chat-log .chat-msg')].map((li) => ({
      from: li.querySelector('.from').textContent,
      to: li.dataset.to ?? null,
      direct: li.classList.contains('direct'),
      text: li.querySelector('.text').textContent,
      time: li.querySelector('time').textContent,
    })),
  );
}

// ---------------------------------------------------------------------------------------------
// Frames decoded by a GStreamer pipeline

/**
 * The gst-launch tail that writes each decoded frame, scaled to 4x4 RGB (48 bytes), to
 * `dir/frame-NNNNN.rgb`, keeping the last 5; read back with `newestFrameColour(dir)`.
 */
export function rgbFrameSink(dir) {
  return `videoconvert ! videoscale ! video/x-raw,format=RGB,width=4,height=4 ! multifilesink location=${dir}/frame-%05d.rgb max-files=5`;
}

/**
 * Mean colour [r, g, b] and index of the newest frame written by `rgbFrameSink(dir)`:
 * {colour, index}, or null while there is none (or it is being replaced).
 */
export function newestFrameColour(dir) {
  const frames = fs.readdirSync(dir).filter((f) => /^frame-\d+\.rgb$/.test(f)).sort();
  const newest = frames.at(-1);
  if (!newest) return null;
  let data;
  try {
    data = fs.readFileSync(path.join(dir, newest));
  } catch {
    return null; // removed by multifilesink between readdir and read
  }
  if (data.length !== 48) return null;
  const sum = [0, 0, 0];
  for (let i = 0; i < 48; i += 3) for (let c = 0; c < 3; c++) sum[c] += data[i + c];
  return { colour: sum.map((s) => Math.round(s / 16)), index: Number(newest.match(/\d+/)[0]) };
}

/**
 * Opens a page as `user` in a new context of `browser`, asks to join `room`, and checks the
 * server refuses it as full: the page shows FAILED with "Room is full", is not joined and shows
 * no one. Closes the context. Returns nothing; throws (assert) otherwise.
 */
export async function expectRoomFull(browser, baseUrl, room, user) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.problems = [];
    await page.goto(`${baseUrl}/?room=${room}&user=${user}&autojoin=1&w=320&h=240&fps=15&processing=0`);
    const failure = await waitFor(
      () => page.evaluate(() => document.getElementById('session-status').textContent === 'FAILED' && document.getElementById('failure').textContent),
      `${user} refused`,
      10000,
      page,
    );
    assert.match(failure, /Room is full/);
    assert.equal(await page.evaluate(() => window.room.state.joined), false);
    assert.equal(await page.locator('.slot[data-participant]').count(), 0, `${user} sees no one`);
  } finally {
    await context.close();
  }
}

/**
 * Runs `main` as a script named `name` (the benches): whatever it started is cleaned up when
 * it ends, fails (the error printed, exit code 1) or is interrupted (SIGINT/SIGTERM, 130).
 */
export async function runScript(name, main) {
  const interrupted = (signal) => {
    console.error(`${name}: ${signal}, cleaning up`);
    cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', () => interrupted('SIGINT'));
  process.once('SIGTERM', () => interrupted('SIGTERM'));
  let code = 0;
  try {
    await main();
  } catch (e) {
    console.error(`${name}: ${e.stack ?? e.message}`);
    code = 1;
  } finally {
    await cleanup();
  }
  process.exit(code);
}
