//! What roomsink and roomsrc share: the room properties, the read-only status, and room events
//! as bus messages and GObject signals.
//!
//! Every room event becomes one `gst::Structure` (names and fields below). An element posts it
//! as an element message on the bus and emits it as the signal of the same name, so
//! applications can use whichever they prefer:
//!
//! | name | fields |
//! |---|---|
//! | `room-state` | `room`, `username` (own), `capacity` (u32), `participants` (others, strv) |
//! | `room-joined` / `room-left` | `username` |
//! | `room-published` | `username`, `stream`, `audio`, `video` (bool) |
//! | `room-unpublished` | `username`, `stream` |
//! | `room-muted` | `username`, `stream`, `audio-muted`, `video-muted` (bool) |
//! | `room-message` | `from`, `to` (only for direct messages), `text`, `ts` (u64, ms since epoch) |
//! | `room-failed` | `reason` (`room-full`, `name-taken`, `unauthorized`, `invalid-name`, `unreachable`, ...), `detail` |
//! | `room-active-speaker` (roomsrc) | `username` (absent when nobody speaks now), `previous` (absent when nobody spoke) |
//! | `room-audio-levels` (roomsrc, ≤ 10/s) | `levels` (array of `level` structures: `username`, `level` (f64, dBov, −127..0), `speaking` (bool)), `speaker` (absent when nobody) |
//! | `room-session-status` | `status` (`connecting`, `joined`, `reconnecting`, `failed`, `publishing`, `unpublished`, `session-requested`, `playing`, `stopped`), `stream`, `peer`, `reason` (where relevant: `failed` of a stream has `reason`, e.g. `stream-exists`) |
//!
//! The module is split by concern: [`properties`] (the room settings and status both elements
//! have), [`signals`] (the `room-*` and chat signals), [`posting`] (room events to bus messages
//! and signals), [`templates`] (pad templates).

use std::sync::LazyLock;

mod posting;
mod properties;
mod signals;
mod templates;

pub use posting::*;
pub use properties::*;
pub use signals::*;
pub use templates::*;

/// Debug category of the room client and the shared element code (`GST_DEBUG=room:6`).
pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "room",
        gst::DebugColorFlags::empty(),
        Some("gst-room client"),
    )
});
