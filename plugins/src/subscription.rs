//! A subscriber's task and its deterministic stop.
//!
//! Every element and signaller that follows a participant owns one [`Subscription`]: a task on
//! the plugin runtime that takes [`Event`]s from its own channel, in order, and hands each to a
//! handler. [`Subscription::stop`] is what makes an element's stop deterministic (the recipe of
//! the gst-plugins-rs signaller's `stop()`): it marks the subscription stopping (the handler is
//! not called again), has the actor drop the subscription (the channel closes, the actor stops
//! the subscriber's sessions and unpublishes its streams), and waits for the task to finish —
//! work the handler had already started included; only a task that does not finish within
//! [`STOP_WAIT`] is aborted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::RUNTIME;
use crate::client::{self, Event, RoomClient, SubscriberId};

/// How long a stop waits for a handler that is already running (a GStreamer state change in
/// roomsrc's follower takes well under a second; this bounds a wedged one).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A running subscriber; see the module doc.
pub struct Subscription {
    client: RoomClient,
    id: SubscriberId,
    stopping: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// Subscribes to `client` and runs `handler` for each event on a task of the plugin
    /// runtime. `handler` returns false to end the subscription early.
    pub fn spawn<F, Fut>(client: &RoomClient, mut handler: F) -> Subscription
    where
        F: FnMut(Event) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let (id, mut events) = client.subscribe();
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let task = RUNTIME.spawn(async move {
            while let Some(event) = events.recv().await {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                // Handlers emit signals into webrtcsink/webrtcsrc and the application, which may
                // block; block_in_place hands this worker's other tasks (the actors, with their
                // keepalive) to another thread meanwhile, so a slow handler never stalls them.
                let handled = tokio::task::block_in_place(|| handler(event));
                if !handled.await {
                    return;
                }
            }
        });
        Subscription {
            client: client.clone(),
            id,
            stopping,
            task,
        }
    }

    /// This subscriber's id, for commands whose answers must come to it (publish, play).
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// Ends the subscription and returns once its task has finished. Called from the task
    /// itself (a signal handler that stops the element), it does not wait for itself.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        self.client.unsubscribe(self.id);
        if tokio::task::try_id() == Some(self.task.id()) {
            return;
        }
        // Not aborted first: an abort would cancel the task at its next await while blocking
        // work it awaits (roomsrc adding a player) goes on unobserved. The channel is closed and
        // the flag set, so the task ends after the handler it is in.
        let abort = self.task.abort_handle();
        let task = self.task;
        let waited = RUNTIME.spawn(async move { tokio::time::timeout(STOP_WAIT, task).await });
        if let Ok(Err(_elapsed)) = client::block_on(waited) {
            gst::warning!(
                crate::events::CAT,
                "a room subscriber did not finish within {STOP_WAIT:?}: aborted"
            );
            abort.abort();
        }
    }
}
