//! Running a pipeline the way `gst-launch-1.0 -e` does, plus the room: events printed as
//! readable lines, stdin lines sent as chat, a status line every second, and Ctrl-C that sends
//! EOS and waits for it, so recordings are finalized.
//!
//! Building (parse errors, missing elements) and running (bus errors) fail differently: the
//! first before anything starts, the second with the element's path and reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures::StreamExt;
use gst::prelude::*;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// How a run behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No status line.
    pub quiet: bool,
    /// Send EOS after this long (recordings of a fixed length).
    pub duration: Option<Duration>,
    /// Read chat lines from stdin.
    pub chat: bool,
    /// Access token set on the room elements (see [`set_room_token`]); redacted in `Debug`.
    pub token: Option<room_signaling::protocol::Secret>,
}

/// Sets `token` on every roomsink and roomsrc of `pipeline`. Setting the property, rather
/// than writing `token=` into the description, keeps the token out of GStreamer's parse logs.
pub fn set_room_token(pipeline: &gst::Pipeline, token: &str) {
    for element in room_elements(pipeline) {
        element.set_property("token", token);
    }
}

/// Runs `pipeline` until EOS (Ok), an error (Err with the reason), or Ctrl-C (EOS first).
pub async fn run(pipeline: &gst::Pipeline, options: RunOptions) -> anyhow::Result<()> {
    let counters = PadCounters::install(pipeline);
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut messages = bus.stream();
    if pipeline.set_state(gst::State::Playing).is_err() {
        let reason = first_error(&bus).unwrap_or_else(|| "the pipeline refused to start".into());
        let _ = pipeline.set_state(gst::State::Null);
        return Err(anyhow!(reason));
    }
    let mut stdin = stdin_lines(options.chat);
    // One SIGINT stream for the whole run: a signal arriving while a bus message is handled
    // is queued, not lost.
    let mut interrupts = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(
        options
            .duration
            .unwrap_or(Duration::from_secs(u64::MAX / 4)),
    );
    tokio::pin!(deadline);
    let mut stopping = false;

    let result = loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { break Ok(()) };
                match msg.view() {
                    gst::MessageView::Eos(_) => break Ok(()),
                    gst::MessageView::Error(err) => break Err(anyhow!(describe_error(err))),
                    gst::MessageView::Element(e) => {
                        if let (Some(s), Some(src)) = (e.structure(), msg.src()) && let Some(line) = describe_event(s) {
                            println!("{}: {line}", src.name());
                        }
                    }
                    // A room element's warnings say what did not happen and why (a chat
                    // message refused as `rate-limited`, ...).
                    gst::MessageView::Warning(w) => {
                        if let Some(src) = msg.src().filter(|s| is_room_element(s)) {
                            eprintln!("{}: {}", src.name(), w.error());
                        }
                    }
                    _ => {}
                }
            }
            Some(line) = stdin.recv() => send_chat(pipeline, &line),
            _ = interrupts.recv() => {
                if stopping {
                    eprintln!("second Ctrl-C: stopping without waiting for EOS");
                    break Ok(());
                }
                eprintln!("Ctrl-C: sending EOS and waiting for it (Ctrl-C again to force)");
                stopping = true;
                pipeline.send_event(gst::event::Eos::new());
            }
            _ = &mut deadline, if !stopping => {
                stopping = true;
                pipeline.send_event(gst::event::Eos::new());
            }
            _ = ticker.tick(), if !options.quiet => eprintln!("{}", status_line(pipeline, &counters)),
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Lines typed on stdin. Read on a plain thread: a tokio stdin read cannot be cancelled, and
/// the runtime would wait for it at exit (so the command would hang until Enter).
fn stdin_lines(enabled: bool) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    if enabled {
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

fn first_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(describe_error(err)),
        _ => None,
    }
}

fn describe_error(err: &gst::message::Error) -> String {
    let src = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    match err.debug() {
        Some(debug) => format!("{}: {} ({debug})", src, err.error()),
        None => format!("{}: {}", src, err.error()),
    }
}

/// A room event as one readable line; `None` for other element messages.
pub fn describe_event(s: &gst::StructureRef) -> Option<String> {
    let get = |field: &str| s.get::<String>(field).unwrap_or_default();
    let flag = |field: &str, on: &str, off: &str| {
        if s.get::<bool>(field).unwrap_or(false) {
            on.to_owned()
        } else {
            off.to_owned()
        }
    };
    Some(match s.name().as_str() {
        "room-state" => {
            let others = s.get::<Vec<String>>("participants").unwrap_or_default();
            let others = if others.is_empty() {
                "nobody else".to_owned()
            } else {
                others.join(", ")
            };
            format!(
                "in room {} as {} with {others}",
                get("room"),
                get("username")
            )
        }
        "room-joined" => format!("joined: {}", get("username")),
        "room-left" => format!("left: {}", get("username")),
        "room-published" => format!(
            "published: {}/{} ({})",
            get("username"),
            get("stream"),
            [flag("audio", "audio", ""), flag("video", "video", "")]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("+")
        ),
        "room-unpublished" => format!("unpublished: {}/{}", get("username"), get("stream")),
        "room-muted" => format!(
            "muted: {}/{} audio {} video {}",
            get("username"),
            get("stream"),
            flag("audio-muted", "muted", "on"),
            flag("video-muted", "muted", "on")
        ),
        "room-message" => match s.get::<String>("to") {
            Ok(to) => format!("message from {} to {to}: {}", get("from"), get("text")),
            Err(_) => format!("message from {}: {}", get("from"), get("text")),
        },
        "room-failed" => format!("failed: {}: {}", get("reason"), get("detail")),
        "room-active-speaker" => match s.get::<String>("username") {
            Ok(username) => format!("speaking: {username}"),
            Err(_) => "speaking: nobody".to_owned(),
        },
        "room-session-status" => {
            let target = match (s.get::<String>("peer").ok(), s.get::<String>("stream").ok()) {
                (Some(peer), Some(stream)) => format!(" {peer}/{stream}"),
                (None, Some(stream)) => format!(" {stream}"),
                _ => String::new(),
            };
            format!("status: {}{target}", get("status"))
        }
        _ => return None,
    })
}

/// Sends a stdin line as chat through the first room element: `@name text` to one participant.
fn send_chat(pipeline: &gst::Pipeline, line: &str) {
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    let Some(sink) = room_elements(pipeline).into_iter().next() else {
        return eprintln!("chat needs a roomsink or roomsrc in the pipeline");
    };
    // A message that is not sent (refused by the server, or not in a room) comes back as the
    // element's warning, printed with the reason by `run`.
    let _sent = match line.strip_prefix('@').and_then(|rest| rest.split_once(' ')) {
        Some((to, text)) => sink.emit_by_name::<bool>("send-message-to", &[&to, &text]),
        None => sink.emit_by_name::<bool>("send-message", &[&line]),
    };
}

/// roomsink or roomsrc (their warnings are the user's business; webrtcbin's are not).
fn is_room_element(object: &gst::Object) -> bool {
    object
        .downcast_ref::<gst::Element>()
        .and_then(|e| e.factory())
        .is_some_and(|f| matches!(f.name().as_str(), "roomsink" | "roomsrc"))
}

/// Every roomsink and roomsrc in the pipeline.
fn room_elements(pipeline: &gst::Pipeline) -> Vec<gst::Element> {
    pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| is_room_element(e.upcast_ref()))
        .collect()
}

/// Buffers per room pad since the last status line (fps), counted by pad probes.
#[derive(Clone, Default)]
struct PadCounters(Arc<Mutex<BTreeMap<String, u64>>>);

impl PadCounters {
    fn install(pipeline: &gst::Pipeline) -> PadCounters {
        let counters = PadCounters::default();
        for element in room_elements(pipeline) {
            for pad in element.pads() {
                counters.watch(&element, &pad);
            }
            let watcher = counters.clone();
            element.connect_pad_added(move |element, pad| watcher.watch(element, pad));
        }
        counters
    }

    fn watch(&self, element: &gst::Element, pad: &gst::Pad) {
        if !pad.name().starts_with("video") {
            return;
        }
        let key = format!("{}.{}", element.name(), pad.name());
        let map = self.0.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *map.lock().unwrap().entry(key.clone()).or_default() += 1;
            gst::PadProbeReturn::Ok
        });
    }

    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn status_line(pipeline: &gst::Pipeline, counters: &PadCounters) -> String {
    let mut parts = Vec::new();
    if let Some(element) = room_elements(pipeline).into_iter().next() {
        let status = element.property_value("status");
        let status = gst::glib::EnumValue::from_value(&status)
            .map(|(_, v)| v.nick().to_owned())
            .unwrap_or_default();
        let participants: Vec<String> = element.property("participants");
        parts.push(format!("{status}, {} in room", participants.len()));
    }
    for (pad, frames) in counters.take() {
        parts.push(format!("{pad} {frames} fps"));
    }
    format!("[status] {}", parts.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::describe_event;

    #[test]
    fn the_active_speaker_is_a_line_and_the_levels_are_not() {
        gst::init().unwrap();
        let speaker = gst::Structure::builder("room-active-speaker")
            .field("username", "alice")
            .build();
        assert_eq!(describe_event(&speaker).as_deref(), Some("speaking: alice"));
        let nobody = gst::Structure::builder("room-active-speaker")
            .field("previous", "alice")
            .build();
        assert_eq!(describe_event(&nobody).as_deref(), Some("speaking: nobody"));
        let levels = gst::Structure::new_empty("room-audio-levels");
        assert_eq!(describe_event(&levels), None, "ten a second: not printed");
    }
}
