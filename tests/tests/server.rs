//! The signaling server with real WebSocket clients against a server on a free port.

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use gst_room_tests::{Client, TestServer, http_get, http_get_with};
use room_protocol::*;
use room_signaling::{Config, RateLimit, RateLimits};

fn publish(stream: &str) -> ClientMessage {
    ClientMessage::Publish {
        stream: stream.into(),
        audio: true,
        video: true,
    }
}

fn chat(to: Option<&str>, text: &str) -> ClientMessage {
    ClientMessage::Message {
        to: to.map(Into::into),
        text: text.into(),
    }
}

fn is_error(msg: &ServerMessage, expected: ErrorCode) -> bool {
    matches!(msg, ServerMessage::Error { code, .. } if *code == expected)
}

#[tokio::test]
async fn joiner_gets_state_with_streams_and_others_get_joined_and_left() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r1", "alice").await;
    alice.send(&publish("main")).await;
    alice
        .send(&ClientMessage::Mute {
            stream: "main".into(),
            audio_muted: true,
            video_muted: false,
        })
        .await;
    alice.sync().await;

    let mut bob = Client::connect(&url).await;
    let state = bob.request_join("r1", "bob").await;
    let expected_stream = StreamInfo {
        stream: "main".into(),
        audio: true,
        video: true,
        audio_muted: true,
        video_muted: false,
    };
    assert_eq!(
        state,
        ServerMessage::State {
            room: "r1".into(),
            username: "bob".into(),
            capacity: 3,
            participants: vec![Participant {
                username: "alice".into(),
                streams: vec![expected_stream]
            }],
            ice_servers: vec![],
        }
    );
    assert_eq!(
        alice.recv().await,
        ServerMessage::Joined {
            username: "bob".into()
        }
    );
    bob.send(&ClientMessage::Leave {}).await;
    assert_eq!(
        alice.recv().await,
        ServerMessage::Left {
            username: "bob".into()
        }
    );
    // Leaving keeps the connection: bob can join again.
    assert!(matches!(
        bob.request_join("r1", "bob").await,
        ServerMessage::State { .. }
    ));
}

#[tokio::test]
async fn publish_mute_unpublish_reach_the_others_but_not_the_sender() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r", "alice").await;
    let mut bob = Client::join(&url, "r", "bob").await;
    alice.recv().await; // joined bob
    alice.send(&publish("cam")).await;
    let published = bob.recv().await;
    assert!(
        matches!(&published, ServerMessage::Published { username, stream } if username == "alice" && stream.stream == "cam")
    );
    alice
        .send(&ClientMessage::Mute {
            stream: "cam".into(),
            audio_muted: false,
            video_muted: true,
        })
        .await;
    assert_eq!(
        bob.recv().await,
        ServerMessage::Muted {
            username: "alice".into(),
            stream: "cam".into(),
            audio_muted: false,
            video_muted: true
        }
    );
    alice.send(&publish("cam")).await;
    assert!(is_error(&alice.recv().await, ErrorCode::StreamExists));
    bob.send(&ClientMessage::Unpublish {
        stream: "cam".into(),
    })
    .await;
    assert!(
        is_error(&bob.recv().await, ErrorCode::UnknownStream),
        "bob cannot unpublish alice's stream"
    );
    alice
        .send(&ClientMessage::Unpublish {
            stream: "cam".into(),
        })
        .await;
    assert_eq!(
        bob.recv().await,
        ServerMessage::Unpublished {
            username: "alice".into(),
            stream: "cam".into()
        }
    );
    alice.expect_silence().await;
}

#[tokio::test]
async fn chat_is_stamped_by_the_server_and_direct_messages_reach_one() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r", "alice").await;
    let mut bob = Client::join(&url, "r", "bob").await;
    let mut carol = Client::join(&url, "r", "carol").await;
    alice.recv().await;
    alice.recv().await;
    bob.recv().await;

    alice.send(&chat(None, "hello <b>all</b>")).await;
    for client in [&mut alice, &mut bob, &mut carol] {
        match client.recv().await {
            ServerMessage::Message {
                from,
                to: None,
                text,
                ts,
            } => {
                assert_eq!(
                    (from.as_str(), text.as_str()),
                    ("alice", "hello <b>all</b>")
                );
                assert!(
                    ts > 1_700_000_000_000,
                    "ts is milliseconds since the epoch: {ts}"
                );
            }
            other => panic!("expected the chat message, got {other:?}"),
        }
    }
    bob.send(&chat(Some("alice"), "psst")).await;
    for client in [&mut alice, &mut bob] {
        let msg = client.recv().await;
        assert!(
            matches!(&msg, ServerMessage::Message { from, to: Some(to), text, .. }
            if from == "bob" && to == "alice" && text == "psst"),
            "{msg:?}"
        );
    }
    carol.expect_silence().await;

    // A client cannot choose its sender name: the field is not part of its message.
    bob.send_raw(r#"{"type":"message","text":"spoof","from":"alice"}"#)
        .await;
    assert!(is_error(&bob.recv().await, ErrorCode::Malformed));
    bob.send(&chat(Some("nobody"), "x")).await;
    assert!(is_error(&bob.recv().await, ErrorCode::UnknownParticipant));
    bob.send(&chat(None, &"x".repeat(MAX_CHAT_BYTES + 1))).await;
    assert!(is_error(&bob.recv().await, ErrorCode::TextTooLong));
    alice.expect_silence().await;
    carol.expect_silence().await;
}

#[tokio::test]
async fn sessions_relay_between_their_two_ends_only() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut publisher = Client::join(&url, "r", "pub").await;
    let mut viewer = Client::join(&url, "r", "view").await;
    let mut other = Client::join(&url, "r", "other").await;
    publisher.send(&publish("main")).await;
    viewer
        .recv_until("published", |m| {
            matches!(m, ServerMessage::Published { .. })
        })
        .await;
    publisher
        .recv_until(
            "joined other",
            |m| matches!(m, ServerMessage::Joined { username } if username == "other"),
        )
        .await;
    other.recv().await; // published

    viewer
        .send(&ClientMessage::Play {
            participant: "pub".into(),
            stream: "main".into(),
        })
        .await;
    let ServerMessage::SessionStarted {
        session,
        participant,
        stream,
    } = viewer.recv().await
    else {
        panic!("expected session-started")
    };
    assert_eq!((participant.as_str(), stream.as_str()), ("pub", "main"));
    assert_eq!(
        publisher.recv().await,
        ServerMessage::SessionRequest {
            session: session.clone(),
            stream: "main".into(),
            viewer: "view".into()
        }
    );

    let offer = SessionDescription {
        kind: SdpType::Offer,
        sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n".into(),
    };
    publisher
        .send(&ClientMessage::Sdp {
            session: session.clone(),
            description: offer.clone(),
        })
        .await;
    assert_eq!(
        viewer.recv().await,
        ServerMessage::Sdp {
            session: session.clone(),
            description: offer
        }
    );
    let ice = |session: &str| ClientMessage::Ice {
        session: session.into(),
        candidate: "candidate:1 1 UDP 1 127.0.0.1 5000 typ host".into(),
        sdp_m_line_index: 0,
        sdp_mid: Some("0".into()),
    };
    viewer.send(&ice(&session)).await;
    assert!(matches!(publisher.recv().await, ServerMessage::Ice { .. }));

    // A third participant cannot inject into, or stop, someone else's session.
    other.send(&ice(&session)).await;
    assert!(is_error(&other.recv().await, ErrorCode::UnknownSession));
    other
        .send(&ClientMessage::Stop {
            session: session.clone(),
        })
        .await;
    assert!(is_error(&other.recv().await, ErrorCode::UnknownSession));
    // Nor can the viewer offer.
    let bad = SessionDescription {
        kind: SdpType::Offer,
        sdp: "v=0\r\n".into(),
    };
    viewer
        .send(&ClientMessage::Sdp {
            session: session.clone(),
            description: bad,
        })
        .await;
    assert!(is_error(&viewer.recv().await, ErrorCode::BadSdp));
    publisher.expect_silence().await;

    // The viewer's socket going away ends the session on the publisher's side.
    drop(viewer);
    let ended = publisher
        .recv_until("session-ended", |m| {
            matches!(m, ServerMessage::SessionEnded { .. })
        })
        .await;
    assert!(matches!(ended, ServerMessage::SessionEnded { session: s, .. } if s == session));
    other
        .recv_until(
            "left",
            |m| matches!(m, ServerMessage::Left { username } if username == "view"),
        )
        .await;
}

#[tokio::test]
async fn ten_simultaneous_joins_to_a_three_seat_room_admit_exactly_three() {
    let server = TestServer::start(admin_config());
    let url = server.ws_url();
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(Client::connect(&url).await);
    }
    let answers = futures::future::join_all(
        clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| c.request_join("race", Box::leak(format!("u{i}").into_boxed_str()))),
    )
    .await;
    let admitted = answers
        .iter()
        .filter(|m| matches!(m, ServerMessage::State { .. }))
        .count();
    let full = answers
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::Failed {
                    reason: FailReason::RoomFull,
                    ..
                }
            )
        })
        .count();
    assert_eq!((admitted, full), (3, 7), "{answers:?}");
    let rooms: serde_json::Value = http_get_json(&server, "/rooms").await;
    assert_eq!(
        rooms,
        serde_json::json!([{"room":"race","participants":3,"capacity":3}])
    );
}

#[tokio::test]
async fn taken_names_and_invalid_names_are_refused() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let _alice = Client::join(&url, "r", "alice").await;
    let mut second = Client::connect(&url).await;
    assert!(matches!(
        second.request_join("r", "alice").await,
        ServerMessage::Failed {
            reason: FailReason::NameTaken,
            ..
        }
    ));
    assert!(matches!(
        second.request_join("r x", "bob").await,
        ServerMessage::Failed {
            reason: FailReason::InvalidName,
            ..
        }
    ));
    assert!(matches!(
        second.request_join("r", "").await,
        ServerMessage::Failed {
            reason: FailReason::InvalidName,
            ..
        }
    ));
    // The same name in another room is fine.
    assert!(matches!(
        second.request_join("other", "alice").await,
        ServerMessage::State { .. }
    ));
    assert!(matches!(
        second.request_join("r", "zed").await,
        ServerMessage::Failed {
            reason: FailReason::AlreadyJoined,
            ..
        }
    ));
}

#[tokio::test]
async fn bad_input_gets_an_error_and_changes_nothing() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r", "alice").await;
    let mut bob = Client::join(&url, "r", "bob").await;
    alice.recv().await;

    for junk in [
        "{",
        "[]",
        "42",
        r#"{"type":"explode"}"#,
        r#"{"type":"join"}"#,
        r#"{"no":"type"}"#,
    ] {
        bob.send_raw(junk).await;
        assert!(is_error(&bob.recv().await, ErrorCode::Malformed), "{junk}");
    }
    bob.send_raw(&format!(
        r#"{{"type":"message","text":"{}"}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    ))
    .await;
    assert!(is_error(&bob.recv().await, ErrorCode::TooLarge));
    bob.send_message(Message::binary(vec![1u8, 2, 3])).await;
    assert!(is_error(&bob.recv().await, ErrorCode::Binary));
    let mut stranger = Client::connect(&url).await;
    stranger.send(&publish("main")).await;
    assert!(is_error(&stranger.recv().await, ErrorCode::NotJoined));

    // Nobody else heard anything, and the room still works for both.
    alice.expect_silence().await;
    bob.send(&chat(None, "still here")).await;
    assert!(
        matches!(alice.recv().await, ServerMessage::Message { text, .. } if text == "still here")
    );
}

#[tokio::test]
async fn a_message_that_names_a_field_twice_is_malformed_and_reaches_nobody() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r", "alice").await;
    let mut bob = Client::join(&url, "r", "bob").await;
    alice.recv().await; // joined
    for twice in [
        r#"{"type":"message","text":"a","text":"b"}"#,
        r#"{"type":"message","to":"alice","text":"a","to":"bob"}"#,
        r#"{"type":"message","text":"a","type":"message"}"#,
        r#"{"id":"1","type":"publish","stream":"main","audio":true,"video":true,"id":"1"}"#,
    ] {
        bob.send_raw(twice).await;
        let refusal = bob.recv().await;
        assert!(
            matches!(&refusal, ServerMessage::Error { code: ErrorCode::Malformed, message }
                if message.contains("duplicate key")),
            "{twice}: {refusal:?}"
        );
    }
    // Nothing was relayed or published; the connection stays and the room works.
    alice.expect_silence().await;
    bob.send(&chat(None, "once")).await;
    for client in [&mut alice, &mut bob] {
        let msg = client.recv().await;
        assert!(
            matches!(&msg, ServerMessage::Message { from, text, .. } if from == "bob" && text == "once"),
            "{msg:?}"
        );
    }
    let mut carol = Client::connect(&url).await;
    let state = carol.request_join("r", "carol").await;
    assert!(
        matches!(&state, ServerMessage::State { participants, .. }
            if participants.iter().all(|p| p.streams.is_empty())),
        "bob published nothing: {state:?}"
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_left_is_sent() {
    let config = Config {
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(800),
        ..Config::default()
    };
    let server = TestServer::start(config);
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r", "alice").await;
    let silent = Client::join(&url, "r", "silent").await;
    alice.recv().await; // joined
    // Holding the socket without reading it means pings are never answered.
    let _socket = silent.into_inner();
    let left = alice.recv().await;
    assert_eq!(
        left,
        ServerMessage::Left {
            username: "silent".into()
        }
    );
}

#[tokio::test]
async fn a_reader_that_cannot_keep_up_is_dropped_not_buffered() {
    // Keepalive off the table (long timeout): only the bounded queue can drop the slow reader.
    let config = Config {
        idle_timeout: Duration::from_secs(600),
        outgoing_queue: 8,
        // No rate limit in the way: the queue is under test, not the chat limit.
        rate_limits: RateLimits {
            chat: RateLimit::new(100_000, 100_000),
            messages: RateLimit::new(100_000, 100_000),
            ..RateLimits::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config);
    let url = server.ws_url();
    let mut alice = Client::join(&url, "r", "alice").await;
    let slow = Client::join(&url, "r", "slow").await;
    alice.recv().await;
    let _socket = slow.into_inner();
    let text = "y".repeat(4000);
    // Enough to fill the kernel's socket buffers and then the 8-message queue.
    for _ in 0..4000 {
        alice.send(&chat(None, &text)).await;
        if let Some(ServerMessage::Left { username }) = alice.try_recv(Duration::ZERO).await {
            assert_eq!(username, "slow");
            return;
        }
    }
    alice
        .recv_until(
            "left",
            |m| matches!(m, ServerMessage::Left { username } if username == "slow"),
        )
        .await;
}

#[tokio::test]
async fn shutdown_sends_every_participant_a_close_frame() {
    let mut server = TestServer::default_config();
    let url = server.ws_url();
    let alice = Client::join(&url, "r", "alice").await;
    let stopper = std::thread::spawn(move || server.stop());
    let mut ws = alice.into_inner();
    use futures::StreamExt;
    let mut close = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Ok(Message::Close(frame)) = frame {
            close = frame;
            break;
        }
    }
    let frame = close.expect("a close frame with a reason");
    assert_eq!(frame.reason.as_str(), "server shutting down");
    stopper.join().unwrap();
}

#[tokio::test]
async fn http_serves_health_rooms_and_the_page() {
    let server = TestServer::start(admin_config());
    let (status, body) = http_get(&server.addr.to_string(), "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = http_get(&server.addr.to_string(), "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"),
        "{body}"
    );
    assert_eq!(
        http_get_json(&server, "/rooms").await,
        serde_json::json!([])
    );
    assert_eq!(
        http_get(&server.addr.to_string(), "/no-such-file").await.0,
        404
    );
}

/// The admin token of `admin_config()` servers.
const ADMIN_TOKEN: &str = "test-admin-token";

/// The default configuration plus an admin token, so tests may read `/rooms`.
fn admin_config() -> Config {
    Config {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Config::default()
    }
}

/// GETs `path` with the admin token and parses the JSON answer.
async fn http_get_json(server: &TestServer, path: &str) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let reply = http_get_with(&server.addr.to_string(), path, &[&auth]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).unwrap()
}

#[tokio::test]
async fn welcome_carries_the_protocol_version_and_state_the_ice_servers() {
    let turn = IceServer {
        urls: vec!["turn:turn.example.org:3478".into()],
        username: Some("u".into()),
        credential: Some("c".into()),
    };
    let config = Config {
        ice_servers: vec![turn.clone()],
        ..Config::default()
    };
    let server = TestServer::start(config);
    let mut client = Client::connect(&server.ws_url()).await;
    match &client.welcome {
        Some(ServerMessage::Welcome {
            protocol,
            participant_id,
        }) => {
            assert_eq!(*protocol, PROTOCOL_VERSION);
            assert!(!participant_id.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match client.request_join("r", "alice").await {
        ServerMessage::State { ice_servers, .. } => assert_eq!(ice_servers, vec![turn]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refusals_echo_the_request_id_of_the_message_that_caused_them() {
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mut bob = Client::join(&url, "ids", "bob").await;
    bob.send(&publish("main")).await;
    bob.sync().await;
    let mut alice = Client::join(&url, "ids", "alice").await;
    // Two plays in flight: the first is fine, the second names nobody.
    alice
        .send_raw(r#"{"type":"play","participant":"bob","stream":"main","id":"play-1"}"#)
        .await;
    alice
        .send_raw(r#"{"type":"play","participant":"ghost","stream":"main","id":"play-2"}"#)
        .await;
    let started = alice.recv_with_id().await;
    assert!(
        matches!(started.msg, ServerMessage::SessionStarted { .. }),
        "{started:?}"
    );
    assert_eq!(started.id, None, "only refusals carry the id");
    let refused = alice.recv_with_id().await;
    assert!(
        is_error(&refused.msg, ErrorCode::UnknownParticipant),
        "{refused:?}"
    );
    assert_eq!(refused.id.as_deref(), Some("play-2"));
    // A refused join echoes its id in `failed`.
    let mut again = Client::connect(&url).await;
    again
        .send_raw(r#"{"type":"join","room":"ids","username":"bob","id":"j"}"#)
        .await;
    let failed = again.recv_with_id().await;
    assert!(
        matches!(failed.msg, ServerMessage::Failed { .. }),
        "{failed:?}"
    );
    assert_eq!(failed.id.as_deref(), Some("j"));
    // A bad id is malformed input; the connection stays.
    alice.send_raw(r#"{"type":"leave","id":42}"#).await;
    let bad = alice.recv_with_id().await;
    assert!(is_error(&bad.msg, ErrorCode::Malformed), "{bad:?}");
    assert_eq!(bad.id, None);
}
