//! `gst-room bench network`: what a viewer gets from a publisher on a bad link.
//!
//! ```text
//! namespace srv:  gst-room server
//! namespace pub:  gst-room bench publisher (640x480@30 VP8)   ← faults on this host's link
//! namespace view: gst-room bench network-viewer: roomsrc, prints each decoded frame
//! ```
//!
//! Three hosts on one virtual LAN (the topology of `tests/netns.sh`, shared with the tests).
//! For each condition (`--condition`, or all) — random loss of 0, 2, 5, 10 % of the
//! publisher's packets both ways (nftables `numgen random`), then its uplink capped at 2, 1,
//! 0.5 Mbit/s (tc tbf) — the condition is set, the viewer's reports are collected for
//! `--seconds`, the condition is lifted and the stream left to recover for `--settle` seconds.
//! Figures per condition: decoded frames per second, the longest time without a new frame, and
//! the RTP bitrate received. `--encode-per-viewer` publishes with webrtcsink's encoder per
//! viewer instead of the shared one. Needs root (network namespaces).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gst::prelude::*;

use super::{Child, Figure};

const ROOM: &str = "network";
const PUBLISHER: &str = "pub";
/// The topology script of the tests (one definition of the test network).
const NETNS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/netns.sh");

#[derive(clap::Args, Debug)]
pub struct NetworkArgs {
    /// Seconds measured per condition.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..))]
    seconds: u64,
    /// Seconds of recovery after each condition is lifted.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Only this condition (repeatable, in the given order): loss_0pct, loss_2pct, loss_5pct,
    /// loss_10pct, cap_2000kbit, cap_1000kbit, cap_500kbit. Default: all of them, in that order.
    #[arg(long = "condition", value_name = "NAME", value_parser = parse_condition)]
    conditions: Vec<Condition>,
    /// The publisher's roomsink with `encode-per-viewer=true` (webrtcsink's own encoder per
    /// viewer) instead of the shared encoder.
    #[arg(long)]
    encode_per_viewer: bool,
}

/// Every condition, in the bench's default order.
const ALL_CONDITIONS: [Condition; 7] = [
    Condition::Loss(0),
    Condition::Loss(2),
    Condition::Loss(5),
    Condition::Loss(10),
    Condition::Cap(2000),
    Condition::Cap(1000),
    Condition::Cap(500),
];

/// A `--condition` name: one of [`ALL_CONDITIONS`]' names.
fn parse_condition(name: &str) -> Result<Condition, String> {
    ALL_CONDITIONS
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| {
            let names: Vec<String> = ALL_CONDITIONS.iter().map(|c| c.name()).collect();
            format!(
                "unknown condition {name:?}: use one of {}",
                names.join(", ")
            )
        })
}

/// Flags of the hidden `gst-room bench network-viewer`.
#[derive(clap::Args, Debug)]
pub struct ViewerArgs {
    #[arg(long)]
    server_url: String,
}

/// A fault on the publisher's link.
#[derive(Debug, Clone, Copy)]
enum Condition {
    /// Percent of packets dropped, both ways.
    Loss(u32),
    /// Uplink cap in kbit/s.
    Cap(u32),
}

impl Condition {
    fn name(self) -> String {
        match self {
            Condition::Loss(p) => format!("loss_{p}pct"),
            Condition::Cap(k) => format!("cap_{k}kbit"),
        }
    }

    fn set(self, net: &Network) -> anyhow::Result<()> {
        match self {
            Condition::Loss(0) => Ok(()),
            Condition::Loss(p) => net.nft(
                PUBLISHER,
                &format!(
                    "table inet benchloss {{
                       chain in {{ type filter hook input priority 0; numgen random mod 100 < {p} drop; }}
                       chain out {{ type filter hook output priority 0; numgen random mod 100 < {p} drop; }}
                     }}"
                ),
            ),
            Condition::Cap(k) => net.run(
                PUBLISHER,
                &format!("tc qdisc add dev eth0 root tbf rate {k}kbit burst 32kbit latency 200ms"),
            ),
        }
    }

    fn lift(self, net: &Network) -> anyhow::Result<()> {
        match self {
            Condition::Loss(0) => Ok(()),
            Condition::Loss(_) => net.run(PUBLISHER, "nft delete table inet benchloss"),
            Condition::Cap(_) => net.run(PUBLISHER, "tc qdisc del dev eth0 root"),
        }
    }
}

/// The bench's hosts; removed on drop.
struct Network {
    run: String,
}

impl Network {
    fn up(hosts: &[&str]) -> anyhow::Result<Network> {
        let run = format!("gstroom-{}-0", std::process::id());
        let out = Command::new("bash")
            .arg(NETNS_SCRIPT)
            .arg("up")
            .arg(&run)
            .args(hosts)
            .output()
            .context("running tests/netns.sh")?;
        if !out.status.success() {
            bail!(
                "cannot create network namespaces (root, iproute2 needed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Network { run })
    }

    fn namespace(&self, host: &str) -> String {
        format!("{}-{host}", self.run)
    }

    fn run(&self, host: &str, script: &str) -> anyhow::Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.namespace(host), "sh", "-c", script])
            .output()?;
        if !out.status.success() {
            bail!("{host}: {script}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn nft(&self, host: &str, ruleset: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("nft (Debian package nftables)")?;
        child.stdin.take().unwrap().write_all(ruleset.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{host}: nft: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([NETNS_SCRIPT, "down", &self.run])
            .status();
    }
}

pub fn run(args: NetworkArgs) -> anyhow::Result<Vec<Figure>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench network needs root (it makes network namespaces)");
    }
    // Children before the network: they must end before their namespaces go.
    let net = Network::up(&["srv", PUBLISHER, "view"])?;
    let listen = "10.77.0.2:8443";
    let arg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let server = Child::spawn_in(
        Some(&net.namespace("srv")),
        "room server",
        &arg(&["server", "--listen", listen]),
    )?;
    server.wait_line(Duration::from_secs(20), |l| l.contains("(WebSocket ws://"))?;
    let url = format!("ws://{listen}/ws");
    let mut publisher_args = arg(&["bench", "publisher", "--server-url", &url, "--room", ROOM]);
    if args.encode_per_viewer {
        publisher_args.push("--encode-per-viewer".into());
    }
    let publisher = Child::spawn_in(
        Some(&net.namespace(PUBLISHER)),
        "publisher",
        &publisher_args,
    )?;
    publisher.wait_line(Duration::from_secs(60), |l| l == "publishing")?;
    let viewer = Child::spawn_in(
        Some(&net.namespace("view")),
        "viewer",
        &arg(&["bench", "network-viewer", "--server-url", &url]),
    )?;
    viewer.wait_line(Duration::from_secs(60), |l| l.starts_with("frame "))?;
    std::thread::sleep(Duration::from_secs(args.settle));

    let mut lines = Vec::new();
    let mut figures = Vec::new();
    let conditions = if args.conditions.is_empty() {
        ALL_CONDITIONS.to_vec()
    } else {
        args.conditions
    };
    for condition in conditions {
        lines.extend(viewer.drain());
        let from = last_time(&lines);
        condition.set(&net)?;
        std::thread::sleep(Duration::from_secs(args.seconds));
        lines.extend(viewer.drain());
        condition.lift(&net)?;
        let to = from + args.seconds * 1000;
        let w = Window::of(&lines, from, to);
        eprintln!("{}: {w:?}", condition.name());
        let name = condition.name();
        figures.push(Figure::value(
            format!("{name}_fps"),
            "frames/s",
            w.fps,
            w.frames,
        ));
        figures.push(Figure::value(
            format!("{name}_longest_freeze"),
            "ms",
            w.longest_freeze_ms,
            1,
        ));
        figures.push(Figure::value(
            format!("{name}_bitrate"),
            "kbit/s",
            w.kbps,
            1,
        ));
        std::thread::sleep(Duration::from_secs(args.settle));
    }
    drop((viewer, publisher, server));
    drop(net);
    Ok(figures)
}

/// The viewer's clock (ms) at its latest line.
fn last_time(lines: &[String]) -> u64 {
    lines
        .iter()
        .rev()
        .find_map(|l| l.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// What the viewer decoded between two readings of its clock.
#[derive(Debug)]
struct Window {
    frames: usize,
    fps: f64,
    longest_freeze_ms: f64,
    kbps: f64,
}

impl Window {
    fn of(lines: &[String], from: u64, to: u64) -> Window {
        let values = |prefix: &str| -> Vec<Vec<u64>> {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(|l| {
                    l.split(' ')
                        .filter_map(|v| v.parse().ok())
                        .collect::<Vec<u64>>()
                })
                .filter(|v| v.first().is_some_and(|t| (from..=to).contains(t)))
                .collect()
        };
        let frames: Vec<u64> = values("frame ").iter().map(|v| v[0]).collect();
        let mut points = vec![from];
        points.extend(&frames);
        points.push(to);
        let longest = points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let bytes = values("bytes ");
        let kbps = match (bytes.first(), bytes.last()) {
            (Some(a), Some(b)) if b[0] > a[0] => (b[1] - a[1]) as f64 * 8.0 / (b[0] - a[0]) as f64,
            _ => 0.0,
        };
        Window {
            frames: frames.len(),
            fps: frames.len() as f64 * 1000.0 / (to - from) as f64,
            longest_freeze_ms: longest as f64,
            kbps,
        }
    }
}

/// `gst-room bench network-viewer`: plays the publisher and prints `frame MS` for every
/// decoded video frame and `bytes MS N` (RTP bytes received so far) once a second, MS being
/// its own monotonic clock; runs until stdin closes.
pub fn viewer(args: ViewerArgs) -> anyhow::Result<()> {
    super::init_gstreamer()?;
    let start = Instant::now();
    let (pipeline, roomsrc) = super::roomsrc_viewer(&args.server_url, ROOM, "viewer", PUBLISHER)?;
    let weak = pipeline.downgrade();
    roomsrc.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns roomsrc, which owns this closure.
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if !pad.name().starts_with("video") {
            return;
        }
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            println!("frame {}", start.elapsed().as_millis());
            gst::PadProbeReturn::Ok
        });
        if let Err(err) = super::link_raw_sink(&pipeline, pad, false) {
            gst::element_error!(pipeline, gst::CoreError::Pad, ("{err:#}"));
        }
    });
    let webrtcbins = Arc::new(Mutex::new(Vec::<gst::Element>::new()));
    let found = webrtcbins.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        if element.factory().is_some_and(|f| f.name() == "webrtcbin") {
            found.lock().unwrap().push(element.clone());
        }
    });
    let pipeline = super::Running::start(pipeline)?;
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for _ in std::io::stdin().lock().lines().map_while(Result::ok) {}
        let _ = done_tx.send(());
    });
    loop {
        super::check_bus(&pipeline)?;
        if done.recv_timeout(Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        let bins = webrtcbins.lock().unwrap().clone();
        let bytes: u64 = bins.iter().map(received_bytes).sum();
        println!("bytes {} {bytes}", start.elapsed().as_millis());
    }
}

/// RTP bytes a webrtcbin received so far (its `inbound-rtp` stats).
fn received_bytes(webrtcbin: &gst::Element) -> u64 {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    if promise.wait() != gst::PromiseResult::Replied {
        return 0;
    }
    let Some(stats) = promise.get_reply() else {
        return 0;
    };
    stats
        .iter()
        .filter_map(|(_, v)| v.get::<gst::Structure>().ok())
        .filter(|s| s.name() == "inbound-rtp")
        .map(|s| s.get::<u64>("bytes-received").unwrap_or(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_named_as_their_figures() {
        for condition in ALL_CONDITIONS {
            let parsed = parse_condition(&condition.name()).unwrap();
            assert_eq!(parsed.name(), condition.name());
        }
        let err = parse_condition("cap_300kbit").unwrap_err();
        assert!(
            err.contains("unknown condition \"cap_300kbit\"") && err.contains("loss_0pct"),
            "{err}"
        );
    }
}
