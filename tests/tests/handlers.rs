//! A `room-*` signal handler may do anything, setting the pipeline to NULL included: roomsrc
//! emits its signals and posts its messages with none of its locks held (the handler's NULL
//! stops roomsrc, which takes them). Each test sets a viewer pipeline to NULL from inside one
//! signal, triggered by a raw protocol participant (or a real publisher pipeline), and checks
//! that `set_state(Null)` returns, succeeds, and that the room heard the viewer leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use gst::prelude::*;
use gst_room_tests::media::*;
use gst_room_tests::{Client, TestServer};
use room_protocol::{ClientMessage, ServerMessage};

/// Generous: a NULL that has not returned by then is a deadlock (it returns in well under a
/// second here).
const DEADLOCK: Duration = Duration::from_secs(20);

/// A viewer pipeline (roomsrc, its pads left unlinked, beside a permanent branch) whose first
/// `signal` matching `matches` sets it to NULL from inside the handler; the result of that
/// `set_state` arrives on the returned channel.
fn viewer_stopping_itself(
    url: &str,
    room: &str,
    signal: &'static str,
    matches: impl Fn(&gst::StructureRef) -> bool + Send + Sync + 'static,
) -> (
    gst::Pipeline,
    mpsc::Receiver<Result<gst::StateChangeSuccess, String>>,
) {
    let pipeline = gst::parse::launch(&format!(
        "roomsrc name=room server-url={url} room={room} username=viewer \
         audiotestsrc is-live=true wave=silence ! fakesink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let roomsrc = pipeline.by_name("room").unwrap();
    let (done, result) = mpsc::channel();
    let done = std::sync::Mutex::new(done);
    let once = AtomicBool::new(false);
    // Weak: the pipeline owns roomsrc, which owns this handler.
    let weak = pipeline.downgrade();
    roomsrc.connect(signal, false, move |args| {
        let event = args[1].get::<gst::Structure>().expect("signal arg");
        if !matches(&event) || once.swap(true, Ordering::SeqCst) {
            return None;
        }
        if let Some(pipeline) = weak.upgrade() {
            let result = pipeline
                .set_state(gst::State::Null)
                .map_err(|err| err.to_string());
            let _ = done.lock().unwrap().send(result);
        }
        None
    });
    pipeline
        .set_state(gst::State::Playing)
        .expect("viewer starts");
    (pipeline, result)
}

/// Waits for the handler's NULL to have returned, then for the room to hear the viewer leave.
fn returned_and_left(
    what: &str,
    pipeline: &gst::Pipeline,
    result: &mpsc::Receiver<Result<gst::StateChangeSuccess, String>>,
    rt: &tokio::runtime::Runtime,
    observer: &mut Client,
) {
    match result.recv_timeout(DEADLOCK) {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => panic!("NULL from inside {what} failed: {err}"),
        Err(_) => panic!("NULL from inside {what} did not return within {DEADLOCK:?}: deadlock"),
    }
    let (_, current, _) = pipeline.state(gst::ClockTime::ZERO);
    assert_eq!(current, gst::State::Null, "after NULL from inside {what}");
    rt.block_on(observer.recv_until(
        "viewer's left",
        |m| matches!(m, ServerMessage::Left { username } if username == "viewer"),
    ));
}

/// One case (`what` names it): a raw participant `bot` joins first, the viewer starts with a
/// handler on `signal`, `trigger` makes the server send what fires it.
fn case(
    what: &str,
    signal: &'static str,
    matches: impl Fn(&gst::StructureRef) -> bool + Send + Sync + 'static,
    trigger: impl AsyncFnOnce(&mut Client),
) {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let room = what.replace(' ', "-");
    let mut bot = rt.block_on(Client::join(&url, &room, "bot"));
    let (pipeline, result) = viewer_stopping_itself(&url, &room, signal, matches);
    rt.block_on(async {
        bot.recv_until(
            "viewer's joined",
            |m| matches!(m, ServerMessage::Joined { username } if username == "viewer"),
        )
        .await;
        trigger(&mut bot).await;
    });
    returned_and_left(what, &pipeline, &result, &rt, &mut bot);
}

fn publish(stream: &str) -> ClientMessage {
    ClientMessage::Publish {
        stream: stream.into(),
        audio: true,
        video: true,
    }
}

#[test]
fn null_from_room_state() {
    case("room-state", "room-state", |_| true, async |_| {});
}

#[test]
fn null_from_room_joined() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut observer = rt.block_on(Client::join(&url, "null-joined", "observer"));
    let (pipeline, result) = viewer_stopping_itself(&url, "null-joined", "room-joined", |s| {
        s.get::<&str>("username") == Ok("late")
    });
    // Kept until the end: its own LEFT would come before the viewer's.
    let _late = rt.block_on(async {
        observer
            .recv_until(
                "viewer's joined",
                |m| matches!(m, ServerMessage::Joined { username } if username == "viewer"),
            )
            .await;
        Client::join(&url, "null-joined", "late").await
    });
    returned_and_left("room-joined", &pipeline, &result, &rt, &mut observer);
}

#[test]
fn null_from_room_published() {
    case(
        "room-published",
        "room-published",
        |_| true,
        async |bot| bot.send(&publish("main")).await,
    );
}

#[test]
fn null_from_room_session_status_playing() {
    case(
        "room-session-status playing",
        "room-session-status",
        |s| s.get::<&str>("status") == Ok("playing"),
        async |bot| bot.send(&publish("main")).await,
    );
}

#[test]
fn null_from_room_session_status_stopped() {
    case(
        "room-session-status stopped",
        "room-session-status",
        |s| s.get::<&str>("status") == Ok("stopped"),
        async |bot| {
            bot.send(&publish("main")).await;
            // The viewer's player exists once its play reached the publisher.
            bot.recv_until("the viewer's session request", |m| {
                matches!(m, ServerMessage::SessionRequest { .. })
            })
            .await;
            bot.send(&ClientMessage::Unpublish {
                stream: "main".into(),
            })
            .await;
        },
    );
}

#[test]
fn null_from_room_session_status_playing_a_real_publisher() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut observer = rt.block_on(Client::join(&url, "null-media", "observer"));
    let publisher = start(&publisher_line(&url, "null-media", "bot", [200, 0, 0], ""));
    let (pipeline, result) =
        viewer_stopping_itself(&url, "null-media", "room-session-status", |s| {
            s.get::<&str>("status") == Ok("playing")
        });
    returned_and_left(
        "room-session-status playing (a gst publisher)",
        &pipeline,
        &result,
        &rt,
        &mut observer,
    );
    stop(&publisher);
}

/// NULL from inside roomsrc's speaker signals (`room-audio-levels`, `room-active-speaker`),
/// emitted by its own ticking task, with a gst publisher's tone as the voice.
fn null_from_speaker_signal(signal: &'static str) {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let room = format!("null-{signal}");
    let mut observer = rt.block_on(Client::join(&url, &room, "observer"));
    let publisher = start(&publisher_line(&url, &room, "bot", [200, 0, 0], ""));
    let (pipeline, result) = viewer_stopping_itself(&url, &room, signal, |_| true);
    returned_and_left(signal, &pipeline, &result, &rt, &mut observer);
    stop(&publisher);
}

#[test]
fn null_from_room_audio_levels() {
    null_from_speaker_signal("room-audio-levels");
}

#[test]
fn null_from_room_active_speaker() {
    null_from_speaker_signal("room-active-speaker");
}

#[test]
fn null_from_room_muted() {
    case(
        "room-muted",
        "room-muted",
        |_| true,
        async |bot| {
            bot.send(&publish("main")).await;
            bot.send(&ClientMessage::Mute {
                stream: "main".into(),
                audio_muted: true,
                video_muted: false,
            })
            .await;
        },
    );
}

#[test]
fn null_from_room_unpublished() {
    case(
        "room-unpublished",
        "room-unpublished",
        |_| true,
        async |bot| {
            bot.send(&publish("main")).await;
            bot.send(&ClientMessage::Unpublish {
                stream: "main".into(),
            })
            .await;
        },
    );
}

#[test]
fn null_from_room_message() {
    case(
        "room-message",
        "room-message",
        |_| true,
        async |bot| {
            bot.send(&ClientMessage::Message {
                to: None,
                text: "stop".into(),
            })
            .await;
        },
    );
}

#[test]
fn null_from_room_left() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut observer = rt.block_on(Client::join(&url, "null-left", "observer"));
    let leaver = rt.block_on(Client::join(&url, "null-left", "leaver"));
    let (pipeline, result) = viewer_stopping_itself(&url, "null-left", "room-left", |s| {
        s.get::<&str>("username") == Ok("leaver")
    });
    rt.block_on(async {
        observer
            .recv_until(
                "viewer's joined",
                |m| matches!(m, ServerMessage::Joined { username } if username == "viewer"),
            )
            .await;
        leaver.close().await;
    });
    returned_and_left("room-left", &pipeline, &result, &rt, &mut observer);
}

#[test]
fn null_from_room_failed() {
    init();
    let config = room_signaling::Config {
        max_participants: 1,
        ..Default::default()
    };
    let server = TestServer::start(config);
    let url = server.ws_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _only = rt.block_on(Client::join(&url, "null-failed", "only"));
    let (pipeline, result) = viewer_stopping_itself(&url, "null-failed", "room-failed", |_| true);
    match result.recv_timeout(DEADLOCK) {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => panic!("NULL from inside room-failed failed: {err}"),
        Err(_) => panic!("NULL from inside room-failed did not return within {DEADLOCK:?}"),
    }
    let (_, current, _) = pipeline.state(gst::ClockTime::ZERO);
    assert_eq!(current, gst::State::Null);
}
