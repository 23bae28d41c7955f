//! The participant's lifecycle promises, measured from outside: a raw WebSocket observer in the
//! room hears LEFT before an element's `set_state(Null)` returns; a pipeline started and stopped
//! 100 times leaves no file descriptors, threads or webrtcsrc behind; chat sent while the server
//! is away is held and delivered once after the rejoin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::media::*;
use gst_room_tests::{Client, TestServer};
use room_protocol::ServerMessage;

const RED: Rgb = [230, 20, 20];
const BLUE: Rgb = [20, 40, 230];

/// A raw protocol participant that records every message with the time it was read.
struct Observer {
    heard: Arc<Mutex<Vec<(Instant, ServerMessage)>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn join(url: &str, room: &str) -> Observer {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (joined, is_joined) = std::sync::mpsc::channel();
        let (url, room) = (url.to_owned(), room.to_owned());
        let (record, stop) = (heard.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client = Client::join(&url, &room, "observer").await;
                joined.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(msg) = client.try_recv(Duration::from_millis(50)).await {
                        record.lock().unwrap().push((Instant::now(), msg));
                    }
                }
                client.close().await;
            });
        });
        is_joined.recv().unwrap();
        Observer {
            heard,
            done,
            thread: Some(thread),
        }
    }

    /// When the first message matching `what` was read; waits up to [`MEDIA_WAIT`].
    fn when(&self, description: &str, what: impl Fn(&ServerMessage) -> bool) -> Instant {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            if let Some((at, _)) = self.heard.lock().unwrap().iter().find(|(_, m)| what(m)) {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "observer never heard {description}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn left(username: &str) -> impl Fn(&ServerMessage) -> bool + '_ {
    move |m| matches!(m, ServerMessage::Left { username: u } if u == username)
}

fn joined(username: &str) -> impl Fn(&ServerMessage) -> bool + '_ {
    move |m| matches!(m, ServerMessage::Joined { username: u } if u == username)
}

/// Starts `line`, waits until the observer sees `username` join, stops the pipeline, and checks
/// that the observer read LEFT before `set_state(Null)` returned.
fn left_before_null_returns(server: &TestServer, room: &str, username: &str, line: &str) {
    let observer = Observer::join(&server.ws_url(), room);
    let pipeline = start(line);
    observer.when("the join", joined(username));
    wait_for_event(&pipeline, "room-state", |_| true);
    pipeline.set_state(gst::State::Null).unwrap();
    let returned = Instant::now();
    let heard = observer.when("LEFT", left(username));
    assert!(
        heard <= returned,
        "LEFT was read {:?} after set_state(Null) returned",
        heard - returned
    );
}

#[test]
fn left_reaches_the_room_before_null_returns_for_roomsink_roomsrc_and_both() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    left_before_null_returns(
        &server,
        "left-sink",
        "bot",
        &publisher_line(&url, "left-sink", "bot", RED, ""),
    );
    left_before_null_returns(
        &server,
        "left-src",
        "viewer",
        &format!(
            "roomsrc server-url={url} room=left-src username=viewer \
             audiotestsrc is-live=true wave=silence ! fakesink"
        ),
    );
    left_before_null_returns(
        &server,
        "left-both",
        "bot",
        &format!(
            "{} roomsrc server-url={url} room=left-both username=bot",
            publisher_line(&url, "left-both", "bot", RED, "")
        ),
    );
}

/// Open file descriptors and threads of this process.
fn fds_and_threads() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    (count("/proc/self/fd"), count("/proc/self/task"))
}

/// Open file descriptors by kind (socket, pipe, anon_inode:[eventfd], ...), for a failure message.
fn fd_kinds() -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let kind = target.split(':').next().unwrap_or_default().to_owned();
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

fn webrtcsrc_children(roomsrc: &gst::Element) -> usize {
    roomsrc
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .children()
        .iter()
        .filter(|c| c.factory().is_some_and(|f| f.name() == "webrtcsrc"))
        .count()
}

#[test]
fn a_hundred_start_stop_cycles_leave_nothing_behind() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    // Someone to play, so that every cycle creates a webrtcsrc. In another process, as a real
    // participant is: what this process owns is then only the cycling pipeline. (In-process,
    // the publisher's webrtcsink 0.15.4 keeps about one unix socket and one eventfd per ended
    // viewer session, which would hide what this test measures.)
    let _alice = GstLaunch::start(&publisher_line(&url, "cycles", "alice", BLUE, ""));
    let line = format!(
        "{} roomsrc name=room server-url={url} room=cycles username=bot",
        publisher_line(&url, "cycles", "bot", RED, "")
    );
    let pipeline = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let roomsrc = pipeline.by_name("room").unwrap();
    let bus = pipeline.bus().unwrap();
    let mut baseline = None;
    for cycle in 0..100 {
        pipeline.set_state(gst::State::Playing).unwrap();
        // wait_for_event fails on any error message before the one awaited.
        wait_for_event(&pipeline, "room-session-status", |s| {
            s.get::<&str>("status") == Ok("playing") && s.get::<&str>("peer") == Ok("alice")
        });
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(
            webrtcsrc_children(&roomsrc),
            0,
            "cycle {cycle}: orphan webrtcsrc"
        );
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(err) = msg.view() {
                panic!("cycle {cycle}: {} ({:?})", err.error(), err.debug());
            }
        }
        if cycle == 9 {
            // Thread pools and lazily created runtimes have settled by now.
            baseline = Some(fds_and_threads());
        }
    }
    // The blocking pool keeps idle threads for 10 s; a leak of one thread or socket per cycle
    // would show 90 more.
    let (fds, threads) = fds_and_threads();
    let (base_fds, base_threads) = baseline.unwrap();
    assert!(
        fds <= base_fds + 10,
        "fds {base_fds} → {fds}: {:?}",
        fd_kinds()
    );
    assert!(
        threads <= base_threads + 10,
        "threads {base_threads} → {threads}"
    );
}

/// A `gst-launch-1.0` process with this build's plugin; killed on drop.
struct GstLaunch(std::process::Child);

impl GstLaunch {
    fn start(line: &str) -> GstLaunch {
        // The cdylib next to this test binary's directory: target/<profile>/libgstroom.so.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        assert!(
            dir.join("libgstroom.so").exists(),
            "build the plugin first: cargo build -p gst-plugin-room ({})",
            dir.display()
        );
        let child = std::process::Command::new("gst-launch-1.0")
            .args(line.split_whitespace())
            .env("GST_PLUGIN_PATH", dir)
            .env("GST_REGISTRY", dir.join("gst-room-test-registry.bin"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 runs");
        GstLaunch(child)
    }
}

impl Drop for GstLaunch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pops bus messages until the room-message `until`; returns the texts of the room-messages
/// before it, in order. Fails on an error message.
fn chat_until(pipeline: &gst::Pipeline, until: &str) -> Vec<String> {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + MEDIA_WAIT;
    let mut texts = Vec::new();
    while Instant::now() < deadline {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => panic!("{} ({:?})", err.error(), err.debug()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "room-message"
                {
                    let text = s.get::<String>("text").unwrap();
                    if text == until {
                        return texts;
                    }
                    texts.push(text);
                }
            }
            _ => {}
        }
    }
    panic!("no room-message {until:?}; got {texts:?}");
}

#[test]
fn chat_sent_while_the_server_is_away_is_held_and_delivered_once_after_the_rejoin() {
    init();
    let mut server = TestServer::default_config();
    let url = server.ws_url();
    let addr = server.addr;
    let talker = Viewer::new(&url, "room=away username=talker").start();
    wait_for_event(&talker.pipeline, "room-state", |_| true);

    server.stop();
    wait_for_event(&talker.pipeline, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("reconnecting")
    });
    let send = |text: &str| {
        talker
            .roomsrc
            .emit_by_name::<bool>("send-message", &[&text])
    };
    let held: Vec<String> = (0..gstroom::client::CHAT_HOLD)
        .map(|i| format!("held-{i}"))
        .collect();
    for text in &held {
        assert!(send(text), "{text} not accepted while reconnecting");
    }
    assert!(!send("one too many"), "the hold queue is bounded");

    let _server = TestServer::start_on(addr, room_signaling::Config::default());
    wait_for_event(&talker.pipeline, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("joined")
    });
    assert!(send("after"));
    // Room messages come back to their sender: each held one exactly once, in order, before
    // the message sent after the rejoin.
    assert_eq!(chat_until(&talker.pipeline, "after"), held);
}

#[test]
fn a_refused_publish_is_stream_status_failed_with_the_reason() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let first = start(&publisher_line(&url, "refused", "bot", RED, ""));
    wait_for_event(&first, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("publishing")
    });
    // The same participant (same username in this process) publishing the same stream again.
    let second = start(&publisher_line(&url, "refused", "bot", BLUE, ""));
    let failed = wait_for_event(&second, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("failed")
    });
    assert_eq!(failed.get::<&str>("reason").unwrap(), "stream-exists");
    assert_eq!(failed.get::<&str>("stream").unwrap(), "main");
    stop(&second);
    stop(&first);

    // An invalid stream name is refused at the state change, before joining.
    let bad =
        gst::parse::launch(&publisher_line(&url, "refused", "bot", RED, "stream=a.b")).unwrap();
    assert!(bad.set_state(gst::State::Playing).is_err());
    let error = wait_for_error(bad.downcast_ref().unwrap());
    assert!(error.contains("stream"), "{error}");
    bad.set_state(gst::State::Null).unwrap();
}
