//! `gst-room bench <name>`: figures, never verdicts. Each benchmark prints a markdown table for
//! people and one JSON line per figure for scripts:
//!
//! ```text
//! {"bench":"join","name":"first_frame","unit":"ms","median":912.4,"p95":1010.2,"p99":null,
//!  "runs":10,"anchor":1203.9,"ratio":0.758}
//! ```
//!
//! `runs` is the number of samples behind `median`/`p95`/`p99`; `anchor` is the same figure of
//! the stock stack (gst-plugins-rs webrtcsink/webrtcsrc and gst-webrtc-signalling-server) measured
//! in the same run, and `ratio` is `median / anchor` (both null when there is no anchor).
//!
//! - `join.rs`: PLAYING → first decoded frame of a participant already publishing, with the
//!   milestones in between; anchor: webrtcsink → webrtcsrc.
//! - `latency/`: glass-to-glass latency with a code stamped into each frame, on every path
//!   (gst and Chromium as publisher and viewer, mesh and SFU rooms), and audio; anchors: stock
//!   webrtcsink → webrtcsrc, Chromium's plain RTCPeerConnection loopback.
//! - `fanout.rs`: CPU and memory of a publishing process with 1..6 viewers, at 640x480 and
//!   720p; anchor: the same with `encode-per-viewer=true` (one encoder per viewer).
//! - `server.rs`: N WebSocket participants against the room server (join rate, memory, chat
//!   fan-out, session relay); anchor: the stock signalling server at the same load.
//! - `network.rs`: gst → gst across network namespaces under loss and bandwidth caps.
//! - `anchor.rs`: the stock signalling server, run as `gst-room bench anchor-server`.
//!
//! Servers, publishers and load generators run in their own processes: this binary re-executes
//! itself with a hidden subcommand (`bench anchor-server`, `bench publisher`, `bench load`), so
//! a process's CPU and memory are its own. Timing never fails a benchmark; a benchmark fails
//! only when something does not work at all (a server that does not start, no frame ever).

mod anchor;
mod fanout;
mod join;
mod latency;
mod network;
mod server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gst::prelude::*;

/// videotestsrc properties of every published test picture: the whole frame scrolls, so each
/// frame has motion to encode (`pattern=ball` is nearly static and nearly free to encode;
/// `pattern=snow` is the worst case).
pub const PICTURE: &str = "pattern=smpte horizontal-speed=4";

/// Flags of `gst-room bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// Time from a roomsrc going to PLAYING to the first decoded frame of a publishing
    /// participant, with a breakdown; anchor: stock webrtcsink → webrtcsrc.
    Join(join::JoinArgs),
    /// Glass-to-glass latency (capture → displayed) on every path (gst-gst, gst-browser,
    /// browser-gst, browser-browser) in mesh and SFU rooms, each with its anchor; audio too.
    Latency(latency::LatencyArgs),
    /// CPU and memory of a publishing process with 0..6 viewers of one stream, at 640x480 and
    /// 1280x720, and each viewer's frame rate; anchor: `encode-per-viewer=true`.
    Fanout(fanout::FanoutArgs),
    /// Simulated participants over WebSocket against the room server: join rate, memory per
    /// participant, chat fan-out and session relay latency; anchor: stock signalling server.
    Server(server::ServerArgs),
    /// gst → gst across network namespaces under packet loss (0/2/5/10 %) and uplink caps
    /// (2/1/0.5 Mbit/s): decoded frames per second, longest freeze, bitrate. Needs root.
    Network(network::NetworkArgs),
    /// (internal) The viewer of `bench network`: prints every decoded frame.
    #[command(hide = true)]
    NetworkViewer(network::ViewerArgs),
    /// (internal) The gst side of `bench latency`'s browser paths, until stdin closes.
    #[command(hide = true)]
    LatencyPeer(latency::PeerArgs),
    /// (internal) The stock gst-webrtc-signalling server, until stdin closes.
    #[command(hide = true)]
    AnchorServer(anchor::AnchorServerArgs),
    /// (internal) A publisher for `bench fanout`, until stdin closes.
    #[command(hide = true)]
    Publisher(fanout::PublisherArgs),
    /// (internal) The load generator of `bench server`.
    #[command(hide = true)]
    Load(server::LoadArgs),
}

/// Runs `gst-room bench ...`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Children inherit the raised limit: the server bench holds thousands of sockets.
    raise_nofile_limit();
    let (bench, figures) = match args.bench {
        Bench::Join(a) if a.browser => return blocking(move || join::browser(a)).await,
        Bench::Join(a) => ("join", blocking(move || join::run(a)).await?),
        Bench::Latency(a) => ("latency", blocking(move || latency::run(a)).await?),
        Bench::Fanout(a) => ("fanout", blocking(move || fanout::run(a)).await?),
        Bench::Server(a) => ("server", blocking(move || server::run(a)).await?),
        Bench::Network(a) => ("network", blocking(move || network::run(a)).await?),
        Bench::LatencyPeer(a) => return blocking(move || latency::peer(a)).await,
        Bench::NetworkViewer(a) => return blocking(move || network::viewer(a)).await,
        Bench::AnchorServer(a) => return anchor::serve(a).await,
        Bench::Publisher(a) => return blocking(move || fanout::publisher(a)).await,
        Bench::Load(a) => return server::load(a).await,
    };
    print_figures(bench, &figures);
    Ok(())
}

/// GStreamer calls block: the benchmarks run on the blocking pool, not on a runtime worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("benchmark thread")?
}

/// One reported figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub median: f64,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Samples behind the figure.
    pub runs: usize,
    /// The same figure of the stock stack, when there is one.
    pub anchor: Option<f64>,
}

impl Figure {
    /// A figure from samples (median, p95, p99); `None` without samples.
    pub fn from_samples(
        name: impl Into<String>,
        unit: &'static str,
        samples: &[f64],
    ) -> Option<Figure> {
        let s = Summary::of(samples)?;
        Some(Figure {
            name: name.into(),
            unit,
            median: s.median,
            p95: Some(s.p95),
            p99: Some(s.p99),
            runs: s.n,
            anchor: None,
        })
    }

    /// A single value (no spread).
    pub fn value(name: impl Into<String>, unit: &'static str, value: f64, runs: usize) -> Figure {
        Figure {
            name: name.into(),
            unit,
            median: value,
            p95: None,
            p99: None,
            runs,
            anchor: None,
        }
    }

    /// Sets the anchor's median (from its samples).
    pub fn with_anchor(mut self, anchor: Option<f64>) -> Figure {
        self.anchor = anchor;
        self
    }

    /// `median / anchor`.
    pub fn ratio(&self) -> Option<f64> {
        self.anchor
            .filter(|a| *a != 0.0 && a.is_finite())
            .map(|a| self.median / a)
    }
}

/// Median, p95 and p99 of a set of samples (linear interpolation between ranks).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            median: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            n: sorted.len(),
        })
    }
}

/// The `p`th percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// The median of samples, if any.
pub fn median(samples: &[f64]) -> Option<f64> {
    Summary::of(samples).map(|s| s.median)
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Prints the markdown table and then one JSON line per figure.
fn print_figures(bench: &str, figures: &[Figure]) {
    let cell = |v: Option<f64>| v.map(|v| format!("{:.3}", round3(v))).unwrap_or("–".into());
    println!();
    println!(
        "### gst-room bench {bench} ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!();
    println!("| figure | unit | median | p95 | p99 | runs | anchor | ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for f in figures {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            f.unit,
            cell(Some(f.median)),
            cell(f.p95),
            cell(f.p99),
            f.runs,
            cell(f.anchor),
            cell(f.ratio()),
        );
    }
    println!();
    for f in figures {
        let json = serde_json::json!({
            "bench": bench,
            "name": f.name,
            "unit": f.unit,
            "median": round3(f.median),
            "p95": f.p95.map(round3),
            "p99": f.p99.map(round3),
            "runs": f.runs,
            "anchor": f.anchor.map(round3),
            "ratio": f.ratio().map(round3),
        });
        println!("{json}");
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "note: debug build; for real figures run `cargo build --release -p gst-room` and use target/release/gst-room"
        );
    }
}

/// Raises the soft limit of open files to the hard limit (one socket per participant).
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: count fields after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at indices 11 and 12.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}

/// Resident memory of a process in bytes (VmRSS from /proc/PID/status).
pub fn process_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// A child process running this binary: its stdout read line by line, stdin kept open (closing
/// it asks the bench subcommands to stop), stopped and reaped on drop.
pub struct Child {
    name: String,
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Child {
    /// Runs `gst-room ARGS...`. Logging defaults to warnings so that it costs nothing.
    pub fn spawn(name: &str, args: &[String]) -> anyhow::Result<Child> {
        Self::spawn_in(None, name, args)
    }

    /// Runs `gst-room ARGS...` inside a network namespace (`ip netns exec NS`), or here.
    pub fn spawn_in(namespace: Option<&str>, name: &str, args: &[String]) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut command = match namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            // The stock server warns about every connection the load generator drops at exit.
            command.env("RUST_LOG", "warn,gst_plugin_webrtc_signalling=error");
        }
        let mut process = command
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdout = process.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Child {
            name: name.to_owned(),
            process,
            lines,
        })
    }

    /// `gst-room server` on a free port of 127.0.0.1; returns it and its WebSocket URL.
    pub fn room_server(max_participants: usize) -> anyhow::Result<(Child, String)> {
        Self::room_server_with(max_participants, &[])
    }

    /// `gst-room server` with `extra` flags (e.g. `--tls-self-signed`); the URL is `wss://` then.
    pub fn room_server_with(
        max_participants: usize,
        extra: &[String],
    ) -> anyhow::Result<(Child, String)> {
        let mut args: Vec<String> = [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--max-participants",
            &max_participants.to_string(),
            // Every simulated participant comes from 127.0.0.1: lift the per-address cap.
            "--max-connections-per-ip",
            "100000",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(extra);
        let child = Child::spawn("room server", &args)?;
        // "gst-room server listening on http(s)://ADDR/ (WebSocket ws(s)://ADDR/ws)"
        let line = child.wait_line(Duration::from_secs(20), |l| l.contains("(WebSocket ws"))?;
        let url = line
            .split_once("(WebSocket ")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .ok_or_else(|| anyhow!("unexpected server line {line:?}"))?
            .to_owned();
        Ok((child, url))
    }

    /// The stock signalling server on a free port of 127.0.0.1; returns it and its URL.
    pub fn anchor_server() -> anyhow::Result<(Child, String)> {
        let args = ["bench", "anchor-server", "--listen", "127.0.0.1:0"];
        let child = Child::spawn("anchor signalling server", &args.map(String::from))?;
        let line = child.wait_line(Duration::from_secs(20), |l| {
            l.starts_with(anchor::LISTENING)
        })?;
        let url = line[anchor::LISTENING.len()..].trim().to_owned();
        Ok((child, url))
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The stdout lines printed since the last call, without waiting.
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for a stdout line that `matches` (skipping others) and returns it.
    pub fn wait_line(
        &self,
        wait: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("the {} said nothing expected within {wait:?}", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the {} ended before it was ready", self.name)
                }
            }
        }
    }

    /// Asks the child to stop (stdin closed, then SIGINT) and kills it if it does not.
    pub fn stop(&mut self) {
        drop(self.process.stdin.take());
        let pid = self.process.id() as libc::pid_t;
        let start = Instant::now();
        let mut interrupted = false;
        loop {
            if matches!(self.process.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = self.process.kill();
                let _ = self.process.wait();
                return;
            }
            if !interrupted && start.elapsed() > Duration::from_millis(300) {
                // `gst-room server` stops on Ctrl-C, not on stdin.
                // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
                unsafe { libc::kill(pid, libc::SIGINT) };
                interrupted = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pipeline set to PLAYING that goes to NULL when dropped: every exit, errors included,
/// leaves the room and stops the pipeline's threads before the servers go away.
pub struct Running(gst::Pipeline);

impl Running {
    pub fn start(pipeline: gst::Pipeline) -> anyhow::Result<Running> {
        // Wrapped first, so that a refused PLAYING still ends in NULL.
        let running = Running(pipeline);
        running.0.set_state(gst::State::Playing)?;
        Ok(running)
    }
}

impl std::ops::Deref for Running {
    type Target = gst::Pipeline;

    fn deref(&self) -> &gst::Pipeline {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Registers the plugins (the room elements, webrtcsink/webrtcsrc) in this process.
pub fn init_gstreamer() -> anyhow::Result<()> {
    Ok(gstroom::app::init()?)
}

/// Waits for an element message named `name` that satisfies `matches`; fails on a pipeline
/// error or after `wait`.
pub fn wait_for_element_message(
    pipeline: &gst::Pipeline,
    name: &str,
    wait: Duration,
    matches: impl Fn(&gst::StructureRef) -> bool,
) -> anyhow::Result<()> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        anyhow::ensure!(!left.is_zero(), "no {name} message within {wait:?}");
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(left.as_millis() as u64),
            &[gst::MessageType::Element, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => anyhow::bail!(
                "pipeline error while waiting for {name}: {} ({:?})",
                err.error(),
                err.debug()
            ),
            gst::MessageView::Element(e)
                if e.structure()
                    .is_some_and(|s| s.name() == name && matches(s)) =>
            {
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Fails with the pipeline's first error, if it posted one.
pub fn check_bus(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
        && let gst::MessageView::Error(err) = msg.view()
    {
        bail!(
            "{}: {} ({:?})",
            err.src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_default(),
            err.error(),
            err.debug()
        );
    }
    Ok(())
}

/// A pipeline holding one `roomsrc` that plays only `participant`, as `username` (not started).
pub fn roomsrc_viewer(
    url: &str,
    room: &str,
    username: &str,
    participant: &str,
) -> anyhow::Result<(gst::Pipeline, gst::Element)> {
    let pipeline = gst::Pipeline::new();
    let roomsrc = gst::ElementFactory::make("roomsrc")
        .property("server-url", url)
        .property("room", room)
        .property("username", username)
        .property("participant", participant)
        .build()?;
    pipeline.add(&roomsrc)?;
    Ok((pipeline, roomsrc))
}

/// Links a decoded video pad to `capsfilter video/x-raw ! [queue !] fakesink` and returns the
/// fakesink. The raw capsfilter matters: webrtcsrc decodes only when downstream refuses RTP, and
/// a bare fakesink takes anything.
pub fn link_raw_sink(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    sync: bool,
) -> anyhow::Result<gst::Element> {
    let line = if sync {
        "capsfilter caps=video/x-raw ! queue max-size-buffers=3 ! fakesink name=out sync=true"
    } else {
        "capsfilter caps=video/x-raw ! fakesink name=out sync=false async=false"
    };
    let branch = gst::parse::bin_from_description(line, true)?;
    pipeline.add(&branch)?;
    branch.sync_state_with_parent()?;
    pad.link(&branch.static_pad("sink").expect("ghosted sink pad"))
        .map_err(|e| anyhow!("cannot link {}: {e:?}", pad.name()))?;
    Ok(branch.by_name("out").expect("named fakesink"))
}

/// The nick of an enum property (e.g. webrtcbin's `ice-connection-state`).
pub fn enum_nick(obj: &impl IsA<gst::glib::Object>, property: &str) -> Option<String> {
    let value = obj.as_ref().property_value(property);
    gst::glib::EnumValue::from_value(&value).map(|(_, v)| v.nick().to_owned())
}
