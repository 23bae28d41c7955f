//! `roomsink`: publishes a pipeline's audio and video into a room.
//!
//! ```text
//! gst-launch-1.0 videotestsrc is-live=true ! roomsink name=s server-url=ws://127.0.0.1:8443/ws \
//!     room=demo username=bot  audiotestsrc is-live=true ! s.
//! ```
//!
//! A Bin around `webrtcsink` with the room signaller: each viewer that plays the stream gets
//! its own WebRTC session (mesh). Raw input in any format is converted to I420 / S16 (which is
//! also where muting blanks it) and encoded once per stream, with the first codec of
//! `video-caps` / `audio-caps`; every viewer's session only payloads the shared encoded stream
//! (`encode-per-viewer=true` instead lets webrtcsink encode per viewer). Input already encoded
//! as VP8, H.264 or Opus is published as it is. See `encode.rs`.

use gst::glib;
use gst::prelude::*;

mod bitrate;
mod congestion;
mod demand;
mod encode;
mod encoders;
mod imp;
mod passthrough;
mod resolution;

glib::wrapper! {
    /// See the module documentation.
    pub struct RoomSink(ObjectSubclass<imp::RoomSink>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

/// Registers `roomsink` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "roomsink",
        gst::Rank::NONE,
        RoomSink::static_type(),
    )
}
