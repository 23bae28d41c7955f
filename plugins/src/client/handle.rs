//! [`RoomClient`]: the cheap handle elements and signallers hold on a participant's actor, and
//! the commands it sends.

use std::sync::atomic::{AtomicU64, Ordering};

use room_protocol::{ClientMessage, IceServer, Participant};
use tokio::sync::{mpsc, oneshot, watch};

use super::bridge::{block_on, block_on_reply};
use super::{
    CHAT_ANSWER_WAIT, ChatError, ChatSent, Event, Key, LEAVE_TIMEOUT, PublishError, Status,
    SubscriberId,
};

/// Events buffered per subscriber. The actor never waits for a subscriber (a subscriber may be
/// waiting for the actor); one that falls this far behind loses events, with a warning.
pub(super) const EVENT_QUEUE: usize = 1024;

static NEXT_SUBSCRIBER: AtomicU64 = AtomicU64::new(1);

/// Commands the actor understands; see [`RoomClient`] for each one's meaning.
pub(super) enum Command {
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
#[derive(Debug, Clone, PartialEq)]
pub(super) struct View {
    pub status: Status,
    /// Everyone else in the room and their streams (empty unless joined).
    pub participants: Vec<Participant>,
    /// The ICE servers (TURN credentials included) from the latest `state`.
    pub ice_servers: Vec<IceServer>,
}

/// A handle on a participant's actor; cheap to clone. Dropping handles does not end the actor:
/// [`super::release`] by the last user does.
#[derive(Clone)]
pub struct RoomClient {
    key: Key,
    /// Tells registry entries apart after a failed actor was replaced.
    actor: u64,
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
}

impl RoomClient {
    pub(super) fn new(
        key: Key,
        commands: mpsc::Sender<Command>,
        view: watch::Receiver<View>,
    ) -> RoomClient {
        static NEXT_ACTOR: AtomicU64 = AtomicU64::new(1);
        RoomClient {
            key,
            actor: NEXT_ACTOR.fetch_add(1, Ordering::Relaxed),
            commands,
            view,
        }
    }

    /// The participant this is.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Which actor this handle reaches (the registry replaces a failed one under the same key).
    pub(super) fn actor(&self) -> u64 {
        self.actor
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
        let id = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed);
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

    /// Asks to play `participant`'s `stream`; the session comes to subscriber `owner` as a
    /// `session-started`. While not joined the request waits for the join.
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

    /// Sends a chat message to the room (`to` = None) or to one participant and returns the
    /// server's verdict: accepted, or refused with the protocol's code (`rate-limited`, ...).
    /// While the connection is away it is held and sent after the rejoin ([`ChatSent::Held`]);
    /// what the server then decides about it is reported as an [`Event::Room`] `error` if it
    /// refuses.
    pub fn send_chat(&self, to: Option<String>, text: String) -> Result<ChatSent, ChatError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Chat { to, text, reply })
            .map_err(|_| ChatError::Gone)?;
        block_on_reply(answer, CHAT_ANSWER_WAIT).unwrap_or_else(|| {
            // No answer: the actor ended meanwhile, or the server is silent.
            Err(if self.commands.is_closed() {
                ChatError::Gone
            } else {
                ChatError::NoAnswer
            })
        })
    }

    /// Leaves the room and ends the actor; returns once the server closed the connection (or
    /// after [`LEAVE_TIMEOUT`]). Use [`super::release`]: it calls this for the last user only.
    pub(super) fn leave(&self) {
        let (done, finished) = oneshot::channel();
        if self.command(Command::Leave { done }).is_ok() {
            // The actor bounds its own wait; the extra second covers a busy runtime.
            let _ = block_on_reply(finished, LEAVE_TIMEOUT + std::time::Duration::from_secs(1));
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
