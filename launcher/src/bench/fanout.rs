//! `gst-room bench fanout`: what each extra viewer costs the publisher.
//!
//! ```text
//! process 1: gst-room server
//! process 2: gst-room bench publisher: videotestsrc 640x480@30 ! roomsink (VP8)   ← measured
//! this one:  k x (roomsrc participant=pub ! raw ! fakesink), k = 0, 1, 2, 3, 4
//! ```
//!
//! The publisher is a process of its own so that /proc/PID/stat (utime + stime) is its CPU
//! alone. For each viewer count: add a viewer, wait for its first decoded frame, let the
//! encoders and the bandwidth estimation settle, then sample the publisher's CPU once a second.
//! The mesh encodes once per viewer, so the marginal cost of viewer k over viewer 1 says how
//! close to linear that is. The viewers decode in this process and share the 2 cores.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gst::prelude::*;

use super::{Child, Figure, PICTURE, Running, Summary, process_cpu, process_rss};

const ROOM: &str = "fanout";
const PUBLISHER: &str = "pub";

#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// Sweeps over 0..=viewers viewers (each sweep adds to the 1-second CPU samples).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Most viewers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    viewers: u32,
    /// Seconds of CPU sampling per viewer count.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: u32,
    /// Seconds to let encoders and bandwidth estimation settle after a viewer's first frame.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// videotestsrc properties of the published picture (see `bench::PICTURE`).
    #[arg(long, default_value = PICTURE)]
    source: String,
}

/// Flags of the hidden `gst-room bench publisher`.
#[derive(clap::Args, Debug)]
pub struct PublisherArgs {
    /// Room server WebSocket URL.
    #[arg(long)]
    server_url: String,
    #[arg(long, default_value = ROOM)]
    room: String,
    #[arg(long, default_value = PUBLISHER)]
    username: String,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// videotestsrc properties.
    #[arg(long, default_value = PICTURE)]
    source: String,
}

pub fn run(args: FanoutArgs) -> anyhow::Result<Vec<Figure>> {
    super::init_gstreamer()?;
    // Viewers plus the publisher, with room to spare.
    let (_server, url) = Child::room_server(args.viewers as usize + 2)?;
    let publisher = Child::spawn(
        "publisher",
        &[
            "bench",
            "publisher",
            "--server-url",
            &url,
            "--source",
            &args.source,
        ]
        .map(String::from),
    )?;
    publisher.wait_line(Duration::from_secs(60), |l| l == "publishing")?;
    let pid = publisher.pid();

    let counts = args.viewers as usize + 1;
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); counts];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); counts];
    for sweep in 0..args.runs {
        let mut viewers = Vec::new();
        for k in 0..counts {
            if k > 0 {
                viewers.push(start_viewer(&url, &format!("viewer-{k}"))?);
            }
            std::thread::sleep(Duration::from_secs(args.settle));
            let samples = sample_cpu(pid, args.seconds)?;
            let mean = samples.iter().sum::<f64>() / samples.len() as f64;
            let mib = process_rss(pid)? as f64 / (1024.0 * 1024.0);
            eprintln!(
                "fanout sweep {}: {k} viewers: publisher {mean:.1} % of a core, {mib:.0} MiB",
                sweep + 1
            );
            cpu[k].extend(samples);
            rss[k].push(mib);
        }
        drop(viewers);
        // Let the publisher end its sessions before the next sweep.
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(publisher);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut figures = Vec::new();
    for (k, samples) in cpu.iter().enumerate() {
        if let Some(f) =
            Figure::from_samples(format!("publisher_cpu_{k}_viewers"), "% of a core", samples)
        {
            figures.push(f);
        }
    }
    // Marginal cost of viewer k: mean CPU with k viewers minus with k-1.
    let first = mean(&cpu[1]) - mean(&cpu[0]);
    for k in 1..counts {
        let marginal = mean(&cpu[k]) - mean(&cpu[k - 1]);
        figures.push(Figure::value(
            format!("viewer_{k}_marginal_cpu"),
            "% of a core",
            marginal,
            cpu[k].len(),
        ));
        if k > 1 && first > 0.0 {
            figures.push(Figure::value(
                format!("viewer_{k}_marginal_vs_first"),
                "x first viewer",
                marginal / first,
                cpu[k].len(),
            ));
        }
    }
    for (k, samples) in rss.iter().enumerate() {
        if let Some(s) = Summary::of(samples) {
            figures.push(Figure::value(
                format!("publisher_rss_{k}_viewers"),
                "MiB",
                s.median,
                s.n,
            ));
        }
    }
    Ok(figures)
}

/// CPU of `pid` in % of one core, one sample per second for `seconds`.
fn sample_cpu(pid: u32, seconds: u32) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::new();
    let (mut t, mut cpu) = (Instant::now(), process_cpu(pid)?);
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        let (now, used) = (Instant::now(), process_cpu(pid)?);
        samples.push((used - cpu).as_secs_f64() / (now - t).as_secs_f64() * 100.0);
        (t, cpu) = (now, used);
    }
    Ok(samples)
}

/// A viewer of the publisher in this process; returns once its first frame is decoded.
fn start_viewer(url: &str, username: &str) -> anyhow::Result<Running> {
    let (pipeline, roomsrc) = super::roomsrc_viewer(url, ROOM, username, PUBLISHER)?;
    let decoded = Arc::new(AtomicBool::new(false));
    let weak = pipeline.downgrade();
    let flag = decoded.clone();
    roomsrc.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns roomsrc, which owns this closure.
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if !pad.name().starts_with("video") {
            return;
        }
        let flag = flag.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            flag.store(true, Ordering::Relaxed);
            gst::PadProbeReturn::Remove
        });
        if let Err(err) = super::link_raw_sink(&pipeline, pad, false) {
            gst::element_error!(pipeline, gst::CoreError::Pad, ("{err:#}"));
        }
    });
    let pipeline = Running::start(pipeline)?;
    let start = Instant::now();
    while !decoded.load(Ordering::Relaxed) {
        super::check_bus(&pipeline).with_context(|| format!("viewer {username}"))?;
        if start.elapsed() > Duration::from_secs(60) {
            bail!("viewer {username}: no frame within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pipeline)
}

/// `gst-room bench publisher`: publishes a 640x480@30 test pattern (VP8) until stdin closes.
/// Prints `publishing` once the room announced the stream.
pub fn publisher(args: PublisherArgs) -> anyhow::Result<()> {
    super::init_gstreamer()?;
    let pipeline = crate::runner::build(&format!(
        "videotestsrc is-live=true {} ! video/x-raw,width={},height={},framerate={}/1 ! \
         roomsink server-url={} room={} username={} video-caps=video/x-vp8",
        args.source, args.width, args.height, args.fps, args.server_url, args.room, args.username
    ))?;
    pipeline.set_state(gst::State::Playing)?;
    let published = super::wait_for_element_message(
        &pipeline,
        "room-session-status",
        Duration::from_secs(30),
        |s| s.get::<String>("status").is_ok_and(|v| v == "publishing"),
    );
    if let Err(err) = published {
        let _ = pipeline.set_state(gst::State::Null);
        return Err(err);
    }
    println!("publishing");
    // Runs until the orchestrator closes stdin; errors end it early.
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines().map_while(Result::ok) {}
        let _ = done_tx.send(());
    });
    let result = loop {
        if let Err(err) = super::check_bus(&pipeline) {
            break Err(err);
        }
        if done.recv_timeout(Duration::from_millis(200)).is_ok() {
            break Ok(());
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}
