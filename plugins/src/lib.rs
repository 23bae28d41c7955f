//! GStreamer plugin "room": video conference rooms as elements.
//!
//! - `roomsink` publishes a pipeline's audio/video into a room (wraps `webrtcsink`);
//! - `roomsrc` plays the room's participants out of it, one pad per participant, or mixed
//!   (wraps one `webrtcsrc` per remote stream);
//! - `client`: the participant — one WebSocket to the room server, shared by every element of
//!   the process with the same server, room and username;
//! - `signaller`: the `Signallable` that connects webrtcsink/webrtcsrc to the room client;
//! - `events`: room events as bus messages and signals, and the properties both elements share;
//! - `membership`: what both elements do with the participant from start to stop;
//! - `tls`: what `wss://` trusts (system roots + `tls-ca-file`) and how its failures read;
//! - `ice`: the STUN/TURN servers and relay policy of each session's webrtcbin;
//! - `app`: for programs that run the elements in their own process (static registration).
//!
//! All network work runs on one tokio runtime for the whole plugin ([`RUNTIME`]).
// Signal docs use the gtk-doc `/** Type::signal: */` form of gst-plugins-rs, which rustc sees as stray doc comments.
#![allow(unused_doc_comments)]

use std::sync::LazyLock;

use gst::glib;

pub mod app;
pub mod audio_level;
pub mod certificate;
pub mod client;
pub mod events;
pub mod ice;
mod membership;
mod mute;
pub mod roomsink;
pub mod roomsrc;
pub mod signaller;
mod subscription;
pub mod tls;

/// The plugin's async runtime: the room client tasks and the signallers run here. Two workers
/// are plenty for a handful of WebSockets, and keep the plugin light on a small machine.
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("gst-room")
        .build()
        .expect("tokio runtime for the room plugin")
});

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    register_dependencies()?;
    roomsink::register(plugin)?;
    roomsrc::register(plugin)?;
    Ok(())
}

/// webrtcsink/webrtcsrc and rtpgccbwe (congestion control) come from gst-plugins-rs crates that
/// this plugin links in; register them unless the system already provides them, so that
/// `GST_PLUGIN_PATH` pointing at this one library is enough.
fn register_dependencies() -> Result<(), glib::BoolError> {
    if gst::ElementFactory::find("webrtcsink").is_none() {
        gstrswebrtc::plugin_register_static()?;
    }
    if gst::ElementFactory::find("rtpgccbwe").is_none() {
        gstrsrtp::plugin_register_static()?;
    }
    Ok(())
}

gst::plugin_define!(
    room,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "https://example.invalid/gst-room",
    env!("BUILD_REL_DATE")
);
