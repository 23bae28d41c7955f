//! Clients of the original room API (Flashphoner Web Call Server's Web SDK, `roomApi`): their
//! WebSocket protocol ([`room_protocol::wcs`]) translated into the native one, at one
//! boundary. A [`Translator`] belongs to one connection; it turns each frame the SDK sends into
//! native [`ClientMessage`]s (applied by the connection exactly as a native client's: limits,
//! token check at join, the same room rules) and each native [`ServerMessage`] the hub queues
//! for the connection into SDK frames. There is no second room here: only the bookkeeping the
//! two protocols need to meet (which `sendData` an answer belongs to, which stream a
//! `mediaSessionId` is, the offer a publication or playback holds until its session exists).
//!
//! Media always goes through the server (`--media sfu`): `publishStream` becomes `publish`,
//! and the client's offer goes into the ingest session the rules then ask for;
//! `playStream` becomes `play`, and its offer goes into the forwarded session (the connection is
//! registered as a client that offers the sessions it views, see
//! [`crate::rooms::Rooms::connect_offering`]). The engine's answer comes back as
//! `setRemoteSDP`, followed by PUBLISHING / PLAYING. In mesh rooms publish and play are
//! refused with a reason ([`MESH_REFUSED`]): the SDK cannot be the offered-to end of a
//! peer-to-peer session.
//!
//! Stream names: the SDK names a room publication `ROOM-LOGIN-XXXX` (a 4-character UUID
//! prefix, then `-NAME` if the page gave one). The native stream name is what follows
//! `ROOM-LOGIN-` (the whole name when it does not start so), and others' native streams are
//! shown to the SDK as `ROOM-PARTICIPANT-STREAM`; so a page's publication keeps its name both
//! ways, and `playStream` finds a stream by the name the room events gave it (a table, not by
//! splitting: names may contain `-`).
//!
//! Not carried: mute events to viewers (`muted` has no SDK frame the example uses), ICE
//! servers and TURN credentials (the SDK takes its ICE configuration from the page; the
//! server's answer carries its own candidates), recording (`record` is refused with
//! [`RECORD_REFUSED`]).

use std::collections::{HashMap, VecDeque};

use room_protocol::wcs::{
    self, AppData, Chat, DataStatus, DataStatusKind, Failure, RoomCommand, RoomEvent,
    RoomEventPayload, StateEntry, StreamOf, StreamRequest, StreamStatus, StreamStatusKind,
    UserData,
};
use room_protocol::{
    ClientMessage, SERVER_VIEWER, SdpType, Secret, ServerMessage, SessionDescription, WithId,
};

use crate::rooms::MediaMode;

/// Why a publish or play is refused in a mesh room.
pub const MESH_REFUSED: &str = "this gst-room server carries no media (--media mesh): clients \
     of the original room API publish and play through the server, start it with --media sfu";
/// Why a join or publication asking for a recording is refused.
pub const RECORD_REFUSED: &str = "recording is not supported by this server: untick Record \
     (gst-room records a room with a roomsrc pipeline on any machine)";
/// Publications and playbacks one connection may hold or ask for at a time (the room rules
/// bound them again; this bounds what the translator keeps).
const MAX_MEDIA: usize = 32;
/// Room commands waiting for their answer; more are refused at once.
const MAX_PENDING: usize = 64;
/// The longest `mediaSessionId` / `operationId` kept (the SDK sends UUIDs).
const MAX_ID_CHARS: usize = 64;

/// What one input produced: frames for the client, native requests to apply (in order), and
/// whether the connection must end after the frames.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    pub frames: Vec<wcs::ServerMessage>,
    pub requests: Vec<WithId<ClientMessage>>,
    pub close: bool,
}

/// A native request the translator waits on, by its request id.
#[derive(Debug)]
enum Pending {
    Join { operation: String },
    Chat { operation: String },
    Publish { media: String },
    Play { media: String },
}

/// An own publication.
#[derive(Debug)]
struct Publication {
    media: String,
    /// The SDK's name.
    name: String,
    /// The native stream name.
    stream: String,
    /// The client's offer, until the ingest session exists.
    offer: Option<String>,
    session: Option<String>,
    audio_muted: bool,
    video_muted: bool,
}

/// A playback of someone's stream.
#[derive(Debug)]
struct Playback {
    media: String,
    name: String,
    participant: String,
    stream: String,
    offer: Option<String>,
    session: Option<String>,
}

/// The translation state of one connection (see the module doc).
#[derive(Debug)]
pub struct Translator {
    media_mode: MediaMode,
    session_id: String,
    /// A token from the WebSocket URL (`?token=`), used when `connection` carries none.
    url_token: Option<Secret>,
    login: Option<String>,
    token: Option<Secret>,
    /// The room joined (after STATE), or being joined.
    room: Option<String>,
    joined: bool,
    next_id: u64,
    pending: HashMap<String, Pending>,
    /// Chat requests waiting for their echo, oldest first.
    chats: VecDeque<String>,
    /// The room's streams: the SDK's name → (participant, native stream).
    streams: HashMap<String, (String, String)>,
    publications: Vec<Publication>,
    playbacks: Vec<Playback>,
}

impl Translator {
    /// A fresh connection (`session_id` names it in `getUserData`) to a server whose media
    /// goes `media_mode`.
    pub fn new(media_mode: MediaMode, session_id: String, url_token: Option<Secret>) -> Self {
        Translator {
            media_mode,
            session_id,
            url_token,
            login: None,
            token: None,
            room: None,
            joined: false,
            next_id: 1,
            pending: HashMap::new(),
            chats: VecDeque::new(),
            streams: HashMap::new(),
            publications: Vec::new(),
            playbacks: Vec::new(),
        }
    }

    /// A frame the SDK sent.
    pub fn from_client(&mut self, msg: wcs::ClientMessage) -> Output {
        use wcs::ClientMessage as C;
        let mut out = Output::default();
        match msg {
            C::Connection((connection,)) => self.connection(connection, &mut out),
            C::Ping(_) => out.frames.push(wcs::ServerMessage::Pong((None,))),
            C::Pong(_) => {}
            _ if self.login.is_none() => fail(&mut out, msg.name(), "send connection first"),
            C::SendData((data,)) => self.send_data(data, &mut out),
            C::PublishStream((request,)) => self.publish(request, &mut out),
            C::PlayStream((request,)) => self.play(request, &mut out),
            C::UnPublishStream((request,)) => self.unpublish(request, &mut out),
            C::StopStream((request,)) => self.stop(request, &mut out),
            C::SendStreamEvent((event,)) => self.stream_event(event, &mut out),
        }
        out
    }

    /// A native message the hub queued for this connection (with the request id it echoes).
    pub fn from_server(&mut self, msg: WithId<ServerMessage>) -> Output {
        let mut out = Output::default();
        let WithId { id, msg } = msg;
        match msg {
            ServerMessage::State {
                room, participants, ..
            } => {
                let operation = self.take_join(id.as_deref());
                self.joined = true;
                self.room = Some(room.clone());
                let mut entries = Vec::new();
                for p in participants {
                    if p.streams.is_empty() {
                        entries.push(StateEntry::Participant(p.username.clone()));
                    }
                    for s in p.streams {
                        let name = self.add_stream(&p.username, &s.stream);
                        entries.push(StateEntry::Stream(StreamOf {
                            login: p.username.clone(),
                            name,
                        }));
                    }
                }
                if let Some(operation) = operation {
                    out.frames.push(data_status(operation, None));
                }
                self.room_event(RoomEvent::State(entries), &mut out);
            }
            ServerMessage::Failed { detail, .. } => {
                let operation = self.take_join(id.as_deref());
                self.room = None;
                if let Some(operation) = operation {
                    out.frames.push(data_status(operation, Some(detail)));
                }
            }
            ServerMessage::Joined { username } => {
                self.room_event(RoomEvent::Joined(username), &mut out)
            }
            ServerMessage::Left { username } => {
                self.streams.retain(|_, (p, _)| *p != username);
                self.room_event(RoomEvent::Left(username), &mut out)
            }
            ServerMessage::Published { username, stream } => {
                let name = self.add_stream(&username, &stream.stream);
                let login = username;
                self.room_event(RoomEvent::Published(StreamOf { login, name }), &mut out)
            }
            ServerMessage::Unpublished { username, stream } => {
                let name = self.wcs_name(&username, &stream);
                self.streams.remove(&name);
                let login = username;
                self.room_event(RoomEvent::Unpublished(StreamOf { login, name }), &mut out)
            }
            ServerMessage::Message { from, text, .. } => {
                if Some(&from) == self.login.as_ref() {
                    // The echo of an own message: the SDK shows its own text itself.
                    if let Some(Pending::Chat { operation }) = self
                        .chats
                        .pop_front()
                        .and_then(|id| self.pending.remove(&id))
                    {
                        out.frames.push(data_status(operation, None));
                    }
                } else {
                    self.room_event(RoomEvent::Message(Chat { from, text }), &mut out)
                }
            }
            ServerMessage::SessionRequest {
                session,
                stream,
                viewer,
            } => self.session_request(session, stream, viewer, &mut out),
            ServerMessage::SessionStarted {
                session,
                participant,
                stream,
            } => self.session_started(session, participant, stream, &mut out),
            ServerMessage::Sdp {
                session,
                description,
            } => self.described(session, description, &mut out),
            ServerMessage::SessionEnded { session, reason } => {
                self.session_ended(&session, reason, &mut out)
            }
            ServerMessage::Error { message, .. } => self.refused(id, message, &mut out),
            // Nothing the SDK has a frame for: the connection's own welcome, ICE (the server's
            // candidates are in its answer), others' mute state, who is speaking.
            ServerMessage::Welcome { .. }
            | ServerMessage::Ice { .. }
            | ServerMessage::Muted { .. }
            | ServerMessage::ActiveSpeaker { .. } => {}
        }
        out
    }

    // ---- from the client ----

    fn connection(&mut self, connection: wcs::Connection, out: &mut Output) {
        if self.login.is_some() {
            return fail(out, "connection", "already connected");
        }
        if let Some(app) = connection
            .app_key
            .as_deref()
            .filter(|a| *a != wcs::ROOM_APP_KEY)
        {
            let why = format!(
                "only the room API is served here (appKey {}), not {}",
                wcs::ROOM_APP_KEY,
                room_protocol::excerpt(app)
            );
            fail(out, "connection", &why);
            out.close = true;
            return;
        }
        let custom = connection.custom.unwrap_or_default();
        let Some(login) = custom.login.filter(|l| !l.is_empty()) else {
            fail(
                out,
                "connection",
                "connection.custom.login (the username) is missing",
            );
            out.close = true;
            return;
        };
        // The name is checked by the room rules at join, with the reason the page shows.
        self.login = Some(login.clone());
        self.token = custom.token.or_else(|| self.url_token.take());
        out.frames.push(wcs::ServerMessage::GetUserData((UserData {
            app_key: wcs::ROOM_APP_KEY.to_owned(),
            login,
            session_id: self.session_id.clone(),
        },)));
    }

    fn send_data(&mut self, data: wcs::SendData, out: &mut Output) {
        let operation = data.operation_id;
        if operation.chars().count() > MAX_ID_CHARS {
            return fail(out, "sendData", "operationId is too long");
        }
        if self.pending.len() >= MAX_PENDING {
            let why = "too many room commands waiting for an answer".to_owned();
            return out.frames.push(data_status(operation, Some(why)));
        }
        match data.payload {
            RoomCommand::Join { name, record } => {
                if record == Some(true) {
                    return out
                        .frames
                        .push(data_status(operation, Some(RECORD_REFUSED.into())));
                }
                if let Some(room) = &self.room {
                    let why = format!("already in room {room} (leave first)");
                    return out.frames.push(data_status(operation, Some(why)));
                }
                self.room = Some(name.clone());
                let join = ClientMessage::Join {
                    room: name,
                    username: self.login.clone().unwrap_or_default(),
                    token: self.token.clone(),
                };
                self.request(join, Pending::Join { operation }, out);
            }
            RoomCommand::Leave { name } => {
                if self.joined_room() != Some(name.as_str()) {
                    let why = format!("not in room {}", room_protocol::excerpt(&name));
                    return out.frames.push(data_status(operation, Some(why)));
                }
                out.requests.push(plain(ClientMessage::Leave {}));
                self.forget_room();
                out.frames.push(data_status(operation, None));
            }
            RoomCommand::SendMessage { to, text, .. } => {
                if !self.joined {
                    let why = "join a room first".to_owned();
                    return out.frames.push(data_status(operation, Some(why)));
                }
                let chat = ClientMessage::Message { to: Some(to), text };
                let id = self.request(chat, Pending::Chat { operation }, out);
                self.chats.push_back(id);
            }
        }
    }

    fn publish(&mut self, request: StreamRequest, out: &mut Output) {
        let StreamRequest {
            media_session_id: media,
            name,
            sdp,
            has_audio,
            has_video,
            record,
        } = request;
        let refused = if let Err(why) = self.check_media(&media) {
            Some(why)
        } else if record == Some(true) {
            Some(RECORD_REFUSED.to_owned())
        } else if sdp.is_none() {
            Some("publishStream needs the client's SDP offer".to_owned())
        } else {
            None
        };
        if let Some(why) = refused {
            return stream_status(out, media, name, true, StreamStatusKind::Failed, Some(why));
        }
        let stream = self.native_stream_name(&name);
        let publish = ClientMessage::Publish {
            stream: stream.clone(),
            audio: has_audio.unwrap_or(true),
            video: has_video.unwrap_or(true),
        };
        self.publications.push(Publication {
            media: media.clone(),
            name,
            stream,
            offer: sdp,
            session: None,
            audio_muted: false,
            video_muted: false,
        });
        self.request(publish, Pending::Publish { media }, out);
    }

    fn play(&mut self, request: StreamRequest, out: &mut Output) {
        let StreamRequest {
            media_session_id: media,
            name,
            sdp,
            ..
        } = request;
        let found = self.streams.get(&name).cloned();
        let refused = if let Err(why) = self.check_media(&media) {
            Some(why)
        } else if sdp.is_none() {
            Some("playStream needs the client's SDP offer".to_owned())
        } else if found.is_none() {
            let name = room_protocol::excerpt(&name);
            Some(format!("no stream {name} is published in this room"))
        } else {
            None
        };
        let (Some((participant, stream)), None) = (found, refused.clone()) else {
            let why = refused.unwrap_or_default();
            return stream_status(out, media, name, false, StreamStatusKind::Failed, Some(why));
        };
        let play = ClientMessage::Play {
            participant: participant.clone(),
            stream: stream.clone(),
        };
        self.playbacks.push(Playback {
            media: media.clone(),
            name,
            participant,
            stream,
            offer: sdp,
            session: None,
        });
        self.request(play, Pending::Play { media }, out);
    }

    fn unpublish(&mut self, request: StreamRequest, out: &mut Output) {
        let at = self
            .publications
            .iter()
            .position(|p| p.media == request.media_session_id);
        if let Some(publication) = at.map(|at| self.publications.remove(at)) {
            out.requests.push(plain(ClientMessage::Unpublish {
                stream: publication.stream,
            }));
        }
        // Stopping what is gone already (the room was left) is done too.
        let (media, name) = (request.media_session_id, request.name);
        stream_status(out, media, name, true, StreamStatusKind::Unpublished, None);
    }

    fn stop(&mut self, request: StreamRequest, out: &mut Output) {
        let at = self
            .playbacks
            .iter()
            .position(|p| p.media == request.media_session_id);
        // A playback whose session has not started yet is stopped when it does (see
        // `session_started`).
        let session = at.and_then(|at| self.playbacks.remove(at).session);
        if let Some(session) = session {
            out.requests.push(plain(ClientMessage::Stop { session }));
        }
        let (media, name) = (request.media_session_id, request.name);
        stream_status(out, media, name, false, StreamStatusKind::Stopped, None);
    }

    fn stream_event(&mut self, event: wcs::StreamEvent, out: &mut Output) {
        let Some(p) = self
            .publications
            .iter_mut()
            .find(|p| p.media == event.media_session_id)
        else {
            return fail(
                out,
                "sendStreamEvent",
                "no publication with that mediaSessionId",
            );
        };
        match event.kind.as_str() {
            "audioMuted" => p.audio_muted = true,
            "audioUnmuted" => p.audio_muted = false,
            "videoMuted" => p.video_muted = true,
            "videoUnmuted" => p.video_muted = false,
            other => {
                let why = format!(
                    "stream event {} is not supported",
                    room_protocol::excerpt(other)
                );
                return fail(out, "sendStreamEvent", &why);
            }
        }
        out.requests.push(plain(ClientMessage::Mute {
            stream: p.stream.clone(),
            audio_muted: p.audio_muted,
            video_muted: p.video_muted,
        }));
    }

    // ---- from the room ----

    fn session_request(
        &mut self,
        session: String,
        stream: String,
        viewer: String,
        out: &mut Output,
    ) {
        let publication = self
            .publications
            .iter_mut()
            .find(|p| p.stream == stream && p.session.is_none())
            .filter(|_| viewer == SERVER_VIEWER);
        match publication.and_then(|p| {
            p.session = Some(session.clone());
            p.offer.take()
        }) {
            Some(offer) => out.requests.push(offer_of(session, offer)),
            // A peer-to-peer viewer (never asked: publish is refused in mesh rooms), or a new
            // ingest the client has no offer for (the last one failed): the session ends.
            None => out.requests.push(plain(ClientMessage::Stop { session })),
        }
    }

    fn session_started(
        &mut self,
        session: String,
        participant: String,
        stream: String,
        out: &mut Output,
    ) {
        let playback = self
            .playbacks
            .iter_mut()
            .find(|p| p.participant == participant && p.stream == stream && p.session.is_none());
        match playback.and_then(|p| {
            p.session = Some(session.clone());
            p.offer.take()
        }) {
            Some(offer) => out.requests.push(offer_of(session, offer)),
            // Stopped before it started.
            None => out.requests.push(plain(ClientMessage::Stop { session })),
        }
    }

    fn described(&mut self, session: String, description: SessionDescription, out: &mut Output) {
        let own = Some(&session);
        let (media, name, published, status) =
            if let Some(p) = self.publications.iter().find(|p| p.session.as_ref() == own) {
                (
                    p.media.clone(),
                    p.name.clone(),
                    true,
                    StreamStatusKind::Publishing,
                )
            } else if let Some(p) = self.playbacks.iter().find(|p| p.session.as_ref() == own) {
                (
                    p.media.clone(),
                    p.name.clone(),
                    false,
                    StreamStatusKind::Playing,
                )
            } else {
                return;
            };
        out.frames.push(wcs::ServerMessage::SetRemoteSdp((
            media.clone(),
            description.sdp,
        )));
        stream_status(out, media, name, published, status, None);
    }

    fn session_ended(&mut self, session: &str, reason: String, out: &mut Output) {
        let own = |s: &Option<String>| s.as_deref() == Some(session);
        if let Some(at) = self.publications.iter().position(|p| own(&p.session)) {
            // The ingest is gone: the SDK's publication failed, and the stream is withdrawn.
            let p = self.publications.remove(at);
            out.requests
                .push(plain(ClientMessage::Unpublish { stream: p.stream }));
            stream_status(
                out,
                p.media,
                p.name,
                true,
                StreamStatusKind::Failed,
                Some(reason),
            );
        } else if let Some(at) = self.playbacks.iter().position(|p| own(&p.session)) {
            let p = self.playbacks.remove(at);
            stream_status(
                out,
                p.media,
                p.name,
                false,
                StreamStatusKind::Stopped,
                Some(reason),
            );
        }
    }

    fn refused(&mut self, id: Option<String>, message: String, out: &mut Output) {
        match id.and_then(|id| self.pending.remove(&id).map(|p| (id, p))) {
            Some((_, Pending::Join { operation })) => {
                self.room = None;
                out.frames.push(data_status(operation, Some(message)));
            }
            Some((id, Pending::Chat { operation })) => {
                self.chats.retain(|c| *c != id);
                out.frames.push(data_status(operation, Some(message)));
            }
            Some((_, Pending::Publish { media })) => {
                if let Some(at) = self.publications.iter().position(|p| p.media == media) {
                    let p = self.publications.remove(at);
                    let failed = StreamStatusKind::Failed;
                    stream_status(out, p.media, p.name, true, failed, Some(message));
                }
            }
            Some((_, Pending::Play { media })) => {
                if let Some(at) = self.playbacks.iter().position(|p| p.media == media) {
                    let p = self.playbacks.remove(at);
                    let failed = StreamStatusKind::Failed;
                    stream_status(out, p.media, p.name, false, failed, Some(message));
                }
            }
            None => fail(out, "", &message),
        }
    }

    // ---- helpers ----

    /// Queues `msg` with a new request id that maps to `pending`; returns the id.
    fn request(&mut self, msg: ClientMessage, pending: Pending, out: &mut Output) -> String {
        let id = format!("wcs{}", self.next_id);
        self.next_id += 1;
        self.pending.insert(id.clone(), pending);
        out.requests.push(WithId {
            id: Some(id.clone()),
            msg,
        });
        id
    }

    /// The join operation `id` answers (`state` and `failed` echo the join's id; a join the
    /// cluster forwarded comes back without it, so the one pending join is taken then).
    fn take_join(&mut self, id: Option<&str>) -> Option<String> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => self
                .pending
                .iter()
                .find(|(_, p)| matches!(p, Pending::Join { .. }))
                .map(|(id, _)| id.clone())?,
        };
        match self.pending.remove(&id) {
            Some(Pending::Join { operation }) => Some(operation),
            Some(other) => {
                self.pending.insert(id, other);
                None
            }
            None => None,
        }
    }

    /// Whether a new publication or playback `media` may start.
    fn check_media(&self, media: &str) -> Result<(), String> {
        if !self.joined {
            return Err("join a room first".into());
        }
        if self.media_mode == MediaMode::Mesh {
            return Err(MESH_REFUSED.into());
        }
        if media.is_empty() || media.chars().count() > MAX_ID_CHARS {
            return Err(format!(
                "mediaSessionId must have 1 to {MAX_ID_CHARS} characters"
            ));
        }
        let taken = self.publications.iter().map(|p| &p.media);
        if taken
            .chain(self.playbacks.iter().map(|p| &p.media))
            .any(|m| m == media)
        {
            return Err("mediaSessionId is in use".into());
        }
        if self.publications.len() + self.playbacks.len() >= MAX_MEDIA {
            return Err(format!(
                "at most {MAX_MEDIA} publications and playbacks at a time"
            ));
        }
        Ok(())
    }

    fn joined_room(&self) -> Option<&str> {
        self.room.as_deref().filter(|_| self.joined)
    }

    /// After `leave`: the room, its streams and the own media are forgotten (the rules end the
    /// sessions; the SDK stops its streams itself).
    fn forget_room(&mut self) {
        self.room = None;
        self.joined = false;
        self.streams.clear();
        self.publications.clear();
        self.playbacks.clear();
    }

    fn room_event(&self, event: RoomEvent, out: &mut Output) {
        let room_name = self.room.clone().unwrap_or_default();
        out.frames.push(wcs::ServerMessage::OnDataEvent((AppData {
            payload: RoomEventPayload { room_name, event },
        },)));
    }

    /// The SDK's name of `participant`'s `stream`, recorded for `playStream`.
    fn add_stream(&mut self, participant: &str, stream: &str) -> String {
        let name = self.wcs_name(participant, stream);
        let entry = (participant.to_owned(), stream.to_owned());
        self.streams.insert(name.clone(), entry);
        name
    }

    fn wcs_name(&self, participant: &str, stream: &str) -> String {
        let room = self.room.as_deref().unwrap_or_default();
        format!("{room}-{participant}-{stream}")
    }

    /// The native name of an own publication the SDK calls `name` (see the module doc).
    fn native_stream_name(&self, name: &str) -> String {
        let room = self.room.as_deref().unwrap_or_default();
        let login = self.login.as_deref().unwrap_or_default();
        let prefix = format!("{room}-{login}-");
        name.strip_prefix(&prefix).unwrap_or(name).to_owned()
    }
}

fn plain(msg: ClientMessage) -> WithId<ClientMessage> {
    WithId { id: None, msg }
}

fn offer_of(session: String, sdp: String) -> WithId<ClientMessage> {
    plain(ClientMessage::Sdp {
        session,
        description: SessionDescription {
            kind: SdpType::Offer,
            sdp,
        },
    })
}

fn data_status(operation: String, failed: Option<String>) -> wcs::ServerMessage {
    let status = match failed {
        None => DataStatusKind::Accepted,
        Some(_) => DataStatusKind::Failed,
    };
    wcs::ServerMessage::DataStatusEvent((DataStatus {
        operation_id: operation,
        status,
        info: failed,
    },))
}

fn stream_status(
    out: &mut Output,
    media: String,
    name: String,
    published: bool,
    status: StreamStatusKind,
    info: Option<String>,
) {
    out.frames
        .push(wcs::ServerMessage::NotifyStreamStatusEvent((
            StreamStatus {
                media_session_id: room_protocol::excerpt(&media),
                name: room_protocol::excerpt(&name),
                published,
                status,
                info,
            },
        )));
}

/// A `fail` frame for the refused `api_method` (empty: none).
fn fail(out: &mut Output, api_method: &str, why: &str) {
    let api_method = (!api_method.is_empty()).then(|| api_method.to_owned());
    out.frames.push(wcs::ServerMessage::Fail((Failure {
        api_method,
        info: why.to_owned(),
    },)));
}

#[cfg(test)]
mod tests {
    //! The translation without sockets: SDK frames in, native requests and SDK frames out.
    use super::*;
    use room_protocol::{Participant, StreamInfo};

    fn client(json: &str) -> wcs::ClientMessage {
        serde_json::from_str(json).unwrap()
    }

    fn server(msg: ServerMessage, id: Option<&str>) -> WithId<ServerMessage> {
        WithId {
            id: id.map(str::to_owned),
            msg,
        }
    }

    fn names(out: &Output) -> Vec<String> {
        out.frames
            .iter()
            .map(|f| {
                serde_json::to_value(f).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Connected as alice and joined to room "r" where bob publishes "cam".
    fn joined(mode: MediaMode) -> Translator {
        let mut t = Translator::new(mode, "wcs-1".into(), None);
        let out = t.from_client(client(
            r#"{"message":"connection","data":[{"appKey":"roomApp","custom":{"login":"alice","token":"tok"}}]}"#,
        ));
        assert_eq!(names(&out), ["getUserData"]);
        let out = t.from_client(client(
            r#"{"message":"sendData","data":[{"operationId":"op1","payload":{"command":"join","options":{"name":"r","record":false}}}]}"#,
        ));
        assert_eq!(
            out.requests,
            [WithId {
                id: Some("wcs1".into()),
                msg: ClientMessage::Join {
                    room: "r".into(),
                    username: "alice".into(),
                    token: Some("tok".into())
                }
            }]
        );
        let state = ServerMessage::State {
            room: "r".into(),
            username: "alice".into(),
            capacity: 3,
            participants: vec![Participant {
                username: "bob".into(),
                streams: vec![StreamInfo {
                    stream: "cam".into(),
                    audio: true,
                    video: true,
                    audio_muted: false,
                    video_muted: false,
                }],
            }],
            ice_servers: Vec::new(),
        };
        let out = t.from_server(server(state, Some("wcs1")));
        assert_eq!(
            serde_json::to_value(&out.frames).unwrap(),
            serde_json::json!([
                {"message": "DataStatusEvent", "data": [{"operationId": "op1", "status": "ACCEPTED"}]},
                {"message": "OnDataEvent", "data": [{"payload": {"roomName": "r", "name": "STATE",
                    "info": [{"login": "bob", "name": "r-bob-cam"}]}}]}
            ])
        );
        t
    }

    #[test]
    fn publish_and_play_carry_the_clients_offers_and_the_engines_answers() {
        let mut t = joined(MediaMode::Sfu);
        let out = t.from_client(client(
            r#"{"message":"publishStream","data":[{"mediaSessionId":"m1","name":"r-alice-ab12","sdp":"v=0 pub","hasAudio":true,"hasVideo":true}]}"#,
        ));
        assert!(out.frames.is_empty());
        assert!(
            matches!(&out.requests[..], [WithId { msg: ClientMessage::Publish { stream, .. }, .. }] if stream == "ab12")
        );
        let request = ServerMessage::SessionRequest {
            session: "s1".into(),
            stream: "ab12".into(),
            viewer: SERVER_VIEWER.into(),
        };
        let out = t.from_server(server(request, None));
        assert!(
            matches!(&out.requests[..], [WithId { msg: ClientMessage::Sdp { session, description }, .. }]
            if session == "s1" && description.sdp == "v=0 pub" && description.kind == SdpType::Offer)
        );
        let answer = |session: &str, sdp: &str| ServerMessage::Sdp {
            session: session.into(),
            description: SessionDescription {
                kind: SdpType::Answer,
                sdp: sdp.into(),
            },
        };
        let out = t.from_server(server(answer("s1", "v=0 a1"), None));
        assert_eq!(names(&out), ["setRemoteSDP", "notifyStreamStatusEvent"]);
        assert_eq!(
            serde_json::to_value(&out.frames[1]).unwrap()["data"][0]["status"],
            "PUBLISHING"
        );

        let out = t.from_client(client(
            r#"{"message":"playStream","data":[{"mediaSessionId":"m2","name":"r-bob-cam","sdp":"v=0 play"}]}"#,
        ));
        assert!(
            matches!(&out.requests[..], [WithId { msg: ClientMessage::Play { participant, stream }, .. }]
            if participant == "bob" && stream == "cam")
        );
        let started = ServerMessage::SessionStarted {
            session: "s2".into(),
            participant: "bob".into(),
            stream: "cam".into(),
        };
        let out = t.from_server(server(started, None));
        assert!(
            matches!(&out.requests[..], [WithId { msg: ClientMessage::Sdp { description, .. }, .. }]
            if description.sdp == "v=0 play")
        );
        let out = t.from_server(server(answer("s2", "v=0 a2"), None));
        assert_eq!(
            serde_json::to_value(&out.frames).unwrap()[0],
            serde_json::json!({"message": "setRemoteSDP", "data": ["m2", "v=0 a2"]})
        );
        // Mute, then the publisher's ingest is lost: FAILED, and the stream is withdrawn.
        let out = t.from_client(client(
            r#"{"message":"sendStreamEvent","data":[{"mediaSessionId":"m1","type":"videoMuted"}]}"#,
        ));
        assert!(matches!(
            &out.requests[..],
            [WithId {
                msg: ClientMessage::Mute {
                    video_muted: true,
                    audio_muted: false,
                    ..
                },
                ..
            }]
        ));
        let ended = ServerMessage::SessionEnded {
            session: "s1".into(),
            reason: "media lost".into(),
        };
        let out = t.from_server(server(ended, None));
        assert!(
            matches!(&out.requests[..], [WithId { msg: ClientMessage::Unpublish { stream }, .. }] if stream == "ab12")
        );
        assert_eq!(
            serde_json::to_value(&out.frames[0]).unwrap()["data"][0]["status"],
            "FAILED"
        );
    }

    #[test]
    fn refusals_reach_the_operation_or_stream_that_caused_them() {
        let mut t = joined(MediaMode::Mesh);
        let out = t.from_client(client(
            r#"{"message":"publishStream","data":[{"mediaSessionId":"m1","name":"x","sdp":"v=0"}]}"#,
        ));
        assert!(out.requests.is_empty());
        let status = serde_json::to_value(&out.frames[0]).unwrap();
        assert_eq!(status["data"][0]["status"], "FAILED");
        assert_eq!(status["data"][0]["info"], MESH_REFUSED);
        // A chat refused by the rules (with the request's id) fails its operation; an echo
        // accepts the next one.
        let chat = |op: &str| {
            client(&format!(
                r#"{{"message":"sendData","data":[{{"operationId":"{op}","payload":{{"command":"sendMessage","options":{{"roomConfig":{{"name":"r"}},"to":"bob","text":"hi"}}}}}}]}}"#
            ))
        };
        let first = t.from_client(chat("c1")).requests[0].id.clone();
        t.from_client(chat("c2"));
        let error = ServerMessage::Error {
            code: room_protocol::ErrorCode::RateLimited,
            message: "slow down".into(),
        };
        let out = t.from_server(server(error, first.as_deref()));
        assert_eq!(
            serde_json::to_value(&out.frames[0]).unwrap()["data"][0],
            serde_json::json!({"operationId": "c1", "status": "FAILED", "info": "slow down"})
        );
        let echo = ServerMessage::Message {
            from: "alice".into(),
            to: Some("bob".into()),
            text: "hi".into(),
            ts: 1,
        };
        let out = t.from_server(server(echo, None));
        assert_eq!(
            serde_json::to_value(&out.frames[0]).unwrap()["data"][0]["operationId"],
            "c2"
        );
        // Recording is refused, a second join too.
        let out = t.from_client(client(
            r#"{"message":"sendData","data":[{"operationId":"j2","payload":{"command":"join","options":{"name":"s","record":true}}}]}"#,
        ));
        assert!(out.requests.is_empty());
        assert_eq!(
            serde_json::to_value(&out.frames[0]).unwrap()["data"][0]["info"],
            RECORD_REFUSED
        );
    }

    #[test]
    fn a_refused_join_answers_failed_and_only_the_room_api_is_served() {
        let mut t = Translator::new(MediaMode::Sfu, "wcs-1".into(), Some("url-token".into()));
        let out = t.from_client(client(
            r#"{"message":"connection","data":[{"appKey":"defaultApp"}]}"#,
        ));
        assert!(out.close);
        assert_eq!(names(&out), ["fail"]);
        let mut t = Translator::new(MediaMode::Sfu, "wcs-1".into(), Some("url-token".into()));
        t.from_client(client(
            r#"{"message":"connection","data":[{"custom":{"login":"carol"}}]}"#,
        ));
        let out = t.from_client(client(
            r#"{"message":"sendData","data":[{"operationId":"op","payload":{"command":"join","options":{"name":"r"}}}]}"#,
        ));
        assert!(
            matches!(&out.requests[0].msg, ClientMessage::Join { token: Some(token), .. } if token.expose() == "url-token")
        );
        let failed = ServerMessage::Failed {
            reason: room_protocol::FailReason::RoomFull,
            detail: "room r is full (2 of 2)".into(),
        };
        let out = t.from_server(server(failed, out.requests[0].id.as_deref()));
        assert_eq!(
            serde_json::to_value(&out.frames[0]).unwrap()["data"][0],
            serde_json::json!({"operationId": "op", "status": "FAILED", "info": "room r is full (2 of 2)"})
        );
    }
}
