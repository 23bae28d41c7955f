//! The room rules: participants, rooms, streams and sessions, as a state machine with no I/O.
//!
//! Every input — a connection opening, a [`ClientMessage`] from a connection, a connection
//! closing — is a method call that returns the [`Outbox`]: the messages to deliver, each
//! addressed to one connection. The caller ([`crate::hub::Hub`]) holds the lock around the call
//! and the delivery, so every rule here is applied atomically: two joins racing for the last
//! seat are two calls in some order, and the second one finds the room full.
//!
//! Tokens are verified at the edge (`crate::auth`, by the connection); the rules get the
//! verified outcome — the participant's [`Grants`] or why it was refused — in [`Rooms::join`],
//! and enforce the grants on publish, play and chat.
//!
//! Keeping sockets out of this file lets the rules be tested by pushing messages and reading
//! replies (see the tests at the bottom), and keeps each rule in one place.
//!
//! # Media through the server (`--media sfu`)
//!
//! With [`MediaMode::Sfu`] the server is one end of every session, and the rules also say what
//! the media engine must do: each call may queue [`MediaCommand`]s, which the caller takes
//! with [`Rooms::take_media`] and hands to the engine in order. What the engine answers comes
//! back as inputs too ([`Rooms::media_description`], [`Rooms::media_failed`]). The sessions:
//! - a stream's *ingest*: publisher → server, asked for right after `publish` (and again on a
//!   `play` when the stream has none, e.g. after the previous one failed); its `viewer` is
//!   [`SERVER_VIEWER`]. The publisher offers, the engine answers.
//! - a *forwarded* session: server → viewer, made by `play`: the viewer gets `session-started`
//!   and then the engine's offer; it answers. A client that offers its own viewing sessions
//!   (connected with [`Rooms::connect_offering`]: the original room API's clients, whose
//!   `playStream` carries an offer) gets `session-started` alone, sends its offer as the
//!   session's `sdp`, and the engine answers it ([`MediaCommand::SubscribeOffered`]).
//!
//! Clients see the same messages as in a mesh room. An ingest that ends while its stream is
//! published (its publisher stopped it, or the engine lost it) ends the stream's forwarded
//! sessions with it, as a publisher's failed session does in a mesh room: the viewers play
//! again, and that play asks the publisher for a new ingest.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{Grants, Refusal};
use crate::turn::TurnRest;
use room_protocol::{
    ClientMessage, ErrorCode, FailReason, IceServer, MAX_CHAT_BYTES, PROTOCOL_VERSION, Participant,
    SERVER_VIEWER, SdpType, ServerMessage, SessionDescription, StreamInfo, excerpt, validate_name,
    validate_username,
};

/// The server's id of one connection. Assigned by the hub, never reused while the server runs.
pub type PeerId = u64;

/// Messages to deliver, in order, each to one connection.
pub type Outbox = Vec<(PeerId, ServerMessage)>;

/// The rules a server is started with.
#[derive(Debug, Clone)]
pub struct RoomRules {
    /// Most participants per room.
    pub capacity: usize,
    /// Handed to each participant in `state`, once it has joined.
    pub ice_servers: Vec<IceServer>,
    /// When set, each participant also gets a TURN server with credentials minted for it at
    /// join (after `ice_servers`).
    pub turn: Option<TurnRest>,
    /// Most streams one participant publishes at a time; more get `error too-many-streams`.
    /// It also bounds the size of `state` a newcomer receives, and, in SFU rooms, how many
    /// streams of one participant the server carries.
    pub max_streams: usize,
    /// Whether media goes peer to peer or through the server.
    pub media: MediaMode,
}

/// Where media goes (`--media`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaMode {
    /// Peer to peer: each viewer's session is with the publisher; the server carries no media.
    #[default]
    Mesh,
    /// Through the server: each stream is published once to the server (its ingest session),
    /// and each viewer's session is with the server, which forwards the stream.
    Sfu,
}

/// A published stream, as the media engine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef {
    /// The room it is published in.
    pub room: String,
    /// Its publisher's username.
    pub participant: String,
    /// The stream name.
    pub stream: String,
}

/// What the media engine must do (SFU rooms), in the order the rules queue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// The publisher's offer for the ingest `session` of `stream`: answer it (the answer comes
    /// back through [`Rooms::media_description`]).
    Publish {
        session: String,
        stream: StreamRef,
        offer: String,
    },
    /// A viewer's session of `stream`, with its audio and/or video: make the server's offer
    /// (back through [`Rooms::media_description`]).
    Subscribe {
        session: String,
        stream: StreamRef,
        audio: bool,
        video: bool,
    },
    /// A viewer's session of `stream` whose viewer offers (see [`Rooms::connect_offering`]
    /// and [`Rooms::watch`]): answer its offer (back through [`Rooms::media_description`]).
    SubscribeOffered {
        session: String,
        stream: StreamRef,
        offer: String,
    },
    /// The viewer's answer to the server's offer.
    Answer { session: String, answer: String },
    /// An ICE candidate of the session's client end.
    Candidate { session: String, candidate: String },
    /// The session is over: free it.
    Close { session: String },
}

impl MediaCommand {
    /// The session it is about.
    pub fn session(&self) -> &str {
        match self {
            MediaCommand::Publish { session, .. }
            | MediaCommand::Subscribe { session, .. }
            | MediaCommand::SubscribeOffered { session, .. }
            | MediaCommand::Answer { session, .. }
            | MediaCommand::Candidate { session, .. }
            | MediaCommand::Close { session } => session,
        }
    }
}

/// One line of the operators' `/rooms` listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    /// The room name.
    pub room: String,
    /// How many participants are in it.
    pub participants: usize,
    /// Its capacity.
    pub capacity: usize,
}

/// All rooms of one server.
#[derive(Debug)]
pub struct Rooms {
    rules: RoomRules,
    /// Every open connection, joined or not. Created by `connect`, removed by `disconnect`.
    peers: HashMap<PeerId, Peer>,
    /// Rooms by name. Created by the first join, removed when the last participant leaves.
    rooms: HashMap<String, Room>,
    /// WebRTC sessions by id. Created by `play`, removed when either end stops, leaves or drops,
    /// or the stream is unpublished.
    sessions: HashMap<String, Session>,
    /// Source of session ids; ids are never reused, so a late message for an ended session
    /// cannot reach a new one.
    next_session: u64,
    /// What the media engine must do, queued by the inputs since the last [`Rooms::take_media`].
    media: Vec<MediaCommand>,
}

#[derive(Debug, Default)]
struct Peer {
    /// Set while the connection is in a room.
    member: Option<Member>,
    /// The client offers the sessions it views through the server (see
    /// [`Rooms::connect_offering`]).
    offers_to_view: bool,
}

#[derive(Debug)]
struct Member {
    room: String,
    username: String,
    streams: Vec<StreamInfo>,
    /// What its token allows.
    grants: Grants,
}

#[derive(Debug, Default)]
struct Room {
    /// Participants in join order.
    members: Vec<PeerId>,
    /// Who speaks, as the media engine last said (SFU rooms; see [`Rooms::active_speaker`]).
    speaker: Option<String>,
}

/// A WebRTC session: a stream of `publisher` sent to `viewer`. One end may be the server
/// (SFU rooms): an ingest has no viewer, a forwarded session's sending end is the server.
#[derive(Debug, Clone)]
struct Session {
    publisher: PeerId,
    /// The watching participant; `None` for an ingest (the server takes the stream).
    viewer: Option<PeerId>,
    /// The server sends the stream (it forwards the publisher's ingest): the publisher is not
    /// an end of this session.
    forwarded: bool,
    /// The viewer made the offer (a forwarded session of [`Rooms::watch`]); otherwise the
    /// sending end offers.
    viewer_offers: bool,
    stream: String,
}

impl Session {
    /// The participants at its ends: both in a mesh session, one when the server is the other.
    fn client_ends(&self) -> Vec<PeerId> {
        match (self.viewer, self.forwarded) {
            (None, _) => vec![self.publisher],
            (Some(viewer), true) => vec![viewer],
            (Some(viewer), false) => vec![viewer, self.publisher],
        }
    }

    /// Whether the server is one of its ends.
    fn with_server(&self) -> bool {
        self.viewer.is_none() || self.forwarded
    }

    /// Whether it is the ingest of `publisher`'s `stream`.
    fn is_ingest_of(&self, publisher: PeerId, stream: &str) -> bool {
        self.viewer.is_none() && self.publisher == publisher && self.stream == stream
    }
}

/// The other end of a session, seen from one of its participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Peer(PeerId),
    Server,
}

impl Rooms {
    /// No rooms, no connections.
    pub fn new(rules: RoomRules) -> Self {
        Rooms {
            rules,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            sessions: HashMap::new(),
            next_session: 1,
            media: Vec::new(),
        }
    }

    /// What the media engine must do, in order, since the last call (always empty in mesh
    /// rooms).
    pub fn take_media(&mut self) -> Vec<MediaCommand> {
        std::mem::take(&mut self.media)
    }

    /// Numbers the next sessions from `first` on. Nodes sharing rooms (`--redis`) each start
    /// at a random point, so that a node taking a room over does not reuse the ids of sessions
    /// still open between its participants.
    pub fn number_sessions_from(&mut self, first: u64) {
        self.next_session = first;
    }

    /// A connection opened: it gets `welcome`.
    pub fn connect(&mut self, peer: PeerId) -> Outbox {
        self.connect_peer(peer, Peer::default())
    }

    /// A connection opened whose client offers the sessions it views through the server (in
    /// SFU rooms; the original room API's clients): after `session-started` it sends the offer,
    /// the server answers. Everything else is as for [`Rooms::connect`].
    pub fn connect_offering(&mut self, peer: PeerId) -> Outbox {
        let offering = Peer {
            member: None,
            offers_to_view: true,
        };
        self.connect_peer(peer, offering)
    }

    fn connect_peer(&mut self, peer: PeerId, state: Peer) -> Outbox {
        self.peers.insert(peer, state);
        vec![(
            peer,
            ServerMessage::Welcome {
                protocol: PROTOCOL_VERSION,
                participant_id: format!("p{peer}"),
            },
        )]
    }

    /// A connection closed or was dropped: it leaves its room, with nothing sent to it, and
    /// the sessions it watched without being in a room ([`Rooms::watch`]) end.
    pub fn disconnect(&mut self, peer: PeerId) -> Outbox {
        let mut out = self.leave(peer);
        out.extend(self.end_sessions(|s| s.viewer == Some(peer), "viewer gone"));
        out.retain(|(to, _)| *to != peer);
        self.peers.remove(&peer);
        out
    }

    /// Whether `peer` is a known, open connection.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Whether `peer` is in a room.
    pub fn is_joined(&self, peer: PeerId) -> bool {
        self.member(peer).is_some()
    }

    /// Rooms with their participant counts, sorted by name.
    pub fn summary(&self) -> Vec<RoomSummary> {
        let mut list: Vec<_> = self
            .rooms
            .iter()
            .map(|(name, room)| RoomSummary {
                room: name.clone(),
                participants: room.members.len(),
                capacity: self.rules.capacity,
            })
            .collect();
        list.sort_by(|a, b| a.room.cmp(&b.room));
        list
    }

    /// Applies one message from `peer`. Joins go through [`Rooms::join`] with the verified
    /// token; one arriving here (unverified) is refused as unauthorized.
    pub fn handle(&mut self, peer: PeerId, msg: ClientMessage) -> Outbox {
        if !self.peers.contains_key(&peer) {
            return Vec::new();
        }
        let result = match msg {
            ClientMessage::Join { room, username, .. } => {
                let unverified = Refusal::Missing("the token was not verified".into());
                // Refused before anything is minted: the time does not matter.
                return self.join(peer, room, username, Err(unverified), UNIX_EPOCH);
            }
            ClientMessage::Leave {} => self
                .require_member(peer)
                .map(|_| ())
                .map(|()| self.leave(peer)),
            ClientMessage::Publish {
                stream,
                audio,
                video,
            } => self.publish(peer, stream, audio, video),
            ClientMessage::Unpublish { stream } => self.unpublish(peer, &stream),
            ClientMessage::Mute {
                stream,
                audio_muted,
                video_muted,
            } => self.mute(peer, &stream, audio_muted, video_muted),
            ClientMessage::Message { to, text } => self.chat(peer, to, text),
            ClientMessage::Play {
                participant,
                stream,
            } => self.play(peer, &participant, &stream),
            ClientMessage::Sdp {
                session,
                description,
            } => self.relay_sdp(peer, session, description),
            ClientMessage::Ice {
                session,
                candidate,
                sdp_m_line_index,
                sdp_mid,
            } => self.session_peer(peer, &session).map(|other| match other {
                End::Peer(other) => vec![(
                    other,
                    ServerMessage::Ice {
                        session,
                        candidate,
                        sdp_m_line_index,
                        sdp_mid,
                    },
                )],
                End::Server => {
                    self.media
                        .push(MediaCommand::Candidate { session, candidate });
                    Vec::new()
                }
            }),
            ClientMessage::Stop { session } => self.stop(peer, &session),
        };
        result
            .unwrap_or_else(|(code, message)| vec![(peer, ServerMessage::Error { code, message })])
    }

    /// `peer` asks to join `room` as `username`; `admitted` is the verdict on its token: the
    /// grants it carries, or why it was refused. `now` dates the TURN credentials minted for it.
    pub fn join(
        &mut self,
        peer: PeerId,
        room: String,
        username: String,
        admitted: Result<Grants, Refusal>,
        now: SystemTime,
    ) -> Outbox {
        if !self.peers.contains_key(&peer) {
            return Vec::new();
        }
        let fail = |reason, detail: String| vec![(peer, ServerMessage::Failed { reason, detail })];
        if let Some(member) = self.member(peer) {
            return fail(
                FailReason::AlreadyJoined,
                format!("already in room {} (leave first)", member.room),
            );
        }
        if let Err(why) = validate_name(&room) {
            return fail(FailReason::InvalidName, format!("room name {why}"));
        }
        if let Err(why) = validate_username(&username) {
            return fail(FailReason::InvalidName, format!("username {why}"));
        }
        let grants = match admitted {
            Ok(grants) => grants,
            Err(refusal) => return fail(FailReason::Unauthorized, refusal.detail().to_owned()),
        };
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        if members.len() >= self.rules.capacity {
            let detail = format!(
                "room {room} is full ({} of {})",
                members.len(),
                self.rules.capacity
            );
            return fail(FailReason::RoomFull, detail);
        }
        if members.iter().any(|p| self.username(*p) == Some(&username)) {
            return fail(
                FailReason::NameTaken,
                format!("{username} is already in room {room}"),
            );
        }

        let participants = members
            .iter()
            .filter_map(|p| self.member(*p))
            .map(|m| Participant {
                username: m.username.clone(),
                streams: m.streams.clone(),
            })
            .collect();
        let mut out = vec![(
            peer,
            ServerMessage::State {
                room: room.clone(),
                username: username.clone(),
                capacity: self.rules.capacity,
                participants,
                ice_servers: self.ice_servers_for(&username, now),
            },
        )];
        if self.rules.media == MediaMode::Sfu {
            // The server decides who speaks here: the joiner learns so, and who it is now.
            let speaker = self.rooms.get(&room).and_then(|r| r.speaker.clone());
            out.push((peer, ServerMessage::ActiveSpeaker { username: speaker }));
        }
        out.extend(members.iter().map(|p| {
            (
                *p,
                ServerMessage::Joined {
                    username: username.clone(),
                },
            )
        }));
        self.rooms
            .entry(room.clone())
            .or_default()
            .members
            .push(peer);
        self.peers.entry(peer).or_default().member = Some(Member {
            room,
            username,
            streams: Vec::new(),
            grants,
        });
        out
    }

    /// Takes `peer` out of its room: its sessions end, its streams are unpublished, the others
    /// get `left`, and an empty room is removed. Nothing happens for a peer in no room.
    fn leave(&mut self, peer: PeerId) -> Outbox {
        let Some(member) = self.peers.get_mut(&peer).and_then(|p| p.member.take()) else {
            return Vec::new();
        };
        let mut out = self.end_sessions(
            |s| s.publisher == peer || s.viewer == Some(peer),
            "participant left",
        );
        let others = self.remove_member(&member.room, peer);
        for stream in &member.streams {
            out.extend(others.iter().map(|p| {
                (
                    *p,
                    ServerMessage::Unpublished {
                        username: member.username.clone(),
                        stream: stream.stream.clone(),
                    },
                )
            }));
        }
        out.extend(others.iter().map(|p| {
            (
                *p,
                ServerMessage::Left {
                    username: member.username.clone(),
                },
            )
        }));
        // The speaker who leaves loses the turn at once (the engine says so too, later).
        out.extend(self.speaker_left(&member.room, &member.username));
        out
    }

    /// The media engine's verdict on who speaks in `room` (`None`: nobody): everyone in the
    /// room gets `active-speaker` when it changes. Ignored in mesh rooms, for a room that is
    /// gone and for a username that is not in the room (it left while the verdict was on its
    /// way).
    pub fn active_speaker(&mut self, room: &str, username: Option<String>) -> Outbox {
        if self.rules.media != MediaMode::Sfu {
            return Vec::new();
        }
        let Some(members) = self.rooms.get(room).map(|r| r.members.clone()) else {
            return Vec::new();
        };
        let present = |name: &String| {
            members
                .iter()
                .any(|p| self.username(*p).is_some_and(|u| u == name))
        };
        if username.as_ref().is_some_and(|name| !present(name)) {
            return Vec::new();
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if r.speaker == username {
            return Vec::new();
        }
        r.speaker = username.clone();
        let msg = ServerMessage::ActiveSpeaker { username };
        members.into_iter().map(|p| (p, msg.clone())).collect()
    }

    /// `username` left `room`: if it was the speaker, nobody is now.
    fn speaker_left(&mut self, room: &str, username: &str) -> Outbox {
        let speaks = self
            .rooms
            .get(room)
            .is_some_and(|r| r.speaker.as_deref() == Some(username));
        match speaks {
            true => self.active_speaker(room, None),
            false => Vec::new(),
        }
    }

    /// Removes `peer` from `room` (and the room when it empties); returns who is left.
    fn remove_member(&mut self, room: &str, peer: PeerId) -> Vec<PeerId> {
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        r.members.retain(|p| *p != peer);
        let others = r.members.clone();
        if others.is_empty() {
            self.rooms.remove(room);
        }
        others
    }

    fn publish(&mut self, peer: PeerId, stream: String, audio: bool, video: bool) -> Reply {
        validate_name(&stream)
            .map_err(|why| (ErrorCode::InvalidName, format!("stream name {why}")))?;
        if !audio && !video {
            return Err((
                ErrorCode::Malformed,
                "a stream carries audio, video or both".into(),
            ));
        }
        let member = self.require_grant(peer, |g| g.publish, "publish")?;
        if member.streams.len() >= self.rules.max_streams {
            let message = format!(
                "you publish {} streams, the limit is {}",
                member.streams.len(),
                self.rules.max_streams
            );
            return Err((ErrorCode::TooManyStreams, message));
        }
        if member.streams.iter().any(|s| s.stream == stream) {
            return Err((
                ErrorCode::StreamExists,
                format!("stream {stream} is already published"),
            ));
        }
        let info = StreamInfo {
            stream,
            audio,
            video,
            audio_muted: false,
            video_muted: false,
        };
        let username = member.username.clone();
        self.member_mut(peer).streams.push(info.clone());
        let mut out = self.to_others(
            peer,
            ServerMessage::Published {
                username,
                stream: info.clone(),
            },
        );
        if self.rules.media == MediaMode::Sfu {
            out.extend(self.open_ingest(peer, &info.stream));
        }
        Ok(out)
    }

    /// Asks `publisher` for the ingest session of its `stream` (SFU rooms).
    fn open_ingest(&mut self, publisher: PeerId, stream: &str) -> Outbox {
        let session = self.new_session(Session {
            publisher,
            viewer: None,
            forwarded: false,
            viewer_offers: false,
            stream: stream.to_owned(),
        });
        vec![(
            publisher,
            ServerMessage::SessionRequest {
                session,
                stream: stream.to_owned(),
                viewer: SERVER_VIEWER.to_owned(),
            },
        )]
    }

    /// Records a new session under a new id.
    fn new_session(&mut self, session: Session) -> String {
        let id = format!("s{}", self.next_session);
        self.next_session += 1;
        self.sessions.insert(id.clone(), session);
        id
    }

    fn unpublish(&mut self, peer: PeerId, stream: &str) -> Reply {
        self.own_stream(peer, stream)?;
        let member = self.member_mut(peer);
        member.streams.retain(|s| s.stream != stream);
        let username = member.username.clone();
        let mut out = self.end_sessions(
            |s| s.publisher == peer && s.stream == stream,
            "stream unpublished",
        );
        out.extend(self.to_others(
            peer,
            ServerMessage::Unpublished {
                username,
                stream: stream.to_owned(),
            },
        ));
        Ok(out)
    }

    fn mute(&mut self, peer: PeerId, stream: &str, audio_muted: bool, video_muted: bool) -> Reply {
        self.own_stream(peer, stream)?;
        let member = self.member_mut(peer);
        let info = member
            .streams
            .iter_mut()
            .find(|s| s.stream == stream)
            .expect("checked by own_stream");
        info.audio_muted = audio_muted;
        info.video_muted = video_muted;
        let username = member.username.clone();
        Ok(self.to_others(
            peer,
            ServerMessage::Muted {
                username,
                stream: stream.to_owned(),
                audio_muted,
                video_muted,
            },
        ))
    }

    fn chat(&mut self, peer: PeerId, to: Option<String>, text: String) -> Reply {
        let from = self
            .require_grant(peer, |g| g.chat, "chat")?
            .username
            .clone();
        if text.len() > MAX_CHAT_BYTES {
            let message = format!(
                "chat text is {} bytes, the limit is {MAX_CHAT_BYTES}",
                text.len()
            );
            return Err((ErrorCode::TextTooLong, message));
        }
        let recipients = match &to {
            None => self.room_of(peer),
            // To the recipient and the sender: once when they are the same.
            Some(name) => match self.find_in_room(peer, name)? {
                recipient if recipient == peer => vec![peer],
                recipient => vec![recipient, peer],
            },
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let msg = ServerMessage::Message { from, to, text, ts };
        Ok(recipients.into_iter().map(|p| (p, msg.clone())).collect())
    }

    fn play(&mut self, viewer: PeerId, participant: &str, stream: &str) -> Reply {
        let viewer_name = self
            .require_grant(viewer, |g| g.subscribe, "play others' streams")?
            .username
            .clone();
        let publisher = self.find_in_room(viewer, participant)?;
        if publisher == viewer {
            return Err((
                ErrorCode::OwnStream,
                "a participant cannot play its own stream".into(),
            ));
        }
        self.own_stream(publisher, stream).map_err(|_| {
            (
                ErrorCode::UnknownStream,
                format!("{participant} does not publish {}", excerpt(stream)),
            )
        })?;
        // One session per viewer and stream: each session costs the publisher a peer connection
        // (and an encoder), so a repeated play must not ask for another one.
        if let Some((id, _)) = self.sessions.iter().find(|(_, s)| {
            s.publisher == publisher && s.viewer == Some(viewer) && s.stream == stream
        }) {
            return Err((
                ErrorCode::AlreadyPlaying,
                format!("you already play {participant}/{stream} in session {id}"),
            ));
        }
        if self.rules.media == MediaMode::Sfu {
            return Ok(self.play_forwarded(publisher, viewer, stream, None));
        }
        let session = self.new_session(Session {
            publisher,
            viewer: Some(viewer),
            forwarded: false,
            viewer_offers: false,
            stream: stream.to_owned(),
        });
        Ok(vec![
            (
                viewer,
                ServerMessage::SessionStarted {
                    session: session.clone(),
                    participant: participant.to_owned(),
                    stream: stream.to_owned(),
                },
            ),
            (
                publisher,
                ServerMessage::SessionRequest {
                    session,
                    stream: stream.to_owned(),
                    viewer: viewer_name,
                },
            ),
        ])
    }

    /// `viewer` plays `publisher`'s `stream` through the server: `session-started`, then the
    /// engine's offer — or, when the viewer brings its own `offer`, the engine's answer. A
    /// stream without an ingest (its last one ended) gets one first.
    fn play_forwarded(
        &mut self,
        publisher: PeerId,
        viewer: PeerId,
        stream: &str,
        offer: Option<String>,
    ) -> Outbox {
        let (participant, info, room) = {
            let member = self.member(publisher).expect("checked by find_in_room");
            let info = member.streams.iter().find(|s| s.stream == stream).cloned();
            let info = info.expect("checked by own_stream");
            (member.username.clone(), info, member.room.clone())
        };
        let mut out = Outbox::new();
        if !self
            .sessions
            .values()
            .any(|s| s.is_ingest_of(publisher, stream))
        {
            out.extend(self.open_ingest(publisher, stream));
        }
        let session = self.new_session(Session {
            publisher,
            viewer: Some(viewer),
            forwarded: true,
            viewer_offers: offer.is_some(),
            stream: stream.to_owned(),
        });
        let stream_ref = StreamRef {
            room,
            participant: participant.clone(),
            stream: stream.to_owned(),
        };
        match offer {
            Some(offer) => self.media.push(MediaCommand::SubscribeOffered {
                session: session.clone(),
                stream: stream_ref,
                offer,
            }),
            // A viewer that offers gets nothing from the engine until its offer comes.
            None if self.offers_to_view(viewer) => {}
            None => self.media.push(MediaCommand::Subscribe {
                session: session.clone(),
                stream: stream_ref,
                audio: info.audio,
                video: info.video,
            }),
        }
        out.insert(
            0,
            (
                viewer,
                ServerMessage::SessionStarted {
                    session,
                    participant,
                    stream: stream.to_owned(),
                },
            ),
        );
        out
    }

    /// `peer`, a connection in no room (a WHEP player: it watches without being a participant,
    /// so it takes no seat), watches `participant`'s `stream` in `room` through the server with
    /// its own SDP `offer`: `session-started`, then the engine's answer. Only in rooms whose
    /// media goes through the server. Refusals are an `error` (unknown participant or stream:
    /// the room, the participant and the stream are all named by the viewer). The session ends
    /// as any forwarded one does (the stream unpublished, its publisher gone, its ingest lost)
    /// and when `peer` disconnects.
    pub fn watch(
        &mut self,
        peer: PeerId,
        room: &str,
        participant: &str,
        stream: &str,
        offer: String,
    ) -> Outbox {
        let refused = |code, message: String| vec![(peer, ServerMessage::Error { code, message })];
        // A participant plays with `play`; an unknown connection has gone meanwhile.
        if !self.peers.contains_key(&peer) || self.member(peer).is_some() {
            return Vec::new();
        }
        if self.rules.media != MediaMode::Sfu {
            let message = "only a room whose media goes through the server can be watched \
                           without joining it"
                .to_owned();
            return refused(ErrorCode::Malformed, message);
        }
        let publisher = self.rooms.get(room).and_then(|r| {
            r.members
                .iter()
                .copied()
                .find(|p| self.username(*p).is_some_and(|u| u == participant))
        });
        let Some(publisher) = publisher else {
            let message = format!("no participant {} in this room", excerpt(participant));
            return refused(ErrorCode::UnknownParticipant, message);
        };
        if self.own_stream(publisher, stream).is_err() {
            let message = format!(
                "{} does not publish {}",
                excerpt(participant),
                excerpt(stream)
            );
            return refused(ErrorCode::UnknownStream, message);
        }
        self.play_forwarded(publisher, peer, stream, Some(offer))
    }

    fn relay_sdp(
        &mut self,
        peer: PeerId,
        session: String,
        description: SessionDescription,
    ) -> Reply {
        let other = self.session_peer(peer, &session)?;
        let is_publisher = self.sessions[&session].publisher == peer;
        let viewer_offers = !is_publisher && self.viewer_offers(&session);
        let expected = if is_publisher || viewer_offers {
            SdpType::Offer
        } else {
            SdpType::Answer
        };
        if description.kind != expected {
            let end = if is_publisher {
                "the publisher sends offers"
            } else if viewer_offers {
                "this viewer sends offers"
            } else {
                "the viewer sends answers"
            };
            return Err((
                ErrorCode::BadSdp,
                format!("{end}; got {:?}", description.kind),
            ));
        }
        if !description.sdp.starts_with("v=0") {
            return Err((ErrorCode::BadSdp, "an SDP starts with \"v=0\"".into()));
        }
        let other = match other {
            End::Peer(other) => other,
            End::Server => {
                let sdp = description.sdp;
                let stream = self.stream_ref(&self.sessions[&session]);
                self.media.push(match (is_publisher, viewer_offers) {
                    (true, _) => MediaCommand::Publish {
                        session,
                        stream,
                        offer: sdp,
                    },
                    (false, true) => MediaCommand::SubscribeOffered {
                        session,
                        stream,
                        offer: sdp,
                    },
                    (false, false) => MediaCommand::Answer {
                        session,
                        answer: sdp,
                    },
                });
                return Ok(Vec::new());
            }
        };
        Ok(vec![(
            other,
            ServerMessage::Sdp {
                session,
                description,
            },
        )])
    }

    /// Whether `session` is forwarded by the server to a viewer that offers it: one that
    /// offers every session it views ([`Rooms::connect_offering`]) or offered this one with
    /// [`Rooms::watch`].
    fn viewer_offers(&self, session: &str) -> bool {
        self.sessions
            .get(session)
            .filter(|s| s.forwarded)
            .is_some_and(|s| {
                s.viewer_offers || s.viewer.is_some_and(|viewer| self.offers_to_view(viewer))
            })
    }

    fn offers_to_view(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.offers_to_view)
    }

    /// The stream a session carries, as the media engine knows it.
    fn stream_ref(&self, session: &Session) -> StreamRef {
        let member = self.member(session.publisher);
        StreamRef {
            room: member.map(|m| m.room.clone()).unwrap_or_default(),
            participant: member.map(|m| m.username.clone()).unwrap_or_default(),
            stream: session.stream.clone(),
        }
    }

    fn stop(&mut self, peer: PeerId, session: &str) -> Reply {
        let other = self.session_peer(peer, session)?;
        let reason = format!(
            "stopped by {}",
            self.username(peer).map(String::as_str).unwrap_or("peer")
        );
        let ended = self
            .sessions
            .remove(session)
            .expect("checked by session_peer");
        match other {
            End::Peer(other) => Ok(vec![(
                other,
                ServerMessage::SessionEnded {
                    session: session.to_owned(),
                    reason,
                },
            )]),
            End::Server => {
                self.media.push(MediaCommand::Close {
                    session: session.to_owned(),
                });
                // A stopped ingest takes its stream's forwarded sessions with it.
                Ok(match ended.viewer {
                    None => self.end_forwarded(ended.publisher, &ended.stream, &reason),
                    Some(_) => Vec::new(),
                })
            }
        }
    }

    /// Ends the sessions that forward `publisher`'s `stream` (its ingest ended).
    fn end_forwarded(&mut self, publisher: PeerId, stream: &str, reason: &str) -> Outbox {
        let reason = format!("the publisher's media ended ({reason})");
        self.end_sessions(
            |s| s.forwarded && s.publisher == publisher && s.stream == stream,
            &reason,
        )
    }

    /// The media engine's description for `session`: its answer to an ingest's offer, or its
    /// offer for a viewer (its answer for a viewer that offered). Goes to the session's
    /// participant; nothing for a session that has ended meanwhile.
    pub fn media_description(&mut self, session: &str, sdp: String) -> Outbox {
        let Some(s) = self.sessions.get(session).filter(|s| s.with_server()) else {
            return Vec::new();
        };
        let (to, kind) = match s.viewer {
            None => (s.publisher, SdpType::Answer),
            Some(viewer) if s.viewer_offers || self.offers_to_view(viewer) => {
                (viewer, SdpType::Answer)
            }
            Some(viewer) => (viewer, SdpType::Offer),
        };
        let description = SessionDescription { kind, sdp };
        let session = session.to_owned();
        vec![(
            to,
            ServerMessage::Sdp {
                session,
                description,
            },
        )]
    }

    /// The media engine lost or refused `session` (`reason`): it ends for its participant,
    /// and an ingest takes its stream's forwarded sessions with it. Nothing for a session that
    /// has ended already.
    pub fn media_failed(&mut self, session: &str, reason: &str) -> Outbox {
        let Some(failed) = self.sessions.get(session).filter(|s| s.with_server()) else {
            return Vec::new();
        };
        let failed = failed.clone();
        let ended = self.sessions.remove(session).into_iter();
        let mut out = self.tell_ended(ended.map(|s| (session.to_owned(), s)).collect(), reason);
        if failed.viewer.is_none() {
            out.extend(self.end_forwarded(failed.publisher, &failed.stream, reason));
        }
        out
    }

    /// Removes the matching sessions and tells both ends.
    fn end_sessions(&mut self, matches: impl Fn(&Session) -> bool, reason: &str) -> Outbox {
        let mut ended: Vec<(String, Session)> = Vec::new();
        self.sessions.retain(|id, s| {
            if matches(s) {
                ended.push((id.clone(), s.clone()));
                false
            } else {
                true
            }
        });
        ended.sort_by(|a, b| a.0.cmp(&b.0));
        self.tell_ended(ended, reason)
    }

    /// `session-ended` to the participants of sessions just removed; the media engine frees
    /// those it is an end of.
    fn tell_ended(&mut self, ended: Vec<(String, Session)>, reason: &str) -> Outbox {
        let mut out = Outbox::new();
        for (id, s) in ended {
            let msg = ServerMessage::SessionEnded {
                session: id.clone(),
                reason: reason.to_owned(),
            };
            out.extend(s.client_ends().into_iter().map(|p| (p, msg.clone())));
            if s.with_server() {
                self.media.push(MediaCommand::Close { session: id });
            }
        }
        out
    }

    /// The other end of `session`, if `peer` is one of its ends.
    fn session_peer(&self, peer: PeerId, session: &str) -> Result<End, (ErrorCode, String)> {
        let s = self.sessions.get(session);
        match s.filter(|s| s.client_ends().contains(&peer)) {
            Some(s) if s.with_server() => Ok(End::Server),
            Some(s) if s.publisher == peer => Ok(End::Peer(s.viewer.expect("a mesh session"))),
            Some(s) => Ok(End::Peer(s.publisher)),
            None => Err((
                ErrorCode::UnknownSession,
                format!("no session {} of yours", excerpt(session)),
            )),
        }
    }

    fn to_others(&self, peer: PeerId, msg: ServerMessage) -> Outbox {
        self.room_of(peer)
            .into_iter()
            .filter(|p| *p != peer)
            .map(|p| (p, msg.clone()))
            .collect()
    }

    /// Everyone in `peer`'s room, `peer` included.
    fn room_of(&self, peer: PeerId) -> Vec<PeerId> {
        self.member(peer)
            .and_then(|m| self.rooms.get(&m.room))
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    fn find_in_room(&self, peer: PeerId, username: &str) -> Result<PeerId, (ErrorCode, String)> {
        self.room_of(peer)
            .into_iter()
            .find(|p| self.username(*p).is_some_and(|u| u == username))
            .ok_or_else(|| {
                (
                    ErrorCode::UnknownParticipant,
                    format!("no participant {} in this room", excerpt(username)),
                )
            })
    }

    fn own_stream(&self, peer: PeerId, stream: &str) -> Result<(), (ErrorCode, String)> {
        let member = self.require_member(peer)?;
        match member.streams.iter().any(|s| s.stream == stream) {
            true => Ok(()),
            false => Err((
                ErrorCode::UnknownStream,
                format!("you do not publish a stream {}", excerpt(stream)),
            )),
        }
    }

    fn require_member(&self, peer: PeerId) -> Result<&Member, (ErrorCode, String)> {
        self.member(peer)
            .ok_or((ErrorCode::NotJoined, "join a room first".to_owned()))
    }

    /// The ICE servers handed to `username` as it joins: the static ones, then a TURN server
    /// with credentials minted for it, valid from `now` for the TURN TTL.
    fn ice_servers_for(&self, username: &str, now: SystemTime) -> Vec<IceServer> {
        let mut servers = self.rules.ice_servers.clone();
        servers.extend(
            self.rules
                .turn
                .as_ref()
                .map(|t| t.ice_server(username, now)),
        );
        servers
    }

    /// The member, if its grants allow `what` (`allowed`).
    fn require_grant(
        &self,
        peer: PeerId,
        allowed: impl Fn(&Grants) -> bool,
        what: &str,
    ) -> Result<&Member, (ErrorCode, String)> {
        let member = self.require_member(peer)?;
        match allowed(&member.grants) {
            true => Ok(member),
            false => Err((
                ErrorCode::Unauthorized,
                format!("your token does not allow you to {what}"),
            )),
        }
    }

    fn member(&self, peer: PeerId) -> Option<&Member> {
        self.peers.get(&peer).and_then(|p| p.member.as_ref())
    }

    /// Only for peers `require_member` accepted.
    fn member_mut(&mut self, peer: PeerId) -> &mut Member {
        self.peers
            .get_mut(&peer)
            .and_then(|p| p.member.as_mut())
            .expect("caller checked membership")
    }

    fn username(&self, peer: PeerId) -> Option<&String> {
        self.member(peer).map(|m| &m.username)
    }
}

/// One participant as the owner of its room records it in the shared store, so that another
/// node can take the room over with its participants (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberRecord {
    /// The room's owner's id of the participant (used only by the owner itself).
    pub peer: PeerId,
    /// Its username in the room.
    pub username: String,
    /// What it publishes.
    pub streams: Vec<StreamInfo>,
    /// What its token allows.
    pub grants: Grants,
}

impl Rooms {
    /// The room `peer` is in, if any.
    pub fn room_name(&self, peer: PeerId) -> Option<&str> {
        self.member(peer).map(|m| m.room.as_str())
    }

    /// Whether `room` has participants.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The participants of `room`, in join order.
    pub fn members_of(&self, room: &str) -> Vec<MemberRecord> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|p| {
                self.member(*p).map(|m| MemberRecord {
                    peer: *p,
                    username: m.username.clone(),
                    streams: m.streams.clone(),
                    grants: m.grants,
                })
            })
            .collect()
    }

    /// Puts a participant that was already in `room` (under the room's previous owner) back,
    /// without any message: the others already know it. Capacity is not checked — the
    /// participants are the ones that were admitted. `peer` must be connected; a peer already in
    /// a room, or a username already present, is left alone.
    pub fn restore(&mut self, peer: PeerId, room: &str, record: MemberRecord) {
        let taken = self.rooms.get(room).is_some_and(|r| {
            r.members
                .iter()
                .any(|p| self.username(*p) == Some(&record.username))
        });
        if !self.peers.contains_key(&peer) || self.member(peer).is_some() || taken {
            return;
        }
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .members
            .push(peer);
        self.peers.entry(peer).or_default().member = Some(Member {
            room: room.to_owned(),
            username: record.username,
            streams: record.streams,
            grants: record.grants,
        });
    }

    /// Tells everyone in `room` that a participant that is not restored (its server died) is
    /// gone: its streams are unpublished and it left.
    pub fn departed(&self, room: &str, record: &MemberRecord) -> Outbox {
        let members = self
            .rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        let mut out = Outbox::new();
        for stream in &record.streams {
            out.extend(members.iter().map(|p| {
                let msg = ServerMessage::Unpublished {
                    username: record.username.clone(),
                    stream: stream.stream.clone(),
                };
                (*p, msg)
            }));
        }
        out.extend(members.iter().map(|p| {
            let msg = ServerMessage::Left {
                username: record.username.clone(),
            };
            (*p, msg)
        }));
        out
    }
}

/// The result of a message that may be refused with an `error` to its sender.
type Reply = Result<Outbox, (ErrorCode, String)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(capacity: usize) -> Rooms {
        Rooms::new(RoomRules {
            capacity,
            ice_servers: Vec::new(),
            turn: None,
            max_streams: 4,
            media: Default::default(),
        })
    }

    fn join(r: &mut Rooms, peer: PeerId, room: &str, name: &str) -> Outbox {
        join_with(r, peer, room, name, Ok(Grants::PARTICIPANT))
    }

    fn join_with(
        r: &mut Rooms,
        peer: PeerId,
        room: &str,
        name: &str,
        admitted: Result<Grants, Refusal>,
    ) -> Outbox {
        r.connect(peer);
        r.join(peer, room.into(), name.into(), admitted, SystemTime::now())
    }

    fn types(out: &Outbox) -> Vec<(PeerId, String)> {
        out.iter()
            .map(|(p, m)| {
                (
                    *p,
                    serde_json::to_value(m).unwrap()["type"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn capacity_and_unique_names() {
        let mut r = rooms(2);
        assert_eq!(types(&join(&mut r, 1, "a", "x")), [(1, "state".into())]);
        assert!(matches!(
            join(&mut r, 2, "a", "x")[0].1,
            ServerMessage::Failed {
                reason: FailReason::NameTaken,
                ..
            }
        ));
        assert_eq!(
            types(&join(&mut r, 3, "a", "y")),
            [(3, "state".into()), (1, "joined".into())]
        );
        assert!(matches!(
            join(&mut r, 4, "a", "z")[0].1,
            ServerMessage::Failed {
                reason: FailReason::RoomFull,
                ..
            }
        ));
        assert_eq!(
            r.summary(),
            [RoomSummary {
                room: "a".into(),
                participants: 2,
                capacity: 2
            }]
        );
    }

    #[test]
    fn only_own_streams_and_sessions() {
        let mut r = rooms(3);
        join(&mut r, 1, "a", "pub");
        join(&mut r, 2, "a", "view");
        join(&mut r, 3, "a", "other");
        r.handle(
            1,
            ClientMessage::Publish {
                stream: "main".into(),
                audio: true,
                video: true,
            },
        );
        let out = r.handle(
            2,
            ClientMessage::Mute {
                stream: "main".into(),
                audio_muted: true,
                video_muted: true,
            },
        );
        assert!(matches!(
            out[0].1,
            ServerMessage::Error {
                code: ErrorCode::UnknownStream,
                ..
            }
        ));
        let out = r.handle(
            2,
            ClientMessage::Play {
                participant: "pub".into(),
                stream: "main".into(),
            },
        );
        assert_eq!(
            types(&out),
            [(2, "session-started".into()), (1, "session-request".into())]
        );
        let ice = ClientMessage::Ice {
            session: "s1".into(),
            candidate: "c".into(),
            sdp_m_line_index: 0,
            sdp_mid: None,
        };
        assert!(matches!(
            r.handle(3, ice.clone())[0].1,
            ServerMessage::Error {
                code: ErrorCode::UnknownSession,
                ..
            }
        ));
        assert_eq!(types(&r.handle(2, ice)), [(1, "ice".into())]);
        let answer = SessionDescription {
            kind: SdpType::Answer,
            sdp: "v=0\r\n".into(),
        };
        let out = r.handle(
            1,
            ClientMessage::Sdp {
                session: "s1".into(),
                description: answer,
            },
        );
        assert!(matches!(
            out[0].1,
            ServerMessage::Error {
                code: ErrorCode::BadSdp,
                ..
            }
        ));
        // The publisher leaving ends the session on the viewer's side and unpublishes.
        let out = r.disconnect(1);
        assert_eq!(
            types(&out),
            [
                (2, "session-ended".into()),
                (2, "unpublished".into()),
                (3, "unpublished".into()),
                (2, "left".into()),
                (3, "left".into())
            ]
        );
    }

    #[test]
    fn empty_room_is_removed_and_leave_allows_rejoin() {
        let mut r = rooms(3);
        join(&mut r, 1, "a", "x");
        assert!(r.handle(1, ClientMessage::Leave {}).is_empty());
        assert!(r.summary().is_empty());
        let out = r.join(
            1,
            "b".into(),
            "x".into(),
            Ok(Grants::PARTICIPANT),
            SystemTime::now(),
        );
        assert_eq!(types(&out), [(1, "state".into())]);
    }

    #[test]
    fn each_joiner_gets_turn_credentials_minted_for_it_at_join() {
        let stun = IceServer {
            urls: vec!["stun:s.example:3478".into()],
            username: None,
            credential: None,
        };
        let mut r = Rooms::new(RoomRules {
            capacity: 3,
            ice_servers: vec![stun.clone()],
            max_streams: 4,
            media: Default::default(),
            turn: Some(TurnRest {
                secret: "north".into(),
                urls: vec!["turn:t.example:3478".into()],
                ttl: std::time::Duration::from_secs(100),
            }),
        });
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_699_999_900);
        r.connect(1);
        let out = r.join(1, "a".into(), "alice".into(), Ok(Grants::PARTICIPANT), now);
        let ServerMessage::State { ice_servers, .. } = &out[0].1 else {
            panic!("{out:?}")
        };
        assert_eq!(ice_servers[0], stun);
        assert_eq!(ice_servers[1].urls, ["turn:t.example:3478"]);
        assert_eq!(ice_servers[1].username.as_deref(), Some("1700000000:alice"));
        // The same vector as turn.rs's test, computed with openssl.
        assert_eq!(
            ice_servers[1].credential.as_ref().map(|c| c.expose()),
            Some("Cd/49soE35ICqcJF/bCTn8Z4OyE=")
        );
        // A refused join gets no credentials.
        r.connect(2);
        let refused = Err(Refusal::Wrong("bad".into()));
        let out = r.join(2, "a".into(), "bob".into(), refused, now);
        assert!(
            matches!(out[..], [(2, ServerMessage::Failed { .. })]),
            "{out:?}"
        );
    }

    #[test]
    fn streams_per_participant_and_sessions_per_play_are_capped() {
        let mut r = rooms(3);
        join(&mut r, 1, "a", "pub");
        join(&mut r, 2, "a", "view");
        for i in 0..4 {
            let stream = format!("s{i}");
            assert_eq!(
                types(&r.handle(1, publish_msg(&stream))),
                [(2, "published".into())]
            );
        }
        assert!(matches!(
            r.handle(1, publish_msg("s4"))[0].1,
            ServerMessage::Error {
                code: ErrorCode::TooManyStreams,
                ..
            }
        ));
        let play = ClientMessage::Play {
            participant: "pub".into(),
            stream: "s0".into(),
        };
        assert_eq!(
            types(&r.handle(2, play.clone())),
            [(2, "session-started".into()), (1, "session-request".into())]
        );
        for _ in 0..99 {
            let out = r.handle(2, play.clone());
            assert!(
                matches!(&out[..], [(2, ServerMessage::Error { code: ErrorCode::AlreadyPlaying, message })] if message.contains("s1")),
                "{out:?}"
            );
        }
        // Once stopped, the stream can be played again.
        r.handle(
            2,
            ClientMessage::Stop {
                session: "s1".into(),
            },
        );
        assert_eq!(types(&r.handle(2, play))[1], (1, "session-request".into()));
    }

    fn publish_msg(stream: &str) -> ClientMessage {
        ClientMessage::Publish {
            stream: stream.into(),
            audio: true,
            video: true,
        }
    }

    #[test]
    fn refused_and_unverified_joins_are_unauthorized() {
        let mut r = rooms(3);
        let refused = Err(Refusal::Wrong("the token expired 5 s ago".into()));
        assert!(matches!(
            &join_with(&mut r, 1, "a", "x", refused)[0].1,
            ServerMessage::Failed { reason: FailReason::Unauthorized, detail } if detail.contains("expired")
        ));
        let unverified = r.handle(
            1,
            ClientMessage::Join {
                room: "a".into(),
                username: "x".into(),
                token: Some("anything".into()),
            },
        );
        assert!(matches!(
            unverified[0].1,
            ServerMessage::Failed {
                reason: FailReason::Unauthorized,
                ..
            }
        ));
        assert!(r.summary().is_empty());
    }

    #[test]
    fn grants_limit_publish_play_and_chat_and_state_carries_ice_servers() {
        let turn = IceServer {
            urls: vec!["turn:t.example:3478".into()],
            username: Some("u".into()),
            credential: Some("c".into()),
        };
        let mut r = Rooms::new(RoomRules {
            capacity: 3,
            ice_servers: vec![turn.clone()],
            turn: None,
            max_streams: 4,
            media: Default::default(),
        });
        assert!(matches!(&r.connect(1)[0].1, ServerMessage::Welcome { .. }));
        let out = r.join(
            1,
            "a".into(),
            "pub".into(),
            Ok(Grants::PARTICIPANT),
            SystemTime::now(),
        );
        assert!(
            matches!(&out[0].1, ServerMessage::State { ice_servers, .. } if *ice_servers == [turn.clone()])
        );
        let viewer_only = Grants {
            publish: false,
            chat: false,
            ..Grants::PARTICIPANT
        };
        join_with(&mut r, 2, "a", "view", Ok(viewer_only));
        let nothing = Grants {
            subscribe: false,
            ..viewer_only
        };
        join_with(&mut r, 3, "a", "none", Ok(nothing));
        r.handle(
            1,
            ClientMessage::Publish {
                stream: "main".into(),
                audio: true,
                video: true,
            },
        );
        let refused = |out: Outbox| {
            matches!(
                &out[..],
                [(
                    _,
                    ServerMessage::Error {
                        code: ErrorCode::Unauthorized,
                        ..
                    }
                )]
            )
        };
        assert!(refused(r.handle(
            2,
            ClientMessage::Publish {
                stream: "main".into(),
                audio: true,
                video: true
            }
        )));
        assert!(refused(r.handle(
            2,
            ClientMessage::Message {
                to: None,
                text: "hi".into()
            }
        )));
        assert!(refused(r.handle(
            3,
            ClientMessage::Play {
                participant: "pub".into(),
                stream: "main".into()
            }
        )));
        let play = r.handle(
            2,
            ClientMessage::Play {
                participant: "pub".into(),
                stream: "main".into(),
            },
        );
        assert_eq!(
            types(&play),
            [(2, "session-started".into()), (1, "session-request".into())]
        );
        // Everyone still receives chat.
        let chat = r.handle(
            1,
            ClientMessage::Message {
                to: None,
                text: "hi".into(),
            },
        );
        assert_eq!(chat.len(), 3);
    }

    fn publish(r: &mut Rooms, peer: PeerId, stream: &str) -> Outbox {
        r.handle(
            peer,
            ClientMessage::Publish {
                stream: stream.into(),
                audio: true,
                video: true,
            },
        )
    }

    fn play(r: &mut Rooms, peer: PeerId, participant: &str, stream: &str) -> Outbox {
        r.handle(
            peer,
            ClientMessage::Play {
                participant: participant.into(),
                stream: stream.into(),
            },
        )
    }

    fn chat(r: &mut Rooms, peer: PeerId, to: Option<&str>, text: &str) -> Outbox {
        r.handle(
            peer,
            ClientMessage::Message {
                to: to.map(Into::into),
                text: text.into(),
            },
        )
    }

    fn error_code(out: &Outbox) -> Option<ErrorCode> {
        match out.as_slice() {
            [(_, ServerMessage::Error { code, .. })] => Some(*code),
            _ => None,
        }
    }

    /// Three in room "a": 1 = ann, 2 = bob, 3 = cid.
    fn three() -> Rooms {
        let mut r = rooms(3);
        join(&mut r, 1, "a", "ann");
        join(&mut r, 2, "a", "bob");
        join(&mut r, 3, "a", "cid");
        r
    }

    #[test]
    fn chat_to_the_room_reaches_everyone_once_including_the_sender() {
        let mut r = three();
        let out = chat(&mut r, 1, None, "hi");
        let mut to: Vec<PeerId> = out.iter().map(|(p, _)| *p).collect();
        to.sort();
        assert_eq!(to, [1, 2, 3]);
        assert!(out.iter().all(|(_, m)| matches!(
            m,
            ServerMessage::Message { from, to: None, text, .. } if from == "ann" && text == "hi"
        )));
    }

    #[test]
    fn direct_chat_reaches_the_recipient_and_the_sender_and_yourself_once() {
        let mut r = three();
        assert_eq!(
            types(&chat(&mut r, 1, Some("bob"), "psst")),
            [(2, "message".into()), (1, "message".into())]
        );
        assert_eq!(
            types(&chat(&mut r, 1, Some("ann"), "note")),
            [(1, "message".into())]
        );
        assert_eq!(
            error_code(&chat(&mut r, 1, Some("nobody"), "?")),
            Some(ErrorCode::UnknownParticipant)
        );
    }

    #[test]
    fn play_of_an_own_stream_or_an_unknown_participant_is_refused() {
        let mut r = three();
        publish(&mut r, 1, "main");
        assert_eq!(
            error_code(&play(&mut r, 1, "ann", "main")),
            Some(ErrorCode::OwnStream)
        );
        assert_eq!(
            error_code(&play(&mut r, 2, "ghost", "main")),
            Some(ErrorCode::UnknownParticipant)
        );
        assert_eq!(
            error_code(&play(&mut r, 2, "ann", "other")),
            Some(ErrorCode::UnknownStream)
        );
    }

    #[test]
    fn stop_ends_a_session_at_the_other_end_only_and_only_for_its_ends() {
        let mut r = three();
        publish(&mut r, 1, "main");
        play(&mut r, 2, "ann", "main");
        let stop = ClientMessage::Stop {
            session: "s1".into(),
        };
        assert_eq!(
            error_code(&r.handle(3, stop.clone())),
            Some(ErrorCode::UnknownSession)
        );
        assert_eq!(
            types(&r.handle(2, stop.clone())),
            [(1, "session-ended".into())]
        );
        // Gone: a second stop is refused.
        assert_eq!(
            error_code(&r.handle(1, stop)),
            Some(ErrorCode::UnknownSession)
        );
    }

    #[test]
    fn unpublish_ends_the_streams_sessions_at_both_ends_then_tells_the_room() {
        let mut r = three();
        publish(&mut r, 1, "main");
        play(&mut r, 2, "ann", "main");
        play(&mut r, 3, "ann", "main");
        let out = r.handle(
            1,
            ClientMessage::Unpublish {
                stream: "main".into(),
            },
        );
        // Both ends hear of each ended session: the publisher's connection stays open.
        assert_eq!(
            types(&out),
            [
                (2, "session-ended".into()),
                (1, "session-ended".into()),
                (3, "session-ended".into()),
                (1, "session-ended".into()),
                (2, "unpublished".into()),
                (3, "unpublished".into())
            ]
        );
    }

    #[test]
    fn a_viewer_leaving_with_open_sessions_ends_them_at_the_publisher() {
        let mut r = three();
        publish(&mut r, 1, "main");
        play(&mut r, 2, "ann", "main");
        // A leave keeps the connection, so the leaver hears of its sessions' end too (a
        // dropped connection does not: see only_own_streams_and_sessions).
        let out = r.handle(2, ClientMessage::Leave {});
        assert_eq!(
            types(&out),
            [
                (2, "session-ended".into()),
                (1, "session-ended".into()),
                (1, "left".into()),
                (3, "left".into())
            ]
        );
        // Ended for good: the publisher cannot relay into it any more.
        let ice = ClientMessage::Ice {
            session: "s1".into(),
            candidate: "c".into(),
            sdp_m_line_index: 0,
            sdp_mid: None,
        };
        assert_eq!(
            error_code(&r.handle(1, ice)),
            Some(ErrorCode::UnknownSession)
        );
    }

    #[test]
    fn a_dropped_participant_can_rejoin_under_its_name_and_republish() {
        let mut r = three();
        publish(&mut r, 1, "main");
        r.disconnect(1);
        // A new connection (as after a reconnect) takes the name again.
        let out = join(&mut r, 4, "a", "ann");
        assert_eq!(
            types(&out),
            [
                (4, "state".into()),
                (2, "joined".into()),
                (3, "joined".into())
            ]
        );
        assert_eq!(
            types(&publish(&mut r, 4, "main")),
            [(2, "published".into()), (3, "published".into())]
        );
    }

    fn record(peer: PeerId, name: &str, streams: &[&str]) -> MemberRecord {
        MemberRecord {
            peer,
            username: name.into(),
            streams: streams
                .iter()
                .map(|s| StreamInfo {
                    stream: (*s).into(),
                    audio: true,
                    video: true,
                    audio_muted: false,
                    video_muted: false,
                })
                .collect(),
            grants: Grants::PARTICIPANT,
        }
    }

    #[test]
    fn a_taken_over_room_gets_its_members_back_silently_and_hears_of_the_departed() {
        let mut r = rooms(2);
        r.connect(1);
        r.connect(2);
        r.restore(1, "demo", record(7, "alice", &["cam"]));
        r.restore(2, "demo", record(8, "bob", &[]));
        let names: Vec<_> = r
            .members_of("demo")
            .into_iter()
            .map(|m| m.username)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(r.members_of("demo")[0].streams[0].stream, "cam");
        // A third restored member beyond capacity is kept (it was admitted before), a second
        // "alice" is not.
        r.connect(3);
        r.restore(3, "demo", record(9, "alice", &[]));
        assert!(!r.is_joined(3));
        // The departed member of a dead node: its streams go, then it leaves, for everyone.
        let out = r.departed("demo", &record(5, "carol", &["main", "screen"]));
        assert_eq!(
            types(&out),
            [
                (1, "unpublished".into()),
                (2, "unpublished".into()),
                (1, "unpublished".into()),
                (2, "unpublished".into()),
                (1, "left".into()),
                (2, "left".into()),
            ]
        );
        // The rules go on as usual: the room is full, a restored member can chat.
        assert_eq!(
            types(&join(&mut r, 4, "demo", "dave")),
            [(4, "failed".into())]
        );
        let chat = r.handle(
            2,
            ClientMessage::Message {
                to: Some("alice".into()),
                text: "hi".into(),
            },
        );
        assert_eq!(types(&chat), [(1, "message".into()), (2, "message".into())]);
    }
}

#[cfg(test)]
mod sfu_tests {
    //! The rules of SFU rooms: the server is one end of every session.
    use super::*;

    fn sfu_rooms() -> Rooms {
        Rooms::new(RoomRules {
            capacity: 4,
            ice_servers: Vec::new(),
            turn: None,
            max_streams: 4,
            media: MediaMode::Sfu,
        })
    }

    /// 1 = ann (publishes "main"), 2 = bob, 3 = cid in room "a"; the ingest is s1.
    fn room_with_a_stream() -> Rooms {
        let mut r = sfu_rooms();
        for (peer, name) in [(1, "ann"), (2, "bob"), (3, "cid")] {
            r.connect(peer);
            r.join(
                peer,
                "a".into(),
                name.into(),
                Ok(Grants::PARTICIPANT),
                SystemTime::now(),
            );
        }
        let out = r.handle(1, publish("main"));
        assert_eq!(
            out[2],
            (
                1,
                ServerMessage::SessionRequest {
                    session: "s1".into(),
                    stream: "main".into(),
                    viewer: SERVER_VIEWER.into(),
                }
            ),
            "{out:?}"
        );
        assert!(r.take_media().is_empty());
        r
    }

    fn publish(stream: &str) -> ClientMessage {
        ClientMessage::Publish {
            stream: stream.into(),
            audio: true,
            video: false,
        }
    }

    fn play(r: &mut Rooms, viewer: PeerId) -> Outbox {
        r.handle(
            viewer,
            ClientMessage::Play {
                participant: "ann".into(),
                stream: "main".into(),
            },
        )
    }

    fn sdp(session: &str, kind: SdpType, sdp: &str) -> ClientMessage {
        ClientMessage::Sdp {
            session: session.into(),
            description: SessionDescription {
                kind,
                sdp: sdp.into(),
            },
        }
    }

    fn stop(session: &str) -> ClientMessage {
        ClientMessage::Stop {
            session: session.into(),
        }
    }

    fn main_of_ann() -> StreamRef {
        StreamRef {
            room: "a".into(),
            participant: "ann".into(),
            stream: "main".into(),
        }
    }

    fn close(session: &str) -> MediaCommand {
        MediaCommand::Close {
            session: session.into(),
        }
    }

    fn ended(out: &Outbox) -> Vec<(PeerId, String)> {
        out.iter()
            .filter_map(|(p, m)| match m {
                ServerMessage::SessionEnded { session, .. } => Some((*p, session.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_publishers_offer_goes_to_the_engine_and_its_answer_back() {
        let mut r = room_with_a_stream();
        assert!(
            r.handle(1, sdp("s1", SdpType::Offer, "v=0 offer"))
                .is_empty()
        );
        let ice = ClientMessage::Ice {
            session: "s1".into(),
            candidate: "candidate:1 1 UDP 1 10.0.0.1 5000 typ host".into(),
            sdp_m_line_index: 0,
            sdp_mid: None,
        };
        assert!(r.handle(1, ice).is_empty());
        assert_eq!(
            r.take_media(),
            [
                MediaCommand::Publish {
                    session: "s1".into(),
                    stream: main_of_ann(),
                    offer: "v=0 offer".into(),
                },
                MediaCommand::Candidate {
                    session: "s1".into(),
                    candidate: "candidate:1 1 UDP 1 10.0.0.1 5000 typ host".into(),
                }
            ]
        );
        let out = r.media_description("s1", "v=0 answer".into());
        assert_eq!(
            out,
            [(
                1,
                ServerMessage::Sdp {
                    session: "s1".into(),
                    description: SessionDescription {
                        kind: SdpType::Answer,
                        sdp: "v=0 answer".into()
                    }
                }
            )]
        );
        // The publisher offers; an answer from it is refused.
        let out = r.handle(1, sdp("s1", SdpType::Answer, "v=0"));
        assert!(matches!(
            out[..],
            [(
                1,
                ServerMessage::Error {
                    code: ErrorCode::BadSdp,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn a_viewer_gets_the_engines_offer_and_its_answer_goes_to_the_engine() {
        let mut r = room_with_a_stream();
        let out = play(&mut r, 2);
        assert_eq!(
            out,
            [(
                2,
                ServerMessage::SessionStarted {
                    session: "s2".into(),
                    participant: "ann".into(),
                    stream: "main".into()
                }
            )],
            "the publisher hears nothing of it"
        );
        assert_eq!(
            r.take_media(),
            [MediaCommand::Subscribe {
                session: "s2".into(),
                stream: main_of_ann(),
                audio: true,
                video: false,
            }]
        );
        let out = r.media_description("s2", "v=0 offer".into());
        assert!(matches!(
            &out[..],
            [(2, ServerMessage::Sdp { description, .. })] if description.kind == SdpType::Offer
        ));
        assert!(
            r.handle(2, sdp("s2", SdpType::Answer, "v=0 answer"))
                .is_empty()
        );
        assert_eq!(
            r.take_media(),
            [MediaCommand::Answer {
                session: "s2".into(),
                answer: "v=0 answer".into()
            }]
        );
        // The viewer answers; the publisher and the others are no end of this session.
        assert!(matches!(
            r.handle(2, sdp("s2", SdpType::Offer, "v=0"))[..],
            [(
                2,
                ServerMessage::Error {
                    code: ErrorCode::BadSdp,
                    ..
                }
            )]
        ));
        for peer in [1, 3] {
            assert!(matches!(
                r.handle(peer, stop("s2"))[..],
                [(
                    _,
                    ServerMessage::Error {
                        code: ErrorCode::UnknownSession,
                        ..
                    }
                )]
            ));
        }
        assert!(matches!(
            play(&mut r, 2)[..],
            [(
                2,
                ServerMessage::Error {
                    code: ErrorCode::AlreadyPlaying,
                    ..
                }
            )]
        ));
        assert!(r.take_media().is_empty());
    }

    #[test]
    fn a_viewer_that_offers_gets_the_engines_answer() {
        let mut r = room_with_a_stream();
        r.connect_offering(4);
        r.join(
            4,
            "a".into(),
            "dee".into(),
            Ok(Grants::PARTICIPANT),
            SystemTime::now(),
        );
        let out = play(&mut r, 4);
        assert!(
            matches!(&out[..], [(4, ServerMessage::SessionStarted { session, .. })] if session == "s2"),
            "{out:?}"
        );
        assert!(r.take_media().is_empty(), "the engine waits for the offer");
        // It offers; an answer from it is refused.
        assert!(matches!(
            r.handle(4, sdp("s2", SdpType::Answer, "v=0"))[..],
            [(
                4,
                ServerMessage::Error {
                    code: ErrorCode::BadSdp,
                    ..
                }
            )]
        ));
        assert!(
            r.handle(4, sdp("s2", SdpType::Offer, "v=0 offer"))
                .is_empty()
        );
        assert_eq!(
            r.take_media(),
            [MediaCommand::SubscribeOffered {
                session: "s2".into(),
                stream: main_of_ann(),
                offer: "v=0 offer".into(),
            }]
        );
        let out = r.media_description("s2", "v=0 answer".into());
        assert!(matches!(
            &out[..],
            [(4, ServerMessage::Sdp { description, .. })] if description.kind == SdpType::Answer
        ));
        // Its own stream's ingest is as anyone's: it offers, the engine answers.
        r.handle(4, publish("cam"));
        assert!(r.handle(4, sdp("s3", SdpType::Offer, "v=0 cam")).is_empty());
        assert!(
            matches!(&r.take_media()[..], [MediaCommand::Publish { session, .. }] if session == "s3")
        );
    }

    #[test]
    fn a_viewers_stop_frees_its_session_in_the_engine_only() {
        let mut r = room_with_a_stream();
        play(&mut r, 2);
        r.take_media();
        assert!(r.handle(2, stop("s2")).is_empty());
        assert_eq!(r.take_media(), [close("s2")]);
        // Ended: the engine's late offer goes nowhere.
        assert!(r.media_description("s2", "v=0".into()).is_empty());
    }

    #[test]
    fn an_ingest_ending_ends_its_viewers_and_the_next_play_asks_for_a_new_one() {
        let mut r = room_with_a_stream();
        play(&mut r, 2);
        play(&mut r, 3);
        r.take_media();
        // The publisher stops its ingest (its side of the connection failed).
        let out = r.handle(1, stop("s1"));
        assert_eq!(ended(&out), [(2, "s2".into()), (3, "s3".into())]);
        assert_eq!(r.take_media(), [close("s1"), close("s2"), close("s3")]);
        // The viewers play again: the first one's play asks the publisher for a new ingest.
        let out = play(&mut r, 2);
        assert_eq!(
            out.iter().map(|(p, m)| (*p, m.clone())).collect::<Vec<_>>(),
            [
                (
                    2,
                    ServerMessage::SessionStarted {
                        session: "s5".into(),
                        participant: "ann".into(),
                        stream: "main".into()
                    }
                ),
                (
                    1,
                    ServerMessage::SessionRequest {
                        session: "s4".into(),
                        stream: "main".into(),
                        viewer: SERVER_VIEWER.into()
                    }
                )
            ]
        );
        assert_eq!(play(&mut r, 3).len(), 1, "one ingest per stream");
        // The engine losing the ingest does the same, and tells the publisher.
        r.take_media();
        let out = r.media_failed("s4", "media lost: ICE timed out");
        assert_eq!(
            ended(&out),
            [(1, "s4".into()), (2, "s5".into()), (3, "s6".into())]
        );
        assert!(out.iter().all(|(_, m)| matches!(m,
            ServerMessage::SessionEnded { reason, .. } if reason.contains("ICE timed out"))));
        assert_eq!(r.take_media(), [close("s4"), close("s5"), close("s6")]);
        assert!(r.media_failed("s4", "again").is_empty());
    }

    #[test]
    fn a_lost_viewer_session_ends_alone() {
        let mut r = room_with_a_stream();
        play(&mut r, 2);
        play(&mut r, 3);
        r.take_media();
        let out = r.media_failed("s3", "media refused: too many sessions");
        assert_eq!(ended(&out), [(3, "s3".into())]);
        assert_eq!(r.take_media(), [close("s3")]);
    }

    #[test]
    fn unpublish_and_leave_end_the_sessions_at_their_participants_and_in_the_engine() {
        let mut r = room_with_a_stream();
        play(&mut r, 2);
        play(&mut r, 3);
        r.take_media();
        // A viewer leaving frees its session.
        let out = r.handle(3, ClientMessage::Leave {});
        assert_eq!(ended(&out), [(3, "s3".into())]);
        assert_eq!(r.take_media(), [close("s3")]);
        // Unpublish: the ingest and the forwarded sessions, then the room hears of it.
        let out = r.handle(
            1,
            ClientMessage::Unpublish {
                stream: "main".into(),
            },
        );
        assert_eq!(ended(&out), [(1, "s1".into()), (2, "s2".into())]);
        assert!(matches!(
            out.last(),
            Some((2, ServerMessage::Unpublished { .. }))
        ));
        assert_eq!(r.take_media(), [close("s1"), close("s2")]);
        // The publisher dropping with a stream and a viewer: everything goes, in order.
        r.handle(1, publish("main"));
        play(&mut r, 2);
        r.take_media();
        let out = r.disconnect(1);
        assert_eq!(ended(&out), [(2, "s5".into())]);
        assert_eq!(r.take_media(), [close("s4"), close("s5")]);
    }

    #[test]
    fn a_watcher_in_no_room_gets_the_engines_answer_and_ends_with_the_stream() {
        let mut r = room_with_a_stream();
        r.connect(9);
        // Unknown names are refused; nothing reaches the engine or the room.
        for (participant, stream, code) in [
            ("ghost", "main", ErrorCode::UnknownParticipant),
            ("ann", "other", ErrorCode::UnknownStream),
        ] {
            let out = r.watch(9, "a", participant, stream, "v=0 offer".into());
            assert!(
                matches!(&out[..], [(9, ServerMessage::Error { code: c, .. })] if *c == code),
                "{out:?}"
            );
        }
        assert!(r.take_media().is_empty());

        let out = r.watch(9, "a", "ann", "main", "v=0 offer".into());
        assert!(
            matches!(&out[..], [(9, ServerMessage::SessionStarted { session, .. })] if session == "s2"),
            "{out:?}"
        );
        assert_eq!(
            r.take_media(),
            vec![MediaCommand::SubscribeOffered {
                session: "s2".into(),
                stream: main_of_ann(),
                offer: "v=0 offer".into(),
            }]
        );
        // The engine's description is the answer to the watcher's offer.
        let out = r.media_description("s2", "v=0 answer".into());
        assert!(
            matches!(&out[..], [(9, ServerMessage::Sdp { description, .. })]
                if description.kind == SdpType::Answer),
            "{out:?}"
        );
        // It took no seat, and the room saw nothing of it.
        assert_eq!(r.summary()[0].participants, 3);
        // The publisher leaves: the watcher's session ends with its ingest.
        let out = r.disconnect(1);
        assert!(ended(&out).contains(&(9, "s2".to_owned())), "{out:?}");
        assert!(r.take_media().contains(&close("s2")));
    }

    #[test]
    fn a_watcher_that_goes_frees_its_session_in_the_engine() {
        let mut r = room_with_a_stream();
        r.connect(9);
        r.watch(9, "a", "ann", "main", "v=0 offer".into());
        r.take_media();
        let out = r.disconnect(9);
        assert!(out.is_empty(), "the room hears nothing: {out:?}");
        assert_eq!(r.take_media(), vec![close("s2")]);
    }

    #[test]
    fn mesh_rooms_give_the_engine_nothing() {
        let mut r = Rooms::new(RoomRules {
            media: MediaMode::Mesh,
            ..sfu_rooms().rules
        });
        for (peer, name) in [(1, "ann"), (2, "bob")] {
            r.connect(peer);
            r.join(
                peer,
                "a".into(),
                name.into(),
                Ok(Grants::PARTICIPANT),
                SystemTime::now(),
            );
        }
        assert_eq!(r.handle(1, publish("main")).len(), 1);
        play(&mut r, 2);
        r.handle(1, sdp("s1", SdpType::Offer, "v=0"));
        r.handle(2, ClientMessage::Leave {});
        assert!(r.take_media().is_empty());
        // Nobody is told who speaks: each participant decides.
        assert!(r.active_speaker("a", Some("ann".into())).is_empty());
    }

    fn speaker(who: Option<&str>) -> ServerMessage {
        ServerMessage::ActiveSpeaker {
            username: who.map(str::to_owned),
        }
    }

    #[test]
    fn everyone_hears_who_speaks_once_per_change_and_a_joiner_right_after_state() {
        let mut r = room_with_a_stream();
        let out = r.active_speaker("a", Some("ann".into()));
        let to_everyone = |who| vec![(1, speaker(who)), (2, speaker(who)), (3, speaker(who))];
        assert_eq!(out, to_everyone(Some("ann")));
        assert!(
            r.active_speaker("a", Some("ann".into())).is_empty(),
            "no change"
        );
        // A joiner: state, then who speaks now.
        r.connect(4);
        let out = r.join(
            4,
            "a".into(),
            "dan".into(),
            Ok(Grants::PARTICIPANT),
            SystemTime::now(),
        );
        assert!(
            matches!(out[0], (4, ServerMessage::State { .. })),
            "{out:?}"
        );
        assert_eq!(out[1], (4, speaker(Some("ann"))));
        // Someone not in the room (gone meanwhile), a room that is not there: nothing.
        assert!(r.active_speaker("a", Some("eve".into())).is_empty());
        assert!(r.active_speaker("b", None).is_empty());
        // The speaker leaves: the turn goes with it, after `left`.
        let out = r.handle(1, ClientMessage::Leave {});
        let last: Vec<_> = out.iter().rev().take(3).cloned().collect();
        assert_eq!(
            last,
            [(4, speaker(None)), (3, speaker(None)), (2, speaker(None))]
        );
        assert!(
            r.active_speaker("a", None).is_empty(),
            "the engine's own verdict"
        );
    }

    #[test]
    fn the_first_joiner_of_an_sfu_room_hears_that_nobody_speaks() {
        let mut r = sfu_rooms();
        r.connect(1);
        let out = r.join(
            1,
            "a".into(),
            "ann".into(),
            Ok(Grants::PARTICIPANT),
            SystemTime::now(),
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1], (1, speaker(None)));
    }
}

#[cfg(test)]
#[path = "rooms_props.rs"]
mod props;
