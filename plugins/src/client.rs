//! The room client: one participant's WebSocket to the room server.
//!
//! Elements never talk to the server themselves. They [`acquire`] the client for their
//! (server-url, room, username) — the registry hands every element of the process with the same
//! key the same client, which is what makes a `roomsink username=bot` and a `roomsrc
//! username=bot` one participant — and then:
//! - send commands through a bounded queue ([`RoomClient::send`], `publish`, `mute`);
//! - receive every server message and status change from a broadcast ([`RoomClient::subscribe`]),
//!   together with a snapshot of the room taken atomically with the subscription, so an element
//!   that starts late still learns who is there.
//!
//! One task owns the socket. It connects (retrying a few times at first), joins, and then relays
//! both ways. If the connection is lost after a successful join it reconnects with backoff,
//! joins again and re-announces the streams it publishes; sessions do not survive a reconnect.
//! A refused join (room full, name taken, unauthorized, invalid name) or a server that cannot be
//! reached at all is final: subscribers get [`RoomEvent::Fatal`] and the task ends.
//!
//! The client lives while an element holds it; dropping the last handle closes the command
//! queue, and the task sends `leave` and a close frame. [`release`] does that and waits, so that
//! an element going to NULL has left the room when its state change returns.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{ConnectStream, client_async_tls_with_connector_and_config};
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use room_protocol::{ClientMessage, FailReason, IceServer, Participant, ServerMessage, StreamInfo};
use tokio::sync::{broadcast, mpsc};

use crate::RUNTIME;

/// Commands queued for the socket. Bounded so that a stuck connection cannot grow memory; the
/// elements send little (SDP, ICE, chat), so 256 is far more than a healthy connection needs.
const COMMAND_QUEUE: usize = 256;
/// Events buffered per subscriber; a subscriber that falls this far behind skips events.
const EVENT_BUFFER: usize = 1024;
/// Attempts to reach the server before the first join counts as failed.
const FIRST_CONNECT_ATTEMPTS: u32 = 5;
/// Backoff between connection attempts: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How long [`release`] waits for `leave` to be sent.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Identifies one participant: elements with equal keys share a client.
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

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A message from the server.
    Server(Arc<ServerMessage>),
    /// The status changed.
    Status(Status),
    /// The participant cannot go on; `reason` is a protocol fail reason (`room-full`, ...) or
    /// `unreachable`.
    Fatal { reason: String, detail: String },
}

/// A snapshot of the room, consistent with the subscription it came with.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The status at subscription time.
    pub status: Status,
    /// The room's capacity (0 until joined).
    pub capacity: usize,
    /// Everyone else in the room and their streams.
    pub participants: Vec<Participant>,
}

/// A participant's connection; see the module doc.
pub struct RoomClient {
    key: Key,
    commands: mpsc::Sender<ClientMessage>,
    shared: Arc<Shared>,
    /// Receives once when the task has ended (after sending `leave`).
    finished: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// What the task and the handles share. The view and the broadcast are updated under one lock,
/// so `subscribe` gets a snapshot and a receiver that together miss nothing.
struct Shared {
    view: Mutex<View>,
    events: broadcast::Sender<RoomEvent>,
}

struct View {
    status: Status,
    /// The room's capacity, from `state`.
    capacity: usize,
    participants: Vec<Participant>,
    /// Own streams, re-announced after a reconnect.
    published: Vec<StreamInfo>,
    /// The ICE servers (TURN credentials included) from the latest `state`.
    ice_servers: Vec<IceServer>,
}

static REGISTRY: LazyLock<Mutex<HashMap<Key, Weak<RoomClient>>>> = LazyLock::new(Default::default);

/// The client for `key`: the running one if an element of this process already has it, else a
/// new one that starts connecting at once.
pub fn acquire(key: Key, token: Option<String>) -> Arc<RoomClient> {
    let mut registry = REGISTRY.lock().unwrap();
    registry.retain(|_, weak| weak.strong_count() > 0);
    if let Some(client) = registry.get(&key).and_then(Weak::upgrade)
        && client.status() != Status::Failed
    {
        return client;
    }
    let client = RoomClient::start(key.clone(), token);
    registry.insert(key, Arc::downgrade(&client));
    client
}

/// Drops an element's handle; when it was the last one, waits (briefly) until the client has
/// left the room and closed the socket.
pub fn release(client: Arc<RoomClient>) {
    if let Ok(client) = Arc::try_unwrap(client) {
        let RoomClient {
            commands, finished, ..
        } = client;
        drop(commands);
        let _ = finished.into_inner().unwrap().recv_timeout(LEAVE_TIMEOUT);
    }
}

impl RoomClient {
    fn start(key: Key, token: Option<String>) -> Arc<RoomClient> {
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            view: Mutex::new(View {
                status: Status::Connecting,
                capacity: 0,
                participants: Vec::new(),
                published: Vec::new(),
                ice_servers: Vec::new(),
            }),
            events,
        });
        let (done, finished) = std::sync::mpsc::channel();
        let task_shared = shared.clone();
        let task_key = key.clone();
        RUNTIME.spawn(async move {
            run(task_key, token, queue, &task_shared).await;
            let _ = done.send(());
        });
        Arc::new(RoomClient {
            key,
            commands,
            shared,
            finished: Mutex::new(finished),
        })
    }

    /// The participant this client is.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.shared.view.lock().unwrap().status
    }

    /// Whether `username` publishes `stream` in the room now.
    pub fn publishes(&self, username: &str, stream: &str) -> bool {
        let view = self.shared.view.lock().unwrap();
        view.participants
            .iter()
            .any(|p| p.username == username && p.streams.iter().any(|s| s.stream == stream))
    }

    /// The ICE servers the room server handed out at the latest join (empty before).
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.shared.view.lock().unwrap().ice_servers.clone()
    }

    /// Usernames in the room, own included (empty until joined).
    pub fn usernames(&self) -> Vec<String> {
        let view = self.shared.view.lock().unwrap();
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

    /// Every future event, and the room as it is now.
    pub fn subscribe(&self) -> (broadcast::Receiver<RoomEvent>, Snapshot) {
        let view = self.shared.view.lock().unwrap();
        let receiver = self.shared.events.subscribe();
        (
            receiver,
            Snapshot {
                status: view.status,
                capacity: view.capacity,
                participants: view.participants.clone(),
            },
        )
    }

    /// Queues a message for the server. Fails when the queue is full (the connection is stuck)
    /// or the client has ended.
    pub fn send(&self, msg: ClientMessage) -> Result<(), String> {
        self.commands
            .try_send(msg)
            .map_err(|err| format!("cannot send to the room server: {err}"))
    }

    /// Announces an own stream, now and after every reconnect.
    pub fn publish(&self, stream: &str, audio: bool, video: bool) -> Result<(), String> {
        let mut view = self.shared.view.lock().unwrap();
        view.published.retain(|s| s.stream != stream);
        view.published.push(StreamInfo {
            stream: stream.to_owned(),
            audio,
            video,
            audio_muted: false,
            video_muted: false,
        });
        drop(view);
        self.send(ClientMessage::Publish {
            stream: stream.to_owned(),
            audio,
            video,
        })
    }

    /// Withdraws an own stream.
    pub fn unpublish(&self, stream: &str) -> Result<(), String> {
        self.shared
            .view
            .lock()
            .unwrap()
            .published
            .retain(|s| s.stream != stream);
        self.send(ClientMessage::Unpublish {
            stream: stream.to_owned(),
        })
    }

    /// Sets an own stream's mute state (remembered for reconnects).
    pub fn mute(&self, stream: &str, audio_muted: bool, video_muted: bool) -> Result<(), String> {
        let mut view = self.shared.view.lock().unwrap();
        let Some(info) = view.published.iter_mut().find(|s| s.stream == stream) else {
            return Ok(()); // Not announced yet: publish() starts unmuted, the element re-sends.
        };
        info.audio_muted = audio_muted;
        info.video_muted = video_muted;
        drop(view);
        self.send(ClientMessage::Mute {
            stream: stream.to_owned(),
            audio_muted,
            video_muted,
        })
    }
}

impl Shared {
    fn set_status(&self, status: Status) {
        let mut view = self.view.lock().unwrap();
        view.status = status;
        if status != Status::Joined {
            view.participants.clear();
        }
        let _ = self.events.send(RoomEvent::Status(status));
    }

    /// Updates the view from a server message and broadcasts it, under one lock.
    fn apply(&self, msg: ServerMessage) {
        let mut view = self.view.lock().unwrap();
        if let ServerMessage::State {
            capacity,
            ice_servers,
            ..
        } = &msg
        {
            view.capacity = *capacity;
            view.ice_servers = ice_servers.clone();
        }
        update_view(&mut view.participants, &msg);
        let _ = self.events.send(RoomEvent::Server(Arc::new(msg)));
    }

    fn fatal(&self, reason: &str, detail: String) {
        self.set_status(Status::Failed);
        let _ = self.events.send(RoomEvent::Fatal {
            reason: reason.to_owned(),
            detail,
        });
    }
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

/// How a joined connection ended.
enum SessionEnd {
    /// Every handle is gone: we left.
    Closed,
    /// The connection broke.
    Lost(String),
}

async fn run(
    key: Key,
    token: Option<String>,
    mut commands: mpsc::Receiver<ClientMessage>,
    shared: &Shared,
) {
    let mut attempt: u32 = 0;
    let mut joined_once = false;
    loop {
        match connect_and_join(&key, token.clone()).await {
            Ok((ws, state)) => {
                attempt = 0;
                // After a reconnect, commands queued meanwhile that refer to the old connection
                // (sessions, announcements) are stale: drop them; streams are re-announced by
                // `relay`. Chat is kept. Before the first join everything queued is current.
                let held = if joined_once {
                    take_chat(&mut commands)
                } else {
                    Vec::new()
                };
                joined_once = true;
                let republish = {
                    let mut view = shared.view.lock().unwrap();
                    view.status = Status::Joined;
                    view.published.clone()
                };
                let _ = shared.events.send(RoomEvent::Status(Status::Joined));
                shared.apply(state);
                match relay(ws, &mut commands, shared, republish, held).await {
                    SessionEnd::Closed => return,
                    SessionEnd::Lost(why) => {
                        log_warning(&key, &format!("connection lost: {why}; reconnecting"));
                        shared.set_status(Status::Reconnecting);
                    }
                }
            }
            Err(JoinError::Refused { reason, detail }) => return shared.fatal(&reason, detail),
            Err(JoinError::Io(why)) => {
                attempt += 1;
                if !joined_once && attempt >= FIRST_CONNECT_ATTEMPTS {
                    let detail = format!(
                        "cannot reach {} after {attempt} attempts: {why}",
                        key.server_url
                    );
                    return shared.fatal("unreachable", detail);
                }
            }
        }
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << attempt.min(5))
            .min(BACKOFF_CAP);
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                // Messages meant for the lost connection are stale; the queue closing means every
                // handle is gone and there is nothing left to reconnect for.
                command = commands.recv() => if command.is_none() { return },
            }
        }
    }
}

/// Empties the queue, keeping only chat messages.
fn take_chat(commands: &mut mpsc::Receiver<ClientMessage>) -> Vec<ClientMessage> {
    let mut chat = Vec::new();
    while let Ok(msg) = commands.try_recv() {
        if matches!(msg, ClientMessage::Message { .. }) {
            chat.push(msg);
        }
    }
    chat
}

type Socket = WebSocketStream<ConnectStream>;

async fn connect_and_join(
    key: &Key,
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

/// Relays commands out and server messages in until the connection ends.
async fn relay(
    mut ws: Socket,
    commands: &mut mpsc::Receiver<ClientMessage>,
    shared: &Shared,
    republish: Vec<StreamInfo>,
    held: Vec<ClientMessage>,
) -> SessionEnd {
    for s in republish {
        let publish = ClientMessage::Publish {
            stream: s.stream.clone(),
            audio: s.audio,
            video: s.video,
        };
        let mute = ClientMessage::Mute {
            stream: s.stream,
            audio_muted: s.audio_muted,
            video_muted: s.video_muted,
        };
        if let Err(e) = send_json(&mut ws, &publish).await {
            return SessionEnd::Lost(e.to_string());
        }
        if (s.audio_muted || s.video_muted)
            && let Err(e) = send_json(&mut ws, &mute).await
        {
            return SessionEnd::Lost(e.to_string());
        }
    }
    for msg in held {
        if let Err(e) = send_json(&mut ws, &msg).await {
            return SessionEnd::Lost(e.to_string());
        }
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(msg) => {
                    gst::trace!(crate::events::CAT, "sending {msg:?}");
                    if let Err(e) = send_json(&mut ws, &msg).await {
                        return SessionEnd::Lost(e.to_string());
                    }
                }
                None => {
                    let _ = send_json(&mut ws, &ClientMessage::Leave {}).await;
                    let _ = ws.close(None).await;
                    return SessionEnd::Closed;
                }
            },
            msg = next_message(&mut ws) => match msg {
                Some(Ok(msg)) => {
                    gst::trace!(crate::events::CAT, "received {msg:?}");
                    shared.apply(msg)
                }
                Some(Err(e)) => return SessionEnd::Lost(e),
                None => return SessionEnd::Lost("closed by the server".into()),
            },
        }
    }
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
                return Some(
                    serde_json::from_str(text.as_str())
                        .map_err(|e| format!("not a room server: {e}")),
                );
            }
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}

fn log_warning(key: &Key, what: &str) {
    gst::warning!(
        crate::events::CAT,
        "{}@{} as {}: {what}",
        key.room,
        key.server_url,
        key.username
    );
}
