//! The part of roomsink and roomsrc that is the same in both: being a user of the process's
//! participant while the element runs, and the `room-*` and chat signals.
//!
//! An element calls [`Membership::start`] at its start transition (room settings validated,
//! participant acquired or shared, its room events posted on the element's bus) and
//! [`Membership::stop`] at its stop transition (posting stopped and awaited, participant
//! released — its last user leaves the room before `stop` returns). Everything else an element
//! does with the room goes through [`Membership::client`].

use gst::glib;

use crate::client::{self, RoomClient};
use crate::events::{self, ClientOf, RoomSettings};
use crate::subscription::Subscription;

/// One element's use of its participant, from start to stop.
pub struct Membership {
    client: RoomClient,
    /// Posts the participant's room events on the element's bus.
    events: Subscription,
}

impl Membership {
    /// Validates `room` and `extra` (the element's own names, say its stream), then acquires
    /// the participant and posts its events on `element`. An invalid setting is an element
    /// error (`what` names the element in it) and joins nothing.
    pub fn start(
        element: &gst::Element,
        what: &str,
        room: &RoomSettings,
        extra: impl FnOnce() -> Result<(), String>,
    ) -> Result<Membership, gst::StateChangeError> {
        let key = room
            .key()
            .and_then(|key| extra().map(|()| key))
            .map_err(|err| {
                gst::element_error!(element, gst::LibraryError::Settings, ("{}: {}", what, err));
                gst::StateChangeError
            })?;
        let client = client::acquire(key, room.token.clone());
        let events = events::spawn_poster(element, &client);
        Ok(Membership { client, events })
    }

    /// The participant.
    pub fn client(&self) -> &RoomClient {
        &self.client
    }

    /// Stops posting (the task is awaited), then releases the participant: when no other
    /// element of the process shares it, it leaves the room before this returns.
    pub fn stop(self) {
        self.events.stop();
        client::release(&self.client);
    }
}

/// The signals of a room element: one per room event, and the chat action signals, which find
/// the participant with `client_of`.
pub fn signals(client_of: ClientOf) -> Vec<glib::subclass::Signal> {
    let mut signals = events::event_signals();
    signals.extend(events::chat_signals(client_of));
    signals
}
