// roomsrc with only some pads linked, against a browser publisher: `gst-launch-1.0 roomsrc
// participant=carol ! videoconvert ! …` (audio left unlinked) and `… ! audioconvert ! …` (video
// left unlinked) keep running and decoding. The pads an application leaves unlinked drop their
// data; they must never stop the pipeline with `not-linked`.
//
// Each case plays carol in several sessions, one after another, with different jitterbuffer
// latencies. The failure this guards against was a race at the start of each session: Chromium
// wraps its video in RED once the answer accepts RED/ULPFEC (webrtcsrc's always did), and
// webrtcbin put the packets that arrived before it had configured its RED decoder — the first
// `latency` of them, as they wait in the jitterbuffer — on a pad of their own with RED caps.
// webrtcsrc decoded that pad; decodebin3 left its output unlinked and not-linked stopped the
// pipeline (or the video simply never decoded). At 200 and 300 ms it failed in every run tried; at
// the default 50 ms about one interop run in four under load. The viewer now removes FEC from
// offers (UPSTREAM.md: "webrtcsrc negotiates RED/ULPFEC that webrtcbin 1.22 cannot unwrap in
// time").
//
// The plain `gst-launch-1.0` of the system with the plugin from target/debug (GST_PLUGIN_PATH),
// as a user runs it: `cargo build -p gst-plugin-room` first (the harness's server needs
// `cargo build -p gst-room`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ROOT,
  cleanup,
  colourClose,
  joinPage,
  launchBrowser,
  makeY4m,
  newestFrameColour,
  poll,
  rgbFrameSink,
  sleep,
  startProcess,
  startServer,
  tempDir,
} from './harness.mjs';

const ROOM = 'unlinked';
const CAROL = [200, 40, 40];
/** How long a pipeline must keep going once it decodes. */
const KEEPS_RUNNING_MS = 4000;
/** roomsrc `latency` of each session (undefined: its default), see the top of the file. */
const LATENCIES = [undefined, 200, 500];
const PLUGIN_DIR = path.join(ROOT, 'target', 'debug');

let server;
let page;

before(async () => {
  if (!fs.existsSync(path.join(PLUGIN_DIR, 'libgstroom.so'))) {
    throw new Error(`${PLUGIN_DIR}/libgstroom.so not found: build it first with \`cargo build -p gst-plugin-room\``);
  }
  server = await startServer();
  const dir = tempDir('gst-room-unlinked-');
  const browser = await launchBrowser({ camera: makeY4m(path.join(dir, 'carol.y4m'), CAROL) });
  page = await joinPage(browser, server.url, ROOM, 'carol');
});

after(cleanup);

/** `gst-launch-1.0 roomsrc participant=carol [latency=…] ! TAIL` with the plugin from target/debug. */
function roomsrcLaunch(name, latency, tail) {
  const args = [
    '-v',
    'roomsrc',
    `server-url=${server.wsUrl}`,
    `room=${ROOM}`,
    `username=${name}`,
    'participant=carol',
    ...(latency === undefined ? [] : [`latency=${latency}`]),
    '!',
    ...tail.split(' '),
  ];
  return startProcess('gst-launch-1.0', args, { name, env: { GST_PLUGIN_PATH: PLUGIN_DIR }, stopSignal: 'SIGINT' });
}

/** Fails at once when the pipeline stopped, with its output. */
function running(proc) {
  assert.equal(proc.exited(), null, `${proc.name} stopped: ${JSON.stringify(proc.exited())}\n${proc.output().slice(-4000)}`);
}

/** "latency 200" or "default latency", for names and messages. */
const describeLatency = (latency) => (latency === undefined ? 'default latency' : `latency ${latency}`);

test('only video linked: the browser\'s video is decoded and keeps coming, its audio is dropped, session after session', async () => {
  for (const [i, latency] of LATENCIES.entries()) {
    const session = `video-only session ${i + 1} (${describeLatency(latency)})`;
    const frames = tempDir('gst-room-unlinked-frames-');
    const gst = await roomsrcLaunch(`videoonly${i}`, latency, rgbFrameSink(frames));
    const first = await poll(
      () => {
        running(gst);
        const frame = newestFrameColour(frames);
        return frame && colourClose(frame.colour, CAROL) && frame;
      },
      { what: `carol's colour decoded by gst, ${session}`, timeout: 30000 },
    );
    await sleep(KEEPS_RUNNING_MS);
    running(gst);
    const later = newestFrameColour(frames);
    assert.ok(later && later.index > first.index + 10, `${session}: frames keep coming: ${first.index} then ${later?.index}`);
    assert.ok(colourClose(later.colour, CAROL), `${session}: ${JSON.stringify(later)}`);
    await gst.stop();
  }
});

test('only audio linked: the browser\'s audio is decoded and keeps coming, its video is dropped, session after session', async () => {
  for (const [i, latency] of LATENCIES.entries()) {
    const session = `audio-only session ${i + 1} (${describeLatency(latency)})`;
    const gst = await roomsrcLaunch(`audioonly${i}`, latency, 'audioconvert ! audio/x-raw,format=S16LE ! fakesink silent=false');
    const buffers = () => gst.output().split('\n').filter((l) => /last-message = chain/.test(l)).length;
    await poll(
      () => {
        running(gst);
        return /caps = audio\/x-raw, format=\(string\)S16LE/.test(gst.output()) && buffers() > 10;
      },
      { what: `decoded audio buffers, ${session}`, timeout: 30000 },
    );
    const first = buffers();
    await sleep(KEEPS_RUNNING_MS);
    running(gst);
    // Opus frames are 20 ms: 50 a second.
    assert.ok(buffers() > first + 100, `${session}: audio keeps coming: ${first} then ${buffers()} buffers`);
    await gst.stop();
  }
});
