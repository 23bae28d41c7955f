//! End to end through real loopback UDP: an SFU on a free port, a publisher and viewers that
//! are str0m clients of their own (full ICE, DTLS, SRTP), offers and answers through the
//! crate's API.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use room_sfu::{Sfu, SfuConfig, SfuEvent, StreamKey};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, CodecExtra};
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a test waits for gets this long (generous: the machine is shared).
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Default, Clone)]
struct Seen {
    connected: bool,
    video_frames: usize,
    video_keyframes: usize,
    audio_frames: usize,
    /// Keyframe requests received (as a publisher).
    keyframe_requests: usize,
    /// The next video frame written is a keyframe (a request came in, as an encoder does).
    keyframe_wanted: bool,
    /// The first video frame received was a keyframe.
    first_video_was_keyframe: Option<bool>,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    /// The byte a publisher fills its frames with (tells publishers apart at a viewer).
    fill: u8,
    /// A publisher sends H264 (else VP8).
    h264: bool,
    /// Per fill byte seen at a viewer: whether its first frame was a keyframe.
    first_keyframe_by_fill: Vec<(u8, bool)>,
    /// A received video frame's time was before the previous one's.
    video_time_went_back: bool,
    last_video_time: Option<u64>,
}

enum Command {
    Write {
        kind: MediaKind,
        keyframe: bool,
    },
    RequestKeyframe,
    /// Send these datagrams to `to` from the client's own socket (its established address).
    SendRaw {
        to: SocketAddr,
        datagrams: Vec<Vec<u8>>,
    },
}

/// A str0m peer on its own loopback socket, run by its own task.
struct Client {
    commands: mpsc::UnboundedSender<Command>,
    seen: Arc<Mutex<Seen>>,
}

impl Client {
    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    fn write(&self, kind: MediaKind, keyframe: bool) {
        let _ = self.commands.send(Command::Write { kind, keyframe });
    }

    fn request_keyframe(&self) {
        let _ = self.commands.send(Command::RequestKeyframe);
    }
}

/// Which video codec a test client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Video {
    /// str0m's defaults (VP8, H264, VP9, AV1, H265 and Opus); VP8 is what a publisher sends.
    Any,
    /// H264 (and Opus) only.
    H264,
}

async fn new_rtc(video: Video) -> (Rtc, UdpSocket) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = Rtc::builder();
    if video == Video::H264 {
        config = config
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true);
    }
    let mut rtc = config.build(Instant::now());
    let candidate = Candidate::host(socket.local_addr().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(candidate);
    (rtc, socket)
}

/// A publisher of audio and video to the SFU's ingest session `session`.
async fn publisher(sfu: &Sfu, session: &str, stream: StreamKey, fill: u8) -> Client {
    publisher_of(sfu, session, stream, fill, Video::Any).await
}

async fn publisher_of(
    sfu: &Sfu,
    session: &str,
    stream: StreamKey,
    fill: u8,
    video: Video,
) -> Client {
    let (mut rtc, socket) = new_rtc(video).await;
    let mut change = rtc.sdp_api();
    let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video_mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let answer = sfu
        .publish(session, stream, &offer.to_sdp_string())
        .await
        .expect("publish");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    spawn_client(rtc, socket, Some(audio), Some(video_mid), fill)
}

/// A viewer of `stream` in session `session`.
async fn viewer(sfu: &Sfu, session: &str, stream: StreamKey) -> Client {
    viewer_of(sfu, session, stream, Video::Any).await
}

async fn viewer_of(sfu: &Sfu, session: &str, stream: StreamKey, video: Video) -> Client {
    let (mut rtc, socket) = new_rtc(video).await;
    let offer = sfu
        .subscribe(session, stream, true, true)
        .await
        .expect("subscribe");
    assert!(offer.contains("a=sendonly"), "{offer}");
    let answer = rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
        .unwrap();
    sfu.answer(session, &answer.to_sdp_string())
        .await
        .expect("answer");
    spawn_client(rtc, socket, None, None, 0)
}

fn spawn_client(
    rtc: Rtc,
    socket: UdpSocket,
    audio: Option<Mid>,
    video: Option<Mid>,
    fill: u8,
) -> Client {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Seen {
        audio_mid: audio,
        video_mid: video,
        fill,
        ..Seen::default()
    }));
    tokio::spawn(run_client(rtc, socket, command_rx, seen.clone()));
    Client { commands, seen }
}

/// A VP8 frame: a frame tag whose P bit says key or delta, a key frame's start code and size.
fn vp8_frame(keyframe: bool, fill: u8) -> Vec<u8> {
    let mut frame = if keyframe {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    frame.extend(std::iter::repeat_n(fill, 300));
    frame
}

/// An H264 access unit in Annex B: SPS, PPS and an IDR slice, or a non-IDR slice.
fn h264_frame(keyframe: bool, fill: u8) -> Vec<u8> {
    let mut frame = Vec::new();
    if keyframe {
        frame.extend([0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40]);
        frame.extend([0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        frame.extend([0, 0, 0, 1, 0x65, 0x88, 0x84]);
    } else {
        frame.extend([0, 0, 0, 1, 0x41, 0x9a, 0x02]);
    }
    frame.extend(std::iter::repeat_n(fill, 300));
    frame
}

async fn run_client(
    mut rtc: Rtc,
    socket: UdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    seen: Arc<Mutex<Seen>>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let mut frames_written: u64 = 0;
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(event)) => record(&mut rtc, event, &seen),
                Err(error) => panic!("client rtc error: {error}"),
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Write { kind, keyframe }) => {
                    frames_written += 1;
                    write(&mut rtc, &seen, kind, keyframe, start, frames_written);
                }
                Some(Command::SendRaw { to, datagrams }) => {
                    for datagram in datagrams {
                        let _ = socket.send_to(&datagram, to).await;
                        tokio::task::yield_now().await;
                    }
                }
                Some(Command::RequestKeyframe) => {
                    let mid = seen.lock().unwrap().video_mid;
                    if let Some(mut writer) = mid.and_then(|m| rtc.writer(m)) {
                        let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
                    }
                }
            },
            received = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = received else { continue };
                let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..len]) else {
                    continue;
                };
                let _ = rtc.handle_input(Input::Receive(Instant::now(), receive));
                continue;
            }
            () = tokio::time::sleep_until(timeout.into()) => {}
        }
        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
    }
}

fn write(
    rtc: &mut Rtc,
    seen: &Mutex<Seen>,
    kind: MediaKind,
    keyframe: bool,
    start: Instant,
    n: u64,
) {
    let (mid, codec, frequency, data) = {
        let mut seen = seen.lock().unwrap();
        let keyframe =
            keyframe || (kind == MediaKind::Video && std::mem::take(&mut seen.keyframe_wanted));
        match kind {
            MediaKind::Video if seen.h264 => (
                seen.video_mid,
                Codec::H264,
                Frequency::NINETY_KHZ,
                h264_frame(keyframe, seen.fill),
            ),
            MediaKind::Video => (
                seen.video_mid,
                Codec::Vp8,
                Frequency::NINETY_KHZ,
                vp8_frame(keyframe, seen.fill),
            ),
            MediaKind::Audio => (
                seen.audio_mid,
                Codec::Opus,
                Frequency::FORTY_EIGHT_KHZ,
                vec![0xfc, 0xff, 0xfe, 0x01],
            ),
        }
    };
    let Some(writer) = mid.and_then(|m| rtc.writer(m)) else {
        return;
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return;
    };
    let now = Instant::now();
    let ticks = (now - start).as_micros() as u64 * frequency.get() as u64 / 1_000_000 + n;
    writer
        .write(pt, now, MediaTime::new(ticks, frequency), data)
        .expect("write");
}

fn record(rtc: &mut Rtc, event: Event, seen: &Mutex<Seen>) {
    let mut seen = seen.lock().unwrap();
    match event {
        Event::Connected => seen.connected = true,
        Event::MediaAdded(added) => match added.kind {
            MediaKind::Audio if seen.audio_mid.is_none() => seen.audio_mid = Some(added.mid),
            MediaKind::Video if seen.video_mid.is_none() => seen.video_mid = Some(added.mid),
            _ => {}
        },
        Event::MediaData(data) => {
            let media = rtc.media(data.mid).map(|m| m.kind());
            match media {
                Some(MediaKind::Audio) => seen.audio_frames += 1,
                Some(MediaKind::Video) => {
                    let keyframe = match data.codec_extra {
                        CodecExtra::Vp8(e) => e.is_keyframe,
                        CodecExtra::H264(e) => e.is_keyframe,
                        _ => false,
                    };
                    seen.first_video_was_keyframe.get_or_insert(keyframe);
                    let fill = data.data.last().copied().unwrap_or(0);
                    if !seen.first_keyframe_by_fill.iter().any(|(f, _)| *f == fill) {
                        seen.first_keyframe_by_fill.push((fill, keyframe));
                    }
                    let time = data.time.numer();
                    if seen.last_video_time.is_some_and(|last| time < last) {
                        seen.video_time_went_back = true;
                    }
                    seen.last_video_time = Some(time);
                    seen.video_frames += 1;
                    seen.video_keyframes += usize::from(keyframe);
                }
                None => {}
            }
        }
        Event::KeyframeRequest(_) => {
            seen.keyframe_requests += 1;
            seen.keyframe_wanted = true;
        }
        _ => {}
    }
}

/// Logs with RUST_LOG (e.g. `room_sfu=debug`), once per test binary.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn start_sfu() -> (Sfu, mpsc::Receiver<SfuEvent>, CancellationToken) {
    start_sfu_on("127.0.0.1:0").await
}

async fn start_sfu_on(bind: &str) -> (Sfu, mpsc::Receiver<SfuEvent>, CancellationToken) {
    init_logs();
    let cancel = CancellationToken::new();
    let config = SfuConfig::new(bind.parse::<SocketAddr>().unwrap());
    let (sfu, events, _task) = Sfu::start(config, cancel.clone()).await.expect("start");
    (sfu, events, cancel)
}

fn key() -> StreamKey {
    StreamKey {
        room: "room".into(),
        participant: "alice".into(),
        stream: "camera".into(),
    }
}

/// Waits until `done` holds, failing with `what` after [`PATIENCE`].
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes ~30 fps video (a keyframe every `gop` frames, the first one too unless
/// `gop` is 0: then keyframes only on request) and 50 fps audio for `duration`.
async fn send_media(publisher: &Client, duration: Duration, gop: usize) {
    let end = Instant::now() + duration;
    let mut n = 0usize;
    while Instant::now() < end {
        if n.is_multiple_of(3) {
            publisher.write(MediaKind::Video, gop > 0 && n.is_multiple_of(3 * gop));
        }
        publisher.write(MediaKind::Audio, false);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reaches_two_viewers_and_their_keyframe_requests_arrive_coalesced() {
    let (sfu, mut events, cancel) = start_sfu().await;
    // The viewers subscribe before the publisher exists: forwarding starts when media arrives.
    let first = viewer(&sfu, "viewer-1", key()).await;
    let publisher = publisher(&sfu, "ingest", key(), 0x5a).await;
    let second = viewer(&sfu, "viewer-2", key()).await;
    wait_for("three connections", || {
        publisher.seen().connected && first.seen().connected && second.seen().connected
    })
    .await;
    let mut connected = Vec::new();
    while connected.len() < 3 {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Ok(Some(SfuEvent::Connected { session })) => connected.push(session),
            other => panic!("expected Connected events, got {other:?}"),
        }
    }
    connected.sort();
    assert_eq!(connected, ["ingest", "viewer-1", "viewer-2"]);

    // A long GOP: viewers only start at a keyframe, and the SFU asks the publisher for one.
    send_media(&publisher, Duration::from_secs(2), 1000).await;
    wait_for("video and audio at both viewers", || {
        let (a, b) = (first.seen(), second.seen());
        a.video_frames >= 10 && b.video_frames >= 10 && a.audio_frames >= 20 && b.audio_frames >= 20
    })
    .await;
    for viewer in [&first, &second] {
        let seen = viewer.seen();
        assert_eq!(seen.first_video_was_keyframe, Some(true), "{seen:?}");
    }
    assert!(
        publisher.seen().keyframe_requests >= 1,
        "the viewers' joins were never asked for: {:?}",
        publisher.seen()
    );

    // Twenty requests from two viewers within a moment reach the publisher as a handful.
    let before = publisher.seen().keyframe_requests;
    for _ in 0..10 {
        first.request_keyframe();
        second.request_keyframe();
    }
    let stats_before = sfu.stats();
    send_media(&publisher, Duration::from_secs(1), 1000).await;
    wait_for("a keyframe request at the publisher", || {
        publisher.seen().keyframe_requests > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let forwarded = publisher.seen().keyframe_requests - before;
    let stats = sfu.stats();
    println!("20 viewer keyframe requests → {forwarded} at the publisher; stats: {stats:#?}");
    assert!(
        (1..=6).contains(&forwarded),
        "{forwarded} keyframe requests reached the publisher"
    );
    assert!(stats.keyframe_requests_coalesced > stats_before.keyframe_requests_coalesced);
    assert_eq!((stats.ingest_sessions, stats.viewer_sessions), (1, 2));
    assert!(stats.frames_forwarded >= 60, "{stats:?}");
    assert_eq!(stats.dropped_frames.codec_mismatch, 0);

    // Closing a viewer leaves the other one receiving.
    sfu.close("viewer-1").await;
    sfu.close("viewer-1").await;
    let before = second.seen().video_frames;
    send_media(&publisher, Duration::from_millis(500), 1000).await;
    wait_for("video after a close", || {
        second.seen().video_frames > before
    })
    .await;
    assert_eq!(sfu.stats().viewer_sessions, 1);
    cancel.cancel();
}

/// `count` random datagrams, cycling through the first-byte ranges of STUN, DTLS, RTP/RTCP
/// and none of them, of random lengths (so also truncated headers).
fn garbage(count: usize, mut seed: u64) -> Vec<Vec<u8>> {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..count)
        .map(|i| {
            let len = (next() % 200) as usize;
            let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = datagram.first_mut() {
                *first = match i % 4 {
                    0 => *first % 4,
                    1 => 20 + *first % 44,
                    2 => 128 + *first % 64,
                    _ => *first,
                };
            }
            datagram
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_sessions_own_address_does_not_end_it() {
    let (sfu, mut events, cancel) = start_sfu().await;
    let publisher = publisher(&sfu, "ingest", key(), 0x5a).await;
    let viewer = viewer(&sfu, "viewer", key()).await;
    wait_for("connections", || {
        publisher.seen().connected && viewer.seen().connected
    })
    .await;
    send_media(&publisher, Duration::from_millis(500), 10).await;
    wait_for("video", || viewer.seen().video_frames > 0).await;
    let before = sfu.stats().datagrams_received;
    for (i, client) in [&publisher, &viewer].into_iter().enumerate() {
        let _ = client.commands.send(Command::SendRaw {
            to: sfu.local_addr(),
            datagrams: garbage(1000, 0x9e37_79b9_7f4a_7c15 + i as u64),
        });
    }
    let mut waited = Duration::ZERO;
    while sfu.stats().datagrams_received < before + 1500 {
        assert!(waited < PATIENCE, "{:?}", sfu.stats());
        send_media(&publisher, Duration::from_millis(100), 10).await;
        waited += Duration::from_millis(100);
    }
    let frames = viewer.seen().video_frames;
    send_media(&publisher, Duration::from_secs(1), 10).await;
    wait_for("video after the garbage", || {
        viewer.seen().video_frames > frames + 10
    })
    .await;
    let stats = sfu.stats();
    println!("after 2000 garbage datagrams from the peers' own addresses: {stats:?}");
    assert_eq!(stats.connected_sessions, 2, "{stats:?}");
    // Truncated headers are dropped before str0m; the rest str0m discards itself.
    assert!(stats.dropped.malformed > 0, "{stats:?}");
    while let Ok(event) = events.try_recv() {
        assert!(matches!(event, SfuEvent::Connected { .. }), "{event:?}");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_media_port_is_counted_and_sessions_go_on() {
    let (sfu, _events, cancel) = start_sfu().await;
    let publisher = publisher(&sfu, "ingest", key(), 0x5a).await;
    let viewer = viewer(&sfu, "viewer", key()).await;
    wait_for("connections", || {
        publisher.seen().connected && viewer.seen().connected
    })
    .await;
    send_media(&publisher, Duration::from_millis(500), 10).await;
    wait_for("video", || viewer.seen().video_frames > 0).await;

    // Random and truncated STUN/DTLS/RTP/RTCP-looking datagrams from an unknown address.
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sfu.local_addr();
    let mut seed: u64 = 0x1234_5678_9abc_def0;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..2000u32 {
        let len = (next() % 200) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = datagram.first_mut() {
            // Cycle through the protocols' first-byte ranges (STUN, DTLS, RTP/RTCP, other).
            *first = match i % 4 {
                0 => (*first) % 4,
                1 => 20 + (*first) % 44,
                2 => 128 + (*first) % 64,
                _ => *first,
            };
        }
        attacker.send_to(&datagram, port).await.unwrap();
        if i % 50 == 0 {
            // Paced, so that the kernel's receive buffer does not drop what we want counted.
            publisher.write(MediaKind::Video, false);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let before = viewer.seen().video_frames;
    send_media(&publisher, Duration::from_millis(500), 10).await;
    wait_for("video after the garbage", || {
        viewer.seen().video_frames > before
    })
    .await;
    let stats = sfu.stats();
    println!("after 2000 garbage datagrams: {stats:?}");
    let dropped = stats.dropped;
    assert!(
        dropped.malformed + dropped.unknown_address + dropped.unknown_ufrag >= 1000,
        "{dropped:?}"
    );
    assert!(
        dropped.unknown_address > 0 && dropped.malformed > 0,
        "{dropped:?}"
    );
    assert_eq!(stats.connected_sessions, 2);
    cancel.cancel();
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (sfu, _events, cancel) = start_sfu().await;
    assert!(matches!(
        sfu.publish("p", key(), "not sdp").await,
        Err(room_sfu::SfuError::BadSdp(_))
    ));
    assert!(matches!(
        sfu.answer("nobody", "v=0").await,
        Err(room_sfu::SfuError::UnknownSession)
    ));
    let offer = sfu.subscribe("v", key(), false, true).await.unwrap();
    assert!(
        offer.contains("m=video") && !offer.contains("m=audio"),
        "{offer}"
    );
    assert!(offer.contains("VP8") && offer.contains("H264"), "{offer}");
    assert!(offer.contains("a=msid:alice-camera "), "{offer}");
    assert!(matches!(
        sfu.subscribe("v", key(), true, true).await,
        Err(room_sfu::SfuError::SessionExists(_))
    ));
    assert!(matches!(
        sfu.remote_candidate("v", "").await,
        Err(room_sfu::SfuError::BadCandidate(_))
    ));
    assert!(matches!(
        sfu.remote_candidate("v", "a=candidate:garbage").await,
        Err(room_sfu::SfuError::BadCandidate(_))
    ));
    sfu.remote_candidate("v", "a=candidate:1 1 udp 2113929471 127.0.0.1 9 typ host")
        .await
        .unwrap();
    assert!(matches!(
        sfu.answer("v", "garbage").await,
        Err(room_sfu::SfuError::BadSdp(_))
    ));
    assert_eq!(sfu.stats().sessions, 1);
    sfu.close("v").await;
    assert_eq!(sfu.stats().sessions, 0);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_reaches_the_same_viewer_from_a_keyframe_on_a_continuous_timeline() {
    let (sfu, _events, cancel) = start_sfu().await;
    let old = publisher(&sfu, "ingest-1", key(), 0x11).await;
    wait_for("the first ingest", || old.seen().connected).await;
    send_media(&old, Duration::from_millis(300), 1000).await;
    // A viewer subscribing once the ingest's codec is known is offered that codec only.
    let offer = sfu.subscribe("viewer", key(), true, true).await.unwrap();
    assert!(offer.contains("VP8") && !offer.contains("H264"), "{offer}");
    sfu.close("viewer").await;
    let viewer = viewer(&sfu, "viewer", key()).await;
    wait_for("the viewer", || viewer.seen().connected).await;
    send_media(&old, Duration::from_secs(1), 1000).await;
    wait_for("the first ingest's video", || {
        viewer.seen().video_frames >= 5
    })
    .await;

    // The publisher comes back in a new session (its clock starts anew, far behind).
    let new = publisher(&sfu, "ingest-2", key(), 0x22).await;
    wait_for("the second ingest", || new.seen().connected).await;
    sfu.close("ingest-1").await;
    // Delta frames only, until the SFU asks for a keyframe on the viewer's behalf.
    let mut waited = Duration::ZERO;
    while viewer.seen().first_keyframe_by_fill.len() < 2 {
        assert!(
            waited < PATIENCE,
            "no frame of the new ingest: {:?}",
            viewer.seen()
        );
        send_media(&new, Duration::from_millis(200), 0).await;
        waited += Duration::from_millis(200);
    }
    let seen = viewer.seen();
    assert_eq!(
        seen.first_keyframe_by_fill,
        [(0x11, true), (0x22, true)],
        "{seen:?}"
    );
    assert!(!seen.video_time_went_back, "{seen:?}");
    assert!(
        new.seen().keyframe_requests >= 1,
        "the new ingest was asked for a keyframe"
    );
    assert_eq!(sfu.stats().sessions, 2, "the new ingest and the viewer");
    cancel.cancel();
}

#[tokio::test]
async fn a_session_that_never_connects_fails() {
    let cancel = CancellationToken::new();
    let mut config = SfuConfig::new("127.0.0.1:0".parse::<SocketAddr>().unwrap());
    config.limits.connect_timeout = Duration::from_secs(1);
    let (sfu, mut events, task) = Sfu::start(config, cancel.clone()).await.unwrap();
    sfu.subscribe("lonely", key(), true, true).await.unwrap();
    let event = tokio::time::timeout(PATIENCE, events.recv()).await.unwrap();
    assert_eq!(
        event,
        Some(SfuEvent::Failed {
            session: "lonely".into(),
            reason: "not connected within 1 s".into()
        })
    );
    assert_eq!(sfu.stats().sessions, 0);
    assert!(matches!(
        sfu.answer("lonely", "v=0").await,
        Err(room_sfu::SfuError::UnknownSession)
    ));
    cancel.cancel();
    task.await.unwrap();
    assert!(matches!(
        sfu.subscribe("late", key(), true, true).await,
        Err(room_sfu::SfuError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_is_forwarded_and_offered_to_later_viewers() {
    let (sfu, _events, cancel) = start_sfu().await;
    let publisher = publisher_of(&sfu, "ingest", key(), 0x33, Video::H264).await;
    publisher.seen.lock().unwrap().h264 = true;
    wait_for("the ingest", || publisher.seen().connected).await;
    send_media(&publisher, Duration::from_millis(300), 1000).await;
    let offer = sfu.subscribe("probe", key(), true, true).await.unwrap();
    assert!(offer.contains("H264") && !offer.contains("VP8"), "{offer}");
    sfu.close("probe").await;

    let viewer = viewer(&sfu, "viewer", key()).await;
    wait_for("the viewer", || viewer.seen().connected).await;
    let mut waited = Duration::ZERO;
    while viewer.seen().video_frames < 10 {
        assert!(waited < PATIENCE, "{:?} {:?}", viewer.seen(), sfu.stats());
        send_media(&publisher, Duration::from_millis(200), 0).await;
        waited += Duration::from_millis(200);
    }
    let seen = viewer.seen();
    assert_eq!(seen.first_keyframe_by_fill, [(0x33, true)], "{seen:?}");
    assert_eq!(sfu.stats().dropped_frames.codec_mismatch, 0);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_the_ingests_codec_gets_audio_only_and_the_drops_are_counted() {
    let (sfu, _events, cancel) = start_sfu().await;
    // Subscribed before the ingest exists: offered VP8 and H264, answers H264 only.
    let viewer = viewer_of(&sfu, "viewer", key(), Video::H264).await;
    let publisher = publisher(&sfu, "ingest", key(), 0x44).await;
    wait_for("connections", || {
        publisher.seen().connected && viewer.seen().connected
    })
    .await;
    let mut waited = Duration::ZERO;
    while viewer.seen().audio_frames < 20 || sfu.stats().dropped_frames.codec_mismatch < 5 {
        assert!(waited < PATIENCE, "{:?} {:?}", viewer.seen(), sfu.stats());
        send_media(&publisher, Duration::from_millis(200), 3).await;
        waited += Duration::from_millis(200);
    }
    assert_eq!(viewer.seen().video_frames, 0);
    assert_eq!(sfu.stats().connected_sessions, 2);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_bound_to_every_ipv6_address_serves_ipv4_peers() {
    let (sfu, _events, cancel) = start_sfu_on("[::]:0").await;
    let viewer = viewer(&sfu, "viewer", key()).await;
    let publisher = publisher(&sfu, "ingest", key(), 0x66).await;
    wait_for("connections", || {
        publisher.seen().connected && viewer.seen().connected
    })
    .await;
    send_media(&publisher, Duration::from_millis(500), 10).await;
    wait_for("video over IPv4 to [::]", || {
        viewer.seen().video_frames >= 5
    })
    .await;
    cancel.cancel();
}
