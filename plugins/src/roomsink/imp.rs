//! The subclass behind [`super::RoomSink`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::client::RoomClient;
use crate::events::{self, RoomSettings};
use crate::membership::{self, Membership};
use crate::mute::Medium;
use crate::signaller::RoomSignaller;

use super::bitrate;
use super::demand;
use super::encode;
use crate::certificate::{self, DtlsCertificate};

const DEFAULT_STREAM: &str = "main";
const DEFAULT_MUTE_AUDIO: bool = false;
const DEFAULT_MUTE_VIDEO: bool = false;
/// Explicit codecs: letting webrtcsink discover every available encoder costs ~2.8 s at start
/// and ~300 MB (UPSTREAM.md: "Slow codec discovery in webrtcsink"). VP8 and Opus are what
/// every browser takes.
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
    /// The participant and the posting of its events; stopped (and, for the participant's
    /// last user, left) on READY→NULL.
    membership: Option<Membership>,
    signaller: Option<RoomSignaller>,
}

pub struct RoomSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// The request pads' branches, in request order.
    inputs: Mutex<Vec<Input>>,
    /// Read by the mute probes on the streaming threads.
    mute_audio: Arc<AtomicBool>,
    mute_video: Arc<AtomicBool>,
    /// `video-bitrate` and the shared video encoder's current rates.
    video_rate: Arc<bitrate::VideoRate>,
    /// Whether any viewer session exists: without one, the inputs' buffers are dropped.
    demand: Arc<demand::Demand>,
    /// The DTLS certificate every session presents (made once per element).
    certificate: DtlsCertificate,
    webrtcsink: gst::Element,
}

impl RoomSink {
    fn client(&self) -> Option<RoomClient> {
        let state = self.state.lock().unwrap();
        state.membership.as_ref().map(|m| m.client().clone())
    }

    /// Tells the signaller which media the stream carries (the pads there are now).
    fn update_media(&self) {
        let signaller = self.state.lock().unwrap().signaller.clone();
        if let Some(signaller) = signaller {
            signaller.set_media(self.has_pad("audio_"), self.has_pad("video_"));
        }
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
            client.mute(
                &stream,
                self.mute_audio.load(Ordering::Relaxed),
                self.mute_video.load(Ordering::Relaxed),
            );
        }
    }

    /// NULL→READY: join (or share) the participant and hand webrtcsink its signaller.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        // Copy out: nothing below runs under the settings lock.
        let (room, stream, video_caps, audio_caps, per_viewer) = {
            let s = self.settings.lock().unwrap();
            (
                s.room.clone(),
                s.stream.clone(),
                s.video_caps.clone(),
                s.audio_caps.clone(),
                s.encode_per_viewer,
            )
        };
        let membership = Membership::start(self.obj().upcast_ref(), "roomsink", &room, || {
            room_protocol::validate_name(&stream).map_err(|why| format!("stream {why}"))
        })?;
        encode::configure_webrtcsink(&self.webrtcsink, &video_caps, &audio_caps, per_viewer);
        self.video_rate.shared.store(!per_viewer, Ordering::Relaxed);
        self.demand.restart();
        // Each session's webrtcbin gets its ICE servers in `webrtcbin-ready` (crate::ice), once
        // the room server's are known; webrtcsink adds none of its own (its default STUN server
        // is a public one).
        self.webrtcsink.set_property("stun-server", None::<String>);
        let signaller = RoomSignaller::publisher(
            membership.client(),
            &stream,
            self.has_pad("audio_"),
            self.has_pad("video_"),
        );
        let element = self.obj().downgrade();
        signaller.connect("room-status", false, move |args| {
            let element = element.upgrade()?;
            let status = args[1].get::<String>().unwrap();
            let peer = args[2].get::<Option<String>>().unwrap();
            let reason = args[3].get::<Option<String>>().unwrap();
            if status == "publishing" {
                element.imp().demand.published();
                element.imp().announce_mute();
            }
            let stream = element.imp().settings.lock().unwrap().stream.clone();
            let mut event = events::session_status(&status, Some(&stream), peer.as_deref());
            if let Some(reason) = reason {
                event.set("reason", reason);
            }
            events::post(element.upcast_ref(), event);
            None
        });
        let element = self.obj().downgrade();
        signaller.connect("webrtcbin-ready", false, move |args| {
            let element = element.upgrade()?;
            let webrtcbin = args[2].get::<gst::Element>().expect("signal arg");
            element.imp().configure_ice(&webrtcbin);
            None
        });
        self.webrtcsink.set_property("signaller", &signaller);
        *self.state.lock().unwrap() = State {
            membership: Some(membership),
            signaller: Some(signaller),
        };
        Ok(())
    }

    /// Gives a new session's webrtcbin its STUN/TURN servers and relay policy.
    fn configure_ice(&self, webrtcbin: &gst::Element) {
        let Some(client) = self.client() else { return };
        let config = self.settings.lock().unwrap().room.ice_config(&client);
        gst::debug!(CAT, imp = self, "session ICE: {config:?}");
        config.apply(webrtcbin);
    }

    /// READY→NULL: stop posting (the task is awaited), then leave — when no other element of
    /// the process shares the participant — before the state change returns.
    fn stop(&self) {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        if let Some(membership) = state.membership {
            membership.stop();
        }
    }

    /// Adds the branch of a new input (see [`encode`]), links it to a new webrtcsink pad, and
    /// returns the ghost pad for it. On failure nothing is left behind.
    fn link_input(&self, medium: Medium, name: &str) -> Result<gst::GhostPad, glib::BoolError> {
        let branch = encode::new_branch(name, self.encode_config(medium)?)?.upcast();
        let obj = self.obj();
        obj.add(&branch)?;
        let mut input = Input {
            ghost: None,
            branch,
            webrtc_pad: None,
        };
        match self.finish_input(&mut input, medium, name) {
            Ok(ghost) => {
                input.ghost = Some(ghost.clone());
                self.inputs.lock().unwrap().push(input);
                Ok(ghost)
            }
            Err(err) => {
                self.remove_input(input);
                Err(err)
            }
        }
    }

    /// What a new input's branch needs to know, copied out of the settings.
    fn encode_config(&self, medium: Medium) -> Result<encode::Config, glib::BoolError> {
        let settings = self.settings.lock().unwrap();
        let (codecs, muted) = match medium {
            Medium::Video => (&settings.video_caps, &self.mute_video),
            Medium::Audio => (&settings.audio_caps, &self.mute_audio),
        };
        Ok(encode::Config {
            medium,
            per_viewer: settings.encode_per_viewer,
            codec: codecs
                .structure(0)
                .ok_or_else(|| glib::bool_error!("empty {} codec caps", medium.template()))?
                .to_owned(),
            video_rate: self.video_rate.clone(),
            demand: self.demand.clone(),
            muted: muted.clone(),
        })
    }

    fn finish_input(
        &self,
        input: &mut Input,
        medium: Medium,
        name: &str,
    ) -> Result<gst::GhostPad, glib::BoolError> {
        let branch = &input.branch;
        input.webrtc_pad = Some(self.link_to_webrtcsink(branch, medium)?);
        let template = self.obj().pad_template(medium.template()).unwrap();
        let ghost = gst::GhostPad::builder_from_template_with_target(
            &template,
            &branch.static_pad("sink").unwrap(),
        )?
        .name(name)
        .build();
        branch.sync_state_with_parent()?;
        Ok(ghost)
    }

    /// Requests a webrtcsink pad for `medium` and links `branch` to it.
    fn link_to_webrtcsink(
        &self,
        branch: &gst::Element,
        medium: Medium,
    ) -> Result<gst::Pad, glib::BoolError> {
        let template = medium.template();
        let webrtc_pad = self
            .webrtcsink
            .request_pad_simple(template)
            .ok_or_else(|| glib::bool_error!("webrtcsink refused a {template} pad"))?;
        if let Err(err) = branch.static_pad("src").unwrap().link(&webrtc_pad) {
            self.webrtcsink.release_request_pad(&webrtc_pad);
            return Err(glib::bool_error!("{err:?}"));
        }
        Ok(webrtc_pad)
    }

    /// Unlinks and releases a webrtcsink pad (UPSTREAM.md: "webrtcsink pad renewal").
    /// webrtcsink 0.15.4's `release_pad` forgets the
    /// stream but leaves the pad on the element, where a buffer would make it panic: remove it.
    fn release_webrtcsink_pad(&self, branch: &gst::Element, pad: &gst::Pad) {
        let _ = branch.static_pad("src").unwrap().unlink(pad);
        self.webrtcsink.release_request_pad(pad);
        if pad.parent().as_ref() == Some(self.webrtcsink.upcast_ref()) {
            let _ = pad.set_active(false);
            let _ = self.webrtcsink.remove_pad(pad);
        }
    }

    /// Takes an input out: its webrtcsink pad (and so its media in the announced stream), its
    /// elements and its ghost pad.
    fn remove_input(&self, input: Input) {
        let obj = self.obj();
        if let Some(pad) = input.webrtc_pad {
            self.release_webrtcsink_pad(&input.branch, &pad);
        }
        let _ = input.branch.set_state(gst::State::Null);
        let _ = obj.remove(&input.branch);
        if let Some(ghost) = input.ghost {
            let _ = ghost.set_active(false);
            let _ = obj.remove_pad(&ghost);
        }
    }

    /// UPSTREAM.md: "webrtcsink pad renewal". webrtcsink 0.15.4 prepares an input only when
    /// its pad is requested and tears that down
    /// at PAUSED→READY, so a restarted webrtcsink would refuse every buffer (not-linked). After
    /// each run (in NULL), every input gets a fresh webrtcsink pad; the clocksyncs
    /// webrtcsink leaves behind (it never removes them) are removed too.
    fn renew_webrtcsink_pads(&self) {
        gst::debug!(CAT, imp = self, "renewing webrtcsink pads");
        let inputs: Vec<(gst::Element, Option<gst::Pad>, Medium)> = self
            .inputs
            .lock()
            .unwrap()
            .iter()
            .map(|i| (i.branch.clone(), i.webrtc_pad.clone(), i.medium()))
            .collect();
        let mut renewed = Vec::new();
        for (branch, old, medium) in inputs {
            if let Some(old) = old {
                self.release_webrtcsink_pad(&branch, &old);
            }
            match self.link_to_webrtcsink(&branch, medium) {
                Ok(pad) => renewed.push((branch, Some(pad))),
                Err(err) => {
                    gst::warning!(CAT, imp = self, "cannot relink an input: {err}");
                    renewed.push((branch, None));
                }
            }
        }
        let mut inputs = self.inputs.lock().unwrap();
        for (branch, pad) in renewed {
            if let Some(input) = inputs.iter_mut().find(|i| i.branch == branch) {
                input.webrtc_pad = pad;
            }
        }
        drop(inputs);
        let bin = self.webrtcsink.downcast_ref::<gst::Bin>().unwrap();
        for child in bin.children() {
            let unlinked = child.factory().is_some_and(|f| f.name() == "clocksync")
                && child.pads().iter().all(|p| !p.is_linked());
            if unlinked {
                let _ = child.set_state(gst::State::Null);
                let _ = bin.remove(&child);
            }
        }
    }
}

/// One request pad's branch: ghost pad → branch bin (see [`encode`]) → webrtcsink pad.
struct Input {
    ghost: Option<gst::GhostPad>,
    branch: gst::Element,
    webrtc_pad: Option<gst::Pad>,
}

impl Input {
    fn medium(&self) -> Medium {
        match &self.ghost {
            Some(g) if g.name().starts_with("audio") => Medium::Audio,
            _ => Medium::Video,
        }
    }
}

impl Medium {
    fn template(self) -> &'static str {
        match self {
            Medium::Video => "video_%u",
            Medium::Audio => "audio_%u",
        }
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
        super::congestion::configure(&webrtcsink);
        let certificate = certificate::generate().expect("an ECDSA P-256 key pair");
        certificate::use_for_sessions(&webrtcsink, &certificate);
        RoomSink {
            settings: Default::default(),
            state: Default::default(),
            inputs: Default::default(),
            mute_audio: Arc::new(AtomicBool::new(DEFAULT_MUTE_AUDIO)),
            mute_video: Arc::new(AtomicBool::new(DEFAULT_MUTE_VIDEO)),
            video_rate: Arc::new(bitrate::VideoRate::new(encode::DEFAULT_VIDEO_BITRATE)),
            demand: Default::default(),
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
            self.video_rate.clone(),
        );
        demand::follow_sessions(&self.webrtcsink, self.demand.clone());
        // Every viewer's audio packets carry their level (RFC 6464), as browsers' do.
        self.webrtcsink.connect("payloader-setup", false, |args| {
            let input = args[2].get::<String>().expect("signal arg");
            let payloader = args[3].get::<gst::Element>().expect("signal arg");
            if input.starts_with("audio") {
                crate::audio_level::add_extension(&payloader);
            }
            // Not "entirely configured": webrtcsink's own setup runs too.
            Some(false.to_value())
        });
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
                    .blurb("Highest bitrate of the shared video encoder in bit/s; it follows what the weakest viewer's bandwidth estimate leaves for video, down to 100000, and the picture gets smaller while the encoder cannot fit that (not used with encode-per-viewer or encoded input)")
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
                let target = self.video_rate.set_maximum(bitrate, self.has_pad("audio_"));
                bitrate::set_video_bitrate(self.obj().upcast_ref(), target);
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
        if let Some(value) = settings.room.get(pspec.name(), client.as_ref()) {
            return value;
        }
        match pspec.name() {
            "stream" => settings.stream.to_value(),
            "video-caps" => settings.video_caps.to_value(),
            "audio-caps" => settings.audio_caps.to_value(),
            "encode-per-viewer" => settings.encode_per_viewer.to_value(),
            "video-bitrate" => self.video_rate.maximum.load(Ordering::Relaxed).to_value(),
            "dtls-fingerprint" => self.certificate.fingerprint.to_value(),
            "mute-audio" => self.mute_audio.load(Ordering::Relaxed).to_value(),
            "mute-video" => self.mute_video.load(Ordering::Relaxed).to_value(),
            _ => unimplemented!(),
        }
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            membership::signals(|value| {
                value
                    .get::<super::RoomSink>()
                    .ok()
                    .and_then(|sink| sink.imp().client())
            })
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
        let added = ghost.set_active(true).is_ok() && self.obj().add_pad(&ghost).is_ok();
        if !added {
            self.release_pad(ghost.upcast_ref());
            return None;
        }
        self.update_media();
        Some(ghost.upcast())
    }

    /// Releasing a request pad removes its branch, its webrtcsink pad and its media from what
    /// the stream announces (from the next start).
    fn release_pad(&self, pad: &gst::Pad) {
        let input = {
            let mut inputs = self.inputs.lock().unwrap();
            let position = inputs.iter().position(|i| {
                i.ghost
                    .as_ref()
                    .is_some_and(|g| g.upcast_ref::<gst::Pad>() == pad)
            });
            position.map(|i| inputs.remove(i))
        };
        if let Some(input) = input {
            self.remove_input(input);
        }
        self.update_media();
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
        // In NULL, not at PAUSED→READY: upstream elements (changed after this sink) may still
        // push into the old pads then.
        if transition == gst::StateChange::ReadyToNull {
            self.renew_webrtcsink_pads();
        }
        gst::debug!(CAT, imp = self, "{transition:?}: {result:?}");
        result
    }
}

impl BinImpl for RoomSink {}
