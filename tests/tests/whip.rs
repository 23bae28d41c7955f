//! WHIP ingest and WHEP playback (`/whip/...`, `/whep/...`) against a real server: a webrtcbin
//! WHIP sender (VP8, H.264) publishes into a room and a roomsrc decodes it; the sender is a room
//! participant (JOINED, PUBLISHED, LEFT on stop); refusals are HTTP statuses and leave the room
//! untouched.

use std::time::Duration;

use gst::prelude::*;
use tokio::sync::mpsc;

use gst_room_tests::media::*;
use gst_room_tests::{Client, HttpReply, TestServer, http_exchange};
use room_protocol::ServerMessage;
use room_signaling::Config;
use room_signaling::auth::{Claims, Grants, mint, unix_now};
use room_signaling::media::{MediaConfig, SfuSettings};

const RED: Rgb = [230, 20, 20];
const GREEN: Rgb = [20, 200, 20];
const SECRET: &str = "whip-test-secret-of-32-bytes!!!!";

/// A server that carries media, on a free UDP port of every address.
fn sfu_config() -> Config {
    // The server's log, with RUST_LOG=room_signaling=debug,room_sfu=debug.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Config {
        max_participants: 8,
        media: MediaConfig::Sfu(SfuSettings {
            bind: "0.0.0.0:0".parse().unwrap(),
            advertised: Vec::new(),
            tcp_bind: None,
        }),
        ..Default::default()
    }
}

/// A WHIP sender made of a webrtcbin (what simple-whip-client and whipclientsink wrap), with
/// an ECDSA certificate: it POSTs its offer and takes the answer, as RFC 9725 says.
struct WhipSender {
    pipeline: gst::Pipeline,
    /// The resource (`Location`) to DELETE.
    location: String,
    /// The `Link` headers of the answer.
    links: Vec<String>,
}

impl WhipSender {
    /// Publishes `rtp` (a gst-launch branch ending in RTP caps) to `path` on `addr`.
    fn start(runtime: &tokio::runtime::Runtime, addr: &str, path: &str, rtp: &str) -> WhipSender {
        let pipeline = gst::parse::launch(&format!(
            "webrtcbin name=w bundle-policy=max-bundle {rtp} ! w."
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        // The engine's DTLS has no RSA, webrtcbin's default: the elements' ECDSA certificate.
        let certificate = gstroom::certificate::generate().unwrap();
        gstroom::certificate::use_for_webrtcbin(pipeline.upcast_ref(), &certificate);
        pipeline.set_state(gst::State::Playing).unwrap();
        let webrtcbin = pipeline.by_name("w").unwrap();
        let transceiver = webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&0i32])
            .expect("a transceiver for the video");
        transceiver.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
        );
        let promise = gst::Promise::new();
        webrtcbin.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        assert_eq!(promise.wait(), gst::PromiseResult::Replied);
        let offer = promise
            .get_reply()
            .unwrap()
            .get::<gst_webrtc::WebRTCSessionDescription>("offer")
            .unwrap();
        let promise = gst::Promise::new();
        webrtcbin.emit_by_name::<()>("set-local-description", &[&offer, &promise]);
        promise.wait();
        // No candidates needed: the server is ICE-lite and learns the sender's address from
        // its checks.
        let sdp = gstroom::certificate::with_fingerprint_text(
            &offer.sdp().as_text().unwrap(),
            &certificate.fingerprint,
        );
        let reply = runtime.block_on(request(
            addr,
            "POST",
            path,
            &["Content-Type: application/sdp"],
            &sdp,
        ));
        assert_eq!(reply.status, 201, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/sdp"));
        let location = reply.header("location").expect("a Location").to_owned();
        let links = reply
            .head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("link:"))
            .map(str::to_owned)
            .collect();
        let answer = gst_sdp::SDPMessage::parse_buffer(reply.body.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, answer);
        let promise = gst::Promise::new();
        webrtcbin.emit_by_name::<()>("set-remote-description", &[&answer, &promise]);
        promise.wait();
        WhipSender {
            pipeline,
            location,
            links,
        }
    }
}

impl Drop for WhipSender {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A solid `colour` at 320x240, VP8 in RTP payload type 96.
fn vp8_line(colour: Rgb) -> String {
    format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={} ! \
         video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! \
         vp8enc deadline=1 ! rtpvp8pay pt=96 ! queue ! \
         application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
        argb(colour)
    )
}

/// A solid `colour` at 320x240, H.264 (constrained baseline) in RTP payload type 102.
fn h264_line(colour: Rgb) -> String {
    format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={} ! \
         video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! \
         x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! \
         video/x-h264,profile=constrained-baseline ! \
         rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency ! queue ! \
         application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,\
         packetization-mode=(string)1",
        argb(colour)
    )
}

/// A member of `room` whose messages are read all the time on `runtime` (so that it answers
/// the server's pings while the test blocks on media), into the returned channel.
fn member(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    room: &str,
    name: &str,
) -> mpsc::UnboundedReceiver<ServerMessage> {
    let mut client = runtime.block_on(Client::join_sfu_room(url, room, name));
    let (sender, messages) = mpsc::unbounded_channel();
    runtime.spawn(async move {
        while let Some(msg) = client.try_recv(Duration::from_secs(3600)).await {
            if sender.send(msg).is_err() {
                return;
            }
        }
    });
    messages
}

/// The first message `matches` takes within `limit`; panics after it, naming `what`.
fn next_matching(
    runtime: &tokio::runtime::Runtime,
    messages: &mut mpsc::UnboundedReceiver<ServerMessage>,
    what: &str,
    limit: Duration,
    matches: impl Fn(&ServerMessage) -> bool,
) -> ServerMessage {
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, messages.recv()).await {
                Ok(Some(msg)) if matches(&msg) => return msg,
                Ok(Some(_)) => continue,
                _ => panic!("no {what} within {limit:?}"),
            }
        }
    })
}

fn is_left_of_cam(msg: &ServerMessage) -> bool {
    matches!(msg, ServerMessage::Left { username } if username == "cam")
}

/// How a WHIP sender ends.
enum Ending {
    /// DELETE of its resource: LEFT within 5 s.
    Delete,
    /// Its pipeline stops without a word: LEFT once the engine has given its media up (ICE
    /// lost beyond the grace period).
    Vanish,
}

/// A WHIP sender publishes `rtp` as `cam` in room `room`: the room sees JOINED and PUBLISHED
/// (video only), a roomsrc decodes `colour`, and cam leaves as `ending` says.
fn whip_sender_joins_shows_and_leaves(room: &str, rtp: &str, colour: Rgb, ending: Ending) {
    init();
    let server = TestServer::start(sfu_config());
    let addr = server.addr.to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut watcher = member(&runtime, &server.ws_url(), room, "watcher");
    let sender = WhipSender::start(&runtime, &addr, &format!("/whip/{room}/cam"), rtp);
    assert!(
        sender.location.starts_with(&format!("/whip/{room}/cam/")),
        "{}",
        sender.location
    );
    assert!(
        sender.links.is_empty(),
        "no ICE servers configured: {:?}",
        sender.links
    );
    let wait = Duration::from_secs(10);
    next_matching(
        &runtime,
        &mut watcher,
        "joined cam",
        wait,
        |m| matches!(m, ServerMessage::Joined { username } if username == "cam"),
    );
    let published = next_matching(&runtime, &mut watcher, "published", wait, |m| {
        matches!(m, ServerMessage::Published { .. })
    });
    let ServerMessage::Published { username, stream } = published else {
        unreachable!()
    };
    assert_eq!((username.as_str(), stream.stream.as_str()), ("cam", "main"));
    assert!(stream.video && !stream.audio, "{stream:?}");
    let props = format!("room={room} username=v participant=cam");
    let viewer = Viewer::new(&server.ws_url(), &props).start();
    shows(&viewer, "video_cam", colour);

    let location = sender.location.clone();
    match ending {
        Ending::Delete => {
            let reply = runtime.block_on(request(&addr, "DELETE", &location, &[], ""));
            assert_eq!(reply.status, 200, "{reply:?}");
            let limit = Duration::from_secs(5);
            next_matching(&runtime, &mut watcher, "left cam", limit, is_left_of_cam);
        }
        Ending::Vanish => {
            drop(sender);
            // A generous bound: the engine's grace is 5 s after ICE is lost.
            let limit = Duration::from_secs(30);
            next_matching(&runtime, &mut watcher, "left cam", limit, is_left_of_cam);
        }
    }
    viewer.wait("the cam pad removed", |s| {
        s.removed.iter().any(|p| p == "video_cam")
    });
    // The resource is gone.
    let reply = runtime.block_on(request(&addr, "DELETE", &location, &[], ""));
    assert_eq!(reply.status, 404, "{reply:?}");
}

#[test]
fn a_whip_sender_of_vp8_is_a_participant_until_deleted() {
    whip_sender_joins_shows_and_leaves("r", &vp8_line(RED), RED, Ending::Delete);
}

#[test]
fn h264_from_a_whip_sender_reaches_a_roomsrc_and_a_vanished_sender_leaves() {
    whip_sender_joins_shows_and_leaves("h", &h264_line(GREEN), GREEN, Ending::Vanish);
}

/// A syntactically valid offer with one sendonly VP8 video m-line (it never connects).
const OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\n";

/// A request to the server at `addr` with `method`, `path`, extra header lines and `body`.
async fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> HttpReply {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    http_exchange(addr, &request).await
}

/// POSTs `OFFER` to `path` with extra header lines.
async fn post_offer(addr: &str, path: &str, headers: &[&str]) -> HttpReply {
    let mut all = vec!["Content-Type: application/sdp"];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, OFFER).await
}

fn token(room: &str, username: &str, grants: Grants) -> String {
    let claims = Claims {
        room: room.into(),
        sub: username.into(),
        exp: unix_now() + 3600,
        grants,
    };
    mint(SECRET.as_bytes(), &claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_http_statuses_and_nobody_joins() {
    let server = TestServer::start(Config {
        max_participants: 2,
        ..sfu_config()
    });
    let addr = server.addr.to_string();
    let mut watcher = Client::join_sfu_room(&server.ws_url(), "r", "watcher").await;

    let reply = request(
        &addr,
        "POST",
        "/whip/r/cam",
        &["Content-Type: text/plain"],
        OFFER,
    )
    .await;
    assert_eq!(reply.status, 415, "{reply:?}");
    let bad = "v=0\r\nthis is no SDP\r\n";
    let reply = request(
        &addr,
        "POST",
        "/whip/r/cam",
        &["Content-Type: application/sdp"],
        bad,
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("SDP"), "{reply:?}");
    let reply = post_offer(&addr, "/whip/r/bad%20name", &[]).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = post_offer(&addr, "/whip/r/watcher", &[]).await;
    assert_eq!(reply.status, 409, "{reply:?}");
    let mut other = Client::join_sfu_room(&server.ws_url(), "r", "other").await;
    let reply = post_offer(&addr, "/whip/r/cam", &[]).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.body.contains("full"), "{reply:?}");
    // Viewers of a stream nobody publishes.
    let reply = post_offer(&addr, "/whep/r/ghost", &[]).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    // The resources: unknown ones are not found, and nothing is patched.
    let reply = request(&addr, "DELETE", "/whip/r/cam/0123", &[], "").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = request(&addr, "PATCH", "/whip/r/cam/0123", &[], "").await;
    assert_eq!(reply.status, 405, "{reply:?}");

    // Only the other participant's arrival reached the room.
    watcher
        .recv_until(
            "joined other",
            |m| matches!(m, ServerMessage::Joined { username } if username == "other"),
        )
        .await;
    watcher.expect_silence().await;
    other.expect_silence().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_server_has_no_whip() {
    let server = TestServer::start(Config::default());
    let reply = post_offer(&server.addr.to_string(), "/whip/r/cam", &[]).await;
    assert_eq!(reply.status, 501, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_decide_and_a_flood_is_throttled() {
    let server = TestServer::start(Config {
        token_secret: Some(SECRET.into()),
        ..sfu_config()
    });
    let addr = server.addr.to_string();
    let mut watcher = Client::connect(&server.ws_url()).await;
    let answer = watcher
        .request_join_with_token(
            "r",
            "watcher",
            Some(&token("r", "watcher", Grants::PARTICIPANT)),
        )
        .await;
    assert!(matches!(answer, ServerMessage::State { .. }), "{answer:?}");
    // An SFU room: who speaks (nobody yet) comes right after the state.
    assert_eq!(
        watcher.recv().await,
        ServerMessage::ActiveSpeaker { username: None }
    );

    let reply = post_offer(&addr, "/whip/r/cam", &[]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let elsewhere = format!(
        "Authorization: Bearer {}",
        token("s", "cam", Grants::PARTICIPANT)
    );
    let reply = post_offer(&addr, "/whip/r/cam", &[&elsewhere]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.body.contains("room s"), "{reply:?}");
    let viewer_only = Grants {
        publish: false,
        ..Grants::PARTICIPANT
    };
    let no_grant = format!("Authorization: Bearer {}", token("r", "cam", viewer_only));
    let reply = post_offer(&addr, "/whip/r/cam", &[&no_grant]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let no_play = Grants {
        subscribe: false,
        ..Grants::PARTICIPANT
    };
    let no_play = format!("Authorization: Bearer {}", token("r", "x", no_play));
    let reply = post_offer(&addr, "/whep/r/watcher", &[&no_play]).await;
    assert_eq!(reply.status, 403, "{reply:?}");

    // A flood of POSTs from one address: refused at once beyond the burst.
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(post_offer(&addr, "/whip/r/cam", &[]).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    watcher.expect_silence().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_other_origins_may_post_and_read_location_and_link() {
    let server = TestServer::start(sfu_config());
    let addr = server.addr.to_string();
    let reply = request(
        &addr,
        "OPTIONS",
        "/whep/r/cam",
        &[
            "Origin: https://player.example.org",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: authorization, content-type",
        ],
        "",
    )
    .await;
    assert!(reply.status == 200 || reply.status == 204, "{reply:?}");
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let methods = reply.header("access-control-allow-methods").unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{reply:?}"
    );
    let reply = request(
        &addr,
        "POST",
        "/whep/r/cam",
        &[
            "Origin: https://player.example.org",
            "Content-Type: application/sdp",
        ],
        OFFER,
    )
    .await;
    let exposed = reply.header("access-control-expose-headers").unwrap_or("");
    assert!(
        exposed.to_lowercase().contains("location") && exposed.to_lowercase().contains("link"),
        "{reply:?}"
    );
}
