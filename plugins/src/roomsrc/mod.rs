//! `roomsrc`: plays a room's participants.
//!
//! ```text
//! gst-launch-1.0 roomsrc server-url=ws://127.0.0.1:8443/ws room=demo participant=bot ! \
//!     videoconvert ! autovideosink
//! ```
//!
//! A live source Bin that joins the room and, for every stream another participant publishes
//! (or only `participant`'s), adds a `webrtcsrc` whose signaller plays that stream. Its decoded
//! pads appear as sometimes pads `video_<username>` / `audio_<username>` (`_<stream>` appended
//! for streams not named "main"). When the stream ends (unpublished, participant left, session
//! ended) the pads get EOS and are removed; the pipeline keeps running.
//!
//! With `mix=true` there are instead two pads from the start, `video` (every participant in a
//! labelled grid that reflows) and `audio` (everyone mixed), carrying black and silence while
//! the room is empty:
//!
//! ```text
//! gst-launch-1.0 -e roomsrc mix=true name=r room=demo r.video ! videoconvert ! vp8enc ! webmmux name=m ! \
//!     filesink location=room.webm  r.audio ! audioconvert ! opusenc ! m.
//! ```
//!
//! `mix-layout=speaker` shows the active speaker large above a strip of the others.
//!
//! Who is speaking: in mesh rooms roomsrc decides it from the RFC 6464 levels of the audio it
//! plays (`crate::audio_level`, the rule in `room_protocol::speaker`); in SFU rooms the server
//! decides with the same rule and says so (`active-speaker`). roomsrc posts
//! `room-active-speaker` on changes and `room-audio-levels` (its own measure) ten times a
//! second (bus messages and signals).

use gst::glib;
use gst::prelude::*;

mod imp;
mod mix;

pub use mix::cell as grid_cell;

glib::wrapper! {
    /// See the module documentation.
    pub struct RoomSrc(ObjectSubclass<imp::RoomSrc>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

/// Registers `roomsrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "roomsrc",
        gst::Rank::NONE,
        RoomSrc::static_type(),
    )
}
