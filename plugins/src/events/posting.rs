//! Room events as bus messages and signals: what an element posts, and the task that posts a
//! participant's events.

use gst::glib;
use gst::prelude::*;

use super::RoomStatus;
use room_protocol::ServerMessage;

use crate::client::{Event, RoomClient};
use crate::subscription::Subscription;

/// Posts `event` on the bus and emits the signal of the same name.
pub fn post(element: &gst::Element, event: gst::Structure) {
    let name = event.name().to_string();
    let _ = element.post_message(
        gst::message::Element::builder(event.clone())
            .src(element)
            .build(),
    );
    element.emit_by_name::<()>(&name, &[&event]);
}

/// The session-status event.
pub fn session_status(status: &str, stream: Option<&str>, peer: Option<&str>) -> gst::Structure {
    gst::Structure::builder("room-session-status")
        .field("status", status)
        .field_if_some("stream", stream)
        .field_if_some("peer", peer)
        .build()
}

/// The bus message / signal a room event becomes, if it is one for applications.
pub fn event_structure(event: &Event) -> Option<gst::Structure> {
    let Event::Room(msg) = event else {
        return None;
    };
    let s = match msg {
        ServerMessage::State {
            room,
            username,
            capacity,
            participants,
            ..
        } => gst::Structure::builder("room-state")
            .field("room", room)
            .field("username", username)
            .field("capacity", *capacity as u32)
            .field(
                "participants",
                participants
                    .iter()
                    .map(|p| p.username.clone())
                    .collect::<Vec<_>>(),
            )
            .build(),
        ServerMessage::Joined { username } => gst::Structure::builder("room-joined")
            .field("username", username)
            .build(),
        ServerMessage::Left { username } => gst::Structure::builder("room-left")
            .field("username", username)
            .build(),
        ServerMessage::Published { username, stream } => gst::Structure::builder("room-published")
            .field("username", username)
            .field("stream", &stream.stream)
            .field("audio", stream.audio)
            .field("video", stream.video)
            .build(),
        ServerMessage::Unpublished { username, stream } => {
            gst::Structure::builder("room-unpublished")
                .field("username", username)
                .field("stream", stream)
                .build()
        }
        ServerMessage::Muted {
            username,
            stream,
            audio_muted,
            video_muted,
        } => gst::Structure::builder("room-muted")
            .field("username", username)
            .field("stream", stream)
            .field("audio-muted", audio_muted)
            .field("video-muted", video_muted)
            .build(),
        ServerMessage::Message { from, to, text, ts } => gst::Structure::builder("room-message")
            .field("from", from)
            .field_if_some("to", to.as_ref())
            .field("text", text)
            .field("ts", ts)
            .build(),
        _ => return None,
    };
    Some(s)
}

/// The `room-failed` event.
pub fn failed(reason: &str, detail: &str) -> gst::Structure {
    gst::Structure::builder("room-failed")
        .field("reason", reason)
        .field("detail", detail)
        .build()
}

/// Posts a refused join or unreachable server as the element error it is (after the
/// `room-failed` event): the message carries the reason, e.g. "room-full: room demo is full".
pub fn post_fatal(element: &gst::Element, reason: &str, detail: &str) {
    post(element, failed(reason, detail));
    let error = if reason == "unauthorized" {
        gst::ResourceError::NotAuthorized
    } else {
        gst::ResourceError::OpenRead
    };
    gst::element_error!(
        element,
        error,
        ("{}: {}", reason, detail),
        ["room join failed"]
    );
}

/// Posts every room event of `client` on `element`'s bus until stopped; a refused join or an
/// unreachable server becomes an element error. The events come on the plugin runtime's
/// threads: the `room-*` signals are emitted there.
pub fn spawn_poster(element: &gst::Element, client: &RoomClient) -> Subscription {
    let element = element.downgrade();
    Subscription::spawn(client, move |event| {
        // A weak ref: the pipeline owns the element, this task must not keep it alive.
        let alive = element.upgrade().map(|element| post_event(&element, event));
        async move { alive.unwrap_or(false) }
    })
}

/// Posts one room event; false when the element should stop listening (fatal).
fn post_event(element: &gst::Element, event: Event) -> bool {
    if let Some(structure) = event_structure(&event) {
        post(element, structure);
        if let Event::Room(
            ServerMessage::State { .. } | ServerMessage::Joined { .. } | ServerMessage::Left { .. },
        ) = event
        {
            element.notify("participants");
        }
        return true;
    }
    match event {
        Event::Room(ServerMessage::Error { code, message }) => gst::element_warning!(
            element,
            gst::ResourceError::Write,
            ("room server refused a request: {}", code),
            ["{}", message]
        ),
        Event::Status(status) => {
            element.notify("status");
            element.notify("participants");
            let nick = RoomStatus::from(status);
            let nick =
                glib::EnumValue::from_value(&nick.to_value()).map(|(_, v)| v.nick().to_owned());
            post(
                element,
                session_status(&nick.unwrap_or_default(), None, None),
            );
        }
        Event::Fatal(failure) => {
            element.notify("status");
            post_fatal(element, failure.reason(), failure.detail());
            return false;
        }
        _ => {}
    }
    true
}
