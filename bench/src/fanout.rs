//! `gst-room bench fanout`: what each extra viewer costs the publisher.
//!
//! ```text
//! process 1: gst-room server
//! process 2: gst-room bench publisher: videotestsrc WxH@30 ! roomsink (VP8)   ← measured
//! this one:  k x (roomsrc participant=pub ! raw ! fakesink), k = 0, 1, ..., 6
//! ```
//!
//! The publisher is a process of its own so that /proc/PID/stat (utime + stime) is its CPU
//! alone. For each picture size (640x480 and 1280x720 by default) and each viewer count: add a
//! viewer, wait for its first decoded frame and for every viewer to decode the full picture
//! size, let the encoders and the bandwidth estimation settle, then sample the publisher's CPU once a second and count every viewer's decoded
//! frames. The same sweep runs twice: roomsink's default (one shared encoder per stream) and
//! `encode-per-viewer=true` (webrtcsink's encoder per viewer), which is each figure's anchor, so
//! `ratio` = shared / per viewer. The viewers decode in this process and share the 2 cores.
//!
//! Figure names of 640x480 have no suffix; other sizes end in `_WxH`.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
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
    /// Picture sizes to sweep, WIDTHxHEIGHT (30 fps), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "640x480,1280x720")]
    sizes: Vec<String>,
    /// Skip the `encode-per-viewer=true` sweep (no anchor column).
    #[arg(long)]
    no_anchor: bool,
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
    /// roomsink `encode-per-viewer=true` (one encoder per viewer, as webrtcsink does).
    #[arg(long)]
    encode_per_viewer: bool,
}

pub fn run(args: FanoutArgs) -> anyhow::Result<Vec<Figure>> {
    super::init_gstreamer()?;
    // Viewers plus the publisher, with room to spare.
    let (_server, url) = Child::room_server(args.viewers as usize + 2)?;
    let mut figures = Vec::new();
    for size in &args.sizes {
        let (width, height) = parse_size(size)?;
        let shared = sweep(&args, &url, width, height, false)?;
        let per_viewer = if args.no_anchor {
            None
        } else {
            Some(sweep(&args, &url, width, height, true)?)
        };
        let suffix = if (width, height) == (640, 480) {
            String::new()
        } else {
            format!("_{width}x{height}")
        };
        figures.extend(shared.figures(&suffix, per_viewer.as_ref()));
    }
    Ok(figures)
}

fn parse_size(size: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = size
        .split_once('x')
        .with_context(|| format!("size {size:?} is not WIDTHxHEIGHT"))?;
    Ok((w.parse()?, h.parse()?))
}

/// What one sweep over 0..=viewers measured, indexed by the number of viewers.
struct Sweep {
    /// Publisher CPU samples, % of a core.
    cpu: Vec<Vec<f64>>,
    /// Publisher resident memory, MiB, one value per run.
    rss: Vec<Vec<f64>>,
    /// The slowest viewer's decoded frames per second, one value per run.
    min_fps: Vec<Vec<f64>>,
}

/// Publishes WxH@30 (shared encoder, or one per viewer) and adds viewers one by one.
fn sweep(
    args: &FanoutArgs,
    url: &str,
    width: u32,
    height: u32,
    per_viewer: bool,
) -> anyhow::Result<Sweep> {
    let mode = if per_viewer { "per-viewer" } else { "shared" };
    let room = format!("{ROOM}-{width}x{height}-{mode}");
    let mut publisher_args: Vec<String> = [
        "bench",
        "publisher",
        "--server-url",
        url,
        "--room",
        &room,
        "--source",
        &args.source,
        "--width",
        &width.to_string(),
        "--height",
        &height.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if per_viewer {
        publisher_args.push("--encode-per-viewer".into());
    }
    let publisher = Child::spawn("publisher", &publisher_args)?;
    publisher.wait_line(Duration::from_secs(60), |l| l == "publishing")?;
    let pid = publisher.pid();

    let counts = args.viewers as usize + 1;
    let mut sweep = Sweep {
        cpu: vec![Vec::new(); counts],
        rss: vec![Vec::new(); counts],
        min_fps: vec![Vec::new(); counts],
    };
    for run in 0..args.runs {
        let mut viewers: Vec<Viewer> = Vec::new();
        for k in 0..counts {
            if k > 0 {
                viewers.push(start_viewer(url, &room, &format!("viewer-{k}"))?);
                let took = wait_for_full_size(&viewers, width)?;
                eprintln!(
                    "fanout {width}x{height} {mode}: {k} viewers at full size after {took:.1?}"
                );
            }
            std::thread::sleep(Duration::from_secs(args.settle));
            let frames_before: Vec<u64> = viewers
                .iter()
                .map(|v| v.frames.load(Ordering::Relaxed))
                .collect();
            let start = Instant::now();
            let samples = sample_cpu(pid, args.seconds)?;
            let elapsed = start.elapsed().as_secs_f64();
            let min_fps = viewers
                .iter()
                .zip(&frames_before)
                .map(|(v, before)| (v.frames.load(Ordering::Relaxed) - before) as f64 / elapsed)
                .fold(f64::INFINITY, f64::min);
            let mean = samples.iter().sum::<f64>() / samples.len() as f64;
            let mib = process_rss(pid)? as f64 / (1024.0 * 1024.0);
            eprintln!(
                "fanout {width}x{height} {mode} run {}: {k} viewers: publisher {mean:.1} % of a core, \
                 {mib:.0} MiB, slowest viewer {min_fps:.1} fps",
                run + 1
            );
            sweep.cpu[k].extend(samples);
            sweep.rss[k].push(mib);
            if k > 0 {
                sweep.min_fps[k].push(min_fps);
            }
        }
        drop(viewers);
        // Let the publisher end its sessions before the next run.
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(publisher);
    Ok(sweep)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Sweep {
    /// Marginal CPU of viewer k: mean CPU with k viewers minus with k-1.
    fn marginal_cpu(&self, k: usize) -> f64 {
        mean(&self.cpu[k]) - mean(&self.cpu[k - 1])
    }

    fn marginal_rss(&self, k: usize) -> f64 {
        mean(&self.rss[k]) - mean(&self.rss[k - 1])
    }

    /// The figures, each with the per-viewer sweep's value as its anchor.
    fn figures(&self, suffix: &str, anchor: Option<&Sweep>) -> Vec<Figure> {
        let median = |v: &[f64]| Summary::of(v).map(|s| s.median);
        let with = |mut f: Figure, a: Option<f64>| {
            f.anchor = a;
            f
        };
        let mut figures = Vec::new();
        for (k, samples) in self.cpu.iter().enumerate() {
            if let Some(f) = Figure::from_samples(
                format!("publisher_cpu_{k}_viewers{suffix}"),
                "% of a core",
                samples,
            ) {
                figures.push(with(f, anchor.and_then(|a| median(&a.cpu[k]))));
            }
        }
        let first = self.marginal_cpu(1);
        for k in 1..self.cpu.len() {
            let marginal = self.marginal_cpu(k);
            figures.push(with(
                Figure::value(
                    format!("viewer_{k}_marginal_cpu{suffix}"),
                    "% of a core",
                    marginal,
                    self.cpu[k].len(),
                ),
                anchor.map(|a| a.marginal_cpu(k)),
            ));
            if k > 1 && first > 0.0 {
                figures.push(with(
                    Figure::value(
                        format!("viewer_{k}_marginal_vs_first{suffix}"),
                        "x first viewer",
                        marginal / first,
                        self.cpu[k].len(),
                    ),
                    anchor.map(|a| a.marginal_cpu(k) / a.marginal_cpu(1)),
                ));
            }
        }
        for (k, samples) in self.rss.iter().enumerate() {
            if let Some(s) = Summary::of(samples) {
                figures.push(with(
                    Figure::value(
                        format!("publisher_rss_{k}_viewers{suffix}"),
                        "MiB",
                        s.median,
                        s.n,
                    ),
                    anchor.and_then(|a| median(&a.rss[k])),
                ));
            }
            if k > 0 {
                figures.push(with(
                    Figure::value(
                        format!("viewer_{k}_marginal_rss{suffix}"),
                        "MiB",
                        self.marginal_rss(k),
                        samples.len(),
                    ),
                    anchor.map(|a| a.marginal_rss(k)),
                ));
            }
        }
        for (k, samples) in self.min_fps.iter().enumerate().skip(1) {
            if let Some(s) = Summary::of(samples) {
                figures.push(with(
                    Figure::value(
                        format!("slowest_viewer_fps_{k}_viewers{suffix}"),
                        "frames/s",
                        s.median,
                        s.n,
                    ),
                    anchor.and_then(|a| median(&a.min_fps[k])),
                ));
            }
        }
        figures
    }
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

/// A viewer of the publisher in this process, with its count of decoded frames; returns once
/// its first frame is decoded.
/// A viewer of the bench: its pipeline, the frames it decoded and the width of the last one.
struct Viewer {
    _pipeline: Running,
    frames: Arc<AtomicU64>,
    width: Arc<AtomicU64>,
}

fn start_viewer(url: &str, room: &str, username: &str) -> anyhow::Result<Viewer> {
    let (pipeline, roomsrc) = super::roomsrc_viewer(url, room, username, PUBLISHER)?;
    let frames = Arc::new(AtomicU64::new(0));
    let width = Arc::new(AtomicU64::new(0));
    let weak = pipeline.downgrade();
    let (counter, last_width) = (frames.clone(), width.clone());
    roomsrc.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns roomsrc, which owns this closure.
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if !pad.name().starts_with("video") {
            return;
        }
        let (counter, last_width) = (counter.clone(), last_width.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            let caps = pad.current_caps();
            let info = caps.and_then(|c| gst_video::VideoInfo::from_caps(&c).ok());
            last_width.store(info.map_or(0, |i| u64::from(i.width())), Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        if let Err(err) = super::link_raw_sink(&pipeline, pad, false) {
            gst::element_error!(pipeline, gst::CoreError::Pad, ("{err:#}"));
        }
    });
    let pipeline = Running::start(pipeline)?;
    let start = Instant::now();
    while frames.load(Ordering::Relaxed) == 0 {
        super::check_bus(&pipeline).with_context(|| format!("viewer {username}"))?;
        if start.elapsed() > Duration::from_secs(60) {
            bail!("viewer {username}: no frame within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Viewer {
        _pipeline: pipeline,
        frames,
        width,
    })
}

/// Waits until every viewer has decoded the published picture at its full `width` for
/// [`FULL_SIZE_HELD`]: the shared encoder makes it smaller while congestion control's estimate
/// is below what it makes (from the 1 Mbit/s start, 1280x720 went down to 640x360 a second
/// after the first viewer came and back up ~15 s later on loopback), and CPU at a smaller size
/// is not the figure asked for. Returns how long it took.
fn wait_for_full_size(viewers: &[Viewer], width: u32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut full_since = None;
    loop {
        let widths: Vec<u64> = viewers
            .iter()
            .map(|v| v.width.load(Ordering::Relaxed))
            .collect();
        if widths.iter().all(|w| *w == u64::from(width)) {
            let since = *full_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= FULL_SIZE_HELD {
                return Ok(start.elapsed());
            }
        } else {
            full_since = None;
        }
        if start.elapsed() > FULL_SIZE_WITHIN {
            bail!("viewers decode widths {widths:?}, not {width}, after {FULL_SIZE_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long every viewer must have decoded the full size before measuring.
const FULL_SIZE_HELD: Duration = Duration::from_secs(3);
/// How long the picture may take to reach its full size on loopback.
const FULL_SIZE_WITHIN: Duration = Duration::from_secs(90);

/// `gst-room bench publisher`: publishes a WxH@30 test pattern (VP8) until stdin closes.
/// Prints `publishing` once the room announced the stream.
pub fn publisher(args: PublisherArgs) -> anyhow::Result<()> {
    super::init_gstreamer()?;
    let pipeline = gstroom::app::parse_pipeline(&format!(
        "videotestsrc is-live=true {} ! video/x-raw,width={},height={},framerate={}/1 ! \
         roomsink server-url={} room={} username={} video-caps=video/x-vp8 encode-per-viewer={}",
        args.source,
        args.width,
        args.height,
        args.fps,
        args.server_url,
        args.room,
        args.username,
        args.encode_per_viewer
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
