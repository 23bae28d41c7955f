//! The subclass behind [`super::RoomSrc`].

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use room_protocol::speaker::{self, Detector};
use room_protocol::{Participant, ServerMessage};

use crate::RUNTIME;
use crate::audio_level::{self, LevelSource};
use crate::certificate::{self, DtlsCertificate};
use crate::client::{Event, RoomClient, Status};
use crate::events::{self, RoomSettings};
use crate::membership::{self, Membership};
use crate::signaller::RoomSignaller;
use crate::subscription::Subscription;

use super::mix::{Layout, Mix, MixFormat};

/// Jitterbuffer latency. webrtcbin's 200 ms default suits the internet; conferencing on a LAN
/// wants the picture sooner, and 50 ms still absorbs ordinary LAN jitter.
const DEFAULT_LATENCY_MS: u32 = 50;
/// How long roomsrc waits before playing again a stream whose session ended while it is
/// still published (the publisher's side failed or stopped it).
const REPLAY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the pads of a stream that went away (link flap, reconnect, ICE failure, or its
/// publisher dropped or left) stay before they get EOS: if the stream comes back within this
/// time, its media continues on the same pads and the pipeline never sees an end.
const DEFAULT_GRACE_PERIOD_MS: u32 = 10_000;
const DEFAULT_MIX: bool = false;
const DEFAULT_MIX_WIDTH: i32 = 1280;
const DEFAULT_MIX_HEIGHT: i32 = 720;
const DEFAULT_MIX_FRAMERATE: gst::Fraction = gst::Fraction::from_integer(30);
/// How often the active speaker is decided and the levels are posted (`room-audio-levels`
/// at most ten times a second).
const SPEAKER_TICK: Duration = Duration::from_millis(100);

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "roomsrc",
        gst::DebugColorFlags::empty(),
        Some("gst-room player"),
    )
});

struct Settings {
    room: RoomSettings,
    participant: Option<String>,
    latency_ms: Option<u32>,
    grace_period_ms: u32,
    mix_format: MixFormat,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            room: RoomSettings::default(),
            participant: None,
            latency_ms: None,
            grace_period_ms: DEFAULT_GRACE_PERIOD_MS,
            mix_format: MixFormat {
                width: DEFAULT_MIX_WIDTH,
                height: DEFAULT_MIX_HEIGHT,
                framerate: DEFAULT_MIX_FRAMERATE,
                layout: Layout::Grid,
            },
        }
    }
}

impl Settings {
    fn latency_ms(&self) -> u32 {
        self.latency_ms.unwrap_or(DEFAULT_LATENCY_MS)
    }
}

/// One remote stream being played: (username, stream) → its webrtcsrc and our pads.
type PlayerKey = (String, String);

struct Player {
    src: gst::Element,
    signaller: RoomSignaller,
    pads: Vec<gst::GhostPad>,
}

/// What exists between READY→PAUSED and PAUSED→READY.
#[derive(Default)]
struct State {
    /// The participant and the posting of its events; `None` when not running, which is
    /// what stops late player changes.
    membership: Option<Membership>,
    /// Follows the room and adds/removes players.
    follower: Option<Subscription>,
    players: BTreeMap<PlayerKey, Player>,
    /// Pads of streams that went away, kept for the grace period, with the number of the
    /// parking (a later parking of the same stream outlives an earlier one's timer).
    parked: BTreeMap<PlayerKey, (u64, Vec<gst::GhostPad>)>,
    parkings: u64,
}

/// What a player change tells the application: done by [`RoomSrc::tell`] once the change has
/// released `changes`, because a handler may do anything — set the pipeline to NULL included,
/// which stops roomsrc and so takes `changes` again.
#[derive(Default)]
#[must_use = "the application is told with RoomSrc::tell"]
struct Told {
    /// Pads that ended (EOS pushed, target cleared) and are to be removed.
    removed_pads: Vec<gst::GhostPad>,
    /// A participant was taken out of the mix.
    mix_tiles_changed: bool,
    /// Players that could not be made: posted as element warnings.
    warnings: Vec<String>,
    /// Room events (`room-session-status` playing / stopped): posted and emitted.
    events: Vec<gst::Structure>,
}

impl Told {
    fn merge(&mut self, other: Told) {
        self.removed_pads.extend(other.removed_pads);
        self.mix_tiles_changed |= other.mix_tiles_changed;
        self.warnings.extend(other.warnings);
        self.events.extend(other.events);
    }
}

/// Lock order: `changes` → `settings` → `state` → `mix`; none of them is held while emitting a
/// signal, posting or removing a pad (a player change returns those as [`Told`], done once its
/// lock is released), and only `changes` while calling into children.
#[derive(Default)]
pub struct RoomSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Serialises player changes (add, end, stop), which call into child elements and may run
    /// on several threads (the follower, session-end handlers, replays, the state change). A
    /// change that starts after stop sees no client and does nothing, so stop leaves no orphan.
    changes: Mutex<()>,
    /// The mixers, from `mix=true` on (set in NULL only); participants are attached to them
    /// instead of getting pads of their own.
    mix: Mutex<Option<Mix>>,
    /// Who speaks, from the levels of the audio played (fed by pad probes). Taken alone, never
    /// with another lock of roomsrc.
    speaking: Mutex<Detector<String>>,
    /// Who speaks as the server says, in rooms where it decides (`--media sfu`: the
    /// `active-speaker` event); `None` while it has not said (mesh rooms): then `speaking`
    /// decides. Taken alone.
    server_speaker: Mutex<Option<Option<String>>>,
    /// The task deciding the speaker and posting levels, while running.
    speaker_ticks: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The DTLS certificate every session presents (made for the first one).
    certificate: std::sync::OnceLock<Arc<DtlsCertificate>>,
}

impl RoomSrc {
    /// The element's ECDSA DTLS certificate (see `crate::certificate`).
    fn certificate(&self) -> Arc<DtlsCertificate> {
        self.certificate
            .get_or_init(|| Arc::new(certificate::generate().expect("an ECDSA P-256 key pair")))
            .clone()
    }

    fn client(&self) -> Option<RoomClient> {
        let state = self.state.lock().unwrap();
        state.membership.as_ref().map(|m| m.client().clone())
    }

    /// READY→PAUSED: join (or share) the participant and follow the room.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let (room, format) = {
            let s = self.settings.lock().unwrap();
            (s.room.clone(), s.mix_format)
        };
        let membership = Membership::start(self.obj().upcast_ref(), "roomsrc", &room, || Ok(()))?;
        if let Some(mix) = self.mix.lock().unwrap().as_mut() {
            mix.set_format(format);
        }
        let client = membership.client().clone();
        // Running from here on: the follower's first event may add a player at once.
        self.state.lock().unwrap().membership = Some(membership);
        let follower = self.spawn_follower(&client);
        self.state.lock().unwrap().follower = Some(follower);
        *self.speaking.lock().unwrap() = Detector::new();
        *self.server_speaker.lock().unwrap() = None;
        let ticks = self.spawn_speaker_ticks();
        *self.speaker_ticks.lock().unwrap() = Some(ticks);
        Ok(())
    }

    /// PAUSED→READY (or a failed READY→PAUSED): stop following (awaited), end every player,
    /// and leave — for the participant's last user — before returning.
    fn stop(&self) {
        // Aborted, not awaited: a handler of its signals may be what stops roomsrc.
        if let Some(ticks) = self.speaker_ticks.lock().unwrap().take() {
            ticks.abort();
        }
        let follower = self.state.lock().unwrap().follower.take();
        if let Some(follower) = follower {
            follower.stop();
        }
        let (membership, told) = self.end_everything();
        self.tell(told);
        if let Some(membership) = membership {
            membership.stop();
        }
    }

    /// Ends every player and parked pad, and takes the membership out of the state: from here
    /// on a late change sees no client and does nothing.
    fn end_everything(&self) -> (Option<Membership>, Told) {
        let _changes = self.changes.lock().unwrap();
        let (membership, players, parked) = {
            let mut state = self.state.lock().unwrap();
            (
                state.membership.take(),
                std::mem::take(&mut state.players),
                std::mem::take(&mut state.parked),
            )
        };
        let mut told = Told::default();
        for (key, player) in players {
            told.merge(self.dispose_player(&key, player));
        }
        for (_, pads) in parked.into_values() {
            told.merge(self.end_pads(pads));
        }
        (membership, told)
    }

    /// Tells the application what a player change did; no lock of roomsrc is held.
    fn tell(&self, told: Told) {
        let obj = self.obj();
        for pad in told.removed_pads {
            let _ = obj.remove_pad(&pad);
        }
        if told.mix_tiles_changed {
            obj.notify("mix-tiles");
        }
        for warning in told.warnings {
            gst::element_imp_warning!(self, gst::CoreError::Failed, ["{}", warning]);
        }
        for event in told.events {
            events::post(obj.upcast_ref(), event);
        }
    }

    /// Follows room events and adds/removes players. GStreamer state changes can block, so
    /// each runs on the blocking pool, awaited in order.
    fn spawn_follower(&self, client: &RoomClient) -> Subscription {
        let this = self.obj().downgrade();
        Subscription::spawn(client, move |event| {
            let this = this.clone();
            async move {
                if let Event::Room(ServerMessage::ActiveSpeaker { username }) = &event {
                    let Some(element) = this.upgrade() else {
                        return false;
                    };
                    let username = username.clone();
                    tokio::task::block_in_place(|| element.imp().server_decided(username));
                    return true;
                }
                let Some(change) = Change::from_event(event) else {
                    return true;
                };
                // A weak ref: the pipeline owns roomsrc, this task must not keep it alive.
                let Some(element) = this.upgrade() else {
                    return false;
                };
                let applying = element.clone();
                let applied =
                    tokio::task::spawn_blocking(move || applying.imp().apply(change)).await;
                let Ok((ended, told)) = applied else {
                    return true;
                };
                // Told from this task rather than the blocking thread: a handler that stops
                // roomsrc stops this subscription, which does not wait for itself (it would wait
                // for the blocking thread, which waits for the handler).
                tokio::task::block_in_place(|| element.imp().tell(told));
                for key in ended {
                    schedule_replay(this.clone(), key);
                }
                true
            }
        })
    }

    /// Applies a change; returns the players that ended because their session ended (the
    /// stream may still be published: worth playing again), and what to tell the application.
    fn apply(&self, change: Change) -> (Vec<PlayerKey>, Told) {
        let mut told = Told::default();
        match change {
            Change::PlayAll(participants) => {
                for p in participants {
                    for s in p.streams {
                        told.merge(self.add_player(&p.username, &s.stream));
                    }
                }
            }
            Change::Play(user, stream) => told.merge(self.add_player(&user, &stream)),
            Change::Stop(matches) => {
                let _changes = self.changes.lock().unwrap();
                let ended: Vec<_> = {
                    let mut state = self.state.lock().unwrap();
                    let keys: Vec<PlayerKey> = state
                        .players
                        .iter()
                        .filter(|(k, p)| matches.applies(k, p))
                        .map(|(k, _)| k.clone())
                        .collect();
                    keys.into_iter()
                        .filter_map(|k| state.players.remove(&k).map(|p| (k, p)))
                        .collect()
                };
                // Their audio is gone: so is their turn (a stream still playing adds them back
                // with its next level).
                if let StopMatch::User(user) | StopMatch::Stream(user, _) = &matches {
                    told.events.extend(self.forget_speaker(user));
                }
                let by_session = matches!(matches, StopMatch::Signaller(_));
                let mut keys = Vec::new();
                for (key, player) in ended {
                    told.merge(self.end_player(&key, player));
                    keys.push(key);
                }
                return (if by_session { keys } else { Vec::new() }, told);
            }
        }
        (Vec::new(), told)
    }

    fn wants(&self, user: &str) -> bool {
        let settings = self.settings.lock().unwrap();
        settings.participant.as_deref().is_none_or(|p| p == user) && user != settings.room.username
    }

    /// Plays `user`'s `stream` unless it already plays or roomsrc has stopped; the
    /// `playing` status (or a warning) is for the caller to tell once `changes` is released.
    fn add_player(&self, user: &str, stream: &str) -> Told {
        let mut told = Told::default();
        let key = (user.to_owned(), stream.to_owned());
        let _changes = self.changes.lock().unwrap();
        let Some(client) = self.client() else {
            return told;
        };
        if !self.wants(user) || self.state.lock().unwrap().players.contains_key(&key) {
            return told;
        }
        match self.make_player(&client, user, stream) {
            Ok(player) => {
                let src = player.src.clone();
                self.state.lock().unwrap().players.insert(key, player);
                if let Err(err) = src.sync_state_with_parent() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "cannot start the player of {user}/{stream}: {err}"
                    );
                }
                told.events
                    .push(events::session_status("playing", Some(stream), Some(user)));
            }
            Err(err) => told
                .warnings
                .push(format!("cannot play {user}/{stream}: {err}")),
        }
        told
    }

    /// A viewer signaller's session ended: end its player (from another task, so the
    /// signaller's own task, which reports this, is not the one stopping it) and play again
    /// if the stream is still published.
    fn on_session_ended(&self, signaller: RoomSignaller) {
        let this = self.obj().downgrade();
        RUNTIME.spawn(async move {
            let Some(element) = this.upgrade() else {
                return;
            };
            let change = Change::Stop(StopMatch::Signaller(signaller));
            let ended = tokio::task::spawn_blocking(move || {
                let (ended, told) = element.imp().apply(change);
                element.imp().tell(told);
                ended
            })
            .await;
            for key in ended.unwrap_or_default() {
                schedule_replay(this.clone(), key);
            }
        });
    }

    fn make_player(
        &self,
        client: &RoomClient,
        user: &str,
        stream: &str,
    ) -> Result<Player, glib::BoolError> {
        let (ice, latency) = {
            let s = self.settings.lock().unwrap();
            (s.room.ice_config(client), s.latency_ms())
        };
        gst::debug!(CAT, imp = self, "{user}/{stream} ICE: {ice:?}");
        let signaller = RoomSignaller::viewer(client, user, stream);
        let certificate = self.certificate();
        signaller.present_fingerprint(&certificate.fingerprint);
        signaller.connect("webrtcbin-ready", false, move |args| {
            let webrtcbin = args[2].get::<gst::Element>().expect("signal arg");
            webrtcbin.set_property("latency", latency);
            ice.apply(&webrtcbin);
            certificate::use_for_webrtcbin(&webrtcbin, &certificate);
            webrtcbin.connect_pad_added(sink_unused_pad);
            None
        });
        let this = self.obj().downgrade();
        signaller.connect("room-status", false, move |args| {
            let status = args[1].get::<String>().expect("signal arg");
            if status == "session-ended"
                && let Some(this) = this.upgrade()
            {
                let signaller = args[0].get::<RoomSignaller>().expect("signal arg");
                this.imp().on_session_ended(signaller);
            }
            None
        });
        // webrtcsrc adds no ICE servers of its own (its default STUN server is a public one):
        // the webrtcbin gets them above (crate::ice).
        let src = gst::ElementFactory::make("webrtcsrc")
            .name(format!("webrtcsrc-{user}-{stream}"))
            .property("signaller", &signaller)
            .property("stun-server", None::<String>)
            .build()?;
        let this = self.obj().downgrade();
        let (user_owned, stream_owned) = (user.to_owned(), stream.to_owned());
        src.connect_pad_added(move |_src, pad| {
            if let Some(this) = this.upgrade() {
                this.imp().expose(&user_owned, &stream_owned, pad);
            }
        });
        self.obj().add(&src)?;
        Ok(Player {
            src,
            signaller,
            pads: Vec::new(),
        })
    }

    /// Ghosts a decoded pad of a player as `video_<user>` / `audio_<user>`. Runs inside
    /// webrtcsrc's pad-added, before webrtcsrc asks downstream what it takes — linking here is
    /// what makes webrtcsrc decode.
    fn expose(&self, user: &str, stream: &str, pad: &gst::Pad) {
        if pad.name().starts_with("audio") {
            self.measure(user, pad);
        }
        // The mix lock is held while attaching: it serialises changes to the mixers' inputs
        // (the one exception to "no lock while calling into children"), and nothing that
        // attaching calls takes it. It is released before posting or notifying.
        let mut mix = self.mix.lock().unwrap();
        if let Some(mixing) = mix.as_mut() {
            let key = (user.to_owned(), stream.to_owned());
            let attached = mixing.attach(self.obj().upcast_ref(), key, pad);
            drop(mix);
            match attached {
                Ok(()) => self.obj().notify("mix-tiles"),
                Err(err) => gst::element_imp_warning!(
                    self,
                    gst::CoreError::Pad,
                    ["cannot mix {}/{}: {}", user, stream, err]
                ),
            }
            return;
        }
        drop(mix);
        let medium = if pad.name().starts_with("video") {
            "video"
        } else {
            "audio"
        };
        let mut name = format!("{medium}_{}", pad_name_part(user));
        if stream != "main" {
            name = format!("{name}_{stream}");
        }
        if self.resume_parked_pad(user, stream, &name, pad) {
            return;
        }
        let template = self.obj().pad_template(&format!("{medium}_%s")).unwrap();
        let ghost = match gst::GhostPad::builder_from_template_with_target(&template, pad) {
            Ok(builder) => builder.name(name.as_str()).build(),
            Err(err) => {
                return gst::warning!(CAT, imp = self, "cannot ghost {}: {err}", pad.name());
            }
        };
        // An application may link only some pads (say, only video).
        drop_when_unlinked(ghost.upcast_ref());
        drop_when_unlinked(pad);
        let _ = ghost.set_active(true);
        if let Some(player) = self
            .state
            .lock()
            .unwrap()
            .players
            .get_mut(&(user.to_owned(), stream.to_owned()))
        {
            player.pads.push(ghost.clone());
        }
        gst::info!(CAT, imp = self, "exposing {name}");
        if let Err(err) = self.obj().add_pad(&ghost) {
            gst::warning!(CAT, imp = self, "cannot add {name}: {err}");
        }
    }

    /// A player's stream went away: with a grace period (and without the mix), its pads stay
    /// (carrying nothing) and get the stream again if it comes back in time; else it ends.
    fn end_player(&self, key: &PlayerKey, player: Player) -> Told {
        let grace = self.settings.lock().unwrap().grace_period_ms;
        if grace == 0 || self.mix.lock().unwrap().is_some() || player.pads.is_empty() {
            return self.dispose_player(key, player);
        }
        gst::info!(
            CAT,
            imp = self,
            "stream {}/{} away: keeping its pads {grace} ms",
            key.0,
            key.1
        );
        for ghost in &player.pads {
            let _ = ghost.set_target(None::<&gst::Pad>);
        }
        let told = self.remove_source(key, &player.src);
        let parking = {
            let mut state = self.state.lock().unwrap();
            state.parkings += 1;
            let parking = state.parkings;
            state.parked.insert(key.clone(), (parking, player.pads));
            parking
        };
        let element = self.obj().downgrade();
        let key = key.clone();
        RUNTIME.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(grace.into())).await;
            if let Some(element) = element.upgrade() {
                let _ = tokio::task::spawn_blocking(move || {
                    let told = element.imp().expire_parked(&key, parking);
                    element.imp().tell(told);
                })
                .await;
            }
        });
        told
    }

    /// The grace period of a parked stream ran out: its pads end.
    fn expire_parked(&self, key: &PlayerKey, parking: u64) -> Told {
        // A player change: serialised with the others and with stop (which ends the parked
        // pads itself).
        let _changes = self.changes.lock().unwrap();
        let pads = {
            let mut state = self.state.lock().unwrap();
            match state.parked.get(key) {
                Some((p, _)) if *p == parking => state.parked.remove(key).map(|(_, pads)| pads),
                _ => None,
            }
        };
        match pads {
            Some(pads) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "stream {}/{} did not come back",
                    key.0,
                    key.1
                );
                self.end_pads(pads)
            }
            None => Told::default(),
        }
    }

    /// A new session's decoded `pad` continues on the parked pad `name` of its stream, if
    /// there is one. Runs in webrtcsrc's pad-added, like [`Self::expose`].
    fn resume_parked_pad(&self, user: &str, stream: &str, name: &str, pad: &gst::Pad) -> bool {
        let key = (user.to_owned(), stream.to_owned());
        let ghost = {
            let mut state = self.state.lock().unwrap();
            let Some((_, pads)) = state.parked.get_mut(&key) else {
                return false;
            };
            let Some(i) = pads.iter().position(|g| g.name() == name) else {
                return false;
            };
            let ghost = pads.remove(i);
            if pads.is_empty() {
                state.parked.remove(&key);
            }
            if let Some(player) = state.players.get_mut(&key) {
                player.pads.push(ghost.clone());
            }
            ghost
        };
        gst::info!(CAT, imp = self, "stream {user}/{stream} is back on {name}");
        drop_when_unlinked(pad);
        if let Err(err) = ghost.set_target(Some(pad)) {
            gst::warning!(CAT, imp = self, "cannot resume {name}: {err}");
        }
        true
    }

    /// EOS on `pads` and their targets cleared; their removal (pad-removed) is told.
    fn end_pads(&self, pads: Vec<gst::GhostPad>) -> Told {
        for ghost in &pads {
            ghost.push_event(gst::event::Eos::new());
            let _ = ghost.set_target(None::<&gst::Pad>);
        }
        Told {
            removed_pads: pads,
            ..Told::default()
        }
    }

    /// Stops and removes a player's webrtcsrc; its `stopped` status is told.
    fn remove_source(&self, key: &PlayerKey, src: &gst::Element) -> Told {
        let _ = src.set_state(gst::State::Null);
        let _ = self.obj().remove(src);
        Told {
            events: vec![events::session_status(
                "stopped",
                Some(&key.1),
                Some(&key.0),
            )],
            ..Told::default()
        }
    }

    /// Ends a player: EOS on its pads, webrtcsrc stopped and removed; the pads' removal is
    /// told.
    fn dispose_player(&self, key: &PlayerKey, player: Player) -> Told {
        gst::info!(CAT, imp = self, "stream {}/{} ended", key.0, key.1);
        // Downstream first: a streaming thread of the webrtcsrc may be blocked downstream (a
        // mixer pad, a prerolling sink while the pipeline changes state); webrtcsrc's own
        // state change would wait for it while holding its state lock, which the pipeline's
        // state change needs in turn.
        let detached = self
            .mix
            .lock()
            .unwrap()
            .as_mut()
            .map(|mix| mix.detach(self.obj().upcast_ref(), key))
            .is_some();
        let mut told = self.end_pads(player.pads);
        told.mix_tiles_changed = detached;
        told.merge(self.remove_source(key, &player.src));
        told
    }
}

impl RoomSrc {
    /// `mix=true`: adds the mixers and the `video` / `audio` pads at once, so that
    /// `gst-launch-1.0 roomsrc mix=true name=r r.video ! ...` links at parse time.
    fn enable_mix(&self) {
        // Settings before mix: the one lock order (see `RoomSrc`).
        let format = self.settings.lock().unwrap().mix_format;
        let mut mix = self.mix.lock().unwrap();
        if mix.is_some() {
            return;
        }
        let obj = self.obj();
        match Mix::new(obj.upcast_ref(), format) {
            Ok((created, video, audio)) => {
                for (name, target) in [("video", video), ("audio", audio)] {
                    let template = obj.pad_template(name).unwrap();
                    let ghost =
                        gst::GhostPad::builder_from_template_with_target(&template, &target)
                            .expect("mixer output matches the template")
                            .name(name)
                            .build();
                    let _ = obj.add_pad(&ghost);
                }
                *mix = Some(created);
            }
            Err(err) => gst::element_imp_error!(
                self,
                gst::CoreError::MissingPlugin,
                ("cannot build the room mix: {}", err)
            ),
        }
    }

    /// Feeds the level of every buffer of `user`'s decoded audio `pad` to the speaker
    /// detector: the publisher's RFC 6464 level when the buffer carries it, else measured.
    fn measure(&self, user: &str, pad: &gst::Pad) {
        let this = self.obj().downgrade();
        let user = user.to_owned();
        // Where the last level came from, logged when it changes.
        let source = Mutex::new(None);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some((level, from)) = audio_level::received_level(buffer) else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(this) = this.upgrade() else {
                return gst::PadProbeReturn::Remove;
            };
            if source.lock().unwrap().replace(from) != Some(from) {
                let how = match from {
                    LevelSource::Extension => "from its RTP header extension (RFC 6464)",
                    LevelSource::Measured => "measured from the decoded audio",
                };
                gst::info!(CAT, obj = this, "audio levels of {user}: {how}");
            }
            let now = Instant::now();
            this.imp()
                .speaking
                .lock()
                .unwrap()
                .observe(user.clone(), level, now);
            gst::PadProbeReturn::Ok
        });
    }

    /// Every [`SPEAKER_TICK`] while running: decides the speaker, lets the mix cut, posts
    /// the levels.
    fn spawn_speaker_ticks(&self) -> tokio::task::JoinHandle<()> {
        let this = self.obj().downgrade();
        RUNTIME.spawn(async move {
            let mut ticks = tokio::time::interval(SPEAKER_TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                let Some(element) = this.upgrade() else {
                    return;
                };
                tokio::task::block_in_place(|| element.imp().speaker_tick(Instant::now()));
            }
        })
    }

    fn speaker_tick(&self, now: Instant) {
        let from_server = self.server_speaker.lock().unwrap().clone();
        let (change, levels, speaker) = {
            let mut detector = self.speaking.lock().unwrap();
            let change = detector.tick(now);
            let levels = detector.levels(now);
            (change, levels, detector.speaker().cloned())
        };
        // Where the server decides, the levels are still this element's, the speaker is not.
        let (change, speaker) = match from_server {
            Some(server) => (None, server),
            None => (change, speaker),
        };
        if let Some(mix) = self.mix.lock().unwrap().as_mut() {
            match change.as_ref().and_then(|c| c.speaker.clone()) {
                Some(user) => mix.set_speaker(user, now),
                None => mix.cut_if_due(now),
            }
        }
        let obj = self.obj();
        if let Some(change) = change {
            gst::info!(CAT, imp = self, "active speaker: {:?}", change.speaker);
            events::post(obj.upcast_ref(), speaker_event(&change));
        }
        if !levels.is_empty() {
            events::post(obj.upcast_ref(), levels_event(&levels, speaker.as_deref()));
        }
    }

    /// `user` left or unpublished: its levels are forgotten; if it was the speaker, nobody is
    /// (the event to tell).
    fn forget_speaker(&self, user: &str) -> Option<gst::Structure> {
        let change = self.speaking.lock().unwrap().remove(&user.to_owned());
        let local = self.server_speaker.lock().unwrap().is_none();
        change.filter(|_| local).map(|c| speaker_event(&c))
    }

    /// The server says who speaks (`active-speaker`, SFU rooms): from now on it decides, and
    /// each change is posted and shown in the mix as a local decision would be.
    fn server_decided(&self, username: Option<String>) {
        let previous = self
            .server_speaker
            .lock()
            .unwrap()
            .replace(username.clone())
            .flatten();
        if previous == username {
            return;
        }
        if let Some(mix) = self.mix.lock().unwrap().as_mut()
            && let Some(user) = &username
        {
            mix.set_speaker(user.clone(), Instant::now());
        }
        gst::info!(
            CAT,
            imp = self,
            "active speaker (the server's): {username:?}"
        );
        let change = speaker::Change {
            speaker: username,
            previous,
        };
        events::post(self.obj().upcast_ref(), speaker_event(&change));
    }

    /// Number of tiles in the mix (0 without mix).
    pub fn mix_tiles(&self) -> usize {
        self.mix
            .lock()
            .unwrap()
            .as_ref()
            .map(Mix::tiles)
            .unwrap_or(0)
    }
}

/// Plays `key` again after [`REPLAY_DELAY`] if it is still published then and roomsrc still
/// runs (a stopped roomsrc has no client, and `add_player` does nothing).
fn schedule_replay(element: glib::WeakRef<super::RoomSrc>, key: PlayerKey) {
    RUNTIME.spawn(async move {
        tokio::time::sleep(REPLAY_DELAY).await;
        let Some(element) = element.upgrade() else {
            return;
        };
        let published = element
            .imp()
            .client()
            .is_some_and(|c| c.publishes(&key.0, &key.1));
        if published {
            gst::info!(
                CAT,
                obj = element,
                "session of {}/{} ended while published: playing again",
                key.0,
                key.1
            );
            let _ = tokio::task::spawn_blocking(move || {
                let told = element.imp().add_player(&key.0, &key.1);
                element.imp().tell(told);
            })
            .await;
        }
    });
}

/// The `room-active-speaker` event of a change.
fn speaker_event(change: &speaker::Change<String>) -> gst::Structure {
    gst::Structure::builder("room-active-speaker")
        .field_if_some("username", change.speaker.as_deref())
        .field_if_some("previous", change.previous.as_deref())
        .build()
}

/// The `room-audio-levels` event: everyone's level and whether they speak.
fn levels_event(levels: &[(String, speaker::Level)], speaker: Option<&str>) -> gst::Structure {
    let levels = levels.iter().map(|(user, level)| {
        gst::Structure::builder("level")
            .field("username", user)
            .field("level", level.dbov)
            .field("speaking", level.speaking)
            .build()
            .to_send_value()
    });
    gst::Structure::builder("room-audio-levels")
        .field("levels", gst::Array::from_values(levels))
        .field_if_some("speaker", speaker)
        .build()
}

/// Buffers pushed on `pad` while it is unlinked are dropped instead of refused: webrtcsrc passes
/// a refusal (not-linked) upstream into the path all streams of a session share (unless another
/// of its pads still takes data), and there it stops the whole pipeline. Put on each ghost pad
/// (the application may leave it unlinked) and on its target, webrtcsrc's pad, which is
/// unlinked from the moment a parked ghost lets go of it until webrtcsrc has stopped
/// ([`RoomSrc::end_player`]).
fn drop_when_unlinked(pad: &gst::Pad) {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        |pad, _| {
            if pad.is_linked() {
                gst::PadProbeReturn::Ok
            } else {
                gst::PadProbeReturn::Drop
            }
        },
    );
}

/// webrtcbin can expose a second pad for one SSRC (seen with RED-wrapped first packets, which
/// the viewer signaller's `remove_fec` now prevents) that webrtcsrc leaves unlinked; its data
/// would stop the whole pipeline with not-linked. Runs after webrtcsrc's own pad-added handler,
/// so a pad still unlinked here is one it does not use.
fn sink_unused_pad(webrtcbin: &gst::Element, pad: &gst::Pad) {
    if pad.direction() != gst::PadDirection::Src || pad.is_linked() {
        return;
    }
    let Some(bin) = webrtcbin
        .parent()
        .and_then(|p| p.downcast::<gst::Bin>().ok())
    else {
        return;
    };
    let Ok(sink) = gst::ElementFactory::make("fakesink")
        .property("async", false)
        .property("sync", false)
        .build()
    else {
        return;
    };
    gst::debug!(CAT, "discarding unused {}", pad.name());
    if bin.add(&sink).is_ok() {
        let _ = sink.sync_state_with_parent();
        let _ = pad.link(&sink.static_pad("sink").unwrap());
    }
}

/// Depayloaders ask the publisher for a keyframe when packets are lost, instead of decoding
/// garbage (or a frozen picture) until the next periodic keyframe.
fn request_keyframes(element: &gst::Element) {
    let is_depayloader = element
        .factory()
        .is_some_and(|f| f.name().starts_with("rtp") && f.name().ends_with("depay"));
    if is_depayloader && element.has_property("request-keyframe") {
        element.set_property("request-keyframe", true);
        if element.has_property("wait-for-keyframe") {
            element.set_property("wait-for-keyframe", true);
        }
    }
}

/// The most time between two regular RTCP reports of a stream's session, and so the most time
/// a stale limit on its feedback can last (libwebrtc reports video once a second).
///
/// A receiver's NACKs and keyframe requests leave in "early" RTCP packets, at most one per
/// interval computed from the stream's bitrate (RFC 4585), and rtpsession computes that
/// interval anew only at each regular report. With its default (`rtcp-min-interval` 5 s, a
/// regular report every 2.5-7.5 s) the one made before any media had arrived (from a default
/// 64 kbit/s session: ~0.3-0.6 s) held for up to 7.5 s: when 5 % loss began then, feedback left
/// once every 571 ms instead of every ~26 ms, a NACK came later than the jitterbuffer waits
/// (`latency`), the loss became a keyframe request, that request waited too, and the keyframes
/// lost packets no NACK repaired in time — a 1.8 s freeze (tests/tests/network.rs; UPSTREAM.md:
/// "rtpsession's first feedback interval holds for seconds").
const RTCP_REPORT_INTERVAL: gst::ClockTime = gst::ClockTime::from_seconds(1);

/// Lets a stream's session send its feedback (NACKs, keyframe requests, congestion feedback) as
/// often as its bitrate allows from its second regular report on (see [`RTCP_REPORT_INTERVAL`]).
fn prompt_feedback(element: &gst::Element) {
    if element.factory().is_some_and(|f| f.name() == "rtpsession") {
        element.set_property("rtcp-min-interval", RTCP_REPORT_INTERVAL.nseconds());
    }
}

/// Which players a room event ends.
enum StopMatch {
    Stream(String, String),
    User(String),
    /// The player whose session ended.
    Signaller(RoomSignaller),
    All,
}

impl StopMatch {
    fn applies(&self, key: &PlayerKey, player: &Player) -> bool {
        match self {
            StopMatch::Stream(user, stream) => &key.0 == user && &key.1 == stream,
            StopMatch::User(user) => &key.0 == user,
            StopMatch::Signaller(signaller) => &player.signaller == signaller,
            StopMatch::All => true,
        }
    }
}

/// What a room event means for the players.
enum Change {
    PlayAll(Vec<Participant>),
    Play(String, String),
    Stop(StopMatch),
}

impl Change {
    fn from_event(event: Event) -> Option<Change> {
        Some(match event {
            Event::Room(ServerMessage::State { participants, .. }) => Change::PlayAll(participants),
            Event::Room(ServerMessage::Published { username, stream }) => {
                Change::Play(username, stream.stream)
            }
            Event::Room(ServerMessage::Unpublished { username, stream }) => {
                Change::Stop(StopMatch::Stream(username, stream))
            }
            Event::Room(ServerMessage::Left { username }) => {
                Change::Stop(StopMatch::User(username))
            }
            Event::Status(Status::Reconnecting | Status::Failed) | Event::Fatal(_) => {
                Change::Stop(StopMatch::All)
            }
            _ => return None,
        })
    }
}

/// A username as it appears in pad names: itself when it is already `A-Z a-z 0-9 _ -`, else
/// sanitized plus a short hash of the original, so that `a.b` and `a_b` (both `a_b` once
/// sanitized) get distinct names, the same ones every time. (Stream names are already of the
/// pad alphabet: validate_name.)
pub fn pad_name_part(username: &str) -> String {
    let clean = sanitize(username);
    if clean == username {
        return clean;
    }
    // FNV-1a: tiny, stable across runs and platforms (std's hasher is randomly seeded).
    let hash = username.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    format!("{clean}-{:06x}", hash & 0xff_ffff)
}

/// Pad names keep to `A-Z a-z 0-9 _ -` so that `gst-launch-1.0 r.video_bob` parses ('.' does not).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[glib::object_subclass]
impl ObjectSubclass for RoomSrc {
    const NAME: &'static str = "GstRoomSrc";
    type Type = super::RoomSrc;
    type ParentType = gst::Bin;
}

impl ObjectImpl for RoomSrc {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_suppressed_flags(gst::ElementFlags::SOURCE | gst::ElementFlags::SINK);
        obj.set_element_flags(gst::ElementFlags::SOURCE);
        obj.connect_deep_element_added(|_, _, element| {
            request_keyframes(element);
            prompt_feedback(element);
        });
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = RoomSettings::properties();
            props.extend([
                glib::ParamSpecString::builder("participant")
                    .nick("Participant")
                    .blurb("Play only this participant's streams (default: everyone else in the room)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("latency")
                    .nick("Latency")
                    .blurb("Jitterbuffer latency in milliseconds: lower shows frames sooner, higher absorbs more network jitter")
                    .default_value(DEFAULT_LATENCY_MS)
                    .maximum(10_000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("grace-period")
                    .nick("Grace period")
                    .blurb("Milliseconds a participant's pads outlive its stream (link flap, reconnect, publisher \
                            dropped or left): if the stream comes back in time it continues on the same pads; \
                            else the pads get EOS and are removed. 0: at once")
                    .default_value(DEFAULT_GRACE_PERIOD_MS)
                    .maximum(600_000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("mix")
                    .nick("Mix")
                    .blurb("Mix everyone into one 'video' pad (a labelled grid that reflows) and one 'audio' pad; \
                            both carry black/silence while the room is empty. Set in NULL; cannot be undone")
                    .default_value(DEFAULT_MIX)
                    .build(),
                glib::ParamSpecInt::builder("mix-width")
                    .nick("Mix width")
                    .blurb("Width of the mixed video in pixels")
                    .minimum(16)
                    .maximum(7680)
                    .default_value(DEFAULT_MIX_WIDTH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("mix-height")
                    .nick("Mix height")
                    .blurb("Height of the mixed video in pixels")
                    .minimum(16)
                    .maximum(4320)
                    .default_value(DEFAULT_MIX_HEIGHT)
                    .mutable_ready()
                    .build(),
                gst::ParamSpecFraction::builder("mix-framerate")
                    .nick("Mix framerate")
                    .blurb("Frame rate of the mixed video")
                    .minimum(gst::Fraction::new(1, 1))
                    .maximum(gst::Fraction::new(120, 1))
                    .default_value(DEFAULT_MIX_FRAMERATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder::<Layout>("mix-layout")
                    .nick("Mix layout")
                    .blurb("grid: everyone the same size; speaker: the active speaker (see room-active-speaker) \
                            large above a strip of the others, cutting to a new speaker at most once per 2 s")
                    .default_value(Layout::Grid)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("mix-tiles")
                    .nick("Mix tiles")
                    .blurb("Number of participants' videos in the mix now (notifies when it changes)")
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
            "participant" => settings.participant = value.get().expect("type checked upstream"),
            "latency" => settings.latency_ms = Some(value.get().expect("type checked upstream")),
            "grace-period" => {
                settings.grace_period_ms = value.get().expect("type checked upstream")
            }
            "mix" => {
                drop(settings);
                if value.get::<bool>().expect("type checked upstream") {
                    self.enable_mix();
                }
            }
            "mix-width" => settings.mix_format.width = value.get().expect("type checked upstream"),
            "mix-height" => {
                settings.mix_format.height = value.get().expect("type checked upstream")
            }
            "mix-framerate" => {
                settings.mix_format.framerate = value.get().expect("type checked upstream")
            }
            "mix-layout" => {
                settings.mix_format.layout = value.get().expect("type checked upstream")
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        // The mix lock is never taken under the settings lock (see `RoomSrc`).
        match pspec.name() {
            "mix" => return self.mix.lock().unwrap().is_some().to_value(),
            "mix-tiles" => return (self.mix_tiles() as u32).to_value(),
            _ => {}
        }
        let client = self.client();
        let settings = self.settings.lock().unwrap();
        if let Some(value) = settings.room.get(pspec.name(), client.as_ref()) {
            return value;
        }
        match pspec.name() {
            "participant" => settings.participant.to_value(),
            "latency" => settings.latency_ms().to_value(),
            "grace-period" => settings.grace_period_ms.to_value(),
            "mix-width" => settings.mix_format.width.to_value(),
            "mix-height" => settings.mix_format.height.to_value(),
            "mix-framerate" => settings.mix_format.framerate.to_value(),
            "mix-layout" => settings.mix_format.layout.to_value(),
            _ => unimplemented!(),
        }
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            let mut signals = membership::signals(|value| {
                value
                    .get::<super::RoomSrc>()
                    .ok()
                    .and_then(|src| src.imp().client())
            });
            signals.extend(events::speaker_signals());
            signals
        });
        SIGNALS.as_ref()
    }
}

impl GstObjectImpl for RoomSrc {}

impl ElementImpl for RoomSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Room player",
                "Source/Network/WebRTC",
                "Plays the participants of a gst-room video conference room, one pad per participant",
                "gst-room developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // Per participant (`video_<username>`), and the mix's two pads.
            events::raw_pad_templates(
                gst::PadDirection::Src,
                gst::PadPresence::Sometimes,
                &["video_%s", "audio_%s", "video", "audio"],
            )
        });
        TEMPLATES.as_ref()
    }

    /// EOS (e.g. `gst-launch-1.0 -e` on Ctrl-C) ends every output pad directly: the
    /// webrtcsrc children and the mix's live background sources would not forward it, and a
    /// recording downstream needs it to finalize.
    fn send_event(&self, event: gst::Event) -> bool {
        if event.type_() != gst::EventType::Eos {
            return self.parent_send_event(event);
        }
        gst::info!(CAT, imp = self, "EOS: ending every output pad");
        for pad in self.obj().src_pads() {
            pad.push_event(event.clone());
        }
        true
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            self.start()?;
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady
            || (result.is_err() && transition == gst::StateChange::ReadyToPaused)
        {
            self.stop();
        }
        match (transition, result?) {
            // Live: no preroll, frames come only in PLAYING.
            (gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused, _) => {
                Ok(gst::StateChangeSuccess::NoPreroll)
            }
            (_, success) => Ok(success),
        }
    }
}

impl BinImpl for RoomSrc {
    /// An error inside one player (its webrtcsrc) ends that player, not the pipeline: it is
    /// reported as a warning and the stream is played again if still published, as when its
    /// session ends. A server that carries media (`--media sfu`) closes a session's DTLS
    /// (close_notify) when it ends it or stops, and webrtcbin 1.22 turns that into a flow error
    /// of its transport, which would otherwise stop a gst-launch viewer. An error of a player
    /// already ended (its webrtcsrc going to NULL) is only logged.
    fn handle_message(&self, msg: gst::Message) {
        if let gst::MessageView::Error(err) = msg.view()
            && let Some(signaller) = self.player_of(msg.src())
        {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Failed,
                [
                    "a player failed, playing again if still published: {} ({:?})",
                    err.error(),
                    err.debug()
                ]
            );
            self.on_session_ended(signaller);
            return;
        }
        // A player already ended is stopped and removed after it leaves the players: its
        // webrtcsrc can still fail while going to NULL (webrtcbin's transport, the session's
        // DTLS closed under it). Nothing is playing there any more: not the pipeline's error.
        if let gst::MessageView::Error(err) = msg.view()
            && self.is_within_a_source(msg.src())
        {
            gst::debug!(CAT, imp = self, "an ended player failed: {}", err.error());
            return;
        }
        self.parent_handle_message(msg)
    }
}

impl RoomSrc {
    /// Whether `src` is, or is inside, one of the element's webrtcsrc children (a player's,
    /// current or being removed).
    fn is_within_a_source(&self, src: Option<&gst::Object>) -> bool {
        let Some(src) = src else { return false };
        self.obj().children().iter().any(|child| {
            child
                .downcast_ref::<gst::Element>()
                .and_then(|e| e.factory())
                .is_some_and(|f| f.name() == "webrtcsrc")
                && (src == child || src.has_as_ancestor(child))
        })
    }

    /// The signaller of the player whose webrtcsrc is `src` or contains it.
    fn player_of(&self, src: Option<&gst::Object>) -> Option<RoomSignaller> {
        let src = src?;
        let state = self.state.lock().unwrap();
        state
            .players
            .values()
            .find(|p| src == p.src.upcast_ref::<gst::Object>() || src.has_as_ancestor(&p.src))
            .map(|p| p.signaller.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::{RTCP_REPORT_INTERVAL, pad_name_part};
    use gst::prelude::*;

    #[test]
    fn the_sessions_of_its_streams_report_at_least_once_a_second() {
        gst::init().unwrap();
        let roomsrc = gst::glib::Object::new::<super::super::RoomSrc>();
        // As webrtcsrc's webrtcbin's rtpbin makes it: a bin further down adds the session.
        let rtpbin = gst::Bin::new();
        roomsrc.add(&rtpbin).unwrap();
        let session = gst::ElementFactory::make("rtpsession").build().unwrap();
        let default: u64 = session.property("rtcp-min-interval");
        assert!(default > RTCP_REPORT_INTERVAL.nseconds());
        rtpbin.add(&session).unwrap();
        let interval: u64 = session.property("rtcp-min-interval");
        assert_eq!(interval, RTCP_REPORT_INTERVAL.nseconds());
    }

    /// A player's webrtcsrc that fails while it is being removed (no longer among the players)
    /// does not fail the pipeline; an error of anything else in the element still does.
    #[test]
    fn an_ended_players_error_stays_inside_other_errors_reach_the_pipeline() {
        crate::app::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let roomsrc = gst::glib::Object::new::<super::super::RoomSrc>();
        pipeline.add(&roomsrc).unwrap();
        let bus = pipeline.bus().unwrap();
        let fail = |element: &gst::Element| {
            let error = gst::message::Error::builder(gst::StreamError::Failed, "transport closed")
                .src(element)
                .build();
            element.post_message(error).unwrap();
        };
        let source = gst::ElementFactory::make("webrtcsrc").build().unwrap();
        roomsrc.add(&source).unwrap();
        fail(&source);
        assert!(bus.pop_filtered(&[gst::MessageType::Error]).is_none());
        let other = gst::ElementFactory::make("identity").build().unwrap();
        roomsrc.add(&other).unwrap();
        fail(&other);
        assert!(bus.pop_filtered(&[gst::MessageType::Error]).is_some());
    }

    #[test]
    fn colliding_usernames_get_distinct_stable_pad_names() {
        assert_eq!(pad_name_part("a_b"), "a_b");
        assert_eq!(pad_name_part("bob"), "bob");
        let dotted = pad_name_part("a.b");
        assert!(
            dotted.starts_with("a_b-") && dotted.len() == "a_b-".len() + 6,
            "{dotted}"
        );
        assert_ne!(dotted, pad_name_part("a_b"));
        assert_ne!(dotted, pad_name_part("a-b"));
        assert_eq!(dotted, pad_name_part("a.b"), "the same every time");
        assert!(
            dotted
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }
}
