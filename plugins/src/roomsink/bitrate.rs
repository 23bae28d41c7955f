//! The shared video encoder's bitrate: what the weakest viewer's bandwidth estimate leaves for
//! video ([`video_share`]), between [`FLOOR`] and `video-bitrate`.
//!
//! webrtcsink runs Google Congestion Control (`rtpgccbwe`) in every viewer's session and would
//! set that session's own encoder from it; with one encoder for everybody the encoder follows
//! the lowest estimate instead, so no viewer gets more than its link carries. The floor keeps
//! one viewer on a very bad link from dragging everybody down to nothing: below it, that viewer
//! loses packets (and recovers with retransmissions and keyframes) while the others keep
//! their picture. A viewer's estimate leaves with its session. Where the encoder cannot get
//! down to its target at the input's size, `resolution.rs` makes the picture smaller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

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

/// The first viewer's first estimate (webrtcsink's `start-bitrate`), before any feedback; a
/// later viewer starts at the weakest estimate of those already watching, so that it does not
/// drag everybody down while its estimate climbs. 1 Mbit/s: 640x480 of a moving picture fits
/// from the start on a good link (a 300 kbit/s start made the picture small for ~20 s while
/// GCC climbed 8 % a second, and GCC holds its start rate under 2-10 % random loss); on a
/// slower link the first second overruns it and GCC comes down within about two.
pub const START_ESTIMATE: u32 = 1_000_000;

/// The part of what is left that video may take: the rest goes to packet headers and
/// retransmissions (a target of the whole estimate overran the link it estimated).
const VIDEO_FRACTION: f64 = 0.85;

/// What a session's `estimate` (everything the session may send) leaves for video.
fn budget(estimate: u32, with_audio: bool) -> u32 {
    let audio = if with_audio { AUDIO_ALLOWANCE } else { 0 };
    estimate.saturating_sub(audio)
}

/// The video encoder's target for a session's `estimate`: its [`budget`] less room for packet
/// headers and retransmissions.
fn video_share(estimate: u32, with_audio: bool) -> u32 {
    (f64::from(budget(estimate, with_audio)) * VIDEO_FRACTION) as u32
}

/// The least estimate GCC may give in shared mode (webrtcsink's `min-bitrate`): what the
/// [`FLOOR`] and audio send anyway. Lower estimates are never followed, and GCC climbs back
/// only ~8 % a second: from its own floor (1 kbit/s) a 0.5 Mbit/s link took minutes to be used.
pub const MIN_ESTIMATE: u32 = FLOOR + AUDIO_ALLOWANCE;

/// The shared video encoder's rates, shared by roomsink's property, the viewers' estimates and
/// the encoder's branch.
#[derive(Debug)]
pub struct VideoRate {
    /// `video-bitrate`: the most the encoder is given.
    pub maximum: AtomicU32,
    /// What the encoder is given now.
    target: AtomicU32,
    /// What the weakest viewer's estimate leaves for video (audio taken out); 0 while nobody
    /// watches.
    budget: AtomicU32,
    /// The weakest viewer's estimate; 0 while nobody watches.
    weakest: AtomicU32,
    /// Whether the stream is encoded once (not `encode-per-viewer`), set on NULL→READY.
    pub shared: AtomicBool,
}

impl VideoRate {
    pub fn new(maximum: u32) -> VideoRate {
        VideoRate {
            maximum: AtomicU32::new(maximum),
            target: AtomicU32::new(initial_or(None, maximum, true)),
            budget: AtomicU32::new(0),
            weakest: AtomicU32::new(0),
            shared: AtomicBool::new(true),
        }
    }

    /// Follows a new weakest estimate (`None`: nobody watches); returns the encoder's target.
    fn follow(&self, weakest: Option<u32>, with_audio: bool) -> u32 {
        let target = initial_or(weakest, self.maximum.load(Ordering::Relaxed), with_audio);
        self.weakest.store(weakest.unwrap_or(0), Ordering::Relaxed);
        self.target.store(target, Ordering::Relaxed);
        let budget = weakest.map_or(0, |w| budget(w, with_audio));
        self.budget.store(budget, Ordering::Relaxed);
        target
    }

    /// A new `video-bitrate`; returns the encoder's target under it.
    pub fn set_maximum(&self, maximum: u32, with_audio: bool) -> u32 {
        self.maximum.store(maximum, Ordering::Relaxed);
        let weakest = self.weakest.load(Ordering::Relaxed);
        self.follow((weakest > 0).then_some(weakest), with_audio)
    }

    /// The encoder's target and, while somebody watches, its budget.
    pub fn target_and_budget(&self) -> (u32, Option<u32>) {
        let budget = self.budget.load(Ordering::Relaxed);
        (
            self.target.load(Ordering::Relaxed),
            (budget > 0).then_some(budget),
        )
    }

    /// The target for a new encoder.
    pub fn target(&self) -> u32 {
        self.target.load(Ordering::Relaxed)
    }
}

/// Per-session estimates (key: the session pipeline's name) of one roomsink.
#[derive(Default)]
struct Estimates(Mutex<HashMap<String, u32>>);

/// Makes the shared video encoders of `bin` follow its viewers' estimates, within `rate`'s
/// maximum (`video-bitrate`); a new viewer's estimate starts at the weakest one.
pub fn follow_viewers(webrtcsink: &gst::Element, bin: &gst::Bin, rate: Arc<VideoRate>) {
    let estimates = Arc::new(Estimates::default());
    let weak_bin = bin.downgrade();
    let (est, shared) = (estimates.clone(), rate.clone());
    // Runs where GCC notifies its estimate, which may be under webrtcsink's settings lock
    // (webrtcsink sets the first estimate there): no webrtcsink property may be touched here.
    let update = move || {
        // Weak: the bin owns webrtcsink, whose signal handlers hold this closure.
        let Some(bin) = weak_bin.upgrade() else {
            return;
        };
        let with_audio = bin
            .sink_pads()
            .iter()
            .any(|p| p.name().starts_with("audio"));
        let target = rate.follow(est.weakest(), with_audio);
        gst::debug!(CAT, obj = bin, "shared video encoder at {target} bit/s");
        set_video_bitrate(&bin, target);
    };
    let update = Arc::new(update);
    let (est, on_change) = (estimates.clone(), update.clone());
    webrtcsink.connect("consumer-pipeline-created", false, move |args| {
        // Emitted before webrtcsink takes its settings lock for the new session.
        if shared.shared.load(Ordering::Relaxed) {
            let webrtcsink = args[0].get::<gst::Element>().expect("signal signature");
            let start = est.weakest().unwrap_or(START_ESTIMATE).max(MIN_ESTIMATE);
            webrtcsink.set_property("start-bitrate", start);
        }
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
    fn weakest(&self) -> Option<u32> {
        self.0.lock().unwrap().values().copied().min()
    }

    /// The weakest estimate's [`video_share`] between [`FLOOR`] and `maximum` (without
    /// estimates, that of [`START_ESTIMATE`]).
    #[cfg(test)]
    fn target(&self, maximum: u32, with_audio: bool) -> u32 {
        initial_or(self.weakest(), maximum, with_audio)
    }
}

/// The shared encoder's bitrate for the weakest estimate (none yet: [`START_ESTIMATE`]).
pub(super) fn initial_or(weakest: Option<u32>, maximum: u32, with_audio: bool) -> u32 {
    video_share(weakest.unwrap_or(START_ESTIMATE), with_audio).clamp(FLOOR.min(maximum), maximum)
}

/// Applies a new `video-bitrate` to the shared video encoders of `bin`, if any.
pub fn set_video_bitrate(bin: &gst::Bin, bitrate: u32) {
    for element in bin.iterate_recurse().into_iter().flatten() {
        match element.factory().map(|f| f.name()).as_deref() {
            Some("vp8enc") => element.set_property("target-bitrate", bitrate as i32),
            Some("x264enc") => element.set_property("bitrate", bitrate / 1000),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weakest_estimate_wins_between_the_floor_and_the_maximum() {
        let estimates = Estimates::default();
        // No viewer yet: the start estimate's share, (1000 - 88) × 0.85 kbit/s.
        assert_eq!(estimates.target(2_000_000, true), 775_200);
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

    #[test]
    fn a_new_maximum_applies_to_the_weakest_estimate_at_once() {
        let rate = VideoRate::new(2_000_000);
        assert_eq!(rate.target_and_budget(), (775_200, None));
        assert_eq!(rate.follow(Some(1_200_000), true), 945_200);
        assert_eq!(rate.target_and_budget(), (945_200, Some(1_112_000)));
        assert_eq!(rate.set_maximum(500_000, true), 500_000);
        assert_eq!(rate.set_maximum(3_000_000, true), 945_200);
        // Nobody watches: the start estimate's share again.
        assert_eq!(rate.follow(None, true), 775_200);
        assert_eq!(rate.set_maximum(600_000, true), 600_000);
        assert_eq!(rate.target_and_budget(), (600_000, None));
    }
}
