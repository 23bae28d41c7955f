//! Who is speaking, with real pipelines: two publishers whose tones take turns (loud / silent
//! every 4 s), a roomsrc viewer mixing them with `mix-layout=speaker`. Its bus shows
//! `room-active-speaker` following the turns — in order, each soon after the turn starts, no
//! change in between — and the mixed picture shows the speaker's colour in the large region.
//! In a mesh room the viewer decides from the audio it plays; in an SFU room the server
//! decides for everyone (`active-speaker`), which a roomsrc that plays nothing shows too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::TestServer;
use gst_room_tests::media::*;
use room_signaling::media::{MediaConfig, SfuSettings};

const RED: Rgb = [230, 20, 20];
const BLUE: Rgb = [20, 40, 230];
const TOLERANCE: u8 = 45;
/// How long each publisher talks in turn.
const TURN: Duration = Duration::from_secs(4);
/// A generous bound on the time from a turn's start to its `room-active-speaker` (the rule's
/// own delay is about 0.5 s).
const REACTION: Duration = Duration::from_secs(1);
/// A sine at half scale: −9 dBov, a voice well above the −35 dBov of speech.
const LOUD: f64 = 0.5;

/// A publisher of a solid colour whose tone (`audiotestsrc name=tone`) can be made silent.
fn talker(url: &str, room: &str, username: &str, colour: Rgb) -> gst::Pipeline {
    start(&format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={fg} ! \
         video/x-raw,width=320,height=240,framerate=15/1 ! \
         roomsink name=sink server-url={url} room={room} username={username} \
         audiotestsrc name=tone is-live=true wave=sine volume=0 ! sink.",
        fg = argb(colour)
    ))
}

fn set_volume(talker: &gst::Pipeline, volume: f64) {
    talker
        .by_name("tone")
        .unwrap()
        .set_property("volume", volume);
}

/// What the viewer's bus carried, with the time each message was posted.
#[derive(Default)]
struct Heard {
    speakers: Vec<(Instant, Option<String>)>,
    levels: Vec<(Instant, gst::Structure)>,
    signals: usize,
    frame: Option<gst::Sample>,
}

/// `roomsrc mix=true mix-layout=speaker` at 320×240; records its speaker and level messages
/// (a sync handler: the time is the posting time) and the latest mixed frame.
fn viewer(url: &str, room: &str) -> (gst::Pipeline, Arc<Mutex<Heard>>) {
    let pipeline = gst::parse::launch(&format!(
        "roomsrc name=room mix=true mix-layout=speaker mix-width=320 mix-height=240 \
         server-url={url} room={room} username=viewer \
         room.video ! videoconvert ! video/x-raw,format=RGB ! appsink name=v sync=false \
         room.audio ! fakesink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let heard = listen(&pipeline);
    keep_frames(&pipeline, &heard);
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, heard)
}

/// A roomsrc that plays nobody (`participant=nobody`): no audio, no levels of its own.
fn listener(url: &str, room: &str) -> (gst::Pipeline, Arc<Mutex<Heard>>) {
    let pipeline = gst::Pipeline::new();
    let roomsrc = gst::ElementFactory::make("roomsrc")
        .name("room")
        .property("server-url", url)
        .property("room", room)
        .property("username", "listener")
        .property("participant", "nobody")
        .build()
        .unwrap();
    pipeline.add(&roomsrc).unwrap();
    let heard = listen(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, heard)
}

/// Records the `room-active-speaker` and `room-audio-levels` messages of `pipeline`'s roomsrc
/// (named `room`; a sync handler: the time is the posting time) and counts the signals.
fn listen(pipeline: &gst::Pipeline) -> Arc<Mutex<Heard>> {
    let heard = Arc::new(Mutex::new(Heard::default()));
    let record = heard.clone();
    pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
        if let gst::MessageView::Element(e) = msg.view()
            && let Some(s) = e.structure()
        {
            let now = Instant::now();
            let mut heard = record.lock().unwrap();
            match s.name().as_str() {
                "room-active-speaker" => {
                    let username = s.get::<Option<String>>("username").ok().flatten();
                    heard.speakers.push((now, username));
                }
                "room-audio-levels" => heard.levels.push((now, s.to_owned())),
                _ => {}
            }
        }
        gst::BusSyncReply::Pass
    });
    let record = heard.clone();
    pipeline
        .by_name("room")
        .unwrap()
        .connect("room-active-speaker", false, move |_| {
            record.lock().unwrap().signals += 1;
            None
        });
    heard
}

/// Attaches the mix viewer's appsink, keeping the latest frame.
fn keep_frames(pipeline: &gst::Pipeline, heard: &Arc<Mutex<Heard>>) {
    let record = heard.clone();
    let sink = pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                record.lock().unwrap().frame = Some(sample);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// The usernames in a `room-audio-levels` message.
fn level_names(levels: &gst::StructureRef) -> Vec<String> {
    let array = levels.get::<gst::Array>("levels").unwrap();
    array
        .iter()
        .map(|v| v.get::<gst::Structure>().unwrap())
        .map(|s| s.get::<String>("username").unwrap())
        .collect()
}

/// The colour in the middle of the speaker layout's large region (the top three quarters of
/// the picture) and of the strip below.
fn large_and_strip(sample: &gst::Sample) -> (Option<Rgb>, Option<Rgb>) {
    (
        region_colour(sample, (0.4, 0.2, 0.6, 0.5)),
        region_colour(sample, (0.45, 0.8, 0.55, 0.88)),
    )
}

#[test]
fn the_speaker_follows_alternating_voices_and_is_shown_large() {
    init();
    let server = TestServer::start(room_signaling::Config {
        max_participants: 4,
        ..Default::default()
    });
    let listener_heard = follow_the_turns(&server.ws_url(), "talk");
    assert!(
        listener_heard.is_empty(),
        "mesh: a roomsrc that plays nobody hears no speaker: {listener_heard:?}"
    );
}

/// In an SFU room the server decides: the viewer shows its verdicts, and so does a roomsrc
/// that plays nobody (it has no levels of its own), in the same order.
#[test]
fn in_an_sfu_room_the_server_says_who_speaks() {
    init();
    let server = TestServer::start(room_signaling::Config {
        max_participants: 4,
        media: MediaConfig::Sfu(SfuSettings {
            bind: "0.0.0.0:0".parse().unwrap(),
            tcp_bind: None,
            advertised: Vec::new(),
        }),
        ..Default::default()
    });
    let listener_heard = follow_the_turns(&server.ws_url(), "talk");
    let expected = [Some("alice"), Some("bob"), Some("alice"), Some("bob"), None];
    let names: Vec<Option<&str>> = listener_heard.iter().map(|(_, n)| n.as_deref()).collect();
    assert_eq!(names, expected, "the listener hears the server's verdicts");
}

/// Alice (red) and bob (blue) talk in turns, twice each, then fall silent; a mix viewer and a
/// listener (plays nobody) are in `room`. Checks the viewer's `room-active-speaker` messages,
/// levels and pictures; returns the listener's speakers.
fn follow_the_turns(url: &str, room: &str) -> Vec<(Instant, Option<String>)> {
    let url = url.to_owned();
    let (pipeline, heard) = viewer(&url, room);
    let (listening, listener_heard) = listener(&url, room);
    let alice = talker(&url, room, "alice", RED);
    let bob = talker(&url, room, "bob", BLUE);

    // Both silent until the viewer gets the levels of both.
    let deadline = Instant::now() + MEDIA_WAIT;
    loop {
        fail_on_error(&pipeline);
        let both = heard
            .lock()
            .unwrap()
            .levels
            .last()
            .is_some_and(|(_, l)| level_names(l) == ["alice", "bob"]);
        if both {
            break;
        }
        assert!(Instant::now() < deadline, "no levels of alice and bob");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        heard.lock().unwrap().speakers.is_empty(),
        "a speaker while both were silent"
    );

    let turns = [
        ("alice", &alice, &bob, RED, BLUE),
        ("bob", &bob, &alice, BLUE, RED),
    ]
    .repeat(2);
    let mut starts = Vec::new();
    let mut pictures = Vec::new();
    for (name, talking, quiet, colour, other) in &turns {
        set_volume(quiet, 0.0);
        set_volume(talking, LOUD);
        starts.push(Instant::now());
        // The cut comes within 2 s of the previous one; look late in the turn.
        std::thread::sleep(TURN - Duration::from_millis(500));
        fail_on_error(&pipeline);
        let frame = heard.lock().unwrap().frame.clone().expect("mixed frames");
        pictures.push((*name, large_and_strip(&frame), *colour, *other));
        std::thread::sleep(Duration::from_millis(500));
    }
    set_volume(&alice, 0.0);
    set_volume(&bob, 0.0);
    let silence = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    fail_on_error(&pipeline);

    let heard = heard.lock().unwrap();
    let names: Vec<Option<&str>> = heard.speakers.iter().map(|(_, n)| n.as_deref()).collect();
    let expected = [Some("alice"), Some("bob"), Some("alice"), Some("bob"), None];
    assert_eq!(names, expected, "the speakers in order, nothing in between");
    let mut since_turn = Vec::new();
    for (i, start) in starts.iter().chain([&silence]).enumerate() {
        let after = heard.speakers[i].0.saturating_duration_since(*start);
        since_turn.push(after);
        assert!(heard.speakers[i].0 > *start, "change {i} before its turn");
    }
    println!("room-active-speaker after each turn began: {since_turn:?}");
    for (i, after) in since_turn[..4].iter().enumerate() {
        assert!(
            *after <= REACTION,
            "turn {i}: the change came {after:?} later"
        );
    }
    // Silence: nobody after 1.5 s.
    assert!(
        since_turn[4] >= Duration::from_millis(1400)
            && since_turn[4] <= Duration::from_millis(2500)
    );
    assert_eq!(heard.signals, heard.speakers.len(), "a signal per message");

    // Levels: at most ten a second, the talker speaking.
    let span = heard.levels.last().unwrap().0 - heard.levels[0].0;
    let rate = (heard.levels.len() - 1) as f64 / span.as_secs_f64();
    assert!(rate <= 10.5, "{rate} level messages per second");
    let speaking_alice = heard.levels.iter().any(|(at, l)| {
        *at > starts[0] + REACTION && *at < starts[1] && {
            let array = l.get::<gst::Array>("levels").unwrap();
            array.iter().any(|v| {
                let s = v.get::<gst::Structure>().unwrap();
                s.get::<String>("username").unwrap() == "alice"
                    && s.get::<bool>("speaking").unwrap()
                    && s.get::<f64>("level").unwrap() > -20.0
            })
        }
    });
    assert!(speaking_alice, "alice's levels never said she speaks");

    for (name, (large, strip), colour, other) in pictures {
        assert!(
            large.is_some_and(|c| close_to(c, colour, TOLERANCE)),
            "{name} speaking: large region {large:?}, expected {colour:?}"
        );
        assert!(
            strip.is_some_and(|c| close_to(c, other, TOLERANCE)),
            "{name} speaking: strip {strip:?}, expected {other:?}"
        );
    }
    drop(heard);
    stop(&alice);
    stop(&bob);
    pipeline.set_state(gst::State::Null).unwrap();
    fail_on_error(&listening);
    listening.set_state(gst::State::Null).unwrap();
    let heard = listener_heard.lock().unwrap();
    assert!(heard.levels.is_empty(), "the listener plays nobody");
    assert_eq!(heard.signals, heard.speakers.len(), "a signal per message");
    heard.speakers.clone()
}

/// A publisher that sends no RFC 6464 levels (roomsink given already-encoded Opus: nothing
/// measured it before the encoder) is measured by roomsrc from the decoded audio.
#[test]
fn levels_without_the_header_extension_are_measured_from_the_decoded_audio() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let (pipeline, heard) = viewer(&url, "encoded");
    let publisher = start(&format!(
        "roomsink name=sink server-url={url} room=encoded username=carol \
         audiotestsrc is-live=true wave=sine volume={LOUD} ! opusenc ! sink."
    ));
    let deadline = Instant::now() + MEDIA_WAIT;
    loop {
        fail_on_error(&pipeline);
        let speaks = heard
            .lock()
            .unwrap()
            .speakers
            .last()
            .map(|(_, s)| s.clone());
        if speaks == Some(Some("carol".to_owned())) {
            break;
        }
        assert!(Instant::now() < deadline, "carol never became the speaker");
        std::thread::sleep(Duration::from_millis(100));
    }
    let heard_levels = heard.lock().unwrap().levels.last().unwrap().1.clone();
    let array = heard_levels.get::<gst::Array>("levels").unwrap();
    let carol = array
        .iter()
        .next()
        .unwrap()
        .get::<gst::Structure>()
        .unwrap();
    let level = carol.get::<f64>("level").unwrap();
    // A sine at half scale: −9 dBov (RMS), measured here as the extension would carry it.
    assert!((-11.0..=-7.0).contains(&level), "carol at {level} dBov");
    stop(&publisher);
    pipeline.set_state(gst::State::Null).unwrap();
}
