//! WHIP ingest and WHEP playback (`/whip/...`, `/whep/...`) against a real server: Debian's
//! `simple-whip-client` publishes into a room and a roomsrc decodes it; the sender is a room
//! participant (JOINED, PUBLISHED, LEFT on stop); refusals are HTTP statuses and leave the room
//! untouched.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst_room_tests::media::*;
use gst_room_tests::{Client, HttpReply, TestServer, http_exchange};
use room_protocol::ServerMessage;
use room_signaling::Config;
use room_signaling::auth::{Claims, Grants, mint, unix_now};
use room_signaling::media::{MediaConfig, SfuSettings};

const RED: Rgb = [230, 20, 20];
const SECRET: &str = "whip-test-secret-of-32-bytes!!!!";

/// A server that carries media, on a free UDP port of every address.
fn sfu_config() -> Config {
    Config {
        max_participants: 8,
        media: MediaConfig::Sfu(SfuSettings {
            bind: "0.0.0.0:0".parse().unwrap(),
            advertised: Vec::new(),
        }),
        ..Default::default()
    }
}

/// `simple-whip-client` publishing `video` (the RTP end of a gst-launch line) to `url`,
/// candidates in the offer (`-n`). Its log goes to the test's output.
fn whip_client(url: &str, video: &str, token: Option<&str>) -> Child {
    let mut command = Command::new("whip-client");
    command.args(["-u", url, "-n", "-V", video, "-l", "4", "-o"]);
    if let Some(token) = token {
        command.args(["-t", token]);
    }
    command
        .stdin(Stdio::null())
        .spawn()
        .expect("whip-client runs (Debian package simple-whip-client, scripts/setup.sh)")
}

/// A solid `colour` at 320x240, VP8 in RTP payload type 96.
fn vp8_line(colour: Rgb) -> String {
    format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={} ! \
         video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! queue ! \
         vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! \
         application/x-rtp,media=video,encoding-name=VP8,payload=96",
        argb(colour)
    )
}

/// Stops `client` as Ctrl-C does (it sends DELETE for its resource) and waits for it.
fn interrupt(client: &mut Child) {
    let pid = client.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = client.kill();
            panic!("whip-client did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `left who` at `client`, at most `limit`.
async fn left_within(client: &mut Client, who: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.try_recv(left).await {
            Some(ServerMessage::Left { username }) if username == who => return,
            Some(_) => continue,
            None => panic!("no LEFT {who} within {limit:?}"),
        }
    }
}

#[test]
fn simple_whip_client_publishes_red_into_a_room_and_leaves_when_stopped() {
    init();
    let server = TestServer::start(sfu_config());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut watcher = runtime.block_on(Client::join(&server.ws_url(), "r", "watcher"));
    let url = format!("{}/whip/r/cam", server.http_url());
    let mut sender = whip_client(&url, &vp8_line(RED), None);
    runtime.block_on(async {
        watcher
            .recv_until("joined cam", |m| matches!(m, ServerMessage::Joined { username } if username == "cam"))
            .await;
        let published = watcher
            .recv_until("published cam", |m| matches!(m, ServerMessage::Published { .. }))
            .await;
        let ServerMessage::Published { username, stream } = published else { unreachable!() };
        assert_eq!((username.as_str(), stream.stream.as_str()), ("cam", "main"));
        assert!(stream.video && !stream.audio, "{stream:?}");
    });
    let viewer = Viewer::new(&server.ws_url(), "room=r username=v participant=cam").start();
    shows(&viewer, "video_cam", RED);

    interrupt(&mut sender);
    runtime.block_on(left_within(&mut watcher, "cam", Duration::from_secs(5)));
    viewer.wait("the cam pad removed", |s| s.removed.iter().any(|p| p == "video_cam"));
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
    let mut watcher = Client::join(&server.ws_url(), "r", "watcher").await;

    let reply = request(&addr, "POST", "/whip/r/cam", &["Content-Type: text/plain"], OFFER).await;
    assert_eq!(reply.status, 415, "{reply:?}");
    let bad = "v=0\r\nthis is no SDP\r\n";
    let reply = request(&addr, "POST", "/whip/r/cam", &["Content-Type: application/sdp"], bad).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("SDP"), "{reply:?}");
    let reply = post_offer(&addr, "/whip/r/bad%20name", &[]).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = post_offer(&addr, "/whip/r/watcher", &[]).await;
    assert_eq!(reply.status, 409, "{reply:?}");
    let mut other = Client::join(&server.ws_url(), "r", "other").await;
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
        .recv_until("joined other", |m| matches!(m, ServerMessage::Joined { username } if username == "other"))
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
        .request_join_with_token("r", "watcher", Some(&token("r", "watcher", Grants::PARTICIPANT)))
        .await;
    assert!(matches!(answer, ServerMessage::State { .. }), "{answer:?}");

    let reply = post_offer(&addr, "/whip/r/cam", &[]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let elsewhere = format!("Authorization: Bearer {}", token("s", "cam", Grants::PARTICIPANT));
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
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
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
    assert!(methods.contains("POST") && methods.contains("DELETE"), "{reply:?}");
    let reply = request(
        &addr,
        "POST",
        "/whep/r/cam",
        &["Origin: https://player.example.org", "Content-Type: application/sdp"],
        OFFER,
    )
    .await;
    let exposed = reply.header("access-control-expose-headers").unwrap_or("");
    assert!(
        exposed.to_lowercase().contains("location") && exposed.to_lowercase().contains("link"),
        "{reply:?}"
    );
}
