//! The actor: the one task that owns a participant's WebSocket and [`Presence`], and does what
//! the rules say.
//!
//! Its life: connect and join (commands are handled meanwhile: bookkeeping, held plays and
//! chat), relay (commands out, server messages in) until the connection ends, back off and
//! connect again. A refused join or a server unreachable from the start ends the relaying for
//! good; the actor then only answers commands until its last user leaves. Each input goes
//! through [`Presence`], and the actor delivers the events, answers the chat requests and writes
//! the messages of the [`Reaction`].

use std::collections::{BTreeMap, HashMap};

use room_protocol::{ClientMessage, ServerMessage, WithId};
use tokio::sync::{mpsc, oneshot, watch};

use super::handle::{Command, EVENT_QUEUE, View};
use super::state::{Audience, ChatTicket, Presence, Reaction};
use super::transport::{self, JoinError, Socket, TransportError};
use super::{
    ChatError, ChatSent, Event, FIRST_CONNECT_ATTEMPTS, JoinFailure, Key, RoomClient, SubscriberId,
    backoff,
};
use crate::RUNTIME;
use crate::events::CAT;

/// Commands queued for the actor. Bounded so that a stuck actor cannot grow memory; elements send
/// little (SDP, ICE, chat), so 256 is far more than a healthy participant needs.
const COMMAND_QUEUE: usize = 256;

/// Starts the actor of `key` on the plugin's runtime; it connects at once.
pub(super) fn spawn(key: Key, token: Option<String>) -> RoomClient {
    let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
    let presence = Presence::new(&key.room, &key.username);
    let (view, view_rx) = watch::channel(view_of(&presence));
    let actor = Actor {
        key: key.clone(),
        token,
        commands: queue,
        view,
        subscribers: BTreeMap::new(),
        chat_replies: HashMap::new(),
        tickets: 0,
        presence,
    };
    RUNTIME.spawn(actor.run());
    RoomClient::new(key, commands, view_rx)
}

fn view_of(presence: &Presence) -> View {
    View {
        status: presence.status(),
        participants: presence.participants().to_vec(),
        ice_servers: presence.ice_servers().to_vec(),
    }
}

/// How a phase of the actor ended.
enum Next {
    /// Connect (again).
    Reconnect,
    /// The actor is done (left, or every handle gone).
    End,
}

/// A command taken off the queue.
enum Taken {
    /// Handled; what to write when joined.
    Handled(Vec<WithId<ClientMessage>>),
    /// The last user leaves: answer `done` once left.
    Leave(oneshot::Sender<()>),
    /// Every handle is gone.
    Orphaned,
}

struct Actor {
    key: Key,
    token: Option<String>,
    commands: mpsc::Receiver<Command>,
    /// What the handles read; updated after every reaction.
    view: watch::Sender<View>,
    subscribers: BTreeMap<SubscriberId, mpsc::Sender<Event>>,
    /// Callers of `send_chat` waiting for a verdict.
    chat_replies: HashMap<ChatTicket, oneshot::Sender<Result<ChatSent, ChatError>>>,
    tickets: ChatTicket,
    presence: Presence,
}

impl Actor {
    /// The actor's life: connect and join, relay until the connection ends, again.
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            let joined = match self.connect(&mut attempt).await {
                Ok(joined) => joined,
                Err(Next::End) => return,
                Err(Next::Reconnect) => continue,
            };
            attempt = 0;
            if let Next::End = self.relay(joined).await {
                return;
            }
        }
    }

    /// Connects and joins, handling commands meanwhile; backs off after a failed attempt. After a
    /// final failure, only answers commands until the last user leaves.
    async fn connect(&mut self, attempt: &mut u32) -> Result<(Socket, ServerMessage), Next> {
        let token = self.token.clone();
        let key = self.key.clone();
        let joining = transport::connect_and_join(&key, token.as_deref());
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
        let why = match failure {
            JoinError::Final(failure) => return Err(self.failed(failure).await),
            retry => retry.to_string(),
        };
        *attempt += 1;
        if !self.presence.joined_once() && *attempt >= FIRST_CONNECT_ATTEMPTS {
            let detail = format!(
                "cannot reach {} after {attempt} attempts: {why}",
                self.key.server_url
            );
            return Err(self.failed(JoinFailure::Unreachable(detail)).await);
        }
        gst::debug!(CAT, "{}: {why}", self.key.server_url);
        let wait = tokio::time::sleep(backoff(*attempt));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return Err(Next::Reconnect),
                command = self.commands.recv() => self.offline(command)?,
            }
        }
    }

    /// A command while not joined (nothing is written). `Err` ends the actor.
    fn offline(&mut self, command: Option<Command>) -> Result<(), Next> {
        match self.take(command) {
            Taken::Handled(_) => Ok(()),
            Taken::Leave(done) => {
                let _ = done.send(());
                Err(Next::End)
            }
            Taken::Orphaned => Err(Next::End),
        }
    }

    /// Final: everyone is told, then commands are answered (a subscriber whose subscription was
    /// still queued learns the reason too) until the last user leaves.
    async fn failed(&mut self, failure: JoinFailure) -> Next {
        let reaction = self.presence.failed(failure);
        self.perform(reaction);
        loop {
            let command = self.commands.recv().await;
            if self.offline(command).is_err() {
                return Next::End;
            }
        }
    }

    /// Relays commands out and server messages in until the connection ends.
    async fn relay(&mut self, (mut ws, state): (Socket, ServerMessage)) -> Next {
        let reaction = self.presence.joined(state);
        let out = self.perform(reaction);
        if let Err((why, unsent)) = write(&mut ws, out).await {
            return self.lost(why, unsent);
        }
        loop {
            let out = tokio::select! {
                command = self.commands.recv() => match self.take(command) {
                    Taken::Handled(out) => out,
                    Taken::Leave(done) => {
                        transport::leave(&mut ws).await;
                        let _ = done.send(());
                        return Next::End;
                    }
                    Taken::Orphaned => {
                        transport::leave(&mut ws).await;
                        return Next::End;
                    }
                },
                msg = transport::next_message(&mut ws) => match msg {
                    Some(Ok(msg)) => {
                        gst::trace!(CAT, "received {msg:?}");
                        let reaction = self.presence.on_server(msg);
                        self.perform(reaction)
                    }
                    Some(Err(e)) => return self.lost(e, Vec::new()),
                    None => return self.lost(TransportError::Closed, Vec::new()),
                },
            };
            if let Err((why, unsent)) = write(&mut ws, out).await {
                return self.lost(why, unsent);
            }
        }
    }

    /// The connection broke: the rules decide what ends and what waits; the actor reconnects.
    fn lost(&mut self, why: TransportError, unsent: Vec<WithId<ClientMessage>>) -> Next {
        gst::warning!(
            CAT,
            "{}@{} as {}: connection lost: {why}; reconnecting",
            self.key.room,
            self.key.server_url,
            self.key.username
        );
        let reaction = self.presence.lost(unsent);
        self.perform(reaction);
        Next::Reconnect
    }

    /// Takes one command off the queue and applies it.
    fn take(&mut self, command: Option<Command>) -> Taken {
        let Some(command) = command else {
            return Taken::Orphaned;
        };
        let reaction = match command {
            Command::Leave { done } => return Taken::Leave(done),
            Command::Subscribe { id, events } => {
                self.subscribers.insert(id, events);
                self.presence.subscribed(id)
            }
            Command::Unsubscribe { id, done } => {
                self.subscribers.remove(&id);
                let reaction = self.presence.unsubscribed(id);
                let _ = done.send(());
                reaction
            }
            Command::Publish {
                owner,
                stream,
                audio,
                video,
                reply,
            } => match self.presence.publish(owner, &stream, audio, video) {
                Ok(reaction) => {
                    let _ = reply.send(Ok(()));
                    reaction
                }
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                    Reaction::default()
                }
            },
            Command::Unpublish { stream } => self.presence.unpublish(&stream),
            Command::Mute {
                stream,
                audio_muted,
                video_muted,
            } => self.presence.mute(&stream, audio_muted, video_muted),
            Command::Play {
                owner,
                participant,
                stream,
            } => self.presence.play(owner, &participant, &stream),
            Command::Session(msg) => self.presence.session(msg),
            Command::Chat { to, text, reply } => {
                self.tickets += 1;
                self.chat_replies.insert(self.tickets, reply);
                self.presence.chat(self.tickets, to, text)
            }
        };
        Taken::Handled(self.perform(reaction))
    }

    /// Delivers a reaction's events and chat verdicts, updates the view; returns what to write.
    fn perform(&mut self, reaction: Reaction) -> Vec<WithId<ClientMessage>> {
        let Reaction {
            events,
            send,
            chat_answers,
        } = reaction;
        self.view.send_if_modified(|view| {
            let now = view_of(&self.presence);
            let changed = *view != now;
            *view = now;
            changed
        });
        for (audience, event) in events {
            match audience {
                Audience::Everyone => {
                    for events in self.subscribers.values() {
                        deliver(events, event.clone());
                    }
                }
                Audience::One(id) => {
                    if let Some(events) = self.subscribers.get(&id) {
                        deliver(events, event);
                    }
                }
            }
        }
        for (ticket, verdict) in chat_answers {
            if let Some(reply) = self.chat_replies.remove(&ticket) {
                let _ = reply.send(verdict);
            }
        }
        send
    }
}

/// Never waits: the subscriber may itself be waiting for the actor.
fn deliver(events: &mpsc::Sender<Event>, event: Event) {
    if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
        gst::warning!(
            CAT,
            "a subscriber is {EVENT_QUEUE} events behind: dropping {event:?}"
        );
    }
}

/// Writes `out` in order; on failure, why and what was not written (the failed message first).
async fn write(
    ws: &mut Socket,
    out: Vec<WithId<ClientMessage>>,
) -> Result<(), (TransportError, Vec<WithId<ClientMessage>>)> {
    let mut out = out.into_iter();
    while let Some(msg) = out.next() {
        gst::trace!(CAT, "sending {msg:?}");
        if let Err(why) = transport::send(ws, &msg).await {
            return Err((why, std::iter::once(msg).chain(out).collect()));
        }
    }
    Ok(())
}
