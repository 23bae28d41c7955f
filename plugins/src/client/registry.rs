//! The process-wide registry: one actor per [`Key`], shared by every element of the process that
//! joins the same room as the same participant, with a count of its users.
//!
//! [`acquire`] at an element's start, [`release`] at its stop: the last user's release makes
//! the participant leave the room. An actor that failed for good (refused join, unreachable
//! server) is replaced by the next `acquire`, so that setting the element to PLAYING again
//! tries again.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use super::{Key, RoomClient, Status, actor};

/// One registry entry: the actor's handle and how many elements use it.
struct Entry {
    client: RoomClient,
    users: usize,
}

/// A std `Mutex`: nothing awaits while holding it, and the actor is spawned, not run, under it.
static REGISTRY: LazyLock<Mutex<HashMap<Key, Entry>>> = LazyLock::new(Default::default);

/// The participant for `key`: the running one if an element of this process already uses it,
/// else a new actor that starts connecting at once. Pair every call with [`release`].
pub fn acquire(key: Key, token: Option<String>) -> RoomClient {
    let mut registry = REGISTRY.lock().unwrap();
    if let Some(entry) = registry.get_mut(&key)
        && entry.client.status() != Status::Failed
    {
        entry.users += 1;
        return entry.client.clone();
    }
    let client = actor::spawn(key.clone(), token);
    registry.insert(
        key,
        Entry {
            client: client.clone(),
            users: 1,
        },
    );
    client
}

/// An element is done with its participant. The last user's call sends `leave` and returns once
/// the server has closed the connection (so the room has been told LEFT), or after
/// [`super::LEAVE_TIMEOUT`] when the server does not answer.
pub fn release(client: &RoomClient) {
    let last = {
        let mut registry = REGISTRY.lock().unwrap();
        match registry.get_mut(client.key()) {
            Some(entry) if entry.client.actor() == client.actor() => {
                entry.users -= 1;
                if entry.users == 0 {
                    registry.remove(client.key());
                    true
                } else {
                    false
                }
            }
            // Replaced after it failed: nobody else can use this actor any more.
            _ => true,
        }
    };
    // Outside the registry's lock: leaving waits for the server, and other elements may
    // acquire meanwhile.
    if last {
        client.leave();
    }
}
