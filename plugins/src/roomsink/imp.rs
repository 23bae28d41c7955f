//! The subclass behind [`super::RoomSink`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::client::{self, RoomClient};
use crate::events::{self, RoomSettings};
use crate::mute::Medium;
use crate::signaller::RoomSignaller;

use super::bitrate;
use super::certificate::{self, DtlsCertificate};
use super::encode;

const DEFAULT_STREAM: &str = "main";
const DEFAULT_MUTE_AUDIO: bool = false;
const DEFAULT_MUTE_VIDEO: bool = false;
/// Explicit codecs: letting webrtcsink discover every available encoder costs ~2.8 s at start
/// and ~300 MB (FIELD-NOTES). VP8 and Opus are what every browser takes.
const DEFAULT_VIDEO_CAPS: &str = "video/x-vp8";
const DEFAULT_AUDIO_CAPS: &str = "audio/x-opus";
const DEFAULT_ENCODE_PER_VIEWER: bool = false;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "roomsink",
        gst::DebugColorFlags::empty(),
        Some("gst-room publisher"),
    )
});

struct Settings {
    room: RoomSettings,
    stream: String,
    video_caps: gst::Caps,
    audio_caps: gst::Caps,
    encode_per_viewer: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            room: RoomSettings::default(),
            stream: DEFAULT_STREAM.into(),
            video_caps: DEFAULT_VIDEO_CAPS.parse().expect("valid caps"),
            audio_caps: DEFAULT_AUDIO_CAPS.parse().expect("valid caps"),
            encode_per_viewer: DEFAULT_ENCODE_PER_VIEWER,
        }
    }
}

/// What exists between NULL→READY and READY→NULL.
#[derive(Default)]
struct State {
    client: Option<Arc<RoomClient>>,
    signaller: Option<RoomSignaller>,
    /// Posts room events on the bus; aborted on READY→NULL.
    events_task: Option<tokio::task::JoinHandle<()>>,
}

pub struct RoomSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Read by the mute probes on the streaming threads.
    mute_audio: Arc<AtomicBool>,
    mute_video: Arc<AtomicBool>,
    /// `video-bitrate`, read by the shared video encoder when it is made.
    video_bitrate: Arc<AtomicU32>,
    /// The DTLS certificate every session presents (made once per element).
    certificate: DtlsCertificate,
    webrtcsink: gst::Element,
}

impl RoomSink {
    fn client(&self) -> Option<Arc<RoomClient>> {
        self.state.lock().unwrap().client.clone()
    }

    fn has_pad(&self, prefix: &str) -> bool {
        self.obj()
            .sink_pads()
            .iter()
            .any(|p| p.name().starts_with(prefix))
    }

    /// Tells the room the current mute state of the stream.
    fn announce_mute(&self) {
        let stream = self.settings.lock().unwrap().stream.clone();
        if let Some(client) = self.client() {
            let _ = client.mute(
                &stream,
                self.mute_audio.load(Ordering::Relaxed),
                self.mute_video.load(Ordering::Relaxed),
            );
        }
    }

    /// NULL→READY: join (or share) the participant and hand webrtcsink its signaller.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let settings = self.settings.lock().unwrap();
        let key = settings.room.key().map_err(|err| {
            gst::element_imp_error!(self, gst::LibraryError::Settings, ("roomsink: {}", err));
            gst::StateChangeError
        })?;
        encode::configure_webrtcsink(
            &self.webrtcsink,
            &settings.video_caps,
            &settings.audio_caps,
            settings.encode_per_viewer,
        );
        self.webrtcsink
            .set_property("stun-server", &settings.room.stun_server);
        let turn = gst::Array::new(settings.room.turn_servers.iter().map(|s| s.to_send_value()));
        self.webrtcsink.set_property("turn-servers", turn);
        let client = client::acquire(key, settings.room.token.clone());
        let stream = settings.stream.clone();
        drop(settings);

        let signaller = RoomSignaller::publisher(
            &client,
            &stream,
            self.has_pad("audio_"),
            self.has_pad("video_"),
        );
        let element = self.obj().downgrade();
        signaller.connect("room-status", false, move |args| {
            let element = element.upgrade()?;
            let status = args[1].get::<String>().unwrap();
            let peer = args[2].get::<Option<String>>().unwrap();
            if status == "publishing" {
                element.imp().announce_mute();
            }
            let stream = element.imp().settings.lock().unwrap().stream.clone();
            events::post(
                element.upcast_ref(),
                events::session_status(&status, Some(&stream), peer.as_deref()),
            );
            None
        });
        self.webrtcsink.set_property("signaller", &signaller);
        let events_task = events::spawn_poster(self.obj().upcast_ref(), &client);
        *self.state.lock().unwrap() = State {
            client: Some(client),
            signaller: Some(signaller),
            events_task: Some(events_task),
        };
        Ok(())
    }

    /// READY→NULL: leave (when no other element of the process shares the participant).
    fn stop(&self) {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        if let Some(task) = state.events_task {
            task.abort();
        }
        if let Some(client) = state.client {
            client::release(client);
        }
    }

    /// Adds the media path of a new input (see [`encode`]) and returns its ghost pad.
    fn link_input(&self, medium: Medium, name: &str) -> Result<gst::GhostPad, glib::BoolError> {
        let template = if medium == Medium::Video {
            "video_%u"
        } else {
            "audio_%u"
        };
        let webrtc_pad = self
            .webrtcsink
            .request_pad_simple(template)
            .ok_or_else(|| glib::bool_error!("webrtcsink refused a {template} pad"))?;
        let settings = self.settings.lock().unwrap();
        let (codecs, muted) = match medium {
            Medium::Video => (&settings.video_caps, &self.mute_video),
            Medium::Audio => (&settings.audio_caps, &self.mute_audio),
        };
        let config = encode::Config {
            medium,
            per_viewer: settings.encode_per_viewer,
            codec: codecs
                .structure(0)
                .ok_or_else(|| glib::bool_error!("empty {template} codec caps"))?
                .to_owned(),
            video_bitrate: self.video_bitrate.clone(),
            muted: muted.clone(),
        };
        drop(settings);
        let obj = self.obj();
        let target = encode::add_input(obj.upcast_ref(), webrtc_pad, config)?;
        let template = obj.pad_template(template).unwrap();
        let ghost = gst::GhostPad::builder_from_template_with_target(&template, &target)?
            .name(name)
            .build();
        Ok(ghost)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RoomSink {
    const NAME: &'static str = "GstRoomSink";
    type Type = super::RoomSink;
    type ParentType = gst::Bin;

    fn new() -> Self {
        let webrtcsink = gst::ElementFactory::make("webrtcsink")
            .name("webrtcsink")
            .build()
            .expect("webrtcsink is registered by plugin_init");
        // No forward error correction: on a LAN, retransmission (NACK/RTX, kept on) repairs
        // the rare loss without FEC's constant extra bitrate, and RED-wrapped packets made
        // webrtcbin expose an extra pad for the same stream on the viewer side.
        webrtcsink.set_property("do-fec", false);
        let certificate = certificate::generate().expect("an ECDSA P-256 key pair");
        certificate::use_for_sessions(&webrtcsink, &certificate);
        RoomSink {
            settings: Default::default(),
            state: Default::default(),
            mute_audio: Arc::new(AtomicBool::new(DEFAULT_MUTE_AUDIO)),
            mute_video: Arc::new(AtomicBool::new(DEFAULT_MUTE_VIDEO)),
            video_bitrate: Arc::new(AtomicU32::new(encode::DEFAULT_VIDEO_BITRATE)),
            certificate,
            webrtcsink,
        }
    }
}

impl ObjectImpl for RoomSink {
    fn constructed(&self) {
        self.parent_constructed();
        self.obj()
            .add(&self.webrtcsink)
            .expect("a fresh bin takes its child");
        bitrate::follow_viewers(
            &self.webrtcsink,
            self.obj().upcast_ref(),
            self.video_bitrate.clone(),
        );
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = RoomSettings::properties();
            props.extend([
                glib::ParamSpecString::builder("stream")
                    .nick("Stream name")
                    .blurb("Name of the published stream, unique per participant (1-64 of A-Z a-z 0-9 _ -)")
                    .default_value(Some(DEFAULT_STREAM))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("mute-audio")
                    .nick("Mute audio")
                    .blurb("Send silence instead of the input; the room sees a MUTED event")
                    .default_value(DEFAULT_MUTE_AUDIO)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("mute-video")
                    .nick("Mute video")
                    .blurb("Send black frames instead of the input; the room sees a MUTED event")
                    .default_value(DEFAULT_MUTE_VIDEO)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Caps>("video-caps")
                    .nick("Video caps")
                    .blurb("Video codecs offered to viewers, in order of preference (e.g. video/x-vp8; video/x-h264)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Caps>("audio-caps")
                    .nick("Audio caps")
                    .blurb("Audio codecs offered to viewers (e.g. audio/x-opus)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("encode-per-viewer")
                    .nick("Encode per viewer")
                    .blurb("Encode raw input once per viewer, each at that viewer's estimated bandwidth, instead of once for all viewers at video-bitrate with the first codec of video-caps/audio-caps")
                    .default_value(DEFAULT_ENCODE_PER_VIEWER)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("video-bitrate")
                    .nick("Video bitrate")
                    .blurb("Highest bitrate of the shared video encoder in bit/s; it follows the weakest viewer's bandwidth estimate down to 300000 (not used with encode-per-viewer or encoded input)")
                    .minimum(50_000)
                    .maximum(50_000_000)
                    .default_value(encode::DEFAULT_VIDEO_BITRATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("dtls-fingerprint")
                    .nick("DTLS fingerprint")
                    .blurb("SHA-256 fingerprint of the ECDSA P-256 DTLS certificate that every session of this element presents (as in SDP a=fingerprint)")
                    .read_only()
                    .build(),
            ]);
            props
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        if settings.room.set(pspec.name(), value) {
            return;
        }
        match pspec.name() {
            "stream" => {
                settings.stream = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or(DEFAULT_STREAM.into())
            }
            "video-caps" => {
                settings.video_caps = value
                    .get::<Option<gst::Caps>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_VIDEO_CAPS.parse().unwrap())
            }
            "audio-caps" => {
                settings.audio_caps = value
                    .get::<Option<gst::Caps>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_AUDIO_CAPS.parse().unwrap())
            }
            "encode-per-viewer" => {
                settings.encode_per_viewer = value.get().expect("type checked upstream")
            }
            "video-bitrate" => {
                drop(settings);
                let bitrate: u32 = value.get().expect("type checked upstream");
                self.video_bitrate.store(bitrate, Ordering::Relaxed);
                encode::set_video_bitrate(self.obj().upcast_ref(), bitrate);
            }
            "mute-audio" | "mute-video" => {
                drop(settings);
                let flag = if pspec.name() == "mute-audio" {
                    &self.mute_audio
                } else {
                    &self.mute_video
                };
                let muted: bool = value.get().expect("type checked upstream");
                if flag.swap(muted, Ordering::Relaxed) != muted {
                    self.announce_mute();
                }
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        let client = self.client();
        if let Some(value) = settings.room.get(pspec.name(), client.as_deref()) {
            return value;
        }
        match pspec.name() {
            "stream" => settings.stream.to_value(),
            "video-caps" => settings.video_caps.to_value(),
            "audio-caps" => settings.audio_caps.to_value(),
            "encode-per-viewer" => settings.encode_per_viewer.to_value(),
            "video-bitrate" => self.video_bitrate.load(Ordering::Relaxed).to_value(),
            "dtls-fingerprint" => self.certificate.fingerprint.to_value(),
            "mute-audio" => self.mute_audio.load(Ordering::Relaxed).to_value(),
            "mute-video" => self.mute_video.load(Ordering::Relaxed).to_value(),
            _ => unimplemented!(),
        }
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            let mut signals = events::event_signals();
            signals.extend(events::chat_signals(|value| {
                value
                    .get::<super::RoomSink>()
                    .ok()
                    .and_then(|sink| sink.imp().client())
            }));
            signals
        });
        SIGNALS.as_ref()
    }
}

impl GstObjectImpl for RoomSink {}

impl ElementImpl for RoomSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Room publisher",
                "Sink/Network/WebRTC",
                "Publishes audio and video into a gst-room video conference room",
                "gst-room developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(encode::pad_templates);
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let medium = if templ.name_template().starts_with("video") {
            Medium::Video
        } else {
            Medium::Audio
        };
        let prefix = if medium == Medium::Video {
            "video_"
        } else {
            "audio_"
        };
        let name = name.map(str::to_owned).unwrap_or_else(|| {
            (0..)
                .map(|i| format!("{prefix}{i}"))
                .find(|n| self.obj().static_pad(n).is_none())
                .unwrap()
        });
        let ghost = match self.link_input(medium, &name) {
            Ok(ghost) => ghost,
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Pad,
                    ["roomsink: cannot add {}: {}", name, err]
                );
                return None;
            }
        };
        ghost.set_active(true).ok()?;
        self.obj().add_pad(&ghost).ok()?;
        if let Some(signaller) = &self.state.lock().unwrap().signaller {
            signaller.set_media(self.has_pad("audio_"), self.has_pad("video_"));
        }
        Some(ghost.upcast())
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            self.start()?;
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull
            || (result.is_err() && transition == gst::StateChange::NullToReady)
        {
            self.stop();
        }
        gst::debug!(CAT, imp = self, "{transition:?}: {result:?}");
        result
    }
}

impl BinImpl for RoomSink {}
