//! The routing rules of one node: who owns each room, where each participant's messages go,
//! what a takeover rebuilds and what forgetting a dead node does — a state machine with no I/O,
//! wrapped around the room rules.
//!
//! [`Routing`] holds this node's [`Rooms`] and its routes. Every input — a local connection
//! opening or closing, a message read from one, a join whose room's owner has been found, an
//! envelope from another node, the member record read for a takeover, a dead node — is a method
//! call that returns the [`Action`]s to carry out: a message for a local connection, a local
//! connection to close, an item for Redis (an [`Envelope`] for another node's inbox, a room's
//! member record). The caller ([`crate::hub::Hub`]) holds its lock around the call and the
//! actions, exactly as for the room rules alone, so the actions of one input are carried out in
//! the order they were produced and before the next input is applied.
//!
//! On a single node (no node id: [`Routing::join_cluster`] never called) every participant is
//! local, no room is owned, and a call is the room rules plus nothing: no [`Action::Remote`] is
//! ever produced.
//!
//! The Redis side — leases, heartbeats, inboxes, the owner lookups and when to call what — is
//! in `super::node`; see `super` for the design.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use room_protocol::{ClientMessage, FailReason, ServerMessage, validate_name, validate_username};
use serde::{Deserialize, Serialize};

use crate::auth::{Grants, Refusal};
use crate::rooms::{MediaCommand, MemberRecord, Outbox, PeerId, RoomRules, RoomSummary, Rooms};

/// What the caller of [`Routing`] must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue `msg` to the local connection `peer`; `id` is the request id it answers (set on
    /// refusals — `error`, `failed` — only).
    Send {
        peer: PeerId,
        msg: ServerMessage,
        id: Option<String>,
    },
    /// Close the local connection `peer` (it reconnects and rejoins): its room moved, or this
    /// node cannot prove it still owns it. The routing has already forgotten it.
    Close { peer: PeerId },
    /// Write to Redis, through the node's one ordered writer.
    Remote(Outbound),
    /// Hand to this node's media engine (`--media sfu`; the rules of a room run on its owner,
    /// so its media goes through the owner's engine), in order.
    Media(MediaCommand),
}

/// The actions of one input.
pub type Actions = Vec<Action>;

/// What goes to Redis, in order (see [`Action::Remote`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// To `node`'s inbox.
    Push { node: String, envelope: Envelope },
    /// The participants of a room owned here, replacing its previous record; empty removes it.
    Members {
        room: String,
        members: Vec<StoredMember>,
    },
}

/// What one node sends another through its inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Envelope {
    /// Edge → owner: `peer` of node `from` joins (its token already verified by the edge).
    Join {
        from: String,
        peer: PeerId,
        room: String,
        username: String,
        grants: Grants,
        /// The join's request id, echoed in a refusal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Edge → owner: a message of a joined participant.
    Client {
        from: String,
        peer: PeerId,
        msg: ClientMessage,
        /// Its request id, echoed in an `error` or `failed` it causes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Edge → owner: the participant's connection ended.
    Disconnect { from: String, peer: PeerId },
    /// Edge → new owner after a takeover: these are all of `from`'s participants in `room`.
    Claim {
        from: String,
        room: String,
        peers: Vec<PeerId>,
    },
    /// New owner → edge, after a takeover: `from` now runs `room`. Sent before any event of
    /// the new owner for that room, so the edge forwards what its participants send after
    /// hearing such an event to the new owner, not to the dead one (whose inbox nobody reads).
    Owner { from: String, room: String },
    /// Owner → edge: a message for the edge's `peer`.
    Deliver {
        peer: PeerId,
        msg: ServerMessage,
        /// The request id it answers (refusals only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Owner → edge: the owner gave the room up; close `peer`'s connection so it rejoins.
    Evict { peer: PeerId },
}

/// A participant as the owner of its room records it in Redis: enough for another node to
/// take the room over with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMember {
    /// The node its connection is on (its edge).
    pub node: String,
    /// The edge's id of the participant.
    pub peer: PeerId,
    /// Its username, streams and grants.
    pub record: MemberRecord,
}

/// What to do with the leases of the rooms owned here, on one tick ([`Routing::leases`]).
#[derive(Debug, Default, PartialEq)]
pub struct Leases {
    /// Rooms whose lease to renew.
    pub renew: Vec<String>,
    /// Rooms empty on two ticks in a row: release their lease (then [`Routing::released`]).
    pub release: Vec<String>,
}

/// A local participant in a room owned by another node.
#[derive(Debug, Clone)]
struct Route {
    room: String,
    owner: String,
    /// False until the owner answered the join with `state`.
    joined: bool,
    /// The pending join's request id, echoed if the join fails here (its owner died).
    join_id: Option<String>,
}

/// One node's rooms and routes (see the module doc).
#[derive(Debug)]
pub struct Routing {
    /// The room rules, for the rooms owned here (and every room on a single node). Proxies
    /// and local participants routed elsewhere are connected peers of these rules too.
    rooms: Rooms,
    /// The next peer id, for local connections and proxies alike.
    next_peer: PeerId,
    /// This node's id; `None` on a single node.
    node: Option<String>,
    /// Local participants of rooms owned elsewhere. Added when a join is forwarded, removed on
    /// leave, disconnect, a refused join or eviction.
    routes: HashMap<PeerId, Route>,
    /// Open sessions of routed participants, as seen in the owner's messages to them: peer →
    /// session → the other end's username. A new owner after a takeover does not know the
    /// sessions of the dead one; with these the edge ends them when it hears LEFT for the
    /// other end (see [`Routing::end_sessions_with`]). A participant restored here by a
    /// takeover keeps its entry, ended the same way. Removed when the peer leaves or goes.
    sessions: HashMap<PeerId, HashMap<String, String>>,
    /// Participants of other nodes in rooms owned here: (node, its peer id) → our peer id.
    proxies: HashMap<(String, PeerId), PeerId>,
    /// Our peer id of a proxy → (node, its peer id).
    origins: HashMap<PeerId, (String, PeerId)>,
    /// Rooms this node holds the lease of.
    owned: HashSet<String>,
    /// Owned rooms found empty on the last tick: released if still empty on the next (a room
    /// is owned a moment before its first participant is in it).
    empty_once: HashSet<String>,
    /// Rooms whose lease this node has just taken and is rebuilding: joins for them wait here.
    acquiring: HashMap<String, Vec<Envelope>>,
    /// What the current input has produced so far; handed out when it returns.
    actions: Actions,
}

/// The `failed` answer to a join from a peer that is already in a room elsewhere.
fn already_joined() -> ServerMessage {
    ServerMessage::Failed {
        reason: FailReason::AlreadyJoined,
        detail: "already in a room (leave first)".into(),
    }
}

/// A `failed` `unavailable` answer.
pub fn unavailable(detail: &str) -> ServerMessage {
    ServerMessage::Failed {
        reason: FailReason::Unavailable,
        detail: detail.to_owned(),
    }
}

/// Whether a message can change a room's participants or their streams (which the owner then
/// records in Redis).
fn changes_members(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::Join { .. }
            | ClientMessage::Leave {}
            | ClientMessage::Publish { .. }
            | ClientMessage::Unpublish { .. }
            | ClientMessage::Mute { .. }
    )
}

/// Whether `msg` is a refusal, which echoes the request id of what it refuses.
fn is_refusal(msg: &ServerMessage) -> bool {
    matches!(
        msg,
        ServerMessage::Error { .. } | ServerMessage::Failed { .. }
    )
}

impl Routing {
    /// A node with no rooms and no connections, alone until [`Self::join_cluster`].
    pub fn new(rules: RoomRules) -> Self {
        Routing {
            rooms: Rooms::new(rules),
            next_peer: 1,
            node: None,
            routes: HashMap::new(),
            sessions: HashMap::new(),
            proxies: HashMap::new(),
            origins: HashMap::new(),
            owned: HashSet::new(),
            empty_once: HashSet::new(),
            acquiring: HashMap::new(),
            actions: Vec::new(),
        }
    }

    /// This node shares rooms with others as `node`. Its sessions are numbered from
    /// `first_session` on, a random point, so that a node taking a room over does not reuse
    /// the ids of sessions still open.
    pub fn join_cluster(&mut self, node: String, first_session: u64) {
        self.node = Some(node);
        self.rooms.number_sessions_from(first_session);
    }

    // ----- Local connections -----

    /// A local connection opened: its id, and its `welcome`.
    pub fn connect(&mut self) -> (PeerId, Actions) {
        let peer = self.new_peer();
        let out = self.rooms.connect(peer);
        self.deliver(out);
        (peer, self.take())
    }

    /// [`Self::connect`] for a client that offers the sessions it views through the server
    /// ([`Rooms::connect_offering`]). Known gap: in a room owned by another node, its proxy
    /// there is an ordinary participant, so the engine would offer to it.
    pub fn connect_offering(&mut self) -> (PeerId, Actions) {
        let peer = self.new_peer();
        let out = self.rooms.connect_offering(peer);
        self.deliver(out);
        (peer, self.take())
    }

    /// A local connection ended (or its queue overflowed): it leaves its room, here or at the
    /// room's owner. Nothing is sent to it.
    pub fn disconnect(&mut self, peer: PeerId) -> Actions {
        let out = self.drop_peer(peer);
        self.deliver(out);
        self.take()
    }

    /// A message (other than `join`) read from local `peer`, with its request id: applied
    /// here, or forwarded to the owner of the peer's room.
    pub fn handle(&mut self, peer: PeerId, msg: ClientMessage, id: Option<String>) -> Actions {
        if self.forward(peer, &msg, id.as_deref()) {
            return self.take();
        }
        self.untrack(peer, &msg);
        let before = self.rooms.room_name(peer).map(str::to_owned);
        let changes = changes_members(&msg);
        let out = self.rooms.handle(peer, msg);
        let answered = id.map(|id| (peer, id));
        self.deliver_answering(out, answered.as_ref());
        if changes {
            self.record_rooms(peer, before);
        }
        self.take()
    }

    /// A join of local `peer` applied here (alone, or as its room's owner); `admitted` is the
    /// verdict on its token (see [`Rooms::join`]). A refusal echoes the request id `id`.
    pub fn join(
        &mut self,
        peer: PeerId,
        room: String,
        username: String,
        admitted: Result<Grants, Refusal>,
        id: Option<String>,
        now: SystemTime,
    ) -> Actions {
        let answered = id.map(|id| (peer, id));
        if self.routes.contains_key(&peer) {
            self.deliver_answering(vec![(peer, already_joined())], answered.as_ref());
            return self.take();
        }
        let out = self.rooms.join(peer, room, username, admitted, now);
        self.deliver_answering(out, answered.as_ref());
        self.record_rooms(peer, None);
        self.take()
    }

    /// Whether a join must be answered by this node's rules without looking for the room's
    /// owner: its token was refused, its names are invalid, or `peer` is in a room already.
    pub fn refuses_at_the_edge(
        &self,
        peer: PeerId,
        room: &str,
        username: &str,
        admitted: &Result<Grants, Refusal>,
    ) -> bool {
        admitted.is_err()
            || validate_name(room).is_err()
            || validate_username(username).is_err()
            || self.is_joined(peer)
    }

    /// A join of local `peer` for `room`, whose owner is the other node `owner`: forwarded
    /// there, and `peer` is routed to it from now on.
    pub fn route_join(
        &mut self,
        peer: PeerId,
        room: String,
        username: String,
        grants: Grants,
        owner: String,
        id: Option<String>,
    ) -> Actions {
        if self.routes.contains_key(&peer) {
            let answered = id.map(|id| (peer, id));
            self.deliver_answering(vec![(peer, already_joined())], answered.as_ref());
            return self.take();
        }
        // The connection ended while its room's owner was looked up.
        if !self.is_local(peer) {
            return self.take();
        }
        let envelope = Envelope::Join {
            from: self.me(),
            peer,
            room: room.clone(),
            username,
            grants,
            id: id.clone(),
        };
        self.push(&owner, envelope);
        let route = Route {
            room,
            owner,
            joined: false,
            join_id: id,
        };
        self.routes.insert(peer, route);
        self.take()
    }

    /// `msg` for local `peer`, answering the request `id` (if `msg` is a refusal).
    pub fn answer(&mut self, peer: PeerId, msg: ServerMessage, id: Option<String>) -> Actions {
        let answered = id.map(|id| (peer, id));
        self.deliver_answering(vec![(peer, msg)], answered.as_ref());
        self.take()
    }

    /// Local `peer`, in no room, watches `participant`'s `stream` in `room` with its own SDP
    /// `offer` (a WHEP player, see [`Rooms::watch`]). Rooms run by this node only.
    pub fn watch(
        &mut self,
        peer: PeerId,
        room: &str,
        participant: &str,
        stream: &str,
        offer: String,
    ) -> Actions {
        let out = self.rooms.watch(peer, room, participant, stream, offer);
        self.deliver(out);
        self.take()
    }

    // ----- The media engine's answers (`--media sfu`) -----

    /// The media engine's description (answer or offer) for `session`, for its participant.
    pub fn media_description(&mut self, session: &str, sdp: String) -> Actions {
        let out = self.rooms.media_description(session, sdp);
        self.deliver(out);
        self.take()
    }

    /// The media engine lost or refused `session`: it ends (see [`Rooms::media_failed`]).
    pub fn media_failed(&mut self, session: &str, reason: &str) -> Actions {
        let out = self.rooms.media_failed(session, reason);
        self.deliver(out);
        self.take()
    }

    /// The media engine's verdict on who speaks in `room` (see [`Rooms::active_speaker`]).
    pub fn active_speaker(&mut self, room: &str, username: Option<String>) -> Actions {
        let out = self.rooms.active_speaker(room, username);
        self.deliver(out);
        self.take()
    }

    // ----- Questions -----

    /// Whether local `peer` is in a room: here, or — from the moment its join was forwarded —
    /// at another node (a refusal from the owner removes the route).
    pub fn is_joined(&self, peer: PeerId) -> bool {
        self.rooms.is_joined(peer) || self.routes.contains_key(&peer)
    }

    /// The rooms run here, for `/rooms` on a single node.
    pub fn summary(&self) -> Vec<RoomSummary> {
        self.rooms.summary()
    }

    /// Whether this node holds `room`'s lease and runs it.
    pub fn owns(&self, room: &str) -> bool {
        self.owned.contains(room)
    }

    /// The nodes this node depends on: the owners of its routed participants' rooms and the
    /// edges of the proxies in its rooms.
    pub fn watched_nodes(&self) -> HashSet<String> {
        let owners = self.routes.values().map(|r| r.owner.clone());
        let edges = self.origins.values().map(|(node, _)| node.clone());
        owners.chain(edges).collect()
    }

    // ----- Envelopes from other nodes -----

    /// Applies one envelope from another node's inbox.
    pub fn receive(&mut self, envelope: Envelope, now: SystemTime) -> Actions {
        self.apply_envelope(envelope, now);
        self.take()
    }

    fn apply_envelope(&mut self, envelope: Envelope, now: SystemTime) {
        match envelope {
            Envelope::Join {
                from,
                peer,
                room,
                username,
                grants,
                id,
            } => {
                if let Some(waiting) = self.acquiring.get_mut(&room) {
                    waiting.push(Envelope::Join {
                        from,
                        peer,
                        room,
                        username,
                        grants,
                        id,
                    });
                    return;
                }
                self.join_proxy(from, peer, room, username, grants, id, now);
            }
            Envelope::Client {
                from,
                peer,
                msg,
                id,
            } => self.handle_proxy(from, peer, msg, id),
            Envelope::Disconnect { from, peer } => {
                if let Some(proxy) = self.proxies.get(&(from, peer)).copied() {
                    self.drop_proxy(proxy);
                }
            }
            Envelope::Claim { from, room, peers } => self.claim(&from, &room, &peers),
            Envelope::Owner { from, room } => self.follow_owner(&room, None, &from),
            Envelope::Deliver { peer, msg, id } => self.deliver_routed(peer, msg, id),
            Envelope::Evict { peer } => self.evict(peer),
        }
    }

    /// A participant of node `from` joins a room owned here, as a new proxy.
    #[allow(clippy::too_many_arguments)]
    fn join_proxy(
        &mut self,
        from: String,
        peer: PeerId,
        room: String,
        username: String,
        grants: Grants,
        id: Option<String>,
        now: SystemTime,
    ) {
        if !self.owned.contains(&room) {
            let msg = unavailable("the room moved to another server; try again");
            self.push(&from, Envelope::Deliver { peer, msg, id });
            return;
        }
        if let Some(old) = self.proxies.get(&(from.clone(), peer)).copied() {
            self.drop_proxy(old);
        }
        let proxy = self.new_proxy((from, peer));
        let out = self
            .rooms
            .join(proxy, room.clone(), username, Ok(grants), now);
        let answered = id.map(|id| (proxy, id));
        self.deliver_answering(out, answered.as_ref());
        if self.rooms.room_name(proxy).is_none() {
            self.drop_proxy(proxy);
        } else {
            self.record_room(&room);
        }
    }

    /// A message of a proxy, applied to the room rules here.
    fn handle_proxy(&mut self, from: String, peer: PeerId, msg: ClientMessage, id: Option<String>) {
        let Some(proxy) = self.proxies.get(&(from, peer)).copied() else {
            return;
        };
        let before = self.rooms.room_name(proxy).map(str::to_owned);
        let changes = changes_members(&msg);
        let out = self.rooms.handle(proxy, msg);
        let answered = id.map(|id| (proxy, id));
        self.deliver_answering(out, answered.as_ref());
        if self.rooms.room_name(proxy).is_none() {
            self.drop_proxy(proxy);
            if let Some(room) = before {
                self.record_room(&room);
            }
        } else if changes {
            self.record_rooms(proxy, before);
        }
    }

    /// An edge's claim after a takeover: its proxies in `room` that it does not list are gone.
    fn claim(&mut self, from: &str, room: &str, peers: &[PeerId]) {
        tracing::debug!(node = %self.me(), from, room, ?peers, "claim");
        let gone: Vec<PeerId> = self
            .proxies
            .iter()
            .filter(|((node, origin_peer), proxy)| {
                node == from
                    && !peers.contains(origin_peer)
                    && self.rooms.room_name(**proxy) == Some(room)
            })
            .map(|(_, proxy)| *proxy)
            .collect();
        for proxy in gone {
            self.drop_proxy(proxy);
        }
    }

    /// A message from a room's owner for a local participant; `state` and `failed` settle a
    /// pending join.
    fn deliver_routed(&mut self, peer: PeerId, msg: ServerMessage, id: Option<String>) {
        if let Some(route) = self.routes.get_mut(&peer) {
            match &msg {
                ServerMessage::State { .. } => route.joined = true,
                ServerMessage::Failed { .. } if !route.joined => {
                    self.unroute(peer);
                }
                _ => {}
            }
        } else if !matches!(msg, ServerMessage::Failed { .. }) {
            // Not (or no longer) in a room owned elsewhere: a late message for a peer that left.
            return;
        }
        self.track_sessions(peer, &msg);
        if let ServerMessage::Left { username } = &msg {
            let ended = self.end_sessions_with(peer, username);
            self.deliver(ended);
        }
        let answered = id.map(|id| (peer, id));
        self.deliver_answering(vec![(peer, msg)], answered.as_ref());
    }

    // ----- Ownership: takeover, leases, giving up -----

    /// `room`'s lease is being taken by this node: joins forwarded for it wait until
    /// [`Self::take_over`] or [`Self::release_waiting`].
    pub fn begin_acquiring(&mut self, room: &str) {
        self.acquiring.entry(room.to_owned()).or_default();
    }

    /// Applies the joins that arrived while `room` was being taken (if it was not taken after
    /// all, they are refused as unavailable).
    pub fn release_waiting(&mut self, room: &str, now: SystemTime) -> Actions {
        self.apply_waiting(room, now);
        self.take()
    }

    fn apply_waiting(&mut self, room: &str, now: SystemTime) {
        for envelope in self.acquiring.remove(room).unwrap_or_default() {
            self.apply_envelope(envelope, now);
        }
    }

    /// Rebuilds a room whose lease this node has just taken, from its member record read from
    /// Redis (`stored`) and which of their nodes are `alive`: participants of live nodes come
    /// back silently (each live edge first hears that this node owns the room), this node's
    /// own come back if still connected and routed to the room, and everyone hears LEFT for
    /// the others. Then the joins that waited are applied.
    pub fn take_over(
        &mut self,
        room: &str,
        stored: Vec<StoredMember>,
        alive: &HashSet<String>,
        now: SystemTime,
    ) -> Actions {
        let me = self.me();
        tracing::debug!(node = %me, room, ?stored, ?alive, "take over");
        self.owned.insert(room.to_owned());
        let mut departed = Vec::new();
        let mut edges = HashSet::new();
        for member in stored {
            if member.node == me {
                let routed_here = self
                    .routes
                    .get(&member.peer)
                    .is_some_and(|r| r.room == room && r.joined);
                if routed_here && self.is_local(member.peer) {
                    self.routes.remove(&member.peer);
                    self.rooms.restore(member.peer, room, member.record);
                } else {
                    departed.push(member.record);
                }
            } else if alive.contains(&member.node) {
                let proxy = self.new_proxy((member.node.clone(), member.peer));
                self.rooms.restore(proxy, room, member.record);
                edges.insert(member.node);
            } else {
                departed.push(member.record);
            }
        }
        // The edges hear of the new owner before its first event (see `Envelope::Owner`).
        let mut edges: Vec<String> = edges.into_iter().collect();
        edges.sort();
        for edge in edges {
            let owner = Envelope::Owner {
                from: me.clone(),
                room: room.to_owned(),
            };
            self.push(&edge, owner);
        }
        // The sessions of the participants restored here stay tracked (the room rules here
        // do not know them): they end when their other end leaves, as at the edges.
        for record in departed {
            let out = self.rooms.departed(room, &record);
            self.deliver(out);
        }
        self.record_room(room);
        self.apply_waiting(room, now);
        self.take()
    }

    /// The leases to renew and release on this tick; rooms found empty now are noted, and
    /// released if still empty on the next tick.
    pub fn leases(&mut self) -> Leases {
        let mut owned: Vec<String> = self.owned.iter().cloned().collect();
        owned.sort();
        let (mut renew, empty): (Vec<_>, Vec<_>) = owned
            .into_iter()
            .partition(|room| self.rooms.has_room(room));
        let was_empty = std::mem::replace(&mut self.empty_once, empty.iter().cloned().collect());
        let (release, still): (Vec<_>, Vec<_>) =
            empty.into_iter().partition(|r| was_empty.contains(r));
        // Rooms empty for the first time keep their lease until released.
        renew.extend(still);
        Leases { renew, release }
    }

    /// `room`'s lease was released (it was empty), and its member record deleted with it.
    /// Returns whether someone joined meanwhile: the room is still run here (take the lease
    /// back, or give the room up) and its record is written again, since the release may have
    /// deleted the newcomer's. Otherwise the room is not owned any more.
    pub fn released(&mut self, room: &str) -> (bool, Actions) {
        let refilled = self.rooms.has_room(room);
        if refilled {
            self.record_room(room);
        } else {
            self.owned.remove(room);
        }
        (refilled, self.take())
    }

    /// Gives up an owned room (its lease is lost): local participants are closed, the others
    /// evicted by their edges. They reconnect and rejoin, perhaps elsewhere.
    pub fn abandon_room(&mut self, room: &str) -> Actions {
        self.abandon(room);
        self.take()
    }

    fn abandon(&mut self, room: &str) {
        tracing::warn!(node = %self.me(), room, "giving up the room");
        self.owned.remove(room);
        for record in self.rooms.members_of(room) {
            match self.origins.get(&record.peer).cloned() {
                Some((node, origin_peer)) => {
                    self.push(&node, Envelope::Evict { peer: origin_peer });
                    self.drop_proxy(record.peer);
                }
                None => self.evict(record.peer),
            }
        }
    }

    /// Closes every participant of a shared room: without Redis this node cannot prove it
    /// still owns its rooms, and the others already count its participants as gone.
    pub fn give_up_everything(&mut self) -> Actions {
        let mut owned: Vec<String> = self.owned.iter().cloned().collect();
        owned.sort();
        for room in owned {
            self.abandon(&room);
        }
        let mut routed: Vec<PeerId> = self.routes.keys().copied().collect();
        routed.sort();
        for peer in routed {
            self.evict(peer);
        }
        self.take()
    }

    // ----- Dead nodes -----

    /// `node` is dead: its proxies leave the rooms owned here, the joins forwarded to it fail
    /// as unavailable. Returns the rooms it owned that local participants are in, each to be
    /// given its new owner ([`Self::follow`]) or, when none is found, emptied of them
    /// ([`Self::evict_room`]).
    pub fn forget_node(&mut self, node: &str) -> (Vec<String>, Actions) {
        let mut proxies: Vec<PeerId> = self
            .origins
            .iter()
            .filter(|(_, (n, _))| n == node)
            .map(|(proxy, _)| *proxy)
            .collect();
        proxies.sort();
        for proxy in proxies {
            self.drop_proxy(proxy);
        }
        let mut pending: Vec<PeerId> = self
            .routes
            .iter()
            .filter(|(_, r)| r.owner == node && !r.joined)
            .map(|(peer, _)| *peer)
            .collect();
        pending.sort();
        for peer in pending {
            let join_id = self.unroute(peer).and_then(|r| r.join_id);
            let msg = unavailable("the room is moving to another server; try again");
            let answered = join_id.map(|id| (peer, id));
            self.deliver_answering(vec![(peer, msg)], answered.as_ref());
        }
        let rooms: HashSet<String> = self
            .routes
            .values()
            .filter(|r| r.owner == node)
            .map(|r| r.room.clone())
            .collect();
        let mut rooms: Vec<String> = rooms.into_iter().collect();
        rooms.sort();
        (rooms, self.take())
    }

    /// Points this node's participants of `room` at its new `owner` (those routed to
    /// `old_owner`, or all that have joined when `None`) and claims them there.
    pub fn follow(&mut self, room: &str, old_owner: Option<&str>, owner: &str) -> Actions {
        self.follow_owner(room, old_owner, owner);
        self.take()
    }

    fn follow_owner(&mut self, room: &str, old_owner: Option<&str>, owner: &str) {
        tracing::debug!(node = %self.me(), room, old_owner, owner, "follow");
        // The claim lists every participant of `room` now routed to `owner`, not only those
        // moved by this call: a second `follow` for the same takeover (the owner's `Owner`
        // envelope and the edge noticing the dead owner itself) must not claim nobody, or the
        // owner drops them all.
        let mut peers = Vec::new();
        for (peer, route) in self.routes.iter_mut() {
            if route.room != room {
                continue;
            }
            let moves = match old_owner {
                Some(old) => route.owner == old,
                None => route.joined,
            };
            if moves {
                route.owner = owner.to_owned();
            }
            if route.owner == owner {
                peers.push(*peer);
            }
        }
        peers.sort();
        let me = self.me();
        if owner != me {
            let claim = Envelope::Claim {
                from: me,
                room: room.to_owned(),
                peers,
            };
            self.push(owner, claim);
        }
    }

    /// Closes this node's participants routed to `room` (no owner could be found for it).
    pub fn evict_room(&mut self, room: &str) -> Actions {
        let mut peers: Vec<PeerId> = self
            .routes
            .iter()
            .filter(|(_, r)| r.room == room)
            .map(|(peer, _)| *peer)
            .collect();
        peers.sort();
        for peer in peers {
            self.evict(peer);
        }
        self.take()
    }

    // ----- Inside -----

    /// Hands out what the current input produced: its messages and Redis items, then what
    /// the media engine must do (an independent, ordered queue of its own).
    fn take(&mut self) -> Actions {
        let media = self.rooms.take_media().into_iter().map(Action::Media);
        self.actions.extend(media);
        std::mem::take(&mut self.actions)
    }

    fn me(&self) -> String {
        self.node.clone().unwrap_or_default()
    }

    fn new_peer(&mut self) -> PeerId {
        let peer = self.next_peer;
        self.next_peer += 1;
        peer
    }

    /// Whether `peer` is an open connection of this node (not a proxy).
    fn is_local(&self, peer: PeerId) -> bool {
        self.rooms.is_connected(peer) && !self.origins.contains_key(&peer)
    }

    fn push(&mut self, node: &str, envelope: Envelope) {
        let node = node.to_owned();
        let push = Outbound::Push { node, envelope };
        self.actions.push(Action::Remote(push));
    }

    /// Turns the room rules' messages into actions.
    fn deliver(&mut self, out: Outbox) {
        self.deliver_answering(out, None);
    }

    /// [`Self::deliver`], with the request id `answered.1` added to the refusals that go to
    /// `answered.0`. A message for a proxy goes to its edge.
    fn deliver_answering(&mut self, out: Outbox, answered: Option<&(PeerId, String)>) {
        for (peer, msg) in out {
            let id = answered
                .filter(|(to, _)| *to == peer && is_refusal(&msg))
                .map(|(_, id)| id.clone());
            match self.origins.get(&peer).cloned() {
                Some((node, origin_peer)) => {
                    let peer = origin_peer;
                    self.push(&node, Envelope::Deliver { peer, msg, id });
                }
                None => {
                    // Tracked sessions (of a previous owner) with one who left end first.
                    if let ServerMessage::Left { username } = &msg {
                        for (peer, msg) in self.end_sessions_with(peer, username) {
                            self.actions.push(Action::Send {
                                peer,
                                msg,
                                id: None,
                            });
                        }
                    }
                    self.actions.push(Action::Send { peer, msg, id })
                }
            }
        }
    }

    /// Sends a routed peer's message to its room's owner; false for peers handled here.
    fn forward(&mut self, peer: PeerId, msg: &ClientMessage, id: Option<&str>) -> bool {
        let Some(route) = self.routes.get(&peer).cloned() else {
            return false;
        };
        if matches!(msg, ClientMessage::Join { .. }) {
            let answered = id.map(|id| (peer, id.to_owned()));
            self.deliver_answering(vec![(peer, already_joined())], answered.as_ref());
            return true;
        }
        let envelope = Envelope::Client {
            from: self.me(),
            peer,
            msg: msg.clone(),
            id: id.map(str::to_owned),
        };
        self.push(&route.owner, envelope);
        self.untrack(peer, msg);
        if let ClientMessage::Leave {} = msg {
            self.routes.remove(&peer);
        }
        true
    }

    /// What `msg` from `peer` does to its tracked sessions (those known from a room's previous
    /// owner, or from the owner elsewhere): a stopped one is over for `peer` (the owner tells
    /// only the other end). On leave, the leaver hears `session-ended` for each now, as from a
    /// single node: what an owner elsewhere sends after the leave finds no route here, and
    /// the owner here does not know the sessions of a previous one.
    fn untrack(&mut self, peer: PeerId, msg: &ClientMessage) {
        match msg {
            ClientMessage::Leave {} => {
                let ended = self.end_sessions(peer);
                self.deliver(ended);
            }
            ClientMessage::Stop { session } => {
                if let Some(sessions) = self.sessions.get_mut(&peer) {
                    sessions.remove(session);
                }
            }
            _ => {}
        }
    }

    /// Forgets a routed participant: its route and its sessions.
    fn unroute(&mut self, peer: PeerId) -> Option<Route> {
        self.sessions.remove(&peer);
        self.routes.remove(&peer)
    }

    /// Notes the sessions that `msg` (from the owner, for routed `peer`) starts or ends.
    fn track_sessions(&mut self, peer: PeerId, msg: &ServerMessage) {
        match msg {
            ServerMessage::SessionStarted {
                session,
                participant: other,
                ..
            }
            | ServerMessage::SessionRequest {
                session,
                viewer: other,
                ..
            } => {
                let sessions = self.sessions.entry(peer).or_default();
                sessions.insert(session.clone(), other.clone());
            }
            ServerMessage::SessionEnded { session, .. } => {
                if let Some(sessions) = self.sessions.get_mut(&peer) {
                    sessions.remove(session);
                }
            }
            _ => {}
        }
    }

    /// `session-ended` for all of `peer`'s tracked sessions, in the owner's order.
    fn end_sessions(&mut self, peer: PeerId) -> Outbox {
        let mut ended: Vec<String> = self
            .sessions
            .get_mut(&peer)
            .map(|sessions| sessions.drain().map(|(session, _)| session).collect())
            .unwrap_or_default();
        ended.sort();
        let reason = "participant left";
        ended
            .into_iter()
            .map(|session| {
                let reason = reason.to_owned();
                (peer, ServerMessage::SessionEnded { session, reason })
            })
            .collect()
    }

    /// `session-ended` for `peer`'s tracked sessions with `username`, who has left: an owner
    /// ends a session before announcing LEFT, so any still tracked then belongs to a dead owner.
    fn end_sessions_with(&mut self, peer: PeerId, username: &str) -> Outbox {
        let Some(sessions) = self.sessions.get_mut(&peer) else {
            return Vec::new();
        };
        let mut ended: Vec<String> = sessions
            .iter()
            .filter(|(_, other)| *other == username)
            .map(|(session, _)| session.clone())
            .collect();
        ended.sort();
        ended
            .into_iter()
            .map(|session| {
                sessions.remove(&session);
                let reason = "participant left".to_owned();
                (peer, ServerMessage::SessionEnded { session, reason })
            })
            .collect()
    }

    /// Takes a local peer out: out of its routed room (telling the owner) or its local room.
    fn drop_peer(&mut self, peer: PeerId) -> Outbox {
        self.sessions.remove(&peer);
        if let Some(route) = self.unroute(peer) {
            let from = self.me();
            self.push(&route.owner, Envelope::Disconnect { from, peer });
        }
        let room = self.rooms.room_name(peer).map(str::to_owned);
        let out = self.rooms.disconnect(peer);
        if let Some(room) = room {
            self.record_room(&room);
        }
        out
    }

    /// Closes a local connection (it reconnects and rejoins) and takes it out of everything.
    fn evict(&mut self, peer: PeerId) {
        if self.is_local(peer) {
            tracing::info!(node = %self.me(), peer, "evicting: its room moved or this node lost Redis");
            self.actions.push(Action::Close { peer });
            let out = self.drop_peer(peer);
            self.deliver(out);
        }
    }

    /// A new proxy peer for `origin`, connected (its `welcome` is not sent anywhere).
    fn new_proxy(&mut self, origin: (String, PeerId)) -> PeerId {
        let proxy = self.new_peer();
        let _welcome = self.rooms.connect(proxy);
        self.proxies.insert(origin.clone(), proxy);
        self.origins.insert(proxy, origin);
        proxy
    }

    /// Removes a proxy from its room and forgets it.
    fn drop_proxy(&mut self, proxy: PeerId) {
        tracing::debug!(node = %self.me(), proxy, origin = ?self.origins.get(&proxy), "dropping a proxy");
        if let Some(origin) = self.origins.remove(&proxy) {
            self.proxies.remove(&origin);
        }
        let room = self.rooms.room_name(proxy).map(str::to_owned);
        let out = self.rooms.disconnect(proxy);
        self.deliver(out);
        if let Some(room) = room {
            self.record_room(&room);
        }
    }

    /// After a change by `peer`: records its room(s) before and now, if owned here.
    fn record_rooms(&mut self, peer: PeerId, before: Option<String>) {
        let now = self.rooms.room_name(peer).map(str::to_owned);
        for room in before
            .iter()
            .chain(now.iter().filter(|n| Some(*n) != before.as_ref()))
        {
            self.record_room(room);
        }
    }

    /// The participants of an owned room, for Redis (see `super`'s doc): written through the
    /// same ordered writer as the envelopes, so the record is in Redis before a participant
    /// hears it has joined.
    fn record_room(&mut self, room: &str) {
        if !self.owned.contains(room) {
            return;
        }
        let me = self.me();
        let members = self
            .rooms
            .members_of(room)
            .into_iter()
            .map(|record| {
                let (node, peer) = self
                    .origins
                    .get(&record.peer)
                    .cloned()
                    .unwrap_or((me.clone(), record.peer));
                StoredMember { node, peer, record }
            })
            .collect();
        let room = room.to_owned();
        self.actions
            .push(Action::Remote(Outbound::Members { room, members }));
    }
}

/// Which watched nodes are dead: a node whose heartbeat is missing on two checks in a row.
/// One miss is forgiven (a heartbeat written a moment late).
#[derive(Debug, Default)]
pub struct Liveness {
    missing_once: HashSet<String>,
}

impl Liveness {
    /// One check of `node`: returns whether it is now dead (missing twice in a row). A dead
    /// node starts over: it is reported once.
    pub fn checked(&mut self, node: &str, alive: bool) -> bool {
        if alive {
            self.missing_once.remove(node);
            false
        } else if self.missing_once.insert(node.to_owned()) {
            false
        } else {
            self.missing_once.remove(node);
            true
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rules_props.rs"]
mod props;
