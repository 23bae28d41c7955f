//! Media helpers: pipelines that publish solid colours into a room, and a viewer pipeline whose
//! roomsrc pads end in appsinks that record what was decoded (frame counts, average colour,
//! audio buffers, EOS and removed pads), plus bus helpers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;

/// How long a media test waits for a condition before failing (ICE + DTLS + first keyframe
/// take about a second on this machine; debug builds and a loaded CI machine take longer).
pub const MEDIA_WAIT: Duration = Duration::from_secs(30);

/// Initialises GStreamer once and registers the room plugin statically.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstroom::plugin_register_static().expect("register the room plugin");
    });
}

/// An RGB colour.
pub type Rgb = [u8; 3];

/// `videotestsrc` foreground-color of an RGB colour (ARGB).
pub fn argb(rgb: Rgb) -> u32 {
    0xff00_0000 | (rgb[0] as u32) << 16 | (rgb[1] as u32) << 8 | rgb[2] as u32
}

/// Whether two colours are within `tolerance` on every channel.
pub fn close_to(a: Rgb, b: Rgb, tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

/// A launch line publishing a live solid colour (320x240@15) and a tone as `username`.
/// `extra` is appended to roomsink's properties.
pub fn publisher_line(
    server: &str,
    room: &str,
    username: &str,
    colour: Rgb,
    extra: &str,
) -> String {
    format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={fg} ! \
         video/x-raw,width=320,height=240,framerate=15/1 ! \
         roomsink name=sink server-url={server} room={room} username={username} {extra} \
         audiotestsrc is-live=true wave=sine ! sink.",
        fg = argb(colour)
    )
}

/// Parses and starts a pipeline.
pub fn start(line: &str) -> gst::Pipeline {
    let pipeline = gst::parse::launch(line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .expect("pipeline starts");
    pipeline
}

/// Sets a pipeline to NULL (leaving the room).
pub fn stop(pipeline: &gst::Pipeline) {
    pipeline.set_state(gst::State::Null).unwrap();
}

/// What a viewer's appsinks saw, per roomsrc pad name.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Decoded video frames per pad.
    pub frames: BTreeMap<String, usize>,
    /// Average colour of the latest frame per pad (centre region).
    pub colour: BTreeMap<String, Rgb>,
    /// Decoded audio buffers per pad.
    pub audio_buffers: BTreeMap<String, usize>,
    /// RMS of the latest audio buffer per pad (0 = silence, full-scale sine ≈ 0.7).
    pub audio_rms: BTreeMap<String, f64>,
    /// Pads that got EOS.
    pub eos: Vec<String>,
    /// Pads removed from roomsrc.
    pub removed: Vec<String>,
    /// Error messages the pipeline posted.
    pub errors: Vec<String>,
}

/// A pipeline `roomsrc ! (per pad) appsink` that records what arrives.
pub struct Viewer {
    pub pipeline: gst::Pipeline,
    pub roomsrc: gst::Element,
    pub seen: Arc<Mutex<Seen>>,
}

impl Viewer {
    /// Builds (not starts) a viewer; `props` are roomsrc properties (`room=... username=...`).
    /// A second, permanent branch (a silent live source into a fakesink) stands for the rest
    /// of an application, so that one participant's EOS is not the pipeline's.
    pub fn new(server: &str, props: &str) -> Viewer {
        let pipeline = gst::parse::launch(&format!(
            "roomsrc name=room server-url={server} {props}  audiotestsrc is-live=true wave=silence ! fakesink"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let roomsrc = pipeline.by_name("room").unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let weak = pipeline.downgrade();
        let record = seen.clone();
        roomsrc.connect_pad_added(move |_, pad| {
            // Weak: the pipeline owns roomsrc, which owns this closure.
            if let Some(pipeline) = weak.upgrade() {
                attach_branch(&pipeline, pad, record.clone());
            }
        });
        let record = seen.clone();
        roomsrc.connect_pad_removed(move |_, pad| {
            record.lock().unwrap().removed.push(pad.name().to_string())
        });
        // Errors are noted as they are posted, leaving every message on the bus for
        // `wait_for_event` (popping errors off the bus would discard the others).
        let record = seen.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            if let gst::MessageView::Error(err) = msg.view() {
                record
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("{} ({:?})", err.error(), err.debug()));
            }
            gst::BusSyncReply::Pass
        });
        Viewer {
            pipeline,
            roomsrc,
            seen,
        }
    }

    /// Starts it.
    pub fn start(self) -> Self {
        self.pipeline
            .set_state(gst::State::Playing)
            .expect("viewer starts");
        self
    }

    /// A copy of what was seen so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `what` holds for the recorded data; panics with `description` after
    /// [`MEDIA_WAIT`] or on a pipeline error.
    pub fn wait(&self, description: &str, what: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            let seen = self.seen();
            assert!(
                seen.errors.is_empty(),
                "pipeline error while waiting for {description}: {:?}",
                seen.errors
            );
            if what(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {description}; seen: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Adds to `pipeline` a branch that takes decoded media from a roomsrc pad named `video…` (as
/// RGB) or `audio…` (as S16LE) into an appsink; returns the branch and its appsink. The caller
/// links the pad to the branch's sink pad.
pub fn decode_branch(pipeline: &gst::Pipeline, video: bool) -> (gst::Bin, gst_app::AppSink) {
    let line = if video {
        "queue ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    } else {
        "queue ! audioconvert ! audio/x-raw,format=S16LE ! appsink name=sink sync=false"
    };
    let branch = gst::parse::bin_from_description(line, true).unwrap();
    pipeline.add(&branch).unwrap();
    let appsink = branch
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    (branch, appsink)
}

fn attach_branch(pipeline: &gst::Pipeline, pad: &gst::Pad, seen: Arc<Mutex<Seen>>) {
    let name = pad.name().to_string();
    let video = name.starts_with("video");
    let (branch, appsink) = decode_branch(pipeline, video);
    let record = seen.clone();
    let pad_name = name.clone();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut seen = record.lock().unwrap();
                if video {
                    *seen.frames.entry(pad_name.clone()).or_default() += 1;
                    if let Some(colour) = centre_colour(&sample) {
                        seen.colour.insert(pad_name.clone(), colour);
                    }
                } else {
                    *seen.audio_buffers.entry(pad_name.clone()).or_default() += 1;
                    if let Some(rms) = rms(&sample) {
                        seen.audio_rms.insert(pad_name.clone(), rms);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let record = seen;
    let pad_name = name.clone();
    branch.static_pad("sink").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && event.type_() == gst::EventType::Eos
            {
                record.lock().unwrap().eos.push(pad_name.clone());
            }
            gst::PadProbeReturn::Ok
        },
    );
    branch.sync_state_with_parent().unwrap();
    pad.link(&branch.static_pad("sink").unwrap()).unwrap();
}

/// Root mean square of an S16LE buffer, as a fraction of full scale (0 = silence; a full-scale
/// sine is about 0.7).
fn rms(sample: &gst::Sample) -> Option<f64> {
    let map = sample.buffer()?.map_readable().ok()?;
    let samples: Vec<f64> = map
        .as_slice()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64 / 32768.0)
        .collect();
    if samples.is_empty() {
        return None;
    }
    Some((samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64).sqrt())
}

/// Average RGB over the central quarter of an RGB frame.
fn centre_colour(sample: &gst::Sample) -> Option<Rgb> {
    region_colour(sample, (0.25, 0.25, 0.75, 0.75))
}

/// Average RGB over a region of an RGB frame, given as fractions (x0, y0, x1, y1).
pub fn region_colour(sample: &gst::Sample, region: (f64, f64, f64, f64)) -> Option<Rgb> {
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let buffer = sample.buffer()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).ok()?;
    let (w, h, stride) = (
        info.width() as f64,
        info.height() as f64,
        frame.plane_stride()[0] as usize,
    );
    let data = frame.plane_data(0).ok()?;
    let (x0, y0, x1, y1) = (
        (region.0 * w) as usize,
        (region.1 * h) as usize,
        (region.2 * w) as usize,
        (region.3 * h) as usize,
    );
    let mut sum = [0u64; 3];
    let mut n = 0u64;
    for y in y0..y1 {
        for x in x0..x1 {
            let p = y * stride + x * 3;
            for c in 0..3 {
                sum[c] += data[p + c] as u64;
            }
            n += 1;
        }
    }
    (n > 0).then(|| sum.map(|s| (s / n) as u8))
}

/// Panics with the error if the pipeline posted one. Pops the bus: other messages queued
/// before the error are discarded (use on pipelines nobody waits for events on).
pub fn fail_on_error(pipeline: &gst::Pipeline) {
    let bus = pipeline.bus().unwrap();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            panic!(
                "pipeline error from {:?}: {} ({:?})",
                err.src().map(|s| s.path_string()),
                err.error(),
                err.debug()
            );
        }
    }
}

/// The `webrtcsink` inside a roomsink (its sessions' signals are there).
pub fn webrtcsink_of(roomsink: &gst::Element) -> gst::Element {
    roomsink
        .downcast_ref::<gst::Bin>()
        .expect("roomsink is a bin")
        .by_name("webrtcsink")
        .expect("roomsink holds a webrtcsink")
}

/// How far a decoded solid colour may be from the source's at 320x240 VP8 (encoding noise).
pub const COLOUR_TOLERANCE: u8 = 40;

/// Waits until `viewer` has decoded 5 frames on `pad` and the latest is `colour` (within
/// [`COLOUR_TOLERANCE`]).
pub fn shows(viewer: &Viewer, pad: &str, colour: Rgb) -> Seen {
    viewer.wait(&format!("{pad} showing {colour:?}"), |s| {
        s.frames.get(pad).copied().unwrap_or(0) >= 5
            && s.colour
                .get(pad)
                .is_some_and(|c| close_to(*c, colour, COLOUR_TOLERANCE))
    })
}

/// A publisher pipeline, not started yet (so that signal handlers go on first), and its
/// roomsink, named `sink` in `line`.
pub fn publisher(line: &str) -> (gst::Pipeline, gst::Element) {
    let pipeline = gst::parse::launch(line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    (pipeline, sink)
}

/// Waits for an element message named `name` whose structure satisfies `matches`; other
/// messages are dropped. Panics on a pipeline error or after [`MEDIA_WAIT`].
pub fn wait_for_event(
    pipeline: &gst::Pipeline,
    name: &str,
    matches: impl Fn(&gst::StructureRef) -> bool,
) -> gst::Structure {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + MEDIA_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {name} message within {MEDIA_WAIT:?}");
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(left.as_millis() as u64),
            &[gst::MessageType::Element, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => panic!(
                "pipeline error while waiting for {name}: {} ({:?})",
                err.error(),
                err.debug()
            ),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == name
                    && matches(s)
                {
                    return s.to_owned();
                }
            }
            _ => {}
        }
    }
}

/// Waits for the pipeline's first error and returns its message text.
pub fn wait_for_error(pipeline: &gst::Pipeline) -> String {
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(MEDIA_WAIT.as_secs()),
            &[gst::MessageType::Error],
        )
        .expect("an error message");
    match msg.view() {
        gst::MessageView::Error(err) => err.error().to_string(),
        _ => unreachable!(),
    }
}
