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
//!   are put back without any message, and everyone gets LEFT for those of dead nodes. The new
//!   owner tells each edge first (an `Owner` envelope, ahead of its events in the edge's inbox),
//!   so what a participant sends after hearing of the takeover goes to the new owner. Each edge
//!   then tells the new owner which of its participants are still there (a claim), so one that
//!   left meanwhile does not linger. Sessions that were open are lost with the owner's memory;
//!   edges track their participants' sessions from the owner's messages and end (with
//!   `session-ended`) those whose other end they hear LEFT for, which an owner that knew the
//!   session would have ended before; the new owner does the same for its own participants. Session ids start at a random number on every node, so
//!   the new owner does not reuse the ids of sessions still open.
//!
//! Finding a room's owner (and taking it over) is one task per room at a time: joins to the
//! same room wait for the same lookup, joins to other rooms never wait on it (a dead owner
//! delays only its own rooms' joins, until its lease expires).
//!
//! # Redis unavailable
//!
//! A node whose heartbeat cannot be written refuses new joins (`failed` `unavailable`). An owner
//! that cannot renew a lease within its lifetime, or finds it taken, gives the room up: it
//! closes its participants' connections in that room and evicts the others (their edges close
//! them), and they reconnect and rejoin — possibly elsewhere. A room is never run by two owners
//! at once, so it is never split. A node whose queue to Redis overflows (see [`outbound`])
//! gives up its shared rooms the same way.
//!
//! # Rules and tasks
//!
//! The decisions are a state machine without I/O, [`rules::Routing`]: who owns a room, where a
//! participant's messages go (the local rules, or the owner's inbox), what a takeover rebuilds,
//! what forgetting a dead node does. It wraps the room rules and returns [`rules::Action`]s,
//! and is unit- and property-tested without sockets or Redis. The hub ([`crate::hub`]) holds it
//! behind its lock and carries out the actions. The I/O is around it, in tasks:
//! [`Cluster`] (`node.rs`: the heartbeat/lease tick, the inbox reader, the writer, owner
//! lookups) over [`store`] (the Redis keys and commands).
//!
//! Imports go one way, so no two modules import each other:
//! `rooms` ← `cluster::rules` ← `hub` ← `cluster::node` ← `server`/`connection`
//! (`hub` also uses the leaf `cluster::outbound`; `cluster::node` uses `store` and
//! `single_flight`). The hub knows the routing's actions, never the tasks; the tasks reach the
//! routing only through the hub ([`crate::hub::Hub::update`]).

mod node;
pub mod outbound;
pub mod rules;
mod single_flight;
mod store;

use std::sync::Arc;
use std::time::Duration;

pub use node::Cluster;

/// How often heartbeats and leases are refreshed and other nodes checked.
pub const TICK: Duration = Duration::from_millis(500);
/// Lifetime of a heartbeat or a room lease. A node dead for longer is noticed by the others
/// within `LEASE + 2 * TICK`.
pub const LEASE: Duration = Duration::from_millis(2000);

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

/// Why the cluster could not do something. `Clone`: one owner lookup's outcome goes to every
/// join that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused the command or did not answer in time.
    #[error("{0}")]
    Redis(Arc<redis::RedisError>),
    /// The room's lease is held by a node without a heartbeat, and did not expire in time.
    #[error("its owner {owner} is gone and the lease has not expired")]
    OwnerGone { owner: String },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl From<redis::RedisError> for ClusterError {
    fn from(err: redis::RedisError) -> Self {
        ClusterError::Redis(Arc::new(err))
    }
}
