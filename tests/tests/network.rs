//! Real networks: participants in their own network namespaces (tests/src/netns.rs), a room
//! server and a coturn TURN server in another, and faults made with nftables (loss, blocked
//! paths, NAT), tbf (bandwidth) and link state (flaps). Each participant is its own process
//! (`netpeer`, tests/src/bin/netpeer.rs), since a process lives in one namespace; the viewer
//! reports every decoded frame with its own clock, and the checks are made on those reports.
//!
//! Needs root, coturn and nftables (CI runs as root; scripts/setup.sh installs both). Run with
//! `cargo test -p gst-room-tests --test network`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst_room_tests::coturn::Coturn;
use gst_room_tests::netns::Network;

/// How long a step may take before the test fails (ICE through TURN on a loaded 2-core
/// machine, debug build).
const WAIT: Duration = Duration::from_secs(40);
/// The room server's port in its namespace.
const SERVER_PORT: u16 = 8443;

/// A `netpeer` process in one namespace; killed on drop.
struct Peer {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn spawn(net: &Network, host: &str, args: &[&str]) -> Peer {
        let mut child = net
            .command(host, env!("CARGO_BIN_EXE_netpeer"))
            .args(args)
            .env("GST_DEBUG", "0")
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
            name: format!("{host}: netpeer {}", args[0]),
            child,
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done` holds for its output; panics after [`WAIT`], or when it printed an
    /// error or exited.
    fn wait(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.lines();
            if let Some(error) = lines.iter().find(|l| l.starts_with("error")) {
                panic!("{}: {error}", self.name);
            }
            if done(&lines) {
                return lines;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before {what}: {}", self.name, tail(&lines));
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
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs a command inside `host`, panicking when it fails.
fn sh(net: &Network, host: &str, script: &str) {
    let out = net.command(host, "sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{host}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads an nftables ruleset inside `host`.
fn nft(net: &Network, host: &str, ruleset: &str) {
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

/// Whether `from` gets an answer from `to` within a second: a TCP connect to a closed port is
/// refused by a reachable host and times out when packets are dropped (no ping here).
fn reachable(net: &Network, from: &str, to: &str) -> bool {
    let script = format!("exec 3<>/dev/tcp/{}/9", net.address(to));
    let out = net
        .command(from, "timeout")
        .args(["1", "bash", "-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).contains("refused")
}

/// The room server in `host`, handing out TURN credentials for `coturn` when given.
fn start_server(net: &Network, host: &str, coturn: Option<&Coturn>) -> (Peer, String) {
    let listen = format!("{}:{SERVER_PORT}", net.address(host));
    let mut args = vec!["server".to_owned(), listen.clone()];
    if let Some(turn) = coturn {
        args.extend([
            "--turn-secret".into(),
            turn.secret.clone(),
            "--turn-url".into(),
            turn.url(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Peer::spawn(net, host, &args);
    server.wait("the server to listen", |l| {
        l.iter().any(|l| l.starts_with("listening"))
    });
    (server, format!("ws://{listen}/ws"))
}

/// A decoded frame as the viewer reported it: its clock in ms and the centre colour.
#[derive(Debug, Clone, Copy)]
struct Frame {
    ms: u64,
    rgb: [u8; 3],
}

fn frames(lines: &[String]) -> Vec<Frame> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("frame "))
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            Frame {
                ms: v[0],
                rgb: [v[1] as u8, v[2] as u8, v[3] as u8],
            }
        })
        .collect()
}

/// Timestamps (ms) of lines starting with `prefix`.
fn times(lines: &[String], prefix: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

fn close_to(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 24)
}

#[test]
fn media_flows_through_turn_when_participants_cannot_reach_each_other() {
    let net = Network::new(&["srv", "a", "b"]);
    // a and b are on one LAN but drop each other's packets: only srv is reachable.
    let (a, b) = (net.address("a"), net.address("b"));
    for (host, other) in [("a", b), ("b", a)] {
        nft(
            &net,
            host,
            &format!(
                "table inet isolate {{
                   chain in {{ type filter hook input priority 0; ip saddr {other} drop; }}
                   chain out {{ type filter hook output priority 0; ip daddr {other} drop; }}
                 }}"
            ),
        );
    }
    assert!(!reachable(&net, "a", "b") && !reachable(&net, "b", "a"));
    assert!(reachable(&net, "a", "srv") && reachable(&net, "b", "srv"));

    let coturn = Coturn::start(&net, "srv");
    let (_server, url) = start_server(&net, "srv", Some(&coturn));
    // The publisher hides its addresses (relay-only); the viewer has the default policy and
    // no ICE properties: both use the TURN server and credentials the room server handed out.
    let _publisher = Peer::spawn(
        &net,
        "a",
        &["publish", &url, "turn", "alice", "ff0000", "relay-only=true"],
    );
    let mut viewer = Peer::spawn(&net, "b", &["view", &url, "turn", "bob", "alice"]);
    let lines = viewer.wait("30 red frames and a selected pair", |l| {
        frames(l)
            .iter()
            .filter(|f| close_to(f.rgb, [255, 0, 0]))
            .count()
            >= 30
            && l.iter().any(|l| l.starts_with("pair "))
    });
    let pair = lines.iter().find(|l| l.starts_with("pair ")).unwrap();
    // The publisher's only candidates are relayed ones: the viewer's selected remote one is
    // the publisher's TURN allocation on srv.
    assert!(
        pair.ends_with(&format!(" relay {}", net.address("srv"))),
        "selected pair: {pair}"
    );
    let log = coturn.log().join("\n");
    assert!(
        log.contains(":alice") && log.contains("ALLOCATE processed, success"),
        "coturn allocated nothing for alice:\n{log}"
    );
}
