//! Who is speaking: the active-speaker rule, without I/O or clocks of its own.
//!
//! A [`Detector`] is fed audio levels — `(participant, level, Instant)`, the level in RFC 6464
//! units (0 = 0 dBov, the loudest, to 127 = −127 dBov, silence), as the `ssrc-audio-level` RTP
//! header extension carries them — and, on [`Detector::tick`], says when the active speaker
//! changes. roomsrc feeds it the levels of the streams it plays (mesh rooms: each viewer
//! decides from what it receives); in rooms whose media goes through the server, the media
//! engine feeds one detector per room with the levels in the header extensions of the audio it
//! forwards, and the server tells everyone each [`Change`] in
//! [`ServerMessage::ActiveSpeaker`](crate::ServerMessage::ActiveSpeaker).
//!
//! # The rule and its numbers
//!
//! Speech, per participant, is LiveKit's (livekit-server `pkg/sfu/audio/audiolevel.go`, its
//! defaults `ActiveLevel 35`, `MinPercentile 40`, `UpdateInterval 400`): a participant
//! *speaks* when at least [`MIN_ACTIVE_PERCENT`] % of its levels in the last [`WINDOW`] are at
//! or above −[`ACTIVE_LEVEL`] dBov. Its *loudness* is the mean linear amplitude of the levels
//! in that window (LiveKit too converts dBov back to linear before comparing), so a pause of a
//! few packets lowers it little.
//!
//! Who is *the* speaker is a dominant-speaker decision with hysteresis, as mediasoup's
//! ActiveSpeakerObserver (after Volfin and Cohen, "Dominant Speaker Identification for
//! Multipoint Videoconferencing", ported from Jitsi) takes it every 300 ms and changes only
//! for a challenger that has been ahead over several consecutive intervals:
//! - a participant becomes the speaker once it has been *ahead* — speaking, and louder than
//!   the speaker or the speaker silent — for [`ACQUIRE`] without a break. From the first word
//!   that is about 460 ms of speech: 160 ms to fill 40 % of the window, then 300 ms ahead.
//!   A burst of sound shorter than about 200 ms (a click, a cough) never takes the turn: it
//!   counts as speech for less than [`ACQUIRE`];
//! - the speaker stays through pauses (a breath, a short silence between sentences) and loses
//!   the turn — to nobody — after [`RELEASE`] without speech, unless someone took it before;
//! - a change resets everyone's time ahead, so two changes are at least [`ACQUIRE`] apart
//!   (except [`Detector::remove`] of the speaker, which is immediate).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use room_protocol::speaker::Detector;
//! let start = Instant::now();
//! let mut detector = Detector::new();
//! let mut change = None;
//! for i in 0..50 {
//!     let now = start + Duration::from_millis(20 * i);
//!     detector.observe("alice", 20, now); // −20 dBov: a voice
//!     detector.observe("bob", 127, now); // silence
//!     change = change.or(detector.tick(now));
//! }
//! assert_eq!(change.unwrap().speaker, Some("alice"));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// RFC 6464 level of silence (−127 dBov), and of a participant with no recent level.
pub const SILENT: u8 = 127;
/// A level at or below this (−35 dBov or louder) is speech: LiveKit's `ActiveLevel` default.
pub const ACTIVE_LEVEL: u8 = 35;
/// The window over which speech and loudness are judged: LiveKit's `UpdateInterval` default.
pub const WINDOW: Duration = Duration::from_millis(400);
/// Share of a window's levels that must be speech for the participant to speak: LiveKit's
/// `MinPercentile` default.
pub const MIN_ACTIVE_PERCENT: usize = 40;
/// How long a participant must be ahead of the speaker, without a break, to take the turn: one
/// observation interval of mediasoup's ActiveSpeakerObserver (300 ms).
pub const ACQUIRE: Duration = Duration::from_millis(300);
/// How long the speaker keeps the turn without speaking.
pub const RELEASE: Duration = Duration::from_millis(1500);

/// The active speaker changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<P> {
    /// The new speaker; `None`: nobody speaks any more.
    pub speaker: Option<P>,
    /// The speaker before.
    pub previous: Option<P>,
}

/// A participant's level over the last [`WINDOW`], as [`Detector::levels`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// The mean amplitude in dBov (−127.0 to 0.0; −127.0 without recent levels).
    pub dbov: f64,
    /// Whether it speaks now (see the module documentation).
    pub speaking: bool,
}

/// What the detector knows of one participant.
#[derive(Debug, Default)]
struct Track {
    /// Levels of the last [`WINDOW`], oldest first.
    window: VecDeque<(Instant, u8)>,
    /// Since when it has been ahead of the speaker (never for the speaker itself).
    ahead_since: Option<Instant>,
    /// When it was last seen speaking (or became the speaker).
    last_speech: Option<Instant>,
}

impl Track {
    fn prune(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.window.front() {
            if now.saturating_duration_since(at) < WINDOW {
                break;
            }
            self.window.pop_front();
        }
    }

    fn speaking(&self) -> bool {
        let active = self
            .window
            .iter()
            .filter(|(_, level)| *level <= ACTIVE_LEVEL)
            .count();
        !self.window.is_empty() && active * 100 >= MIN_ACTIVE_PERCENT * self.window.len()
    }

    /// Mean linear amplitude of the window (0.0 when empty).
    fn loudness(&self) -> f64 {
        if self.window.is_empty() {
            return 0.0;
        }
        let sum: f64 = self.window.iter().map(|(_, l)| amplitude(*l)).sum();
        sum / self.window.len() as f64
    }
}

/// The linear amplitude of an RFC 6464 level (1.0 at 0 dBov).
fn amplitude(level: u8) -> f64 {
    10f64.powf(-f64::from(level.min(SILENT)) / 20.0)
}

/// The active-speaker state machine (see the module documentation). `P` names a participant.
#[derive(Debug)]
pub struct Detector<P> {
    tracks: BTreeMap<P, Track>,
    speaker: Option<P>,
}

impl<P: Ord + Clone> Default for Detector<P> {
    fn default() -> Self {
        Detector {
            tracks: BTreeMap::new(),
            speaker: None,
        }
    }
}

impl<P: Ord + Clone> Detector<P> {
    /// A detector with nobody speaking.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current speaker.
    pub fn speaker(&self) -> Option<&P> {
        self.speaker.as_ref()
    }

    /// Records `participant`'s `level` (RFC 6464, 0 loudest … 127 silent; larger values count
    /// as 127) measured at `now`. Levels are expected at a steady pace (one per audio packet
    /// or buffer); each one weighs the same.
    pub fn observe(&mut self, participant: P, level: u8, now: Instant) {
        let track = self.tracks.entry(participant).or_default();
        track.window.push_back((now, level.min(SILENT)));
        track.prune(now);
    }

    /// Forgets `participant` (it left, or its audio ended). If it was the speaker, nobody is
    /// now — at once, whatever the time since the last change.
    pub fn remove(&mut self, participant: &P) -> Option<Change<P>> {
        self.tracks.remove(participant);
        if self.speaker.as_ref() == Some(participant) {
            return Some(self.change_to(None));
        }
        None
    }

    /// Re-evaluates at `now`; returns the change of speaker, if any. Call it regularly (every
    /// 50–100 ms): its period adds to the reaction time.
    pub fn tick(&mut self, now: Instant) -> Option<Change<P>> {
        for track in self.tracks.values_mut() {
            track.prune(now);
            if track.speaking() {
                track.last_speech = Some(now);
            }
        }
        let speaker = self.speaker.as_ref().and_then(|s| self.tracks.get(s));
        let speaker_speaking = speaker.is_some_and(Track::speaking);
        let speaker_loudness = speaker.map_or(0.0, Track::loudness);
        let speaker_last_speech = speaker.and_then(|s| s.last_speech);
        let mut challenger: Option<(&P, f64)> = None;
        for (participant, track) in self.tracks.iter_mut() {
            if Some(participant) == self.speaker.as_ref() {
                continue;
            }
            let loudness = track.loudness();
            let ahead = track.speaking() && (!speaker_speaking || loudness > speaker_loudness);
            if !ahead {
                track.ahead_since = None;
                continue;
            }
            let since = *track.ahead_since.get_or_insert(now);
            let long_enough = now.saturating_duration_since(since) >= ACQUIRE;
            if long_enough && challenger.is_none_or(|(_, l)| loudness > l) {
                challenger = Some((participant, loudness));
            }
        }
        if let Some(participant) = challenger.map(|(p, _)| p.clone()) {
            if let Some(track) = self.tracks.get_mut(&participant) {
                track.last_speech = Some(now);
            }
            return Some(self.change_to(Some(participant)));
        }
        let silent_for = speaker_last_speech.map(|at| now.saturating_duration_since(at));
        if self.speaker.is_some() && silent_for.is_none_or(|d| d >= RELEASE) {
            return Some(self.change_to(None));
        }
        None
    }

    /// Everyone's level over the last [`WINDOW`] before `now` (in participant order).
    pub fn levels(&mut self, now: Instant) -> Vec<(P, Level)> {
        self.tracks
            .iter_mut()
            .map(|(participant, track)| {
                track.prune(now);
                let loudness = track.loudness();
                let dbov = if loudness > 0.0 {
                    (20.0 * loudness.log10()).max(-f64::from(SILENT))
                } else {
                    -f64::from(SILENT)
                };
                let level = Level {
                    dbov,
                    speaking: track.speaking(),
                };
                (participant.clone(), level)
            })
            .collect()
    }

    fn change_to(&mut self, speaker: Option<P>) -> Change<P> {
        for track in self.tracks.values_mut() {
            track.ahead_since = None;
        }
        let previous = std::mem::replace(&mut self.speaker, speaker.clone());
        Change { speaker, previous }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A voice (−20 dBov) and silence.
    const VOICE: u8 = 20;
    const QUIET: u8 = SILENT;
    /// One level per 20 ms, as one per Opus packet.
    const PACKET: Duration = Duration::from_millis(20);

    /// Feeds levels every 20 ms to a detector ticked every 20 ms; records the changes with
    /// their time since the start.
    struct Run {
        start: Instant,
        now: Duration,
        detector: Detector<&'static str>,
        changes: Vec<(Duration, Option<&'static str>)>,
    }

    impl Run {
        fn new() -> Self {
            Run {
                start: Instant::now(),
                now: Duration::ZERO,
                detector: Detector::new(),
                changes: Vec::new(),
            }
        }

        /// `levels` for everyone for `duration`.
        fn play(&mut self, duration: Duration, levels: &[(&'static str, u8)]) -> &mut Self {
            let end = self.now + duration;
            while self.now < end {
                let now = self.start + self.now;
                for &(who, level) in levels {
                    self.detector.observe(who, level, now);
                }
                if let Some(change) = self.detector.tick(now) {
                    self.changes.push((self.now, change.speaker));
                }
                self.now += PACKET;
            }
            self
        }

        fn speakers(&self) -> Vec<Option<&'static str>> {
            self.changes.iter().map(|(_, s)| *s).collect()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_voice_takes_the_turn_after_300_to_500_ms_of_speech() {
        let mut run = Run::new();
        run.play(ms(1000), &[("a", QUIET), ("b", QUIET)]);
        assert!(run.changes.is_empty());
        run.play(ms(2000), &[("a", VOICE), ("b", QUIET)]);
        assert_eq!(run.speakers(), [Some("a")]);
        let after = run.changes[0].0 - ms(1000);
        assert!(after >= ms(300) && after <= ms(500), "{after:?}");
    }

    #[test]
    fn a_short_sound_never_takes_the_turn() {
        let mut run = Run::new();
        run.play(ms(1000), &[("a", QUIET)]);
        for _ in 0..10 {
            run.play(ms(200), &[("a", VOICE)]);
            run.play(ms(800), &[("a", QUIET)]);
        }
        assert!(run.changes.is_empty(), "{:?}", run.changes);
    }

    #[test]
    fn the_speaker_stays_through_pauses_and_loses_the_turn_after_1_5_s_of_silence() {
        let mut run = Run::new();
        run.play(ms(1000), &[("a", VOICE)]);
        for _ in 0..5 {
            run.play(ms(1000), &[("a", QUIET)]);
            run.play(ms(500), &[("a", VOICE)]);
        }
        assert_eq!(run.speakers(), [Some("a")]);
        let silence_from = run.now;
        run.play(ms(3000), &[("a", QUIET)]);
        assert_eq!(run.speakers(), [Some("a"), None]);
        let after = run.changes[1].0 - silence_from;
        assert!(after >= ms(1500) && after <= ms(2000), "{after:?}");
    }

    #[test]
    fn alternating_voices_alternate_the_speaker_once_per_turn() {
        let mut run = Run::new();
        for _ in 0..3 {
            run.play(ms(4000), &[("a", VOICE), ("b", QUIET)]);
            run.play(ms(4000), &[("a", QUIET), ("b", VOICE)]);
        }
        let expected = [Some("a"), Some("b")].repeat(3);
        assert_eq!(run.speakers(), expected);
        for (i, (at, _)) in run.changes.iter().enumerate() {
            let turn_start = ms(4000) * i as u32;
            assert!(*at - turn_start <= ms(500), "change {i} at {at:?}");
        }
    }

    #[test]
    fn a_louder_voice_takes_over_a_speaking_one_but_an_equal_one_does_not() {
        let mut run = Run::new();
        run.play(ms(1000), &[("a", VOICE), ("b", QUIET)]);
        run.play(ms(2000), &[("a", VOICE), ("b", VOICE)]);
        assert_eq!(run.speakers(), [Some("a")], "as loud: the speaker keeps it");
        run.play(ms(2000), &[("a", VOICE), ("b", VOICE - 10)]);
        assert_eq!(run.speakers(), [Some("a"), Some("b")]);
    }

    #[test]
    fn removing_the_speaker_ends_its_turn_at_once() {
        let mut run = Run::new();
        run.play(ms(1000), &[("a", VOICE), ("b", QUIET)]);
        let change = run.detector.remove(&"a").unwrap();
        assert_eq!((change.speaker, change.previous), (None, Some("a")));
        assert_eq!(run.detector.remove(&"b"), None);
    }

    #[test]
    fn levels_are_the_window_mean_in_dbov() {
        let mut run = Run::new();
        run.play(ms(1000), &[("a", VOICE), ("b", QUIET)]);
        let now = run.start + run.now;
        let levels = run.detector.levels(now);
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0].0, "a");
        assert!((levels[0].1.dbov + 20.0).abs() < 0.01, "{:?}", levels[0]);
        assert!(levels[0].1.speaking);
        assert!(!levels[1].1.speaking);
        assert_eq!(levels[1].1.dbov, -127.0);
        // Without new levels the window empties.
        let later = run.detector.levels(now + ms(1000));
        assert!(later.iter().all(|(_, l)| l.dbov == -127.0 && !l.speaking));
    }

    proptest! {
        /// Whatever the levels and their timing, changes of speaker are at least ACQUIRE apart,
        /// and each names someone other than the current speaker.
        #[test]
        fn never_flaps(
            steps in proptest::collection::vec(
                (0u64..60, 0usize..3, prop_oneof![Just(VOICE), Just(VOICE - 10), Just(QUIET), 0u8..=127]),
                1..800,
            )
        ) {
            let start = Instant::now();
            let mut detector = Detector::new();
            let mut now = start;
            let mut last: Option<Instant> = None;
            let mut speaker = None;
            for (advance_ms, who, level) in steps {
                now += Duration::from_millis(advance_ms);
                detector.observe(["a", "b", "c"][who], level, now);
                if let Some(change) = detector.tick(now) {
                    if let Some(at) = last {
                        prop_assert!(now - at >= ACQUIRE, "changes {:?} apart", now - at);
                    }
                    prop_assert_ne!(change.speaker, speaker);
                    prop_assert_eq!(change.previous, speaker);
                    speaker = change.speaker;
                    last = Some(now);
                }
            }
        }
    }
}
