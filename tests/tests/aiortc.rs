//! Interop with aiortc (the Python WebRTC stack, which offers only ECDHE-ECDSA cipher suites):
//! an aiortc viewer decodes a roomsink, a roomsrc decodes an aiortc publisher, and every session
//! of one roomsink presents the element's one certificate.
//!
//! The aiortc side is `tests/aiortc/participant.py`, run with `python3` (aiortc, websockets and
//! numpy installed by scripts/setup.sh).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use gst::prelude::*;
use gst_room_tests::TestServer;
use gst_room_tests::media::*;
use room_protocol::{ClientMessage, ServerMessage};

const RED: Rgb = [230, 20, 20];
const GREEN: Rgb = [20, 200, 40];
const TOLERANCE: u8 = 40;

/// The Python participant; killed when dropped.
struct Aiortc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Aiortc {
    fn start(args: &[&str]) -> Aiortc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/aiortc/participant.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .args(["--seconds", "120"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/setup.sh installs aiortc)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Aiortc { child, lines }
    }

    /// The next stdout line that `matches`; panics if the process ends or after MEDIA_WAIT.
    fn wait_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => continue,
                Err(err) => panic!("aiortc participant: no {what} ({err})"),
            }
        }
    }
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_frame(line: &str) -> Option<Rgb> {
    let mut parts = line.strip_prefix("frame ")?.split(' ');
    let mut channel = || parts.next()?.parse::<u8>().ok();
    Some([channel()?, channel()?, channel()?])
}

#[test]
fn aiortc_viewer_decodes_a_roomsink_and_sees_its_certificate() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let publisher = start(&publisher_line(&url, "py", "bot", RED, ""));
    let sink = publisher.by_name("sink").unwrap();
    let expected: String = sink.property("dtls-fingerprint");

    let viewer = Aiortc::start(&["view", &url, "py", "pyviewer", "bot"]);
    let fingerprint = viewer.wait_line("fingerprint in the offer", |l| {
        l.starts_with("fingerprint ")
    });
    assert_eq!(fingerprint, format!("fingerprint sha-256 {expected}"));
    // DTLS with an ECDSA-only peer, then five decoded red frames in a row.
    let mut red = 0;
    while red < 5 {
        let line = viewer.wait_line("a decoded frame", |l| l.starts_with("frame "));
        let colour = parse_frame(&line).unwrap();
        red = if close_to(colour, RED, TOLERANCE) {
            red + 1
        } else {
            0
        };
    }
    fail_on_error(&publisher);
    stop(&publisher);
}

#[test]
fn roomsrc_decodes_an_aiortc_publisher() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let viewer = Viewer::new(&url, "room=pypub username=viewer participant=py").start();
    let publisher = Aiortc::start(&["publish", &url, "pypub", "py", "20,200,40"]);
    publisher.wait_line("joined", |l| l == "joined");
    viewer.wait("the aiortc publisher's green", |s| {
        s.frames.get("video_py").copied().unwrap_or(0) >= 5
            && s.colour
                .get("video_py")
                .is_some_and(|c| close_to(*c, GREEN, TOLERANCE))
    });
}

#[test]
fn every_session_of_a_roomsink_presents_the_same_ecdsa_certificate() {
    init();
    let server = TestServer::start(room_signaling::Config {
        max_participants: 8,
        ..Default::default()
    });
    let url = server.ws_url();
    let publisher = start(&publisher_line(&url, "cert", "bot", RED, ""));
    let sink = publisher.by_name("sink").unwrap();
    let expected: String = sink.property("dtls-fingerprint");
    assert_eq!(expected.split(':').count(), 32, "{expected}");
    // Another roomsink has a certificate of its own.
    let other = gst::ElementFactory::make("roomsink").build().unwrap();
    assert_ne!(other.property::<String>("dtls-fingerprint"), expected);

    wait_for_event(&publisher, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("publishing")
    });
    // Two raw protocol viewers ask for sessions and read the offers' fingerprints.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fingerprints: Vec<String> = rt.block_on(async {
        let mut found = Vec::new();
        for name in ["raw1", "raw2"] {
            let mut client = gst_room_tests::Client::join(&url, "cert", name).await;
            client
                .send(&ClientMessage::Play {
                    participant: "bot".into(),
                    stream: "main".into(),
                })
                .await;
            let offer = client
                .recv_until("an offer", |m| matches!(m, ServerMessage::Sdp { .. }))
                .await;
            let ServerMessage::Sdp { description, .. } = offer else {
                unreachable!()
            };
            found.extend(
                description
                    .sdp
                    .lines()
                    .filter_map(|l| l.strip_prefix("a=fingerprint:"))
                    .map(str::to_owned),
            );
        }
        found
    });
    assert!(fingerprints.len() >= 2, "{fingerprints:?}");
    for fingerprint in &fingerprints {
        assert_eq!(fingerprint, &format!("sha-256 {expected}"));
    }
    // And a GStreamer viewer completes DTLS with it.
    let viewer = Viewer::new(&url, "room=cert username=viewer participant=bot").start();
    viewer.wait("red", |s| {
        s.colour
            .get("video_bot")
            .is_some_and(|c| close_to(*c, RED, TOLERANCE))
    });
    stop(&publisher);
}
