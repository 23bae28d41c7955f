//! Who may join and from where, against a real server over real sockets: access tokens and
//! their grants, the throttle on wrong tokens, the admin-only room list, ICE servers only after
//! a join, the Origin/Host rule of `/ws`, and the security headers of every response.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::ConnectStream;
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use gst_room_tests::{Client, TestServer, http_get_with, ws_handshake};
use room_protocol::*;
use room_signaling::Config;
use room_signaling::auth::{ANY_ROOM, Claims, Grants, mint, unix_now};

const SECRET: &str = "access-test-secret-of-32-bytes!!";
const ADMIN: &str = "access-test-admin";

fn config() -> Config {
    Config {
        token_secret: Some(SECRET.into()),
        admin_token: Some(ADMIN.into()),
        ..Config::default()
    }
}

/// A token for `room`/`username` with `grants`, expiring `ttl` seconds from now (negative:
/// already expired).
fn token(room: &str, username: &str, ttl: i64, grants: Grants) -> String {
    let claims = Claims {
        room: room.into(),
        sub: username.into(),
        exp: unix_now().saturating_add_signed(ttl),
        grants,
    };
    mint(SECRET.as_bytes(), &claims)
}

fn refused(answer: &ServerMessage, detail_part: &str) -> bool {
    matches!(answer, ServerMessage::Failed { reason: FailReason::Unauthorized, detail }
        if detail.contains(detail_part))
}

#[tokio::test]
async fn tokens_open_only_their_room_for_their_username_until_they_expire() {
    let server = TestServer::start(config());
    let mut client = Client::connect(&server.ws_url()).await;
    let alice_a = token("a", "alice", 3600, Grants::PARTICIPANT);

    let answer = client.request_join("a", "alice").await;
    assert!(refused(&answer, "needs a token"), "{answer:?}");
    let expired = token("a", "alice", -5, Grants::PARTICIPANT);
    let answer = client
        .request_join_with_token("a", "alice", Some(&expired))
        .await;
    assert!(refused(&answer, "expired"), "{answer:?}");
    let answer = client
        .request_join_with_token("b", "alice", Some(&alice_a))
        .await;
    assert!(refused(&answer, "for room a, not b"), "{answer:?}");
    let answer = client
        .request_join_with_token("a", "mallory", Some(&alice_a))
        .await;
    assert!(refused(&answer, "for username alice"), "{answer:?}");
    let forged = mint(
        b"not the server's secret, 32 bytes",
        &Claims {
            room: "a".into(),
            sub: "alice".into(),
            exp: unix_now() + 60,
            grants: Grants::PARTICIPANT,
        },
    );
    let answer = client
        .request_join_with_token("a", "alice", Some(&forged))
        .await;
    assert!(refused(&answer, "not valid"), "{answer:?}");

    let answer = client
        .request_join_with_token("a", "alice", Some(&alice_a))
        .await;
    assert!(matches!(answer, ServerMessage::State { .. }), "{answer:?}");
    // A wildcard token opens any room, still only for its username.
    let mut other = Client::connect(&server.ws_url()).await;
    let any = token(ANY_ROOM, "ops", 60, Grants::PARTICIPANT);
    assert!(matches!(
        other.request_join_with_token("b", "ops", Some(&any)).await,
        ServerMessage::State { .. }
    ));
}

#[tokio::test]
async fn grants_decide_publish_play_and_chat() {
    let server = TestServer::start(config());
    let url = server.ws_url();
    let mut alice = Client::connect(&url).await;
    let full = token("r", "alice", 60, Grants::PARTICIPANT);
    assert!(matches!(
        alice
            .request_join_with_token("r", "alice", Some(&full))
            .await,
        ServerMessage::State { .. }
    ));
    let mut viewer = Client::connect(&url).await;
    let watch_only = Grants {
        publish: false,
        chat: false,
        ..Grants::PARTICIPANT
    };
    let t = token("r", "viewer", 60, watch_only);
    assert!(matches!(
        viewer
            .request_join_with_token("r", "viewer", Some(&t))
            .await,
        ServerMessage::State { .. }
    ));
    alice.recv().await; // joined viewer

    let publish = ClientMessage::Publish {
        stream: "main".into(),
        audio: true,
        video: true,
    };
    viewer.send(&publish).await;
    assert!(matches!(
        viewer.recv().await,
        ServerMessage::Error { code: ErrorCode::Unauthorized, message } if message.contains("publish")
    ));
    viewer
        .send(&ClientMessage::Message {
            to: None,
            text: "hi".into(),
        })
        .await;
    assert!(matches!(
        viewer.recv().await,
        ServerMessage::Error { code: ErrorCode::Unauthorized, message } if message.contains("chat")
    ));
    alice.expect_silence().await;

    // What the grants allow still works: alice publishes, the viewer plays.
    alice.send(&publish).await;
    assert!(matches!(
        viewer.recv().await,
        ServerMessage::Published { .. }
    ));
    viewer
        .send(&ClientMessage::Play {
            participant: "alice".into(),
            stream: "main".into(),
        })
        .await;
    assert!(matches!(
        viewer.recv().await,
        ServerMessage::SessionStarted { .. }
    ));
}

#[tokio::test]
async fn wrong_tokens_are_throttled_per_address() {
    let server = TestServer::start(Config {
        auth_failures_per_minute: 3,
        ..config()
    });
    let mut client = Client::connect(&server.ws_url()).await;
    for _ in 0..3 {
        let answer = client
            .request_join_with_token("r", "eve", Some("guess"))
            .await;
        assert!(refused(&answer, "not valid"), "{answer:?}");
    }
    // The fourth attempt is refused without being checked: even the right token is.
    let right = token("r", "eve", 60, Grants::PARTICIPANT);
    let mut fresh = Client::connect(&server.ws_url()).await;
    let answer = fresh
        .request_join_with_token("r", "eve", Some(&right))
        .await;
    assert!(refused(&answer, "too many wrong tokens"), "{answer:?}");
    // While the address is blocked, every attempt gets the same answer.
    let answer = fresh.request_join("r", "eve").await;
    assert!(refused(&answer, "too many wrong tokens"), "{answer:?}");
    // The admin list is behind the same throttle.
    let reply = http_get_with(
        &server.addr.to_string(),
        "/rooms",
        &[&format!("Authorization: Bearer {ADMIN}")],
    )
    .await;
    assert_eq!(reply.status, 429, "{reply:?}");
}

#[tokio::test]
async fn the_room_list_needs_the_admin_token_or_grant() {
    let server = TestServer::start(config());
    let addr = server.addr.to_string();
    let mut alice = Client::connect(&server.ws_url()).await;
    let t = token("standup", "alice", 60, Grants::PARTICIPANT);
    alice
        .request_join_with_token("standup", "alice", Some(&t))
        .await;

    let anonymous = http_get_with(&addr, "/rooms", &[]).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert!(!anonymous.body.contains("standup"));
    let participant =
        http_get_with(&addr, "/rooms", &[&format!("Authorization: Bearer {t}")]).await;
    assert_eq!(participant.status, 401, "no admin grant: {participant:?}");

    // A server without an admin token shows the list to no one.
    let closed = TestServer::start(Config::default());
    let reply = http_get_with(
        &closed.addr.to_string(),
        "/rooms",
        &[&format!("Authorization: Bearer {ADMIN}")],
    )
    .await;
    assert_eq!(reply.status, 401, "{reply:?}");

    let expected = serde_json::json!([{"room":"standup","participants":1,"capacity":3}]);
    let admin = http_get_with(
        &addr,
        "/rooms",
        &[&format!("Authorization: Bearer {ADMIN}")],
    )
    .await;
    assert_eq!(admin.status, 200, "{admin:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&admin.body).unwrap(),
        expected
    );
    let ops = token(
        ANY_ROOM,
        "ops",
        60,
        Grants {
            admin: true,
            ..Grants::PARTICIPANT
        },
    );
    let granted = http_get_with(&addr, "/rooms", &[&format!("Authorization: Bearer {ops}")]).await;
    assert_eq!(granted.status, 200, "{granted:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&granted.body).unwrap(),
        expected
    );
}

#[tokio::test]
async fn ice_servers_reach_only_joined_participants() {
    let turn = IceServer {
        urls: vec!["turn:turn.example.org:3478".into()],
        username: Some("1700000000:alice".into()),
        credential: Some("turn-password-xyz".into()),
    };
    let server = TestServer::start(Config {
        ice_servers: vec![turn.clone()],
        ..config()
    });
    // Read the raw frames: nothing before a successful join may carry the credential.
    let (mut ws, _) = async_tungstenite::tokio::connect_async(server.ws_url())
        .await
        .unwrap();
    let welcome = next_text(&mut ws).await;
    assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
    assert!(!welcome.contains("turn"), "{welcome}");
    let join = |token: &str| {
        serde_json::to_string(&ClientMessage::Join {
            room: "r".into(),
            username: "alice".into(),
            token: Some(token.into()),
        })
        .unwrap()
    };
    ws.send(Message::text(join("wrong"))).await.unwrap();
    let failed = next_text(&mut ws).await;
    assert!(failed.contains(r#""type":"failed""#), "{failed}");
    assert!(!failed.contains("turn-password-xyz"), "{failed}");
    let t = token("r", "alice", 60, Grants::PARTICIPANT);
    ws.send(Message::text(join(&t))).await.unwrap();
    let state = next_text(&mut ws).await;
    match serde_json::from_str::<ServerMessage>(&state).unwrap() {
        ServerMessage::State { ice_servers, .. } => assert_eq!(ice_servers, vec![turn]),
        other => panic!("{other:?}"),
    }
}

/// The next text frame, raw.
async fn next_text(ws: &mut WebSocketStream<ConnectStream>) -> String {
    loop {
        if let Message::Text(text) = ws.next().await.expect("open").expect("frame") {
            return text.to_string();
        }
    }
}

#[tokio::test]
async fn websocket_origin_and_host_rules() {
    let server = TestServer::start(Config {
        allowed_origins: vec!["https://meet.example.org".into()],
        ..Config::default()
    });
    let addr = server.addr.to_string();
    let port = server.addr.port();
    let own = format!("Origin: http://{addr}");

    let status = |reply: gst_room_tests::HttpReply| (reply.status, reply.body);
    assert_eq!(
        ws_handshake(&addr, &addr, &[]).await.status,
        101,
        "no Origin: a program"
    );
    assert_eq!(
        ws_handshake(&addr, &addr, &[&own]).await.status,
        101,
        "the page's own origin"
    );
    let localhost = format!("localhost:{port}");
    let own_localhost = format!("Origin: http://localhost:{port}");
    assert_eq!(
        ws_handshake(&addr, &localhost, &[&own_localhost])
            .await
            .status,
        101
    );
    assert_eq!(
        ws_handshake(&addr, &addr, &["Origin: https://meet.example.org"])
            .await
            .status,
        101,
        "--allow-origin"
    );
    let (code, body) = status(ws_handshake(&addr, &addr, &["Origin: https://evil.example"]).await);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("Origin \"https://evil.example\" may not"),
        "{body}"
    );
    let (code, _) = status(ws_handshake(&addr, &addr, &["Origin: null"]).await);
    assert_eq!(code, 403);
    // DNS rebinding: the attacker's name points at 127.0.0.1; Host and Origin agree, but the
    // loopback server answers only to its own names.
    let rebound = format!("rebind.evil.example:{port}");
    let rebound_origin = format!("Origin: http://{rebound}");
    let (code, body) = status(ws_handshake(&addr, &rebound, &[&rebound_origin]).await);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("does not name this server"), "{body}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = TestServer::start(config());
    let addr = server.addr.to_string();
    let replies = [
        ("/", http_get_with(&addr, "/", &[]).await, 200),
        (
            "/conference.js",
            http_get_with(&addr, "/conference.js", &[]).await,
            200,
        ),
        (
            "/no-such-file",
            http_get_with(&addr, "/no-such-file", &[]).await,
            404,
        ),
        ("/rooms", http_get_with(&addr, "/rooms", &[]).await, 401),
        (
            "/ws",
            ws_handshake(&addr, &addr, &["Origin: https://evil.example"]).await,
            403,
        ),
    ];
    for (path, reply, status) in replies {
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "connect-src 'self' ws: wss:",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP {csp:?} lacks {directive}"
            );
        }
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
}
