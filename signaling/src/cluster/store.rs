//! What the cluster keeps in Redis, and the commands that read and write it. Every key starts
//! with `gst-room:`:
//!
//! - `node:ID` — a node's heartbeat (its advertised URL), expiring after [`LEASE`];
//! - `inbox:ID` — a node's inbox, a list of JSON [`Envelope`]s (`RPUSH` by any node, `BLPOP`
//!   by its node), expiring a minute after its last push;
//! - `room:NAME:owner` — a room's lease: the owner's node id, expiring after [`LEASE`] unless
//!   renewed;
//! - `room:NAME:members` — a room's participants as its owner records them: username → JSON
//!   [`StoredMember`];
//! - `rooms` — the names of the rooms with a member record (for `/rooms`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

use super::rules::{Outbound, StoredMember};
use super::{ClusterError, LEASE, TICK};
use crate::rooms::RoomSummary;

/// Every Redis key of gst-room starts with this.
const PREFIX: &str = "gst-room:";
/// An inbox of a node that stopped reading disappears after this long.
const INBOX_TTL_MS: u64 = 60_000;
/// The set of rooms with a member record.
const ROOMS_KEY: &str = "gst-room:rooms";

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

/// Renews a lease that is still this node's (KEYS[1] the lease, ARGV[1] the node, ARGV[2] the
/// lifetime): 1 if renewed, 0 if lost.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Releases a lease that is still this node's, with the room's member record.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       redis.call('DEL', KEYS[2]); redis.call('SREM', KEYS[3], ARGV[2]); \
       return redis.call('DEL', KEYS[1]) else return 0 end";

/// This node's view of Redis: one connection manager for commands (reconnects by itself),
/// and the client that opens the inbox's own connection (a blocking pop would hold up the
/// other commands of a shared one).
pub struct Store {
    client: redis::Client,
    redis: ConnectionManager,
    node: String,
}

impl Store {
    /// Connects to `url` as node `node`.
    pub async fn connect(url: &str, node: &str) -> Result<Store, ClusterError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = client.get_connection_manager_with_config(config).await?;
        let node = node.to_owned();
        Ok(Store {
            client,
            redis,
            node,
        })
    }

    /// Writes this node's heartbeat (its advertised URL), alive for [`LEASE`].
    pub async fn heartbeat(&self, advertise_url: &str) -> Result<(), ClusterError> {
        let lifetime = LEASE.as_millis() as u64;
        let () = self
            .redis
            .clone()
            .pset_ex(node_key(&self.node), advertise_url, lifetime)
            .await?;
        Ok(())
    }

    /// Whether `node`'s heartbeat is there.
    pub async fn is_alive(&self, node: &str) -> Result<bool, ClusterError> {
        Ok(self.redis.clone().exists(node_key(node)).await?)
    }

    /// Which of `nodes` other than this one are alive.
    pub async fn alive_among(
        &self,
        nodes: impl IntoIterator<Item = &str>,
    ) -> Result<HashSet<String>, ClusterError> {
        let mut alive = HashSet::new();
        for node in nodes {
            if node != self.node && self.is_alive(node).await? {
                alive.insert(node.to_owned());
            }
        }
        Ok(alive)
    }

    /// The node holding `room`'s lease, if any.
    pub async fn lease_holder(&self, room: &str) -> Result<Option<String>, ClusterError> {
        Ok(self.redis.clone().get(lease_key(room)).await?)
    }

    /// Takes `room`'s lease if nobody holds it (SET NX PX): whether this node got it.
    pub async fn take_lease(&self, room: &str) -> Result<bool, ClusterError> {
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

    /// Renews the leases of `rooms` in one round trip (a node with thousands of rooms renews
    /// them all within its tick): for each, whether it is still this node's.
    pub async fn renew_leases(&self, rooms: &[String]) -> Result<Vec<bool>, ClusterError> {
        let renew = redis::Script::new(RENEW);
        let mut pipe = redis::pipe();
        pipe.load_script(&renew).ignore();
        for room in rooms {
            pipe.invoke_script(
                renew
                    .key(lease_key(room))
                    .arg(&self.node)
                    .arg(LEASE.as_millis() as u64),
            );
        }
        let renewed: Vec<i64> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(renewed.into_iter().map(|r| r != 0).collect())
    }

    /// Releases `room`'s lease and its member record, if the lease is still this node's.
    pub async fn release_lease(&self, room: &str) -> Result<(), ClusterError> {
        let _released: i64 = redis::Script::new(RELEASE)
            .key(lease_key(room))
            .key(members_key(room))
            .key(ROOMS_KEY)
            .arg(&self.node)
            .arg(room)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// `room`'s member record (entries that do not parse are skipped).
    pub async fn members(&self, room: &str) -> Result<Vec<StoredMember>, ClusterError> {
        let fields: HashMap<String, String> = self.redis.clone().hgetall(members_key(room)).await?;
        Ok(fields
            .values()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    /// Writes `items` in order, in one pipeline.
    pub async fn write(&self, items: impl Iterator<Item = Outbound>) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        for item in items {
            match item {
                Outbound::Push { node, envelope } => {
                    let json = serde_json::to_string(&envelope).expect("envelopes serialise");
                    pipe.rpush(inbox_key(&node), json).ignore();
                    pipe.pexpire(inbox_key(&node), INBOX_TTL_MS as i64).ignore();
                }
                Outbound::Members { room, members } => {
                    pipe.del(members_key(&room)).ignore();
                    if members.is_empty() {
                        pipe.srem(ROOMS_KEY, &room).ignore();
                    } else {
                        let fields: Vec<(String, String)> = members
                            .iter()
                            .map(|m| {
                                let json = serde_json::to_string(m).expect("records serialise");
                                (m.record.username.clone(), json)
                            })
                            .collect();
                        pipe.hset_multiple(members_key(&room), &fields).ignore();
                        pipe.sadd(ROOMS_KEY, &room).ignore();
                    }
                }
            }
        }
        let () = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(())
    }

    /// A connection of its own for this node's inbox (see [`Self::pop`]).
    pub async fn inbox_connection(&self) -> Result<MultiplexedConnection, ClusterError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(TICK * 2));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// The next envelope of this node's inbox, as JSON; `None` after a second without one.
    pub async fn pop(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Result<Option<String>, ClusterError> {
        let popped: Option<(String, String)> = connection.blpop(inbox_key(&self.node), 1.0).await?;
        Ok(popped.map(|(_, json)| json))
    }

    /// The `/rooms` listing across all nodes, from the member records.
    pub async fn summary(&self, capacity: usize) -> Result<Vec<RoomSummary>, ClusterError> {
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
                    capacity,
                });
            }
        }
        Ok(list)
    }
}
