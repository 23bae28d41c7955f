//! Several server nodes on one real `redis-server`: the room rules hold across nodes, events,
//! chat and the session relay cross them in order, a dead node's participants leave within
//! 5 s and its rooms go on, and a node without Redis refuses joins until Redis is back.

use std::time::{Duration, Instant};

use futures::future::join_all;
use gst_room_tests::cluster::{Node, RedisServer};
use gst_room_tests::{Client, http_get, http_get_with};
use room_protocol::{ClientMessage, FailReason, SdpType, ServerMessage, SessionDescription};
use room_signaling::Config;

const ADMIN: &str = "cluster-admin";

fn config() -> Config {
    Config {
        admin_token: Some(ADMIN.into()),
        ..Config::default()
    }
}

fn nodes(redis: &RedisServer, count: usize) -> Vec<Node> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    (1..=count)
        .map(|i| Node::start(&format!("n{i}"), redis, config()))
        .collect()
}

async fn left(client: &mut Client, who: &str) {
    client
        .recv_until(
            &format!("left {who}"),
            |m| matches!(m, ServerMessage::Left { username } if username == who),
        )
        .await;
}

async fn joined(client: &mut Client, who: &str) {
    client
        .recv_until(
            &format!("joined {who}"),
            |m| matches!(m, ServerMessage::Joined { username } if username == who),
        )
        .await;
}

fn failed_reason(msg: &ServerMessage) -> Option<FailReason> {
    match msg {
        ServerMessage::Failed { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_on_three_nodes_race_for_three_seats() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3);
    let attempts = (0..50).map(|i| {
        let url = nodes[i % 3].ws_url();
        async move {
            let mut client = Client::connect(&url).await;
            let answer = client.request_join("race", &format!("user{i}")).await;
            (client, answer)
        }
    });
    let results = join_all(attempts).await;
    let admitted = results
        .iter()
        .filter(|(_, a)| matches!(a, ServerMessage::State { .. }))
        .count();
    let full = results
        .iter()
        .filter(|(_, a)| failed_reason(a) == Some(FailReason::RoomFull))
        .count();
    assert_eq!(
        (admitted, full),
        (3, 47),
        "{:?}",
        results.iter().map(|r| &r.1).collect::<Vec<_>>()
    );

    // The listing, read from any node, shows the room with its three participants.
    let listing = http_get_with(
        &nodes[2].addr.to_string(),
        "/rooms",
        &[&format!("Authorization: Bearer {ADMIN}")],
    )
    .await;
    assert_eq!(listing.status, 200, "{listing:?}");
    let rooms: serde_json::Value = serde_json::from_str(&listing.body).unwrap();
    assert_eq!(
        rooms,
        serde_json::json!([{"room": "race", "participants": 3, "capacity": 3}])
    );
    let (status, body) = http_get(&nodes[0].addr.to_string(), "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\nredis: connected\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_is_unique_across_nodes() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2);
    let _alice = Client::join(&nodes[0].ws_url(), "names", "alice").await;
    let mut twin = Client::connect(&nodes[1].ws_url()).await;
    let answer = twin.request_join("names", "alice").await;
    assert_eq!(
        failed_reason(&answer),
        Some(FailReason::NameTaken),
        "{answer:?}"
    );
    // The refused connection may try another name.
    let answer = twin.request_join("names", "alice2").await;
    assert!(matches!(answer, ServerMessage::State { .. }), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_chat_and_sessions_cross_nodes_in_order() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3);
    let mut alice = Client::join(&nodes[0].ws_url(), "talk", "alice").await;
    let mut bob = Client::join(&nodes[1].ws_url(), "talk", "bob").await;
    joined(&mut alice, "bob").await;
    let mut carol = Client::connect(&nodes[2].ws_url()).await;
    let state = carol.request_join("talk", "carol").await;
    let ServerMessage::State { participants, .. } = state else {
        panic!("{state:?}");
    };
    let names: Vec<_> = participants.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    joined(&mut alice, "carol").await;
    joined(&mut bob, "carol").await;

    bob.send(&ClientMessage::Publish {
        stream: "cam".into(),
        audio: true,
        video: true,
    })
    .await;
    bob.send(&ClientMessage::Mute {
        stream: "cam".into(),
        audio_muted: true,
        video_muted: false,
    })
    .await;
    for viewer in [&mut alice, &mut carol] {
        let published = viewer.recv().await;
        assert!(
            matches!(&published, ServerMessage::Published { username, stream } if username == "bob" && stream.stream == "cam"),
            "{published:?}"
        );
        let muted = viewer.recv().await;
        assert!(
            matches!(&muted, ServerMessage::Muted { username, audio_muted: true, video_muted: false, .. } if username == "bob"),
            "{muted:?}"
        );
    }

    // Broadcast chat from node 3 reaches all three; a direct message only its two ends.
    carol
        .send(&ClientMessage::Message {
            to: None,
            text: "hello all".into(),
        })
        .await;
    for client in [&mut alice, &mut bob, &mut carol] {
        let msg = client.recv().await;
        assert!(
            matches!(&msg, ServerMessage::Message { from, to: None, text, .. } if from == "carol" && text == "hello all"),
            "{msg:?}"
        );
    }
    alice
        .send(&ClientMessage::Message {
            to: Some("bob".into()),
            text: "psst".into(),
        })
        .await;
    for client in [&mut bob, &mut alice] {
        let msg = client.recv().await;
        assert!(
            matches!(&msg, ServerMessage::Message { from, to: Some(to), text, .. } if from == "alice" && to == "bob" && text == "psst"),
            "{msg:?}"
        );
    }
    carol.sync().await;
    carol.expect_silence().await;

    // A session between node 1 and node 2; bob's candidates arrive in the order he sent them.
    alice
        .send(&ClientMessage::Play {
            participant: "bob".into(),
            stream: "cam".into(),
        })
        .await;
    let started = alice.recv().await;
    let ServerMessage::SessionStarted { session, .. } = started else {
        panic!("{started:?}");
    };
    let request = bob.recv().await;
    assert!(
        matches!(&request, ServerMessage::SessionRequest { session: s, viewer, .. } if *s == session && viewer == "alice"),
        "{request:?}"
    );
    bob.send(&ClientMessage::Sdp {
        session: session.clone(),
        description: SessionDescription {
            kind: SdpType::Offer,
            sdp: "v=0\r\n".into(),
        },
    })
    .await;
    for i in 0..30 {
        bob.send(&ClientMessage::Ice {
            session: session.clone(),
            candidate: format!("candidate:{i}"),
            sdp_m_line_index: 0,
            sdp_mid: None,
        })
        .await;
    }
    let offer = alice.recv().await;
    assert!(matches!(offer, ServerMessage::Sdp { .. }), "{offer:?}");
    for i in 0..30 {
        let ice = alice.recv().await;
        assert!(
            matches!(&ice, ServerMessage::Ice { candidate, .. } if *candidate == format!("candidate:{i}")),
            "candidate {i}: {ice:?}"
        );
    }
    // Leaving ends the session and the others hear it.
    bob.send(&ClientMessage::Leave {}).await;
    let ended = alice.recv().await;
    assert!(
        matches!(ended, ServerMessage::SessionEnded { .. }),
        "{ended:?}"
    );
    left(&mut alice, "bob").await;
    left(&mut carol, "bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_participants_leave_within_five_seconds_and_its_room_goes_on() {
    let redis = RedisServer::start().await;
    let mut nodes = nodes(&redis, 3);
    // alice joins first: node 1 owns the room.
    let _alice = Client::join(&nodes[0].ws_url(), "stay", "alice").await;
    let mut bob = Client::join(&nodes[1].ws_url(), "stay", "bob").await;
    let mut carol = Client::join(&nodes[2].ws_url(), "stay", "carol").await;
    joined(&mut bob, "carol").await;

    let killed = Instant::now();
    nodes[0].kill();
    // Both sockets are read meanwhile: a client that does not read for 3 s answers no ping and
    // the server drops it as silent (idle timeout).
    tokio::join!(left(&mut bob, "alice"), left(&mut carol, "alice"));
    let noticed = killed.elapsed();
    assert!(noticed < Duration::from_secs(5), "LEFT after {noticed:?}");

    // The room, now owned by node 2 or 3, keeps its rules and its participants.
    bob.chat_reaches("bob", &mut carol, "carol", "still here")
        .await;
    let mut dave = Client::connect(&nodes[1].ws_url()).await;
    let state = dave.request_join("stay", "dave").await;
    let ServerMessage::State { participants, .. } = state else {
        panic!("{state:?}");
    };
    let mut names: Vec<_> = participants.iter().map(|p| p.username.clone()).collect();
    names.sort();
    assert_eq!(names, ["bob", "carol"]);
    joined(&mut bob, "dave").await;
    joined(&mut carol, "dave").await;
    let mut eve = Client::connect(&nodes[2].ws_url()).await;
    let answer = eve.request_join("stay", "eve").await;
    assert_eq!(
        failed_reason(&answer),
        Some(FailReason::RoomFull),
        "{answer:?}"
    );

    // A node that does not own the room dies: its participant leaves too.
    let killed = Instant::now();
    nodes[2].kill();
    tokio::join!(left(&mut bob, "carol"), left(&mut dave, "carol"));
    let noticed = killed.elapsed();
    assert!(noticed < Duration::from_secs(5), "LEFT after {noticed:?}");
}

/// The owner node dies with sessions open between its participant and the others: the
/// survivors get `session-ended` for each of them, then LEFT. One survivor's node takes the
/// room over and the other's is an edge, so both ways of ending them run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_sessions_with_the_survivors_end() {
    let redis = RedisServer::start().await;
    let mut nodes = nodes(&redis, 3);
    let mut alice = Client::join(&nodes[0].ws_url(), "calls", "alice").await;
    alice.publish("cam").await;
    let mut bob = Client::join(&nodes[1].ws_url(), "calls", "bob").await;
    bob.publish("cam").await;
    let mut carol = Client::join(&nodes[2].ws_url(), "calls", "carol").await;
    // bob and carol watch alice; alice watches bob. carol's first session is stopped by her
    // before the node dies: it is over and does not end again.
    let bob_views = bob.play_session("alice", "cam").await;
    let stopped = carol.play_session("alice", "cam").await;
    let before = [bob_views.clone(), stopped.clone()];
    carol
        .send(&ClientMessage::Stop {
            session: stopped.clone(),
        })
        .await;
    let carol_views = carol.play_session("alice", "cam").await;
    assert_ne!(stopped, carol_views);
    let alice_views = alice.play_session("bob", "cam").await;
    let request = bob
        .recv_until(
            "session-request from alice",
            |m| matches!(m, ServerMessage::SessionRequest { viewer, .. } if viewer == "alice"),
        )
        .await;
    let ServerMessage::SessionRequest {
        session: bob_serves,
        ..
    } = request
    else {
        unreachable!()
    };
    assert_eq!(bob_serves, alice_views);
    carol.sync().await;

    nodes[0].kill();
    let (bob_ended, carol_ended) = tokio::join!(
        bob.sessions_ended_before_left("alice"),
        carol.sessions_ended_before_left("alice")
    );
    let mut bob_sessions = vec![bob_views, bob_serves];
    bob_sessions.sort();
    assert_eq!(bob_ended, bob_sessions);
    assert_eq!(carol_ended, [carol_views]);

    // The room goes on: a new session between the survivors is relayed.
    carol.publish("cam").await;
    bob.recv_until(
        "published carol",
        |m| matches!(m, ServerMessage::Published { username, .. } if username == "carol"),
    )
    .await;
    let session = bob.play_session("carol", "cam").await;
    // The new owner numbers its sessions elsewhere than the dead one did.
    assert!(!before.contains(&session), "{session} reused");
    let request = carol
        .recv_until("session-request from bob", |m| {
            matches!(m, ServerMessage::SessionRequest { .. })
        })
        .await;
    assert!(
        matches!(&request, ServerMessage::SessionRequest { session: s, viewer, .. } if *s == session && viewer == "bob"),
        "{request:?}"
    );
}

/// The next `error` or `failed` (skipping events), with the request id it echoes.
async fn next_refusal(client: &mut Client) -> room_protocol::WithId<ServerMessage> {
    loop {
        let answer = client.recv_with_id().await;
        if matches!(
            answer.msg,
            ServerMessage::Error { .. } | ServerMessage::Failed { .. }
        ) {
            return answer;
        }
    }
}

/// Request ids cross nodes: refusals by the owner of a room, for participants of another node,
/// echo the id of the message that caused them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_from_another_nodes_room_echo_the_request_id() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2);
    // alice joins first: node 1 owns the room; node 2 forwards everything of bob, carol, dave.
    let _alice = Client::join(&nodes[0].ws_url(), "ids", "alice").await;
    let mut bob = Client::join(&nodes[1].ws_url(), "ids", "bob").await;
    let _carol = Client::join(&nodes[1].ws_url(), "ids", "carol").await;
    let mut dave = Client::connect(&nodes[1].ws_url()).await;
    dave.send_raw(r#"{"type":"join","room":"ids","username":"dave","id":"join-1"}"#)
        .await;
    let failed = next_refusal(&mut dave).await;
    assert_eq!(
        failed_reason(&failed.msg),
        Some(FailReason::RoomFull),
        "{failed:?}"
    );
    assert_eq!(failed.id.as_deref(), Some("join-1"));

    bob.send_raw(r#"{"type":"play","participant":"ghost","stream":"cam","id":"play-1"}"#)
        .await;
    let refused = next_refusal(&mut bob).await;
    assert!(
        matches!(
            refused.msg,
            ServerMessage::Error {
                code: room_protocol::ErrorCode::UnknownParticipant,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.id.as_deref(), Some("play-1"));
    bob.send_raw(r#"{"type":"join","room":"other","username":"bob","id":"join-2"}"#)
        .await;
    let again = next_refusal(&mut bob).await;
    assert_eq!(
        failed_reason(&again.msg),
        Some(FailReason::AlreadyJoined),
        "{again:?}"
    );
    assert_eq!(again.id.as_deref(), Some("join-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_joins_are_refused_until_it_is_back() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2);
    let mut alice = Client::join(&nodes[0].ws_url(), "before", "alice").await;

    redis.stop();
    let addr = nodes[1].addr.to_string();
    wait_for_health(&addr, 503).await;
    // Without Redis node 1 cannot prove it still owns alice's room: it closes her connection
    // (she would reconnect and rejoin) rather than risk a second owner.
    let until = Instant::now() + gst_room_tests::WAIT;
    while let Some(msg) = alice.try_recv(until - Instant::now()).await {
        assert!(!matches!(msg, ServerMessage::State { .. }), "{msg:?}");
    }
    assert!(
        Instant::now() < until,
        "alice's connection stayed open without Redis"
    );
    let mut bob = Client::connect(&nodes[1].ws_url()).await;
    let answer = bob.request_join("during", "bob").await;
    assert_eq!(
        failed_reason(&answer),
        Some(FailReason::Unavailable),
        "{answer:?}"
    );

    redis.restart().await;
    wait_for_health(&addr, 200).await;
    wait_for_health(&nodes[0].addr.to_string(), 200).await;
    let answer = bob.request_join("after", "bob").await;
    assert!(matches!(answer, ServerMessage::State { .. }), "{answer:?}");
    let mut carol = Client::join(&nodes[0].ws_url(), "after", "carol").await;
    joined(&mut bob, "carol").await;
    carol
        .send(&ClientMessage::Message {
            to: None,
            text: "back".into(),
        })
        .await;
    let msg = bob.recv().await;
    assert!(
        matches!(&msg, ServerMessage::Message { text, .. } if text == "back"),
        "{msg:?}"
    );
}

/// Polls `/healthz` until it answers `status`; panics after the test timeout.
async fn wait_for_health(addr: &str, status: u16) {
    let deadline = Instant::now() + gst_room_tests::WAIT;
    loop {
        let (got, _) = http_get(addr, "/healthz").await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A roomsink on node 1 and a roomsrc on node 2: the session is relayed across nodes and the
/// published colour arrives decoded.
#[test]
fn media_flows_between_participants_on_different_nodes() {
    use gst_room_tests::media::*;
    const GREEN: Rgb = [20, 200, 40];
    init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(RedisServer::start());
    let nodes = nodes(&redis, 2);
    let publisher = start(&publisher_line(
        &nodes[0].ws_url(),
        "media",
        "bot",
        GREEN,
        "",
    ));
    let viewer = Viewer::new(
        &nodes[1].ws_url(),
        "room=media username=viewer participant=bot",
    )
    .start();
    viewer.wait(
        "30 green frames and decoded audio from the other node",
        |s| {
            s.frames.get("video_bot").copied().unwrap_or(0) >= 30
                && s.colour
                    .get("video_bot")
                    .is_some_and(|c| close_to(*c, GREEN, 40))
                && s.audio_buffers.get("audio_bot").copied().unwrap_or(0) > 10
        },
    );
    stop(&viewer.pipeline);
    stop(&publisher);
}

/// Waits until `/rooms` (read from the node at `addr`) shows `count` participants in `room`.
async fn wait_for_participants(addr: &str, room: &str, count: u64) {
    let deadline = Instant::now() + gst_room_tests::WAIT;
    loop {
        let listing =
            http_get_with(addr, "/rooms", &[&format!("Authorization: Bearer {ADMIN}")]).await;
        let rooms: serde_json::Value = serde_json::from_str(&listing.body).unwrap_or_default();
        let seen = rooms
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["room"] == room)
            .and_then(|r| r["participants"].as_u64());
        if seen == Some(count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{room} never had {count} participants: {rooms}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx in front of two nodes. The publisher, through nginx, lands on node 1 and its room is
/// owned there; node 1 is killed: the viewer on node 2 hears the publisher leave, the publisher
/// reconnects through nginx (to node 2), rejoins and publishes again, and its media reaches the
/// viewer again.
#[test]
fn through_nginx_a_participant_of_a_dead_node_rejoins_and_its_media_returns() {
    use gst_room_tests::cluster::{Nginx, free_addr};
    use gst_room_tests::media::*;
    const GREEN: Rgb = [20, 200, 40];
    init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(RedisServer::start());
    let lb = free_addr();
    let config = Config {
        allowed_origins: vec![format!("http://{lb}")],
        ..config()
    };
    let mut node1 = Node::start("n1", &redis, config.clone());
    let node2 = Node::start("n2", &redis, config);
    let nginx = Nginx::start(lb, node1.addr, node2.addr);

    let publisher = start(&publisher_line(&nginx.ws_url(), "lb", "bot", GREEN, ""));
    runtime.block_on(wait_for_participants(&node2.addr.to_string(), "lb", 1));
    let viewer = Viewer::new(&node2.ws_url(), "room=lb username=viewer participant=bot").start();
    let green = |s: &Seen| {
        s.colour
            .get("video_bot")
            .is_some_and(|c| close_to(*c, GREEN, 40))
    };
    viewer.wait("green frames from node 1", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= 10 && green(s)
    });

    node1.kill();
    let is_bot = |s: &gst::StructureRef| s.get::<&str>("username") == Ok("bot");
    wait_for_event(&viewer.pipeline, "room-left", is_bot);
    // bot rejoins through nginx and publishes again; roomsrc plays it on the same pads.
    wait_for_event(&viewer.pipeline, "room-published", is_bot);
    let before = viewer.seen().frames.get("video_bot").copied().unwrap_or(0);
    viewer.wait("green frames after bot rejoined through nginx", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= before + 30 && green(s)
    });
    stop(&viewer.pipeline);
    stop(&publisher);
}
