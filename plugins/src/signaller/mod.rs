//! The room `Signallable`: connects webrtcsink (as a stream's publisher) or one webrtcsrc (as a
//! viewer of one remote stream) to the room client.
//!
//! Publisher (`RoomSignaller::publisher`, used by roomsink): `start` announces the stream;
//! every `session-request` for it becomes `session-requested` (webrtcsink then offers), answers
//! and ICE from the viewer are handed over, `session-ended` and a lost connection end sessions.
//!
//! Viewer (`RoomSignaller::viewer`, used by roomsrc): `start` asks to play the stream; the
//! server's `session-started` becomes `session-started` (webrtcsrc makes its webrtcbin), the
//! publisher's offer and ICE are handed over, and webrtcsrc's answer goes back.
//!
//! Both report their progress with the `room-status` signal (status, peer).

use gst::glib;
use gst::subclass::prelude::*;
use gstrswebrtc::signaller::Signallable;

use crate::client::RoomClient;

mod imp;

glib::wrapper! {
    /// See the module documentation.
    pub struct RoomSignaller(ObjectSubclass<imp::RoomSignaller>) @implements Signallable;
}

impl RoomSignaller {
    /// A signaller that publishes `stream` of the client's participant.
    pub fn publisher(client: &RoomClient, stream: &str, audio: bool, video: bool) -> Self {
        let obj: Self = glib::Object::new();
        obj.imp().configure(
            imp::Role::Publisher {
                stream: stream.into(),
                audio,
                video,
            },
            client,
        );
        obj
    }

    /// A signaller that plays `participant`'s `stream`.
    pub fn viewer(client: &RoomClient, participant: &str, stream: &str) -> Self {
        let obj: Self = glib::Object::new();
        obj.imp().configure(
            imp::Role::Viewer {
                participant: participant.into(),
                stream: stream.into(),
            },
            client,
        );
        obj
    }

    /// Changes what a publisher announces (set before start).
    pub fn set_media(&self, audio: bool, video: bool) {
        self.imp().set_media(audio, video);
    }

    /// The SHA-256 fingerprint of the DTLS certificate this end's webrtcbin presents: its
    /// descriptions carry it (GStreamer 1.22 writes a wrong one, see `crate::certificate`).
    pub fn present_fingerprint(&self, fingerprint: &str) {
        self.imp().present_fingerprint(fingerprint);
    }

    /// Ids of the sessions this signaller is an end of.
    pub fn sessions(&self) -> Vec<String> {
        self.imp().sessions()
    }
}
