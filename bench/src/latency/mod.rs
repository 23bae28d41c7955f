//! `gst-room bench latency`: glass-to-glass latency on every path a picture takes through a
//! room, in one process tree on one host (one clock), with the anchor of each path measured in
//! the same run.
//!
//! ```text
//! gst-gst:         videotestsrc ! (stamp: code n, time of n) ! roomsink ──room── roomsrc ! raw ! fakesink sync=true (read n)
//! gst-browser:     the same publisher ──room── Chromium page: <video> → canvas in requestVideoFrameCallback (read n)
//! browser-gst:     Chromium page, fake camera from a Y4M (frame n carries n) ──room── roomsrc ! … ! fakesink sync=true
//! browser-browser: that page ──room── another Chromium's page
//! ```
//!
//! Every frame carries a code (a 16-bit number as black and white blocks, [`code`]). The
//! publisher notes when it stamped each number (gst: when the frame passes the stamp; Chromium:
//! when its own preview of the camera shows the frame, [`browser`]); the viewer notes when it
//! shows each number it reads (gst: a synchronising fakesink's handoff, after the pipeline
//! latency including roomsrc's jitterbuffer; Chromium: the frame's `expectedDisplayTime`). The
//! difference is the displayed latency. Unreadable codes are counted, never guessed.
//!
//! Figures: `displayed_<path>` (and `_sfu` for rooms with `gst-room server --media sfu`), ms.
//! Anchors (same run): gst-gst — stock webrtcsink → webrtcsrc with default settings over the
//! stock signalling server; browser-browser and the mixed paths — two RTCPeerConnections of one
//! Chromium page connected directly (no server, no gst): what Chromium's own capture, encode,
//! jitter buffer and render cost. gst-gst also reports `decoded_gst-gst` (capture → decoded,
//! roomsrc's pad), the roomsrc `latency` sweep of earlier runs (`displayed_latency<L>ms`), and
//! `audio_gst-gst` (audiolatency's tick through the room; anchor: the same through stock
//! webrtcsink → webrtcsrc).

mod audio;
mod browser;
pub mod code;
mod peer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gst::glib;
use gst::prelude::*;
use gst_video::prelude::*;

pub use peer::{PeerArgs, run as peer};

use super::{Child, Figure, PICTURE, Running, Summary, ms};

const ROOM: &str = "latency";
const PUBLISHER: &str = "pub";
const CAPS: &str = "video/x-raw,format=I420,width=640,height=480,framerate=30/1";

/// A path through a room: who publishes, who views.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathArg {
    #[value(name = "gst-gst")]
    GstGst,
    #[value(name = "gst-browser")]
    GstBrowser,
    #[value(name = "browser-gst")]
    BrowserGst,
    #[value(name = "browser-browser")]
    BrowserBrowser,
    /// Every path.
    All,
}

impl PathArg {
    const EVERY: [PathArg; 4] = [
        PathArg::GstGst,
        PathArg::GstBrowser,
        PathArg::BrowserGst,
        PathArg::BrowserBrowser,
    ];

    fn name(self) -> &'static str {
        match self {
            PathArg::GstGst => "gst-gst",
            PathArg::GstBrowser => "gst-browser",
            PathArg::BrowserGst => "browser-gst",
            PathArg::BrowserBrowser => "browser-browser",
            PathArg::All => "all",
        }
    }
}

/// Where the room's media goes (`gst-room server --media`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaArg {
    Mesh,
    Sfu,
}

impl MediaArg {
    fn name(self) -> &'static str {
        match self {
            MediaArg::Mesh => "mesh",
            MediaArg::Sfu => "sfu",
        }
    }

    /// What figure names get: nothing for mesh rooms, `_sfu` for rooms through the server.
    fn suffix(self) -> &'static str {
        match self {
            MediaArg::Mesh => "",
            MediaArg::Sfu => "_sfu",
        }
    }

    fn server(self) -> anyhow::Result<(Child, String)> {
        Child::room_server_with(8, &["--media".to_owned(), self.name().to_owned()])
    }
}

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Paths to measure, comma-separated: gst-gst, gst-browser, browser-gst, browser-browser or
    /// all. The browser paths run tests/browser/bench-latency.mjs (Node 20+, `npm ci` in
    /// tests/browser, Chromium).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "gst-gst")]
    path: Vec<PathArg>,
    /// Rooms to measure in, comma-separated: mesh (peer to peer) and/or sfu (through the server).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mesh")]
    media: Vec<MediaArg>,
    /// Frames measured per viewer, after the warm-up (300 frames = 10 s at 30 fps).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// gst-gst: roomsrc `latency` values (ms) compared after the default one, comma-separated.
    /// (0 is left out: on GStreamer 1.22 a zero jitterbuffer latency stalls the stream.)
    #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
    latencies: Vec<u32>,
    /// gst-gst: only roomsrc's default latency, no sweep of `--latencies`.
    #[arg(long)]
    no_sweep: bool,
    /// Skip the anchors.
    #[arg(long)]
    no_anchor: bool,
    /// gst-gst: seconds of audio measured (one tick a second); 0 leaves audio out.
    #[arg(long, default_value_t = 10)]
    audio_seconds: u32,
    /// Decoded frames skipped after each viewer starts.
    #[arg(long, default_value_t = 60)]
    warmup: u32,
    /// Seconds a viewer may take to deliver its frames before it counts as failed.
    #[arg(long, default_value_t = 40)]
    timeout: u64,
}

pub fn run(args: LatencyArgs) -> anyhow::Result<Vec<Figure>> {
    super::init_gstreamer()?;
    let paths: Vec<PathArg> = if args.path.contains(&PathArg::All) {
        PathArg::EVERY.to_vec()
    } else {
        PathArg::EVERY
            .into_iter()
            .filter(|p| args.path.contains(p))
            .collect()
    };
    let mut figures = Vec::new();
    if paths.contains(&PathArg::GstGst) {
        let anchor = if args.no_anchor {
            Anchor::default()
        } else {
            gst_anchor(&args)?
        };
        for &media in &args.media {
            figures.extend(gst_gst(&args, media, &anchor)?);
        }
    }
    let browser_paths: Vec<&str> = paths
        .iter()
        .filter(|p| **p != PathArg::GstGst)
        .map(|p| p.name())
        .collect();
    if !browser_paths.is_empty() {
        figures.extend(browser::run(&args, &browser_paths)?);
    }
    if figures.is_empty() {
        bail!("no latency sample at all");
    }
    Ok(figures)
}

/// The stock stack's medians (ms), measured once per run.
#[derive(Default)]
struct Anchor {
    displayed: Option<f64>,
    audio: Option<f64>,
}

/// gst-gst in a room of `media`: roomsrc at its default latency (with the anchor), then the
/// `--latencies` sweep, then audio.
fn gst_gst(args: &LatencyArgs, media: MediaArg, anchor: &Anchor) -> anyhow::Result<Vec<Figure>> {
    let wait = Duration::from_secs(args.timeout);
    let sfx = media.suffix();
    let (_server, url) = media.server()?;
    let stamps = Stamps::default();
    let publisher = gstroom::app::parse_pipeline(&format!(
        "videotestsrc is-live=true {PICTURE} ! {CAPS} ! identity name=stamp ! \
         roomsink server-url={url} room={ROOM} username={PUBLISHER} video-caps=video/x-vp8"
    ))?;
    let s = stamps.clone();
    stamp_frames(&publisher, move |n| s.stamp(n));
    let publisher = Running::start(publisher)?;
    super::wait_for_element_message(&publisher, "room-session-status", wait, |s| {
        s.get::<String>("status").is_ok_and(|v| v == "publishing")
    })
    .context("the publisher")?;

    let mut figures = Vec::new();
    let sweep = if args.no_sweep {
        &[][..]
    } else {
        &args.latencies
    };
    let settings = std::iter::once(None).chain(sweep.iter().copied().map(Some));
    let mut displayed_medians = Vec::new();
    for latency in settings {
        let label = latency.map_or("default".to_owned(), |l| format!("latency={l}"));
        let (pipeline, roomsrc) = super::roomsrc_viewer(
            &url,
            ROOM,
            &format!("viewer-{}", latency.map_or("d".into(), |l| l.to_string())),
            PUBLISHER,
        )?;
        if let Some(latency) = latency {
            roomsrc.set_property("latency", latency);
        }
        let measured = Measured::new(args.warmup);
        watch_video_pads(&pipeline, &roomsrc, &stamps, &measured);
        let m = measure(
            &format!("gst-gst{sfx} {label}"),
            pipeline,
            &measured,
            args.runs,
            wait,
        );
        let (decoded, displayed) = match latency {
            None => (
                format!("decoded_gst-gst{sfx}"),
                format!("displayed_gst-gst{sfx}"),
            ),
            Some(l) => (
                format!("decoded_latency{l}ms{sfx}"),
                format!("displayed_latency{l}ms{sfx}"),
            ),
        };
        figures.extend(Figure::from_samples(decoded, "ms", &m.decoded));
        if let Some(f) = Figure::from_samples(displayed, "ms", &m.displayed) {
            displayed_medians.push((label, f.median));
            let f = if latency.is_none() {
                f.with_anchor(anchor.displayed)
            } else {
                f
            };
            figures.push(f);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if let Some((base_label, base)) = displayed_medians.first() {
        for (label, median) in &displayed_medians[1..] {
            eprintln!(
                "gst-gst{sfx}: {label} shows frames {:+.1} ms against roomsrc's default ({base_label}, median {base:.1} ms)",
                median - base
            );
        }
    }
    drop(publisher);
    if args.audio_seconds > 0 {
        let samples = audio::through_room(&url, args.audio_seconds, wait)?;
        figures.extend(
            Figure::from_samples(format!("audio_gst-gst{sfx}"), "ms", &samples)
                .map(|f| f.with_anchor(anchor.audio)),
        );
    }
    Ok(figures)
}

/// The gst-gst anchor: stock webrtcsink → webrtcsrc (default settings, VP8 and Opus named to
/// skip codec discovery, no STUN) over the stock signalling server.
fn gst_anchor(args: &LatencyArgs) -> anyhow::Result<Anchor> {
    let wait = Duration::from_secs(args.timeout);
    let (_server, url) = Child::anchor_server()?;
    let stamps = Stamps::default();
    let publisher = gstroom::app::parse_pipeline(&format!(
        "videotestsrc is-live=true {PICTURE} ! {CAPS} ! identity name=stamp ! \
         webrtcsink name=sink video-caps=video/x-vp8 signaller::uri={url}"
    ))?;
    let s = stamps.clone();
    stamp_frames(&publisher, move |n| s.stamp(n));
    let sink = publisher.by_name("sink").expect("named sink");
    sink.set_property("stun-server", None::<String>);
    let publisher = Running::start(publisher)?;
    let producer = anchor_peer_id(&publisher, &sink, wait)?;

    let pipeline = gst::Pipeline::new();
    let src = anchor_webrtcsrc(&url, &producer)?;
    pipeline.add(&src)?;
    let measured = Measured::new(args.warmup);
    watch_video_pads(&pipeline, &src, &stamps, &measured);
    let m = measure(
        "anchor (webrtcsink → webrtcsrc)",
        pipeline,
        &measured,
        args.runs,
        wait,
    );
    drop(publisher);
    let audio = if args.audio_seconds > 0 {
        Summary::of(&audio::through_stock(&url, args.audio_seconds, wait)?).map(|s| s.median)
    } else {
        None
    };
    Ok(Anchor {
        displayed: Summary::of(&m.displayed).map(|s| s.median),
        audio,
    })
}

/// The stock signaller's peer id of a started webrtcsink.
fn anchor_peer_id(
    pipeline: &gst::Pipeline,
    webrtcsink: &gst::Element,
    wait: Duration,
) -> anyhow::Result<String> {
    let signaller = webrtcsink.property::<glib::Object>("signaller");
    let deadline = Instant::now() + wait;
    loop {
        super::check_bus(pipeline)?;
        if let Some(id) = signaller.property::<Option<String>>("client-id") {
            // The producer status goes out right after the welcome; give the server a moment.
            std::thread::sleep(Duration::from_millis(200));
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("the anchor publisher got no peer id within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A stock webrtcsrc asking the stock server for `producer`'s stream.
fn anchor_webrtcsrc(url: &str, producer: &str) -> anyhow::Result<gst::Element> {
    let src = gst::ElementFactory::make("webrtcsrc")
        .property("stun-server", None::<String>)
        .property("video-codecs", gst::Array::new(["VP8"]))
        .property("audio-codecs", gst::Array::new(["OPUS"]))
        .build()?;
    let signaller = src.property::<glib::Object>("signaller");
    signaller.set_property("uri", url);
    signaller.set_property("producer-peer-id", producer);
    Ok(src)
}

/// Capture instants by frame number (the code carries 16 bits: 36 minutes at 30 fps).
#[derive(Clone)]
struct Stamps(Arc<Mutex<Vec<Option<Instant>>>>);

impl Default for Stamps {
    fn default() -> Self {
        Stamps(Arc::new(Mutex::new(vec![None; 1 << 16])))
    }
}

impl Stamps {
    fn stamp(&self, number: u16) {
        self.0.lock().unwrap()[number as usize] = Some(Instant::now());
    }

    /// Milliseconds from the stamp of `number` to `now`.
    fn since(&self, number: u16, now: Instant) -> Option<f64> {
        let stamped = self.0.lock().unwrap()[number as usize]?;
        Some(ms(now.saturating_duration_since(stamped)))
    }
}

/// Draws consecutive numbers into the frames passing the element named `stamp` (before its
/// sink pad) and calls `on_stamp` with each number right after drawing it.
pub(crate) fn stamp_frames(
    pipeline: &gst::Pipeline,
    on_stamp: impl Fn(u16) + Send + Sync + 'static,
) {
    let pad = pipeline
        .by_name("stamp")
        .and_then(|e| e.static_pad("sink"))
        .expect("an element named stamp");
    let next = std::sync::atomic::AtomicU32::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(video) = pad
            .current_caps()
            .and_then(|caps| gst_video::VideoInfo::from_caps(&caps).ok())
        else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let buffer = buffer.make_mut();
        if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video) {
            let stride = frame.plane_stride()[0] as usize;
            if let Ok(luma) = frame.plane_data_mut(0) {
                let number = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u16;
                code::draw(luma, stride, video.width() as usize, number);
                on_stamp(number);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// The code of a raw YUV frame on `pad`, if it reads.
pub(crate) fn read_frame(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<u16> {
    let caps = pad.current_caps()?;
    let video = gst_video::VideoInfo::from_caps(&caps).ok()?;
    if !video.format_info().is_yuv() {
        return None;
    }
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video).ok()?;
    code::read(
        frame.plane_data(0).ok()?,
        frame.plane_stride()[0] as usize,
        video.width() as usize,
    )
}

/// Links each decoded video pad `src` adds to `capsfilter ! queue ! fakesink sync=true` and calls
/// `on_shown` with the code of every frame the sink shows (None: unreadable), at that instant.
pub(crate) fn show_video_pads(
    pipeline: &gst::Pipeline,
    src: &gst::Element,
    on_decoded: impl Fn(Option<u16>, Instant) + Send + Sync + Clone + 'static,
    on_shown: impl Fn(Option<u16>, Instant) + Send + Sync + Clone + 'static,
) {
    let weak = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns the source, which owns this closure.
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if !pad.name().starts_with("video") {
            return;
        }
        let decoded = on_decoded.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let now = Instant::now();
            if let Some(buffer) = info.buffer() {
                decoded(read_frame(pad, buffer), now);
            }
            gst::PadProbeReturn::Ok
        });
        let sink = match super::link_raw_sink(&pipeline, pad, true) {
            Ok(sink) => sink,
            Err(err) => {
                return gst::element_error!(pipeline, gst::CoreError::Pad, ("{err:#}"));
            }
        };
        sink.set_property("signal-handoffs", true);
        let shown = on_shown.clone();
        sink.connect("handoff", false, move |args| {
            let now = Instant::now();
            let buffer = args[1].get::<gst::Buffer>().ok()?;
            let pad = args[2].get::<gst::Pad>().ok()?;
            shown(read_frame(&pad, &buffer), now);
            None
        });
    });
}

/// What one viewer measured.
#[derive(Default)]
struct Measured {
    warmup: u32,
    /// Decoded frames so far (warm-up included).
    seen: u32,
    /// Displayed frames so far (warm-up included).
    shown: u32,
    unreadable: u32,
    decoded: Vec<f64>,
    displayed: Vec<f64>,
}

impl Measured {
    fn new(warmup: u32) -> Arc<Mutex<Measured>> {
        Arc::new(Mutex::new(Measured {
            warmup,
            ..Measured::default()
        }))
    }
}

/// Records decoded and displayed latencies of `src`'s video pads into `measured`.
fn watch_video_pads(
    pipeline: &gst::Pipeline,
    src: &gst::Element,
    stamps: &Stamps,
    measured: &Arc<Mutex<Measured>>,
) {
    let (s, m) = (stamps.clone(), measured.clone());
    let on_decoded = move |code: Option<u16>, now| {
        let mut m = m.lock().unwrap();
        m.seen += 1;
        if m.seen > m.warmup {
            match code.and_then(|n| s.since(n, now)) {
                Some(latency) => m.decoded.push(latency),
                None => m.unreadable += 1,
            }
        }
    };
    let (s, m) = (stamps.clone(), measured.clone());
    let on_shown = move |code: Option<u16>, now| {
        let mut m = m.lock().unwrap();
        m.shown += 1;
        if m.shown > m.warmup
            && let Some(latency) = code.and_then(|n| s.since(n, now))
        {
            m.displayed.push(latency);
        }
    };
    show_video_pads(pipeline, src, on_decoded, on_shown);
}

/// Plays `pipeline` until `measured` holds `runs` decoded and displayed samples (or `wait`
/// passes), stops it, and returns what it measured.
fn measure(
    label: &str,
    pipeline: gst::Pipeline,
    measured: &Arc<Mutex<Measured>>,
    runs: u32,
    wait: Duration,
) -> Measured {
    let pipeline = match Running::start(pipeline) {
        Ok(p) => p,
        Err(err) => {
            eprintln!("{label}: {err:#}");
            return Measured::default();
        }
    };
    let start = Instant::now();
    let result = loop {
        if let Err(err) = super::check_bus(&pipeline) {
            break Err(err);
        }
        let m = measured.lock().unwrap();
        if m.decoded.len() >= runs as usize && m.displayed.len() >= runs as usize {
            break Ok(());
        }
        drop(m);
        if start.elapsed() > wait {
            break Err(anyhow::anyhow!("fewer than {runs} frames within {wait:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(pipeline);
    let m = std::mem::take(&mut *measured.lock().unwrap());
    if let Err(err) = result {
        eprintln!("{label}: {err:#} (kept what arrived)");
    }
    eprintln!(
        "{label}: {} frames seen, {} decoded and {} displayed samples, {} unreadable codes",
        m.seen,
        m.decoded.len(),
        m.displayed.len(),
        m.unreadable
    );
    m
}
