//! The forwarding decisions, without I/O: which ingest track feeds which viewer sessions, when a
//! publisher must be asked for a keyframe, and what is dropped (and counted) instead of forwarded.
//!
//! The engine feeds it session and media events with the current [`Instant`] and carries out the
//! [`Action`]s it returns; [`Routes::next_deadline`] says when to call [`Routes::poll`] again.
//!
//! Rules:
//! - A stream (a [`StreamKey`]) has at most one current ingest session: a newer `add_ingest` for
//!   the same key (a re-publish) replaces it; media of the replaced one is dropped.
//! - An ingest's first audio track feeds the viewers' audio m-line and its first video track the
//!   viewers' video m-line; further tracks of a kind are dropped (counted).
//! - Media goes to connected viewers only. A viewer's video starts at a keyframe: a viewer that
//!   connects, or whose stream gets a new ingest, waits (its delta frames are dropped) until the
//!   ingest sends one, and a keyframe is requested for it.
//! - Keyframe requests to a publisher are coalesced: at most one per [`KEYFRAME_INTERVAL`] per
//!   stream, whatever the number of viewers asking (a request inside the interval is sent when the
//!   interval ends); while a viewer still waits for a keyframe the request is repeated every
//!   [`KEYFRAME_RETRY`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};

use crate::StreamKey;

/// At most one keyframe request per stream in this interval.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);
/// A keyframe request is repeated after this long while a viewer still waits for a keyframe
/// (the request or the keyframe may have been lost).
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

/// What the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the publisher of ingest `session` for a keyframe on its track `mid`.
    RequestKeyframe { session: String, mid: Mid },
}

/// Where one ingest frame goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forward {
    /// (viewer session, the viewer's m-line) to write the frame to.
    pub targets: Vec<(String, Mid)>,
    /// Keyframe requests this frame caused (loss at the ingest).
    pub actions: Vec<Action>,
}

/// Why a forwarding decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("session {0} already exists")]
    SessionExists(String),
    #[error("unknown session {0}")]
    UnknownSession(String),
}

/// Frames not forwarded, by reason; and the keyframe request figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteCounters {
    /// Frames written to viewers (one per viewer).
    pub forwarded: u64,
    /// Frames of an ingest replaced by a newer one for the same stream.
    pub dropped_superseded: u64,
    /// Frames of a track the viewers have no m-line for (a second track of a kind).
    pub dropped_extra_track: u64,
    /// Delta frames not sent to a viewer that waits for a keyframe (one per viewer).
    pub dropped_waiting_keyframe: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe wishes (viewer requests, new viewers, ingest loss) folded into a request.
    pub keyframe_requests_coalesced: u64,
}

#[derive(Debug, Clone)]
enum Role {
    Ingest(StreamKey),
    Viewer(StreamKey),
}

#[derive(Debug)]
struct Ingest {
    session: String,
    connected: bool,
    audio: Option<Mid>,
    video: Option<Mid>,
}

#[derive(Debug)]
struct Viewer {
    connected: bool,
    audio: Option<Mid>,
    video: Option<Mid>,
    waiting_keyframe: bool,
}

#[derive(Debug, Default)]
struct KeyframeGate {
    last_sent: Option<Instant>,
    pending: bool,
}

#[derive(Debug, Default)]
struct StreamRoute {
    ingest: Option<Ingest>,
    viewers: BTreeMap<String, Viewer>,
    keyframe: KeyframeGate,
}

impl StreamRoute {
    fn is_empty(&self) -> bool {
        self.ingest.is_none() && self.viewers.is_empty()
    }

    fn any_viewer_waiting(&self) -> bool {
        self.viewers
            .values()
            .any(|v| v.connected && v.waiting_keyframe)
    }

    /// The ingest's video track, if it is connected and can be asked for a keyframe.
    fn keyframe_target(&self) -> Option<(String, Mid)> {
        let ingest = self.ingest.as_ref().filter(|i| i.connected)?;
        Some((ingest.session.clone(), ingest.video?))
    }

    /// A keyframe is wanted now: send a request unless one went out less than
    /// [`KEYFRAME_INTERVAL`] ago (then it is sent by [`Routes::poll`] when the interval ends).
    /// `earliest` (the routes' next deadline) moves up to this stream's new one.
    fn want_keyframe(
        &mut self,
        now: Instant,
        counters: &mut RouteCounters,
        earliest: &mut Option<Instant>,
    ) -> Option<Action> {
        let action = self.request_keyframe(now, counters);
        if let Some(deadline) = self.deadline() {
            *earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
        }
        action
    }

    fn request_keyframe(&mut self, now: Instant, counters: &mut RouteCounters) -> Option<Action> {
        let Some((session, mid)) = self.keyframe_target() else {
            // Asked again when the ingest connects.
            return None;
        };
        let recent = self
            .keyframe
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_INTERVAL);
        if recent {
            self.keyframe.pending = true;
            counters.keyframe_requests_coalesced += 1;
            return None;
        }
        self.keyframe.last_sent = Some(now);
        self.keyframe.pending = false;
        counters.keyframe_requests_sent += 1;
        Some(Action::RequestKeyframe { session, mid })
    }

    /// When this stream's keyframe gate needs [`Routes::poll`] again.
    fn deadline(&self) -> Option<Instant> {
        self.keyframe_target()?;
        let last = self.keyframe.last_sent?;
        if self.keyframe.pending {
            Some(last + KEYFRAME_INTERVAL)
        } else if self.any_viewer_waiting() {
            Some(last + KEYFRAME_RETRY)
        } else {
            None
        }
    }
}

/// The forwarding state of every session of one SFU.
#[derive(Debug, Default)]
pub struct Routes {
    sessions: HashMap<String, Role>,
    streams: HashMap<StreamKey, StreamRoute>,
    counters: RouteCounters,
    /// No stream's deadline is before this (it may be early: `poll` recomputes it).
    earliest: Option<Instant>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn counters(&self) -> RouteCounters {
        self.counters
    }

    /// Number of ingest and viewer sessions.
    pub fn session_counts(&self) -> (usize, usize) {
        let ingests = self
            .sessions
            .values()
            .filter(|r| matches!(r, Role::Ingest(_)))
            .count();
        (ingests, self.sessions.len() - ingests)
    }

    /// Whether `session` is the current ingest of its stream (not replaced by a re-publish).
    pub fn is_current_ingest(&self, session: &str) -> bool {
        let Some(Role::Ingest(key)) = self.sessions.get(session) else {
            return false;
        };
        self.streams
            .get(key)
            .and_then(|s| s.ingest.as_ref())
            .is_some_and(|i| i.session == session)
    }

    pub fn contains(&self, session: &str) -> bool {
        self.sessions.contains_key(session)
    }

    /// Viewer sessions of `stream`.
    pub fn viewer_count(&self, stream: &StreamKey) -> usize {
        self.streams.get(stream).map_or(0, |s| s.viewers.len())
    }

    /// A publisher's ingest session for `stream`; it replaces the stream's current ingest (a
    /// re-publish), whose viewers then wait for a keyframe of the new one.
    pub fn add_ingest(&mut self, session: &str, stream: &StreamKey) -> Result<(), RouteError> {
        self.add_session(session, Role::Ingest(stream.clone()))?;
        let route = self.streams.entry(stream.clone()).or_default();
        route.ingest = Some(Ingest {
            session: session.to_owned(),
            connected: false,
            audio: None,
            video: None,
        });
        route.keyframe = KeyframeGate::default();
        for viewer in route.viewers.values_mut() {
            viewer.waiting_keyframe = viewer.video.is_some();
        }
        Ok(())
    }

    /// A track the publisher of ingest `session` sends (an m-line of its offer). str0m may
    /// report it after the session connected: a video track then asks for the keyframe that
    /// waiting viewers need.
    pub fn ingest_track(
        &mut self,
        session: &str,
        mid: Mid,
        kind: MediaKind,
        now: Instant,
    ) -> Vec<Action> {
        let Some(Role::Ingest(key)) = self.sessions.get(session) else {
            return Vec::new();
        };
        let Some(route) = self.streams.get_mut(key) else {
            return Vec::new();
        };
        let Some(ingest) = route.ingest.as_mut().filter(|i| i.session == session) else {
            return Vec::new();
        };
        let slot = match kind {
            MediaKind::Audio => &mut ingest.audio,
            MediaKind::Video => &mut ingest.video,
        };
        if slot.is_some() {
            return Vec::new();
        }
        *slot = Some(mid);
        if kind == MediaKind::Video && route.any_viewer_waiting() {
            return route
                .want_keyframe(now, &mut self.counters, &mut self.earliest)
                .into_iter()
                .collect();
        }
        Vec::new()
    }

    /// A viewer session of `stream` with its audio and video m-lines.
    pub fn add_viewer(
        &mut self,
        session: &str,
        stream: &StreamKey,
        audio: Option<Mid>,
        video: Option<Mid>,
    ) -> Result<(), RouteError> {
        self.add_session(session, Role::Viewer(stream.clone()))?;
        let viewer = Viewer {
            connected: false,
            audio,
            video,
            waiting_keyframe: video.is_some(),
        };
        self.streams
            .entry(stream.clone())
            .or_default()
            .viewers
            .insert(session.to_owned(), viewer);
        Ok(())
    }

    /// A session's ICE and DTLS are up: a viewer starts receiving (video from the next keyframe,
    /// which is requested), a connected ingest is asked for a keyframe if viewers wait.
    pub fn connected(&mut self, session: &str, now: Instant) -> Vec<Action> {
        let Some(role) = self.sessions.get(session).cloned() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        match role {
            Role::Ingest(key) => {
                let Some(route) = self.streams.get_mut(&key) else {
                    return actions;
                };
                let Some(ingest) = route.ingest.as_mut().filter(|i| i.session == session) else {
                    return actions;
                };
                ingest.connected = true;
                if route.any_viewer_waiting() {
                    actions.extend(route.want_keyframe(
                        now,
                        &mut self.counters,
                        &mut self.earliest,
                    ));
                }
            }
            Role::Viewer(key) => {
                let Some(route) = self.streams.get_mut(&key) else {
                    return actions;
                };
                let Some(viewer) = route.viewers.get_mut(session) else {
                    return actions;
                };
                viewer.connected = true;
                viewer.waiting_keyframe = viewer.video.is_some();
                if viewer.waiting_keyframe {
                    actions.extend(route.want_keyframe(
                        now,
                        &mut self.counters,
                        &mut self.earliest,
                    ));
                }
            }
        }
        actions
    }

    /// A frame from ingest `session` on its track `mid`: the viewers to write it to.
    /// `contiguous` is false when frames before it were lost (then a keyframe is requested).
    pub fn media(
        &mut self,
        session: &str,
        mid: Mid,
        keyframe: bool,
        contiguous: bool,
        now: Instant,
    ) -> Forward {
        let mut forward = Forward::default();
        let Some(Role::Ingest(key)) = self.sessions.get(session) else {
            return forward;
        };
        let Some(route) = self.streams.get_mut(key) else {
            return forward;
        };
        let Some(ingest) = route.ingest.as_ref().filter(|i| i.session == session) else {
            self.counters.dropped_superseded += 1;
            return forward;
        };
        let kind = if ingest.video == Some(mid) {
            MediaKind::Video
        } else if ingest.audio == Some(mid) {
            MediaKind::Audio
        } else {
            self.counters.dropped_extra_track += 1;
            return forward;
        };
        for (viewer_session, viewer) in route.viewers.iter_mut().filter(|(_, v)| v.connected) {
            let target = match kind {
                MediaKind::Audio => viewer.audio,
                MediaKind::Video => viewer.video,
            };
            let Some(target) = target else {
                continue;
            };
            if kind == MediaKind::Video && viewer.waiting_keyframe {
                if !keyframe {
                    self.counters.dropped_waiting_keyframe += 1;
                    continue;
                }
                viewer.waiting_keyframe = false;
            }
            forward.targets.push((viewer_session.clone(), target));
        }
        self.counters.forwarded += forward.targets.len() as u64;
        if kind == MediaKind::Video && !contiguous && !keyframe {
            forward.actions.extend(route.want_keyframe(
                now,
                &mut self.counters,
                &mut self.earliest,
            ));
        }
        forward
    }

    /// A viewer asks for a keyframe (PLI/FIR) on its m-line `mid`.
    pub fn keyframe_request(&mut self, session: &str, mid: Mid, now: Instant) -> Vec<Action> {
        let Some(Role::Viewer(key)) = self.sessions.get(session) else {
            return Vec::new();
        };
        let Some(route) = self.streams.get_mut(key) else {
            return Vec::new();
        };
        let is_video = route
            .viewers
            .get(session)
            .is_some_and(|v| v.connected && v.video == Some(mid));
        if !is_video {
            return Vec::new();
        }
        route
            .want_keyframe(now, &mut self.counters, &mut self.earliest)
            .into_iter()
            .collect()
    }

    /// Coalesced and repeated keyframe requests that are due.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut earliest = None;
        for route in self.streams.values_mut() {
            if route.deadline().is_some_and(|d| d <= now) {
                actions.extend(route.want_keyframe(now, &mut self.counters, &mut earliest));
            }
        }
        self.earliest = self
            .streams
            .values()
            .filter_map(StreamRoute::deadline)
            .min();
        actions
    }

    /// When [`Routes::poll`] may have something to do (never later than that, possibly
    /// earlier).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }

    /// A session ends (closed or failed). Its viewers keep their sessions when it was the
    /// stream's ingest: they get the next ingest's media.
    pub fn remove(&mut self, session: &str) {
        let Some(role) = self.sessions.remove(session) else {
            return;
        };
        let key = match role {
            Role::Ingest(key) | Role::Viewer(key) => key,
        };
        let Some(route) = self.streams.get_mut(&key) else {
            return;
        };
        if route.ingest.as_ref().is_some_and(|i| i.session == session) {
            route.ingest = None;
            route.keyframe = KeyframeGate::default();
        }
        route.viewers.remove(session);
        if route.is_empty() {
            self.streams.remove(&key);
        }
    }

    fn add_session(&mut self, session: &str, role: Role) -> Result<(), RouteError> {
        if self.sessions.contains_key(session) {
            return Err(RouteError::SessionExists(session.to_owned()));
        }
        self.sessions.insert(session.to_owned(), role);
        Ok(())
    }
}

/// Keeps a viewer track's media timeline continuous when its source ingest changes (a
/// re-publish starts its own clock): frames of a new source are shifted to follow the last
/// forwarded one by `gap` ticks, so receivers see no jump back or far ahead in one SSRC.
#[derive(Debug, Default)]
pub struct Timeline {
    source: Option<String>,
    offset: i128,
    last_out: Option<u64>,
}

impl Timeline {
    /// The output time, in the track's clock ticks, of a frame at `ticks` from ingest `source`.
    pub fn map(&mut self, source: &str, ticks: u64, gap: u64) -> u64 {
        if self.source.as_deref() != Some(source) {
            self.offset = match self.last_out {
                Some(last) => i128::from(last) + i128::from(gap) - i128::from(ticks),
                None => 0,
            };
            self.source = Some(source.to_owned());
        }
        let out = (i128::from(ticks) + self.offset).clamp(0, i128::from(u64::MAX)) as u64;
        self.last_out = Some(out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stream: &str) -> StreamKey {
        StreamKey {
            room: "room".into(),
            participant: "alice".into(),
            stream: stream.into(),
        }
    }

    fn mid(s: &str) -> Mid {
        Mid::from(s)
    }

    fn request(session: &str, m: &str) -> Action {
        Action::RequestKeyframe {
            session: session.into(),
            mid: mid(m),
        }
    }

    /// A connected ingest "in" (audio "a0", video "v0") of stream "cam" at `t0`.
    fn with_ingest(t0: Instant) -> Routes {
        let mut routes = Routes::new();
        routes.add_ingest("in", &key("cam")).unwrap();
        routes.ingest_track("in", mid("a0"), MediaKind::Audio, t0);
        routes.ingest_track("in", mid("v0"), MediaKind::Video, t0);
        assert!(routes.connected("in", t0).is_empty(), "no viewer waits yet");
        routes
    }

    fn add_connected_viewer(routes: &mut Routes, session: &str, now: Instant) -> Vec<Action> {
        routes
            .add_viewer(session, &key("cam"), Some(mid("a1")), Some(mid("v1")))
            .unwrap();
        routes.connected(session, now)
    }

    fn targets(forward: &Forward) -> Vec<&str> {
        forward.targets.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn audio_goes_to_every_connected_viewer_on_its_own_mid() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        routes
            .add_viewer("v2", &key("cam"), Some(mid("a1")), Some(mid("v1")))
            .unwrap();
        let forward = routes.media("in", mid("a0"), false, true, t0);
        assert_eq!(forward.targets, vec![("v1".to_string(), mid("a1"))]);
        routes.connected("v2", t0);
        let forward = routes.media("in", mid("a0"), false, true, t0);
        assert_eq!(targets(&forward), vec!["v1", "v2"]);
        assert_eq!(routes.counters().forwarded, 3);
    }

    #[test]
    fn a_new_viewer_waits_for_a_keyframe_and_one_is_requested() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        assert_eq!(
            add_connected_viewer(&mut routes, "v1", t0),
            vec![request("in", "v0")]
        );
        let delta = routes.media("in", mid("v0"), false, true, t0);
        assert!(delta.targets.is_empty());
        assert_eq!(routes.counters().dropped_waiting_keyframe, 1);
        let key_frame = routes.media("in", mid("v0"), true, true, t0);
        assert_eq!(key_frame.targets, vec![("v1".to_string(), mid("v1"))]);
        let next_delta = routes.media("in", mid("v0"), false, true, t0);
        assert_eq!(targets(&next_delta), vec!["v1"]);
    }

    #[test]
    fn keyframe_requests_are_coalesced_per_stream() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        routes.media("in", mid("v0"), true, true, t0);
        // Ten viewers asking within the interval: nothing more now, one request when it ends.
        for i in 0..10 {
            let t = t0 + Duration::from_millis(10 * i);
            assert!(routes.keyframe_request("v1", mid("v1"), t).is_empty());
        }
        assert_eq!(routes.next_deadline(), Some(t0 + KEYFRAME_INTERVAL));
        assert!(routes.poll(t0 + Duration::from_millis(200)).is_empty());
        assert_eq!(
            routes.poll(t0 + KEYFRAME_INTERVAL),
            vec![request("in", "v0")]
        );
        assert_eq!(routes.next_deadline(), None, "nobody waits any more");
        let counters = routes.counters();
        assert_eq!(counters.keyframe_requests_sent, 2);
        assert_eq!(counters.keyframe_requests_coalesced, 10);
    }

    #[test]
    fn a_request_after_the_interval_goes_out_at_once() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        routes.media("in", mid("v0"), true, true, t0);
        let later = t0 + KEYFRAME_INTERVAL;
        assert_eq!(
            routes.keyframe_request("v1", mid("v1"), later),
            vec![request("in", "v0")]
        );
    }

    #[test]
    fn a_viewer_request_on_its_audio_mid_or_from_an_unknown_session_is_ignored() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        let later = t0 + KEYFRAME_RETRY;
        assert!(routes.keyframe_request("v1", mid("a1"), later).is_empty());
        assert!(
            routes
                .keyframe_request("nobody", mid("v1"), later)
                .is_empty()
        );
        assert!(routes.keyframe_request("in", mid("v0"), later).is_empty());
    }

    #[test]
    fn a_waiting_viewer_gets_the_request_repeated() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        assert_eq!(routes.next_deadline(), Some(t0 + KEYFRAME_RETRY));
        assert_eq!(routes.poll(t0 + KEYFRAME_RETRY), vec![request("in", "v0")]);
        let t1 = t0 + KEYFRAME_RETRY;
        routes.media("in", mid("v0"), true, true, t1);
        // The keyframe came: the deadline may still be noted (early), a poll finds nothing.
        let noted = routes.next_deadline().unwrap();
        assert!(routes.poll(noted.max(t1)).is_empty());
        assert_eq!(routes.next_deadline(), None);
    }

    #[test]
    fn viewers_before_the_ingest_get_a_keyframe_request_when_it_connects() {
        let t0 = Instant::now();
        let mut routes = Routes::new();
        assert!(
            add_connected_viewer(&mut routes, "v1", t0).is_empty(),
            "no ingest yet"
        );
        assert_eq!(routes.next_deadline(), None);
        routes.add_ingest("in", &key("cam")).unwrap();
        routes.ingest_track("in", mid("v0"), MediaKind::Video, t0);
        assert_eq!(routes.connected("in", t0), vec![request("in", "v0")]);
    }

    #[test]
    fn a_video_track_reported_after_the_connection_asks_for_the_keyframe() {
        let t0 = Instant::now();
        let mut routes = Routes::new();
        add_connected_viewer(&mut routes, "v1", t0);
        routes.add_ingest("in", &key("cam")).unwrap();
        assert!(
            routes.connected("in", t0).is_empty(),
            "no video track known yet"
        );
        assert!(
            routes
                .ingest_track("in", mid("a0"), MediaKind::Audio, t0)
                .is_empty()
        );
        assert_eq!(
            routes.ingest_track("in", mid("v0"), MediaKind::Video, t0),
            vec![request("in", "v0")]
        );
        assert!(
            routes
                .ingest_track("in", mid("v9"), MediaKind::Video, t0)
                .is_empty()
        );
    }

    #[test]
    fn a_republish_replaces_the_ingest_and_viewers_wait_for_its_keyframe() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        routes.media("in", mid("v0"), true, true, t0);
        routes.add_ingest("in2", &key("cam")).unwrap();
        routes.ingest_track("in2", mid("0"), MediaKind::Audio, t0);
        routes.ingest_track("in2", mid("1"), MediaKind::Video, t0);
        // The old ingest's frames are dropped; the viewer keeps its session.
        assert!(
            routes
                .media("in", mid("v0"), true, true, t0)
                .targets
                .is_empty()
        );
        assert_eq!(routes.counters().dropped_superseded, 1);
        assert_eq!(routes.connected("in2", t0), vec![request("in2", "1")]);
        assert!(
            routes
                .media("in2", mid("1"), false, true, t0)
                .targets
                .is_empty()
        );
        assert_eq!(
            routes.media("in2", mid("1"), true, true, t0).targets,
            vec![("v1".to_string(), mid("v1"))]
        );
        // Closing the replaced ingest does not touch the current one.
        routes.remove("in");
        assert_eq!(
            targets(&routes.media("in2", mid("0"), false, true, t0)),
            vec!["v1"]
        );
        assert_eq!(routes.session_counts(), (1, 1));
    }

    #[test]
    fn loss_at_the_ingest_asks_for_a_keyframe() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        routes.media("in", mid("v0"), true, true, t0);
        let later = t0 + KEYFRAME_INTERVAL;
        let forward = routes.media("in", mid("v0"), false, false, later);
        assert_eq!(targets(&forward), vec!["v1"]);
        assert_eq!(forward.actions, vec![request("in", "v0")]);
    }

    #[test]
    fn a_second_video_track_is_dropped_and_counted() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        routes.ingest_track("in", mid("v9"), MediaKind::Video, t0);
        add_connected_viewer(&mut routes, "v1", t0);
        assert!(
            routes
                .media("in", mid("v9"), true, true, t0)
                .targets
                .is_empty()
        );
        assert_eq!(routes.counters().dropped_extra_track, 1);
    }

    #[test]
    fn an_audio_only_viewer_gets_no_video_and_needs_no_keyframe() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        routes
            .add_viewer("v1", &key("cam"), Some(mid("a1")), None)
            .unwrap();
        assert!(routes.connected("v1", t0).is_empty());
        assert!(
            routes
                .media("in", mid("v0"), true, true, t0)
                .targets
                .is_empty()
        );
        assert_eq!(
            targets(&routes.media("in", mid("a0"), false, true, t0)),
            vec!["v1"]
        );
    }

    #[test]
    fn session_ids_are_unique_and_removal_is_idempotent() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        assert_eq!(
            routes.add_viewer("in", &key("cam"), None, Some(mid("v1"))),
            Err(RouteError::SessionExists("in".into()))
        );
        add_connected_viewer(&mut routes, "v1", t0);
        routes.remove("v1");
        routes.remove("v1");
        routes.remove("in");
        assert_eq!(routes.session_counts(), (0, 0));
        assert!(routes.streams.is_empty());
        assert!(
            routes
                .media("in", mid("a0"), false, true, t0)
                .targets
                .is_empty()
        );
    }

    #[test]
    fn a_timeline_is_continuous_across_sources() {
        let mut timeline = Timeline::default();
        // The first source passes unchanged.
        assert_eq!(timeline.map("in", 900_000, 3000), 900_000);
        assert_eq!(timeline.map("in", 903_000, 3000), 903_000);
        // A re-publish starting its clock near zero follows on, one gap later...
        assert_eq!(timeline.map("in2", 10, 3000), 906_000);
        assert_eq!(timeline.map("in2", 3010, 3000), 909_000);
        // ...and so does one far ahead.
        assert_eq!(timeline.map("in3", u64::MAX / 2, 3000), 912_000);
        // Reordered frames of the same source keep their spacing (clamped at zero).
        assert_eq!(timeline.map("in3", u64::MAX / 2 - 3000, 3000), 909_000);
    }

    #[test]
    fn streams_are_independent() {
        let t0 = Instant::now();
        let mut routes = with_ingest(t0);
        add_connected_viewer(&mut routes, "v1", t0);
        routes
            .add_viewer("other", &key("screen"), Some(mid("a1")), None)
            .unwrap();
        routes.connected("other", t0);
        assert_eq!(
            targets(&routes.media("in", mid("a0"), false, true, t0)),
            vec!["v1"]
        );
        assert_eq!(routes.viewer_count(&key("screen")), 1);
    }
}
