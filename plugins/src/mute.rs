//! Muting without renegotiating: a pad probe overwrites buffers with black or silence while a
//! flag is set, so sessions, encoders and timestamps carry on unchanged.
//!
//! roomsink converts its input to I420 video and S16LE audio before the probe (see roomsink's
//! `link_input`), so these two formats are all the probes need to know.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gst::prelude::*;

/// Which medium a probe blanks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// I420 frames become black (Y 16, U/V 128: limited-range black).
    Video,
    /// S16LE samples become zero.
    Audio,
}

/// Installs the probe on `pad`; while `muted` is true buffers are blanked.
pub fn install(pad: &gst::Pad, medium: Medium, muted: Arc<AtomicBool>) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if !muted.load(Ordering::Relaxed) {
            return gst::PadProbeReturn::Ok;
        }
        // Where chroma starts in an I420 buffer of the negotiated size (0 for audio).
        let chroma = match medium {
            Medium::Video => pad
                .current_caps()
                .and_then(|caps| gst_video::VideoInfo::from_caps(&caps).ok())
                .map(|info| info.offset()[1])
                .unwrap_or(0),
            Medium::Audio => 0,
        };
        if let Some(buffer) = info.buffer_mut() {
            blank(buffer.make_mut(), medium, chroma);
        }
        gst::PadProbeReturn::Ok
    });
}

fn blank(buffer: &mut gst::BufferRef, medium: Medium, chroma: usize) {
    let Ok(mut map) = buffer.map_writable() else {
        return;
    };
    let data = map.as_mut_slice();
    match medium {
        Medium::Audio => data.fill(0),
        Medium::Video => {
            let chroma = chroma.min(data.len());
            data[..chroma].fill(16);
            data[chroma..].fill(128);
        }
    }
}
