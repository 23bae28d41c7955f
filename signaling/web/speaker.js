// Who is speaking: the page's copy of the active-speaker rule of signaling/protocol/src/speaker.rs
// (same numbers, and tests/browser/speaker-rule.test.mjs runs it through the same cases as the
// Rust unit tests). Levels are RFC 6464 units: 0 = 0 dBov (loudest) … 127 = silence.
//
// - a participant *speaks* when at least 40 % of its levels in the last 400 ms are at or above
//   -35 dBov (LiveKit's defaults); its loudness is the mean linear amplitude of that window;
// - it becomes the speaker after being ahead (speaking, and louder than the speaker or the
//   speaker silent) for 300 ms without a break (mediasoup's observation interval): ~460 ms of
//   speech from the first word;
// - the speaker keeps the turn through pauses and loses it after 1.5 s without speech;
// - a change resets everyone's time ahead, so changes are at least 300 ms apart.

export const SILENT = 127;
export const ACTIVE_LEVEL = 35;
export const WINDOW_MS = 400;
export const MIN_ACTIVE_PERCENT = 40;
export const ACQUIRE_MS = 300;
export const RELEASE_MS = 1500;

/** The RFC 6464 level of a linear amplitude 0..1 (as RTCRtpSynchronizationSource.audioLevel). */
export function levelFromAmplitude(amplitude) {
  if (!(amplitude > 0)) return SILENT;
  return Math.min(SILENT, Math.max(0, Math.round(-20 * Math.log10(amplitude))));
}

const amplitude = (level) => 10 ** (-Math.min(level, SILENT) / 20);

function prune(track, now) {
  while (track.window.length && now - track.window[0].at >= WINDOW_MS) track.window.shift();
}

function speaking(track) {
  if (!track.window.length) return false;
  const active = track.window.filter((e) => e.level <= ACTIVE_LEVEL).length;
  return active * 100 >= MIN_ACTIVE_PERCENT * track.window.length;
}

function loudness(track) {
  if (!track.window.length) return 0;
  return track.window.reduce((sum, e) => sum + amplitude(e.level), 0) / track.window.length;
}

export class Detector {
  constructor() {
    /** participant → {window: [{at, level}], aheadSince, lastSpeech} */
    this.tracks = new Map();
    this.speaker = null;
  }

  /** Records a level (0..127) of `participant` at `now` (ms). */
  observe(participant, level, now) {
    let track = this.tracks.get(participant);
    if (!track) {
      track = { window: [], aheadSince: null, lastSpeech: null };
      this.tracks.set(participant, track);
    }
    track.window.push({ at: now, level: Math.min(level, SILENT) });
    prune(track, now);
  }

  /** Forgets `participant`; returns the change if it was the speaker (nobody is now). */
  remove(participant) {
    this.tracks.delete(participant);
    return this.speaker === participant ? this.#changeTo(null) : null;
  }

  /** Re-evaluates at `now` (ms); returns {speaker, previous} when the speaker changes. */
  tick(now) {
    for (const track of this.tracks.values()) {
      prune(track, now);
      if (speaking(track)) track.lastSpeech = now;
    }
    const current = this.speaker === null ? undefined : this.tracks.get(this.speaker);
    const currentSpeaking = current ? speaking(current) : false;
    const currentLoudness = current ? loudness(current) : 0;
    let challenger = null;
    for (const [participant, track] of this.tracks) {
      if (participant === this.speaker) continue;
      const loud = loudness(track);
      const ahead = speaking(track) && (!currentSpeaking || loud > currentLoudness);
      if (!ahead) {
        track.aheadSince = null;
        continue;
      }
      if (track.aheadSince === null) track.aheadSince = now;
      if (now - track.aheadSince >= ACQUIRE_MS && (!challenger || loud > challenger.loud)) {
        challenger = { participant, loud };
      }
    }
    if (challenger) {
      this.tracks.get(challenger.participant).lastSpeech = now;
      return this.#changeTo(challenger.participant);
    }
    if (this.speaker !== null) {
      const last = current?.lastSpeech;
      if (last === null || last === undefined || now - last >= RELEASE_MS) return this.#changeTo(null);
    }
    return null;
  }

  #changeTo(speaker) {
    for (const track of this.tracks.values()) track.aheadSince = null;
    const previous = this.speaker;
    this.speaker = speaker;
    return { speaker, previous };
  }
}
