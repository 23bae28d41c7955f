//! roomsink and roomsrc with real media: a server in this process, real pipelines, decoded
//! frames checked for colour.

use gst::prelude::*;
use gst_room_tests::TestServer;
use gst_room_tests::media::*;

const RED: Rgb = [230, 20, 20];
const BLUE: Rgb = [20, 40, 230];
const BLACK: Rgb = [0, 0, 0];
/// VP8 at low bitrate and two colour conversions move a flat colour by a few steps.
const TOLERANCE: u8 = 40;

#[test]
fn published_colour_and_audio_arrive_decoded() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let publisher = start(&publisher_line(&url, "colour", "bot", RED, ""));
    let viewer = Viewer::new(&url, "room=colour username=viewer participant=bot").start();
    let seen = viewer.wait("30 red frames and decoded audio", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= 30
            && s.colour
                .get("video_bot")
                .is_some_and(|c| close_to(*c, RED, TOLERANCE))
            && s.audio_buffers.get("audio_bot").copied().unwrap_or(0) > 10
    });
    assert!(seen.eos.is_empty());
    stop(&publisher);
}

#[test]
fn two_gst_participants_publish_and_play_each_other_over_one_connection_each() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    // Each side is one participant: roomsink and roomsrc with the same username share it.
    let a = Viewer::new(&url, "room=pair username=alice");
    let b = Viewer::new(&url, "room=pair username=bob");
    let a_pub = start(&publisher_line(&url, "pair", "alice", RED, ""));
    let b_pub = start(&publisher_line(&url, "pair", "bob", BLUE, ""));
    let (a, b) = (a.start(), b.start());
    a.wait("alice sees bob's blue", |s| {
        s.colour
            .get("video_bob")
            .is_some_and(|c| close_to(*c, BLUE, TOLERANCE))
    });
    b.wait("bob sees alice's red", |s| {
        s.colour
            .get("video_alice")
            .is_some_and(|c| close_to(*c, RED, TOLERANCE))
    });
    // Neither plays itself.
    assert!(!a.seen().frames.contains_key("video_alice"));
    // The roomsrc that joined through its roomsink's connection still reports the room.
    let state = wait_for_event(&a.pipeline, "room-state", |s| {
        s.get::<u32>("capacity") == Ok(3)
    });
    assert_eq!(state.get::<&str>("username").unwrap(), "alice");
    // Two participants, not four: the elements of each side shared one connection.
    let names: Vec<String> = a.roomsrc.property("participants");
    assert_eq!(names.len(), 2, "{names:?}");
    stop(&a_pub);
    stop(&b_pub);
}

#[test]
fn late_publisher_appears_and_its_end_removes_only_its_pads() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let viewer = Viewer::new(&url, "room=late username=viewer").start();
    wait_for_event(&viewer.pipeline, "room-state", |_| true);
    let publisher = start(&publisher_line(&url, "late", "bot", BLUE, ""));
    viewer.wait("frames from the late publisher", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= 10
    });

    // NULL leaves the room, even though the pipeline object still exists.
    stop(&publisher);
    wait_for_event(&viewer.pipeline, "room-left", |s| {
        s.get::<&str>("username") == Ok("bot")
    });
    let seen = viewer.wait("EOS and removal of bot's pads", |s| {
        s.eos.contains(&"video_bot".to_string())
            && s.removed.contains(&"video_bot".to_string())
            && s.removed.contains(&"audio_bot".to_string())
    });
    assert!(seen.eos.contains(&"audio_bot".to_string()), "{seen:?}");
    let (_, current, _) = viewer.pipeline.state(gst::ClockTime::from_seconds(1));
    assert_eq!(current, gst::State::Playing);
    assert!(
        viewer.seen().errors.is_empty(),
        "{:?}",
        viewer.seen().errors
    );
    let bus = viewer.pipeline.bus().unwrap();
    assert!(
        bus.pop_filtered(&[gst::MessageType::Eos]).is_none(),
        "no pipeline-wide EOS"
    );
}

#[test]
fn mute_video_sends_black_and_tells_the_room() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let publisher = start(&publisher_line(&url, "mute", "bot", RED, ""));
    let viewer = Viewer::new(&url, "room=mute username=viewer participant=bot").start();
    viewer.wait("red", |s| {
        s.colour
            .get("video_bot")
            .is_some_and(|c| close_to(*c, RED, TOLERANCE))
    });

    let sink = publisher.by_name("sink").unwrap();
    sink.set_property("mute-video", true);
    let muted = wait_for_event(&viewer.pipeline, "room-muted", |s| {
        s.get::<bool>("video-muted") == Ok(true)
    });
    assert_eq!(muted.get::<&str>("username").unwrap(), "bot");
    assert!(!muted.get::<bool>("audio-muted").unwrap());
    viewer.wait("black", |s| {
        s.colour
            .get("video_bot")
            .is_some_and(|c| close_to(*c, BLACK, TOLERANCE))
    });

    sink.set_property("mute-video", false);
    wait_for_event(&viewer.pipeline, "room-muted", |s| {
        s.get::<bool>("video-muted") == Ok(false)
    });
    viewer.wait("red again", |s| {
        s.colour
            .get("video_bot")
            .is_some_and(|c| close_to(*c, RED, TOLERANCE))
    });
    stop(&publisher);
}

#[test]
fn mute_audio_sends_silence_and_unmute_brings_the_tone_back() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    // audiotestsrc's default sine has volume 0.8: RMS ≈ 0.57 of full scale.
    let publisher = start(&publisher_line(&url, "hush", "bot", RED, ""));
    let viewer = Viewer::new(&url, "room=hush username=viewer participant=bot").start();
    let tone = |s: &Seen| s.audio_rms.get("audio_bot").is_some_and(|r| *r > 0.1);
    let silence = |s: &Seen| s.audio_rms.get("audio_bot").is_some_and(|r| *r < 0.01);
    viewer.wait("the tone", tone);

    let sink = publisher.by_name("sink").unwrap();
    sink.set_property("mute-audio", true);
    let muted = wait_for_event(&viewer.pipeline, "room-muted", |s| {
        s.get::<bool>("audio-muted") == Ok(true)
    });
    assert!(!muted.get::<bool>("video-muted").unwrap());
    viewer.wait("silence", silence);

    sink.set_property("mute-audio", false);
    viewer.wait("the tone again", tone);
    stop(&publisher);
}

#[test]
fn chat_from_action_signals_arrives_stamped_with_the_sender() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let viewer = Viewer::new(&url, "room=chat username=viewer").start();
    wait_for_event(&viewer.pipeline, "room-state", |_| true);
    let publisher = start(&publisher_line(&url, "chat", "bot", RED, ""));
    wait_for_event(&viewer.pipeline, "room-joined", |s| {
        s.get::<&str>("username") == Ok("bot")
    });
    let sink = publisher.by_name("sink").unwrap();

    assert!(sink.emit_by_name::<bool>("send-message", &[&"hello <room>"]));
    let msg = wait_for_event(&viewer.pipeline, "room-message", |_| true);
    assert_eq!(msg.get::<&str>("from").unwrap(), "bot");
    assert_eq!(msg.get::<&str>("text").unwrap(), "hello <room>");
    assert!(!msg.has_field("to"));
    assert!(msg.get::<u64>("ts").unwrap() > 1_700_000_000_000);

    assert!(sink.emit_by_name::<bool>("send-message-to", &[&"viewer", &"just you"]));
    let msg = wait_for_event(&viewer.pipeline, "room-message", |_| true);
    assert_eq!(
        (
            msg.get::<&str>("to").unwrap(),
            msg.get::<&str>("text").unwrap()
        ),
        ("viewer", "just you")
    );

    // A player-only participant chats through roomsrc's signals.
    assert!(
        viewer
            .roomsrc
            .emit_by_name::<bool>("send-message-to", &[&"bot", &"hi bot"])
    );
    let msg = wait_for_event(&publisher, "room-message", |s| {
        s.get::<&str>("text") == Ok("hi bot")
    });
    assert_eq!(msg.get::<&str>("from").unwrap(), "viewer");
    stop(&publisher);
}

/// Reads the bus until `done` holds for the warnings and the `room-message` texts seen so far
/// (both kinds are read in one pass: popping one kind would discard the other); panics after
/// [`MEDIA_WAIT`] or on an error.
fn warnings_and_chat(
    pipeline: &gst::Pipeline,
    done: impl Fn(&[String], &[String]) -> bool,
) -> (Vec<String>, Vec<String>) {
    let bus = pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + MEDIA_WAIT;
    let (mut warnings, mut texts) = (Vec::new(), Vec::new());
    while !done(&warnings, &texts) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "seen so far: {warnings:?} {texts:?}");
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(left.as_millis() as u64),
            &[
                gst::MessageType::Warning,
                gst::MessageType::Element,
                gst::MessageType::Error,
            ],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            gst::MessageView::Error(e) => panic!("pipeline error: {}", e.error()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "room-message"
                {
                    texts.push(s.get::<String>("text").unwrap());
                }
            }
            _ => {}
        }
    }
    (warnings, texts)
}

#[test]
fn send_message_reports_the_servers_verdict_with_the_reason() {
    init();
    let config = room_signaling::Config {
        rate_limits: room_signaling::limits::RateLimits {
            chat: room_signaling::limits::RateLimit::new(1, 2),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::start(config);
    let url = server.ws_url();
    let viewer = Viewer::new(&url, "room=verdict username=viewer").start();
    wait_for_event(&viewer.pipeline, "room-state", |_| true);
    let roomsrc = &viewer.roomsrc;

    // Nobody of that name in the room: refused, and the warning says why.
    assert!(!roomsrc.emit_by_name::<bool>("send-message-to", &[&"nobody", &"hello?"]));
    let (warnings, _) = warnings_and_chat(&viewer.pipeline, |w, _| !w.is_empty());
    assert!(
        warnings[0].starts_with("unknown-participant: "),
        "{warnings:?}"
    );

    // Faster than one a second with a burst of two: the server lets some through and refuses
    // the rest, and each call says which.
    let verdicts: Vec<bool> = (0..5)
        .map(|i| roomsrc.emit_by_name::<bool>("send-message", &[&format!("flood {i}")]))
        .collect();
    assert!(
        verdicts.contains(&true) && verdicts.contains(&false),
        "{verdicts:?}"
    );
    let accepted: Vec<String> = (0..5)
        .filter(|i| verdicts[*i])
        .map(|i| format!("flood {i}"))
        .collect();
    let refusals = verdicts.iter().filter(|v| !**v).count();
    // A warning per refusal, saying why; what was accepted came back to the room.
    let (warnings, texts) = warnings_and_chat(&viewer.pipeline, |w, t| {
        w.len() >= refusals && accepted.iter().all(|a| t.contains(a))
    });
    assert!(
        warnings.iter().all(|w| w.starts_with("rate-limited: ")),
        "{warnings:?}"
    );
    assert!(
        texts.iter().all(|t| accepted.contains(t)),
        "only accepted messages reach the room: {texts:?}"
    );
}

#[test]
fn refused_joins_are_element_errors_with_the_reason() {
    init();
    let config = room_signaling::Config {
        max_participants: 1,
        ..Default::default()
    };
    let small = TestServer::start(config);
    let url = small.ws_url();
    let first = Viewer::new(&url, "room=small username=first").start();
    wait_for_event(&first.pipeline, "room-state", |_| true);

    let full = Viewer::new(&url, "room=small username=second").start();
    let failed = wait_for_event(&full.pipeline, "room-failed", |_| true);
    assert_eq!(failed.get::<&str>("reason").unwrap(), "room-full");
    let error = wait_for_error(&full.pipeline);
    assert!(error.starts_with("room-full"), "{error}");

    // Elements of this process with the same key would share the participant, so the name
    // clash comes from a participant of another client: a raw WebSocket one.
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _raw = rt.block_on(gst_room_tests::Client::join(&url, "taken", "dup"));
    let clash = Viewer::new(&url, "room=taken username=dup").start();
    let error = wait_for_error(&clash.pipeline);
    assert!(error.starts_with("name-taken"), "{error}");
    // The first participant was not disturbed.
    assert!(first.seen().errors.is_empty(), "{:?}", first.seen().errors);
}

#[test]
fn missing_room_property_is_a_clear_error() {
    init();
    let pipeline = gst::parse::launch("videotestsrc ! roomsink").unwrap();
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let error = wait_for_error(pipeline.downcast_ref().unwrap());
    assert!(error.contains("room"), "{error}");
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn unreachable_server_is_an_element_error_after_retries() {
    init();
    // Bind and drop: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let viewer = Viewer::new(&format!("ws://127.0.0.1:{port}/ws"), "room=r username=u").start();
    let failed = wait_for_event(&viewer.pipeline, "room-failed", |_| true);
    assert_eq!(failed.get::<&str>("reason").unwrap(), "unreachable");
    let error = wait_for_error(&viewer.pipeline);
    assert!(
        error.starts_with("unreachable: ") && error.contains("after 5 attempts"),
        "{error}"
    );
    // Five attempts with 0.4 + 0.8 + 1.6 + 3.2 s of backoff between them.
    assert_eq!(
        (1..5)
            .map(gstroom::client::backoff)
            .sum::<std::time::Duration>(),
        std::time::Duration::from_millis(6000)
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(6000),
        "gave up after {waited:?}, before the backoff schedule ran out"
    );
}

#[test]
fn a_lost_server_is_reported_and_the_participant_rejoins_when_it_returns() {
    init();
    let mut server = TestServer::default_config();
    let url = server.ws_url();
    let addr = server.addr;
    let publisher = start(&publisher_line(&url, "back", "bot", RED, ""));
    let viewer = Viewer::new(&url, "room=back username=viewer participant=bot").start();
    viewer.wait("frames before the outage", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= 5
    });

    server.stop();
    wait_for_event(&viewer.pipeline, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("reconnecting")
    });
    viewer.wait("the player ended with the connection", |s| {
        s.removed.contains(&"video_bot".to_string())
    });

    // The same address again: both participants rejoin, bot re-publishes, the viewer plays it.
    let _server = TestServer::start_on(addr, room_signaling::Config::default());
    wait_for_event(&viewer.pipeline, "room-session-status", |s| {
        s.get::<&str>("status") == Ok("joined")
    });
    let before = viewer.seen().frames.get("video_bot").copied().unwrap_or(0);
    viewer.wait("frames after the rejoin", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= before + 10
    });
    fail_on_error(&publisher);
    stop(&publisher);
}

#[test]
fn gst_inspect_lists_both_elements_with_every_property_documented() {
    // The cdylib next to this test binary's directory: target/<profile>/libgstroom.so.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    assert!(
        dir.join("libgstroom.so").exists(),
        "build the plugin first: cargo build -p gst-plugin-room ({})",
        dir.display()
    );
    for element in ["roomsink", "roomsrc"] {
        let output = std::process::Command::new("gst-inspect-1.0")
            .arg(element)
            .env("GST_PLUGIN_PATH", dir)
            .env("GST_REGISTRY", dir.join("gst-room-test-registry.bin"))
            .output()
            .expect("gst-inspect-1.0 runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{element}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Every property line ("  name   : blurb") has a blurb of a few words.
        let properties = text
            .split("Element Properties:")
            .nth(1)
            .unwrap()
            .split("Element Signals:")
            .next()
            .unwrap();
        let mut count = 0;
        for line in properties
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.contains(" : "))
        {
            let (name, blurb) = line.split_once(" : ").unwrap();
            assert!(
                blurb.split_whitespace().count() >= 2,
                "{element}.{}: blurb {blurb:?}",
                name.trim()
            );
            count += 1;
        }
        let expected: &[&str] = if element == "roomsink" {
            &[
                "server-url",
                "room",
                "username",
                "token",
                "stun-server",
                "turn-servers",
                "status",
                "participants",
                "mute-audio",
                "mute-video",
                "video-caps",
                "audio-caps",
                "stream",
                "encode-per-viewer",
                "video-bitrate",
                "dtls-fingerprint",
            ]
        } else {
            &[
                "server-url",
                "room",
                "username",
                "participant",
                "latency",
                "mix",
                "mix-width",
                "mix-height",
                "mix-framerate",
                "mix-tiles",
            ]
        };
        for name in expected {
            assert!(
                properties.contains(&format!("  {name} ")),
                "{element} lacks {name}"
            );
        }
        assert!(count >= expected.len(), "{element}: {count} properties");
        for signal in [
            "room-joined",
            "room-message",
            "room-failed",
            "room-session-status",
        ] {
            assert!(
                text.contains(&format!("\"{signal}\"")),
                "{element} lacks signal {signal}"
            );
        }
        assert!(
            text.contains("\"send-message\"") && text.contains("\"send-message-to\""),
            "{element} lacks chat"
        );
    }
}

#[test]
fn roomsrc_plays_again_when_a_session_ends_while_the_stream_is_still_published() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A raw protocol participant publishes, so the test controls the publisher's side.
    let mut publisher = rt.block_on(gst_room_tests::Client::join(&url, "replay", "raw"));
    rt.block_on(publisher.send(&room_protocol::ClientMessage::Publish {
        stream: "main".into(),
        audio: true,
        video: true,
    }));
    let viewer = Viewer::new(&url, "room=replay username=viewer").start();
    let is_request = |m: &room_protocol::ServerMessage| {
        matches!(m, room_protocol::ServerMessage::SessionRequest { .. })
    };
    let first = rt.block_on(publisher.recv_until("session-request", is_request));
    let room_protocol::ServerMessage::SessionRequest {
        session,
        viewer: who,
        ..
    } = first
    else {
        unreachable!()
    };
    assert_eq!(who, "viewer");
    // The publisher's side ends the session while the stream stays published.
    rt.block_on(publisher.send(&room_protocol::ClientMessage::Stop {
        session: session.clone(),
    }));
    let second = rt.block_on(publisher.recv_until("a new session-request", is_request));
    let room_protocol::ServerMessage::SessionRequest { session: again, .. } = second else {
        unreachable!()
    };
    assert_ne!(again, session);
    assert!(
        viewer.seen().errors.is_empty(),
        "{:?}",
        viewer.seen().errors
    );
}
