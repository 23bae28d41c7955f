//! Nothing is encoded for nobody: while a roomsink has no viewer session, its inputs' buffers
//! are dropped where they enter their branch, before the converter, the shared encoder and its
//! scaler (or, for encoded input, before the parser and the mute switch).
//!
//! webrtcsink's own per-viewer encoders exist only per session, so they cost nothing without
//! viewers; the shared encoder is roomsink's and would run for an empty room (measured: 14 % of
//! a core at 640x480 and 39 % at 1280x720 with nobody watching).
//!
//! Two exceptions keep the first picture as fast as before:
//! - until the stream is published, everything passes: webrtcsink learns each input's codec
//!   from its first buffers (its "discovery") and starts the signaller, which publishes, only
//!   once every input is discovered; no viewer can ask for a session before that;
//! - the gate opens at webrtcsink's `consumer-pipeline-created`, the first thing webrtcsink
//!   does for a new session (before its offer), and the first buffer through is preceded by a
//!   keyframe request: downstream to the shared encoder (raw input), upstream to whoever
//!   encodes (encoded input), so the new viewer's first frame is a keyframe.
//!
//! The gate closes when webrtcsink's last session is removed (`consumer-removed`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

/// webrtcsink's live sessions of one roomsink, by session pipeline name, and whether its
/// stream is published yet.
#[derive(Debug, Default)]
pub struct Demand {
    sessions: Mutex<HashSet<String>>,
    /// Whether `sessions` is non-empty, read by the gates on every buffer without the lock.
    watched: AtomicBool,
    /// Whether the room knows the stream (so webrtcsink has discovered every input's codec);
    /// reset on each start.
    published: AtomicBool,
}

impl Demand {
    /// A new run: webrtcsink discovers its inputs again and has no session yet.
    pub fn restart(&self) {
        self.sessions.lock().unwrap().clear();
        self.watched.store(false, Ordering::Release);
        self.published.store(false, Ordering::Release);
    }

    /// The room server confirmed the stream.
    pub fn published(&self) {
        self.published.store(true, Ordering::Release);
    }

    /// Whether the inputs' buffers must go on: somebody watches, or webrtcsink still needs
    /// them to discover the codecs.
    pub fn is_needed(&self) -> bool {
        self.watched.load(Ordering::Acquire) || !self.published.load(Ordering::Acquire)
    }

    fn session_started(&self, session: &str) {
        let mut sessions = self.sessions.lock().unwrap();
        sessions.insert(session.to_owned());
        self.watched.store(true, Ordering::Release);
    }

    fn session_ended(&self, session: &str) {
        let mut sessions = self.sessions.lock().unwrap();
        sessions.remove(session);
        self.watched.store(!sessions.is_empty(), Ordering::Release);
    }

    /// Whether any viewer session exists.
    #[cfg(test)]
    fn is_watched(&self) -> bool {
        self.watched.load(Ordering::Acquire)
    }
}

/// Keeps `demand` up to date with `webrtcsink`'s sessions.
pub fn follow_sessions(webrtcsink: &gst::Element, demand: Arc<Demand>) {
    let started = demand.clone();
    webrtcsink.connect("consumer-pipeline-created", false, move |args| {
        let pipeline = args[2].get::<gst::Pipeline>().expect("signal signature");
        started.session_started(pipeline.name().as_str());
        None
    });
    webrtcsink.connect("consumer-removed", false, move |args| {
        let webrtcbin = args[2].get::<gst::Element>().expect("signal signature");
        if let Some(pipeline) = webrtcbin.parent() {
            demand.session_ended(pipeline.name().as_str());
        }
        None
    });
}

/// What the gate does with one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Pass, after a keyframe request: the first buffer after buffers were dropped.
    PassAfterGap,
    Drop,
}

/// One input's gate: remembers whether the last buffer was dropped.
#[derive(Debug, Default)]
pub struct Gate {
    dropping: bool,
}

impl Gate {
    /// What to do with a buffer, given whether buffers are [needed](Demand::is_needed) now.
    pub fn judge(&mut self, passes: bool) -> Verdict {
        let verdict = match (passes, self.dropping) {
            (false, _) => Verdict::Drop,
            (true, true) => Verdict::PassAfterGap,
            (true, false) => Verdict::Pass,
        };
        self.dropping = !passes;
        verdict
    }
}

/// Drops the buffers leaving `input` (the branch's input capsfilter's src pad) while nobody
/// watches. `raw`: the input is raw, so a keyframe is asked of the shared encoder downstream;
/// otherwise of whatever encodes upstream.
pub fn install(input: &gst::Pad, demand: Arc<Demand>, raw: bool) {
    let gate = Mutex::new(Gate::default());
    input.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let verdict = gate.lock().unwrap().judge(demand.is_needed());
        match verdict {
            Verdict::Pass => gst::PadProbeReturn::Ok,
            Verdict::Drop => gst::PadProbeReturn::Drop,
            Verdict::PassAfterGap => {
                ask_for_keyframe(pad, raw);
                // The encoders resynchronise their timestamps instead of filling the gap.
                if let Some(buffer) = info.buffer_mut() {
                    buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
                }
                gst::PadProbeReturn::Ok
            }
        }
    });
}

fn ask_for_keyframe(pad: &gst::Pad, raw: bool) {
    if raw {
        let event = gst_video::DownstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        pad.push_event(event);
    } else if let Some(element) = pad.parent_element() {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        element.send_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_ends_with_a_keyframe_request() {
        let mut gate = Gate::default();
        assert_eq!(gate.judge(true), Verdict::Pass);
        assert_eq!(gate.judge(false), Verdict::Drop);
        assert_eq!(gate.judge(false), Verdict::Drop);
        assert_eq!(gate.judge(true), Verdict::PassAfterGap);
        assert_eq!(gate.judge(true), Verdict::Pass);
    }

    #[test]
    fn buffers_are_needed_until_published_then_only_while_watched() {
        let demand = Demand::default();
        assert!(demand.is_needed(), "webrtcsink discovers the codecs first");
        demand.published();
        assert!(!demand.is_needed());
        demand.session_started("session-pipeline-a");
        assert!(demand.is_needed());
        demand.session_ended("session-pipeline-a");
        assert!(!demand.is_needed());
        demand.session_started("session-pipeline-b");
        demand.restart();
        assert!(demand.is_needed() && !demand.is_watched());
    }

    #[test]
    fn the_demand_follows_sessions_by_name() {
        let demand = Demand::default();
        assert!(!demand.is_watched());
        demand.session_started("session-pipeline-a");
        demand.session_started("session-pipeline-b");
        demand.session_ended("session-pipeline-a");
        assert!(demand.is_watched());
        demand.session_ended("session-pipeline-b");
        assert!(!demand.is_watched());
        // An unknown end changes nothing.
        demand.session_ended("session-pipeline-c");
        assert!(!demand.is_watched());
    }
}
