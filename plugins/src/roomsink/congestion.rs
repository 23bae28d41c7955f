//! How roomsink's webrtcsink spends a viewer's bandwidth: the congestion-control settings, in
//! one place (tests/tests/network.rs `video_keeps_flowing_on_a_500_kbits_uplink` and
//! `gst-room bench network` measure them).
//!
//! webrtcsink runs Google Congestion Control (`rtpgccbwe`) per viewer session and hands its
//! estimate — the bitrate the path carries, audio included — to the video encoders. With
//! webrtcsink's defaults a 500 kbit/s uplink stayed full (vp8enc did not follow its target, see
//! [`configure_vpx`]), and every lost video packet cost a keyframe request and a freeze at the
//! viewer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

/// Bits per second of the session's audio, which the estimate covers but webrtcsink does not
/// count (the shared encoder's allowance, [`super::bitrate::AUDIO_ALLOWANCE`]). Without this
/// reserve video alone filled the estimate and audio pushed the total over it.
const AUDIO_BITRATE: i32 = super::bitrate::AUDIO_ALLOWANCE as i32;
/// The least video bitrate handed to the encoders (webrtcsink's own floor is 1 kbit/s).
const MIN_VIDEO_BITRATE: i32 = 30_000;

/// The least time between two keyframes made on a viewer's request. A viewer asks for one
/// (FIR/PLI) at each loss it cannot repair: on the congested 500 kbit/s link that was ~4 a
/// second (157 in 37 s), each keyframe several delta frames big, on a link already full. A
/// request within this time of the last keyframe is dropped: that keyframe is on its way, and
/// the viewer asks again while it still waits.
const MIN_KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

/// Encoder buffer level (percent) under which libvpx drops a frame to stay on its target.
const DROPFRAME_THRESHOLD: i32 = 30;
/// libvpx speed (realtime): -8 is twice as fast as the best quality, half as fast as -16.
const CPU_USED: i32 = -8;

/// Applies roomsink's bitrate and error-repair settings to its webrtcsink.
pub fn configure(webrtcsink: &gst::Element) {
    // No forward error correction: on a LAN, retransmission (NACK/RTX, kept on) repairs
    // the rare loss without FEC's constant extra bitrate, and RED-wrapped packets made
    // webrtcbin expose an extra pad for the same stream on the viewer side.
    webrtcsink.set_property("do-fec", false);
    // On a slow uplink a conference keeps its frame rate (motion, lip sync) and gives up
    // resolution: webrtcsink's default also halves the frame rate below 500 kbit/s, which
    // left a 500 kbit/s uplink at 15 fps or less (tests/tests/network.rs).
    webrtcsink.set_property_from_str("enable-mitigation-modes", "downscaled");
    // webrtcsink's start at 2 Mbit/s is kept: it overruns a slow uplink for a second or two,
    // but a lower start (300 kbit/s was tried) left GCC low for good under random loss (it
    // holds its rate at 2-10 % loss), where 5 % loss then showed 24-27 fps instead of 28-30.
    webrtcsink.connect("define-encoder-bitrates", false, |args| {
        let webrtcsink = args[0].get::<gst::Element>().expect("signal arg");
        let estimate = args[2].get::<i32>().expect("signal arg");
        let defaults = args[3].get::<gst::Structure>().expect("signal arg");
        Some(video_bitrates(estimate, has_audio(&webrtcsink), &defaults).to_value())
    });
    // After webrtcsink's own encoder configuration (its class handler), which this amends.
    webrtcsink.connect("encoder-setup", true, |args| {
        let encoder = args[3].get::<gst::Element>().expect("signal arg");
        if encoder.is::<gst_video::VideoEncoder>() {
            throttle_keyframe_requests(&encoder);
        }
        let vpx = encoder
            .factory()
            .is_some_and(|f| matches!(f.name().as_str(), "vp8enc" | "vp9enc"));
        if vpx {
            configure_vpx(&encoder);
        }
        Some(false.to_value())
    });
}

/// vp8enc/vp9enc on top of webrtcsink's realtime settings (deadline 1, CBR, cpu-used -16).
/// With those alone, 320x240@30 moving video never went under ~330 kbit/s whatever
/// target-bitrate said (targets of 30, 100 and 300 kbit/s all gave 336): congestion control
/// had no hold on the rate and a 500 kbit/s uplink stayed full.
fn configure_vpx(encoder: &gst::Element) {
    // Drop a frame when the rate buffer runs under 30 % (libwebrtc's setting): the output
    // then follows the target (100/200/300 kbit/s gave 100/201/301 kbit/s at 9/19/27 fps).
    encoder.set_property("dropframe-threshold", DROPFRAME_THRESHOLD);
    // A slower, better-compressing speed than webrtcsink's -16: at 150/250 kbit/s it kept
    // 18/30 fps instead of 14/23, for ~25 % more encoding time.
    encoder.set_property("cpu-used", CPU_USED);
}

/// Drops the force-key-unit requests reaching `encoder` within [`MIN_KEYFRAME_INTERVAL`] of
/// the last one it honoured.
fn throttle_keyframe_requests(encoder: &gst::Element) {
    let last: Arc<Mutex<Option<Instant>>> = Default::default();
    let Some(src) = encoder.static_pad("src") else {
        return;
    };
    src.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        if !gst_video::ForceKeyUnitEvent::is(event) {
            return gst::PadProbeReturn::Ok;
        }
        let now = Instant::now();
        let mut last = last.lock().unwrap();
        if last.is_some_and(|t| now.duration_since(t) < MIN_KEYFRAME_INTERVAL) {
            return gst::PadProbeReturn::Drop;
        }
        *last = Some(now);
        gst::PadProbeReturn::Ok
    });
}

fn has_audio(webrtcsink: &gst::Element) -> bool {
    webrtcsink
        .sink_pads()
        .iter()
        .any(|p| p.name().starts_with("audio_"))
}

/// The video encoders' share of a session's estimate: what audio leaves, split evenly.
/// `defaults` names the encoders (webrtcsink's `webrtcsink/encoder-bitrates`).
fn video_bitrates(estimate: i32, audio: bool, defaults: &gst::StructureRef) -> gst::Structure {
    let reserve = if audio { AUDIO_BITRATE } else { 0 };
    let encoders = defaults.n_fields().max(1) as i32;
    let each = ((estimate - reserve) / encoders).max(MIN_VIDEO_BITRATE);
    let mut bitrates = defaults.to_owned();
    for name in defaults.fields() {
        bitrates.set(name.as_str(), each);
    }
    bitrates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoders(names: &[&str]) -> gst::Structure {
        let mut s = gst::Structure::new_empty("webrtcsink/encoder-bitrates");
        for name in names {
            s.set(*name, 0i32);
        }
        s
    }

    #[test]
    fn audio_is_reserved_and_the_rest_split_between_videos() {
        gst::init().unwrap();
        let two = encoders(&["video_0", "video_1"]);
        let s = video_bitrates(500_000, true, &two);
        assert_eq!(
            s.get::<i32>("video_0").unwrap(),
            (500_000 - AUDIO_BITRATE) / 2
        );
        assert_eq!(
            s.get::<i32>("video_1").unwrap(),
            (500_000 - AUDIO_BITRATE) / 2
        );
        let s = video_bitrates(500_000, false, &encoders(&["video_0"]));
        assert_eq!(s.get::<i32>("video_0").unwrap(), 500_000);
    }

    #[test]
    fn video_keeps_a_floor_when_the_estimate_is_tiny() {
        gst::init().unwrap();
        let s = video_bitrates(50_000, true, &encoders(&["video_0"]));
        assert_eq!(s.get::<i32>("video_0").unwrap(), MIN_VIDEO_BITRATE);
    }
}
