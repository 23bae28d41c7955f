// The page's copy of the active-speaker rule (signaling/web/speaker.js) through the cases of the
// Rust rule's unit tests (signaling/protocol/src/speaker.rs): the same inputs, the same changes.
// Plain Node, no browser.

import assert from 'node:assert/strict';
import path from 'node:path';
import test from 'node:test';
import { pathToFileURL } from 'node:url';
import { WEB_DIR } from './harness.mjs';

const { Detector, SILENT, ACQUIRE_MS, levelFromAmplitude } = await import(pathToFileURL(path.join(WEB_DIR, 'speaker.js')).href);

const VOICE = 20;
const QUIET = SILENT;
const PACKET = 20;

/** Levels every 20 ms, ticked every 20 ms; changes recorded with their time. */
class Run {
  constructor() {
    this.now = 0;
    this.detector = new Detector();
    this.changes = [];
  }
  play(duration, levels) {
    const end = this.now + duration;
    while (this.now < end) {
      for (const [who, level] of levels) this.detector.observe(who, level, this.now);
      const change = this.detector.tick(this.now);
      if (change) this.changes.push([this.now, change.speaker]);
      this.now += PACKET;
    }
    return this;
  }
  speakers() {
    return this.changes.map(([, s]) => s);
  }
}

test('a voice takes the turn after 300 to 500 ms of speech', () => {
  const run = new Run();
  run.play(1000, [['a', QUIET], ['b', QUIET]]);
  assert.deepEqual(run.changes, []);
  run.play(2000, [['a', VOICE], ['b', QUIET]]);
  assert.deepEqual(run.speakers(), ['a']);
  const after = run.changes[0][0] - 1000;
  assert.ok(after >= 300 && after <= 500, `${after}`);
});

test('a short sound never takes the turn', () => {
  const run = new Run();
  run.play(1000, [['a', QUIET]]);
  for (let i = 0; i < 10; i++) {
    run.play(200, [['a', VOICE]]);
    run.play(800, [['a', QUIET]]);
  }
  assert.deepEqual(run.changes, []);
});

test('the speaker stays through pauses and loses the turn after 1.5 s of silence', () => {
  const run = new Run();
  run.play(1000, [['a', VOICE]]);
  for (let i = 0; i < 5; i++) {
    run.play(1000, [['a', QUIET]]);
    run.play(500, [['a', VOICE]]);
  }
  assert.deepEqual(run.speakers(), ['a']);
  const silenceFrom = run.now;
  run.play(3000, [['a', QUIET]]);
  assert.deepEqual(run.speakers(), ['a', null]);
  const after = run.changes[1][0] - silenceFrom;
  assert.ok(after >= 1500 && after <= 2000, `${after}`);
});

test('alternating voices alternate the speaker once per turn', () => {
  const run = new Run();
  for (let i = 0; i < 3; i++) {
    run.play(4000, [['a', VOICE], ['b', QUIET]]);
    run.play(4000, [['a', QUIET], ['b', VOICE]]);
  }
  assert.deepEqual(run.speakers(), ['a', 'b', 'a', 'b', 'a', 'b']);
  run.changes.forEach(([at], i) => assert.ok(at - 4000 * i <= 500, `change ${i} at ${at}`));
});

test('a louder voice takes over a speaking one but an equal one does not', () => {
  const run = new Run();
  run.play(1000, [['a', VOICE], ['b', QUIET]]);
  run.play(2000, [['a', VOICE], ['b', VOICE]]);
  assert.deepEqual(run.speakers(), ['a']);
  run.play(2000, [['a', VOICE], ['b', VOICE - 10]]);
  assert.deepEqual(run.speakers(), ['a', 'b']);
});

test('removing the speaker ends its turn at once', () => {
  const run = new Run();
  run.play(1000, [['a', VOICE], ['b', QUIET]]);
  assert.deepEqual(run.detector.remove('a'), { speaker: null, previous: 'a' });
  assert.equal(run.detector.remove('b'), null);
});

test('never flaps: random levels and timing give changes at least ACQUIRE apart', () => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 200; round++) {
    const detector = new Detector();
    let now = 0;
    let last = null;
    let speaker = null;
    for (let step = 0; step < 800; step++) {
      now += Math.floor(random() * 60);
      const who = ['a', 'b', 'c'][Math.floor(random() * 3)];
      const level = [VOICE, VOICE - 10, QUIET, Math.floor(random() * 128)][Math.floor(random() * 4)];
      detector.observe(who, level, now);
      const change = detector.tick(now);
      if (!change) continue;
      if (last !== null) assert.ok(now - last >= ACQUIRE_MS, `changes ${now - last} ms apart`);
      assert.notEqual(change.speaker, speaker);
      assert.equal(change.previous, speaker);
      speaker = change.speaker;
      last = now;
    }
  }
});

test('levels from linear amplitudes', () => {
  assert.equal(levelFromAmplitude(0), SILENT);
  assert.equal(levelFromAmplitude(1), 0);
  assert.equal(levelFromAmplitude(0.1), 20);
  assert.equal(levelFromAmplitude(1e-9), SILENT);
});
