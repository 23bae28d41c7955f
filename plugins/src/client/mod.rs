//! The room participant: one actor per (server-url, room, username) in the process.
//!
//! One tokio task (the actor) owns the participant: the WebSocket, the view of the room, the
//! published streams and their mute state, which subscriber each WebRTC session belongs to,
//! reconnect with backoff, republishing after a rejoin, the chat held while the connection is
//! away and the chat waiting for the server's verdict. Nothing else touches any of it. This is
//! the shape of Alice Ryhl's "Actors with Tokio" and of mini-redis' `BufferedClient`:
//!
//! - [`RoomClient`] is the cheap handle. Elements and signallers send it typed commands over
//!   one bounded `mpsc`; the ones that need an answer carry a `oneshot` reply (`publish` →
//!   `Result<(), PublishError>`, `send_chat` → `Result<ChatSent, ChatError>` once the server
//!   decided, `unsubscribe` and `leave` → `()` once done).
//! - Each subscriber ([`RoomClient::subscribe`]: an element's event poster, roomsrc's follower, a
//!   signaller) gets its own ordered channel of [`Event`]s: room events and status for everyone,
//!   session messages only for the session's owner. The events carry the protocol's own
//!   messages. A subscriber that subscribes late first gets the room as it is now (a `state`),
//!   in order with everything after it.
//! - The [`registry`] hands every element of the process with the same [`Key`] the same actor
//!   and counts its users; [`release`] by the last user sends `leave`, waits for the server to
//!   close the socket (so the others have been told LEFT), and returns only then — bounded by
//!   [`LEAVE_TIMEOUT`] when the server is gone.
//!
//! Connection policy: connect (a few attempts at first), join, relay. A connection lost after a
//! join is retried with backoff forever; on the rejoin the actor re-announces its streams with
//! their mute state and sends the chat held meanwhile (at most [`CHAT_HOLD`] messages; beyond
//! that `send_chat` fails). Sessions do not survive a reconnect: their owners get a
//! `session-ended`. A refused join or a server unreachable from the start is final: subscribers
//! (including ones that subscribe later) get [`Event::Fatal`], and the actor only answers
//! commands until its last user leaves.
//!
//! Every request the actor writes carries a request id (`WithId`); the server echoes it in the
//! `error` a request causes. That is how a chat message learns its fate: refused (the `error`
//! with its id: `rate-limited`, `text-too-long`, ...) or accepted (its own copy comes back from
//! the room).
//!
//! The parts: [`state`] (what the participant knows and how it reacts to each input: pure rules,
//! unit-tested without a socket), [`actor`] (the task that does what the rules say), [`handle`]
//! ([`RoomClient`]), [`registry`] (one actor per key), [`transport`] (the WebSocket),
//! [`bridge`] (blocking calls from GStreamer threads into the runtime).

mod actor;
mod bridge;
mod handle;
pub mod registry;
mod state;
mod transport;

use std::time::Duration;

use room_protocol::{ErrorCode, FailReason, ServerMessage};

pub use bridge::block_on;
pub use handle::RoomClient;
pub use registry::{acquire, release};

/// Attempts to reach the server before the first join counts as failed.
pub const FIRST_CONNECT_ATTEMPTS: u32 = 5;
/// Backoff between connection attempts: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How long `leave` may take when the server does not answer (gone, or a dead link).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Chat messages held while the connection is away, sent at once after the rejoin. Below the
/// room server's default chat burst (20, README "Limits"), so that the held messages and a few
/// sent right after the rejoin are never refused as `rate-limited`.
pub const CHAT_HOLD: usize = 16;
/// How long `send_chat` waits for the server's verdict on a message (a round trip; generous
/// for a server that forwards to another node).
pub const CHAT_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The wait after failed attempt number `attempt` (1, 2, ...): 0.4 s, 0.8 s, 1.6 s, 3.2 s, then
/// 5 s each.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(5))
        .min(BACKOFF_CAP)
}

/// Identifies one participant: elements with equal keys share an actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// `ws://host:port/ws`.
    pub server_url: String,
    /// The room name.
    pub room: String,
    /// The participant's username.
    pub username: String,
    /// Extra certificates trusted for `wss://` (the `tls-ca-file` property).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// Where the participant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Connecting and joining for the first time.
    Connecting,
    /// In the room.
    Joined,
    /// The connection was lost; trying again.
    Reconnecting,
    /// The join was refused or the server could not be reached: final.
    Failed,
}

/// A subscriber's id, unique in the process.
pub type SubscriberId = u64;

/// What a subscriber receives, in the order the actor saw it happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The status changed.
    Status(Status),
    /// A room message as the server sent it, to every subscriber: `state` (on every (re)join,
    /// and, made by the actor, the room as it is now for a subscriber that comes later),
    /// `joined`, `left`, `published`, `unpublished`, `muted`, `message`, and `error` for a
    /// request of this participant that nobody waits for.
    Room(ServerMessage),
    /// A session message, to the session's owner only: `session-request` (to the subscriber
    /// that publishes the stream), `session-started` (to the one whose play it answers), `sdp`,
    /// `ice`, `session-ended` (also made by the actor when the connection is lost, reason
    /// "connection lost").
    Session(ServerMessage),
    /// The participant cannot go on; the actor has ended.
    Fatal(JoinFailure),
}

/// Why the participant cannot join, for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinFailure {
    /// The server refused the join (room-full, name-taken, unauthorized, invalid-name, ...).
    #[error("{}: {detail}", reason.as_str())]
    Refused {
        /// The protocol's reason.
        reason: FailReason,
        /// The server's explanation.
        detail: String,
    },
    /// The server could not be reached in [`FIRST_CONNECT_ATTEMPTS`] attempts.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The `wss://` server's certificate is not trusted, or TLS could not be set up.
    #[error("tls: {0}")]
    Tls(String),
}

impl JoinFailure {
    /// The reason as users read it: a protocol fail reason (`room-full`, ...), `unreachable`
    /// or `tls`.
    pub fn reason(&self) -> &'static str {
        match self {
            JoinFailure::Refused { reason, .. } => reason.as_str(),
            JoinFailure::Unreachable(_) => "unreachable",
            JoinFailure::Tls(_) => "tls",
        }
    }

    /// The explanation, without the reason.
    pub fn detail(&self) -> &str {
        match self {
            JoinFailure::Refused { detail, .. } => detail,
            JoinFailure::Unreachable(detail) | JoinFailure::Tls(detail) => detail,
        }
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The stream name does not have the allowed form.
    #[error("invalid-name: stream {0}")]
    InvalidName(String),
    /// This participant already publishes a stream of that name (another element of the
    /// process with the same username and stream).
    #[error("stream-exists: stream {0:?} is already published by this participant")]
    StreamExists(String),
    /// The participant has ended.
    #[error("the participant has left the room")]
    Gone,
}

impl PublishError {
    /// The reason as a protocol code (`invalid-name`, `stream-exists`, `gone`).
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::InvalidName(_) => "invalid-name",
            PublishError::StreamExists(_) => "stream-exists",
            PublishError::Gone => "gone",
        }
    }
}

/// What happened to a chat message that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSent {
    /// The server accepted it: it went to the room (or to its one recipient).
    Accepted,
    /// The connection is away: held, sent after the rejoin.
    Held,
}

/// Why a chat message did not reach the room (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The server refused it; nothing was sent to anyone.
    #[error("{code}: {message}")]
    Refused {
        /// The protocol's code (`rate-limited`, `text-too-long`, `unknown-participant`,
        /// `unauthorized`, ...).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// [`CHAT_HOLD`] messages are already waiting for the connection to come back.
    #[error("not connected and {CHAT_HOLD} messages are already waiting: message dropped")]
    HoldFull,
    /// The connection was lost after the message was written and before the server answered.
    #[error(
        "the connection was lost before the room server answered: the message may not have reached the room"
    )]
    Unconfirmed,
    /// The server did not answer within [`CHAT_ANSWER_WAIT`].
    #[error("the room server did not answer within {CHAT_ANSWER_WAIT:?}")]
    NoAnswer,
    /// The participant has ended (left, refused or unreachable).
    #[error("not in a room: message not sent")]
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_read_wire_names() {
        let refused = ChatError::Refused {
            code: ErrorCode::TextTooLong,
            message: "4097 bytes".into(),
        };
        assert_eq!(refused.to_string(), "text-too-long: 4097 bytes");
        let full = JoinFailure::Refused {
            reason: FailReason::RoomFull,
            detail: "room demo is full".into(),
        };
        assert_eq!(full.to_string(), "room-full: room demo is full");
        assert_eq!(full.reason(), "room-full");
    }
}
