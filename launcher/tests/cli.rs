//! The `gst-room` command as a user runs it: a real process, real pipelines, real files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::media::*;
use gst_room_tests::{TestServer, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_gst-room");

/// A running `gst-room` with its stdout lines on a channel and its stderr kept; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        Running::start_with_log(args, None)
    }

    /// Runs with `RUST_LOG` set to `rust_log`, or without it at all when None.
    fn start_with_log(args: &[&str], rust_log: Option<&str>) -> Running {
        let mut command = Command::new(BIN);
        command.args(args);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        Running::spawn(&mut command)
    }

    /// Runs `command` (a `gst-room` command line).
    fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("gst-room runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// The first stdout line containing `needle`.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("gst-room printed no line with {needle:?}"),
            }
        }
    }

    /// The first stderr (log) line containing `needle`.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            let kept = self.stderr.lock().unwrap();
            if let Some(line) = kept.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            drop(kept);
            assert!(
                Instant::now() < deadline,
                "gst-room logged no line with {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `host:port` of a server, from its listening line.
    fn server_addr(&self) -> String {
        let line = self.wait_line("listening on http://");
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned()
    }

    /// Sends Ctrl-C and returns the exit code.
    fn interrupt(mut self) -> i32 {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        wait_with_deadline(&mut self.child, MEDIA_WAIT).expect("gst-room stops after Ctrl-C")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exit code, or None (after killing it) when still running at the deadline.
fn wait_with_deadline(child: &mut Child, wait: Duration) -> Option<i32> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn demo_serves_the_invite_link_publishes_demo_bot_and_stops_on_ctrl_c() {
    init();
    let demo = Running::start(&["demo", "--listen", "127.0.0.1:0", "--quiet"]);
    let invite = demo.wait_line("/?room=demo");
    let url = invite.trim();
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, page) = rt.block_on(http_get(&addr, "/?room=demo"));
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));

    let viewer = Viewer::new(
        &format!("ws://{addr}/ws"),
        "room=demo username=checker participant=demo-bot",
    )
    .start();
    viewer.wait("demo-bot's frames", |s| {
        s.frames.get("video_demo-bot").copied().unwrap_or(0) >= 10
    });
    drop(viewer);
    assert_eq!(demo.interrupt(), 0);
}

/// Runs the demo with `RUST_LOG` as given (None: unset), has a viewer play demo-bot (WebSocket
/// traffic on the server's and the bot's connections), stops it, and returns its stderr lines.
fn demo_log_lines(rust_log: Option<&str>) -> Vec<String> {
    let demo = Running::start_with_log(&["demo", "--listen", "127.0.0.1:0", "--quiet"], rust_log);
    let invite = demo.wait_line("/?room=demo");
    let addr = invite
        .trim()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let viewer = Viewer::new(
        &format!("ws://{addr}/ws"),
        "room=demo username=log-checker participant=demo-bot",
    )
    .start();
    viewer.wait("demo-bot's frames", |s| {
        s.frames.get("video_demo-bot").copied().unwrap_or(0) >= 5
    });
    drop(viewer);
    // The lines are read on a thread: give it the last ones before the process is gone.
    let stderr = demo.stderr.clone();
    assert_eq!(demo.interrupt(), 0);
    std::thread::sleep(Duration::from_millis(200));
    stderr.lock().unwrap().clone()
}

#[test]
fn demo_logs_no_debug_by_default_and_never_tungstenite_trace() {
    init();
    let quiet = demo_log_lines(None);
    let noisy: Vec<_> = quiet
        .iter()
        .filter(|l| l.contains("DEBUG") || l.contains("TRACE"))
        .collect();
    assert!(
        noisy.is_empty(),
        "debug/trace lines without RUST_LOG: {noisy:#?}"
    );

    // The same run with every level on: tungstenite's debug lines show (RUST_LOG raises the
    // level), its trace lines (frame payloads) do not.
    let traced = demo_log_lines(Some("trace"));
    assert!(
        traced
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("tungstenite")),
        "RUST_LOG=trace still shows tungstenite's debug lines"
    );
    let frames: Vec<_> = traced
        .iter()
        .filter(|l| l.contains("TRACE") && l.contains("tungstenite"))
        .collect();
    assert!(frames.is_empty(), "tungstenite trace lines: {frames:#?}");
}

#[test]
fn demo_with_tokens_admits_demo_bot_and_the_guest_of_its_invite_link() {
    for flags in [
        ["--token-secret", "demo-test-secret-of-thirty-two-bytes"],
        ["--token", "demo-shared-token"],
    ] {
        demo_admits_bot_and_guest(&flags);
    }
}

fn demo_admits_bot_and_guest(flags: &[&str]) {
    let mut args = vec!["demo", "--listen", "127.0.0.1:0", "--quiet"];
    args.extend(flags);
    let demo = Running::start(&args);
    let invite = demo.wait_line("/?room=demo");
    let (page, token) = invite
        .trim()
        .split_once("#token=")
        .expect("the invite link carries a token");
    assert!(page.ends_with("/?room=demo&user=guest"), "{invite}");
    let addr = page
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("ws://{addr}/ws");
        let mut guest = gst_room_tests::Client::connect(&url).await;
        // demo-bot joins with its own minted token; the guest with the link's. Wait for the
        // bot's stream: it may still be starting.
        let state = guest.request_join_with_token("demo", "guest", Some(token)).await;
        let room_protocol::ServerMessage::State { participants, .. } = state else {
            panic!("guest refused: {state:?}");
        };
        if !participants.iter().any(|p| p.username == "demo-bot" && !p.streams.is_empty()) {
            guest
                .recv_until("demo-bot publishing", |m| {
                    matches!(m, room_protocol::ServerMessage::Published { username, .. } if username == "demo-bot")
                })
                .await;
        }
        let mut stranger = gst_room_tests::Client::connect(&url).await;
        let refused = stranger.request_join("demo", "guest2").await;
        assert!(
            matches!(refused, room_protocol::ServerMessage::Failed { .. }),
            "{refused:?}"
        );
    });
    assert_eq!(demo.interrupt(), 0);
}

#[test]
fn launch_with_a_bad_pipeline_fails_with_the_parse_error() {
    let output = Command::new(BIN)
        .args(["launch", "videotestsrc ! no-such-element"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-element"), "{stderr}");
}

#[test]
fn server_with_an_unreachable_redis_fails_naming_it() {
    // A free port with nothing listening: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--redis", &url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Redis at {url}")),
        "{stderr}"
    );
}

#[test]
fn launch_reports_a_refused_join_with_the_reason_and_fails() {
    let config = room_signaling::Config {
        max_participants: 1,
        ..Default::default()
    };
    let server = TestServer::start(config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _holder = rt.block_on(gst_room_tests::Client::join(
        &server.ws_url(),
        "full",
        "first",
    ));
    let output = Command::new(BIN)
        .args([
            "launch",
            "--quiet",
            &format!(
                "roomsrc server-url={} room=full username=second ! fakesink",
                server.ws_url()
            ),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("failed: room-full"), "{stdout}");
    assert!(stderr.contains("room-full"), "{stderr}");
}

#[test]
fn a_token_from_gst_room_token_admits_publish_and_nothing_else_does() {
    const SECRET: &str = "cli-test-secret-of-thirty-two-bytes";
    let server = TestServer::start(room_signaling::Config {
        token_secret: Some(SECRET.into()),
        ..Default::default()
    });
    let url = server.ws_url();
    let token = |username: &str| {
        let output = Command::new(BIN)
            .args([
                "token",
                "--room",
                "tok",
                "--username",
                username,
                "--ttl",
                "5m",
            ])
            .env("GST_ROOM_TOKEN_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let publish = |username: &str, token: Option<&str>| -> Vec<String> {
        let mut args = [
            "publish",
            "--server",
            &url,
            "--room",
            "tok",
            "--username",
            username,
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        if let Some(token) = token {
            args.extend(["--token".to_owned(), token.to_owned()]);
        }
        args
    };
    // Refused: no token, and bot's token used by someone else.
    for (username, token) in [("bot", None), ("mallory", Some(token("bot")))] {
        let output = Command::new(BIN)
            .args(publish(username, token.as_deref()))
            .args(["--duration", "10"])
            .env_remove("GST_ROOM_TOKEN")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("unauthorized"), "{stderr}");
    }
    let bot_token = token("bot");
    let args = publish("bot", Some(&bot_token));
    let admitted = Running::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    admitted.wait_line("in room tok as bot");
    assert_eq!(admitted.interrupt(), 0);
    // A short secret is refused before anything is minted.
    let output = Command::new(BIN)
        .args([
            "token",
            "--room",
            "tok",
            "--username",
            "bot",
            "--token-secret",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 32"));
}

#[test]
fn mix_records_two_publishers_to_a_file_that_plays() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let a = start(&publisher_line(&url, "rec", "alice", [200, 30, 30], ""));
    let b = start(&publisher_line(&url, "rec", "bob", [30, 30, 200], ""));
    let dir = std::env::temp_dir().join(format!("gst-room-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The MP4 in the speaker layout (mix-layout=speaker through the preset).
    for (file, layout) in [("room.webm", "grid"), ("room.mp4", "speaker")] {
        let output = dir.join(file);
        let mut recorder = Command::new(BIN)
            .args([
                "mix",
                "--quiet",
                "--server",
                &url,
                "--room",
                "rec",
                "--duration",
                "4",
                "--width",
                "320",
                "--height",
                "240",
                "--layout",
                layout,
            ])
            .arg("--output")
            .arg(&output)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait_with_deadline(&mut recorder, MEDIA_WAIT);
        assert_eq!(
            status,
            Some(0),
            "recording {file} (None: still running after {MEDIA_WAIT:?}: EOS never finalized it)"
        );
        let info = gst_pbutils::Discoverer::new(gst::ClockTime::from_seconds(10))
            .unwrap()
            .discover_uri(&format!("file://{}", output.display()))
            .unwrap_or_else(|e| panic!("{file} does not play: {e}"));
        assert!(
            info.duration()
                .is_some_and(|d| d > gst::ClockTime::from_seconds(1)),
            "{file}: {:?}",
            info.duration()
        );
        assert_eq!(info.video_streams().len(), 1, "{file}");
        assert_eq!(info.audio_streams().len(), 1, "{file}");
    }
    stop(&a);
    stop(&b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_preset_pipeline_parses_with_its_variables_filled() {
    init();
    let listing = Command::new(BIN).arg("pipelines").output().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() >= 8, "{listing}");
    for name in names {
        let printed = Command::new(BIN)
            .args(["pipelines", "--print", name])
            .output()
            .unwrap();
        assert!(printed.status.success(), "{name}");
        let description = String::from_utf8(printed.stdout).unwrap();
        let pipeline = gst::parse::launch(&description)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{description}"));
        assert!(
            pipeline
                .downcast_ref::<gst::Bin>()
                .unwrap()
                .children()
                .len()
                >= 2,
            "{name}"
        );
    }
}

#[test]
fn server_stops_on_ctrl_c_while_a_request_is_half_sent_and_applies_its_limit_flags() {
    use std::io::{Read, Write};
    // A header timeout far longer than the test: Ctrl-C must not wait for it.
    let server = Running::start(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--header-timeout",
        "600",
        "--shutdown-grace",
        "1",
        "--max-connections-per-ip",
        "2",
        "--chat-limit",
        "5:10",
    ]);
    let addr = server.server_addr();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let second = std::net::TcpStream::connect(&addr).unwrap();
    let third = std::net::TcpStream::connect(&addr).unwrap();
    // The per-address flag took effect: of three connections one is refused with 429. Which one
    // is not fixed: the server counts each connection in its own task, in whatever order those
    // run. The two admitted ones wait for their request (the 600 s header timeout), so every
    // read is bounded here.
    let answers: Vec<String> = [half, second, third]
        .into_iter()
        .map(|mut tcp| {
            tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        })
        .collect();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 429"))
        .count();
    assert_eq!(refused, 1, "{answers:?}");
    assert_eq!(server.interrupt(), 0);
}

/// How a half-sent request fared.
enum HalfSent {
    /// Accepted: the server waits for the rest of the request (the socket, kept open).
    Open { _socket: tokio::net::TcpStream },
    /// Closed by the server: what it answered first (empty when the close came as a reset).
    Refused(String),
}

/// Connects from `source` (a loopback address) to `addr`, sends the start of a request and
/// waits up to `wait` for the server to say or do anything.
async fn half_sent_request(addr: std::net::SocketAddr, source: &str, wait: Duration) -> HalfSent {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(addr).await.expect("connects");
    let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let mut answer = Vec::new();
    match tokio::time::timeout(wait, tcp.read_to_end(&mut answer)).await {
        Err(_) => HalfSent::Open { _socket: tcp },
        Ok(_) => HalfSent::Refused(String::from_utf8_lossy(&answer).into_owned()),
    }
}

/// GET /healthz on a kept-alive connection; the status line, within a second.
async fn healthz_within_a_second(tcp: &mut tokio::io::BufStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        tcp.flush().await?;
        let mut status = String::new();
        tcp.read_line(&mut status).await?;
        let mut length = 0;
        loop {
            let mut header = String::new();
            tcp.read_line(&mut header).await?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        tcp.read_exact(&mut vec![0; length]).await?;
        std::io::Result::Ok(status.trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .expect("/healthz answered within 1 s")
        .expect("/healthz on the kept-alive connection")
}

/// `ulimit -n 256` (soft; the hard limit stays) for the process about to be executed.
fn soft_file_limit_256() -> std::io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed; both are
    // async-signal-safe, as code between fork and exec must be.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = 256.min(limit.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn with_a_low_file_limit_the_connection_cap_follows_it_and_the_excess_is_refused_at_once() {
    use room_signaling::accept::FileBudget;
    use std::os::unix::process::CommandExt;
    const FLOOD: usize = 400;
    let budget = FileBudget::for_limit(Some(256));
    let cap = budget.max_connections();
    let mut command = Command::new(BIN);
    // The per-address cap lifted (as behind a proxy, or from many addresses) so that the file
    // limit is what the flood meets; a header timeout far longer than the test.
    command
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--max-connections-per-ip",
            "1000",
            "--header-timeout",
            "600",
        ])
        .env("RUST_LOG", "info");
    // SAFETY: soft_file_limit_256 only makes async-signal-safe calls.
    unsafe { command.pre_exec(soft_file_limit_256) };
    let server = Running::spawn(&mut command);
    let addr: std::net::SocketAddr = server.server_addr().parse().unwrap();
    let caps = server.wait_log("connection caps");
    assert!(
        caps.contains(&format!("--max-connections {cap},"))
            && caps.contains(&format!("--max-unjoined {} ", budget.max_unjoined()))
            && caps.contains("RLIMIT_NOFILE 256"),
        "{caps}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Accepted before the flood: a kept-alive HTTP connection and a WebSocket not in a
        // room yet.
        let mut health =
            tokio::io::BufStream::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        assert!(healthz_within_a_second(&mut health).await.contains("200"));
        let mut member = gst_room_tests::Client::connect(&format!("ws://{addr}/ws")).await;

        // The flood from two addresses, /healthz asked all along on the kept-alive connection
        // (and the WebSocket read, so that it answers the server's pings).
        let sources = ["127.0.0.1", "127.0.0.2"];
        let flood = futures::future::join_all(
            (0..FLOOD).map(|i| half_sent_request(addr, sources[i % 2], Duration::from_secs(3))),
        );
        let mut answered = 0;
        let outcomes = {
            let checks = async {
                loop {
                    let status = healthz_within_a_second(&mut health).await;
                    assert!(status.contains("200"), "{status}");
                    answered += 1;
                    let _ = member.try_recv(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                outcomes = flood => outcomes,
                never = checks => never,
            }
        };
        assert!(
            answered > 10,
            "/healthz asked {answered} times during the flood"
        );
        // Exactly the cap is open (the two connections above included); every other request
        // was closed within the 3 s wait, against the 600 s header timeout.
        let open = outcomes
            .iter()
            .filter(|o| matches!(o, HalfSent::Open { .. }))
            .count();
        assert_eq!(open, cap - 2);
        for outcome in &outcomes {
            if let HalfSent::Refused(answer) = outcome {
                assert!(
                    answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
                    "{answer:?}"
                );
            }
        }
        // While the server is full: a new connection is told so at once...
        match half_sent_request(addr, "127.0.0.2", Duration::from_secs(3)).await {
            HalfSent::Refused(answer) => assert!(answer.starts_with("HTTP/1.1 503"), "{answer}"),
            HalfSent::Open { .. } => panic!("a connection over the cap was accepted"),
        }
        // ...and those already accepted are served: a join, /healthz.
        let state = member.request_join("r", "alice").await;
        assert!(
            matches!(state, room_protocol::ServerMessage::State { .. }),
            "{state:?}"
        );
        assert!(healthz_within_a_second(&mut health).await.contains("200"));

        // Once the flood is gone (the server sees the sockets close), new connections are
        // served again.
        drop(outcomes);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let HalfSent::Refused(answer) =
            half_sent_request(addr, "127.0.0.1", Duration::from_millis(300)).await
        {
            assert!(Instant::now() < deadline, "still refused: {answer:?}");
        }
        assert_eq!(http_get(&addr.to_string(), "/healthz").await.0, 200);
    });
}
