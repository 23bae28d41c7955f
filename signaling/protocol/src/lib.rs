//! The gst-room protocol: every message a participant and the room server exchange.
//!
//! One WebSocket per participant (`/ws` on the server's HTTP port) carries JSON text frames.
//! Every frame is one object whose `"type"` field names the message (kebab-case); the other
//! fields are the variant's fields (snake_case). This file is the only definition of the
//! protocol: the server, the GStreamer elements and (mirrored, checked by a test) the web page
//! all follow it.
//!
//! A participant's life:
//! 1. connect → [`ServerMessage::Welcome`] (session ESTABLISHED);
//! 2. [`ClientMessage::Join`] (with an access token when the server wants one) →
//!    [`ServerMessage::State`] to the joiner (with the ICE servers, TURN credentials included:
//!    only admitted participants get them), [`ServerMessage::Joined`] to the others, or
//!    [`ServerMessage::Failed`] with a [`FailReason`]; a token's grants decide whether the
//!    participant may publish, play and chat ([`ErrorCode::Unauthorized`] otherwise);
//! 3. [`ClientMessage::Publish`] / [`ClientMessage::Mute`] / [`ClientMessage::Message`] → events
//!    to the room;
//! 4. to watch a stream, [`ClientMessage::Play`] → the server assigns a session, tells the viewer
//!    ([`ServerMessage::SessionStarted`]) and asks the publisher ([`ServerMessage::SessionRequest`]);
//!    the publisher offers, the viewer answers, both trickle ICE, all through the server
//!    ([`ClientMessage::Sdp`], [`ClientMessage::Ice`]), which relays only between the two ends;
//! 5. [`ClientMessage::Leave`] or closing the socket → [`ServerMessage::Left`] to the others.
//!
//! Bad input never closes the connection: the server answers [`ServerMessage::Error`] and
//! nothing else changes. An object that names a key twice, at any depth, is bad input
//! (`error malformed`, "duplicate key"): JSON leaves its meaning undefined. Errors quote at most [`MAX_ECHO_CHARS`] characters of the input they
//! refuse. What does close it are the server's limits (README, "Limits"): WebSocket protocol
//! violations, frames over 1 MiB, timeouts, a participant too slow to read its messages.
//!
//! Request ids: any client message may carry one more key, `"id"` (a string of at most
//! [`MAX_REQUEST_ID_CHARS`] characters, chosen by the client). The server copies it into the
//! `error` or `failed` that message causes, so a client with several requests in flight knows
//! which one was refused. Other answers carry no id. See [`WithId`].
//!
//! ```
//! use room_protocol::ClientMessage;
//! let msg: ClientMessage =
//!     serde_json::from_str(r#"{"type":"join","room":"demo","username":"alice"}"#).unwrap();
//! assert_eq!(msg, ClientMessage::Join { room: "demo".into(), username: "alice".into(), token: None });
//! ```

pub mod speaker;
pub mod wcs;

use serde::{Deserialize, Serialize};

/// The protocol version the server announces in [`ServerMessage::Welcome`].
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest text frame the server accepts; larger ones get [`ErrorCode::TooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest chat text (in bytes); longer ones get [`ErrorCode::TextTooLong`].
pub const MAX_CHAT_BYTES: usize = 4 * 1024;
/// The longest room or stream name, in characters (see [`validate_name`]).
pub const MAX_NAME_CHARS: usize = 64;
/// The longest username, in characters (see [`validate_username`]).
pub const MAX_USERNAME_CHARS: usize = 32;
/// How many characters of offending input an `error` or `failed` message quotes (see
/// [`excerpt`]): enough to recognise it, never a way to make the server send back large input.
pub const MAX_ECHO_CHARS: usize = 64;
/// The longest request id, in characters (see [`WithId`]).
pub const MAX_REQUEST_ID_CHARS: usize = 64;
/// The `viewer` of a [`ServerMessage::SessionRequest`] whose far end is the server (the
/// ingest of a stream it forwards, `--media sfu`). [`validate_username`] refuses it (`@`), so no
/// participant can be mistaken for it.
pub const SERVER_VIEWER: &str = "@server";

/// A message with its optional request id: on the wire, the message's own object with one more
/// key, `"id"`, absent when `None`. Clients send `WithId<ClientMessage>`; the server echoes the
/// id in the `WithId<ServerMessage>` `error` / `failed` the request caused.
///
/// An envelope rather than a field on every variant: the variants keep `deny_unknown_fields`
/// (any key other than `id` and the variant's fields is still refused), and code that does not
/// care about ids keeps using plain [`ClientMessage`] / [`ServerMessage`].
///
/// ```
/// use room_protocol::{ClientMessage, WithId};
/// let req: WithId<ClientMessage> = serde_json::from_str(
///     r#"{"type":"play","participant":"bob","stream":"main","id":"p1"}"#).unwrap();
/// assert_eq!(req.id.as_deref(), Some("p1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithId<T> {
    /// The client's id for the request, at most [`MAX_REQUEST_ID_CHARS`] characters.
    pub id: Option<String>,
    /// The message itself.
    pub msg: T,
}

impl<T: Serialize> Serialize for WithId<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        // Most messages carry no id: they are written as they are, without building a
        // `serde_json::Value` first (every message the server sends goes through here).
        if self.id.is_none() {
            return self.msg.serialize(serializer);
        }
        let mut value = serde_json::to_value(&self.msg).map_err(S::Error::custom)?;
        if let (Some(id), Some(object)) = (&self.id, value.as_object_mut()) {
            object.insert("id".into(), id.clone().into());
        }
        value.serialize(serializer)
    }
}

// Parsing refuses an object that names a key twice, at any depth (see `UniqueKeys`).
impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for WithId<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let UniqueKeys(mut value) = UniqueKeys::deserialize(deserializer)?;
        let id = match value.as_object_mut().and_then(|o| o.remove("id")) {
            None => None,
            Some(serde_json::Value::String(id)) if id.chars().count() <= MAX_REQUEST_ID_CHARS => {
                Some(id)
            }
            Some(_) => {
                return Err(D::Error::custom(format!(
                    "id must be a string of at most {MAX_REQUEST_ID_CHARS} characters"
                )));
            }
        };
        let msg = T::deserialize(value).map_err(D::Error::custom)?;
        Ok(WithId { id, msg })
    }
}

/// A JSON value in which no object names a key twice, at any depth: what [`WithId`] parses
/// first. JSON leaves repeated keys undefined (RFC 8259, section 4) and serde_json keeps one of
/// them silently (its `Map` overwrites; the derived message types never see the other), so
/// `{"type":"message","text":"a","text":"b"}` would be one chat whose text depends on the
/// parser. A message that says two things is refused instead ("duplicate key"), whichever
/// field is repeated (`type` and `id` included) and whether or not the two values agree.
///
/// ```
/// use room_protocol::{ClientMessage, WithId};
/// let err = serde_json::from_str::<WithId<ClientMessage>>(
///     r#"{"type":"message","text":"a","text":"b"}"#).unwrap_err();
/// assert!(err.to_string().contains("duplicate key \"text\""), "{err}");
/// ```
struct UniqueKeys(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

/// Builds the `serde_json::Value` as serde_json's own visitor does, checking each object's keys.
struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value whose objects name each key once")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        UniqueKeys::deserialize(d).map(|UniqueKeys(value)| value)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "duplicate key {:?}",
                    excerpt(&key)
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

/// What a participant sends: one JSON object per WebSocket text frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Join `room` as `username`; the first join creates the room. Answered by `state` (or
    /// `failed`). A connection is in at most one room.
    Join {
        /// Room name, see [`validate_name`].
        room: String,
        /// The participant's name, unique in the room, see [`validate_username`].
        username: String,
        /// An access token: a signed token minted with `gst-room token` (room, username, expiry,
        /// grants), or the server's shared secret. Required when the server was started with
        /// `--token-secret` or `--token`. Never shown by `Debug` (see [`Secret`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<Secret>,
    },
    /// Leave the room: own streams are unpublished, own sessions end, others get `left`.
    /// The connection stays open and may join again. (Written `Leave {}` so that, like every
    /// other message, unknown fields are refused.)
    Leave {},
    /// Announce a stream of this participant; others get `published`.
    Publish {
        /// Stream name, unique per participant, see [`validate_name`].
        stream: String,
        /// Whether the stream carries audio.
        audio: bool,
        /// Whether the stream carries video.
        video: bool,
    },
    /// Withdraw an own stream; its sessions end, others get `unpublished`.
    Unpublish {
        /// An own, published stream.
        stream: String,
    },
    /// Set the mute state of an own stream; others get `muted`. Muted media is sent as
    /// silence / black frames, so sessions stay up.
    Mute {
        /// An own, published stream.
        stream: String,
        /// True: the audio is muted.
        audio_muted: bool,
        /// True: the video is muted.
        video_muted: bool,
    },
    /// Chat to the whole room, or to one participant when `to` is set. The server stamps the
    /// sender and the time.
    Message {
        /// Username of the only recipient; absent for the whole room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// The text, at most [`MAX_CHAT_BYTES`] bytes. Clients render it as text, never HTML.
        text: String,
    },
    /// Ask to watch `participant`'s `stream`. The server answers `session-started` with a new
    /// session id and sends `session-request` to the publisher, who then offers.
    Play {
        /// The publisher's username.
        participant: String,
        /// The publisher's stream name.
        stream: String,
    },
    /// An SDP offer (publisher) or answer (viewer) for a session this participant is an end of.
    Sdp {
        /// The session id from `session-request` / `session-started`.
        session: String,
        /// The description.
        description: SessionDescription,
    },
    /// A trickled ICE candidate for a session this participant is an end of.
    Ice {
        /// The session id.
        session: String,
        /// The candidate line (`candidate:...`), as in RTCIceCandidate.candidate.
        candidate: String,
        /// The media line the candidate belongs to.
        sdp_m_line_index: u32,
        /// The media id, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
    },
    /// End a session this participant is an end of; the other end gets `session-ended`.
    Stop {
        /// The session id.
        session: String,
    },
}

/// What the server sends: one JSON object per WebSocket text frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ServerMessage {
    /// First message on every connection: the session with the server is established.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The server's id for this connection (for logs; not a room identity).
        participant_id: String,
    },
    /// The room as the joiner finds it: everyone else and their streams. Sent to the joiner
    /// only, before any other room event.
    State {
        /// The room name.
        room: String,
        /// The joiner's username, as accepted.
        username: String,
        /// The room's capacity (participants).
        capacity: usize,
        /// Everyone else in the room, in join order.
        participants: Vec<Participant>,
        /// ICE servers peers should use (may be empty: host candidates only). Sent only here,
        /// after a successful join, so TURN credentials never reach a connection that has not
        /// been admitted.
        ice_servers: Vec<IceServer>,
    },
    /// Someone joined the room (sent to everyone else).
    Joined {
        /// The newcomer's username.
        username: String,
    },
    /// Someone left or dropped (sent to everyone else). Their streams were unpublished first.
    Left {
        /// The username that left.
        username: String,
    },
    /// Someone announced a stream (sent to everyone else).
    Published {
        /// The publisher.
        username: String,
        /// The stream.
        stream: StreamInfo,
    },
    /// Someone withdrew a stream, or left (sent to everyone else).
    Unpublished {
        /// The publisher.
        username: String,
        /// The stream name.
        stream: String,
    },
    /// The mute state of a stream changed (sent to everyone else).
    Muted {
        /// The publisher.
        username: String,
        /// The stream name.
        stream: String,
        /// True: audio is muted.
        audio_muted: bool,
        /// True: video is muted.
        video_muted: bool,
    },
    /// A chat message, stamped by the server. Room messages go to everyone including the
    /// sender; direct ones to the recipient and the sender.
    Message {
        /// The sender's username (set by the server, never by the client).
        from: String,
        /// The recipient, for a direct message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// The text.
        text: String,
        /// Server time, milliseconds since the Unix epoch.
        ts: u64,
    },
    /// A join was refused; the connection stays open and may try again.
    Failed {
        /// Machine-readable reason.
        reason: FailReason,
        /// Human-readable detail.
        detail: String,
    },
    /// To a publisher: a viewer wants `stream`; create a peer connection for `session` and
    /// send an offer.
    ///
    /// On a server that carries media (`--media sfu`) each published stream also gets one
    /// session whose far end is the server itself (its *ingest*: the server forwards the
    /// stream to every viewer), asked for right after `publish`; its `viewer` is
    /// [`SERVER_VIEWER`], a name no participant can have. The publisher treats it as any other
    /// session: it offers, the server answers; the server sends no `ice` (its candidates are
    /// in its answer).
    SessionRequest {
        /// The new session id.
        session: String,
        /// The own stream to send.
        stream: String,
        /// The viewer's username, or [`SERVER_VIEWER`] when the server takes the stream.
        viewer: String,
    },
    /// To a viewer: the session created for its `play` request; an offer follows.
    SessionStarted {
        /// The new session id.
        session: String,
        /// The publisher's username.
        participant: String,
        /// The stream name.
        stream: String,
    },
    /// An SDP relayed from the other end of a session.
    Sdp {
        /// The session id.
        session: String,
        /// The description.
        description: SessionDescription,
    },
    /// An ICE candidate relayed from the other end of a session.
    Ice {
        /// The session id.
        session: String,
        /// The candidate line.
        candidate: String,
        /// The media line index.
        sdp_m_line_index: u32,
        /// The media id, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
    },
    /// A session ended: the other end stopped it, left, dropped, or the stream was unpublished.
    SessionEnded {
        /// The session id.
        session: String,
        /// Why, for people (e.g. "viewer left").
        reason: String,
    },
    /// Who speaks now, as the server decides it in rooms whose media goes through it
    /// (`--media sfu`), sent to everyone in the room: right after `state` to a joiner (the
    /// current speaker, or nobody), then on every change. Mesh rooms never get it: each
    /// participant decides from the audio it plays. A client that got one lets the server
    /// decide for the rest of its stay in the room.
    ///
    /// The server decides with the rule of [`speaker`] (the same numbers as roomsrc and the
    /// page), from the RFC 6464 audio levels in the header extensions of the audio it
    /// forwards: a participant takes the turn after about 0.5 s of speech louder than the
    /// speaker's, and loses it after 1.5 s of silence or when it leaves or stops publishing.
    ActiveSpeaker {
        /// The speaker's username; absent (or null): nobody speaks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
    },
    /// The last message was refused; nothing changed and the connection stays open.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// A participant as listed in [`ServerMessage::State`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// The username.
    pub username: String,
    /// The streams it publishes.
    pub streams: Vec<StreamInfo>,
}

/// A published stream and its mute state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInfo {
    /// Stream name, unique per participant.
    pub stream: String,
    /// Carries audio.
    pub audio: bool,
    /// Carries video.
    pub video: bool,
    /// Audio is muted.
    pub audio_muted: bool,
    /// Video is muted.
    pub video_muted: bool,
}

/// An SDP, as in RTCSessionDescriptionInit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDescription {
    /// Offer or answer.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text.
    pub sdp: String,
}

/// The kind of an SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SdpType {
    /// From the publisher.
    Offer,
    /// From the viewer.
    Answer,
}

/// An ICE server, as in RTCIceServer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential. Never shown by `Debug` (see [`Secret`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
}

/// A secret string (an access token, a TURN credential): serialised as the plain string, but
/// `Debug` prints `Secret(<redacted>)`, so logging a message (`{msg:?}`, at any level) never
/// writes it. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it (sending, verifying).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// Why a join was refused ([`ServerMessage::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailReason {
    /// The room has as many participants as its capacity.
    RoomFull,
    /// Someone in the room already has this username.
    NameTaken,
    /// The server requires a token and the join had none, a wrong, expired or forged one, one
    /// for another room or username, or this address failed too often in the last minute.
    Unauthorized,
    /// The room name or username does not have the allowed form.
    InvalidName,
    /// This connection is already in a room (leave first).
    AlreadyJoined,
    /// The server cannot admit anyone right now: it is one of several nodes and has lost the
    /// shared store (Redis) that keeps rooms consistent across them, or the room is moving to
    /// another node after one died. Try again in a few seconds.
    Unavailable,
}

impl FailReason {
    /// The wire name, e.g. `room-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::RoomFull => "room-full",
            FailReason::NameTaken => "name-taken",
            FailReason::Unauthorized => "unauthorized",
            FailReason::InvalidName => "invalid-name",
            FailReason::AlreadyJoined => "already-joined",
            FailReason::Unavailable => "unavailable",
        }
    }
}

/// Why a message was refused ([`ServerMessage::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, or missing/unknown fields.
    Malformed,
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// A binary frame; the protocol is text only.
    Binary,
    /// The message needs a joined room.
    NotJoined,
    /// A stream name does not have the allowed form.
    InvalidName,
    /// The chat text is longer than [`MAX_CHAT_BYTES`].
    TextTooLong,
    /// No participant with that username in the room.
    UnknownParticipant,
    /// No such stream (or not one of the sender's own).
    UnknownStream,
    /// The stream is already published.
    StreamExists,
    /// No such session, or the sender is not one of its ends.
    UnknownSession,
    /// The SDP type does not fit the sender's end (only publishers offer, viewers answer).
    BadSdp,
    /// A viewer cannot play its own stream.
    OwnStream,
    /// The participant already publishes as many streams as the server allows (4 by default).
    TooManyStreams,
    /// The viewer already has a live session for this stream (the message names it); stop it
    /// first to play the stream again.
    AlreadyPlaying,
    /// Too many messages of this kind too fast; this one was dropped. The message names the
    /// limit. A client that keeps flooding without reading its replies is disconnected.
    RateLimited,
    /// The participant's token does not grant this (publish, subscribe = play, chat).
    Unauthorized,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::Binary,
        ErrorCode::NotJoined,
        ErrorCode::InvalidName,
        ErrorCode::TextTooLong,
        ErrorCode::UnknownParticipant,
        ErrorCode::UnknownStream,
        ErrorCode::StreamExists,
        ErrorCode::UnknownSession,
        ErrorCode::BadSdp,
        ErrorCode::OwnStream,
        ErrorCode::TooManyStreams,
        ErrorCode::AlreadyPlaying,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
    ];

    /// The wire name, e.g. `rate-limited`: what users read in logs and bus messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Binary => "binary",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::TextTooLong => "text-too-long",
            ErrorCode::UnknownParticipant => "unknown-participant",
            ErrorCode::UnknownStream => "unknown-stream",
            ErrorCode::StreamExists => "stream-exists",
            ErrorCode::UnknownSession => "unknown-session",
            ErrorCode::BadSdp => "bad-sdp",
            ErrorCode::OwnStream => "own-stream",
            ErrorCode::TooManyStreams => "too-many-streams",
            ErrorCode::AlreadyPlaying => "already-playing",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientMessage {
    /// The message's `"type"` on the wire, e.g. `message` (clients use it in request ids).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave {} => "leave",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Unpublish { .. } => "unpublish",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Message { .. } => "message",
            ClientMessage::Play { .. } => "play",
            ClientMessage::Sdp { .. } => "sdp",
            ClientMessage::Ice { .. } => "ice",
            ClientMessage::Stop { .. } => "stop",
        }
    }
}

/// Checks a room or stream name: 1 to [`MAX_NAME_CHARS`] characters from `A-Z a-z 0-9 _ -`.
/// These names appear in URLs (`/?room=NAME`) and GStreamer pad names, hence the small alphabet.
pub fn validate_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_NAME_CHARS, |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    })
}

/// Checks a username: 1 to [`MAX_USERNAME_CHARS`] characters from `A-Z a-z 0-9 _ - .`.
pub fn validate_username(name: &str) -> Result<(), String> {
    check_name(name, MAX_USERNAME_CHARS, |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
    })
}

fn check_name(name: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    let len = name.chars().count();
    let quoted = excerpt(name);
    if len == 0 || len > max {
        return Err(format!(
            "{quoted:?} must have 1 to {max} characters, it has {len}"
        ));
    }
    match name.chars().find(|c| !allowed(*c)) {
        Some(bad) => Err(format!("{quoted:?} contains {bad:?}, which is not allowed")),
        None => Ok(()),
    }
}

/// The first [`MAX_ECHO_CHARS`] characters of `input`, with `…` appended when something was cut:
/// how errors quote what they refuse.
pub fn excerpt(input: &str) -> String {
    match input.char_indices().nth(MAX_ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &input[..end]),
        None => input.to_owned(),
    }
}

/// One example of every message, both directions: the protocol's documentation by example,
/// and the fixture the web page's test parses to prove the JavaScript mirror agrees.
pub fn examples() -> (Vec<ClientMessage>, Vec<ServerMessage>) {
    let stream = StreamInfo {
        stream: "main".into(),
        audio: true,
        video: true,
        audio_muted: false,
        video_muted: true,
    };
    let offer = SessionDescription {
        kind: SdpType::Offer,
        sdp: "v=0\r\n".into(),
    };
    let client = vec![
        ClientMessage::Join {
            room: "demo".into(),
            username: "alice".into(),
            token: Some("s3cret".into()),
        },
        ClientMessage::Leave {},
        ClientMessage::Publish {
            stream: "main".into(),
            audio: true,
            video: true,
        },
        ClientMessage::Unpublish {
            stream: "main".into(),
        },
        ClientMessage::Mute {
            stream: "main".into(),
            audio_muted: true,
            video_muted: false,
        },
        ClientMessage::Message {
            to: Some("bob".into()),
            text: "hi <b>bob</b>".into(),
        },
        ClientMessage::Play {
            participant: "bob".into(),
            stream: "main".into(),
        },
        ClientMessage::Sdp {
            session: "s1".into(),
            description: offer.clone(),
        },
        ClientMessage::Ice {
            session: "s1".into(),
            candidate: "candidate:1 1 UDP 2122252543 192.0.2.1 40000 typ host".into(),
            sdp_m_line_index: 0,
            sdp_mid: Some("0".into()),
        },
        ClientMessage::Stop {
            session: "s1".into(),
        },
    ];
    let server = vec![
        ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            participant_id: "p1".into(),
        },
        ServerMessage::State {
            room: "demo".into(),
            username: "alice".into(),
            capacity: 3,
            participants: vec![Participant {
                username: "bob".into(),
                streams: vec![stream.clone()],
            }],
            ice_servers: vec![IceServer {
                urls: vec!["turn:turn.example.org:3478".into()],
                username: Some("u".into()),
                credential: Some("c".into()),
            }],
        },
        ServerMessage::Joined {
            username: "bob".into(),
        },
        ServerMessage::Left {
            username: "bob".into(),
        },
        ServerMessage::Published {
            username: "bob".into(),
            stream,
        },
        ServerMessage::Unpublished {
            username: "bob".into(),
            stream: "main".into(),
        },
        ServerMessage::Muted {
            username: "bob".into(),
            stream: "main".into(),
            audio_muted: false,
            video_muted: true,
        },
        ServerMessage::Message {
            from: "bob".into(),
            to: None,
            text: "hello".into(),
            ts: 1_764_000_000_000,
        },
        ServerMessage::Failed {
            reason: FailReason::RoomFull,
            detail: "room demo is full (3 of 3)".into(),
        },
        ServerMessage::Failed {
            reason: FailReason::Unavailable,
            detail: "this server has lost its connection to Redis; try again shortly".into(),
        },
        ServerMessage::SessionRequest {
            session: "s1".into(),
            stream: "main".into(),
            viewer: "alice".into(),
        },
        ServerMessage::SessionStarted {
            session: "s1".into(),
            participant: "bob".into(),
            stream: "main".into(),
        },
        ServerMessage::Sdp {
            session: "s1".into(),
            description: SessionDescription {
                kind: SdpType::Answer,
                sdp: "v=0\r\n".into(),
            },
        },
        ServerMessage::Ice {
            session: "s1".into(),
            candidate: "candidate:1 1 UDP 2122252543 192.0.2.1 40000 typ host".into(),
            sdp_m_line_index: 0,
            sdp_mid: None,
        },
        ServerMessage::SessionEnded {
            session: "s1".into(),
            reason: "viewer left".into(),
        },
        ServerMessage::ActiveSpeaker {
            username: Some("bob".into()),
        },
        ServerMessage::ActiveSpeaker { username: None },
        ServerMessage::Error {
            code: ErrorCode::Malformed,
            message: "expected value at line 1".into(),
        },
        ServerMessage::Error {
            code: ErrorCode::TooManyStreams,
            message: "you publish 4 streams, the limit is 4".into(),
        },
        ServerMessage::Error {
            code: ErrorCode::AlreadyPlaying,
            message: "you already play bob/main in session s1".into(),
        },
        ServerMessage::Error {
            code: ErrorCode::RateLimited,
            message: "too many chat messages: at most 10 per second (bursts of 20)".into(),
        },
    ];
    (client, server)
}

/// One request with an id and the refusal that echoes it: the examples of [`WithId`], and the
/// fixture the web page's test checks its `withId` against.
pub fn id_examples() -> (WithId<ClientMessage>, WithId<ServerMessage>) {
    (
        WithId {
            id: Some("play-2".into()),
            msg: ClientMessage::Play {
                participant: "ghost".into(),
                stream: "main".into(),
            },
        },
        WithId {
            id: Some("play-2".into()),
            msg: ServerMessage::Error {
                code: ErrorCode::UnknownParticipant,
                message: "no participant ghost in room demo".into(),
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_participant_can_take_the_servers_viewer_name() {
        assert!(validate_username(SERVER_VIEWER).is_err());
    }

    #[test]
    fn error_codes_and_fail_reasons_print_their_wire_names() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_string(&code).unwrap();
            assert_eq!(wire, format!("\"{code}\""));
        }
        assert_eq!(ErrorCode::RateLimited.to_string(), "rate-limited");
        for reason in [
            FailReason::RoomFull,
            FailReason::NameTaken,
            FailReason::Unauthorized,
            FailReason::InvalidName,
            FailReason::AlreadyJoined,
            FailReason::Unavailable,
        ] {
            let wire = serde_json::to_string(&reason).unwrap();
            assert_eq!(wire, format!("\"{reason}\""));
        }
    }

    #[test]
    fn request_ids_ride_along_and_unknown_fields_are_still_refused() {
        let (request, refusal) = id_examples();
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"play","participant":"ghost","stream":"main","id":"play-2"})
        );
        assert_eq!(
            serde_json::from_value::<WithId<ClientMessage>>(json).unwrap(),
            request
        );
        let json = serde_json::to_string(&refusal).unwrap();
        assert_eq!(
            serde_json::from_str::<WithId<ServerMessage>>(&json).unwrap(),
            refusal
        );
        // Without an id: the plain wire form, both ways.
        let plain = r#"{"type":"leave"}"#;
        let parsed: WithId<ClientMessage> = serde_json::from_str(plain).unwrap();
        assert_eq!(parsed.id, None);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), plain);
        let refused = |text: &str| serde_json::from_str::<WithId<ClientMessage>>(text).is_err();
        assert!(refused(r#"{"type":"leave","id":"x","extra":1}"#));
        assert!(refused(r#"{"type":"leave","id":7}"#));
        assert!(refused(&format!(
            r#"{{"type":"leave","id":"{}"}}"#,
            "x".repeat(65)
        )));
        assert!(!refused(&format!(
            r#"{{"type":"leave","id":"{}"}}"#,
            "x".repeat(64)
        )));
        // A plain ClientMessage still refuses an id it does not expect.
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"leave","id":"x"}"#).is_err());
    }

    /// Which key of a message to write twice: the `key`th of all its objects' keys (each
    /// object's own keys, then its values' keys, in order), the copy placed at `position` among
    /// its object's entries, holding the same value or another one.
    #[derive(Debug, Clone)]
    struct Duplicate {
        key: usize,
        position: usize,
        same_value: bool,
    }

    /// How many keys `value`'s objects hold, at every depth.
    fn key_count(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Object(map) => {
                map.len() + map.values().map(key_count).sum::<usize>()
            }
            serde_json::Value::Array(items) => items.iter().map(key_count).sum(),
            _ => 0,
        }
    }

    /// `value` as JSON text, with the key `duplicate` names written twice (when there is one).
    fn render(value: &serde_json::Value, duplicate: &Duplicate, counted: &mut usize) -> String {
        use serde_json::Value;
        let map = match value {
            Value::Object(map) => map,
            Value::Array(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|v| render(v, duplicate, counted))
                    .collect();
                return format!("[{}]", items.join(","));
            }
            other => return other.to_string(),
        };
        let own = *counted..*counted + map.len();
        *counted += map.len();
        let mut entries: Vec<String> = map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}",
                    Value::from(k.as_str()),
                    render(v, duplicate, counted)
                )
            })
            .collect();
        if own.contains(&duplicate.key) {
            let (key, value) = map.iter().nth(duplicate.key - own.start).unwrap();
            let copy = match duplicate.same_value {
                true => value.clone(),
                false => Value::from("something else"),
            };
            let at = duplicate.position % (entries.len() + 1);
            entries.insert(at, format!("{}:{copy}", Value::from(key.as_str())));
        }
        format!("{{{}}}", entries.join(","))
    }

    /// A client message of every kind (with or without a request id) as JSON, and a key of it to
    /// write twice.
    fn message_with_a_key_to_repeat()
    -> impl proptest::strategy::Strategy<Value = (WithId<ClientMessage>, serde_json::Value, Duplicate)>
    {
        use proptest::prelude::*;
        let (client, _) = examples();
        (
            proptest::sample::select(client),
            proptest::option::of("[a-z0-9-]{1,8}"),
        )
            .prop_flat_map(|(msg, id)| {
                let request = WithId { id, msg };
                let json = serde_json::to_value(&request).unwrap();
                let keys = key_count(&json);
                (0..keys, any::<usize>(), any::<bool>()).prop_map(
                    move |(key, position, same_value)| {
                        let duplicate = Duplicate {
                            key,
                            position,
                            same_value,
                        };
                        (request.clone(), json.clone(), duplicate)
                    },
                )
            })
    }

    proptest::proptest! {
        /// Any key written twice, `type` and `id` included, at any depth, wherever the copy
        /// stands and whatever it holds, makes the message malformed.
        #[test]
        fn a_key_written_twice_is_refused((request, json, duplicate) in message_with_a_key_to_repeat()) {
            let parse = |text: &str| serde_json::from_str::<WithId<ClientMessage>>(text);
            // The same rendering without a copy is the message itself.
            let none = Duplicate { key: usize::MAX, ..duplicate.clone() };
            let plain = render(&json, &none, &mut 0);
            proptest::prop_assert_eq!(parse(&plain).unwrap(), request);
            let twice = render(&json, &duplicate, &mut 0);
            match parse(&twice) {
                Ok(parsed) => proptest::prop_assert!(false, "{twice} was accepted as {parsed:?}"),
                Err(err) => proptest::prop_assert!(err.to_string().contains("duplicate key"), "{twice}: {err}"),
            }
        }
    }

    #[test]
    fn repeated_keys_are_refused_in_nested_objects_too() {
        let refused = |text: &str| serde_json::from_str::<WithId<ClientMessage>>(text).is_err();
        assert!(refused(r#"{"type":"message","text":"a","text":"b"}"#));
        assert!(refused(r#"{"type":"leave","type":"leave"}"#));
        assert!(refused(r#"{"type":"leave","id":"a","id":"a"}"#));
        assert!(refused(
            r#"{"type":"sdp","session":"s","description":{"type":"offer","type":"answer","sdp":""}}"#
        ));
        assert!(!refused(
            r#"{"type":"sdp","session":"s","description":{"type":"offer","sdp":""}}"#
        ));
    }

    #[test]
    fn every_message_round_trips_through_json() {
        let (client, server) = examples();
        for msg in client {
            let json = serde_json::to_string(&msg).unwrap();
            assert_eq!(
                serde_json::from_str::<ClientMessage>(&json).unwrap(),
                msg,
                "{json}"
            );
        }
        for msg in server {
            let json = serde_json::to_string(&msg).unwrap();
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&json).unwrap(),
                msg,
                "{json}"
            );
        }
    }

    /// Every variant by name. Exhaustive on purpose: a new variant does not compile until it
    /// is listed here (and in [`ClientMessage::kind`]), and then the test below fails until
    /// `examples()` has it.
    fn server_variant(msg: &ServerMessage) -> &'static str {
        match msg {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::State { .. } => "state",
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Left { .. } => "left",
            ServerMessage::Published { .. } => "published",
            ServerMessage::Unpublished { .. } => "unpublished",
            ServerMessage::Muted { .. } => "muted",
            ServerMessage::Message { .. } => "message",
            ServerMessage::Failed { .. } => "failed",
            ServerMessage::SessionRequest { .. } => "session-request",
            ServerMessage::SessionStarted { .. } => "session-started",
            ServerMessage::Sdp { .. } => "sdp",
            ServerMessage::Ice { .. } => "ice",
            ServerMessage::SessionEnded { .. } => "session-ended",
            ServerMessage::ActiveSpeaker { .. } => "active-speaker",
            ServerMessage::Error { .. } => "error",
        }
    }

    const CLIENT_TYPES: [&str; 10] = [
        "join",
        "leave",
        "publish",
        "unpublish",
        "mute",
        "message",
        "play",
        "sdp",
        "ice",
        "stop",
    ];
    const SERVER_TYPES: [&str; 16] = [
        "welcome",
        "state",
        "joined",
        "left",
        "published",
        "unpublished",
        "muted",
        "message",
        "failed",
        "session-request",
        "session-started",
        "sdp",
        "ice",
        "session-ended",
        "active-speaker",
        "error",
    ];

    #[test]
    fn examples_cover_every_variant_under_its_wire_name() {
        // The page's mirror test relies on the fixture naming every type once.
        let (client, server) = examples();
        let names: Vec<&str> = client.iter().map(ClientMessage::kind).collect();
        assert_eq!(
            names, CLIENT_TYPES,
            "one client example per variant, in order"
        );
        // Several `error` examples (one per kind of limit) follow each other: counted once.
        let mut names: Vec<&str> = server.iter().map(server_variant).collect();
        names.dedup();
        assert_eq!(
            names, SERVER_TYPES,
            "server examples cover every variant, in order"
        );
        // The names are the wire names.
        for msg in &client {
            let json = serde_json::to_value(msg).unwrap();
            assert_eq!(json["type"], msg.kind());
        }
        for msg in &server {
            let json = serde_json::to_value(msg).unwrap();
            assert_eq!(json["type"], server_variant(msg));
        }
    }

    #[test]
    fn wire_form_is_kebab_type_and_snake_fields() {
        let json = serde_json::to_value(ClientMessage::Ice {
            session: "s".into(),
            candidate: "c".into(),
            sdp_m_line_index: 1,
            sdp_mid: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"ice","session":"s","candidate":"c","sdp_m_line_index":1})
        );
        let json = serde_json::to_value(ServerMessage::Failed {
            reason: FailReason::NameTaken,
            detail: "d".into(),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"failed","reason":"name-taken","detail":"d"})
        );
        assert_eq!(
            serde_json::to_value(FailReason::RoomFull).unwrap(),
            FailReason::RoomFull.as_str()
        );
    }

    #[test]
    fn unknown_type_and_missing_fields_are_rejected() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"join","room":"r"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"leave","extra":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave {}
        );
        assert!(serde_json::from_str::<ClientMessage>("[1,2]").is_err());
    }

    #[test]
    fn secrets_are_plain_on_the_wire_and_redacted_in_debug() {
        let join = ClientMessage::Join {
            room: "r".into(),
            username: "u".into(),
            token: Some("tok-123".into()),
        };
        assert!(
            serde_json::to_string(&join)
                .unwrap()
                .contains(r#""token":"tok-123""#)
        );
        assert!(!format!("{join:?}").contains("tok-123"), "{join:?}");
        let (_, server) = examples();
        assert!(!format!("{server:?}").contains("credential: Some(\"c\")"));
    }

    #[test]
    fn names_have_a_small_alphabet_and_a_length_limit() {
        assert!(validate_name("demo-room_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(65)).is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("é").is_err());
        assert!(validate_username("bot.1").is_ok());
        assert!(validate_username(&"a".repeat(33)).is_err());
        assert!(validate_username("<script>").is_err());
    }

    #[test]
    fn errors_quote_a_short_prefix_of_long_input() {
        let long = "é".repeat(70_000);
        let why = validate_name(&long).unwrap_err();
        assert!(why.chars().count() < 2 * MAX_ECHO_CHARS, "{why}");
        assert!(
            why.contains(&format!("{}…", "é".repeat(MAX_ECHO_CHARS))),
            "{why}"
        );
        assert_eq!(excerpt("short"), "short");
    }
}
