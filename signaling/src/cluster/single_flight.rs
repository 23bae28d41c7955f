//! One task per key at a time, its result shared: the owner lookups of the cluster.
//!
//! Finding a room's owner can take seconds (a dead owner's lease must expire) and may rebuild
//! the room here (a takeover), which must happen once. Concurrent callers for the same key wait
//! for the one task in flight and all get its result; callers for other keys start their own
//! and never wait on it. The task runs on the server's [`TaskTracker`], not in its callers: a
//! takeover half done because the connection that asked went away would leave the room
//! half-built, and shutdown waits for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio_util::task::TaskTracker;

/// A task in flight, as its callers await it: `None` if it panicked.
type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;

/// The tasks in flight, one per key (see the module doc).
pub struct SingleFlight<V: Clone> {
    /// Inserted by the caller that starts a task, removed by the task as it ends. The lock is
    /// a std `Mutex`, held for a map operation and never across an await.
    flights: Arc<Mutex<HashMap<String, Flight<V>>>>,
}

impl<V: Clone> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight {
            flights: Arc::default(),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    /// The result of the task in flight for `key`, or of a new one, `start()`, spawned on
    /// `tasks`. `None` if the task panicked.
    pub async fn run<F>(
        &self,
        key: &str,
        tasks: &TaskTracker,
        start: impl FnOnce() -> F,
    ) -> Option<V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap();
            match flights.get(key) {
                Some(flight) => flight.clone(),
                None => {
                    let work = start();
                    let all = self.flights.clone();
                    let done = key.to_owned();
                    // Spawned while the map is locked: the task's removal of its entry waits
                    // until the entry is in, so a finished task never stays in the map.
                    let task = tasks.spawn(async move {
                        let value = work.await;
                        all.lock().unwrap().remove(&done);
                        value
                    });
                    let flight = task.map(Result::ok).boxed().shared();
                    flights.insert(key.to_owned(), flight.clone());
                    flight
                }
            }
        };
        flight.await
    }

    /// How many tasks are in flight.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_for_one_key_share_one_task_and_its_result() {
        let flights = SingleFlight::<String>::default();
        let tasks = TaskTracker::new();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, released) = oneshot::channel::<()>();
        let mut released = Some(released);
        let callers = (0..5).map(|_| {
            let started = started.clone();
            let released = released.take();
            flights.run("room", &tasks, move || async move {
                started.fetch_add(1, Ordering::SeqCst);
                if let Some(released) = released {
                    released.await.unwrap();
                }
                "node-a".to_owned()
            })
        });
        let all = futures::future::join_all(callers);
        tokio::pin!(all);
        // Every caller is waiting on the one task, which waits for `release`.
        assert!(futures::poll!(all.as_mut()).is_pending());
        assert_eq!(flights.in_flight(), 1);
        release.send(()).unwrap();
        let results = all.await;
        assert_eq!(results, vec![Some("node-a".to_owned()); 5]);
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "one task for five callers"
        );
        assert_eq!(flights.in_flight(), 0, "the finished task left the map");
    }

    #[tokio::test]
    async fn a_stalled_key_does_not_hold_up_another() {
        let flights = SingleFlight::<u32>::default();
        let tasks = TaskTracker::new();
        let (_never, stalled) = oneshot::channel::<()>();
        let slow = flights.run("dead-owner", &tasks, || async move {
            let _ = stalled.await;
            1
        });
        tokio::pin!(slow);
        assert!(futures::poll!(slow.as_mut()).is_pending());
        let fast = flights.run("other-room", &tasks, || async { 2 }).await;
        assert_eq!(fast, Some(2));
        assert!(
            futures::poll!(slow.as_mut()).is_pending(),
            "still in flight"
        );
    }

    #[tokio::test]
    async fn a_key_runs_again_once_its_task_has_ended() {
        let flights = SingleFlight::<u32>::default();
        let tasks = TaskTracker::new();
        assert_eq!(flights.run("room", &tasks, || async { 1 }).await, Some(1));
        assert_eq!(flights.run("room", &tasks, || async { 2 }).await, Some(2));
    }

    #[tokio::test]
    async fn a_task_outlives_callers_that_went_away_and_the_tracker_waits_for_it() {
        let flights = SingleFlight::<u32>::default();
        let tasks = TaskTracker::new();
        let (release, released) = oneshot::channel::<()>();
        let (finished, done) = oneshot::channel::<()>();
        let mut caller = Box::pin(flights.run("room", &tasks, || async move {
            released.await.unwrap();
            finished.send(()).unwrap();
            7
        }));
        assert!(futures::poll!(caller.as_mut()).is_pending());
        drop(caller);
        tasks.close();
        release.send(()).unwrap();
        tasks.wait().await;
        done.await.expect("the task ran to its end");
    }
}
