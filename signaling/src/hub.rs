//! The hub: the room rules plus the way to reach every connection, behind one lock.
//!
//! A connection registers its outgoing queue and gets a [`PeerId`]; from then on it hands every
//! message it reads to [`Hub::handle`]. The hub applies the message to the [`Routing`] — the
//! room rules ([`crate::rooms::Rooms`]) plus, with other nodes, where each participant's
//! messages go — and carries out the [`Action`]s it returns while still holding the lock, so
//! every participant sees room events in the same order the rules produced them. The cluster's
//! tasks (`crate::cluster`) feed it what they read from Redis the same way ([`Hub::update`]);
//! the hub hands what the routing sends to other nodes to the cluster's writer queue, and what
//! it asks of the media engine (`--media sfu`) to the media task's queue (`crate::media`): both
//! filled under the lock without waiting, in the rules' order, and emptied by their tasks
//! outside it — the engine is never called, let alone awaited, while the lock is held.
//!
//! The lock is a std `Mutex`: nothing awaits while holding it (delivery is `try_send`), and the
//! critical sections are short. A connection whose queue is full is a reader that cannot keep
//! up: rather than buffer without bound, the hub drops its queue sender (the connection task sees
//! the queue close and ends the socket) and takes the participant out of its room at once, so
//! the others get LEFT without waiting for TCP to notice.
//!
//! A participant that leaves (or whose connection ends) gets back a [`Flush`]: the point every
//! other local member's writer must reach for the LEFT it caused to be on their sockets. The
//! leaving connection waits for it before it closes its socket, so that a client that waits for
//! the server to close (roomsink/roomsrc going to NULL) returns only after the others were sent
//! LEFT. Members served by other nodes (`--redis`) are not covered: their LEFT travels through
//! Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use room_protocol::{ClientMessage, ErrorCode, ServerMessage, WithId};
use tokio::sync::{Notify, mpsc};

use crate::auth::{Grants, Refusal};
use crate::cluster::outbound::OutboundQueue;
use crate::cluster::rules::{Action, Actions, Routing};
use crate::rooms::{MediaCommand, PeerId, RoomRules, RoomSummary};

/// Shared by the HTTP handlers and every connection task (in an `Arc`).
#[derive(Debug)]
pub struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    /// The room rules and, with other nodes, where each participant's messages go.
    routing: Routing,
    /// Each open connection's outgoing queue (serialised JSON text). Inserted by `register`;
    /// removed by `unregister`, by `carry_out` when the queue is full, or when the routing
    /// closes the connection — dropping the sender is what tells the connection task to close.
    queues: HashMap<PeerId, Queue>,
    /// To Redis, with other nodes (`--redis`); `None` on a single node.
    outbound: Option<Arc<OutboundQueue>>,
    /// To the media engine's task (`--media sfu`, see `crate::media`); `None` in mesh mode.
    media: Option<mpsc::Sender<MediaCommand>>,
}

/// A connection's outgoing queue and how far its writer has got with it.
#[derive(Debug)]
pub(crate) struct Queue {
    sender: mpsc::Sender<String>,
    progress: Arc<Progress>,
}

/// How many of one connection's outgoing messages the hub queued and the connection task wrote
/// to the socket. The connection task reports each write ([`Progress::wrote`]) and its end
/// ([`Progress::close`]: nothing more will be written, nobody should wait).
#[derive(Debug, Default)]
pub struct Progress {
    queued: AtomicU64,
    written: AtomicU64,
    closed: AtomicBool,
    changed: Notify,
}

impl Progress {
    /// One more queued message is on the socket.
    pub fn wrote(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// The connection writes no more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Returns once `mark` messages are written, or the connection ended.
    async fn reached(&self, mark: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a write between the check and the await wakes us.
            changed.as_mut().enable();
            if self.closed.load(Ordering::SeqCst) || self.written.load(Ordering::SeqCst) >= mark {
                return;
            }
            changed.await;
        }
    }
}

/// Messages queued to some connections, to wait for until they are written (see the module
/// doc). Empty: nothing to wait for.
#[derive(Debug, Default)]
#[must_use]
pub struct Flush(Vec<(Arc<Progress>, u64)>);

impl Flush {
    /// Adds `other`'s messages.
    pub fn extend(&mut self, other: Flush) {
        self.0.extend(other.0);
    }

    /// Waits until every message is written (or its connection ended), at most `limit`: a
    /// reader that does not keep up must not hold a leaving participant. Returns whether all
    /// were written in time.
    pub async fn wait(self, limit: Duration) -> bool {
        let all = futures::future::join_all(self.0.iter().map(|(p, mark)| p.reached(*mark)));
        tokio::time::timeout(limit, all).await.is_ok()
    }
}

impl Hub {
    /// A hub with no rooms.
    pub fn new(rules: RoomRules) -> Self {
        Hub {
            state: Mutex::new(HubState {
                routing: Routing::new(rules),
                queues: HashMap::new(),
                outbound: None,
                media: None,
            }),
        }
    }

    /// A new connection: it gets an id and, through `queue`, the `welcome` message. Its task
    /// reports its writes to `progress`.
    pub fn register(&self, queue: mpsc::Sender<String>, progress: Arc<Progress>) -> PeerId {
        self.register_with(queue, progress, Routing::connect)
    }

    /// [`Self::register`] for a client that offers the sessions it views through the server
    /// (see [`crate::rooms::Rooms::connect_offering`]).
    pub fn register_offering(
        &self,
        queue: mpsc::Sender<String>,
        progress: Arc<Progress>,
    ) -> PeerId {
        self.register_with(queue, progress, Routing::connect_offering)
    }

    fn register_with(
        &self,
        queue: mpsc::Sender<String>,
        progress: Arc<Progress>,
        connect: fn(&mut Routing) -> (PeerId, Actions),
    ) -> PeerId {
        let mut state = self.state.lock().unwrap();
        let (peer, welcome) = connect(&mut state.routing);
        let queue = Queue {
            sender: queue,
            progress,
        };
        state.queues.insert(peer, queue);
        state.carry_out(welcome);
        peer
    }

    /// Applies a message read from `peer`'s connection.
    pub fn handle(&self, peer: PeerId, msg: ClientMessage) {
        let _ = self.handle_request(peer, msg, None);
    }

    /// Applies a message that carried the request id `id`: the `error` / `failed` it causes
    /// to `peer` echoes the id (the room rules never see ids), also when the room's owner is
    /// another node (`--redis`).
    /// Returns what a `leave` queued to the others (LEFT, ...), to wait for (see the module
    /// doc); an empty [`Flush`] for any other message (and for one forwarded to another node).
    pub fn handle_request(&self, peer: PeerId, msg: ClientMessage, id: Option<String>) -> Flush {
        let leave = matches!(msg, ClientMessage::Leave {});
        let mut state = self.state.lock().unwrap();
        let actions = state.routing.handle(peer, msg, id);
        let queued = state.carry_out(actions);
        if leave {
            queued.into_flush_except(peer)
        } else {
            Flush::default()
        }
    }

    /// `peer` asks to join a room run here; `admitted` is the verdict on its token (see
    /// [`crate::rooms::Rooms::join`]). A refusal echoes the request id `id`, as in
    /// [`Self::handle_request`].
    pub fn join(
        &self,
        peer: PeerId,
        room: String,
        username: String,
        admitted: Result<Grants, Refusal>,
        id: Option<String>,
    ) {
        // The clock is read here, at the edge: the rules stay free of I/O.
        let now = SystemTime::now();
        self.update(|routing| routing.join(peer, room, username, admitted, id, now));
    }

    /// Answers input that never became a message (malformed, too large) with an `error`.
    pub fn reject(&self, peer: PeerId, code: ErrorCode, message: String) {
        self.reject_request(peer, code, message, None);
    }

    /// [`Self::reject`] for a message that was read but refused before the room rules (a rate
    /// limit): the `error` echoes its request id `id`.
    pub fn reject_request(
        &self,
        peer: PeerId,
        code: ErrorCode,
        message: String,
        id: Option<String>,
    ) {
        let error = ServerMessage::Error { code, message };
        self.update(|routing| routing.answer(peer, error, id));
    }

    /// Whether `peer` is in a room now (here, or at another node from the moment its join was
    /// forwarded).
    pub fn is_joined(&self, peer: PeerId) -> bool {
        self.read(|routing| routing.is_joined(peer))
    }

    /// The connection ended: the participant leaves its room. Returns what that queued to the
    /// others (LEFT, ...), to wait for (see the module doc).
    pub fn unregister(&self, peer: PeerId) -> Flush {
        let mut state = self.state.lock().unwrap();
        state.queues.remove(&peer);
        let actions = state.routing.disconnect(peer);
        state.carry_out(actions).into_flush_except(peer)
    }

    /// The `/rooms` listing of this node.
    pub fn summary(&self) -> Vec<RoomSummary> {
        self.read(Routing::summary)
    }

    /// This node serves rooms with others as `node`: the routing's items for Redis go to
    /// `outbound` (see [`Routing::join_cluster`] for `first_session`).
    pub(crate) fn join_cluster(
        &self,
        node: String,
        first_session: u64,
        outbound: Arc<OutboundQueue>,
    ) {
        let mut state = self.state.lock().unwrap();
        state.routing.join_cluster(node, first_session);
        state.outbound = Some(outbound);
    }

    /// The rules' media commands go to `commands` from now on (`crate::media`'s task).
    pub(crate) fn attach_media(&self, commands: mpsc::Sender<MediaCommand>) {
        self.state.lock().unwrap().media = Some(commands);
    }

    /// Applies one input to the routing and carries out the actions it returns, under one
    /// lock (as every method of the hub does).
    pub(crate) fn update(&self, input: impl FnOnce(&mut Routing) -> Actions) {
        self.update_with(|routing| ((), input(routing)));
    }

    /// [`Self::update`] for an input that also answers something.
    pub(crate) fn update_with<R>(&self, input: impl FnOnce(&mut Routing) -> (R, Actions)) -> R {
        let mut state = self.state.lock().unwrap();
        let (answer, actions) = input(&mut state.routing);
        let _ = state.carry_out(actions);
        answer
    }

    /// Asks the routing a question.
    pub(crate) fn read<R>(&self, question: impl FnOnce(&Routing) -> R) -> R {
        question(&self.state.lock().unwrap().routing)
    }
}

impl HubState {
    /// Carries out the routing's actions in order: queues each message (a peer whose queue is
    /// full is dropped and leaves its room, which produces more actions, carried out the same
    /// way), closes connections, hands items for Redis to the writer's queue. Returns where
    /// each local recipient's queue stood after its last message.
    fn carry_out(&mut self, mut actions: Actions) -> Queued {
        let mut queued = Queued::default();
        while !actions.is_empty() {
            let mut dropped = Vec::new();
            let mut overloaded = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::Send { peer, msg, id } => {
                        let Some(queue) = self.queues.get(&peer) else {
                            continue;
                        };
                        let text = serde_json::to_string(&WithId { id, msg })
                            .expect("protocol messages always serialise");
                        if queue.sender.try_send(text).is_err() {
                            tracing::warn!(
                                peer,
                                "outgoing queue full or closed: dropping the connection"
                            );
                            self.queues.remove(&peer);
                            queued.0.remove(&peer);
                            dropped.push(peer);
                        } else {
                            let mark = queue.progress.queued.fetch_add(1, Ordering::SeqCst) + 1;
                            queued.0.insert(peer, (queue.progress.clone(), mark));
                        }
                    }
                    Action::Close { peer } => {
                        self.queues.remove(&peer);
                        queued.0.remove(&peer);
                    }
                    Action::Remote(item) => {
                        if let Some(outbound) = &self.outbound {
                            outbound.send(item);
                        }
                    }
                    // Queued in the rules' order, without waiting: the engine is called by
                    // its own task, never under this lock.
                    Action::Media(command) => {
                        let Some(media) = &self.media else {
                            continue;
                        };
                        let session = command.session().to_owned();
                        if media.try_send(command).is_err() {
                            tracing::warn!(session, "media queue full: refusing the session");
                            overloaded.push(session);
                        }
                    }
                }
            }
            for peer in dropped {
                actions.extend(self.routing.disconnect(peer));
            }
            for session in overloaded {
                let reason = "the media server is overloaded";
                actions.extend(self.routing.media_failed(&session, reason));
            }
        }
        queued
    }
}

/// The local recipients of a delivery, each with the count its queue reached.
#[derive(Default)]
struct Queued(HashMap<PeerId, (Arc<Progress>, u64)>);

impl Queued {
    fn into_flush_except(mut self, peer: PeerId) -> Flush {
        self.0.remove(&peer);
        Flush(self.0.into_values().collect())
    }
}
