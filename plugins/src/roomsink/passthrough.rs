//! Encoded input (VP8, H.264, Opus) published as it is, and what mute means for it.
//!
//! ```text
//! input ─ [h264parse ─ byte-stream] ──────────────┬─ input-selector ─ out
//!            (while muted) appsrc: black/silence ─ encoder ─┘
//! ```
//!
//! Without decoding there is nothing to blank, so while muted the selector carries a second,
//! small encoder's output instead: black frames (silence), one per input buffer, with that
//! buffer's running time, in the input's codec and size. That encoder is made at the first
//! mute (until then the branch holds no encoder) and encodes nothing while unmuted.
//! Switches happen on keyframes only, so no viewer decodes a delta frame against the wrong
//! picture: mute takes effect at the black encoder's first (forced) keyframe, unmute at the
//! input's next keyframe, which roomsink asks upstream for (an encoder in the pipeline honours
//! that at once; a file's stream comes back at its next keyframe, black until then).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use super::encoders;
use crate::mute::Medium;

/// Bitrate of the black-frame encoder: a still black picture needs next to nothing.
const BLANK_VIDEO_BITRATE: u32 = 200_000;
/// Size of the black frames when the input's caps do not say.
const FALLBACK_SIZE: (i32, i32) = (320, 240);
/// Opus always decodes at 48 kHz.
const OPUS_RATE: i32 = 48_000;
/// How often roomsink asks upstream for the keyframe that ends a mute.
const UNMUTE_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Builds the pass-through branch after `input` (whose caps are `caps`) and returns the pad to
/// link to webrtcsink.
pub fn build(
    bin: &gst::Bin,
    input: &gst::Pad,
    caps: &gst::CapsRef,
    medium: Medium,
    muted: Arc<AtomicBool>,
) -> Result<gst::Pad, glib::BoolError> {
    let codec = caps
        .structure(0)
        .ok_or_else(|| glib::bool_error!("empty caps"))?;
    let codec_name = codec.name().to_string();

    // H.264 goes on as byte-stream with parameter sets before every keyframe, so that the
    // black stream (with its own) can stand in without a caps change.
    let mut input_chain = Vec::new();
    if codec_name == "video/x-h264" {
        input_chain.extend(h264_byte_stream()?);
    }
    let selector = gst::ElementFactory::make("input-selector")
        .property("sync-streams", false)
        .build()?;
    bin.add(&selector)?;
    let refs: Vec<&gst::Element> = input_chain.iter().collect();
    bin.add_many(&refs)?;
    let input_out = match input_chain.first() {
        Some(first) => {
            gst::Element::link_many(&refs)?;
            input
                .link(&first.static_pad("sink").unwrap())
                .map_err(encoders::link_error)?;
            input_chain.last().unwrap().static_pad("src").unwrap()
        }
        None => input.clone(),
    };
    let input_pad = selector
        .request_pad_simple("sink_%u")
        .ok_or_else(|| glib::bool_error!("input-selector refused a pad"))?;
    input_out.link(&input_pad).map_err(encoders::link_error)?;
    selector.set_property("active-pad", &input_pad);
    let raw_caps = blank_caps(codec, medium);
    let switch = Arc::new(Switch {
        bin: bin.downgrade(),
        codec: codec_name,
        selector: selector.clone(),
        input_pad,
        black_frame: (medium == Medium::Video).then(|| black_i420(&raw_caps)),
        audio_bytes_per_ns: audio_bytes_per_ns(&raw_caps),
        raw_caps,
        blank: Mutex::default(),
        muted,
        state: Mutex::default(),
    });
    switch.watch_input(&input_out);
    for element in input_chain.iter().chain([&selector]) {
        element.sync_state_with_parent()?;
    }
    Ok(selector.static_pad("src").unwrap())
}

/// `h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au`.
fn h264_byte_stream() -> Result<Vec<gst::Element>, glib::BoolError> {
    Ok(vec![
        gst::ElementFactory::make("h264parse")
            .property("config-interval", -1i32)
            .build()?,
        gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            )
            .build()?,
    ])
}

/// Raw caps of the black frames (the input's size and rate) or of the silence (its channels).
fn blank_caps(codec: &gst::StructureRef, medium: Medium) -> gst::Caps {
    match medium {
        Medium::Video => {
            let width = codec.get::<i32>("width").unwrap_or(FALLBACK_SIZE.0);
            let height = codec.get::<i32>("height").unwrap_or(FALLBACK_SIZE.1);
            let framerate = codec
                .get::<gst::Fraction>("framerate")
                .unwrap_or(gst::Fraction::new(0, 1));
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", width)
                .field("height", height)
                .field("framerate", framerate)
                .build()
        }
        Medium::Audio => gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("layout", "interleaved")
            .field("rate", OPUS_RATE)
            .field("channels", codec.get::<i32>("channels").unwrap_or(2))
            .build(),
    }
}

/// One limited-range black I420 frame of `caps`.
fn black_i420(caps: &gst::Caps) -> gst::Buffer {
    let info = gst_video::VideoInfo::from_caps(caps).expect("I420 caps");
    let mut buffer = gst::Buffer::with_size(info.size()).expect("allocation");
    {
        let buffer = buffer.get_mut().unwrap();
        let mut map = buffer.map_writable().unwrap();
        let chroma = info.offset()[1];
        map[..chroma].fill(16);
        map[chroma..].fill(128);
    }
    buffer
}

/// Bytes of S16 silence per nanosecond (0 for video).
fn audio_bytes_per_ns(caps: &gst::Caps) -> f64 {
    gst_audio::AudioInfo::from_caps(caps)
        .map(|info| info.bpf() as f64 * info.rate() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// Which of the input and the blank stream the selector carries, and when it switches.
struct Switch {
    bin: glib::WeakRef<gst::Bin>,
    /// The input's codec (caps name), which the blank stream uses too.
    codec: String,
    selector: gst::Element,
    input_pad: gst::Pad,
    /// Caps of the raw black frames / silence.
    raw_caps: gst::Caps,
    /// Made at the first mute.
    blank: Mutex<Option<Blank>>,
    black_frame: Option<gst::Buffer>,
    audio_bytes_per_ns: f64,
    muted: Arc<AtomicBool>,
    state: Mutex<SwitchState>,
}

/// `appsrc ! encoder [! h264parse ! byte-stream]` into the selector's second pad.
#[derive(Clone)]
struct Blank {
    appsrc: gst_app::AppSrc,
    encoder_src: gst::Pad,
    selector_pad: gst::Pad,
}

#[derive(Default)]
struct SwitchState {
    /// Blank buffers are being made (from mute until the selector is back on the input).
    blanking: bool,
    last_unmute_request: Option<Instant>,
}

fn keyframe_request() -> gst::Event {
    gst_video::UpstreamForceKeyUnitEvent::builder()
        .all_headers(true)
        .build()
}

impl Switch {
    fn watch_input(self: &Arc<Self>, input_out: &gst::Pad) {
        let switch = self.clone();
        input_out.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(buffer) = info.buffer() {
                switch.on_input(pad, buffer);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// The blank branch, made on first use (on the input's streaming thread, as decodebin
    /// adds its decoders).
    fn blank(self: &Arc<Self>) -> Option<Blank> {
        let mut blank = self.blank.lock().unwrap();
        if blank.is_none() {
            match self.make_blank() {
                Ok(made) => *blank = Some(made),
                Err(err) => {
                    if let Some(bin) = self.bin.upgrade() {
                        gst::element_warning!(
                            bin,
                            gst::CoreError::Failed,
                            ("roomsink: cannot make the muted stream: {}", err)
                        );
                    }
                }
            }
        }
        blank.clone()
    }

    fn make_blank(self: &Arc<Self>) -> Result<Blank, glib::BoolError> {
        let bin = self
            .bin
            .upgrade()
            .ok_or_else(|| glib::bool_error!("roomsink is gone"))?;
        let appsrc = gst_app::AppSrc::builder()
            .caps(&self.raw_caps)
            .format(gst::Format::Time)
            .is_live(true)
            .max_buffers(4)
            .leaky_type(gst_app::AppLeakyType::Upstream)
            .build();
        let mut chain = vec![appsrc.clone().upcast::<gst::Element>()];
        chain.extend(encoders::encoder_for(&self.codec, BLANK_VIDEO_BITRATE)?);
        if self.codec == "video/x-h264" {
            chain.extend(h264_byte_stream()?);
        }
        let refs: Vec<&gst::Element> = chain.iter().collect();
        bin.add_many(&refs)?;
        gst::Element::link_many(&refs)?;
        let selector_pad = self
            .selector
            .request_pad_simple("sink_%u")
            .ok_or_else(|| glib::bool_error!("input-selector refused a pad"))?;
        let out = chain.last().unwrap().static_pad("src").unwrap();
        out.link(&selector_pad).map_err(encoders::link_error)?;
        let switch = Arc::downgrade(self);
        out.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                // Weak: the switch owns the blank branch whose pad holds this closure.
                let Some(switch) = switch.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => switch.on_blank(buffer),
                    // The blank stream claims the input's caps: same codec and size, so
                    // webrtcsink sees no renegotiation when the selector switches.
                    Some(gst::PadProbeData::Event(event))
                        if event.type_() == gst::EventType::Caps =>
                    {
                        if let Some(caps) = switch.input_pad.current_caps() {
                            *event = gst::event::Caps::new(&caps);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        for element in &chain {
            element.sync_state_with_parent()?;
        }
        Ok(Blank {
            appsrc,
            encoder_src: chain[1].static_pad("src").unwrap(),
            selector_pad,
        })
    }

    fn blank_active(&self) -> bool {
        self.selector
            .property::<Option<gst::Pad>>("active-pad")
            .as_ref()
            != Some(&self.input_pad)
    }

    /// Every input buffer: while muted (or until the input has a keyframe again) a blank
    /// buffer with the same running time goes to the blank encoder.
    fn on_input(self: &Arc<Self>, pad: &gst::Pad, buffer: &gst::BufferRef) {
        let muted = self.muted.load(Ordering::Relaxed);
        let blank_active = self.blank_active();
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if !muted && blank_active {
            if keyframe {
                self.selector.set_property("active-pad", &self.input_pad);
                self.state.lock().unwrap().blanking = false;
                return;
            }
            let mut state = self.state.lock().unwrap();
            let due = state
                .last_unmute_request
                .is_none_or(|t| t.elapsed() >= UNMUTE_REQUEST_INTERVAL);
            if due {
                state.last_unmute_request = Some(Instant::now());
                drop(state);
                pad.send_event(keyframe_request());
            }
        }
        if !(muted || blank_active) {
            return;
        }
        let Some(blank) = self.blank() else {
            return;
        };
        let starting = !std::mem::replace(&mut self.state.lock().unwrap().blanking, true);
        if starting {
            // The blank stream must begin with a keyframe for the switch to it.
            blank.encoder_src.send_event(keyframe_request());
        }
        if let Some(buffer) = self.blank_for(pad, buffer) {
            let _ = blank.appsrc.push_buffer(buffer);
        }
    }

    /// A black frame (silence of the same length) stamped with `buffer`'s running time.
    fn blank_for(&self, pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<gst::Buffer> {
        let segment = pad.sticky_event::<gst::event::Segment>(0)?;
        let segment = segment.segment().downcast_ref::<gst::ClockTime>()?.clone();
        let running_time = segment.to_running_time(buffer.pts()?)?;
        let duration = buffer.duration();
        let mut blank = match &self.black_frame {
            Some(frame) => frame.clone(),
            None => {
                let ns = duration
                    .unwrap_or(gst::ClockTime::from_mseconds(20))
                    .nseconds();
                let bytes = (ns as f64 * self.audio_bytes_per_ns) as usize & !3;
                let mut silence = gst::Buffer::with_size(bytes).ok()?;
                silence.get_mut()?.map_writable().ok()?.fill(0);
                silence
            }
        };
        let blank_ref = blank.make_mut();
        blank_ref.set_pts(running_time);
        blank_ref.set_duration(duration);
        Some(blank)
    }

    /// Every blank-encoder buffer: the switch to it waits for its first keyframe.
    fn on_blank(&self, buffer: &gst::Buffer) {
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if keyframe && self.muted.load(Ordering::Relaxed) && !self.blank_active() {
            let pad = self
                .blank
                .lock()
                .unwrap()
                .as_ref()
                .map(|b| b.selector_pad.clone());
            if let Some(pad) = pad {
                self.selector.set_property("active-pad", &pad);
            }
        }
    }
}
