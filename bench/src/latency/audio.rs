//! Audio latency of gst-gst: GStreamer's `audiolatency` sends a tick every second through the
//! room and times its return, in one pipeline:
//!
//! ```text
//! audiolatency ! audioconvert ! roomsink (apub)  ──room──  roomsrc participant=apub ─audio→ audioconvert ! audioresample ! audiolatency
//! ```
//!
//! The anchor is the same loop through stock webrtcsink → webrtcsrc. audiolatency takes the
//! tick when it arrives (after the jitterbuffer and the decoder; no audio sink's buffer): the
//! figure is capture → decoded audio.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gst::prelude::*;

use super::super::Running;

const ROOM: &str = "audio-latency";
const PUBLISHER: &str = "apub";
/// Ticks skipped at the start (the first arrive while the session settles).
const WARMUP_TICKS: usize = 2;

/// The loop through a room of the server at `url`: `seconds` ticks, in ms.
pub fn through_room(url: &str, seconds: u32, wait: Duration) -> anyhow::Result<Vec<f64>> {
    let pipeline = gstroom::app::parse_pipeline(&format!(
        "audiolatency name=al ! audioconvert ! audioresample ! \
         roomsink server-url={url} room={ROOM} username={PUBLISHER} \
         audioconvert name=back ! audioresample ! al."
    ))?;
    let pipeline = Running::start(pipeline)?;
    super::super::wait_for_element_message(&pipeline, "room-session-status", wait, |s| {
        s.get::<String>("status").is_ok_and(|v| v == "publishing")
    })
    .context("the audio publisher")?;
    let roomsrc = gst::ElementFactory::make("roomsrc")
        .property("server-url", url)
        .property("room", ROOM)
        .property("username", "aview")
        .property("participant", PUBLISHER)
        .build()?;
    close_loop(&pipeline, roomsrc, seconds, wait)
}

/// The loop through stock webrtcsink → webrtcsrc and the stock signalling server at `url`.
pub fn through_stock(url: &str, seconds: u32, wait: Duration) -> anyhow::Result<Vec<f64>> {
    let pipeline = gstroom::app::parse_pipeline(&format!(
        "audiolatency name=al ! audioconvert ! audioresample ! \
         webrtcsink name=sink video-caps=video/x-vp8 audio-caps=audio/x-opus signaller::uri={url} \
         audioconvert name=back ! audioresample ! al."
    ))?;
    let sink = pipeline.by_name("sink").expect("named sink");
    sink.set_property("stun-server", None::<String>);
    let pipeline = Running::start(pipeline)?;
    let producer = super::anchor_peer_id(&pipeline, &sink, wait)?;
    let src = super::anchor_webrtcsrc(url, &producer)?;
    close_loop(&pipeline, src, seconds, wait)
}

/// Adds `src` (a bin with decoded `audio*` pads) to the running pipeline, links its audio back
/// into audiolatency, and collects `seconds` measurements after the warm-up.
fn close_loop(
    pipeline: &Running,
    src: gst::Element,
    seconds: u32,
    wait: Duration,
) -> anyhow::Result<Vec<f64>> {
    let back = pipeline
        .by_name("back")
        .and_then(|e| e.static_pad("sink"))
        .expect("the back branch");
    let weak = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        if !pad.name().starts_with("audio") || back.is_linked() {
            return;
        }
        if let Err(err) = pad.link(&back)
            && let Some(pipeline) = weak.upgrade()
        {
            gst::element_error!(
                pipeline,
                gst::CoreError::Pad,
                ("cannot link the audio back: {err:?}")
            );
        }
    });
    pipeline.add(&src)?;
    src.sync_state_with_parent()?;
    let al = pipeline.by_name("al").expect("named audiolatency");
    let mut samples = Vec::new();
    let mut last = 0i64;
    let start = Instant::now();
    while samples.len() < WARMUP_TICKS + seconds as usize {
        super::super::check_bus(pipeline)?;
        let latency = al.property::<i64>("last-latency");
        if latency != last && latency > 0 {
            samples.push(latency as f64 / 1000.0);
            last = latency;
        }
        if start.elapsed() > wait + Duration::from_secs(seconds as u64) {
            if samples.len() <= WARMUP_TICKS {
                bail!("no audio tick came back within {:?}", start.elapsed());
            }
            eprintln!("audio: only {} ticks came back", samples.len());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("audio ticks (ms): {samples:.1?}");
    Ok(samples.split_off(WARMUP_TICKS.min(samples.len())))
}
