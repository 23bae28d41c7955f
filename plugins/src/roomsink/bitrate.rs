//! The shared video encoder's bitrate: the weakest viewer's bandwidth estimate, between
//! [`FLOOR`] and `video-bitrate`.
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

/// The shared encoder never goes below this (bit/s), whatever one viewer's estimate says.
pub const FLOOR: u32 = 300_000;

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
            let target = est.target(max.load(Ordering::Relaxed));
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
    /// The weakest estimate between [`FLOOR`] and `maximum` (`maximum` without estimates).
    fn target(&self, maximum: u32) -> u32 {
        let weakest = self.0.lock().unwrap().values().copied().min();
        weakest
            .unwrap_or(maximum)
            .clamp(FLOOR.min(maximum), maximum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weakest_estimate_wins_between_the_floor_and_the_maximum() {
        let estimates = Estimates::default();
        assert_eq!(estimates.target(2_000_000), 2_000_000);
        estimates.0.lock().unwrap().insert("a".into(), 1_200_000);
        estimates.0.lock().unwrap().insert("b".into(), 5_000_000);
        assert_eq!(estimates.target(2_000_000), 1_200_000);
        // One viewer on a terrible link: the others still get the floor.
        estimates.0.lock().unwrap().insert("c".into(), 40_000);
        assert_eq!(estimates.target(2_000_000), FLOOR);
        // Its session ends: back to the next weakest.
        estimates.0.lock().unwrap().remove("c");
        assert_eq!(estimates.target(2_000_000), 1_200_000);
        // video-bitrate below the floor is respected.
        assert_eq!(estimates.target(200_000), 200_000);
    }
}
