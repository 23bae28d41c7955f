//! The hub: the room rules plus the way to reach every connection, behind one lock.
//!
//! A connection registers its outgoing queue and gets a [`PeerId`]; from then on it hands every
//! message it reads to [`Hub::handle`]. The hub applies the message to [`Rooms`] and delivers the
//! resulting [`Outbox`] while still holding the lock, so every participant sees room events in
//! the same order the rules produced them.
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
use crate::cluster::{Remote, changes_members};
use crate::rooms::{Outbox, PeerId, RoomRules, RoomSummary, Rooms};

/// Shared by the HTTP handlers and every connection task (in an `Arc`).
#[derive(Debug)]
pub struct Hub {
    pub(crate) state: Mutex<HubState>,
}

#[derive(Debug)]
pub(crate) struct HubState {
    pub(crate) rooms: Rooms,
    /// Each open connection's outgoing queue (serialised JSON text). Inserted by `register`;
    /// removed by `unregister`, or by `deliver` when the queue is full — dropping the sender is
    /// what tells the connection task to close.
    pub(crate) queues: HashMap<PeerId, Queue>,
    pub(crate) next_peer: PeerId,
    /// Rooms shared with other nodes (`--redis`); empty and unused on a single node.
    pub(crate) remote: Remote,
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
                rooms: Rooms::new(rules),
                queues: HashMap::new(),
                next_peer: 1,
                remote: Remote::default(),
            }),
        }
    }

    /// A new connection: it gets an id and, through `queue`, the `welcome` message. Its task
    /// reports its writes to `progress`.
    pub fn register(&self, queue: mpsc::Sender<String>, progress: Arc<Progress>) -> PeerId {
        let mut state = self.state.lock().unwrap();
        let peer = state.next_peer;
        state.next_peer += 1;
        let queue = Queue {
            sender: queue,
            progress,
        };
        state.queues.insert(peer, queue);
        let out = state.rooms.connect(peer);
        state.deliver(out);
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
        let mut state = self.state.lock().unwrap();
        if state.forward(peer, &msg, id.as_deref()) {
            return Flush::default();
        }
        let before = state.rooms.room_name(peer).map(str::to_owned);
        let changes_members = changes_members(&msg);
        let leave = matches!(msg, ClientMessage::Leave {});
        let out = state.rooms.handle(peer, msg);
        let answered = id.map(|id| (peer, id));
        let queued = state.deliver_counting(out, answered.as_ref());
        if changes_members {
            state.record_rooms(peer, before);
        }
        if leave {
            queued.into_flush_except(peer)
        } else {
            Flush::default()
        }
    }

    /// `peer` asks to join; `admitted` is the verdict on its token (see [`Rooms::join`]). A
    /// refusal echoes the request id `id`, as in [`Self::handle_request`].
    pub fn join(
        &self,
        peer: PeerId,
        room: String,
        username: String,
        admitted: Result<Grants, Refusal>,
        id: Option<String>,
    ) {
        let mut state = self.state.lock().unwrap();
        let answered = id.map(|id| (peer, id));
        if state.remote.routes.contains_key(&peer) {
            let refusal = vec![(peer, crate::cluster::already_joined())];
            return state.deliver_answering(refusal, answered.as_ref());
        }
        // The clock is read here, at the edge: the rules stay free of I/O.
        let out = state
            .rooms
            .join(peer, room, username, admitted, SystemTime::now());
        state.deliver_answering(out, answered.as_ref());
        state.record_rooms(peer, None);
    }

    /// Answers input that never became a message (malformed, too large) with an `error`.
    pub fn reject(&self, peer: PeerId, code: ErrorCode, message: String) {
        self.state
            .lock()
            .unwrap()
            .deliver(vec![(peer, ServerMessage::Error { code, message })]);
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
        let answered = id.map(|id| (peer, id));
        self.state.lock().unwrap().deliver_answering(
            vec![(peer, ServerMessage::Error { code, message })],
            answered.as_ref(),
        );
    }

    /// Whether `peer` is in a room now.
    pub fn is_joined(&self, peer: PeerId) -> bool {
        let state = self.state.lock().unwrap();
        // A participant in a room owned by another node counts from the moment its join is
        // forwarded (a refusal from the owner removes the route).
        state.rooms.is_joined(peer) || state.remote.routes.contains_key(&peer)
    }

    /// The connection ended: the participant leaves its room. Returns what that queued to the
    /// others (LEFT, ...), to wait for (see the module doc).
    pub fn unregister(&self, peer: PeerId) -> Flush {
        let mut state = self.state.lock().unwrap();
        state.queues.remove(&peer);
        let out = state.drop_peer(peer);
        state.deliver_counting(out, None).into_flush_except(peer)
    }

    /// The `/rooms` listing.
    pub fn summary(&self) -> Vec<RoomSummary> {
        self.state.lock().unwrap().rooms.summary()
    }
}

impl HubState {
    /// Queues every message; a peer whose queue is full is dropped and leaves its room, which
    /// produces more messages (LEFT, ...) that are delivered the same way.
    pub(crate) fn deliver(&mut self, out: Outbox) {
        self.deliver_answering(out, None);
    }

    /// [`Self::deliver`], with the request id `answered.1` added to the refusals
    /// (`error`, `failed`) that go to `answered.0`.
    pub(crate) fn deliver_answering(&mut self, out: Outbox, answered: Option<&(PeerId, String)>) {
        let _ = self.deliver_counting(out, answered);
    }

    /// [`Self::deliver_answering`] that returns where each local recipient's queue stood
    /// after its last message.
    fn deliver_counting(&mut self, mut out: Outbox, answered: Option<&(PeerId, String)>) -> Queued {
        let mut queued = Queued::default();
        while !out.is_empty() {
            let mut dropped = Vec::new();
            for (peer, msg) in out.drain(..) {
                let id = answered
                    .filter(|(to, _)| *to == peer)
                    .filter(|_| {
                        matches!(
                            msg,
                            ServerMessage::Error { .. } | ServerMessage::Failed { .. }
                        )
                    })
                    .map(|(_, id)| id.clone());
                let Some(queue) = self.queues.get(&peer) else {
                    self.send_to_origin(peer, msg, id);
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
            for peer in dropped {
                out.extend(self.drop_peer(peer));
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
