//! Rooms whose media goes through the server (`--media sfu`): the publisher sends each stream
//! once, to the server, which forwards it to every viewer; the elements speak the same
//! protocol as in a mesh room and need no new property.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::media::*;
use gst_room_tests::{Client, TestServer, http_get};
use room_protocol::{ClientMessage, SERVER_VIEWER, SdpType, ServerMessage};
use room_signaling::media::{MediaConfig, SfuSettings};

const RED: Rgb = [230, 20, 20];

/// A server that carries media, on a free UDP port of every address (libnice pairs no
/// candidate of the machine's interface with a loopback one).
fn sfu_server() -> TestServer {
    // The server's log, with RUST_LOG=room_signaling=debug,room_sfu=debug.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    TestServer::start(sfu_server_config())
}

fn sfu_server_config() -> room_signaling::Config {
    room_signaling::Config {
        max_participants: 8,
        media: MediaConfig::Sfu(SfuSettings {
            bind: "0.0.0.0:0".parse().unwrap(),
            tcp_bind: None,
            advertised: Vec::new(),
        }),
        ..Default::default()
    }
}

/// Counts the WebRTC sessions (webrtcbins) webrtcsink makes inside the roomsink bin: each
/// session's webrtcbin lives in a pipeline of its own (`consumer-pipeline-created`), which is
/// why walking the bin's children would not find them.
fn count_sessions(sink: &gst::Element) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let webrtcsink = webrtcsink_of(sink);
    let counter = count.clone();
    webrtcsink.connect("consumer-pipeline-created", false, move |args| {
        let session = args[2].get::<gst::Pipeline>().unwrap();
        let webrtcbins = session
            .iterate_recurse()
            .into_iter()
            .flatten()
            .filter(|e| e.factory().is_some_and(|f| f.name() == "webrtcbin"))
            .count();
        counter.fetch_add(webrtcbins.max(1), Ordering::SeqCst);
        None
    });
    count
}

fn viewers_of_bot(url: &str, room: &str, names: &[&str]) -> Vec<Viewer> {
    names
        .iter()
        .map(|name| {
            Viewer::new(url, &format!("room={room} username={name} participant=bot")).start()
        })
        .collect()
}

#[test]
fn three_viewers_decode_one_upload_through_the_server() {
    init();
    let server = sfu_server();
    let url = server.ws_url();
    let (pipeline, sink) = publisher(&publisher_line(&url, "three", "bot", RED, ""));
    let sessions = count_sessions(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    let viewers = viewers_of_bot(&url, "three", &["v1", "v2", "v3"]);
    for viewer in &viewers {
        shows(viewer, "video_bot", RED);
        viewer.wait("audio", |s| {
            s.audio_buffers.get("audio_bot").copied().unwrap_or(0) > 5
        });
    }
    assert_eq!(
        sessions.load(Ordering::SeqCst),
        1,
        "the publisher has one session (with the server) whatever the number of viewers"
    );
    let health = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(http_get(&server.addr.to_string(), "/healthz"));
    eprintln!("/healthz with 3 viewers:\n{}", health.1);
    assert_eq!(health.0, 200);
    assert!(health.1.contains("media: sfu udp"), "{}", health.1);
    assert!(health.1.contains("media sessions: 4"), "{}", health.1);
    fail_on_error(&pipeline);
    stop(&pipeline);
}

#[test]
fn a_viewer_joining_later_decodes_soon_through_the_server() {
    init();
    let server = sfu_server();
    let url = server.ws_url();
    let (pipeline, _sink) = publisher(&publisher_line(&url, "late", "bot", RED, ""));
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = Viewer::new(&url, "room=late username=first participant=bot").start();
    shows(&first, "video_bot", RED);
    // The stream has been running a while when the second viewer comes: it needs a keyframe,
    // which only a keyframe request forwarded to the publisher makes.
    std::thread::sleep(Duration::from_secs(5));
    let joined = Instant::now();
    let late = Viewer::new(&url, "room=late username=late participant=bot").start();
    late.wait("the late viewer's first frame", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= 1
    });
    let took = joined.elapsed();
    eprintln!(
        "late viewer (sfu): first decoded frame {:.2} s after it started",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    shows(&late, "video_bot", RED);
    stop(&pipeline);
}

/// Session ids of the `session-ended` messages `client` reads before the message `last`
/// matches; panics on anything but those two kinds.
async fn ended_until(client: &mut Client, last: impl Fn(&ServerMessage) -> bool) -> Vec<String> {
    let mut ended = Vec::new();
    loop {
        match client.recv().await {
            ServerMessage::SessionEnded { session, .. } => ended.push(session),
            msg if last(&msg) => return ended,
            msg => panic!("unexpected {msg:?}"),
        }
    }
}

/// Publishes `stream` and returns the ingest session the server asks for.
async fn publish_to_the_server(publisher: &mut Client, stream: &str) -> String {
    publisher.publish(stream).await;
    match publisher.recv().await {
        ServerMessage::SessionRequest {
            session,
            stream: s,
            viewer,
        } if s == stream && viewer == SERVER_VIEWER => session,
        other => panic!("expected the ingest request, got {other:?}"),
    }
}

/// Plays ann's `stream` and returns the session and the server's offer.
async fn play_through_the_server(viewer: &mut Client, stream: &str) -> String {
    let session = viewer.play_session("ann", stream).await;
    match viewer.recv().await {
        ServerMessage::Sdp {
            session: s,
            description,
        } if s == session => {
            assert_eq!(description.kind, SdpType::Offer);
            assert!(description.sdp.starts_with("v=0"), "{}", description.sdp);
        }
        other => panic!("expected the server's offer, got {other:?}"),
    }
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_unpublish_and_leave_end_sessions_as_in_a_mesh_room() {
    let server = sfu_server();
    let url = server.ws_url();
    let mut ann = Client::join_sfu_room(&url, "ends", "ann").await;
    let mut bob = Client::join_sfu_room(&url, "ends", "bob").await;
    let mut cid = Client::join_sfu_room(&url, "ends", "cid").await;
    ann.recv().await; // joined bob
    ann.recv().await; // joined cid
    bob.recv().await; // joined cid

    // Publish: the others hear of it, the publisher is asked for its ingest.
    let ingest = publish_to_the_server(&mut ann, "main").await;
    bob.recv_until("published", |m| {
        matches!(m, ServerMessage::Published { .. })
    })
    .await;
    cid.recv_until("published", |m| {
        matches!(m, ServerMessage::Published { .. })
    })
    .await;
    let bobs = play_through_the_server(&mut bob, "main").await;
    let cids = play_through_the_server(&mut cid, "main").await;
    // The viewers' sessions are the server's: the publisher hears nothing of them.
    ann.expect_silence().await;

    // A viewer's stop ends its session only; nobody else hears of it.
    bob.send(&ClientMessage::Stop {
        session: bobs.clone(),
    })
    .await;
    ann.expect_silence().await;
    cid.expect_silence().await;
    let bobs = play_through_the_server(&mut bob, "main").await;

    // Unpublish: each viewer's session ends, then `unpublished`; the publisher's ingest ends.
    ann.send(&ClientMessage::Unpublish {
        stream: "main".into(),
    })
    .await;
    let is_unpublished = |m: &ServerMessage| matches!(m, ServerMessage::Unpublished { .. });
    assert_eq!(ended_until(&mut bob, is_unpublished).await, [bobs]);
    assert_eq!(ended_until(&mut cid, is_unpublished).await, [cids]);
    let ended = ann.recv().await;
    assert!(
        matches!(&ended, ServerMessage::SessionEnded { session, .. } if *session == ingest),
        "{ended:?}"
    );

    // Publish again; the publisher leaves: sessions end, `unpublished`, then `left`.
    let _ingest = publish_to_the_server(&mut ann, "main").await;
    bob.recv_until("published", |m| {
        matches!(m, ServerMessage::Published { .. })
    })
    .await;
    cid.recv_until("published", |m| {
        matches!(m, ServerMessage::Published { .. })
    })
    .await;
    let bobs = play_through_the_server(&mut bob, "main").await;
    ann.send(&ClientMessage::Leave {}).await;
    assert_eq!(ended_until(&mut bob, is_unpublished).await, [bobs]);
    let left = bob.recv().await;
    assert!(
        matches!(&left, ServerMessage::Left { username } if username == "ann"),
        "{left:?}"
    );
    assert!(ended_until(&mut cid, is_unpublished).await.is_empty());

    // A viewer leaving ends its own session: the server has nothing to tell anyone but `left`.
    let mut dan = Client::join_sfu_room(&url, "ends", "dan").await;
    let _ingest = publish_to_the_server(&mut dan, "cam").await;
    bob.recv_until("published", |m| {
        matches!(m, ServerMessage::Published { .. })
    })
    .await;
    let session = bob.play_session("dan", "cam").await;
    bob.recv_until("offer", |m| matches!(m, ServerMessage::Sdp { .. }))
        .await;
    bob.send(&ClientMessage::Leave {}).await;
    let ended = bob.recv().await;
    assert!(
        matches!(&ended, ServerMessage::SessionEnded { session: s, .. } if *s == session),
        "{ended:?}"
    );
    let left = dan.recv().await;
    assert!(
        matches!(&left, ServerMessage::Left { username } if username == "bob"),
        "{left:?}"
    );
}

#[test]
fn after_a_server_restart_the_elements_rejoin_and_media_resumes_through_the_new_server() {
    init();
    let mut server = sfu_server();
    let url = server.ws_url();
    let addr = server.addr;
    let publisher = start(&publisher_line(&url, "back", "bot", RED, ""));
    let viewer = Viewer::new(&url, "room=back username=viewer participant=bot").start();
    shows(&viewer, "video_bot", RED);

    server.stop();
    wait_for_event(&viewer.pipeline, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("reconnecting")
    });
    // The same address again, with a new media engine (another UDP port): both participants
    // rejoin, bot re-publishes (a new ingest), the viewer plays it through the new engine.
    let _server = TestServer::start_on(addr, sfu_server_config());
    wait_for_event(&viewer.pipeline, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("joined")
    });
    let back = Instant::now();
    let before = viewer.seen().frames.get("video_bot").copied().unwrap_or(0);
    viewer.wait("frames after the rejoin", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= before + 10
    });
    let took = back.elapsed();
    eprintln!(
        "restart (sfu): 10 new frames {:.2} s after the viewer rejoined",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    shows(&viewer, "video_bot", RED);
    fail_on_error(&publisher);
    stop(&publisher);
}

/// The `media sessions: N` figure of a server's `/healthz`.
async fn media_sessions(addr: &str) -> usize {
    let (_, body) = http_get(addr, "/healthz").await;
    body.lines()
        .find_map(|l| l.strip_prefix("media sessions: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no media sessions in {body:?}"))
}

/// Two nodes on one Redis: the room is owned by node 1, where the publisher joins first; the
/// viewer connects to node 2, yet its media session is with node 1's engine, as the ingest is.
#[test]
fn with_two_nodes_the_media_goes_through_the_rooms_owner() {
    use gst_room_tests::cluster::{Node, RedisServer};
    init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(RedisServer::start());
    let nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .map(|id| Node::start(id, &redis, sfu_server_config()))
        .collect();
    let publisher = start(&publisher_line(&nodes[0].ws_url(), "owned", "bot", RED, ""));
    wait_for_event(&publisher, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("joined")
    });
    let viewer = Viewer::new(
        &nodes[1].ws_url(),
        "room=owned username=viewer participant=bot",
    )
    .start();
    shows(&viewer, "video_bot", RED);
    let owner = runtime.block_on(media_sessions(&nodes[0].addr.to_string()));
    let edge = runtime.block_on(media_sessions(&nodes[1].addr.to_string()));
    eprintln!("media sessions: owner {owner}, the viewer's node {edge}");
    assert_eq!((owner, edge), (2, 0));
    stop(&viewer.pipeline);
    stop(&publisher);
}
