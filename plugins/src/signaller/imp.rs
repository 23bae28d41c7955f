//! The subclass behind [`super::RoomSignaller`].

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gstrswebrtc::signaller::{Signallable, SignallableImpl};
use room_protocol::{ClientMessage, SdpType, ServerMessage, SessionDescription};
use tokio::sync::broadcast::error::RecvError;

use crate::RUNTIME;
use crate::client::{RoomClient, RoomEvent, Status};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "roomsignaller",
        gst::DebugColorFlags::empty(),
        Some("gst-room signaller"),
    )
});

/// Which end of sessions this signaller is.
#[derive(Debug, Clone)]
pub enum Role {
    Publisher {
        stream: String,
        audio: bool,
        video: bool,
    },
    Viewer {
        participant: String,
        stream: String,
    },
}

#[derive(Default)]
pub struct RoomSignaller {
    /// Set once by `configure`, right after construction. The client is weak: the element owns
    /// the participant, and webrtcsink/webrtcsrc keeping their signaller alive after NULL must
    /// not keep the participant in the room.
    config: Mutex<Option<(Role, Weak<RoomClient>)>>,
    state: Mutex<State>,
}

/// What exists between start and stop.
#[derive(Default)]
struct State {
    /// The event task; aborted by stop.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Sessions this signaller is an end of.
    sessions: BTreeSet<String>,
}

impl RoomSignaller {
    pub fn configure(&self, role: Role, client: &Arc<RoomClient>) {
        *self.config.lock().unwrap() = Some((role, Arc::downgrade(client)));
    }

    pub fn set_media(&self, audio: bool, video: bool) {
        if let Some((
            Role::Publisher {
                audio: a, video: v, ..
            },
            _,
        )) = self.config.lock().unwrap().as_mut()
        {
            (*a, *v) = (audio, video);
        }
    }

    pub fn sessions(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .sessions
            .iter()
            .cloned()
            .collect()
    }

    fn role(&self) -> Role {
        self.config
            .lock()
            .unwrap()
            .as_ref()
            .expect("RoomSignaller is built by publisher() or viewer()")
            .0
            .clone()
    }

    /// The participant, while its element runs.
    fn client(&self) -> Option<Arc<RoomClient>> {
        self.config
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|(_, client)| client.upgrade())
    }

    fn send(&self, msg: ClientMessage) {
        let Some(client) = self.client() else {
            return gst::debug!(CAT, imp = self, "participant gone, not sending {msg:?}");
        };
        if let Err(err) = client.send(msg) {
            self.obj().emit_by_name::<()>("error", &[&err]);
        }
    }

    fn emit_status(&self, status: &str, peer: Option<&str>) {
        self.obj()
            .emit_by_name::<()>("room-status", &[&status, &peer]);
    }

    /// Handles one room event; runs on the event task.
    fn on_event(&self, role: &Role, event: RoomEvent) {
        match event {
            RoomEvent::Server(msg) => match role {
                Role::Publisher { stream, .. } => self.on_publisher_message(stream, &msg),
                Role::Viewer {
                    participant,
                    stream,
                } => self.on_viewer_message(participant, stream, &msg),
            },
            RoomEvent::Status(Status::Reconnecting) if matches!(role, Role::Publisher { .. }) => {
                // Sessions do not survive the connection: end them on our side too.
                for session in std::mem::take(&mut self.state.lock().unwrap().sessions) {
                    self.obj()
                        .emit_by_name::<bool>("session-ended", &[&session]);
                }
            }
            RoomEvent::Status(Status::Joined) => {
                // The client re-announces published streams itself; a viewer asks again.
                if let Role::Viewer {
                    participant,
                    stream,
                } = role
                {
                    self.send(ClientMessage::Play {
                        participant: participant.clone(),
                        stream: stream.clone(),
                    });
                }
            }
            _ => {}
        }
    }

    fn on_publisher_message(&self, own_stream: &str, msg: &ServerMessage) {
        match msg {
            ServerMessage::SessionRequest {
                session,
                stream,
                viewer,
            } if stream == own_stream => {
                self.state.lock().unwrap().sessions.insert(session.clone());
                gst::info!(
                    CAT,
                    imp = self,
                    "{viewer} requests {stream}: session {session}"
                );
                self.emit_status("session-requested", Some(viewer));
                self.obj().emit_by_name::<()>(
                    "session-requested",
                    &[
                        session,
                        viewer,
                        &None::<gst_webrtc::WebRTCSessionDescription>,
                    ],
                );
            }
            ServerMessage::SessionEnded { session, reason }
                if self.state.lock().unwrap().sessions.remove(session) =>
            {
                gst::info!(CAT, imp = self, "session {session} ended: {reason}");
                self.obj().emit_by_name::<bool>("session-ended", &[session]);
            }
            _ => self.on_session_message(msg),
        }
    }

    fn on_viewer_message(&self, own_participant: &str, own_stream: &str, msg: &ServerMessage) {
        match msg {
            ServerMessage::SessionStarted {
                session,
                participant,
                stream,
            } if participant == own_participant && stream == own_stream => {
                let mut state = self.state.lock().unwrap();
                if !state.sessions.is_empty() {
                    return; // webrtcsrc holds one session; another play of ours got this one.
                }
                state.sessions.insert(session.clone());
                drop(state);
                gst::info!(
                    CAT,
                    imp = self,
                    "playing {participant}/{stream}: session {session}"
                );
                self.obj()
                    .emit_by_name::<()>("session-started", &[session, participant]);
            }
            _ => self.on_session_message(msg),
        }
    }

    /// SDP and ICE, for either role. (A viewer's session end is roomsrc's to handle: it removes
    /// the whole webrtcsrc and ends its pads with EOS.)
    fn on_session_message(&self, msg: &ServerMessage) {
        let ours = |session: &str| self.state.lock().unwrap().sessions.contains(session);
        match msg {
            ServerMessage::Sdp {
                session,
                description,
            } if ours(session) => match to_webrtc(description) {
                Ok(desc) => self
                    .obj()
                    .emit_by_name::<()>("session-description", &[session, &desc]),
                Err(err) => {
                    gst::warning!(CAT, imp = self, "session {session}: {err}");
                    self.send(ClientMessage::Stop {
                        session: session.clone(),
                    });
                }
            },
            ServerMessage::Ice {
                session,
                candidate,
                sdp_m_line_index,
                sdp_mid,
            } if ours(session) => {
                self.obj().emit_by_name::<()>(
                    "handle-ice",
                    &[session, sdp_m_line_index, sdp_mid, candidate],
                );
            }
            _ => {}
        }
    }
}

/// Parses SDP text into what webrtcbin takes. Going through text is also what avoids the
/// GStreamer 1.22.0 crash with descriptions passed between elements (see FIELD-NOTES).
fn to_webrtc(desc: &SessionDescription) -> Result<gst_webrtc::WebRTCSessionDescription, String> {
    let sdp = gst_sdp::SDPMessage::parse_buffer(desc.sdp.as_bytes())
        .map_err(|_| "unparsable SDP".to_owned())?;
    let kind = match desc.kind {
        SdpType::Offer => gst_webrtc::WebRTCSDPType::Offer,
        SdpType::Answer => gst_webrtc::WebRTCSDPType::Answer,
    };
    Ok(gst_webrtc::WebRTCSessionDescription::new(kind, sdp))
}

impl SignallableImpl for RoomSignaller {
    fn start(&self) {
        let role = self.role();
        let Some(client) = self.client() else {
            return self
                .obj()
                .emit_by_name::<()>("error", &[&"started after its element left the room"]);
        };
        let (mut events, snapshot) = client.subscribe();
        let this = self.obj().downgrade();
        let task_role = role.clone();
        // Subscribed before asking, so the answer cannot be missed.
        let task = RUNTIME.spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(n)) => {
                        gst::warning!(CAT, "signaller missed {n} room events");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                // The signaller owns this task; stop aborts it before the object goes away.
                let Some(this) = this.upgrade() else { return };
                this.imp().on_event(&task_role, event);
            }
        });
        self.state.lock().unwrap().task = Some(task);
        match role {
            Role::Publisher {
                stream,
                audio,
                video,
            } => {
                if let Err(err) = client.publish(&stream, audio, video) {
                    self.obj().emit_by_name::<()>("error", &[&err]);
                }
                self.emit_status("publishing", None);
            }
            Role::Viewer {
                participant,
                stream,
            } => {
                // When not joined yet, the Joined status event sends the play.
                if snapshot.status == Status::Joined {
                    self.send(ClientMessage::Play {
                        participant,
                        stream,
                    });
                }
            }
        }
    }

    fn stop(&self) {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        if let Some(task) = state.task {
            task.abort();
        }
        let Some(client) = self.client() else { return };
        match self.role() {
            Role::Publisher { stream, .. } => {
                let _ = client.unpublish(&stream);
                self.emit_status("unpublished", None);
            }
            Role::Viewer { .. } => {
                for session in state.sessions {
                    let _ = client.send(ClientMessage::Stop { session });
                }
            }
        }
    }

    fn send_sdp(&self, session_id: &str, sdp: &gst_webrtc::WebRTCSessionDescription) {
        let kind = match sdp.type_() {
            gst_webrtc::WebRTCSDPType::Offer => SdpType::Offer,
            gst_webrtc::WebRTCSDPType::Answer => SdpType::Answer,
            other => {
                gst::warning!(CAT, imp = self, "not sending a {other:?} description");
                return;
            }
        };
        let text = match sdp.sdp().as_text() {
            Ok(text) => text,
            Err(err) => {
                return self
                    .obj()
                    .emit_by_name::<()>("error", &[&format!("cannot write SDP: {err}")]);
            }
        };
        let description = SessionDescription { kind, sdp: text };
        self.send(ClientMessage::Sdp {
            session: session_id.into(),
            description,
        });
    }

    fn add_ice(
        &self,
        session_id: &str,
        candidate: &str,
        sdp_m_line_index: u32,
        sdp_mid: Option<String>,
    ) {
        self.send(ClientMessage::Ice {
            session: session_id.into(),
            candidate: candidate.into(),
            sdp_m_line_index,
            sdp_mid,
        });
    }

    fn end_session(&self, session_id: &str) {
        if self.state.lock().unwrap().sessions.remove(session_id) {
            self.send(ClientMessage::Stop {
                session: session_id.into(),
            });
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RoomSignaller {
    const NAME: &'static str = "GstRoomSignaller";
    type Type = super::RoomSignaller;
    type ParentType = glib::Object;
    type Interfaces = (Signallable,);
}

impl ObjectImpl for RoomSignaller {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("manual-sdp-munging")
                    .nick("Manual SDP munging")
                    .blurb("Whether the signaller manages SDP munging itself (it does not)")
                    .default_value(false)
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "manual-sdp-munging" => false.to_value(),
            _ => unimplemented!(),
        }
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            /**
             * GstRoomSignaller::room-status:
             * @status: "publishing", "unpublished" or "session-requested"
             * @peer: the viewer, for "session-requested"
             *
             * Progress of the publication, for the owning element to report on the bus.
             */
            vec![
                glib::subclass::Signal::builder("room-status")
                    .param_types([String::static_type(), Option::<String>::static_type()])
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }
}
