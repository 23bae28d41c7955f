//! This node's side of the cluster: the tasks that feed the routing rules what Redis says and
//! give Redis what the rules decide (see `super` for the design).
//!
//! - the *tick* (every [`TICK`]): heartbeat, leases, the liveness of the nodes this one depends
//!   on; a dead node is forgotten on a task of its own;
//! - the *inbox reader*: envelopes from other nodes, applied in order;
//! - the *writer*: the routing's items for Redis, in order, batched into pipelines;
//! - the *owner lookups*: one per room at a time ([`SingleFlight`]), taking the room over when
//!   its lease is free.
//!
//! Every task is on the server's [`TaskTracker`] and ends when `shutdown` is cancelled.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::outbound::{self, OutboundQueue};
use super::rules::{Leases, Liveness, Outbound, Routing, unavailable};
use super::single_flight::SingleFlight;
use super::store::Store;
use super::{ClusterConfig, ClusterError, LEASE, TICK};
use crate::auth::{Grants, Refusal};
use crate::hub::Hub;
use crate::rooms::{PeerId, RoomSummary};

/// Most items the writer sends in one pipeline.
const WRITE_BATCH: usize = 256;

/// This node's side of the cluster: Redis and the background tasks (see the module doc).
pub struct Cluster {
    hub: Arc<Hub>,
    node: String,
    advertise_url: String,
    store: Store,
    /// False while the heartbeat cannot be written: joins are refused.
    available: AtomicBool,
    /// The owner lookups in flight, one per room.
    lookups: SingleFlight<Result<String, ClusterError>>,
    /// The hub's queue to the writer; read here for what it dropped.
    outbound: Arc<OutboundQueue>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    capacity: usize,
}

impl Cluster {
    /// Connects to Redis and starts the heartbeat, inbox and writer tasks on `tasks` (ended by
    /// `shutdown`).
    pub async fn start(
        hub: Arc<Hub>,
        config: &ClusterConfig,
        capacity: usize,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let store = Store::connect(&config.redis_url, &config.node_id).await?;
        let (outbound, queue) = OutboundQueue::new(outbound::CAPACITY);
        let outbound = Arc::new(outbound);
        // Session ids stay unique across the nodes (up to 2^48 sessions per node).
        let first_session = 1 + (rand::random::<u64>() >> 16);
        hub.join_cluster(config.node_id.clone(), first_session, outbound.clone());
        let cluster = Arc::new(Cluster {
            hub,
            node: config.node_id.clone(),
            advertise_url: config.advertise_url.clone(),
            store,
            available: AtomicBool::new(false),
            lookups: SingleFlight::default(),
            outbound,
            tasks: tasks.clone(),
            shutdown,
            capacity,
        });
        cluster.heartbeat().await;
        tasks.spawn(cluster.clone().write(queue));
        tasks.spawn(cluster.clone().read_inbox());
        tasks.spawn(cluster.clone().tick());
        tracing::info!(node = %cluster.node, "joined the cluster");
        Ok(cluster)
    }

    /// Whether Redis answered the last heartbeat.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// A join read from local `peer`: verified at the edge, then run by the room's owner.
    pub async fn join(
        self: &Arc<Self>,
        peer: PeerId,
        room: String,
        username: String,
        admitted: Result<Grants, Refusal>,
        id: Option<String>,
    ) {
        let refused = self
            .hub
            .read(|routing| routing.refuses_at_the_edge(peer, &room, &username, &admitted));
        if refused {
            // The local rules give the right `failed` answer.
            return self.hub.join(peer, room, username, admitted, id);
        }
        let Ok(grants) = admitted else {
            unreachable!("a refused token is answered at the edge")
        };
        if !self.is_available() {
            let detail = "this server has lost its connection to Redis; try again";
            return self.fail(peer, detail, id);
        }
        match self.owner_of(&room).await {
            Ok(owner) if owner == self.node => self.hub.join(peer, room, username, Ok(grants), id),
            Ok(owner) => self
                .hub
                .update(|routing| routing.route_join(peer, room, username, grants, owner, id)),
            Err(why) => {
                tracing::warn!(room, "no owner for the room: {why}");
                self.fail(peer, "no server could take the room; try again", id)
            }
        }
    }

    /// The `/rooms` listing across all nodes.
    pub async fn summary(&self) -> Result<Vec<RoomSummary>, ClusterError> {
        self.store.summary(self.capacity).await
    }

    fn fail(&self, peer: PeerId, detail: &str, id: Option<String>) {
        self.hub
            .update(|routing| routing.answer(peer, unavailable(detail), id));
    }

    /// The node that owns `room`, taking the lease (and the room) when nobody holds it. One
    /// lookup per room at a time, shared by everyone who asks meanwhile.
    async fn owner_of(self: &Arc<Self>, room: &str) -> Result<String, ClusterError> {
        let this = self.clone();
        let key = room.to_owned();
        let lookup = move || async move { this.find_owner(&key).await };
        let found = self.lookups.run(room, &self.tasks, lookup).await;
        found.unwrap_or(Err(ClusterError::ShuttingDown))
    }

    /// [`Self::owner_of`]'s lookup: waits (at most `LEASE + 2 * TICK`) for a dead owner's
    /// lease to expire.
    async fn find_owner(&self, room: &str) -> Result<String, ClusterError> {
        let deadline = tokio::time::Instant::now() + LEASE + 2 * TICK;
        loop {
            match self.store.lease_holder(room).await? {
                Some(node) if node == self.node => {
                    if !self.hub.read(|routing| routing.owns(room)) {
                        // A lease of ours we do not act on (left from before a restart): rebuild.
                        self.take_over(room).await?;
                    }
                    return Ok(node);
                }
                Some(node) => {
                    if self.store.is_alive(&node).await? {
                        return Ok(node);
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(ClusterError::OwnerGone { owner: node });
                    }
                }
                None => {
                    // Joins forwarded by nodes that see our lease wait until the room is rebuilt.
                    self.hub.update(|routing| {
                        routing.begin_acquiring(room);
                        Vec::new()
                    });
                    let taken = self.store.take_lease(room).await;
                    if let Ok(true) = taken {
                        self.take_over(room).await?;
                        return Ok(self.node.clone());
                    }
                    let now = SystemTime::now();
                    self.hub
                        .update(|routing| routing.release_waiting(room, now));
                    taken?;
                    // Another node took it first: ask again who.
                    continue;
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ClusterError::ShuttingDown),
                _ = tokio::time::sleep(TICK / 5) => {}
            }
        }
    }

    /// Reads the room's record and rebuilds the room here (the lease is already ours); on
    /// failure, the joins that waited for the room are refused.
    async fn take_over(&self, room: &str) -> Result<(), ClusterError> {
        let rebuilt = self.read_and_rebuild(room).await;
        if rebuilt.is_err() {
            let now = SystemTime::now();
            self.hub
                .update(|routing| routing.release_waiting(room, now));
        }
        rebuilt
    }

    async fn read_and_rebuild(&self, room: &str) -> Result<(), ClusterError> {
        let stored = self.store.members(room).await?;
        let nodes: HashSet<&str> = stored.iter().map(|m| m.node.as_str()).collect();
        let alive = self.store.alive_among(nodes).await?;
        if !stored.is_empty() {
            tracing::info!(room, members = stored.len(), "taking the room over");
        }
        let now = SystemTime::now();
        self.hub
            .update(|routing| routing.take_over(room, stored, &alive, now));
        Ok(())
    }

    /// Writes the heartbeat; returns whether Redis answered.
    async fn heartbeat(&self) -> bool {
        let ok = self.store.heartbeat(&self.advertise_url).await.is_ok();
        if ok != self.available.swap(ok, Ordering::Relaxed) {
            match ok {
                true => tracing::info!("Redis reachable: accepting joins"),
                false => tracing::warn!("Redis unreachable: refusing joins"),
            }
        }
        ok
    }

    /// Every [`TICK`]: heartbeat, leases, and the other nodes' liveness (see `super`).
    async fn tick(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        let mut liveness = Liveness::default();
        let forgetting: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let lost = self.outbound.take_lost();
            if lost > 0 {
                tracing::warn!(
                    lost,
                    "messages to other nodes were dropped: giving up the shared rooms"
                );
                self.hub.update(Routing::give_up_everything);
            }
            if !self.heartbeat().await {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= LEASE - TICK {
                    self.hub.update(Routing::give_up_everything);
                }
                continue;
            }
            unreachable_since = None;
            self.renew_leases().await;
            match self.check_nodes(&mut liveness).await {
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
        self.tasks.spawn(async move {
            this.forget_node(&node).await;
            forgetting.lock().unwrap().remove(&node);
        });
    }

    /// Renews the leases of owned rooms; releases those that emptied, gives up those lost.
    async fn renew_leases(&self) {
        let Leases { renew, release } = self
            .hub
            .update_with(|routing| (routing.leases(), Vec::new()));
        for room in release {
            if self.store.release_lease(&room).await.is_err() {
                continue;
            }
            let refilled = self.hub.update_with(|routing| routing.released(&room));
            // Someone joined while the lease was being released: take it back, or give up.
            if refilled && !matches!(self.store.take_lease(&room).await, Ok(true)) {
                self.hub.update(|routing| routing.abandon_room(&room));
            }
        }
        if renew.is_empty() {
            return;
        }
        let Ok(renewed) = self.store.renew_leases(&renew).await else {
            return;
        };
        self.hub.update(|routing| {
            let lost = renew.iter().zip(renewed).filter(|(_, renewed)| !renewed);
            lost.flat_map(|(room, _)| routing.abandon_room(room))
                .collect()
        });
    }

    /// The nodes this node depends on that missed two checks in a row (see `super`).
    async fn check_nodes(&self, liveness: &mut Liveness) -> Result<Vec<String>, ClusterError> {
        let nodes = self.hub.read(Routing::watched_nodes);
        let mut dead = Vec::new();
        for node in nodes {
            let alive = self.store.is_alive(&node).await?;
            if liveness.checked(&node, alive) {
                tracing::warn!(me = %self.node, node, "node is gone");
                dead.push(node);
            }
        }
        Ok(dead)
    }

    /// A dead node's participants leave the rooms owned here; rooms it owned are found a new
    /// owner (maybe this node), all at once: one room's wait does not hold up another's.
    async fn forget_node(self: &Arc<Self>, node: &str) {
        let rooms = self.hub.update_with(|routing| routing.forget_node(node));
        let follow = rooms.into_iter().map(|room| async move {
            match self.owner_of(&room).await {
                Ok(owner) => self
                    .hub
                    .update(|routing| routing.follow(&room, Some(node), &owner)),
                Err(why) => {
                    tracing::warn!(room, "could not find a new owner: {why}");
                    self.hub.update(|routing| routing.evict_room(&room));
                }
            }
        });
        futures::future::join_all(follow).await;
    }

    /// The writer task: sends the routing's [`Outbound`] items to Redis in order, batching
    /// what is queued.
    async fn write(self: Arc<Self>, mut queue: mpsc::Receiver<Outbound>) {
        let mut batch = Vec::new();
        loop {
            let count = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                n = queue.recv_many(&mut batch, WRITE_BATCH) => n,
            };
            if count == 0 {
                return;
            }
            if let Err(why) = self.store.write(batch.drain(..)).await {
                tracing::warn!("writing to Redis failed, messages to other nodes lost: {why}");
            }
        }
    }

    /// The inbox task: applies envelopes from other nodes, in order.
    async fn read_inbox(self: Arc<Self>) {
        let mut connection: Option<MultiplexedConnection> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let Some(redis) = connection.as_mut() else {
                match self.store.inbox_connection().await {
                    Ok(c) => connection = Some(c),
                    Err(_) => {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(TICK / 2) => {}
                        }
                    }
                }
                continue;
            };
            let popped = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                popped = self.store.pop(redis) => popped,
            };
            match popped {
                Ok(Some(json)) => match serde_json::from_str(&json) {
                    Ok(envelope) => {
                        let now = SystemTime::now();
                        self.hub.update(|routing| routing.receive(envelope, now));
                    }
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
}
