//! Blocking calls into the plugin's runtime, from whatever thread GStreamer or the application
//! calls an element on.
//!
//! Elements are synchronous (state changes, action signals, signaller callbacks); the actor is
//! async. These two helpers are the only bridge: [`block_on`] runs a future to completion on the
//! calling thread, [`block_on_reply`] waits for an actor's answer with a bound.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::RUNTIME;

/// Runs `future` to completion from synchronous code on any thread: an application thread, a
/// GStreamer streaming thread, or a worker of some tokio runtime (where `block_in_place` lets
/// the runtime move its other tasks away first). The actor runs on [`RUNTIME`], so this never
/// waits for its own thread.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        }
        _ => futures::executor::block_on(future),
    }
}

/// Waits at most `limit` for a reply; `None` when the actor is gone or too slow.
pub fn block_on_reply<T: Send + 'static>(
    answer: oneshot::Receiver<T>,
    limit: Duration,
) -> Option<T> {
    // The timer runs on the plugin's runtime: the calling thread may have none.
    let waiting =
        RUNTIME.spawn(async move { tokio::time::timeout(limit, answer).await.ok()?.ok() });
    block_on(waiting).ok().flatten()
}
