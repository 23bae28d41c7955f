//! The encoders roomsink makes itself: the shared encoder of a raw stream (`encode.rs`) and the
//! black/silence encoder of a muted encoded stream (`passthrough.rs`), tuned for real time.

use gst::glib;

/// The shared video encoder makes keyframes only when asked (a viewer's start, a loss NACK/RTX
/// could not repair; receivers repeat a request that got no answer), as webrtcsink's own
/// encoders do: a keyframe every 3 s, several times a delta frame's size, overflowed slow
/// links at each one (a 400 kbit/s viewer decoded 8 fps). This is only the longest distance.
pub const KEYFRAME_MAX_DISTANCE: u32 = 2000;
/// x264enc still makes a keyframe every 90 frames (3 s at 30 fps): with keyframes on request
/// only, a viewer's H.264 picture stayed wrong after a mute (a reference it never got) and no
/// request came (tests/tests/shared_encoding.rs).
pub const H264_KEYFRAME_MAX_DISTANCE: u32 = 90;

/// The one encoder of a stream for `codec` (plus a caps filter where the codec needs a
/// profile), tuned for real time as webrtcsink tunes its own: no look-ahead, constant bitrate.
pub fn encoder_for(codec: &str, bitrate: u32) -> Result<Vec<gst::Element>, glib::BoolError> {
    match codec {
        "video/x-vp8" => Ok(vec![
            gst::ElementFactory::make("vp8enc")
                .property("deadline", 1i64)
                .property("cpu-used", -16i32)
                .property("target-bitrate", bitrate as i32)
                .property("keyframe-max-dist", KEYFRAME_MAX_DISTANCE as i32)
                .property_from_str("keyframe-mode", "disabled")
                // Partitions decodable on their own, as webrtcsink sets it.
                .property_from_str("error-resilient", "default")
                .property_from_str("end-usage", "cbr")
                .property("buffer-initial-size", 100i32)
                .property("buffer-optimal-size", 120i32)
                .property("buffer-size", 150i32)
                .property("max-intra-bitrate", 250i32)
                .property("lag-in-frames", 0i32)
                // No `dropframe-threshold` (issue 11 sets 30 for webrtcsink's per-viewer
                // encoders): shared, a dropped frame is dropped for every viewer, and it took
                // a 500 kbit/s viewer from 28 to 21 fps and the other viewers of a 400 kbit/s
                // one from 30 to 12 fps.
                // No `threads`: libvpx's threads on a busy 2-core machine made it encode a
                // quarter of the frames (measured: 7 instead of 30 fps at 640x480).
                .build()?,
        ]),
        "video/x-h264" => Ok(vec![
            gst::ElementFactory::make("x264enc")
                .property("bitrate", bitrate / 1000)
                .property_from_str("tune", "zerolatency")
                .property_from_str("speed-preset", "ultrafast")
                .property("key-int-max", H264_KEYFRAME_MAX_DISTANCE)
                .property("b-adapt", false)
                .property("vbv-buf-capacity", 120u32)
                .build()?,
            // Constrained baseline is what every browser decodes.
            gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-h264")
                        .field("profile", "constrained-baseline")
                        .build(),
                )
                .build()?,
        ]),
        // Chrome's audio decoder expects perfect timestamps (as webrtcsink sets them).
        "audio/x-opus" => Ok(vec![
            gst::ElementFactory::make("opusenc")
                .property("perfect-timestamp", true)
                .build()?,
        ]),
        other => Err(glib::bool_error!(
            "no shared encoder for {other}: use video/x-vp8, video/x-h264 or audio/x-opus, \
             or encode-per-viewer=true"
        )),
    }
}

/// A pad link failure as the error type of the branch builders.
pub fn link_error(err: gst::PadLinkError) -> glib::BoolError {
    glib::bool_error!("{err:?}")
}
