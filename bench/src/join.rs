//! `gst-room bench join`: how long a viewer waits for the first picture of someone already
//! publishing.
//!
//! ```text
//! ours:   videotestsrc ! roomsink (pub)  ──room server──  roomsrc participant=pub ! raw ! fakesink
//! anchor: videotestsrc ! webrtcsink      ──stock server──  webrtcsrc producer-peer-id=… ! raw ! fakesink
//! ```
//!
//! `--tls` adds a third side: ours over `wss://` (a server with a self-signed certificate in a
//! temporary folder, the elements trusting it through `tls-ca-file`), reported as `wss_*`
//! figures next to the plain ones: what TLS adds to a join (TCP + TLS handshake, then the same).
//!
//! Both publishers (640x480@30, VP8, no STUN) run in this process for the whole benchmark; each
//! run builds a fresh viewer pipeline, takes the time just before PLAYING, and stops at the
//! first decoded buffer. Runs alternate ours / anchor so both see the same machine. Each
//! server runs in its own process.
//!
//! The breakdown marks when each step first happened, relative to PLAYING: the viewer joined
//! (ours: `room-state`; anchor: the server's welcome, `client-id`), its signaller's
//! `session-started`, its `webrtcbin-ready`, the publisher's new consumer pipeline and webrtcbin
//! (`consumer-pipeline-created`, `consumer-added`), the offer at the viewer
//! (`session-description`), ICE connected and the peer connection connected (DTLS done) from the
//! viewer webrtcbin's notify, and the first decoded frame.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gst::glib;
use gst::prelude::*;

use super::{Child, Figure, PICTURE, Running, Summary, enum_nick, ms};

const ROOM: &str = "join";
const PUBLISHER: &str = "pub";
const CAPS: &str = "video/x-raw,width=640,height=480,framerate=30/1";

/// The steps of a join, in their usual order: (mark, figure name).
const MILESTONES: [(&str, &str); 9] = [
    ("joined", "t_joined"),
    ("session started", "t_session_started"),
    ("webrtcbin ready", "t_viewer_webrtcbin_ready"),
    ("publisher request", "t_publisher_got_request"),
    ("publisher webrtcbin", "t_publisher_webrtcbin_ready"),
    ("offer received", "t_offer_received"),
    ("ice connected", "t_ice_connected"),
    ("connected", "t_dtls_connected"),
    ("first frame", "first_frame"),
];

#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// Timed joins per side (ours and the anchor, alternating).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Skip the anchor (stock webrtcsink → webrtcsrc with the stock signalling server).
    #[arg(long)]
    no_anchor: bool,
    /// Seconds one join may take before it counts as failed.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The browser figure instead: a Chromium page joining a room with a gst publisher,
    /// navigation → first decoded frame (runs `node tests/browser/bench-join.mjs` with this
    /// binary; needs a checkout with `npm ci` done in tests/browser, and Chromium).
    #[arg(long)]
    pub(super) browser: bool,
    /// Also join over wss:// (TLS, self-signed certificate) and report it next to plain ws.
    #[arg(long, conflicts_with = "browser")]
    tls: bool,
}

/// `--browser`: runs tests/browser/bench-join.mjs with this binary (`GST_ROOM_BIN`), passing
/// its output (table and JSON lines) through.
pub fn browser(args: JoinArgs) -> anyhow::Result<()> {
    const SCRIPT: &str = "tests/browser/bench-join.mjs";
    let exe = std::env::current_exe().context("finding this binary")?;
    let script = checkout_file(SCRIPT, &exe)?;
    let status = std::process::Command::new("node")
        .arg(&script)
        .args(["--runs", &args.runs.to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .env("GST_ROOM_BIN", &exe)
        .status()
        .context("running node (Node 20+ is needed for --browser)")?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// `relative` (a path in the repository) in the checkout this binary was built from, else in one
/// above the binary (`target/*/gst-room`).
pub(crate) fn checkout_file(
    relative: &str,
    exe: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    std::iter::once(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .chain(exe.ancestors().skip(1).map(std::path::Path::to_path_buf))
        .map(|root| root.join(relative))
        .find(|s| s.is_file())
        .ok_or_else(|| anyhow!("{relative} not found: run from a gst-room checkout"))
}

/// When each milestone of the current run first happened. Cleared before each run; the
/// publishers' handlers write into it too (runs never overlap).
#[derive(Clone, Default)]
struct Marks(Arc<Mutex<Vec<(&'static str, Instant)>>>);

impl Marks {
    fn mark(&self, name: &'static str) {
        let now = Instant::now();
        let mut marks = self.0.lock().unwrap();
        if !marks.iter().any(|(n, _)| *n == name) {
            marks.push((name, now));
        }
    }

    fn get(&self, name: &str) -> Option<Instant> {
        let marks = self.0.lock().unwrap();
        marks.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Ours,
    Anchor,
    OursTls,
}

/// A room server the bench joins: its URL and the certificate its elements trust (wss).
struct RoomTarget {
    url: String,
    ca_file: Option<String>,
}

pub fn run(args: JoinArgs) -> anyhow::Result<Vec<Figure>> {
    super::init_gstreamer()?;
    let wait = Duration::from_secs(args.timeout);
    let marks = Marks::default();

    let (_room_server, room_url) = Child::room_server(16)?;
    let ours = RoomTarget {
        url: room_url,
        ca_file: None,
    };
    let _ours = start_room_publisher(&ours, &marks, wait)?;
    let anchor = if args.no_anchor {
        None
    } else {
        let (server, url) = Child::anchor_server()?;
        let (publisher, producer_id) = start_anchor_publisher(&url, &marks, wait)?;
        // Dropped in this order: the publisher leaves before its server stops.
        Some((publisher, producer_id, url, server))
    };
    let tls_dir = std::env::temp_dir().join(format!("gst-room-bench-tls-{}", std::process::id()));
    let tls = if args.tls {
        let extra = [
            "--tls-self-signed".to_owned(),
            "--tls-dir".to_owned(),
            tls_dir.display().to_string(),
        ];
        let (server, url) = Child::room_server_with(16, &extra)?;
        let target = RoomTarget {
            url,
            ca_file: Some(tls_dir.join("cert.pem").display().to_string()),
        };
        let publisher = start_room_publisher(&target, &marks, wait)?;
        Some((publisher, target, server))
    } else {
        None
    };

    // Per side: one Vec of milestone offsets (ms) per milestone.
    let mut results: [Vec<Vec<f64>>; 3] = std::array::from_fn(|_| vec![vec![]; MILESTONES.len()]);
    let mut failures = [0usize; 3];
    for i in 0..args.runs {
        let mut sides = vec![Side::Ours];
        if anchor.is_some() {
            sides.push(Side::Anchor);
        }
        if tls.is_some() {
            sides.push(Side::OursTls);
        }
        for side in sides {
            marks.clear();
            let viewer = match side {
                Side::Ours => room_viewer(&ours, &format!("viewer-{i}"), &marks)?,
                Side::Anchor => {
                    let (_, producer, url, _) = anchor.as_ref().unwrap();
                    anchor_viewer(url, producer, &marks)?
                }
                Side::OursTls => {
                    let (_, target, _) = tls.as_ref().unwrap();
                    room_viewer(target, &format!("viewer-{i}"), &marks)?
                }
            };
            let outcome = time_one(&viewer, &marks, wait);
            let _ = viewer.set_state(gst::State::Null);
            let index = side as usize;
            match outcome {
                Ok(t0) => {
                    let line: Vec<String> = MILESTONES
                        .iter()
                        .enumerate()
                        .filter_map(|(m, (mark, _))| {
                            let at = ms(marks.get(mark)?.saturating_duration_since(t0));
                            results[index][m].push(at);
                            Some(format!("{mark} {at:.0}"))
                        })
                        .collect();
                    eprintln!("join {side:?} run {}: {}", i + 1, line.join(", "));
                }
                Err(err) => {
                    failures[index] += 1;
                    eprintln!("join {side:?} run {}: failed: {err:#}", i + 1);
                }
            }
            // Let the publisher end the session before the next viewer comes.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(tls);
    let _ = std::fs::remove_dir_all(&tls_dir);
    if results[0][MILESTONES.len() - 1].is_empty() {
        bail!(
            "no join of ours reached a first frame ({} failed)",
            failures[0]
        );
    }
    if failures.iter().any(|f| *f > 0) {
        eprintln!(
            "join: {} of ours and {} of the anchor's runs failed",
            failures[0], failures[1]
        );
    }

    // First frame first, then the breakdown in order.
    let mut figures = Vec::new();
    let order = std::iter::once(MILESTONES.len() - 1).chain(0..MILESTONES.len() - 1);
    for m in order {
        let (_, name) = MILESTONES[m];
        let Some(figure) = Figure::from_samples(name, "ms", &results[0][m]) else {
            continue;
        };
        let anchor = Summary::of(&results[1][m]).map(|s| s.median);
        figures.push(figure.with_anchor(anchor));
    }
    // Over TLS: the join and the first frame, next to the plain figures above.
    for m in [MILESTONES.len() - 1, 0] {
        let (_, name) = MILESTONES[m];
        if let Some(figure) = Figure::from_samples(
            format!("wss_{name}"),
            "ms",
            &results[Side::OursTls as usize][m],
        ) {
            figures.push(figure);
        }
    }
    if args.tls && failures[Side::OursTls as usize] > 0 {
        eprintln!(
            "join: {} of the wss runs failed",
            failures[Side::OursTls as usize]
        );
    }
    Ok(figures)
}

/// Starts the viewer and waits for its first decoded frame; returns the PLAYING instant.
fn time_one(viewer: &gst::Pipeline, marks: &Marks, wait: Duration) -> anyhow::Result<Instant> {
    let t0 = Instant::now();
    viewer
        .set_state(gst::State::Playing)
        .context("viewer refused PLAYING")?;
    while marks.get("first frame").is_none() {
        super::check_bus(viewer)?;
        if t0.elapsed() > wait {
            bail!("no frame within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t0)
}

/// `roomsink` publishing as [`PUBLISHER`]; returns once the stream is announced.
fn start_room_publisher(
    target: &RoomTarget,
    marks: &Marks,
    wait: Duration,
) -> anyhow::Result<Running> {
    let url = &target.url;
    let pipeline = gstroom::app::parse_pipeline(&format!(
        "videotestsrc is-live=true {PICTURE} ! {CAPS} ! roomsink name=sink server-url={url} room={ROOM} username={PUBLISHER} video-caps=video/x-vp8"
    ))?;
    gstroom::app::trust_ca_file(
        &pipeline,
        target.ca_file.as_deref().map(std::path::Path::new),
    );
    let webrtcsink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst::Bin>().ok())
        .and_then(|s| s.by_name("webrtcsink"))
        .ok_or_else(|| anyhow!("roomsink has no webrtcsink child"))?;
    instrument_publisher(&webrtcsink, marks);
    let pipeline = Running::start(pipeline)?;
    super::wait_for_element_message(&pipeline, "room-session-status", wait, |s| {
        s.get::<String>("status").is_ok_and(|v| v == "publishing")
    })
    .context("our publisher")?;
    Ok(pipeline)
}

/// Stock `webrtcsink` with the stock signaller; returns it and its producer peer id.
fn start_anchor_publisher(
    url: &str,
    marks: &Marks,
    wait: Duration,
) -> anyhow::Result<(Running, String)> {
    let pipeline = gstroom::app::parse_pipeline(&format!(
        "videotestsrc is-live=true {PICTURE} ! {CAPS} ! webrtcsink name=sink video-caps=video/x-vp8 signaller::uri={url}"
    ))?;
    let webrtcsink = pipeline.by_name("sink").expect("named sink");
    webrtcsink.set_property("stun-server", None::<String>);
    instrument_publisher(&webrtcsink, marks);
    let pipeline = Running::start(pipeline)?;
    let signaller = webrtcsink.property::<glib::Object>("signaller");
    let deadline = Instant::now() + wait;
    loop {
        super::check_bus(&pipeline)?;
        if let Some(id) = signaller.property::<Option<String>>("client-id") {
            // The producer status goes out right after the welcome; give the server a moment.
            std::thread::sleep(Duration::from_millis(200));
            return Ok((pipeline, id));
        }
        if Instant::now() > deadline {
            bail!("the anchor publisher got no peer id within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Marks the publisher side of a session: its consumer pipeline and its webrtcbin.
fn instrument_publisher(webrtcsink: &gst::Element, marks: &Marks) {
    let m = marks.clone();
    webrtcsink.connect("consumer-pipeline-created", false, move |_| {
        m.mark("publisher request");
        None
    });
    let m = marks.clone();
    webrtcsink.connect("consumer-added", false, move |_| {
        m.mark("publisher webrtcbin");
        None
    });
}

/// Marks the viewer side: signaller steps and the webrtcbin's connection states.
fn instrument_viewer(webrtcsrc: &gst::Element, marks: &Marks) {
    let signaller = webrtcsrc.property::<glib::Object>("signaller");
    for (signal, mark) in [
        ("session-started", "session started"),
        ("session-description", "offer received"),
    ] {
        let m = marks.clone();
        signaller.connect(signal, false, move |_| {
            m.mark(mark);
            None
        });
    }
    let m = marks.clone();
    signaller.connect("webrtcbin-ready", false, move |args| {
        m.mark("webrtcbin ready");
        let Ok(webrtcbin) = args[2].get::<gst::Element>() else {
            return None;
        };
        let ice = m.clone();
        webrtcbin.connect_notify(Some("ice-connection-state"), move |bin, _| {
            if matches!(
                enum_nick(bin, "ice-connection-state").as_deref(),
                Some("connected" | "completed")
            ) {
                ice.mark("ice connected");
            }
        });
        let peer = m.clone();
        webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
            if enum_nick(bin, "connection-state").as_deref() == Some("connected") {
                peer.mark("connected");
            }
        });
        None
    });
}

/// Marks the first decoded buffer on `pad` and sinks the decoded video.
fn sink_first_frame(pipeline: &gst::Pipeline, pad: &gst::Pad, marks: &Marks) {
    if !pad.name().starts_with("video") {
        return;
    }
    let m = marks.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        m.mark("first frame");
        gst::PadProbeReturn::Remove
    });
    if let Err(err) = super::link_raw_sink(pipeline, pad, false) {
        gst::element_error!(pipeline, gst::CoreError::Pad, ("{err:#}"));
    }
}

/// `roomsrc participant=pub` as `username` (not started).
fn room_viewer(
    target: &RoomTarget,
    username: &str,
    marks: &Marks,
) -> anyhow::Result<gst::Pipeline> {
    let (pipeline, roomsrc) = super::roomsrc_viewer(&target.url, ROOM, username, PUBLISHER)?;
    if let Some(ca_file) = &target.ca_file {
        roomsrc.set_property("tls-ca-file", ca_file);
    }
    let m = marks.clone();
    roomsrc.connect("room-state", false, move |_| {
        m.mark("joined");
        None
    });
    let m = marks.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        if element.factory().is_some_and(|f| f.name() == "webrtcsrc") {
            instrument_viewer(element, &m);
        }
    });
    let m = marks.clone();
    let weak = pipeline.downgrade();
    roomsrc.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns roomsrc, which owns this closure.
        if let Some(pipeline) = weak.upgrade() {
            sink_first_frame(&pipeline, pad, &m);
        }
    });
    Ok(pipeline)
}

/// Stock `webrtcsrc` asking the stock server for `producer` (not started).
fn anchor_viewer(url: &str, producer: &str, marks: &Marks) -> anyhow::Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("webrtcsrc")
        .property("stun-server", None::<String>)
        .property("video-codecs", gst::Array::new(["VP8"]))
        .build()?;
    let signaller = src.property::<glib::Object>("signaller");
    signaller.set_property("uri", url);
    signaller.set_property("producer-peer-id", producer);
    let m = marks.clone();
    signaller.connect_notify(Some("client-id"), move |_, _| m.mark("joined"));
    instrument_viewer(&src, marks);
    pipeline.add(&src)?;
    let m = marks.clone();
    let weak = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns webrtcsrc, which owns this closure.
        if let Some(pipeline) = weak.upgrade() {
            sink_first_frame(&pipeline, pad, &m);
        }
    });
    Ok(pipeline)
}
