//! The WebSocket protocol of the original room API: the subset of Flashphoner Web Call Server's
//! protocol that its Web SDK (`@flashphoner/websdk`, `roomApi`) speaks for a conference, as the
//! gst-room server serves it on its root path (`ws://HOST:PORT`, the URL people type into that
//! SDK's example page).
//!
//! Every frame is one JSON object `{"message": NAME, "data": [ARGS...]}`: a name and a list of
//! arguments, almost always one object. [`ClientMessage`] and [`ServerMessage`] are the frames
//! as typed enums (serde's adjacent tagging: `message` is the tag, `data` the content, a
//! one-element tuple). Fields the SDK sends that the server has no use for (client versions,
//! bitrates, device lists) are ignored, so newer SDKs stay readable.
//!
//! A conference, as the SDK drives it:
//! 1. `connection` {appKey `roomApp`, custom {login, token}} → `getUserData` (session
//!    ESTABLISHED);
//! 2. `sendData` {operationId, payload {command: `join`, options {name, record}}} →
//!    `DataStatusEvent` {operationId, status `ACCEPTED` | `FAILED`, info} and the room's
//!    `OnDataEvent`s {payload {roomName, name: STATE | JOINED | LEFT | PUBLISHED | UNPUBLISHED |
//!    FAILED | MESSAGE, info}}; `leave` and `sendMessage` {to, text} the same way;
//! 3. `publishStream` / `playStream` {mediaSessionId, name, sdp: the client's offer} →
//!    `setRemoteSDP` [mediaSessionId, answer] and `notifyStreamStatusEvent` {mediaSessionId,
//!    status PUBLISHING | PLAYING | UNPUBLISHED | STOPPED | FAILED, info};
//!    `unPublishStream` / `stopStream` end them; `sendStreamEvent` {type audioMuted,
//!    videoUnmuted, ...} reports a publisher's mute;
//! 4. `ping` ↔ `pong` either way; `fail` {apiMethod, info} for anything refused outside a
//!    stream or an operation.
//!
//! ```
//! use room_protocol::wcs::{ClientMessage, RoomCommand};
//! let frame = r#"{"message":"sendData","data":[{"operationId":"op1",
//!     "payload":{"command":"join","options":{"name":"room-1","record":false}}}]}"#;
//! let ClientMessage::SendData((data,)) = serde_json::from_str(frame).unwrap() else { panic!() };
//! assert_eq!(data.payload, RoomCommand::Join { name: "room-1".into(), record: Some(false) });
//! ```

use serde::{Deserialize, Serialize};

use crate::Secret;

/// The only `appKey` served: the SDK's room API application.
pub const ROOM_APP_KEY: &str = "roomApp";

/// What the SDK sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message", content = "data", rename_all = "camelCase")]
pub enum ClientMessage {
    /// The first frame: which application, and who (answered by `getUserData`).
    Connection((Connection,)),
    /// A room command (join, leave, sendMessage), answered by `DataStatusEvent`.
    SendData((SendData,)),
    /// Publish the client's camera: its SDP offer for the server.
    PublishStream((StreamRequest,)),
    /// Play a stream of the room: the client's receive-only SDP offer.
    PlayStream((StreamRequest,)),
    /// Stop publishing.
    UnPublishStream((StreamRequest,)),
    /// Stop playing.
    StopStream((StreamRequest,)),
    /// Something about an own stream; the server understands the mute events.
    SendStreamEvent((StreamEvent,)),
    /// Keepalive (the SDK's `pingInterval`); answered by `pong`.
    Ping((Option<serde_json::Value>,)),
    /// The answer to the server's `ping`.
    Pong((Option<serde_json::Value>,)),
}

impl ClientMessage {
    /// The frame's `message` name, e.g. `publishStream`.
    pub fn name(&self) -> &'static str {
        match self {
            ClientMessage::Connection(_) => "connection",
            ClientMessage::SendData(_) => "sendData",
            ClientMessage::PublishStream(_) => "publishStream",
            ClientMessage::PlayStream(_) => "playStream",
            ClientMessage::UnPublishStream(_) => "unPublishStream",
            ClientMessage::StopStream(_) => "stopStream",
            ClientMessage::SendStreamEvent(_) => "sendStreamEvent",
            ClientMessage::Ping(_) => "ping",
            ClientMessage::Pong(_) => "pong",
        }
    }
}

/// `connection`: the SDK's session parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// The server application; only [`ROOM_APP_KEY`] is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    /// The room API's `custom` object: the login, and the token given to `RoomApi.connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<ConnectionCustom>,
}

/// `connection.custom` as the room API fills it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCustom {
    /// The participant's name in every room it joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// A gst-room access token (or the shared token), when the server asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

/// `sendData`: one room command and the id its `DataStatusEvent` answer carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendData {
    /// Chosen by the client (a UUID); echoed in the answer.
    pub operation_id: String,
    /// The command.
    pub payload: RoomCommand,
}

/// A room command of `sendData` (`{"command": NAME, "options": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "options", rename_all = "camelCase")]
pub enum RoomCommand {
    /// Join (and create) the room `name`; `record` asks for a recording.
    Join {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<bool>,
    },
    /// Leave the room `name`.
    Leave { name: String },
    /// Chat to the participant `to` (the SDK sends a room message as one per participant).
    #[serde(rename_all = "camelCase")]
    SendMessage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room_config: Option<RoomConfig>,
        to: String,
        text: String,
    },
}

/// `sendMessage.roomConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// The room.
    pub name: String,
}

/// `publishStream`, `playStream`, `unPublishStream`, `stopStream`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRequest {
    /// The client's id of this publication or playback (a UUID).
    pub media_session_id: String,
    /// The stream name (see the server's module doc for how names map).
    pub name: String,
    /// The client's SDP offer (publish and play).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
    /// Whether the published stream carries audio / video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_audio: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_video: Option<bool>,
    /// A recording of this stream is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

/// `sendStreamEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEvent {
    /// The publication it is about.
    pub media_session_id: String,
    /// `audioMuted`, `audioUnmuted`, `videoMuted`, `videoUnmuted` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message", content = "data", rename_all = "camelCase")]
pub enum ServerMessage {
    /// The answer to `connection`: the session is ESTABLISHED.
    GetUserData((UserData,)),
    /// The answer to a `sendData`.
    #[serde(rename = "DataStatusEvent")]
    DataStatusEvent((DataStatus,)),
    /// A room event.
    #[serde(rename = "OnDataEvent")]
    OnDataEvent((AppData,)),
    /// The server's SDP answer: [mediaSessionId, sdp].
    #[serde(rename = "setRemoteSDP")]
    SetRemoteSdp((String, String)),
    /// A publication's or playback's new status.
    NotifyStreamStatusEvent((StreamStatus,)),
    /// Keepalive; answered by `pong`.
    Ping((Option<serde_json::Value>,)),
    /// The answer to the client's `ping`.
    Pong((Option<serde_json::Value>,)),
    /// A frame refused (unreadable, unsupported, out of place); nothing changed.
    Fail((Failure,)),
}

/// `getUserData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserData {
    /// [`ROOM_APP_KEY`].
    pub app_key: String,
    /// The login, as the server took it.
    pub login: String,
    /// The server's id of the connection (for logs).
    pub session_id: String,
}

/// `DataStatusEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataStatus {
    /// The `sendData`'s id.
    pub operation_id: String,
    /// ACCEPTED or FAILED.
    pub status: DataStatusKind,
    /// Why it failed (the example page shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

/// The outcome of a `sendData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DataStatusKind {
    Accepted,
    Failed,
}

/// `OnDataEvent`: `{"payload": {"roomName": ..., "name": EVENT, "info": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppData {
    pub payload: RoomEventPayload,
}

/// A room event and its room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomEventPayload {
    pub room_name: String,
    #[serde(flatten)]
    pub event: RoomEvent,
}

/// A room event (`name` and `info`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "info", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoomEvent {
    /// To the joiner: everyone else — a participant with streams as one entry per stream.
    State(Vec<StateEntry>),
    /// Someone joined (their login).
    Joined(String),
    /// Someone left (their login).
    Left(String),
    /// Someone published a stream.
    Published(StreamOf),
    /// Someone withdrew a stream.
    Unpublished(StreamOf),
    /// Someone's stream failed (it is gone).
    Failed(StreamOf),
    /// A chat message.
    Message(Chat),
}

/// An entry of STATE: a participant without streams (its login), or one of its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StateEntry {
    Stream(StreamOf),
    Participant(String),
}

/// A participant's stream: `{"login": ..., "name": STREAM}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOf {
    pub login: String,
    pub name: String,
}

/// A chat message: `{"from": LOGIN, "text": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    pub from: String,
    pub text: String,
}

/// `notifyStreamStatusEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub media_session_id: String,
    pub name: String,
    /// Whether it is a publication (true) or a playback.
    pub published: bool,
    pub status: StreamStatusKind,
    /// Why, for FAILED (and STOPPED by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

/// A stream's status as the SDK names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatusKind {
    Publishing,
    Playing,
    Unpublished,
    Stopped,
    Failed,
}

/// `fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The refused frame's `message` name, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_method: Option<String>,
    /// Why.
    pub info: String,
}

/// The `message` name of a frame that did not parse as a [`ClientMessage`], when it has one
/// (for the `fail` answer), cut to [`crate::MAX_ECHO_CHARS`] characters.
pub fn frame_name(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        message: String,
    }
    serde_json::from_str::<Named>(text)
        .ok()
        .map(|n| crate::excerpt(&n.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames the SDK (2.0.276) sent in Chromium, recorded by tests/browser/wcs.test.mjs.
    const RECORDED: &str = include_str!("../tests/wcs-frames.json");

    #[test]
    fn every_recorded_sdk_frame_parses() {
        let frames: Vec<serde_json::Value> = serde_json::from_str(RECORDED).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for frame in &frames {
            let text = frame.to_string();
            let parsed: ClientMessage = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{e}: {}", crate::excerpt(&text)));
            names.insert(parsed.name());
        }
        for name in [
            "connection",
            "sendData",
            "publishStream",
            "playStream",
            "stopStream",
            "unPublishStream",
            "sendStreamEvent",
        ] {
            assert!(names.contains(name), "the fixture has no {name}: {names:?}");
        }
    }

    #[test]
    fn server_frames_have_the_sdks_shape() {
        let state = ServerMessage::OnDataEvent((AppData {
            payload: RoomEventPayload {
                room_name: "r".into(),
                event: RoomEvent::State(vec![
                    StateEntry::Participant("bob".into()),
                    StateEntry::Stream(StreamOf {
                        login: "ann".into(),
                        name: "r-ann-main".into(),
                    }),
                ]),
            },
        },));
        assert_eq!(
            serde_json::to_value(&state).unwrap(),
            serde_json::json!({"message": "OnDataEvent", "data": [{"payload": {"roomName": "r",
                "name": "STATE", "info": ["bob", {"login": "ann", "name": "r-ann-main"}]}}]})
        );
        let sdp = ServerMessage::SetRemoteSdp(("m1".into(), "v=0".into()));
        assert_eq!(
            serde_json::to_value(&sdp).unwrap(),
            serde_json::json!({"message": "setRemoteSDP", "data": ["m1", "v=0"]})
        );
        let status = ServerMessage::NotifyStreamStatusEvent((StreamStatus {
            media_session_id: "m1".into(),
            name: "s".into(),
            published: true,
            status: StreamStatusKind::Failed,
            info: Some("why".into()),
        },));
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"message": "notifyStreamStatusEvent", "data": [{"mediaSessionId": "m1",
                "name": "s", "published": true, "status": "FAILED", "info": "why"}]})
        );
        let answer = ServerMessage::DataStatusEvent((DataStatus {
            operation_id: "op".into(),
            status: DataStatusKind::Accepted,
            info: None,
        },));
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"message":"DataStatusEvent","data":[{"operationId":"op","status":"ACCEPTED"}]}"#
        );
        // Every server frame reads back as itself.
        for msg in [state, sdp, status, answer] {
            let text = serde_json::to_string(&msg).unwrap();
            assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), msg);
        }
    }

    #[test]
    fn ping_and_garbage() {
        let ping: ClientMessage =
            serde_json::from_str(r#"{"message":"ping","data":[null]}"#).unwrap();
        assert_eq!(ping, ClientMessage::Ping((None,)));
        for garbage in [
            "",
            "not json",
            "[]",
            r#"{"message":"call","data":[{}]}"#,
            r#"{"message":"publishStream","data":[]}"#,
            r#"{"message":"sendData","data":[{"operationId":"x","payload":{"command":"kick"}}]}"#,
        ] {
            assert!(
                serde_json::from_str::<ClientMessage>(garbage).is_err(),
                "{garbage}"
            );
        }
        assert_eq!(
            frame_name(r#"{"message":"call","data":[]}"#).as_deref(),
            Some("call")
        );
        assert_eq!(frame_name("nonsense"), None);
    }
}
