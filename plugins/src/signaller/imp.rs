//! The subclass behind [`super::RoomSignaller`].

use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gstrswebrtc::signaller::{Signallable, SignallableImpl};
use room_protocol::{ClientMessage, SdpType, ServerMessage, SessionDescription};

use crate::client::{Event, RoomClient};
use crate::subscription::Subscription;

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
    /// Set once by `configure`, right after construction. The handle does not keep the
    /// participant in the room: the element's release does the leaving.
    config: Mutex<Option<(Role, RoomClient)>>,
    state: Mutex<State>,
    /// The fingerprint the descriptions sent must carry, when the element set one.
    fingerprint: Mutex<Option<String>>,
}

/// What exists between start and stop.
#[derive(Default)]
struct State {
    /// The subscription to the participant's events; stopped (and awaited) by stop.
    subscription: Option<Subscription>,
    /// Sessions this signaller is an end of.
    sessions: BTreeSet<String>,
}

impl RoomSignaller {
    pub fn configure(&self, role: Role, client: &RoomClient) {
        *self.config.lock().unwrap() = Some((role, client.clone()));
    }

    pub fn present_fingerprint(&self, fingerprint: &str) {
        *self.fingerprint.lock().unwrap() = Some(fingerprint.to_owned());
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

    fn config(&self) -> (Role, RoomClient) {
        self.config
            .lock()
            .unwrap()
            .clone()
            .expect("RoomSignaller is built by publisher() or viewer()")
    }

    fn send(&self, msg: ClientMessage) {
        let (_, client) = self.config();
        if let Err(err) = client.session(msg) {
            self.obj().emit_by_name::<()>("error", &[&err]);
        }
    }

    fn emit_status(&self, status: &str, peer: Option<&str>, reason: Option<&str>) {
        self.obj()
            .emit_by_name::<()>("room-status", &[&status, &peer, &reason]);
    }

    /// Handles one event of this signaller's subscription; runs on its task. No lock is held
    /// while emitting.
    fn on_event(&self, event: Event) {
        match event {
            Event::Session(ServerMessage::SessionRequest {
                session, viewer, ..
            }) => {
                self.state.lock().unwrap().sessions.insert(session.clone());
                gst::info!(CAT, imp = self, "{viewer} requests a session: {session}");
                self.emit_status("session-requested", Some(&viewer), None);
                self.obj().emit_by_name::<()>(
                    "session-requested",
                    &[
                        &session,
                        &viewer,
                        &None::<gst_webrtc::WebRTCSessionDescription>,
                    ],
                );
            }
            Event::Session(ServerMessage::SessionStarted {
                session,
                participant,
                stream,
            }) => {
                self.state.lock().unwrap().sessions.insert(session.clone());
                gst::info!(
                    CAT,
                    imp = self,
                    "playing {participant}/{stream}: session {session}"
                );
                self.obj()
                    .emit_by_name::<()>("session-started", &[&session, &participant]);
            }
            Event::Session(ServerMessage::Sdp {
                session,
                description,
            }) => match to_webrtc(&description) {
                Ok(desc) => self
                    .obj()
                    .emit_by_name::<()>("session-description", &[&session, &desc]),
                Err(err) => {
                    gst::warning!(CAT, imp = self, "session {session}: {err}");
                    self.send(ClientMessage::Stop { session });
                }
            },
            Event::Session(ServerMessage::Ice {
                session,
                candidate,
                sdp_m_line_index,
                sdp_mid,
            }) => {
                self.obj().emit_by_name::<()>(
                    "handle-ice",
                    &[&session, &sdp_m_line_index, &sdp_mid, &candidate],
                );
            }
            Event::Session(ServerMessage::SessionEnded { session, reason }) => {
                self.state.lock().unwrap().sessions.remove(&session);
                gst::info!(CAT, imp = self, "session {session} ended: {reason}");
                match self.config().0 {
                    Role::Publisher { .. } => {
                        self.obj()
                            .emit_by_name::<bool>("session-ended", &[&session]);
                    }
                    // A viewer's session end is roomsrc's to handle: it removes the whole
                    // webrtcsrc, ends its pads with EOS, and plays again if still published.
                    Role::Viewer { .. } => self.emit_status("session-ended", None, Some(&reason)),
                }
            }
            _ => {}
        }
    }
}

/// Parses SDP text into what webrtcbin takes; an offer (only a viewer gets one) loses its FEC
/// first ([`remove_fec`]). Going through text is also what avoids the GStreamer 1.22.0 crash
/// with descriptions passed between elements (UPSTREAM.md: "GStreamer 1.22.0 crash with
/// session descriptions passed between elements").
fn to_webrtc(desc: &SessionDescription) -> Result<gst_webrtc::WebRTCSessionDescription, String> {
    let mut sdp = gst_sdp::SDPMessage::parse_buffer(desc.sdp.as_bytes())
        .map_err(|_| "unparsable SDP".to_owned())?;
    let kind = match desc.kind {
        SdpType::Offer => {
            remove_fec(&mut sdp);
            gst_webrtc::WebRTCSDPType::Offer
        }
        SdpType::Answer => gst_webrtc::WebRTCSDPType::Answer,
    };
    Ok(gst_webrtc::WebRTCSessionDescription::new(kind, sdp))
}

/// Encodings that wrap or protect another payload instead of carrying media of their own.
const FEC_ENCODINGS: [&str; 3] = ["red", "ulpfec", "flexfec-03"];

/// Takes RED, ULPFEC and FlexFEC (and the RTX of those) out of a publisher's offer, so that
/// webrtcsrc's answer does not accept them and the publisher sends plain media (NACK/RTX
/// remain). webrtcsrc 0.15.4 asks for RED/ULPFEC on every transceiver, and GStreamer 1.22's
/// webrtcbin can put a browser's first RED-wrapped packets on a pad of their own
/// (`encoding-name=RED`), which webrtcsrc takes as the stream: decodebin3 cannot decode it
/// and its unlinked output fails the whole pipeline with not-linked, or the video never
/// decodes (UPSTREAM.md: "webrtcsrc negotiates RED/ULPFEC that webrtcbin 1.22 cannot unwrap in
/// time").
pub(crate) fn remove_fec(sdp: &mut gst_sdp::SDPMessageRef) {
    for media in sdp.medias_mut() {
        let dropped = fec_payload_types(media);
        if dropped.is_empty() {
            continue;
        }
        for idx in (0..media.formats_len()).rev() {
            if media.format(idx).is_some_and(|pt| dropped.contains(pt)) {
                let _ = media.remove_format(idx);
            }
        }
        for idx in (0..media.attributes_len()).rev() {
            let about_dropped = media.attribute(idx).is_some_and(|a| {
                matches!(a.key(), "rtpmap" | "fmtp" | "rtcp-fb")
                    && a.value()
                        .and_then(|v| v.split_whitespace().next())
                        .is_some_and(|pt| dropped.contains(pt))
            });
            if about_dropped {
                let _ = media.remove_attribute(idx);
            }
        }
    }
}

/// The payload types of `media` with an encoding of [`FEC_ENCODINGS`], and the RTX payload
/// types that retransmit them (`a=fmtp:<rtx> apt=<fec>`).
fn fec_payload_types(media: &gst_sdp::SDPMediaRef) -> BTreeSet<String> {
    let mut fec: BTreeSet<String> = media
        .attributes()
        .filter(|a| a.key() == "rtpmap")
        .filter_map(|a| {
            let (pt, encoding) = a.value()?.split_once(' ')?;
            let name = encoding.split('/').next()?;
            FEC_ENCODINGS
                .contains(&name.to_ascii_lowercase().as_str())
                .then(|| pt.to_owned())
        })
        .collect();
    let rtx_of_fec: Vec<String> = media
        .attributes()
        .filter(|a| a.key() == "fmtp")
        .filter_map(|a| {
            let (pt, params) = a.value()?.split_once(' ')?;
            let apt = params
                .split(';')
                .find_map(|p| p.trim().strip_prefix("apt="))?;
            fec.contains(apt).then(|| pt.to_owned())
        })
        .collect();
    fec.extend(rtx_of_fec);
    fec
}

impl SignallableImpl for RoomSignaller {
    fn start(&self) {
        let (role, client) = self.config();
        let this = self.obj().downgrade();
        // Subscribed before asking, so the answer cannot be missed.
        let subscription = Subscription::spawn(&client, move |event| {
            // The signaller's stop ends this task before the object can go away.
            let alive = this.upgrade().map(|this| this.imp().on_event(event));
            async move { alive.is_some() }
        });
        let owner = subscription.id();
        self.state.lock().unwrap().subscription = Some(subscription);
        match role {
            Role::Publisher {
                stream,
                audio,
                video,
            } => match client.publish(owner, &stream, audio, video) {
                Ok(()) => self.emit_status("publishing", None, None),
                Err(err) => {
                    gst::warning!(CAT, imp = self, "publish refused: {err}");
                    self.emit_status("failed", None, Some(err.reason()));
                }
            },
            Role::Viewer {
                participant,
                stream,
            } => client.play(owner, &participant, &stream),
        }
    }

    fn stop(&self) {
        // Copy out and release the lock: the subscription's task may be emitting and take it.
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        // The actor stops the subscriber's sessions and unpublishes its stream.
        if let Some(subscription) = state.subscription {
            subscription.stop();
        }
        if let Role::Publisher { .. } = self.config().0 {
            self.emit_status("unpublished", None, None);
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
        let fingerprint = self.fingerprint.lock().unwrap().clone();
        let text = match fingerprint {
            Some(fingerprint) => crate::certificate::with_fingerprint_text(&text, &fingerprint),
            None => text.to_string(),
        };
        let text = crate::audio_level::without_default_vad(&text);
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
             * @status: "publishing", "failed", "unpublished", "session-requested" (publisher) or
             *   "session-ended" (viewer)
             * @peer: the viewer, for "session-requested"
             * @reason: why, for "failed" and "session-ended"
             *
             * Progress of the publication or play, for the owning element to report on the bus.
             * Emitted on the thread that called start (publishing, failed), stop (unpublished),
             * or the plugin runtime's threads (the others).
             */
            vec![
                glib::subclass::Signal::builder("room-status")
                    .param_types([
                        String::static_type(),
                        Option::<String>::static_type(),
                        Option::<String>::static_type(),
                    ])
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::remove_fec;

    /// The parts of a Chromium 156 offer that matter here (its m-lines' payload types and their
    /// attributes in its order).
    const CHROMIUM_OFFER: &str = "v=0\r\n\
        o=- 1 2 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=mid:0\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=rtcp-fb:111 transport-cc\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:63 red/48000/2\r\n\
        a=fmtp:63 111/111\r\n\
        a=rtpmap:9 G722/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:13 CN/8000\r\n\
        a=rtpmap:110 telephone-event/48000\r\n\
        a=rtpmap:126 telephone-event/8000\r\n\
        a=ssrc:1 cname:x\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 118 119 120\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=mid:1\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack\r\n\
        a=rtcp-fb:96 nack pli\r\n\
        a=rtpmap:97 rtx/90000\r\n\
        a=fmtp:97 apt=96\r\n\
        a=rtpmap:98 VP9/90000\r\n\
        a=fmtp:98 profile-id=0\r\n\
        a=rtpmap:99 rtx/90000\r\n\
        a=fmtp:99 apt=98\r\n\
        a=rtpmap:118 red/90000\r\n\
        a=rtpmap:119 rtx/90000\r\n\
        a=fmtp:119 apt=118\r\n\
        a=rtpmap:120 ulpfec/90000\r\n\
        a=ssrc-group:FID 2 3\r\n\
        a=ssrc:2 cname:x\r\n\
        a=ssrc:3 cname:x\r\n";

    fn media_lines(sdp: &gst_sdp::SDPMessage, idx: u32) -> (Vec<String>, Vec<String>) {
        let media = sdp.media(idx).unwrap();
        let formats = media.formats().map(str::to_owned).collect();
        let attributes = media
            .attributes()
            .map(|a| format!("{}:{}", a.key(), a.value().unwrap_or_default()))
            .collect();
        (formats, attributes)
    }

    #[test]
    fn an_offer_loses_red_ulpfec_and_their_rtx_and_keeps_everything_else() {
        gst::init().unwrap();
        let mut sdp = gst_sdp::SDPMessage::parse_buffer(CHROMIUM_OFFER.as_bytes()).unwrap();
        remove_fec(&mut sdp);

        let (formats, attributes) = media_lines(&sdp, 0);
        assert_eq!(formats, ["111", "9", "0", "8", "13", "110", "126"]);
        assert!(
            !attributes.iter().any(|a| a.contains(":63 ")),
            "{attributes:?}"
        );
        assert!(attributes.contains(&"fmtp:111 minptime=10;useinbandfec=1".to_owned()));
        assert!(attributes.contains(&"rtcp-fb:111 transport-cc".to_owned()));

        let (formats, attributes) = media_lines(&sdp, 1);
        assert_eq!(formats, ["96", "97", "98", "99"]);
        for pt in ["118", "119", "120"] {
            assert!(
                !attributes.iter().any(|a| a.contains(&format!(":{pt} "))),
                "{pt} left in {attributes:?}"
            );
        }
        for kept in [
            "rtpmap:96 VP8/90000",
            "rtcp-fb:96 nack pli",
            "fmtp:97 apt=96",
            "fmtp:99 apt=98",
            "ssrc-group:FID 2 3",
            "mid:1",
        ] {
            assert!(
                attributes.contains(&kept.to_owned()),
                "{kept} lost: {attributes:?}"
            );
        }
    }

    #[test]
    fn an_offer_without_fec_is_unchanged() {
        gst::init().unwrap();
        let plain = CHROMIUM_OFFER
            .replace(" 63 9", " 9")
            .replace(" 118 119 120", "")
            .lines()
            .filter(|l| {
                !l.contains(":63 ")
                    && !l.contains(":118 ")
                    && !l.contains(":119 ")
                    && !l.contains(":120 ")
            })
            .map(|l| format!("{l}\r\n"))
            .collect::<String>();
        let before = gst_sdp::SDPMessage::parse_buffer(plain.as_bytes()).unwrap();
        let mut after = before.clone();
        remove_fec(&mut after);
        assert_eq!(after.as_text().unwrap(), before.as_text().unwrap());
    }
}
