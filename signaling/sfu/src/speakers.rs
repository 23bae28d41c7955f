//! Who speaks in each room, from the audio the SFU forwards.
//!
//! Publishers send RFC 6464 audio levels in the `ssrc-audio-level` RTP header extension
//! (browsers do, roomsink does); str0m parses it into each audio frame's extension values. The
//! engine hands every level of an ingest's audio to [`Speakers::observe`], which feeds one
//! [`Detector`] per room — the rule and its numbers are `room_protocol::speaker`'s, the same
//! ones roomsrc and the page apply in mesh rooms — and [`Speakers::tick`], called every
//! [`TICK`] while any room has levels, returns the rooms whose speaker changed. A stream that
//! ends takes its publisher's turn with it ([`Speakers::remove`]) unless the publisher has
//! another stream with audio in the room.
//!
//! A participant is named by its username; the levels of all its streams count as one voice.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use room_protocol::speaker::Detector;

use crate::StreamKey;

/// How often the rooms' speakers are decided: the detector's reaction time grows by up to this
/// much (its own is about 0.5 s).
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// A room's speaker changed: `username` (`None`: nobody) speaks in `room` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpeakerChange {
    pub room: String,
    pub username: Option<String>,
}

/// One detector per room with audio levels.
#[derive(Debug, Default)]
pub(crate) struct Speakers {
    rooms: BTreeMap<String, Room>,
    next_tick: Option<Instant>,
}

#[derive(Debug)]
struct Room {
    detector: Detector<String>,
    /// The streams whose levels the detector has, by participant: the participant's voice
    /// ends with its last one.
    streams: HashMap<String, Vec<String>>,
}

impl Speakers {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An RFC 6464 level of `stream`'s audio (0 = 0 dBov, loudest … 127 = silence) received
    /// at `now`; str0m gives it as the negative dBov.
    pub(crate) fn observe(&mut self, stream: &StreamKey, audio_level: i8, now: Instant) {
        let level = audio_level.unsigned_abs().min(127);
        let room = self
            .rooms
            .entry(stream.room.clone())
            .or_insert_with(|| Room {
                detector: Detector::new(),
                streams: HashMap::new(),
            });
        let streams = room.streams.entry(stream.participant.clone()).or_default();
        if !streams.contains(&stream.stream) {
            streams.push(stream.stream.clone());
        }
        room.detector
            .observe(stream.participant.clone(), level, now);
        self.next_tick.get_or_insert(now + TICK);
    }

    /// `stream` ended: its levels stop. If it was its publisher's last stream with levels, the
    /// publisher is forgotten, and loses the turn at once if it had it.
    pub(crate) fn remove(&mut self, stream: &StreamKey) -> Option<SpeakerChange> {
        let room = self.rooms.get_mut(&stream.room)?;
        let streams = room.streams.get_mut(&stream.participant)?;
        streams.retain(|s| *s != stream.stream);
        if !streams.is_empty() {
            return None;
        }
        room.streams.remove(&stream.participant);
        let change = room.detector.remove(&stream.participant);
        if room.streams.is_empty() {
            self.rooms.remove(&stream.room);
        }
        change.map(|c| SpeakerChange {
            room: stream.room.clone(),
            username: c.speaker,
        })
    }

    /// When [`Speakers::tick`] is due (`None`: no room has levels).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Decides every room's speaker at `now`, if due; returns the changes.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<SpeakerChange> {
        if self.next_tick.is_none_or(|at| at > now) {
            return Vec::new();
        }
        self.next_tick = (!self.rooms.is_empty()).then_some(now + TICK);
        self.rooms
            .iter_mut()
            .filter_map(|(name, room)| {
                room.detector.tick(now).map(|change| SpeakerChange {
                    room: name.clone(),
                    username: change.speaker,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str, participant: &str, stream: &str) -> StreamKey {
        StreamKey {
            room: room.into(),
            participant: participant.into(),
            stream: stream.into(),
        }
    }

    /// 20 ms audio frames of `levels` (as str0m gives them: negative dBov) for `duration`,
    /// ticking when due; the changes seen.
    fn play(
        speakers: &mut Speakers,
        clock: &mut Instant,
        duration: Duration,
        levels: &[(&StreamKey, i8)],
    ) -> Vec<SpeakerChange> {
        let end = *clock + duration;
        let mut changes = Vec::new();
        while *clock < end {
            for (stream, level) in levels {
                speakers.observe(stream, *level, *clock);
            }
            if speakers.next_deadline().is_some_and(|at| at <= *clock) {
                changes.extend(speakers.tick(*clock));
            }
            *clock += Duration::from_millis(20);
        }
        changes
    }

    fn change(room: &str, username: Option<&str>) -> SpeakerChange {
        SpeakerChange {
            room: room.into(),
            username: username.map(str::to_owned),
        }
    }

    #[test]
    fn each_room_has_its_own_speaker() {
        let mut speakers = Speakers::new();
        let mut clock = Instant::now();
        let (ann, bob) = (key("a", "ann", "main"), key("a", "bob", "main"));
        let cid = key("b", "cid", "main");
        let changes = play(
            &mut speakers,
            &mut clock,
            Duration::from_secs(1),
            &[(&ann, -20), (&bob, -127), (&cid, -10)],
        );
        assert_eq!(
            changes,
            [change("a", Some("ann")), change("b", Some("cid"))]
        );
        let changes = play(
            &mut speakers,
            &mut clock,
            Duration::from_secs(1),
            &[(&ann, -127), (&bob, -20), (&cid, -10)],
        );
        assert_eq!(changes, [change("a", Some("bob"))]);
    }

    #[test]
    fn the_speaker_loses_the_turn_with_its_last_stream() {
        let mut speakers = Speakers::new();
        let mut clock = Instant::now();
        let (main, screen) = (key("a", "ann", "main"), key("a", "ann", "screen"));
        let changes = play(
            &mut speakers,
            &mut clock,
            Duration::from_secs(1),
            &[(&main, -20), (&screen, -20)],
        );
        assert_eq!(changes, [change("a", Some("ann"))]);
        assert_eq!(speakers.remove(&main), None, "ann still has a stream");
        assert_eq!(speakers.remove(&screen), Some(change("a", None)));
        assert!(speakers.rooms.is_empty());
        assert_eq!(speakers.remove(&screen), None);
    }

    #[test]
    fn no_ticks_without_levels() {
        let mut speakers = Speakers::new();
        assert_eq!(speakers.next_deadline(), None);
        let now = Instant::now();
        speakers.observe(&key("a", "ann", "main"), -20, now);
        assert_eq!(speakers.next_deadline(), Some(now + TICK));
        speakers.remove(&key("a", "ann", "main"));
        assert!(speakers.tick(now + TICK).is_empty());
        assert_eq!(speakers.next_deadline(), None);
    }
}
