//! The queue from the hub to this node's Redis writer: bounded, and never waited on.
//!
//! The hub carries out the routing's [`Outbound`] items under its std lock, where it must not
//! wait, so it only ever `try_send`s. The writer task drains the queue in order, one Redis
//! pipeline per batch.
//!
//! When the queue is full, Redis has not kept up for a while ([`CAPACITY`] items is seconds of
//! a busy node's traffic). The item is dropped and counted — an envelope that another node's
//! participant now misses, or a member record now stale — and on its next tick the node gives
//! up its shared rooms and routes as it does when it loses Redis: their participants are closed,
//! reconnect and rejoin into rooms that are whole again, rather than stay in rooms whose nodes
//! disagree. A queue closed because the writer ended (shutdown) drops items silently.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::rules::Outbound;

/// Most items waiting for the writer. Each is one message or member record (a few hundred
/// bytes, at most one 64 KiB protocol message), so a full queue stays in the megabytes.
pub const CAPACITY: usize = 8192;

/// The hub's end of the queue (see the module doc).
#[derive(Debug)]
pub struct OutboundQueue {
    sender: mpsc::Sender<Outbound>,
    /// Items dropped because the queue was full, since the last [`Self::take_lost`].
    lost: AtomicU64,
}

impl OutboundQueue {
    /// A queue of `capacity` items and the writer's end of it.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Outbound>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let queue = OutboundQueue {
            sender,
            lost: AtomicU64::new(0),
        };
        (queue, receiver)
    }

    /// Queues `item` for Redis; drops and counts it when the queue is full.
    pub fn send(&self, item: Outbound) {
        match self.sender.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.lost.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("the queue to Redis is full: dropping messages to other nodes");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// How many items were dropped since the last call.
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Outbound {
        Outbound::Members {
            room: format!("r{n}"),
            members: Vec::new(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_keeps_what_it_holds_in_order() {
        let (queue, mut writer) = OutboundQueue::new(2);
        for n in 0..5 {
            queue.send(item(n));
        }
        assert_eq!(queue.take_lost(), 3);
        assert_eq!(queue.take_lost(), 0, "the count starts over");
        assert_eq!(writer.try_recv().unwrap(), item(0));
        assert_eq!(writer.try_recv().unwrap(), item(1));
        assert!(writer.try_recv().is_err());
        queue.send(item(5));
        assert_eq!(
            writer.try_recv().unwrap(),
            item(5),
            "room again once drained"
        );
        assert_eq!(queue.take_lost(), 0);
    }

    #[test]
    fn a_queue_whose_writer_ended_drops_without_counting() {
        let (queue, writer) = OutboundQueue::new(2);
        drop(writer);
        queue.send(item(0));
        assert_eq!(queue.take_lost(), 0);
    }
}
