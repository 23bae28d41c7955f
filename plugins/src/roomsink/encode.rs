//! roomsink's media path: what happens between a request pad and webrtcsink.
//!
//! ```text
//! raw, shared (default):  ghost ─ input ─ convert ─ I420/S16 [mute] [level] ─ queue ─ [scale ─ size] ─ encoder [keyframe gate] ─ webrtcsink
//! raw, encode-per-viewer: ghost ─ input ─ convert ─ I420/S16 [mute] [level] ─ webrtcsink (encodes per viewer)
//! encoded (VP8/H.264/Opus): ghost ─ input [keyframe gate] ─ webrtcsink (payloads only)
//! ```
//!
//! webrtcsink encodes raw input once per consumer, but takes already-encoded input and then
//! only payloads it per consumer. So encoding here, once per stream, makes every viewer after
//! the first cost a payloader, SRTP and retransmissions instead of an encoder.
//!
//! Without a viewer session, `input` drops every buffer (once the stream is published:
//! webrtcsink learns the codecs from the first ones): nothing is converted, scaled or encoded
//! for nobody (`demand.rs`).
//!
//! `level` (audio only) puts each buffer's RFC 6464 level on it, which the encoder carries and
//! every viewer's payloader writes into the `ssrc-audio-level` header extension
//! (`audio_level.rs`). Already-encoded audio goes without levels.
//!
//! `scale ─ size` (video only) makes the picture smaller while the encoder cannot fit the
//! weakest viewer's link at the input's size (`resolution.rs`).
//!
//! The branch after `input` is built when the first CAPS event says whether the input is raw
//! or encoded (the pad is requested before caps are known).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use super::bitrate::VideoRate;
use super::{encoders, passthrough, resolution};
use crate::mute::{self, Medium};

/// Default highest bitrate of the shared video encoder, in bit/s (see `bitrate.rs`).
pub const DEFAULT_VIDEO_BITRATE: u32 = 2_000_000;
/// Keyframe requests reaching the shared encoder (or the encoded input's upstream) are at
/// least this far apart: every viewer's request in between is answered by the same keyframe.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// Codecs roomsink takes already encoded, per medium.
const ENCODED_VIDEO: &[&str] = &["video/x-vp8", "video/x-h264"];
const ENCODED_AUDIO: &[&str] = &["audio/x-opus"];

/// Sink caps of roomsink's request pads: raw in any format, or one of the encoded formats.
pub fn sink_caps(medium: Medium) -> gst::Caps {
    let (raw, encoded) = match medium {
        Medium::Video => ("video/x-raw", ENCODED_VIDEO),
        Medium::Audio => ("audio/x-raw", ENCODED_AUDIO),
    };
    let mut caps = gst::Caps::new_empty_simple(raw);
    for name in encoded {
        caps.merge(gst::Caps::new_empty_simple(*name));
    }
    caps
}

/// The request pad templates of roomsink.
pub fn pad_templates() -> Vec<gst::PadTemplate> {
    [("video_%u", Medium::Video), ("audio_%u", Medium::Audio)]
        .into_iter()
        .map(|(name, medium)| {
            gst::PadTemplate::new(
                name,
                gst::PadDirection::Sink,
                gst::PadPresence::Request,
                &sink_caps(medium),
            )
            .expect("valid template")
        })
        .collect()
}

/// The codecs webrtcsink is told it may use. With shared encoding webrtcsink only ever sees
/// encoded input and only payloads it, so every codec roomsink takes encoded is listed (after
/// the configured ones, which keep their order): webrtcsink must know the input's codec, and
/// discovers only that one. Per viewer, webrtcsink encodes raw input itself and gets the
/// configured list unchanged (each listed codec costs a discovery encoder at start).
pub fn webrtcsink_caps(configured: &gst::Caps, medium: Medium, per_viewer: bool) -> gst::Caps {
    let mut caps = configured.clone();
    if !per_viewer {
        let encoded = match medium {
            Medium::Video => ENCODED_VIDEO,
            Medium::Audio => ENCODED_AUDIO,
        };
        for name in encoded {
            let codec = gst::Caps::new_empty_simple(*name);
            if !caps.can_intersect(&codec) {
                caps.merge(codec);
            }
        }
    }
    caps
}

/// Sets webrtcsink's codec lists ([`webrtcsink_caps`]) and its congestion control's start and
/// floor. Congestion control itself is webrtcsink's default (Google's) in both modes, left to
/// the user (`webrtcsink::congestion-control`): per viewer it steers each viewer's encoder,
/// shared its estimates steer the one encoder and its picture size (see `bitrate.rs`).
pub fn configure_webrtcsink(
    webrtcsink: &gst::Element,
    video_caps: &gst::Caps,
    audio_caps: &gst::Caps,
    per_viewer: bool,
) {
    webrtcsink.set_property(
        "video-caps",
        webrtcsink_caps(video_caps, Medium::Video, per_viewer),
    );
    webrtcsink.set_property(
        "audio-caps",
        webrtcsink_caps(audio_caps, Medium::Audio, per_viewer),
    );
    // Per-viewer encoders keep webrtcsink's 2 Mbit/s start and 1 kbit/s floor (see
    // `congestion::configure`); the shared encoder's are in `bitrate.rs`.
    // (Restored on each start: the mode may change between runs.)
    for (property, shared) in [
        ("start-bitrate", super::bitrate::START_ESTIMATE),
        ("min-bitrate", super::bitrate::MIN_ESTIMATE),
    ] {
        if per_viewer {
            let default = webrtcsink
                .find_property(property)
                .expect("webrtcsink property")
                .default_value()
                .clone();
            webrtcsink.set_property_from_value(property, &default);
        } else {
            webrtcsink.set_property(property, shared);
        }
    }
}

/// What an input needs to know to build its branch.
#[derive(Clone)]
pub struct Config {
    pub medium: Medium,
    /// `encode-per-viewer`: leave encoding raw input to webrtcsink.
    pub per_viewer: bool,
    /// The shared encoder's codec: the first structure of `video-caps` / `audio-caps`.
    pub codec: gst::Structure,
    /// The shared video encoder's rates (`video-bitrate`, the viewers' estimates).
    pub video_rate: Arc<VideoRate>,
    /// Whether anyone watches: without a session the branch drops its input (`demand.rs`).
    pub demand: Arc<super::demand::Demand>,
    /// `mute-video` / `mute-audio`, read by the probes on the streaming thread.
    pub muted: Arc<AtomicBool>,
}

/// Makes the branch of one input (request pad `name`): a bin whose `sink` pad takes raw or
/// encoded media ([`sink_caps`]) and whose `src` pad gives webrtcsink what it should get. Inside,
/// `input` (a capsfilter) is there from the start; the rest is built, and `src` pointed at its
/// end, at the first CAPS event. The caller adds the bin to roomsink and links `src`; removing
/// the bin removes everything the branch made (including a muted encoded input's blank encoder).
pub fn new_branch(name: &str, config: Config) -> Result<gst::Bin, glib::BoolError> {
    let branch = gst::Bin::builder().name(format!("{name}-branch")).build();
    let input = gst::ElementFactory::make("capsfilter")
        .property("caps", sink_caps(config.medium))
        .build()?;
    branch.add(&input)?;
    let sink = gst::GhostPad::builder_with_target(&input.static_pad("sink").unwrap())?
        .name("sink")
        .build();
    let src = gst::GhostPad::builder(gst::PadDirection::Src)
        .name("src")
        .build();
    branch.add_pad(&sink)?;
    branch.add_pad(&src)?;
    let weak_branch = branch.downgrade();
    input.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::Caps(caps) = event.view() else {
                return gst::PadProbeReturn::Ok;
            };
            // Weak: the bin owns `input`, whose pad holds this closure.
            let Some(branch) = weak_branch.upgrade() else {
                return gst::PadProbeReturn::Remove;
            };
            let src = branch.static_pad("src").and_downcast::<gst::GhostPad>();
            let built = src
                .ok_or_else(|| glib::bool_error!("the branch lost its src pad"))
                .and_then(|src| build_branch(&branch, pad, caps.caps(), &src, &config));
            if let Err(err) = built {
                gst::element_error!(
                    branch,
                    gst::CoreError::Negotiation,
                    ("roomsink: cannot publish {}: {}", caps.caps(), err)
                );
                return gst::PadProbeReturn::Drop;
            }
            gst::PadProbeReturn::Remove
        },
    );
    Ok(branch)
}

/// Builds what follows `input` for `caps` in `bin` and points the bin's `src` at its end.
fn build_branch(
    bin: &gst::Bin,
    input: &gst::Pad,
    caps: &gst::CapsRef,
    src: &gst::GhostPad,
    config: &Config,
) -> Result<(), glib::BoolError> {
    let name = caps.structure(0).map(|s| s.name().as_str()).unwrap_or("");
    let raw = name.ends_with("/x-raw");
    let mut elements = Vec::new();
    let mut blanked = None;
    let mut sized = None;
    if raw {
        elements.extend(raw_converter(config.medium)?);
        // The mute probe goes where the format is I420 / S16: after the converter's capsfilter.
        blanked = elements
            .last()
            .map(|filter| filter.static_pad("src").unwrap());
        // Each buffer's level, after the mute (silence measures silent), for the RFC 6464
        // extension of every viewer's packets (audio_level.rs).
        if config.medium == Medium::Audio {
            elements.push(crate::audio_level::meter()?);
        }
        if !config.per_viewer {
            elements.push(encoder_queue()?);
            if config.medium == Medium::Video {
                elements.extend(scaler()?);
                sized = elements.last().cloned();
            }
            // Viewers' estimates adjust it from their first feedback on.
            elements.extend(encoders::encoder_for(
                config.codec.name(),
                config.video_rate.target(),
            )?);
        }
    }
    let refs: Vec<&gst::Element> = elements.iter().collect();
    bin.add_many(&refs)?;
    let out = match elements.last() {
        Some(last) => {
            input
                .link(&elements[0].static_pad("sink").unwrap())
                .map_err(encoders::link_error)?;
            gst::Element::link_many(&refs)?;
            last.static_pad("src").unwrap()
        }
        None => passthrough::build(bin, input, caps, config.medium, config.muted.clone())?,
    };
    if let Some(blanked) = blanked {
        mute::install(&blanked, config.medium, config.muted.clone());
    }
    if config.medium == Medium::Video && !(raw && config.per_viewer) {
        KeyframeGate::install(&out, KEYFRAME_MIN_INTERVAL);
    }
    if raw && !config.per_viewer {
        keep_continuous(&out);
    }
    // Raw input per viewer is encoded by webrtcsink's sessions, which exist only with viewers.
    if !(raw && config.per_viewer) {
        super::demand::install(input, config.demand.clone(), raw);
    }
    if let Some(size) = sized {
        resolution::install(&size, &out, config.video_rate.clone());
        without_streamheader(&out);
    }
    src.set_target(Some(&out))?;
    for element in &elements {
        element.sync_state_with_parent()?;
    }
    Ok(())
}

/// The encoder gets a thread of its own, as webrtcsink's per-viewer encoders have: encoding in
/// the capture thread would make a live source late whenever a frame takes long to encode, and
/// viewers would see bursts and stalls. On a machine too slow to encode every frame the oldest
/// waiting frame is dropped (a lower frame rate rather than a growing delay).
fn encoder_queue() -> Result<gst::Element, glib::BoolError> {
    gst::ElementFactory::make("queue")
        .property("max-size-buffers", 2u32)
        .property("max-size-bytes", 0u32)
        .property("max-size-time", 0u64)
        .property_from_str("leaky", "downstream")
        .build()
}

/// `videoscale ! capsfilter`: the shared video encoder's picture size (unscaled until
/// `resolution.rs` says otherwise). In the encoder's thread, after its queue.
fn scaler() -> Result<Vec<gst::Element>, glib::BoolError> {
    Ok(vec![
        gst::ElementFactory::make("videoscale").build()?,
        gst::ElementFactory::make("capsfilter")
            .property("caps", resolution::caps_for(0, None))
            .build()?,
    ])
}

/// `convert ! capsfilter` to I420 / interleaved S16 (the formats the mute probe blanks).
/// Audio is also resampled: Opus takes 48 kHz and a few lower rates only.
fn raw_converter(medium: Medium) -> Result<Vec<gst::Element>, glib::BoolError> {
    Ok(match medium {
        Medium::Video => vec![
            gst::ElementFactory::make("videoconvert").build()?,
            gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-raw")
                        .field("format", "I420")
                        .build(),
                )
                .build()?,
        ],
        Medium::Audio => vec![
            gst::ElementFactory::make("audioconvert").build()?,
            gst::ElementFactory::make("audioresample").build()?,
            gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("audio/x-raw")
                        .field("format", "S16LE")
                        .field("layout", "interleaved")
                        .build(),
                )
                .build()?,
        ],
    })
}

/// Clears DISCONT on the shared encoder's output. The encoder marks a frame DISCONT when raw
/// frames before it were dropped (the leaky queue on a busy machine), but its output is one
/// continuous stream that decodes fine; webrtcsink's stream producer would instead make every
/// viewer drop frames until the next keyframe, freezing all of them for up to
/// [`KEYFRAME_MIN_INTERVAL`] at each dropped raw frame.
fn keep_continuous(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if info
            .buffer()
            .is_some_and(|b| b.flags().contains(gst::BufferFlags::DISCONT))
            && let Some(buffer) = info.buffer_mut()
        {
            buffer.make_mut().unset_flags(gst::BufferFlags::DISCONT);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Takes `streamheader` out of the caps leaving `pad`. vp8enc puts the picture size in it, and
/// webrtcsink, which lets the size change without renegotiating, refuses any other change of
/// caps (the stream failed with "not-negotiated" at the first smaller picture). Only muxers
/// read it; RTP does not carry it.
fn without_streamheader(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut caps = caps.caps_owned();
        if caps
            .structure(0)
            .is_some_and(|s| s.has_field("streamheader"))
        {
            caps.make_mut()
                .structure_mut(0)
                .expect("checked above")
                .remove_field("streamheader");
            info.data = Some(gst::PadProbeData::Event(gst::event::Caps::new(&caps)));
        }
        gst::PadProbeReturn::Ok
    });
}

/// Coalesces keyframe requests on their way upstream through `pad`. Every viewer's session asks
/// for a keyframe when it starts and when it lost what NACK/RTX could not repair (webrtcsink's
/// stream producer even asks again on every frame until a keyframe comes). One request per
/// [`KEYFRAME_MIN_INTERVAL`] goes through; a request inside the interval is remembered and
/// sent when the interval is over, unless a keyframe went out meanwhile.
struct KeyframeGate {
    min_interval: Duration,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    last_forwarded: Option<Instant>,
    pending: bool,
}

impl KeyframeGate {
    fn install(pad: &gst::Pad, min_interval: Duration) {
        let gate = Arc::new(KeyframeGate {
            min_interval,
            state: Mutex::default(),
        });
        let upstream = gate.clone();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            match &info.data {
                Some(gst::PadProbeData::Event(event))
                    if gst_video::UpstreamForceKeyUnitEvent::parse(event).is_ok() =>
                {
                    if upstream.admit(Instant::now()) {
                        gst::debug!(super::bitrate::CAT, "keyframe request forwarded");
                        gst::PadProbeReturn::Ok
                    } else {
                        gst::debug!(super::bitrate::CAT, "keyframe request coalesced");
                        // Taken and handled rather than dropped: GStreamer 1.22 warns about
                        // a NULL unref when an upstream event probe returns DROP.
                        info.data = None;
                        gst::PadProbeReturn::Handled
                    }
                }
                _ => gst::PadProbeReturn::Ok,
            }
        });
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let keyframe = info
                .buffer()
                .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            if keyframe {
                gst::debug!(
                    super::bitrate::CAT,
                    "keyframe out, {} bytes",
                    info.buffer().map_or(0, |b| b.size())
                );
            }
            if gate.due(keyframe, Instant::now()) {
                // Sent without the lock; the upstream probe above admits it.
                pad.send_event(
                    gst_video::UpstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build(),
                );
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Whether a request arriving `now` goes upstream; otherwise it is remembered.
    fn admit(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap();
        let open = state
            .last_forwarded
            .is_none_or(|last| now.duration_since(last) >= self.min_interval);
        if open {
            state.last_forwarded = Some(now);
            state.pending = false;
        } else {
            state.pending = true;
        }
        open
    }

    /// Whether a remembered request should be sent now that a buffer passes.
    fn due(&self, keyframe: bool, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap();
        if keyframe {
            state.pending = false;
            return false;
        }
        state.pending
            && state
                .last_forwarded
                .is_none_or(|last| now.duration_since(last) >= self.min_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_requests_makes_one_keyframe_request_per_interval() {
        let gate = KeyframeGate {
            min_interval: Duration::from_millis(500),
            state: Mutex::default(),
        };
        let start = Instant::now();
        // 100 requests in one second (every 10 ms): two go through.
        let admitted = (0..100)
            .filter(|i| gate.admit(start + Duration::from_millis(i * 10)))
            .count();
        assert_eq!(admitted, 2);
        // The last ones were remembered: the next delta frame after the interval asks again.
        assert!(!gate.due(false, start + Duration::from_millis(999)));
        assert!(gate.due(false, start + Duration::from_millis(1000)));
        // A keyframe answers what was remembered.
        assert!(!gate.due(true, start + Duration::from_millis(1002)));
        assert!(!gate.due(false, start + Duration::from_millis(1600)));
    }
}
