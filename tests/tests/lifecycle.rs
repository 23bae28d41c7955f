//! The participant's lifecycle promises, measured from outside: a raw WebSocket observer in the
//! room hears LEFT before an element's `set_state(Null)` returns; a pipeline started and stopped
//! 100 times leaves no file descriptors, threads or webrtcsrc behind; chat sent while the server
//! is away is held and delivered once after the rejoin.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Instant;

use async_tungstenite::tungstenite::{self, Message, WebSocket};
use gst::prelude::*;
use gst_room_tests::TestServer;
use gst_room_tests::media::*;
use room_protocol::{ClientMessage, ServerMessage};

const RED: Rgb = [230, 20, 20];
const BLUE: Rgb = [20, 40, 230];

/// A raw protocol participant on a blocking socket that only the test thread reads: what it has
/// received at a given moment is what is in its socket then, whatever the scheduler does.
struct Observer {
    ws: WebSocket<TcpStream>,
}

impl Observer {
    fn join(server: &TestServer, room: &str) -> Observer {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(MEDIA_WAIT)).unwrap();
        let (ws, _) = tungstenite::client(server.ws_url(), stream).unwrap();
        let mut observer = Observer { ws };
        let join = ClientMessage::Join {
            room: room.into(),
            username: "observer".into(),
            token: None,
        };
        let join = serde_json::to_string(&join).unwrap();
        observer.ws.send(Message::text(join)).unwrap();
        observer.wait_for("the state", |m| matches!(m, ServerMessage::State { .. }));
        observer
    }

    /// Reads (blocking, up to [`MEDIA_WAIT`]) until a message matching `what`.
    fn wait_for(&mut self, description: &str, what: impl Fn(&ServerMessage) -> bool) {
        let deadline = Instant::now() + MEDIA_WAIT;
        while Instant::now() < deadline {
            if self.read().as_ref().is_some_and(&what) {
                return;
            }
        }
        panic!("observer never heard {description}");
    }

    /// Every message already in the socket, without waiting for more.
    fn received_by_now(&mut self) -> Vec<ServerMessage> {
        self.ws.get_ref().set_nonblocking(true).unwrap();
        let mut messages = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => messages.push(serde_json::from_str(&text).unwrap()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(err)) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => panic!("observer connection failed: {err}"),
            }
        }
        self.ws.get_ref().set_nonblocking(false).unwrap();
        messages
    }

    /// The next protocol message; `None` for a control frame.
    fn read(&mut self) -> Option<ServerMessage> {
        match self.ws.read().expect("observer read") {
            Message::Text(text) => Some(serde_json::from_str(&text).unwrap()),
            _ => None,
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
/// that LEFT is already in the observer's socket when `set_state(Null)` returns.
///
/// Why this holds by construction: NULL returns once the server closed the participant's
/// socket after its `leave` (client.rs `leave`), and the server closes only after the LEFT
/// that `leave` caused was written to every other member's socket (signaling hub.rs `Flush`,
/// bounded by 1 s for a reader that does not keep up — not the case here). A write on
/// loopback hands the bytes to the receiving socket before it returns, so the observer's socket
/// holds LEFT before the server even closes. The observer is read right after the return, on
/// this thread, without waiting: a LEFT that arrived later would not be seen.
fn left_before_null_returns(server: &TestServer, room: &str, username: &str, line: &str) {
    let mut observer = Observer::join(server, room);
    let pipeline = start(line);
    observer.wait_for("the join", joined(username));
    wait_for_event(&pipeline, "room-state", |_| true);
    pipeline.set_state(gst::State::Null).unwrap();
    let received = observer.received_by_now();
    assert!(
        received.iter().any(left(username)),
        "{room}: LEFT of {username} was not in the observer's socket when set_state(Null) \
         returned; it had {received:?}"
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
