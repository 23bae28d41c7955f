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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use room_protocol::{ClientMessage, ErrorCode, ServerMessage, WithId};
use tokio::sync::mpsc;

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
    pub(crate) queues: HashMap<PeerId, mpsc::Sender<String>>,
    pub(crate) next_peer: PeerId,
    /// Rooms shared with other nodes (`--redis`); empty and unused on a single node.
    pub(crate) remote: Remote,
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

    /// A new connection: it gets an id and, through `queue`, the `welcome` message.
    pub fn register(&self, queue: mpsc::Sender<String>) -> PeerId {
        let mut state = self.state.lock().unwrap();
        let peer = state.next_peer;
        state.next_peer += 1;
        state.queues.insert(peer, queue);
        let out = state.rooms.connect(peer);
        state.deliver(out);
        peer
    }

    /// Applies a message read from `peer`'s connection.
    pub fn handle(&self, peer: PeerId, msg: ClientMessage) {
        self.handle_request(peer, msg, None);
    }

    /// Applies a message that carried the request id `id`: the `error` / `failed` it causes
    /// to `peer` echoes the id (the room rules never see ids).
    /// A message forwarded to the room's owning node (`--redis`) loses its id: the nodes'
    /// forwarding format does not carry it.
    pub fn handle_request(&self, peer: PeerId, msg: ClientMessage, id: Option<String>) {
        let mut state = self.state.lock().unwrap();
        if state.forward(peer, &msg) {
            return;
        }
        let before = state.rooms.room_name(peer).map(str::to_owned);
        let changes_members = changes_members(&msg);
        let out = state.rooms.handle(peer, msg);
        let answered = id.map(|id| (peer, id));
        state.deliver_answering(out, answered.as_ref());
        if changes_members {
            state.record_rooms(peer, before);
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
        if state.remote.routes.contains_key(&peer) {
            return state.deliver(vec![(peer, crate::cluster::already_joined())]);
        }
        // The clock is read here, at the edge: the rules stay free of I/O.
        let out = state
            .rooms
            .join(peer, room, username, admitted, SystemTime::now());
        let answered = id.map(|id| (peer, id));
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

    /// The connection ended: the participant leaves its room.
    pub fn unregister(&self, peer: PeerId) {
        let mut state = self.state.lock().unwrap();
        state.queues.remove(&peer);
        let out = state.drop_peer(peer);
        state.deliver(out);
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
    fn deliver_answering(&mut self, mut out: Outbox, answered: Option<&(PeerId, String)>) {
        while !out.is_empty() {
            let mut dropped = Vec::new();
            for (peer, msg) in out.drain(..) {
                let Some(queue) = self.queues.get(&peer) else {
                    self.send_to_origin(peer, msg);
                    continue;
                };
                let id = answered
                    .filter(|(to, _)| *to == peer)
                    .filter(|_| {
                        matches!(
                            msg,
                            ServerMessage::Error { .. } | ServerMessage::Failed { .. }
                        )
                    })
                    .map(|(_, id)| id.clone());
                let text = serde_json::to_string(&WithId { id, msg })
                    .expect("protocol messages always serialise");
                if queue.try_send(text).is_err() {
                    tracing::warn!(
                        peer,
                        "outgoing queue full or closed: dropping the connection"
                    );
                    self.queues.remove(&peer);
                    dropped.push(peer);
                }
            }
            for peer in dropped {
                out.extend(self.drop_peer(peer));
            }
        }
    }
}
