//! The room participant: one actor per (server-url, room, username) in the process.
//!
//! One tokio task (the actor, [`Actor::run`]) owns the participant: the WebSocket, the view of
//! the room, the published streams and their mute state, which subscriber each WebRTC session
//! belongs to, reconnect with backoff, republishing after a rejoin, and the chat held while the
//! connection is away. Nothing else touches any of it. This is the shape of Alice Ryhl's "Actors
//! with Tokio" and of mini-redis' `BufferedClient`:
//!
//! - [`RoomClient`] is the cheap handle. Elements and signallers send it typed [`Command`]s over
//!   one bounded `mpsc`; the ones that need an answer carry a `oneshot` reply (`publish` →
//!   `Result<(), PublishError>`, `send_chat` → `Result<ChatSent, ChatError>`, `unsubscribe` and
//!   `leave` → `()` once done).
//! - Each subscriber ([`RoomClient::subscribe`]: an element's event poster, roomsrc's follower, a
//!   signaller) gets its own ordered channel of already-interpreted [`Event`]s: room events and
//!   status for everyone, session events only for the session's owner. A subscriber that
//!   subscribes late first gets the room as it is now ([`Event::State`]), in order with
//!   everything after it.
//! - The [`registry`](acquire) hands every element of the process with the same [`Key`] the same
//!   actor and counts its users; [`release`] by the last user sends `leave`, waits for the server
//!   to close the socket (so the others have been told LEFT), and returns only then — bounded by
//!   [`LEAVE_TIMEOUT`] when the server is gone.
//!
//! Connection policy: connect (a few attempts at first), join, relay. A connection lost after a
//! join is retried with backoff forever; on the rejoin the actor re-announces its streams with
//! their mute state and sends the chat held meanwhile (at most [`CHAT_HOLD`] messages; beyond
//! that `send_chat` fails). Sessions do not survive a reconnect: their owners get
//! [`Event::SessionEnded`]. A refused join or a server unreachable from the start is final:
//! subscribers (including ones that subscribe later) get [`Event::Fatal`], and the actor only
//! answers commands until its last user leaves.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{ConnectStream, client_async_tls_with_connector_and_config};
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use room_protocol::{
    ClientMessage, FailReason, IceServer, Participant, ServerMessage, SessionDescription,
    StreamInfo,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::RUNTIME;

/// Commands queued for the actor. Bounded so that a stuck actor cannot grow memory; elements send
/// little (SDP, ICE, chat), so 256 is far more than a healthy participant needs.
const COMMAND_QUEUE: usize = 256;
/// Events buffered per subscriber. The actor never waits for a subscriber (a subscriber may be
/// waiting for the actor); one that falls this far behind loses events, with a warning.
const EVENT_QUEUE: usize = 1024;
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

/// What a subscriber receives, in the order the actor saw it happen.
#[derive(Debug, Clone)]
pub enum Event {
    /// The status changed.
    Status(Status),
    /// The room as found on a (re)join, or as it is when a subscriber joins a running actor.
    State {
        room: String,
        username: String,
        capacity: usize,
        /// Everyone else and their streams.
        participants: Vec<Participant>,
    },
    Joined {
        username: String,
    },
    Left {
        username: String,
    },
    Published {
        username: String,
        stream: StreamInfo,
    },
    Unpublished {
        username: String,
        stream: String,
    },
    Muted {
        username: String,
        stream: String,
        audio_muted: bool,
        video_muted: bool,
    },
    Message {
        from: String,
        to: Option<String>,
        text: String,
        ts: u64,
    },
    /// The server refused a message of this participant (bad input); nothing else changed.
    Refused {
        code: room_protocol::ErrorCode,
        message: String,
    },
    /// The participant cannot go on; `reason` is a protocol fail reason (`room-full`, ...) or
    /// `unreachable`. The actor has ended.
    Fatal {
        reason: String,
        detail: String,
    },
    /// To the publisher of `stream` only: a viewer wants it.
    SessionRequested {
        session: String,
        viewer: String,
    },
    /// To the subscriber whose `play` this answers only.
    SessionStarted {
        session: String,
        participant: String,
        stream: String,
    },
    /// To the session's owner only: the other end's description.
    Sdp {
        session: String,
        description: SessionDescription,
    },
    /// To the session's owner only: the other end's candidate.
    Ice {
        session: String,
        candidate: String,
        sdp_m_line_index: u32,
        sdp_mid: Option<String>,
    },
    /// To the session's owner only: the session is over (the other end, the server, or a lost
    /// connection ended it).
    SessionEnded {
        session: String,
        reason: String,
    },
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

/// What happened to a chat message that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSent {
    /// Written to the server.
    Sent,
    /// The connection is away: held, sent after the rejoin.
    Held,
}

/// Why a chat message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// [`CHAT_HOLD`] messages are already waiting for the connection to come back.
    #[error("not connected and {CHAT_HOLD} messages are already waiting: message dropped")]
    HoldFull,
    /// The participant has ended (left, refused or unreachable).
    #[error("not in a room: message not sent")]
    Gone,
}

/// A subscriber's id, unique in the process.
pub type SubscriberId = u64;
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Commands the actor understands; see [`RoomClient`] for each one's meaning.
enum Command {
    Subscribe {
        id: SubscriberId,
        events: mpsc::Sender<Event>,
    },
    Unsubscribe {
        id: SubscriberId,
        done: oneshot::Sender<()>,
    },
    Publish {
        owner: SubscriberId,
        stream: String,
        audio: bool,
        video: bool,
        reply: oneshot::Sender<Result<(), PublishError>>,
    },
    Unpublish {
        stream: String,
    },
    Mute {
        stream: String,
        audio_muted: bool,
        video_muted: bool,
    },
    Play {
        owner: SubscriberId,
        participant: String,
        stream: String,
    },
    /// SDP, ICE or stop of a session: meaningful on the current connection only.
    Session(ClientMessage),
    Chat {
        to: Option<String>,
        text: String,
        reply: oneshot::Sender<Result<ChatSent, ChatError>>,
    },
    Leave {
        done: oneshot::Sender<()>,
    },
}

/// What handles can read without asking the actor: written by the actor only.
#[derive(Debug, Clone)]
struct View {
    status: Status,
    participants: Vec<Participant>,
    /// The ICE servers (TURN credentials included) from the latest `state`.
    ice_servers: Vec<IceServer>,
}

/// A handle on a participant's actor; cheap to clone. Dropping handles does not end the actor:
/// [`release`] by the last user does.
#[derive(Clone)]
pub struct RoomClient {
    key: Key,
    /// Tells registry entries apart after a failed actor was replaced.
    actor: u64,
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
}

/// One registry entry: the actor's handle and how many elements use it.
struct Entry {
    client: RoomClient,
    users: usize,
}

static REGISTRY: LazyLock<Mutex<HashMap<Key, Entry>>> = LazyLock::new(Default::default);

/// The participant for `key`: the running one if an element of this process already uses it,
/// else a new actor that starts connecting at once. Pair every call with [`release`].
pub fn acquire(key: Key, token: Option<String>) -> RoomClient {
    let mut registry = REGISTRY.lock().unwrap();
    if let Some(entry) = registry.get_mut(&key)
        && entry.client.status() != Status::Failed
    {
        entry.users += 1;
        return entry.client.clone();
    }
    let client = Actor::spawn(key.clone(), token);
    registry.insert(
        key,
        Entry {
            client: client.clone(),
            users: 1,
        },
    );
    client
}

/// An element is done with its participant. The last user's call sends `leave` and returns once
/// the server has closed the connection (so the room has been told LEFT), or after
/// [`LEAVE_TIMEOUT`] when the server does not answer.
pub fn release(client: &RoomClient) {
    let last = {
        let mut registry = REGISTRY.lock().unwrap();
        match registry.get_mut(&client.key) {
            Some(entry) if entry.client.actor == client.actor => {
                entry.users -= 1;
                if entry.users == 0 {
                    registry.remove(&client.key);
                    true
                } else {
                    false
                }
            }
            // Replaced after it failed: nobody else can use this actor any more.
            _ => true,
        }
    };
    if last {
        client.leave();
    }
}

impl RoomClient {
    /// The participant this is.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.view.borrow().status
    }

    /// Whether `username` publishes `stream` in the room now.
    pub fn publishes(&self, username: &str, stream: &str) -> bool {
        self.view
            .borrow()
            .participants
            .iter()
            .any(|p| p.username == username && p.streams.iter().any(|s| s.stream == stream))
    }

    /// The ICE servers the room server handed out at the latest join (empty before).
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.view.borrow().ice_servers.clone()
    }

    /// Usernames in the room, own included (empty unless joined).
    pub fn usernames(&self) -> Vec<String> {
        let view = self.view.borrow();
        if view.status != Status::Joined {
            return Vec::new();
        }
        let mut names: Vec<String> = view
            .participants
            .iter()
            .map(|p| p.username.clone())
            .collect();
        names.push(self.key.username.clone());
        names
    }

    /// A new subscriber: its id and its ordered channel of events. The first events are the
    /// current status and, when joined, the room as it is now. Commands sent after this call
    /// are handled after the subscription, so no answer to them can be missed.
    pub fn subscribe(&self) -> (SubscriberId, mpsc::Receiver<Event>) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        // If the actor has ended the receiver just closes at once: the subscriber ends.
        let _ = self.command(Command::Subscribe { id, events });
        (id, receiver)
    }

    /// Ends a subscription and returns once the actor has dropped it (its channel is closed, so
    /// the subscriber's task ends); the subscriber's sessions are stopped and its streams
    /// unpublished.
    pub fn unsubscribe(&self, id: SubscriberId) {
        let (done, finished) = oneshot::channel();
        if self.command(Command::Unsubscribe { id, done }).is_ok() {
            let _ = block_on_reply(finished, LEAVE_TIMEOUT);
        }
    }

    /// Announces a stream of this participant, owned by subscriber `owner` (its sessions go
    /// there); it is re-announced after every reconnect until unpublished. Refused at once for
    /// an invalid name or a stream this participant already publishes.
    pub fn publish(
        &self,
        owner: SubscriberId,
        stream: &str,
        audio: bool,
        video: bool,
    ) -> Result<(), PublishError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Publish {
            owner,
            stream: stream.to_owned(),
            audio,
            video,
            reply,
        })
        .map_err(|_| PublishError::Gone)?;
        block_on_reply(answer, LEAVE_TIMEOUT).unwrap_or(Err(PublishError::Gone))
    }

    /// Withdraws an own stream.
    pub fn unpublish(&self, stream: &str) {
        let _ = self.command(Command::Unpublish {
            stream: stream.to_owned(),
        });
    }

    /// Sets an own stream's mute state (remembered for reconnects).
    pub fn mute(&self, stream: &str, audio_muted: bool, video_muted: bool) {
        let _ = self.command(Command::Mute {
            stream: stream.to_owned(),
            audio_muted,
            video_muted,
        });
    }

    /// Asks to play `participant`'s `stream`; the session comes to subscriber `owner` as
    /// [`Event::SessionStarted`]. While not joined the request waits for the join.
    pub fn play(&self, owner: SubscriberId, participant: &str, stream: &str) {
        let _ = self.command(Command::Play {
            owner,
            participant: participant.to_owned(),
            stream: stream.to_owned(),
        });
    }

    /// SDP, ICE or stop for a session of this participant. Does not wait: it is called from
    /// webrtcbin's threads.
    pub fn session(&self, msg: ClientMessage) -> Result<(), String> {
        self.commands
            .try_send(Command::Session(msg))
            .map_err(|err| format!("cannot send to the room server: {err}"))
    }

    /// Sends a chat message to the room (`to` = None) or to one participant. While the
    /// connection is away it is held and sent after the rejoin ([`ChatSent::Held`]).
    pub fn send_chat(&self, to: Option<String>, text: String) -> Result<ChatSent, ChatError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Chat { to, text, reply })
            .map_err(|_| ChatError::Gone)?;
        block_on_reply(answer, LEAVE_TIMEOUT).unwrap_or(Err(ChatError::Gone))
    }

    /// Leaves the room and ends the actor; returns once the server closed the connection (or
    /// after [`LEAVE_TIMEOUT`]). Use [`release`]: it calls this for the last user only.
    fn leave(&self) {
        let (done, finished) = oneshot::channel();
        if self.command(Command::Leave { done }).is_ok() {
            // The actor bounds its own wait; the extra second covers a busy runtime.
            let _ = block_on_reply(finished, LEAVE_TIMEOUT + Duration::from_secs(1));
        }
    }

    /// Queues a command; waits for room in the queue only if it is full (a stuck actor).
    fn command(&self, command: Command) -> Result<(), ()> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            Err(mpsc::error::TrySendError::Full(command)) => {
                let commands = self.commands.clone();
                block_on(async move { commands.send(command).await }).map_err(|_| ())
            }
        }
    }
}

/// Runs `future` to completion from synchronous code on any thread: an application thread, a
/// GStreamer streaming thread, or a worker of some tokio runtime (where `block_in_place` lets
/// the runtime move its other tasks away first). The actor runs on [`RUNTIME`], so this never
/// waits for its own thread.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        }
        _ => futures::executor::block_on(future),
    }
}

/// Waits at most `limit` for a reply; `None` when the actor is gone or too slow.
fn block_on_reply<T: Send + 'static>(answer: oneshot::Receiver<T>, limit: Duration) -> Option<T> {
    // The timer runs on the plugin's runtime: the calling thread may have none.
    let waiting =
        RUNTIME.spawn(async move { tokio::time::timeout(limit, answer).await.ok()?.ok() });
    block_on(waiting).ok().flatten()
}

/// A subscriber as the actor knows it.
struct Subscriber {
    events: mpsc::Sender<Event>,
}

/// An own stream: what was announced, its mute state, and who publishes it.
struct Published {
    info: StreamInfo,
    owner: SubscriberId,
}

/// A `play` waiting for its `session-started` (the server answers plays in order).
struct PendingPlay {
    owner: SubscriberId,
    participant: String,
    stream: String,
}

/// How a phase of the actor ended.
enum Next {
    /// Connect (again).
    Reconnect,
    /// The actor is done (left, every handle gone, or fatal).
    End,
}

/// The participant's state, owned by its task.
struct Actor {
    key: Key,
    token: Option<String>,
    commands: mpsc::Receiver<Command>,
    view: watch::Sender<View>,
    capacity: usize,
    subscribers: BTreeMap<SubscriberId, Subscriber>,
    published: Vec<Published>,
    /// Session id → the subscriber that is its end here.
    sessions: HashMap<String, SubscriberId>,
    /// Plays sent, oldest first, waiting for their `session-started`.
    pending_plays: VecDeque<PendingPlay>,
    /// Plays asked for while not joined: sent after the join.
    held_plays: Vec<PendingPlay>,
    /// Chat asked for while not joined: sent after the join.
    held_chat: VecDeque<ClientMessage>,
    joined_once: bool,
    /// Why the participant cannot go on (reason, detail), once that is so.
    fatal: Option<(String, String)>,
}

type Socket = WebSocketStream<ConnectStream>;

impl Actor {
    fn spawn(key: Key, token: Option<String>) -> RoomClient {
        static NEXT_ACTOR: AtomicU64 = AtomicU64::new(1);
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let (view, view_rx) = watch::channel(View {
            status: Status::Connecting,
            participants: Vec::new(),
            ice_servers: Vec::new(),
        });
        let actor = Actor {
            key: key.clone(),
            token,
            commands: queue,
            view,
            capacity: 0,
            subscribers: BTreeMap::new(),
            published: Vec::new(),
            sessions: HashMap::new(),
            pending_plays: VecDeque::new(),
            held_plays: Vec::new(),
            held_chat: VecDeque::new(),
            joined_once: false,
            fatal: None,
        };
        RUNTIME.spawn(actor.run());
        RoomClient {
            key,
            actor: NEXT_ACTOR.fetch_add(1, Ordering::Relaxed),
            commands,
            view: view_rx,
        }
    }

    /// The actor's life: connect and join, relay until the connection ends, again.
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            let ws = match self.connect(&mut attempt).await {
                Ok(ws) => ws,
                Err(Next::End) => break,
                Err(Next::Reconnect) => continue,
            };
            attempt = 0;
            match self.relay(ws).await {
                Next::End => break,
                Next::Reconnect => {}
            }
        }
        if self.fatal.is_some() {
            self.failed().await;
        }
    }

    /// Connects and joins, handling commands meanwhile; backs off after a failed attempt.
    async fn connect(&mut self, attempt: &mut u32) -> Result<(Socket, ServerMessage), Next> {
        let joining = connect_and_join(self.key.clone(), self.token.clone());
        tokio::pin!(joining);
        let failure = loop {
            tokio::select! {
                result = &mut joining => match result {
                    Ok(joined) => return Ok(joined),
                    Err(failure) => break failure,
                },
                command = self.commands.recv() => self.offline(command)?,
            }
        };
        match failure {
            JoinError::Refused { reason, detail } => {
                self.fatal(reason, detail);
                return Err(Next::End);
            }
            JoinError::Io(why) => {
                *attempt += 1;
                if !self.joined_once && *attempt >= FIRST_CONNECT_ATTEMPTS {
                    let detail = format!(
                        "cannot reach {} after {attempt} attempts: {why}",
                        self.key.server_url
                    );
                    self.fatal("unreachable".into(), detail);
                    return Err(Next::End);
                }
                gst::debug!(crate::events::CAT, "{}: {why}", self.key.server_url);
            }
        }
        let wait = tokio::time::sleep(backoff(*attempt));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return Err(Next::Reconnect),
                command = self.commands.recv() => self.offline(command)?,
            }
        }
    }

    /// A command while not joined. `Err` ends the actor (leave, or every handle dropped).
    fn offline(&mut self, command: Option<Command>) -> Result<(), Next> {
        let Some(command) = command else {
            return Err(Next::End);
        };
        match command {
            Command::Leave { done } => {
                let _ = done.send(());
                return Err(Next::End);
            }
            Command::Play {
                owner,
                participant,
                stream,
            } => self.held_plays.push(PendingPlay {
                owner,
                participant,
                stream,
            }),
            // Sessions belong to the lost connection.
            Command::Session(_) => {}
            Command::Chat { to, text, reply } => {
                let answer = if self.held_chat.len() >= CHAT_HOLD {
                    Err(ChatError::HoldFull)
                } else {
                    self.held_chat
                        .push_back(ClientMessage::Message { to, text });
                    Ok(ChatSent::Held)
                };
                let _ = reply.send(answer);
            }
            other => {
                // Bookkeeping only: what must reach the server goes out with the join.
                let _ = self.apply(other);
            }
        }
        Ok(())
    }

    /// Applies a command to the state; returns what must be sent on a joined connection.
    fn apply(&mut self, command: Command) -> Vec<ClientMessage> {
        match command {
            Command::Subscribe { id, events } => {
                let subscriber = Subscriber { events };
                let status = self.view.borrow().status;
                subscriber.deliver(Event::Status(status));
                if status == Status::Joined {
                    subscriber.deliver(self.state_event());
                }
                self.subscribers.insert(id, subscriber);
                Vec::new()
            }
            Command::Unsubscribe { id, done } => {
                let out = self.drop_subscriber(id);
                let _ = done.send(());
                out
            }
            Command::Publish {
                owner,
                stream,
                audio,
                video,
                reply,
            } => {
                let refused = if let Err(why) = room_protocol::validate_name(&stream) {
                    Some(PublishError::InvalidName(why))
                } else if self.published.iter().any(|p| p.info.stream == stream) {
                    Some(PublishError::StreamExists(stream.clone()))
                } else {
                    None
                };
                if let Some(refused) = refused {
                    let _ = reply.send(Err(refused));
                    return Vec::new();
                }
                let info = StreamInfo {
                    stream: stream.clone(),
                    audio,
                    video,
                    audio_muted: false,
                    video_muted: false,
                };
                self.published.push(Published { info, owner });
                let _ = reply.send(Ok(()));
                vec![ClientMessage::Publish {
                    stream,
                    audio,
                    video,
                }]
            }
            Command::Unpublish { stream } => self.unpublish(&stream),
            Command::Mute {
                stream,
                audio_muted,
                video_muted,
            } => {
                let Some(p) = self.published.iter_mut().find(|p| p.info.stream == stream) else {
                    return Vec::new();
                };
                p.info.audio_muted = audio_muted;
                p.info.video_muted = video_muted;
                vec![ClientMessage::Mute {
                    stream,
                    audio_muted,
                    video_muted,
                }]
            }
            Command::Play {
                owner,
                participant,
                stream,
            } => {
                let msg = ClientMessage::Play {
                    participant: participant.clone(),
                    stream: stream.clone(),
                };
                self.pending_plays.push_back(PendingPlay {
                    owner,
                    participant,
                    stream,
                });
                vec![msg]
            }
            Command::Session(msg) => {
                if let ClientMessage::Stop { session } = &msg {
                    self.sessions.remove(session);
                }
                vec![msg]
            }
            Command::Chat { to, text, reply } => {
                let _ = reply.send(Ok(ChatSent::Sent));
                vec![ClientMessage::Message { to, text }]
            }
            Command::Leave { done } => {
                let _ = done.send(());
                Vec::new()
            }
        }
    }

    /// Forgets a subscriber: its sessions are stopped and its streams unpublished.
    fn drop_subscriber(&mut self, id: SubscriberId) -> Vec<ClientMessage> {
        self.subscribers.remove(&id);
        self.pending_plays.retain(|p| p.owner != id);
        self.held_plays.retain(|p| p.owner != id);
        let mut out = Vec::new();
        let sessions: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, owner)| **owner == id)
            .map(|(session, _)| session.clone())
            .collect();
        for session in sessions {
            self.sessions.remove(&session);
            out.push(ClientMessage::Stop { session });
        }
        let streams: Vec<String> = self
            .published
            .iter()
            .filter(|p| p.owner == id)
            .map(|p| p.info.stream.clone())
            .collect();
        for stream in streams {
            out.extend(self.unpublish(&stream));
        }
        out
    }

    fn unpublish(&mut self, stream: &str) -> Vec<ClientMessage> {
        let before = self.published.len();
        self.published.retain(|p| p.info.stream != stream);
        if self.published.len() == before {
            return Vec::new();
        }
        vec![ClientMessage::Unpublish {
            stream: stream.to_owned(),
        }]
    }

    /// Relays commands out and server messages in until the connection ends.
    async fn relay(&mut self, (mut ws, state): (Socket, ServerMessage)) -> Next {
        if let Err(why) = self.on_joined(&mut ws, state).await {
            return self.lost(why);
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        leave(&mut ws).await;
                        return Next::End;
                    };
                    if let Command::Leave { done } = command {
                        leave(&mut ws).await;
                        let _ = done.send(());
                        return Next::End;
                    }
                    for msg in self.apply(command) {
                        gst::trace!(crate::events::CAT, "sending {msg:?}");
                        if let Err(e) = send_json(&mut ws, &msg).await {
                            return self.lost(e.to_string());
                        }
                    }
                }
                msg = next_message(&mut ws) => match msg {
                    Some(Ok(msg)) => {
                        gst::trace!(crate::events::CAT, "received {msg:?}");
                        for reply in self.on_server(msg) {
                            if let Err(e) = send_json(&mut ws, &reply).await {
                                return self.lost(e.to_string());
                            }
                        }
                    }
                    Some(Err(e)) => return self.lost(e),
                    None => return self.lost("closed by the server".into()),
                },
            }
        }
    }

    /// In the room: tell everyone, re-announce own streams, send what was held.
    async fn on_joined(&mut self, ws: &mut Socket, state: ServerMessage) -> Result<(), String> {
        self.joined_once = true;
        if let ServerMessage::State {
            capacity,
            participants,
            ice_servers,
            ..
        } = state
        {
            self.capacity = capacity;
            self.view.send_modify(|view| {
                view.status = Status::Joined;
                view.participants = participants;
                view.ice_servers = ice_servers;
            });
        }
        self.broadcast(Event::Status(Status::Joined));
        self.broadcast(self.state_event());
        let mut out = Vec::new();
        for p in &self.published {
            let s = &p.info;
            out.push(ClientMessage::Publish {
                stream: s.stream.clone(),
                audio: s.audio,
                video: s.video,
            });
            if s.audio_muted || s.video_muted {
                out.push(ClientMessage::Mute {
                    stream: s.stream.clone(),
                    audio_muted: s.audio_muted,
                    video_muted: s.video_muted,
                });
            }
        }
        for play in std::mem::take(&mut self.held_plays) {
            out.extend(self.apply(Command::Play {
                owner: play.owner,
                participant: play.participant,
                stream: play.stream,
            }));
        }
        // Chat leaves the queue only once written, so a connection lost meanwhile keeps it.
        for msg in out {
            send_json(ws, &msg).await.map_err(|e| e.to_string())?;
        }
        while let Some(msg) = self.held_chat.front() {
            send_json(ws, msg).await.map_err(|e| e.to_string())?;
            self.held_chat.pop_front();
        }
        Ok(())
    }

    /// The connection broke: sessions end, and the actor will reconnect.
    fn lost(&mut self, why: String) -> Next {
        gst::warning!(
            crate::events::CAT,
            "{}@{} as {}: connection lost: {why}; reconnecting",
            self.key.room,
            self.key.server_url,
            self.key.username
        );
        self.set_status(Status::Reconnecting);
        for (session, owner) in std::mem::take(&mut self.sessions) {
            self.deliver(
                owner,
                Event::SessionEnded {
                    session,
                    reason: "connection lost".into(),
                },
            );
        }
        self.pending_plays.clear();
        Next::Reconnect
    }

    fn set_status(&mut self, status: Status) {
        self.view.send_modify(|view| {
            view.status = status;
            if status != Status::Joined {
                view.participants.clear();
            }
        });
        self.broadcast(Event::Status(status));
    }

    fn fatal(&mut self, reason: String, detail: String) {
        self.set_status(Status::Failed);
        self.broadcast(Event::Fatal {
            reason: reason.clone(),
            detail: detail.clone(),
        });
        self.fatal = Some((reason, detail));
    }

    /// After a fatal failure: answer commands until the last user leaves, so that a subscriber
    /// whose subscription was still queued learns the reason too.
    async fn failed(mut self) {
        let (reason, detail) = self.fatal.clone().unwrap_or_default();
        while let Some(command) = self.commands.recv().await {
            match command {
                Command::Subscribe { id, events } => {
                    let subscriber = Subscriber { events };
                    subscriber.deliver(Event::Status(Status::Failed));
                    subscriber.deliver(Event::Fatal {
                        reason: reason.clone(),
                        detail: detail.clone(),
                    });
                    self.subscribers.insert(id, subscriber);
                }
                Command::Unsubscribe { id, done } => {
                    self.subscribers.remove(&id);
                    let _ = done.send(());
                }
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(PublishError::Gone));
                }
                Command::Chat { reply, .. } => {
                    let _ = reply.send(Err(ChatError::Gone));
                }
                Command::Leave { done } => {
                    let _ = done.send(());
                    return;
                }
                Command::Unpublish { .. }
                | Command::Mute { .. }
                | Command::Play { .. }
                | Command::Session(_) => {}
            }
        }
    }

    /// Interprets a server message: updates the view, delivers events; returns replies.
    fn on_server(&mut self, msg: ServerMessage) -> Vec<ClientMessage> {
        self.view
            .send_modify(|view| update_view(&mut view.participants, &msg));
        match msg {
            ServerMessage::Welcome { .. } | ServerMessage::State { .. } => {}
            ServerMessage::Failed { reason, detail } => {
                // Only a join is answered with `failed`, and the actor joins once per connection.
                gst::warning!(crate::events::CAT, "unexpected failed: {reason:?} {detail}");
            }
            ServerMessage::Joined { username } => self.broadcast(Event::Joined { username }),
            ServerMessage::Left { username } => self.broadcast(Event::Left { username }),
            ServerMessage::Published { username, stream } => {
                self.broadcast(Event::Published { username, stream })
            }
            ServerMessage::Unpublished { username, stream } => {
                self.broadcast(Event::Unpublished { username, stream })
            }
            ServerMessage::Muted {
                username,
                stream,
                audio_muted,
                video_muted,
            } => self.broadcast(Event::Muted {
                username,
                stream,
                audio_muted,
                video_muted,
            }),
            ServerMessage::Message { from, to, text, ts } => {
                self.broadcast(Event::Message { from, to, text, ts })
            }
            ServerMessage::Error { code, message } => {
                self.broadcast(Event::Refused { code, message })
            }
            ServerMessage::SessionRequest {
                session,
                stream,
                viewer,
            } => {
                let Some(owner) = self
                    .published
                    .iter()
                    .find(|p| p.info.stream == stream)
                    .map(|p| p.owner)
                else {
                    return vec![ClientMessage::Stop { session }];
                };
                self.sessions.insert(session.clone(), owner);
                self.deliver(owner, Event::SessionRequested { session, viewer });
            }
            ServerMessage::SessionStarted {
                session,
                participant,
                stream,
            } => {
                let position = self
                    .pending_plays
                    .iter()
                    .position(|p| p.participant == participant && p.stream == stream);
                let Some(play) = position.and_then(|i| self.pending_plays.remove(i)) else {
                    // Its player has gone meanwhile: nobody wants this session.
                    return vec![ClientMessage::Stop { session }];
                };
                self.sessions.insert(session.clone(), play.owner);
                self.deliver(
                    play.owner,
                    Event::SessionStarted {
                        session,
                        participant,
                        stream,
                    },
                );
            }
            ServerMessage::Sdp {
                session,
                description,
            } => {
                if let Some(owner) = self.sessions.get(&session).copied() {
                    self.deliver(
                        owner,
                        Event::Sdp {
                            session,
                            description,
                        },
                    );
                }
            }
            ServerMessage::Ice {
                session,
                candidate,
                sdp_m_line_index,
                sdp_mid,
            } => {
                if let Some(owner) = self.sessions.get(&session).copied() {
                    self.deliver(
                        owner,
                        Event::Ice {
                            session,
                            candidate,
                            sdp_m_line_index,
                            sdp_mid,
                        },
                    );
                }
            }
            ServerMessage::SessionEnded { session, reason } => {
                if let Some(owner) = self.sessions.remove(&session) {
                    self.deliver(owner, Event::SessionEnded { session, reason });
                }
            }
        }
        Vec::new()
    }

    /// The room as it is now, as an event.
    fn state_event(&self) -> Event {
        Event::State {
            room: self.key.room.clone(),
            username: self.key.username.clone(),
            capacity: self.capacity,
            participants: self.view.borrow().participants.clone(),
        }
    }

    fn broadcast(&self, event: Event) {
        for subscriber in self.subscribers.values() {
            subscriber.deliver(event.clone());
        }
    }

    fn deliver(&self, id: SubscriberId, event: Event) {
        if let Some(subscriber) = self.subscribers.get(&id) {
            subscriber.deliver(event);
        }
    }
}

impl Subscriber {
    /// Never waits: the subscriber may itself be waiting for the actor.
    fn deliver(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            gst::warning!(
                crate::events::CAT,
                "a subscriber is {EVENT_QUEUE} events behind: dropping {event:?}"
            );
        }
    }
}

/// Sends `leave` and a close frame, then waits until the server closes its end: the server
/// has then taken the participant out of the room and told the others LEFT. Bounded by
/// [`LEAVE_TIMEOUT`] (a dead link never answers).
async fn leave(ws: &mut Socket) {
    let polite = async {
        send_json(ws, &ClientMessage::Leave {}).await?;
        ws.close(None).await?;
        while let Some(frame) = ws.next().await {
            frame?;
        }
        Ok::<(), async_tungstenite::tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, polite).await;
}

/// Keeps the list of other participants and their streams in step with room events.
fn update_view(participants: &mut Vec<Participant>, msg: &ServerMessage) {
    let find = |participants: &mut Vec<Participant>, name: &str| {
        participants.iter_mut().position(|p| p.username == name)
    };
    match msg {
        ServerMessage::State {
            participants: everyone,
            ..
        } => *participants = everyone.clone(),
        ServerMessage::Joined { username } => participants.push(Participant {
            username: username.clone(),
            streams: Vec::new(),
        }),
        ServerMessage::Left { username } => participants.retain(|p| &p.username != username),
        ServerMessage::Published { username, stream } => {
            if let Some(i) = find(participants, username) {
                participants[i].streams.push(stream.clone());
            }
        }
        ServerMessage::Unpublished { username, stream } => {
            if let Some(i) = find(participants, username) {
                participants[i].streams.retain(|s| &s.stream != stream);
            }
        }
        ServerMessage::Muted {
            username,
            stream,
            audio_muted,
            video_muted,
        } => {
            if let Some(i) = find(participants, username)
                && let Some(s) = participants[i]
                    .streams
                    .iter_mut()
                    .find(|s| &s.stream == stream)
            {
                s.audio_muted = *audio_muted;
                s.video_muted = *video_muted;
            }
        }
        _ => {}
    }
}

/// Why a connection attempt did not end in the room.
enum JoinError {
    /// The server said no; final.
    Refused { reason: String, detail: String },
    /// Network or protocol trouble; worth retrying.
    Io(String),
}

async fn connect_and_join(
    key: Key,
    token: Option<String>,
) -> Result<(Socket, ServerMessage), JoinError> {
    let io = |e: &dyn std::fmt::Display| JoinError::Io(e.to_string());
    let mut ws = connect(&key.server_url, key.tls_ca_file.as_deref()).await?;
    let join = ClientMessage::Join {
        room: key.room.clone(),
        username: key.username.clone(),
        token: token.map(Into::into),
    };
    send_json(&mut ws, &join).await.map_err(|e| io(&e))?;
    loop {
        match next_message(&mut ws).await {
            Some(Ok(ServerMessage::Welcome { .. })) => continue,
            Some(Ok(state @ ServerMessage::State { .. })) => return Ok((ws, state)),
            // One of several servers without its Redis, or a room moving after a server died:
            // a moment later the join succeeds (here or, through a load balancer, elsewhere).
            Some(Ok(ServerMessage::Failed {
                reason: FailReason::Unavailable,
                detail,
            })) => return Err(JoinError::Io(format!("server unavailable: {detail}"))),
            Some(Ok(ServerMessage::Failed { reason, detail })) => {
                return Err(JoinError::Refused {
                    reason: reason.as_str().to_owned(),
                    detail,
                });
            }
            Some(Ok(other)) => {
                return Err(JoinError::Io(format!(
                    "unexpected answer to join: {other:?}"
                )));
            }
            Some(Err(err)) => return Err(JoinError::Io(err)),
            None => return Err(JoinError::Io("connection closed while joining".into())),
        }
    }
}

/// Opens the WebSocket with TCP_NODELAY: each signaling message is small and waited for, and
/// Nagle's algorithm would hold one back until the server's delayed ACK (~40 ms a hop).
/// `wss://` trusts the system's roots and `ca_file`; a TLS failure is final (reason `tls`).
async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<Socket, JoinError> {
    let parsed = url::Url::parse(url).map_err(|e| JoinError::Io(format!("{url}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| JoinError::Io(format!("{url}: no host")))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| JoinError::Io(format!("{url}: no port")))?;
    let tls_refused = |detail: String| JoinError::Refused {
        reason: "tls".into(),
        detail,
    };
    let connector = match parsed.scheme() {
        "wss" => Some(crate::tls::connector(ca_file).map_err(tls_refused)?),
        _ => None,
    };
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| JoinError::Io(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = client_async_tls_with_connector_and_config(url, tcp, connector, None)
        .await
        .map_err(|e| match crate::tls::failure(&e, host) {
            Some(detail) => tls_refused(detail),
            None => JoinError::Io(e.to_string()),
        })?;
    Ok(ws)
}

async fn send_json(
    ws: &mut Socket,
    msg: &ClientMessage,
) -> Result<(), async_tungstenite::tungstenite::Error> {
    ws.send(Message::text(
        serde_json::to_string(msg).expect("protocol messages serialise"),
    ))
    .await
}

/// The next protocol message; `None` when the connection closed. Non-protocol text is an error
/// (a server speaking another protocol), pings and pongs are skipped.
async fn next_message(ws: &mut Socket) -> Option<Result<ServerMessage, String>> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => {
                // An `id` would echo one of ours; the actor sends none (it refuses bad publishes
                // itself), but a message carrying one is still a protocol message.
                return Some(
                    serde_json::from_str::<room_protocol::WithId<ServerMessage>>(text.as_str())
                        .map(|with_id| with_id.msg)
                        .map_err(|e| format!("not a room server: {e}")),
                );
            }
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}
