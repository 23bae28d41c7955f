//! The signals both elements have: one per room event, and the chat action signals.

use gst::glib;
use gst::prelude::*;

use super::CAT;
use crate::client::{ChatError, ChatSent, RoomClient};

/// One signal per room event, `(GstElement *element, GstStructure *event)`, emitted after the
/// bus message of the same name is posted. The structures' fields are in the module doc.
///
/// Threads: every `room-*` signal except `room-session-status` with `playing` / `stopped` is
/// emitted on a thread of the plugin's runtime (threads named `gst-room`), in the order the
/// participant saw the events, never with an element lock held. roomsrc's `playing` and
/// `stopped` come from the thread that adds or ends the player, once it has released roomsrc's
/// locks: a thread of the same runtime, or the application's thread during a state change;
/// roomsink's `publishing`, `failed` and `unpublished` from the thread that starts or stops
/// webrtcsink's signaller. A handler may set the element's state (to NULL included): it is not
/// waited for by itself.
pub fn event_signals() -> Vec<glib::subclass::Signal> {
    vec![
        /**
         * GstRoomSink::room-state / GstRoomSrc::room-state:
         * @event: `room-state` {room, username, capacity (u32), participants (strv, the others)}
         *
         * The room as found on joining, and again after every rejoin; also emitted for an
         * element that starts while its participant (shared) is already in the room.
         */
        event_signal("room-state"),
        /**
         * GstRoomSink::room-joined / GstRoomSrc::room-joined:
         * @event: `room-joined` {username}
         *
         * Someone else joined the room.
         */
        event_signal("room-joined"),
        /**
         * GstRoomSink::room-left / GstRoomSrc::room-left:
         * @event: `room-left` {username}
         *
         * Someone else left or dropped; their streams were unpublished first.
         */
        event_signal("room-left"),
        /**
         * GstRoomSink::room-published / GstRoomSrc::room-published:
         * @event: `room-published` {username, stream, audio, video}
         *
         * Someone else announced a stream.
         */
        event_signal("room-published"),
        /**
         * GstRoomSink::room-unpublished / GstRoomSrc::room-unpublished:
         * @event: `room-unpublished` {username, stream}
         *
         * Someone else withdrew a stream (or left).
         */
        event_signal("room-unpublished"),
        /**
         * GstRoomSink::room-muted / GstRoomSrc::room-muted:
         * @event: `room-muted` {username, stream, audio-muted, video-muted}
         *
         * The mute state of someone else's stream changed.
         */
        event_signal("room-muted"),
        /**
         * GstRoomSink::room-message / GstRoomSrc::room-message:
         * @event: `room-message` {from, to (direct messages only), text, ts (ms since epoch)}
         *
         * A chat message, stamped by the server; own room messages come back too.
         */
        event_signal("room-message"),
        /**
         * GstRoomSink::room-failed / GstRoomSrc::room-failed:
         * @event: `room-failed` {reason, detail}
         *
         * The join was refused (room-full, name-taken, unauthorized, invalid-name) or the
         * server was unreachable; an element error with the same reason follows.
         */
        event_signal("room-failed"),
        /**
         * GstRoomSink::room-session-status / GstRoomSrc::room-session-status:
         * @event: `room-session-status` {status, stream, peer, reason (for failed)}
         *
         * Progress of the participant (connecting, joined, reconnecting, failed), of roomsink's
         * stream (publishing, failed with a reason such as stream-exists, unpublished,
         * session-requested) and of roomsrc's players (playing, stopped).
         */
        event_signal("room-session-status"),
    ]
}

/// roomsrc's signals about who speaks, `(GstElement *element, GstStructure *event)`, emitted
/// after the bus message of the same name, on a thread of the plugin's runtime, with no lock
/// of roomsrc held. Fields in the module doc.
pub fn speaker_signals() -> Vec<glib::subclass::Signal> {
    vec![
        /**
         * GstRoomSrc::room-active-speaker:
         * @event: `room-active-speaker` {username (absent: nobody speaks now), previous}
         *
         * The active speaker changed: someone spoke louder than the others for about
         * half a second, or the speaker was silent for 1.5 s (or left). In mesh rooms roomsrc
         * decides from the levels of the audio it plays (the RFC 6464 levels the publisher
         * sends, or measured), with the hysteresis of room_protocol::speaker; in rooms whose
         * media goes through the server (`--media sfu`) the server decides with the same rule
         * for everyone, and roomsrc posts its verdicts (the `active-speaker` protocol event).
         */
        event_signal("room-active-speaker"),
        /**
         * GstRoomSrc::room-audio-levels:
         * @event: `room-audio-levels` {levels (array of `level` {username, level (dBov,
         *   -127.0..0.0), speaking (bool)}), speaker (absent: nobody)}
         *
         * Every participant's audio level over the last 400 ms, ten times a second while
         * roomsrc plays someone's audio.
         */
        event_signal("room-audio-levels"),
    ]
}

fn event_signal(name: &str) -> glib::subclass::Signal {
    glib::subclass::Signal::builder(name)
        .param_types([gst::Structure::static_type()])
        .build()
}

/// How an element's chat signals find its participant: `None` when not in a room.
pub type ClientOf = fn(&glib::Value) -> Option<RoomClient>;

/// The chat action signals both elements have, `send-message(text)` and
/// `send-message-to(username, text)`; `client_of` gets the participant from the instance.
pub fn chat_signals(client_of: ClientOf) -> Vec<glib::subclass::Signal> {
    vec![
        /**
         * send-message:
         * @text: the chat text (at most 4 KiB)
         *
         * Sends a chat message to everyone in the room and waits (a round trip, at most 5 s)
         * for the room server's verdict. Accepted, it comes back as room-message. Refused —
         * by the server (`rate-limited`, `text-too-long`, `unauthorized`, ...), or because
         * the element is not in a room — the message reaches nobody, the call returns false,
         * and a warning is posted whose text starts with the reason, e.g. "rate-limited: too
         * many chat messages: at most 10 per second (bursts of 20)".
         *
         * While the connection to the server is lost and being retried, up to 16 messages are
         * held and sent after the rejoin (the call returns true; a refusal then comes as a
         * "room server refused a request" warning); beyond that the message is dropped, with
         * a warning, and the call returns false.
         *
         * Returns: true when the server accepted the message (or it is held for the rejoin),
         * false when it was refused (the reason is in the posted warning)
         */
        glib::subclass::Signal::builder("send-message")
            .param_types([String::static_type()])
            .return_type::<bool>()
            .action()
            .class_handler(move |args| {
                let text = args[1].get::<String>().expect("signal arg");
                Some(send_chat(&args[0], client_of(&args[0]), None, text).to_value())
            })
            .build(),
        /**
         * send-message-to:
         * @username: the only recipient
         * @text: the chat text (at most 4 KiB)
         *
         * Sends a direct chat message to one participant; it comes back as room-message with
         * `to` set, to the recipient and the sender only. A username not in the room is
         * refused (`unknown-participant`).
         *
         * Verdict, warning and holding during a reconnect as for send-message.
         *
         * Returns: true when the server accepted the message (or it is held for the rejoin),
         * false when it was refused (the reason is in the posted warning)
         */
        glib::subclass::Signal::builder("send-message-to")
            .param_types([String::static_type(), String::static_type()])
            .return_type::<bool>()
            .action()
            .class_handler(move |args| {
                let to = args[1].get::<String>().expect("signal arg");
                let text = args[2].get::<String>().expect("signal arg");
                Some(send_chat(&args[0], client_of(&args[0]), Some(to), text).to_value())
            })
            .build(),
    ]
}

fn send_chat(
    element: &glib::Value,
    client: Option<RoomClient>,
    to: Option<String>,
    text: String,
) -> bool {
    let refused = match client.map(|c| c.send_chat(to, text)) {
        Some(Ok(ChatSent::Accepted | ChatSent::Held)) => return true,
        Some(Err(err)) => err,
        None => ChatError::Gone,
    };
    gst::warning!(CAT, "{refused}");
    if let Ok(element) = element.get::<gst::Element>() {
        gst::element_warning!(element, gst::ResourceError::Write, ("{}", refused));
    }
    false
}
