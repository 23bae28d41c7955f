//! The shared video encoder's bitrate: what the weakest viewer's bandwidth estimate leaves for
//! video ([`video_share`]), between [`FLOOR`] and `video-bitrate`.
//!
//! webrtcsink runs Google Congestion Control (`rtpgccbwe`) in every viewer's session and would
//! set that session's own encoder from it; with one encoder for everybody the encoder follows
//! the lowest estimate instead, so no viewer gets more than its link carries. The floor keeps
//! one viewer on a very bad link from dragging everybody down to nothing: below it, that viewer
//! loses packets (and recovers with retransmissions and keyframes) while the others keep
//! their picture. A viewer's estimate leaves with its session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

use super::encode;

pub(super) static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "roomsink-encode",
        gst::DebugColorFlags::empty(),
        Some("gst-room publisher: shared encoder"),
    )
});

/// The shared encoder never goes below this (bit/s), whatever one viewer's estimate says. Low
/// enough that a viewer behind a few hundred kbit/s gets a picture that fits its link (a floor
/// above its link's rate left such a viewer's queue full and every packet late: 4 fps at
/// 500 kbit/s), high enough that a viewer on a hopeless link does not take everybody's picture.
pub const FLOOR: u32 = 100_000;

/// What a session's estimate must leave for the audio stream in bit/s: Opus at opusenc's
/// default 64 kbit/s plus its packets' RTP/UDP/IP/SRTP headers (50 packets/s, ~60 bytes each).
pub const AUDIO_ALLOWANCE: u32 = 88_000;

/// Every session's first estimate (webrtcsink's `start-bitrate`), before any feedback, as
/// browsers start: webrtcsink's 2 Mbit/s overran a 500 kbit/s link by 4x for the first seconds.
pub const START_ESTIMATE: u32 = 300_000;

/// The part of what is left that video may take: the rest goes to packet headers and
/// retransmissions (a target of the whole estimate overran the link it estimated).
const VIDEO_FRACTION: f64 = 0.85;

/// The video bitrate a session's `estimate` (everything the session may send) leaves for the
/// video encoder.
fn video_share(estimate: u32, with_audio: bool) -> u32 {
    let audio = if with_audio { AUDIO_ALLOWANCE } else { 0 };
    (f64::from(estimate.saturating_sub(audio)) * VIDEO_FRACTION) as u32
}

/// Per-session estimates (key: the session pipeline's name) of one roomsink.
#[derive(Default)]
struct Estimates(Mutex<HashMap<String, u32>>);

/// Makes the shared video encoders of `bin` follow its viewers' estimates, capped by `maximum`
/// (`video-bitrate`).
pub fn follow_viewers(webrtcsink: &gst::Element, bin: &gst::Bin, maximum: Arc<AtomicU32>) {
    let estimates = Arc::new(Estimates::default());
    let weak_bin = bin.downgrade();
    let (est, max) = (estimates.clone(), maximum.clone());
    let update = move || {
        // Weak: the bin owns webrtcsink, whose signal handlers hold this closure.
        if let Some(bin) = weak_bin.upgrade() {
            let with_audio = bin
                .sink_pads()
                .iter()
                .any(|p| p.name().starts_with("audio"));
            let target = est.target(max.load(Ordering::Relaxed), with_audio);
            gst::debug!(CAT, obj = bin, "shared video encoder at {target} bit/s");
            encode::set_video_bitrate(&bin, target);
        }
    };
    let update = Arc::new(update);
    let (est, on_change) = (estimates.clone(), update.clone());
    webrtcsink.connect("consumer-pipeline-created", false, move |args| {
        let pipeline = args[2].get::<gst::Pipeline>().expect("signal signature");
        let session = pipeline.name().to_string();
        let (est, on_change) = (est.clone(), on_change.clone());
        pipeline.connect_deep_element_added(move |_, _, element| {
            if element.factory().is_some_and(|f| f.name() == "rtpgccbwe") {
                let (est, on_change, session) = (est.clone(), on_change.clone(), session.clone());
                element.connect_notify(Some("estimated-bitrate"), move |bwe, _| {
                    let estimate: u32 = bwe.property("estimated-bitrate");
                    gst::debug!(CAT, "{session}: estimate {estimate}");
                    est.0.lock().unwrap().insert(session.clone(), estimate);
                    on_change();
                });
            }
        });
        None
    });
    webrtcsink.connect("consumer-removed", false, move |args| {
        let webrtcbin = args[2].get::<gst::Element>().expect("signal signature");
        if let Some(pipeline) = webrtcbin.parent() {
            estimates.0.lock().unwrap().remove(pipeline.name().as_str());
            update();
        }
        None
    });
}

impl Estimates {
    /// The weakest estimate's [`video_share`] between [`FLOOR`] and `maximum` (without
    /// estimates, that of [`START_ESTIMATE`]).
    fn target(&self, maximum: u32, with_audio: bool) -> u32 {
        let weakest = self.0.lock().unwrap().values().copied().min();
        initial_or(weakest, maximum, with_audio)
    }
}

/// The shared encoder's bitrate for the weakest estimate (none yet: [`START_ESTIMATE`]).
pub(super) fn initial_or(weakest: Option<u32>, maximum: u32, with_audio: bool) -> u32 {
    video_share(weakest.unwrap_or(START_ESTIMATE), with_audio).clamp(FLOOR.min(maximum), maximum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weakest_estimate_wins_between_the_floor_and_the_maximum() {
        let estimates = Estimates::default();
        // No viewer yet: the start estimate's share, (300 - 88) × 0.85 kbit/s.
        assert_eq!(estimates.target(2_000_000, true), 180_200);
        estimates.0.lock().unwrap().insert("a".into(), 1_200_000);
        estimates.0.lock().unwrap().insert("b".into(), 5_000_000);
        // Audio and headers first: (1200 - 88) × 0.85 kbit/s for video.
        assert_eq!(estimates.target(2_000_000, true), 945_200);
        assert_eq!(estimates.target(2_000_000, false), 1_020_000);
        // A 500 kbit/s link's estimate leaves video well under the link.
        estimates.0.lock().unwrap().insert("d".into(), 480_000);
        assert_eq!(estimates.target(2_000_000, true), 333_200);
        // One viewer on a terrible link: the others still get the floor.
        estimates.0.lock().unwrap().insert("c".into(), 40_000);
        assert_eq!(estimates.target(2_000_000, true), FLOOR);
        // Its session ends: back to the next weakest.
        estimates.0.lock().unwrap().remove("c");
        estimates.0.lock().unwrap().remove("d");
        assert_eq!(estimates.target(2_000_000, true), 945_200);
        // video-bitrate below the floor is respected.
        assert_eq!(estimates.target(80_000, true), 80_000);
    }
}
