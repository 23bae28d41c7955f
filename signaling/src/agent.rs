//! Participants without a WebSocket: an HTTP request (WHIP, WHEP, later other façades) that
//! takes part in the room rules from inside the server's process.
//!
//! An [`Agent`] is registered with the hub exactly as a WebSocket connection is: it gets a
//! [`PeerId`] and an outgoing queue, the rules see one more connection, and everything they
//! decide for it (STATE, `failed`, `session-request`, the engine's SDP, `session-ended`) arrives
//! in its queue in order. So such a participant counts against capacity, takes its name, obeys
//! the stream limits and is seen by everyone else (JOINED, PUBLISHED, LEFT) exactly like a
//! roomsink — there is no second room implementation. Its media is always on the server: in a
//! room whose media goes through the server (`--media sfu`), its ingest is the server's session
//! with the façade's client, and its viewers' sessions are the server's.
//!
//! What differs from a WebSocket is only who reads and writes: the owner of the `Agent` sends
//! [`ClientMessage`]s ([`Agent::send`], [`Agent::join`]) and reads [`ServerMessage`]s
//! ([`Agent::recv`], [`Agent::recv_until`]). It must keep reading while the agent lives (a full
//! queue drops it, as it drops a slow WebSocket). Dropping the agent (or [`Agent::leave`]) is the
//! connection closing: the participant leaves its room and the room gets LEFT.
//!
//! Rate limits and tokens are the owner's to check at its edge (as `crate::connection` does for
//! WebSockets); the hub and the rules get the verdict.

use std::sync::Arc;
use std::time::Duration;

use room_protocol::{ClientMessage, ServerMessage, WithId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auth::{Grants, Refusal};
use crate::hub::{Flush, Hub, Progress};
use crate::rooms::PeerId;

/// Messages queued for an agent before the hub counts it as too slow and drops it. Its owner
/// reads at once; room events of a busy room (joins, publishes) must not drop it either.
const QUEUE: usize = 256;

/// One participant (or viewer) served inside the server, registered with the hub for as long as
/// it lives.
pub struct Agent {
    hub: Arc<Hub>,
    peer: PeerId,
    queue: mpsc::Receiver<String>,
    progress: Arc<Progress>,
    registered: bool,
}

impl Agent {
    /// Registers a new connection with `hub`; its `welcome` is read and dropped.
    pub fn register(hub: Arc<Hub>) -> Agent {
        let (sender, queue) = mpsc::channel(QUEUE);
        let progress = Arc::new(Progress::default());
        let peer = hub.register(sender, progress.clone());
        let mut agent = Agent {
            hub,
            peer,
            queue,
            progress,
            registered: true,
        };
        // The welcome is queued by `register` itself: it is there already.
        let _ = agent.try_recv();
        agent
    }

    /// The hub's id of this participant.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The hub this agent is registered with.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Asks to join `room` as `username`; `admitted` is the verdict on its token. The answer
    /// (`state` or `failed`) arrives like any message. Rooms served by this node only.
    pub fn join(&self, room: String, username: String, admitted: Result<Grants, Refusal>) {
        self.hub.join(self.peer, room, username, admitted, None);
    }

    /// Sends a protocol message, as a WebSocket client would.
    pub fn send(&self, msg: ClientMessage) {
        self.hub.handle(self.peer, msg);
    }

    /// The next message for this participant; `None` once the hub has dropped it.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            let text = self.queue.recv().await?;
            if let Some(msg) = self.delivered(&text) {
                return Some(msg);
            }
        }
    }

    /// A message already queued, without waiting.
    fn try_recv(&mut self) -> Option<ServerMessage> {
        let text = self.queue.try_recv().ok()?;
        self.delivered(&text)
    }

    /// Reads messages until `pick` takes one (returns `Some`), at most `limit`: `None` when the
    /// time is up or the hub dropped the agent. Messages `pick` passes over are dropped.
    pub async fn recv_until<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(ServerMessage) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.recv())
                .await
                .ok()??;
            if let Some(picked) = pick(msg) {
                return Some(picked);
            }
        }
    }

    /// Counts a message as written (as a WebSocket's writer does: a leaving participant waits
    /// for the others' queues) and parses it.
    fn delivered(&self, text: &str) -> Option<ServerMessage> {
        self.progress.wrote();
        match serde_json::from_str::<WithId<ServerMessage>>(text) {
            Ok(with_id) => Some(with_id.msg),
            Err(err) => {
                tracing::warn!(peer = self.peer, "unreadable message for an agent: {err}");
                None
            }
        }
    }

    /// Leaves the room (LEFT to the others) and unregisters; returns what that queued to the
    /// others, to wait for.
    pub fn leave(mut self) -> Flush {
        self.unregister()
    }

    fn unregister(&mut self) -> Flush {
        if !std::mem::replace(&mut self.registered, false) {
            return Flush::default();
        }
        self.progress.close();
        self.hub.unregister(self.peer)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Nobody waits here for the LEFT to be written: the others' writers take it from their
        // queues as usual.
        let _ = self.unregister();
    }
}
