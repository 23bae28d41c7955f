//! `roomsink`: publishes a pipeline's audio and video into a room.
//!
//! ```text
//! gst-launch-1.0 videotestsrc is-live=true ! roomsink name=s server-url=ws://127.0.0.1:8443/ws \
//!     room=demo username=bot  audiotestsrc is-live=true ! s.
//! ```
//!
//! A Bin around `webrtcsink` with the room signaller: each viewer that plays the stream gets
//! its own WebRTC session (mesh). Input is raw video and audio in any format; it is converted
//! once to I420 / S16 (which is also where muting blanks it) before webrtcsink encodes it
//! per viewer with `video-caps` / `audio-caps`.

use gst::glib;
use gst::prelude::*;

mod congestion;
mod imp;

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
