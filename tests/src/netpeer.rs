//! Driving `netpeer` processes (tests/src/bin/netpeer.rs) in network namespaces and reading what
//! they print: decoded frames with the viewer's own clock, events, encoder bitrates; plus
//! nftables in a namespace (rules and counters).
//!
//! ```no_run
//! use gst_room_tests::netns::Network;
//! use gst_room_tests::netpeer::{Peer, frames};
//! let net = Network::new(&["srv", "pub", "view"]);
//! let bin = "target/debug/netpeer"; // env!("CARGO_BIN_EXE_netpeer") in an integration test
//! let server = Peer::spawn(&net, "srv", bin, &["server", "10.77.0.2:8443"]);
//! // ... Peer::spawn(&net, "view", bin, &["view", URL, ROOM, USER, PUBLISHER])
//! //     .wait("30 frames", |l| frames(l).len() >= 30);
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::Network;

/// How long a step may take before the test fails (ICE through a loaded 2-core machine, debug
/// build).
pub const WAIT: Duration = Duration::from_secs(40);

/// A `netpeer` process in one namespace; killed on drop.
pub struct Peer {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Starts `program` (the netpeer binary) with `args` in `host`'s namespace; its stdout lines
    /// are kept. GStreamer logs nothing unless `NETPEER_GST_DEBUG` says what.
    pub fn spawn(net: &Network, host: &str, program: &str, args: &[&str]) -> Peer {
        let mut child = net
            .command(host, program)
            .args(args)
            .env(
                "GST_DEBUG",
                std::env::var("NETPEER_GST_DEBUG").unwrap_or_else(|_| "0".into()),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("netpeer runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let record = lines.clone();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                record.lock().unwrap().push(line);
            }
        });
        Peer {
            name: format!("{host}: netpeer {}", args.first().unwrap_or(&"")),
            child,
            lines,
        }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done` holds for its output; panics after [`WAIT`], or when it printed an
    /// error or exited.
    pub fn wait(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        self.wait_for(what, WAIT, done)
    }

    /// [`Peer::wait`] with another bound.
    pub fn wait_for(
        &mut self,
        what: &str,
        bound: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + bound;
        loop {
            let lines = self.lines();
            if let Some(error) = lines.iter().find(|l| l.starts_with("error")) {
                panic!("{}: {error}", self.name);
            }
            if done(&lines) {
                return lines;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}: {}",
                    self.name,
                    tail(&lines)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}: {}",
                self.name,
                tail(&lines)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills it now (as a crash would) and waits for its end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of an output, for failure messages.
pub fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs a shell command inside `host`, panicking when it fails.
pub fn sh(net: &Network, host: &str, script: &str) {
    let out = net
        .command(host, "sh")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{host}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads an nftables ruleset inside `host`.
pub fn nft(net: &Network, host: &str, ruleset: &str) {
    let mut child = net
        .command(host, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs (Debian package nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{host}: nft: {}\n{ruleset}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a named nftables counter in `host` counted: (packets, bytes).
pub fn nft_counter(net: &Network, host: &str, table: &str, name: &str) -> (u64, u64) {
    let out = net
        .command(host, "nft")
        .args(["-j", "list", "counter", "inet", table, name])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{host}: nft -j list counter inet {table} {name}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let counter = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c.get("counter").filter(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{host}: no counter {name}: {json}"));
    (
        counter["packets"].as_u64().unwrap(),
        counter["bytes"].as_u64().unwrap(),
    )
}

/// A decoded frame as the viewer reported it: its clock in ms, the centre colour and the width.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub ms: u64,
    pub rgb: [u8; 3],
    pub width: u64,
}

/// The `frame` lines of a viewer.
pub fn frames(lines: &[String]) -> Vec<Frame> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("frame "))
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            Frame {
                ms: v[0],
                rgb: [v[1] as u8, v[2] as u8, v[3] as u8],
                width: v[4],
            }
        })
        .collect()
}

/// Timestamps (ms) of lines starting with `prefix`.
pub fn times(lines: &[String], prefix: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// Whether two colours are within 24 on every channel.
pub fn close_to(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 24)
}

/// The viewer's latest clock reading (ms): the time of its last timestamped line.
pub fn viewer_now(viewer: &Peer) -> u64 {
    viewer
        .lines()
        .iter()
        .rev()
        .find_map(|l| l.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// What a viewer decoded between two of its clock readings.
#[derive(Debug)]
pub struct Window {
    pub seconds: f64,
    pub frames: usize,
    pub fps: f64,
    /// Longest time without a new decoded frame (window edges count), ms.
    pub longest_freeze_ms: u64,
    pub audio_buffers: usize,
    /// Longest time without a decoded audio buffer, ms.
    pub longest_audio_gap_ms: u64,
    /// RTP bitrate received over the window, kbit/s.
    pub kbps: f64,
}

fn longest_gap(times: &[u64], from: u64, to: u64) -> u64 {
    let mut points = vec![from];
    points.extend(times.iter().copied().filter(|t| (from..=to).contains(t)));
    points.push(to);
    points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// What the viewer whose output is `lines` decoded from `from` to `to` (its clock, ms).
pub fn window(lines: &[String], from: u64, to: u64) -> Window {
    let frame_times: Vec<u64> = frames(lines).iter().map(|f| f.ms).collect();
    let audio = times(lines, "audio ");
    let in_window = |t: &&u64| (from..=to).contains(*t);
    let received: Vec<(u64, u64)> = lines
        .iter()
        .filter_map(|l| {
            let mut v = l.strip_prefix("received ")?.split(' ');
            Some((v.next()?.parse().ok()?, v.next()?.parse().ok()?))
        })
        .filter(|(t, _)| (from..=to).contains(t))
        .collect();
    let kbps = match (received.first(), received.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 * 8.0 / (b.0 - a.0) as f64,
        _ => 0.0,
    };
    let seconds = (to - from) as f64 / 1000.0;
    let frames = frame_times.iter().filter(in_window).count();
    Window {
        seconds,
        frames,
        fps: frames as f64 / seconds,
        longest_freeze_ms: longest_gap(&frame_times, from, to),
        audio_buffers: audio.iter().filter(in_window).count(),
        longest_audio_gap_ms: longest_gap(&audio, from, to),
        kbps,
    }
}

/// Waits until the viewer's clock has passed `to` (it reports a line after it), and returns
/// what it decoded from `from` to `to`.
pub fn window_when_passed(viewer: &mut Peer, from: u64, to: u64) -> Window {
    let lines = viewer.wait("its clock to pass the window", |l| {
        times(l, "frame ").last().is_some_and(|t| *t >= to)
            || times(l, "received ").last().is_some_and(|t| *t >= to)
    });
    window(&lines, from, to)
}

/// Decoded frames in each of the `seconds` seconds from `from` (viewer clock, ms).
pub fn frames_per_second(lines: &[String], from: u64, seconds: u64) -> Vec<usize> {
    let frames = frames(lines);
    (0..seconds)
        .map(|i| {
            let second = from + i * 1000..from + (i + 1) * 1000;
            frames.iter().filter(|f| second.contains(&f.ms)).count()
        })
        .collect()
}
