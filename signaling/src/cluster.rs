//! Several nodes serving the same rooms through one Redis (`gst-room server --redis URL`).
//!
//! # Design: each room has one owner
//!
//! A room is owned by one node at a time, through a lease in Redis (`SET room-key node NX PX`,
//! renewed by the owner every [`TICK`]). The owner runs the ordinary room rules
//! ([`crate::rooms::Rooms`], the same pure state machine as a single node) for that room, so
//! every rule — capacity, unique usernames, grants, sessions — is applied in one place, in one
//! order, exactly as on one node: two joins racing for the last seat are two calls in some order
//! on the owner.
//!
//! A participant connected to another node (its *edge*) is a *proxy* peer in the owner's rooms.
//! The edge forwards everything its participant sends to the owner, and the owner sends each
//! message for a proxy back to the edge, which writes it to the socket. The channel between
//! nodes is one Redis list per node (its inbox: `RPUSH` by any node, `BLPOP` by its node), not
//! pub/sub: a list keeps messages while the consumer is briefly slow or reconnecting, and one
//! writer task per node pushes in order, so every sender's messages arrive in order.
//!
//! The owner writes each room's participants (username, streams, grants, which node and peer) to
//! a hash in Redis whenever membership or streams change, through the same ordered writer, so
//! the record is in Redis before the participant hears it has joined.
//!
//! # Node death
//!
//! Every node refreshes a heartbeat key (TTL [`LEASE`]) every [`TICK`]. Owners check the nodes
//! of their proxies, edges the owners of their participants' rooms. A node whose heartbeat is
//! missing on two checks in a row is dead:
//! - an owner takes the dead node's proxies out of their rooms (the others get LEFT, their
//!   sessions end);
//! - an edge whose room owner died takes the room over when the lease has expired (or finds the
//!   node that did): the new owner rebuilds the room from the hash — participants on live nodes
//!   are put back without any message, and everyone gets LEFT for those of dead nodes. Each edge
//!   then tells the new owner which of its participants are still there (a claim), so one that
//!   left meanwhile does not linger. Sessions that were open are lost with the owner's memory.
//!
//! # Redis unavailable
//!
//! A node whose heartbeat cannot be written refuses new joins (`failed` `unavailable`). An owner
//! that cannot renew a lease within its lifetime, or finds it taken, gives the room up: it
//! closes its participants' connections in that room and evicts the others (their edges close
//! them), and they reconnect and rejoin — possibly elsewhere. A room is never run by two owners
//! at once, so it is never split.
//!
//! Everything here is I/O around the hub; the rules stay in `rooms.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use room_protocol::{ClientMessage, FailReason, ServerMessage, validate_name, validate_username};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{Grants, Refusal};
use crate::hub::{Hub, HubState};
use crate::rooms::{MemberRecord, PeerId, RoomSummary};

/// How often heartbeats and leases are refreshed and other nodes checked.
pub const TICK: Duration = Duration::from_millis(500);
/// Lifetime of a heartbeat or a room lease. A node dead for longer is noticed by the others
/// within `LEASE + 2 * TICK`.
pub const LEASE: Duration = Duration::from_millis(2000);
/// Every Redis key of gst-room starts with this.
const PREFIX: &str = "gst-room:";
/// An inbox of a node that stopped reading disappears after this long.
const INBOX_TTL_MS: u64 = 60_000;

fn node_key(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}
fn inbox_key(node: &str) -> String {
    format!("{PREFIX}inbox:{node}")
}
fn lease_key(room: &str) -> String {
    format!("{PREFIX}room:{room}:owner")
}
fn members_key(room: &str) -> String {
    format!("{PREFIX}room:{room}:members")
}
const ROOMS_KEY: &str = "gst-room:rooms";

/// The `failed` answer to a join from a peer that is already in a room elsewhere.
pub(crate) fn already_joined() -> ServerMessage {
    ServerMessage::Failed {
        reason: FailReason::AlreadyJoined,
        detail: "already in a room (leave first)".into(),
    }
}

fn unavailable(detail: &str) -> ServerMessage {
    ServerMessage::Failed {
        reason: FailReason::Unavailable,
        detail: detail.to_owned(),
    }
}

/// Whether a message can change a room's participants or their streams (which the owner then
/// records in Redis).
pub(crate) fn changes_members(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::Join { .. }
            | ClientMessage::Leave {}
            | ClientMessage::Publish { .. }
            | ClientMessage::Unpublish { .. }
            | ClientMessage::Mute { .. }
    )
}

/// What one node sends another through its inbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Envelope {
    /// Edge → owner: `peer` of node `from` joins (its token already verified by the edge).
    Join {
        from: String,
        peer: PeerId,
        room: String,
        username: String,
        grants: Grants,
    },
    /// Edge → owner: a message of a joined participant.
    Client {
        from: String,
        peer: PeerId,
        msg: ClientMessage,
    },
    /// Edge → owner: the participant's connection ended.
    Disconnect { from: String, peer: PeerId },
    /// Edge → new owner after a takeover: these are all of `from`'s participants in `room`.
    Claim {
        from: String,
        room: String,
        peers: Vec<PeerId>,
    },
    /// Owner → edge: a message for the edge's `peer`.
    Deliver { peer: PeerId, msg: ServerMessage },
    /// Owner → edge: the owner gave the room up; close `peer`'s connection so it rejoins.
    Evict { peer: PeerId },
}

/// A participant record as kept in the room's hash in Redis.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMember {
    node: String,
    peer: PeerId,
    record: MemberRecord,
}

/// What the writer task sends to Redis, in order.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// To another node's inbox.
    Push { node: String, json: String },
    /// The participants of an owned room (replacing the previous record); empty removes it.
    Members {
        room: String,
        members: Vec<(String, String)>,
    },
}

/// A local participant in a room owned by another node.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    room: String,
    owner: String,
    /// False until the owner answered the join with `state`.
    joined: bool,
}

/// The hub's cluster state (empty on a single node).
#[derive(Debug, Default)]
pub(crate) struct Remote {
    /// This node's id; `None` on a single node.
    node: Option<String>,
    /// Local participants of rooms owned elsewhere.
    pub(crate) routes: HashMap<PeerId, Route>,
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
    /// To the writer task.
    outbound: Option<mpsc::UnboundedSender<Outbound>>,
}

impl Remote {
    fn push(&self, node: &str, envelope: &Envelope) {
        if let Some(outbound) = &self.outbound {
            let json = serde_json::to_string(envelope).expect("envelopes always serialise");
            let _ = outbound.send(Outbound::Push {
                node: node.to_owned(),
                json,
            });
        }
    }

    fn me(&self) -> String {
        self.node.clone().unwrap_or_default()
    }
}

impl HubState {
    /// Sends a routed peer's message to its room's owner; false for peers handled here.
    pub(crate) fn forward(&mut self, peer: PeerId, msg: &ClientMessage) -> bool {
        let Some(route) = self.remote.routes.get(&peer).cloned() else {
            return false;
        };
        if matches!(msg, ClientMessage::Join { .. }) {
            self.deliver(vec![(peer, already_joined())]);
            return true;
        }
        let envelope = Envelope::Client {
            from: self.remote.me(),
            peer,
            msg: msg.clone(),
        };
        self.remote.push(&route.owner, &envelope);
        if matches!(msg, ClientMessage::Leave {}) {
            self.remote.routes.remove(&peer);
        }
        true
    }

    /// A message for a peer without a local queue: a proxy's goes to its node.
    pub(crate) fn send_to_origin(&mut self, peer: PeerId, msg: ServerMessage) {
        let Some((node, origin_peer)) = self.remote.origins.get(&peer).cloned() else {
            return;
        };
        let envelope = Envelope::Deliver {
            peer: origin_peer,
            msg,
        };
        self.remote.push(&node, &envelope);
    }

    /// Takes a local peer out: out of its routed room (telling the owner) or its local room.
    pub(crate) fn drop_peer(&mut self, peer: PeerId) -> crate::rooms::Outbox {
        if let Some(route) = self.remote.routes.remove(&peer) {
            let envelope = Envelope::Disconnect {
                from: self.remote.me(),
                peer,
            };
            self.remote.push(&route.owner, &envelope);
        }
        let room = self.rooms.room_name(peer).map(str::to_owned);
        let out = self.rooms.disconnect(peer);
        if let Some(room) = room {
            self.record_room(&room);
        }
        out
    }

    /// After a change by `peer`: records its room(s) before and now, if owned here.
    pub(crate) fn record_rooms(&mut self, peer: PeerId, before: Option<String>) {
        let now = self.rooms.room_name(peer).map(str::to_owned);
        for room in before
            .iter()
            .chain(now.iter().filter(|n| Some(*n) != before.as_ref()))
        {
            self.record_room(room);
        }
    }

    /// Queues the participants of an owned room for Redis (see the module doc).
    fn record_room(&mut self, room: &str) {
        let Some(outbound) = &self.remote.outbound else {
            return;
        };
        if !self.remote.owned.contains(room) {
            return;
        }
        let me = self.remote.node.clone().unwrap_or_default();
        let members = self
            .rooms
            .members_of(room)
            .into_iter()
            .map(|record| {
                let (node, peer) = self
                    .remote
                    .origins
                    .get(&record.peer)
                    .cloned()
                    .unwrap_or((me.clone(), record.peer));
                let username = record.username.clone();
                let stored = StoredMember { node, peer, record };
                (
                    username,
                    serde_json::to_string(&stored).expect("serialises"),
                )
            })
            .collect();
        let _ = outbound.send(Outbound::Members {
            room: room.to_owned(),
            members,
        });
    }

    /// Removes a proxy from its room and forgets it.
    fn drop_proxy(&mut self, proxy: PeerId) {
        if let Some(origin) = self.remote.origins.remove(&proxy) {
            self.remote.proxies.remove(&origin);
        }
        let room = self.rooms.room_name(proxy).map(str::to_owned);
        let out = self.rooms.disconnect(proxy);
        self.deliver(out);
        if let Some(room) = room {
            self.record_room(&room);
        }
    }

    /// A new proxy peer for `origin`, connected (its `welcome` is not sent anywhere).
    fn new_proxy(&mut self, origin: (String, PeerId)) -> PeerId {
        let proxy = self.next_peer;
        self.next_peer += 1;
        let _welcome = self.rooms.connect(proxy);
        self.remote.proxies.insert(origin.clone(), proxy);
        self.remote.origins.insert(proxy, origin);
        proxy
    }

    /// Closes a local connection (it reconnects and rejoins) and takes it out of everything.
    fn evict(&mut self, peer: PeerId) {
        if self.queues.remove(&peer).is_some() {
            tracing::info!(peer, "evicting: its room moved or this node lost Redis");
            let out = self.drop_peer(peer);
            self.deliver(out);
        }
    }

    /// Gives up an owned room: local participants are closed, the others evicted by their edges.
    fn abandon_room(&mut self, room: &str) {
        tracing::warn!(room, "giving up the room");
        self.remote.owned.remove(room);
        for record in self.rooms.members_of(room) {
            match self.remote.origins.get(&record.peer).cloned() {
                Some((node, origin_peer)) => {
                    self.remote
                        .push(&node, &Envelope::Evict { peer: origin_peer });
                    self.drop_proxy(record.peer);
                }
                None => self.evict(record.peer),
            }
        }
    }

    /// Applies one envelope from another node.
    fn receive(&mut self, envelope: Envelope) {
        match envelope {
            Envelope::Join {
                from,
                peer,
                room,
                username,
                grants,
            } => {
                if let Some(waiting) = self.remote.acquiring.get_mut(&room) {
                    waiting.push(Envelope::Join {
                        from,
                        peer,
                        room,
                        username,
                        grants,
                    });
                    return;
                }
                if !self.remote.owned.contains(&room) {
                    let msg = unavailable("the room moved to another server; try again");
                    self.remote.push(&from, &Envelope::Deliver { peer, msg });
                    return;
                }
                if let Some(old) = self.remote.proxies.get(&(from.clone(), peer)).copied() {
                    self.drop_proxy(old);
                }
                let proxy = self.new_proxy((from, peer));
                let out = self.rooms.join(
                    proxy,
                    room.clone(),
                    username,
                    Ok(grants),
                    std::time::SystemTime::now(),
                );
                self.deliver(out);
                if self.rooms.room_name(proxy).is_none() {
                    self.drop_proxy(proxy);
                } else {
                    self.record_room(&room);
                }
            }
            Envelope::Client { from, peer, msg } => {
                let Some(proxy) = self.remote.proxies.get(&(from, peer)).copied() else {
                    return;
                };
                let before = self.rooms.room_name(proxy).map(str::to_owned);
                let changes = changes_members(&msg);
                let out = self.rooms.handle(proxy, msg);
                self.deliver(out);
                if self.rooms.room_name(proxy).is_none() {
                    self.drop_proxy(proxy);
                    if let Some(room) = before {
                        self.record_room(&room);
                    }
                } else if changes {
                    self.record_rooms(proxy, before);
                }
            }
            Envelope::Disconnect { from, peer } => {
                if let Some(proxy) = self.remote.proxies.get(&(from, peer)).copied() {
                    self.drop_proxy(proxy);
                }
            }
            Envelope::Claim { from, room, peers } => {
                let gone: Vec<PeerId> = self
                    .remote
                    .proxies
                    .iter()
                    .filter(|((node, origin_peer), proxy)| {
                        *node == from
                            && !peers.contains(origin_peer)
                            && self.rooms.room_name(**proxy) == Some(room.as_str())
                    })
                    .map(|(_, proxy)| *proxy)
                    .collect();
                for proxy in gone {
                    self.drop_proxy(proxy);
                }
            }
            Envelope::Deliver { peer, msg } => self.deliver_routed(peer, msg),
            Envelope::Evict { peer } => self.evict(peer),
        }
    }

    /// A message from a room's owner for a local participant; `state` and `failed` settle a
    /// pending join.
    fn deliver_routed(&mut self, peer: PeerId, msg: ServerMessage) {
        if let Some(route) = self.remote.routes.get_mut(&peer) {
            match &msg {
                ServerMessage::State { .. } => route.joined = true,
                ServerMessage::Failed { .. } if !route.joined => {
                    self.remote.routes.remove(&peer);
                }
                _ => {}
            }
        } else if !matches!(msg, ServerMessage::Failed { .. }) {
            // Not (or no longer) in a room owned elsewhere: a late message for a peer that left.
            return;
        }
        self.deliver(vec![(peer, msg)]);
    }

    /// Rebuilds a room this node has just taken the lease of, from the participants recorded
    /// in Redis: those of live nodes come back silently, the others are announced as gone.
    fn take_over(&mut self, room: &str, stored: Vec<StoredMember>, alive: &HashSet<String>) {
        let me = self.remote.me();
        self.remote.owned.insert(room.to_owned());
        let mut departed = Vec::new();
        for member in stored {
            if member.node == me {
                let routed_here = self
                    .remote
                    .routes
                    .get(&member.peer)
                    .is_some_and(|r| r.room == room && r.joined);
                if routed_here && self.queues.contains_key(&member.peer) {
                    self.remote.routes.remove(&member.peer);
                    self.rooms.restore(member.peer, room, member.record);
                } else {
                    departed.push(member.record);
                }
            } else if alive.contains(&member.node) {
                let proxy = self.new_proxy((member.node, member.peer));
                self.rooms.restore(proxy, room, member.record);
            } else {
                departed.push(member.record);
            }
        }
        for record in departed {
            let out = self.rooms.departed(room, &record);
            self.deliver(out);
        }
        self.record_room(room);
        self.release_waiting(room);
    }

    /// Applies the joins that arrived while `room` was being taken over (if it was not taken
    /// after all, they are refused as unavailable).
    fn release_waiting(&mut self, room: &str) {
        for envelope in self.remote.acquiring.remove(room).unwrap_or_default() {
            self.receive(envelope);
        }
    }
}

/// This node's side of the cluster: Redis connections and the background tasks.
pub struct Cluster {
    hub: Arc<Hub>,
    node: String,
    advertise_url: String,
    client: redis::Client,
    redis: ConnectionManager,
    /// False while the heartbeat cannot be written: joins are refused.
    available: AtomicBool,
    /// One takeover or owner lookup at a time on this node.
    acquiring: tokio::sync::Mutex<()>,
    capacity: usize,
}

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub redis_url: String,
    /// This node's id, unique among the nodes (default: a random one).
    pub node_id: String,
    /// Where this node can be reached (shown in the node's heartbeat record).
    pub advertise_url: String,
}

impl ClusterConfig {
    /// A node id for a node started without one: 16 random hex digits.
    pub fn random_node_id() -> String {
        format!("{:016x}", rand::random::<u64>())
    }
}

impl Cluster {
    /// Connects to Redis and starts the heartbeat, inbox and writer tasks (ended by `shutdown`).
    pub async fn start(
        hub: Arc<Hub>,
        config: &ClusterConfig,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> redis::RedisResult<Arc<Cluster>> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = client
            .get_connection_manager_with_config(manager_config)
            .await?;
        let (outbound, queue) = mpsc::unbounded_channel();
        {
            let mut state = hub.state.lock().unwrap();
            state.remote.node = Some(config.node_id.clone());
            state.remote.outbound = Some(outbound);
        }
        let cluster = Arc::new(Cluster {
            hub,
            node: config.node_id.clone(),
            advertise_url: config.advertise_url.clone(),
            client,
            redis,
            available: AtomicBool::new(false),
            acquiring: tokio::sync::Mutex::new(()),
            capacity,
        });
        cluster.heartbeat().await;
        tokio::spawn(cluster.clone().write(queue, shutdown.clone()));
        tokio::spawn(cluster.clone().read_inbox(shutdown.clone()));
        tokio::spawn(cluster.clone().tick(shutdown));
        tracing::info!(node = %cluster.node, "joined the cluster");
        Ok(cluster)
    }

    /// Whether Redis answered the last heartbeat.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// A join read from local `peer`: verified at the edge, then run by the room's owner.
    pub async fn join(
        &self,
        peer: PeerId,
        room: String,
        username: String,
        admitted: Result<Grants, Refusal>,
        id: Option<String>,
    ) {
        let refused_here = admitted.is_err()
            || validate_name(&room).is_err()
            || validate_username(&username).is_err()
            || self
                .hub
                .state
                .lock()
                .unwrap()
                .rooms
                .room_name(peer)
                .is_some();
        if refused_here {
            // The local rules give the right `failed` answer.
            return self.hub.join(peer, room, username, admitted, id);
        }
        let grants = admitted.expect("checked");
        if !self.is_available() {
            return self.fail(
                peer,
                "this server has lost its connection to Redis; try again",
            );
        }
        match self.owner_of(&room).await {
            Ok(owner) if owner == self.node => self.hub.join(peer, room, username, Ok(grants), id),
            Ok(owner) => self.route_join(peer, room, username, grants, owner),
            Err(why) => {
                tracing::warn!(room, "no owner for the room: {why}");
                self.fail(peer, "no server could take the room; try again")
            }
        }
    }

    fn fail(&self, peer: PeerId, detail: &str) {
        let mut state = self.hub.state.lock().unwrap();
        state.deliver(vec![(peer, unavailable(detail))]);
    }

    fn route_join(
        &self,
        peer: PeerId,
        room: String,
        username: String,
        grants: Grants,
        owner: String,
    ) {
        let mut state = self.hub.state.lock().unwrap();
        if state.remote.routes.contains_key(&peer) {
            return state.deliver(vec![(peer, already_joined())]);
        }
        if !state.queues.contains_key(&peer) {
            return;
        }
        let envelope = Envelope::Join {
            from: self.node.clone(),
            peer,
            room: room.clone(),
            username,
            grants,
        };
        state.remote.push(&owner, &envelope);
        let route = Route {
            room,
            owner,
            joined: false,
        };
        state.remote.routes.insert(peer, route);
    }

    /// The node that owns `room`, taking the lease (and the room) when nobody holds it.
    async fn owner_of(&self, room: &str) -> Result<String, String> {
        let _one_at_a_time = self.acquiring.lock().await;
        let mut redis = self.redis.clone();
        let deadline = tokio::time::Instant::now() + LEASE + 2 * TICK;
        loop {
            let holder: Option<String> = redis
                .get(lease_key(room))
                .await
                .map_err(|e| e.to_string())?;
            match holder {
                Some(node) if node == self.node => {
                    if self.hub.state.lock().unwrap().remote.owned.contains(room) {
                        return Ok(node);
                    }
                    // A lease of ours we do not act on (left from before a restart): rebuild.
                    self.take_over(room).await?;
                    return Ok(node);
                }
                Some(node) => {
                    if self.is_alive(&node).await.map_err(|e| e.to_string())? {
                        return Ok(node);
                    }
                }
                None => {
                    // Joins forwarded by nodes that see our lease wait until the room is rebuilt.
                    self.hub
                        .state
                        .lock()
                        .unwrap()
                        .remote
                        .acquiring
                        .entry(room.to_owned())
                        .or_default();
                    let taken = self.take_lease(room).await;
                    if let Ok(true) = taken {
                        self.take_over(room).await?;
                        return Ok(self.node.clone());
                    }
                    self.hub.state.lock().unwrap().release_waiting(room);
                    taken.map_err(|e| e.to_string())?;
                    continue;
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err("its owner is gone and the lease has not expired".into());
            }
            tokio::time::sleep(TICK / 5).await;
        }
    }

    /// Reads the room's record and rebuilds the room here (the lease is already ours).
    async fn take_over(&self, room: &str) -> Result<(), String> {
        let rebuilt = self.read_and_rebuild(room).await;
        if rebuilt.is_err() {
            self.hub.state.lock().unwrap().release_waiting(room);
        }
        rebuilt
    }

    async fn read_and_rebuild(&self, room: &str) -> Result<(), String> {
        let mut redis = self.redis.clone();
        let fields: HashMap<String, String> = redis
            .hgetall(members_key(room))
            .await
            .map_err(|e| e.to_string())?;
        let stored: Vec<StoredMember> = fields
            .values()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        let mut alive = HashSet::new();
        for node in stored
            .iter()
            .map(|m| m.node.clone())
            .collect::<HashSet<_>>()
        {
            if node != self.node && self.is_alive(&node).await.map_err(|e| e.to_string())? {
                alive.insert(node);
            }
        }
        if !stored.is_empty() {
            tracing::info!(room, members = stored.len(), "taking the room over");
        }
        self.hub
            .state
            .lock()
            .unwrap()
            .take_over(room, stored, &alive);
        Ok(())
    }

    async fn is_alive(&self, node: &str) -> redis::RedisResult<bool> {
        self.redis.clone().exists(node_key(node)).await
    }

    /// Writes the heartbeat; returns whether Redis answered.
    async fn heartbeat(&self) -> bool {
        let mut redis = self.redis.clone();
        let written: redis::RedisResult<()> = redis
            .pset_ex(
                node_key(&self.node),
                &self.advertise_url,
                LEASE.as_millis() as u64,
            )
            .await;
        let ok = written.is_ok();
        if ok != self.available.swap(ok, Ordering::Relaxed) {
            match ok {
                true => tracing::info!("Redis reachable: accepting joins"),
                false => tracing::warn!("Redis unreachable: refusing joins"),
            }
        }
        ok
    }

    /// Every [`TICK`]: heartbeat, leases, and the other nodes' liveness (see the module doc).
    async fn tick(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK);
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        let mut missing_once: HashSet<String> = HashSet::new();
        let forgetting: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if !self.heartbeat().await {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= LEASE - TICK {
                    self.give_up_everything();
                }
                continue;
            }
            unreachable_since = None;
            self.renew_leases().await;
            match self.check_nodes(&mut missing_once).await {
                Ok(dead) => {
                    for node in dead {
                        self.spawn_forget(node, &forgetting);
                    }
                }
                Err(why) => tracing::warn!("checking the other nodes failed: {why}"),
            }
        }
    }

    /// Forgets a dead node on its own task: finding a room's new owner can wait for the dead
    /// owner's lease to expire (up to [`LEASE`] + 2 [`TICK`]s), and the tick loop must go on
    /// meanwhile — a missed heartbeat of this node would make the others count it dead too and
    /// drop its participants. `forgetting` keeps one task per dead node.
    fn spawn_forget(self: &Arc<Self>, node: String, forgetting: &Arc<Mutex<HashSet<String>>>) {
        if !forgetting.lock().unwrap().insert(node.clone()) {
            return;
        }
        let this = self.clone();
        let forgetting = forgetting.clone();
        tokio::spawn(async move {
            this.forget_node(&node).await;
            forgetting.lock().unwrap().remove(&node);
        });
    }

    /// Closes every participant in a shared room: without Redis this node cannot prove it
    /// still owns its rooms, and the others already count its participants as gone.
    fn give_up_everything(&self) {
        let mut state = self.hub.state.lock().unwrap();
        let owned: Vec<String> = state.remote.owned.iter().cloned().collect();
        for room in owned {
            state.abandon_room(&room);
        }
        let routed: Vec<PeerId> = state.remote.routes.keys().copied().collect();
        for peer in routed {
            state.evict(peer);
        }
    }

    /// Renews the leases of owned rooms; releases those that emptied, gives up those lost.
    async fn renew_leases(&self) {
        let (rooms, empty) = {
            let mut state = self.hub.state.lock().unwrap();
            let owned: Vec<String> = state.remote.owned.iter().cloned().collect();
            let (rooms, empty): (Vec<_>, Vec<_>) = owned
                .into_iter()
                .partition(|room| state.rooms.has_room(room));
            let was_empty = std::mem::replace(
                &mut state.remote.empty_once,
                empty.iter().cloned().collect(),
            );
            let release = empty
                .into_iter()
                .filter(|r| was_empty.contains(r))
                .collect::<Vec<_>>();
            // Empty rooms keep their lease until released.
            let keep: Vec<String> = rooms
                .into_iter()
                .chain(state.remote.empty_once.iter().cloned())
                .collect();
            (keep, release)
        };
        let mut redis = self.redis.clone();
        let renew = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        );
        let release = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               redis.call('DEL', KEYS[2]); redis.call('SREM', KEYS[3], ARGV[2]); \
               return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        for room in empty {
            let released: redis::RedisResult<i64> = release
                .key(lease_key(&room))
                .key(members_key(&room))
                .key(ROOMS_KEY)
                .arg(&self.node)
                .arg(&room)
                .invoke_async(&mut redis)
                .await;
            if released.is_err() {
                continue;
            }
            let refilled = {
                let mut state = self.hub.state.lock().unwrap();
                let refilled = state.rooms.has_room(&room);
                if !refilled {
                    state.remote.owned.remove(&room);
                }
                refilled
            };
            // Someone joined while the lease was being released: take it back, or give up.
            if refilled && !self.retake(&room).await {
                self.hub.state.lock().unwrap().abandon_room(&room);
            }
        }
        for room in rooms {
            let renewed: redis::RedisResult<i64> = renew
                .key(lease_key(&room))
                .arg(&self.node)
                .arg(LEASE.as_millis() as u64)
                .invoke_async(&mut redis)
                .await;
            if let Ok(0) = renewed {
                self.hub.state.lock().unwrap().abandon_room(&room);
            }
        }
    }

    /// Takes the lease of a room this node still runs; false when another node has it.
    async fn retake(&self, room: &str) -> bool {
        matches!(self.take_lease(room).await, Ok(true))
    }

    /// Takes `room`'s lease if nobody holds it (SET NX PX): whether this node got it.
    async fn take_lease(&self, room: &str) -> redis::RedisResult<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(lease_key(room))
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(taken.is_some())
    }

    /// The nodes this node depends on that missed two checks in a row (see the module doc).
    async fn check_nodes(&self, missing_once: &mut HashSet<String>) -> Result<Vec<String>, String> {
        let nodes: HashSet<String> = {
            let state = self.hub.state.lock().unwrap();
            let owners = state.remote.routes.values().map(|r| r.owner.clone());
            let origins = state.remote.origins.values().map(|(n, _)| n.clone());
            owners.chain(origins).collect()
        };
        let mut dead = Vec::new();
        for node in nodes {
            if self.is_alive(&node).await.map_err(|e| e.to_string())? {
                missing_once.remove(&node);
            } else if !missing_once.insert(node.clone()) {
                dead.push(node);
            }
        }
        for node in &dead {
            tracing::warn!(node, "node is gone");
            missing_once.remove(node);
        }
        Ok(dead)
    }

    /// A dead node's participants leave the rooms owned here; rooms it owned are found a new
    /// owner (maybe this node).
    async fn forget_node(&self, node: &str) {
        let rooms: HashSet<String> = {
            let mut state = self.hub.state.lock().unwrap();
            let proxies: Vec<PeerId> = state
                .remote
                .origins
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(proxy, _)| *proxy)
                .collect();
            for proxy in proxies {
                state.drop_proxy(proxy);
            }
            let pending: Vec<PeerId> = state
                .remote
                .routes
                .iter()
                .filter(|(_, r)| r.owner == node && !r.joined)
                .map(|(peer, _)| *peer)
                .collect();
            for peer in pending {
                state.remote.routes.remove(&peer);
                let msg = unavailable("the room is moving to another server; try again");
                state.deliver(vec![(peer, msg)]);
            }
            state
                .remote
                .routes
                .values()
                .filter(|r| r.owner == node)
                .map(|r| r.room.clone())
                .collect()
        };
        for room in rooms {
            match self.owner_of(&room).await {
                Ok(owner) => self.follow(&room, node, owner),
                Err(why) => {
                    tracing::warn!(room, "could not find a new owner: {why}");
                    let mut state = self.hub.state.lock().unwrap();
                    let peers: Vec<PeerId> = state
                        .remote
                        .routes
                        .iter()
                        .filter(|(_, r)| r.room == room)
                        .map(|(peer, _)| *peer)
                        .collect();
                    for peer in peers {
                        state.evict(peer);
                    }
                }
            }
        }
    }

    /// Points this node's participants of `room` at its new owner and claims them there.
    fn follow(&self, room: &str, old_owner: &str, owner: String) {
        let mut state = self.hub.state.lock().unwrap();
        // The claim lists every participant of `room` now routed to `owner`, not only those
        // moved by this call: a second `follow` for the same takeover (seen when the dead
        // owner is noticed on two ticks) must not claim nobody, or the owner drops them all.
        let mut peers = Vec::new();
        for (peer, route) in state.remote.routes.iter_mut() {
            if route.room != room {
                continue;
            }
            if route.owner == old_owner {
                route.owner = owner.clone();
            }
            if route.owner == owner {
                peers.push(*peer);
            }
        }
        if owner != self.node {
            let claim = Envelope::Claim {
                from: self.node.clone(),
                room: room.to_owned(),
                peers,
            };
            state.remote.push(&owner, &claim);
        }
    }

    /// The writer task: sends [`Outbound`] items to Redis in order, batching what is queued.
    async fn write(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Outbound>,
        shutdown: CancellationToken,
    ) {
        let mut redis = self.redis.clone();
        let mut batch = Vec::new();
        loop {
            let count = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = queue.recv_many(&mut batch, 256) => n,
            };
            if count == 0 {
                return;
            }
            let mut pipe = redis::pipe();
            for item in batch.drain(..) {
                match item {
                    Outbound::Push { node, json } => {
                        pipe.rpush(inbox_key(&node), json).ignore();
                        pipe.pexpire(inbox_key(&node), INBOX_TTL_MS as i64).ignore();
                    }
                    Outbound::Members { room, members } => {
                        pipe.del(members_key(&room)).ignore();
                        if members.is_empty() {
                            pipe.srem(ROOMS_KEY, &room).ignore();
                        } else {
                            pipe.hset_multiple(members_key(&room), &members).ignore();
                            pipe.sadd(ROOMS_KEY, &room).ignore();
                        }
                    }
                }
            }
            let sent: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
            if let Err(why) = sent {
                tracing::warn!("writing to Redis failed, messages to other nodes lost: {why}");
            }
        }
    }

    /// The inbox task: applies envelopes from other nodes, in order.
    async fn read_inbox(self: Arc<Self>, shutdown: CancellationToken) {
        let key = inbox_key(&self.node);
        let mut connection: Option<MultiplexedConnection> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let Some(redis) = connection.as_mut() else {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(Duration::from_millis(1000)));
                match self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(c) => connection = Some(c),
                    Err(_) => {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(TICK / 2) => {}
                        }
                    }
                }
                continue;
            };
            let popped: redis::RedisResult<Option<(String, String)>> = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = redis.blpop(&key, 1.0) => r,
            };
            match popped {
                Ok(Some((_, json))) => match serde_json::from_str::<Envelope>(&json) {
                    Ok(envelope) => self.hub.state.lock().unwrap().receive(envelope),
                    Err(why) => tracing::warn!("ignoring a malformed envelope: {why}"),
                },
                Ok(None) => {}
                Err(why) => {
                    tracing::debug!("inbox read failed: {why}");
                    connection = None;
                }
            }
        }
    }

    /// The `/rooms` listing across all nodes.
    pub async fn summary(&self) -> redis::RedisResult<Vec<RoomSummary>> {
        let mut redis = self.redis.clone();
        let mut names: Vec<String> = redis.smembers(ROOMS_KEY).await?;
        names.sort();
        let mut list = Vec::new();
        for room in names {
            let participants: usize = redis.hlen(members_key(&room)).await?;
            if participants > 0 {
                list.push(RoomSummary {
                    room,
                    participants,
                    capacity: self.capacity,
                });
            }
        }
        Ok(list)
    }
}
