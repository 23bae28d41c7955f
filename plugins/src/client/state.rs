//! What the participant knows and how it reacts: the actor's rules, without I/O.
//!
//! [`Presence`] holds the participant's view of the room, its own streams and their mute state,
//! which subscriber each WebRTC session belongs to, the plays and chat waiting for a join, and
//! the chat messages written and waiting for the server's verdict. Each input — a command from
//! an element, a message from the server, a join, a lost connection, a final failure — becomes a
//! [`Reaction`]: the events for subscribers, the messages to write (each with its request id),
//! and the verdicts on chat requests. The actor (`actor.rs`) does what a reaction says; the unit
//! tests at the end of this file check the rules directly.
//!
//! A chat message's verdict: the server answers a refused request with an `error` carrying the
//! request's id, and an accepted chat message comes back to its sender (room messages go to
//! everyone including the sender, direct ones to the recipient and the sender), in the order
//! the server took them. So the oldest message in flight with the same recipient and text as
//! an own message that comes back is the one accepted.

use std::collections::{HashMap, VecDeque};

use room_protocol::{
    ClientMessage, IceServer, Participant, ServerMessage, StreamInfo, WithId, validate_name,
};

use super::{
    CHAT_HOLD, ChatError, ChatSent, Event, JoinFailure, PublishError, Status, SubscriberId,
};

/// Who an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every subscriber.
    Everyone,
    /// One subscriber (a session's owner, a new subscriber).
    One(SubscriberId),
}

/// A chat request's number, given by the actor, which keeps the caller's reply under it.
pub type ChatTicket = u64;

/// What one input makes the actor do, in order within each list.
#[derive(Debug, Default, PartialEq)]
#[must_use = "the actor does what a reaction says"]
pub struct Reaction {
    /// Events to deliver.
    pub events: Vec<(Audience, Event)>,
    /// Messages to write to the server (only while joined).
    pub send: Vec<WithId<ClientMessage>>,
    /// Verdicts on chat requests.
    pub chat_answers: Vec<(ChatTicket, Result<ChatSent, ChatError>)>,
}

impl Reaction {
    fn to(&mut self, audience: Audience, event: Event) {
        self.events.push((audience, event));
    }

    fn answer(&mut self, ticket: ChatTicket, verdict: Result<ChatSent, ChatError>) {
        self.chat_answers.push((ticket, verdict));
    }
}

/// An own stream: what was announced, its mute state, and which subscriber publishes it.
#[derive(Debug)]
struct Published {
    info: StreamInfo,
    owner: SubscriberId,
}

/// A `play` waiting for its `session-started` (the server answers plays in order), or for the
/// join.
#[derive(Debug)]
struct Play {
    owner: SubscriberId,
    participant: String,
    stream: String,
}

/// A chat message not yet written: held while the connection is away.
#[derive(Debug)]
struct Chat {
    to: Option<String>,
    text: String,
    /// The caller waiting for the verdict; `None` once it was told "held".
    ticket: Option<ChatTicket>,
}

/// A chat message written and waiting for the server's verdict.
#[derive(Debug)]
struct InFlight {
    id: String,
    chat: Chat,
}

/// The participant's state; see the module doc.
#[derive(Debug)]
pub struct Presence {
    room: String,
    username: String,
    status: Status,
    capacity: usize,
    /// Everyone else and their streams (empty unless joined).
    participants: Vec<Participant>,
    ice_servers: Vec<IceServer>,
    published: Vec<Published>,
    /// Session id → the subscriber that is its end here.
    sessions: HashMap<String, SubscriberId>,
    /// Plays written, oldest first, waiting for their `session-started`.
    pending_plays: VecDeque<Play>,
    /// Plays asked for while not joined: written after the join.
    held_plays: Vec<Play>,
    /// Chat asked for while not joined: written after the join.
    held_chat: VecDeque<Chat>,
    /// Chat written, oldest first, waiting for the verdict.
    chat_in_flight: VecDeque<InFlight>,
    /// Request ids handed out so far.
    requests: u64,
    /// Whether the participant was in the room at least once.
    joined_once: bool,
    /// Who speaks, where the server decides it (SFU rooms: `active-speaker`); `None` until the
    /// server has said, and in mesh rooms.
    server_speaker: Option<Option<String>>,
    /// Why the participant cannot go on, once that is so.
    fatal: Option<JoinFailure>,
}

impl Presence {
    /// `username` about to join `room`.
    pub fn new(room: &str, username: &str) -> Presence {
        Presence {
            room: room.to_owned(),
            username: username.to_owned(),
            status: Status::Connecting,
            capacity: 0,
            participants: Vec::new(),
            ice_servers: Vec::new(),
            published: Vec::new(),
            sessions: HashMap::new(),
            pending_plays: VecDeque::new(),
            held_plays: Vec::new(),
            held_chat: VecDeque::new(),
            chat_in_flight: VecDeque::new(),
            requests: 0,
            joined_once: false,
            server_speaker: None,
            fatal: None,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Everyone else and their streams (empty unless joined).
    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    /// The ICE servers of the latest join.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    /// Whether the participant was in the room at least once (a later failure to connect is
    /// then worth retrying forever).
    pub fn joined_once(&self) -> bool {
        self.joined_once
    }

    /// A new subscriber: its first events, the status and (when joined) the room as it is now,
    /// or the reason of a final failure.
    pub fn subscribed(&self, id: SubscriberId) -> Reaction {
        let mut r = Reaction::default();
        r.to(Audience::One(id), Event::Status(self.status));
        match (&self.fatal, self.status) {
            (Some(failure), _) => r.to(Audience::One(id), Event::Fatal(failure.clone())),
            (None, Status::Joined) => {
                r.to(Audience::One(id), Event::Room(self.state_message()));
                if let Some(username) = self.server_speaker.clone() {
                    let speaker = ServerMessage::ActiveSpeaker { username };
                    r.to(Audience::One(id), Event::Room(speaker));
                }
            }
            _ => {}
        }
        r
    }

    /// A subscriber is gone: its sessions are stopped and its streams unpublished.
    pub fn unsubscribed(&mut self, id: SubscriberId) -> Reaction {
        let mut r = Reaction::default();
        self.pending_plays.retain(|p| p.owner != id);
        self.held_plays.retain(|p| p.owner != id);
        let mut sessions: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, owner)| **owner == id)
            .map(|(session, _)| session.clone())
            .collect();
        sessions.sort();
        for session in sessions {
            self.sessions.remove(&session);
            self.write(&mut r, ClientMessage::Stop { session });
        }
        let streams: Vec<String> = self
            .published
            .iter()
            .filter(|p| p.owner == id)
            .map(|p| p.info.stream.clone())
            .collect();
        for stream in streams {
            self.unpublish_into(&mut r, &stream);
        }
        r
    }

    /// Announces an own stream owned by subscriber `owner`; refused at once for an invalid name
    /// or a stream this participant already publishes.
    pub fn publish(
        &mut self,
        owner: SubscriberId,
        stream: &str,
        audio: bool,
        video: bool,
    ) -> Result<Reaction, PublishError> {
        if self.fatal.is_some() {
            return Err(PublishError::Gone);
        }
        validate_name(stream).map_err(PublishError::InvalidName)?;
        if self.published.iter().any(|p| p.info.stream == stream) {
            return Err(PublishError::StreamExists(stream.to_owned()));
        }
        let info = StreamInfo {
            stream: stream.to_owned(),
            audio,
            video,
            audio_muted: false,
            video_muted: false,
        };
        self.published.push(Published { info, owner });
        let mut r = Reaction::default();
        self.write(
            &mut r,
            ClientMessage::Publish {
                stream: stream.to_owned(),
                audio,
                video,
            },
        );
        Ok(r)
    }

    /// Withdraws an own stream.
    pub fn unpublish(&mut self, stream: &str) -> Reaction {
        let mut r = Reaction::default();
        self.unpublish_into(&mut r, stream);
        r
    }

    fn unpublish_into(&mut self, r: &mut Reaction, stream: &str) {
        let before = self.published.len();
        self.published.retain(|p| p.info.stream != stream);
        if self.published.len() != before {
            self.write(
                r,
                ClientMessage::Unpublish {
                    stream: stream.to_owned(),
                },
            );
        }
    }

    /// Sets an own stream's mute state (remembered for the rejoins).
    pub fn mute(&mut self, stream: &str, audio_muted: bool, video_muted: bool) -> Reaction {
        let mut r = Reaction::default();
        let Some(p) = self.published.iter_mut().find(|p| p.info.stream == stream) else {
            return r;
        };
        p.info.audio_muted = audio_muted;
        p.info.video_muted = video_muted;
        self.write(
            &mut r,
            ClientMessage::Mute {
                stream: stream.to_owned(),
                audio_muted,
                video_muted,
            },
        );
        r
    }

    /// Asks to play a stream for subscriber `owner`; held until the join when not joined.
    pub fn play(&mut self, owner: SubscriberId, participant: &str, stream: &str) -> Reaction {
        let mut r = Reaction::default();
        let play = Play {
            owner,
            participant: participant.to_owned(),
            stream: stream.to_owned(),
        };
        match self.status {
            Status::Joined => self.write_play(&mut r, play),
            Status::Connecting | Status::Reconnecting => self.held_plays.push(play),
            Status::Failed => {}
        }
        r
    }

    fn write_play(&mut self, r: &mut Reaction, play: Play) {
        self.write(
            r,
            ClientMessage::Play {
                participant: play.participant.clone(),
                stream: play.stream.clone(),
            },
        );
        self.pending_plays.push_back(play);
    }

    /// SDP, ICE or stop of a session: meaningful on the current connection only (dropped
    /// otherwise: sessions end with the connection).
    pub fn session(&mut self, msg: ClientMessage) -> Reaction {
        let mut r = Reaction::default();
        if self.status != Status::Joined {
            return r;
        }
        if let ClientMessage::Stop { session } = &msg {
            self.sessions.remove(session);
        }
        self.write(&mut r, msg);
        r
    }

    /// A chat message for the room (`to` = None) or one participant: written when joined (the
    /// verdict comes with the server's answer), held while the connection is away.
    pub fn chat(&mut self, ticket: ChatTicket, to: Option<String>, text: String) -> Reaction {
        let mut r = Reaction::default();
        let chat = Chat {
            to,
            text,
            ticket: Some(ticket),
        };
        match self.status {
            Status::Joined => self.write_chat(&mut r, chat),
            Status::Failed => r.answer(ticket, Err(ChatError::Gone)),
            Status::Connecting | Status::Reconnecting if self.held_chat.len() >= CHAT_HOLD => {
                r.answer(ticket, Err(ChatError::HoldFull))
            }
            Status::Connecting | Status::Reconnecting => {
                r.answer(ticket, Ok(ChatSent::Held));
                self.held_chat.push_back(Chat {
                    ticket: None,
                    ..chat
                });
            }
        }
        r
    }

    fn write_chat(&mut self, r: &mut Reaction, chat: Chat) {
        let msg = ClientMessage::Message {
            to: chat.to.clone(),
            text: chat.text.clone(),
        };
        let id = self.write(r, msg);
        self.chat_in_flight.push_back(InFlight { id, chat });
    }

    /// Queues `msg` for the server with a fresh request id, which it returns; nothing is
    /// written while not joined (what matters is written with the join).
    fn write(&mut self, r: &mut Reaction, msg: ClientMessage) -> String {
        self.requests += 1;
        // The message's wire type first, so a log line or a refusal reads `message-12`, `publish-3`.
        let id = format!("{}-{}", msg.kind(), self.requests);
        if self.status == Status::Joined {
            r.send.push(WithId {
                id: Some(id.clone()),
                msg,
            });
        }
        id
    }

    /// In the room (`state` is the server's answer to the join): everyone hears it; own
    /// streams are announced again with their mute state; held plays and chat are written.
    pub fn joined(&mut self, state: ServerMessage) -> Reaction {
        let mut r = Reaction::default();
        if let ServerMessage::State {
            capacity,
            participants,
            ice_servers,
            ..
        } = state
        {
            self.capacity = capacity;
            self.participants = participants;
            self.ice_servers = ice_servers;
        }
        self.status = Status::Joined;
        self.joined_once = true;
        r.to(Audience::Everyone, Event::Status(Status::Joined));
        r.to(Audience::Everyone, Event::Room(self.state_message()));
        let announcements: Vec<ClientMessage> = self
            .published
            .iter()
            .flat_map(|p| announce(&p.info))
            .collect();
        for msg in announcements {
            self.write(&mut r, msg);
        }
        for play in std::mem::take(&mut self.held_plays) {
            self.write_play(&mut r, play);
        }
        for chat in std::mem::take(&mut self.held_chat) {
            self.write_chat(&mut r, chat);
        }
        r
    }

    /// The connection broke (`unsent`: what the actor could not write any more). Sessions end,
    /// plays in flight are forgotten, chat not written yet waits for the rejoin again, chat
    /// written but not answered is unconfirmed.
    pub fn lost(&mut self, unsent: Vec<WithId<ClientMessage>>) -> Reaction {
        let mut r = Reaction::default();
        self.set_status(&mut r, Status::Reconnecting);
        let mut sessions: Vec<(String, SubscriberId)> =
            std::mem::take(&mut self.sessions).into_iter().collect();
        sessions.sort();
        for (session, owner) in sessions {
            let ended = ServerMessage::SessionEnded {
                session,
                reason: "connection lost".into(),
            };
            r.to(Audience::One(owner), Event::Session(ended));
        }
        self.pending_plays.clear();
        let unsent: Vec<String> = unsent.into_iter().filter_map(|m| m.id).collect();
        let (not_written, unanswered): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.chat_in_flight)
                .into_iter()
                .partition(|f| unsent.contains(&f.id));
        for f in not_written.into_iter().rev() {
            if let Some(ticket) = f.chat.ticket {
                r.answer(ticket, Ok(ChatSent::Held));
            }
            self.held_chat.push_front(Chat {
                ticket: None,
                ..f.chat
            });
        }
        for f in unanswered {
            if let Some(ticket) = f.chat.ticket {
                r.answer(ticket, Err(ChatError::Unconfirmed));
            }
        }
        r
    }

    /// The join was refused or the server is unreachable: final.
    pub fn failed(&mut self, failure: JoinFailure) -> Reaction {
        let mut r = Reaction::default();
        self.set_status(&mut r, Status::Failed);
        r.to(Audience::Everyone, Event::Fatal(failure.clone()));
        self.held_chat.clear();
        self.held_plays.clear();
        self.fatal = Some(failure);
        r
    }

    fn set_status(&mut self, r: &mut Reaction, status: Status) {
        self.status = status;
        if status != Status::Joined {
            self.participants.clear();
            self.server_speaker = None;
        }
        r.to(Audience::Everyone, Event::Status(status));
    }

    /// A message from the server while joined.
    pub fn on_server(&mut self, msg: WithId<ServerMessage>) -> Reaction {
        let mut r = Reaction::default();
        let WithId { id, msg } = msg;
        update_view(&mut self.participants, &msg);
        match msg {
            ServerMessage::Welcome { .. } | ServerMessage::State { .. } => {}
            // Only a join is answered with `failed`, and the actor joins once per connection.
            ServerMessage::Failed { .. } => {}
            ServerMessage::Error { code, message } => {
                match self.take_in_flight(|f| Some(&f.id) == id.as_ref()) {
                    Some(InFlight {
                        chat:
                            Chat {
                                ticket: Some(ticket),
                                ..
                            },
                        ..
                    }) => r.answer(ticket, Err(ChatError::Refused { code, message })),
                    // A request nobody waits for (held chat included): everyone is told.
                    _ => r.to(
                        Audience::Everyone,
                        Event::Room(ServerMessage::Error { code, message }),
                    ),
                }
            }
            ServerMessage::Message {
                ref from,
                ref to,
                ref text,
                ..
            } => {
                if *from == self.username {
                    let accepted =
                        self.take_in_flight(|f| f.chat.to == *to && f.chat.text == *text);
                    if let Some(ticket) = accepted.and_then(|f| f.chat.ticket) {
                        r.answer(ticket, Ok(ChatSent::Accepted));
                    }
                }
                r.to(Audience::Everyone, Event::Room(msg));
            }
            ServerMessage::Joined { .. }
            | ServerMessage::Left { .. }
            | ServerMessage::Published { .. }
            | ServerMessage::Unpublished { .. }
            | ServerMessage::Muted { .. } => r.to(Audience::Everyone, Event::Room(msg)),
            ServerMessage::ActiveSpeaker { ref username } => {
                self.server_speaker = Some(username.clone());
                r.to(Audience::Everyone, Event::Room(msg));
            }
            ServerMessage::SessionRequest {
                ref session,
                ref stream,
                ..
            } => {
                let owner = self
                    .published
                    .iter()
                    .find(|p| p.info.stream == *stream)
                    .map(|p| p.owner);
                match owner {
                    Some(owner) => {
                        self.sessions.insert(session.clone(), owner);
                        r.to(Audience::One(owner), Event::Session(msg));
                    }
                    None => {
                        let session = session.clone();
                        self.write(&mut r, ClientMessage::Stop { session });
                    }
                }
            }
            ServerMessage::SessionStarted {
                ref session,
                ref participant,
                ref stream,
            } => {
                let position = self
                    .pending_plays
                    .iter()
                    .position(|p| p.participant == *participant && p.stream == *stream);
                match position.and_then(|i| self.pending_plays.remove(i)) {
                    Some(play) => {
                        self.sessions.insert(session.clone(), play.owner);
                        r.to(Audience::One(play.owner), Event::Session(msg));
                    }
                    // Its player has gone meanwhile: nobody wants this session.
                    None => {
                        let session = session.clone();
                        self.write(&mut r, ClientMessage::Stop { session });
                    }
                }
            }
            ServerMessage::Sdp { ref session, .. } | ServerMessage::Ice { ref session, .. } => {
                if let Some(owner) = self.sessions.get(session).copied() {
                    r.to(Audience::One(owner), Event::Session(msg));
                }
            }
            ServerMessage::SessionEnded { ref session, .. } => {
                if let Some(owner) = self.sessions.remove(session) {
                    r.to(Audience::One(owner), Event::Session(msg));
                }
            }
        }
        r
    }

    fn take_in_flight(&mut self, which: impl Fn(&InFlight) -> bool) -> Option<InFlight> {
        let i = self.chat_in_flight.iter().position(which)?;
        self.chat_in_flight.remove(i)
    }

    /// The room as it is now, as the server's `state` reads.
    fn state_message(&self) -> ServerMessage {
        ServerMessage::State {
            room: self.room.clone(),
            username: self.username.clone(),
            capacity: self.capacity,
            participants: self.participants.clone(),
            ice_servers: self.ice_servers.clone(),
        }
    }
}

/// What announces an own stream on a (re)join: `publish`, and `mute` when muted.
fn announce(s: &StreamInfo) -> Vec<ClientMessage> {
    let mut out = vec![ClientMessage::Publish {
        stream: s.stream.clone(),
        audio: s.audio,
        video: s.video,
    }];
    if s.audio_muted || s.video_muted {
        out.push(ClientMessage::Mute {
            stream: s.stream.clone(),
            audio_muted: s.audio_muted,
            video_muted: s.video_muted,
        });
    }
    out
}

/// Keeps the list of other participants and their streams in step with room events.
fn update_view(participants: &mut Vec<Participant>, msg: &ServerMessage) {
    let find = |participants: &mut Vec<Participant>, name: &str| {
        participants.iter_mut().position(|p| p.username == name)
    };
    match msg {
        ServerMessage::State {
            participants: everyone,
            ..
        } => *participants = everyone.clone(),
        ServerMessage::Joined { username } => participants.push(Participant {
            username: username.clone(),
            streams: Vec::new(),
        }),
        ServerMessage::Left { username } => participants.retain(|p| &p.username != username),
        ServerMessage::Published { username, stream } => {
            if let Some(i) = find(participants, username) {
                participants[i].streams.push(stream.clone());
            }
        }
        ServerMessage::Unpublished { username, stream } => {
            if let Some(i) = find(participants, username) {
                participants[i].streams.retain(|s| &s.stream != stream);
            }
        }
        ServerMessage::Muted {
            username,
            stream,
            audio_muted,
            video_muted,
        } => {
            if let Some(i) = find(participants, username)
                && let Some(s) = participants[i]
                    .streams
                    .iter_mut()
                    .find(|s| &s.stream == stream)
            {
                s.audio_muted = *audio_muted;
                s.video_muted = *video_muted;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use room_protocol::{ErrorCode, FailReason, SdpType, SessionDescription};

    use super::*;

    const PUBLISHER: SubscriberId = 1;
    const PLAYER: SubscriberId = 2;

    fn joined() -> Presence {
        let mut p = Presence::new("demo", "me");
        let _ = p.joined(state(vec![bob_with("main")]));
        p
    }

    fn state(participants: Vec<Participant>) -> ServerMessage {
        ServerMessage::State {
            room: "demo".into(),
            username: "me".into(),
            capacity: 3,
            participants,
            ice_servers: Vec::new(),
        }
    }

    fn bob_with(stream: &str) -> Participant {
        Participant {
            username: "bob".into(),
            streams: vec![info(stream)],
        }
    }

    fn info(stream: &str) -> StreamInfo {
        StreamInfo {
            stream: stream.into(),
            audio: true,
            video: true,
            audio_muted: false,
            video_muted: false,
        }
    }

    fn server(msg: ServerMessage) -> WithId<ServerMessage> {
        WithId { id: None, msg }
    }

    fn answering(id: &str, msg: ServerMessage) -> WithId<ServerMessage> {
        WithId {
            id: Some(id.into()),
            msg,
        }
    }

    fn publishes(p: &Presence, username: &str, stream: &str) -> bool {
        p.participants()
            .iter()
            .any(|u| u.username == username && u.streams.iter().any(|s| s.stream == stream))
    }

    /// The messages of a reaction, without their ids.
    fn sent(r: &Reaction) -> Vec<ClientMessage> {
        r.send.iter().map(|m| m.msg.clone()).collect()
    }

    fn chat_text(text: &str) -> ClientMessage {
        ClientMessage::Message {
            to: None,
            text: text.into(),
        }
    }

    fn own_chat_back(text: &str) -> ServerMessage {
        ServerMessage::Message {
            from: "me".into(),
            to: None,
            text: text.into(),
            ts: 1,
        }
    }

    fn rate_limited() -> ServerMessage {
        ServerMessage::Error {
            code: ErrorCode::RateLimited,
            message: "too many chat messages".into(),
        }
    }

    #[test]
    fn a_join_tells_everyone_and_announces_own_streams_with_their_mute_state() {
        let mut p = Presence::new("demo", "me");
        let _ = p.publish(PUBLISHER, "main", true, true).unwrap();
        let _ = p.mute("main", false, true);
        let _ = p.play(PLAYER, "bob", "main");
        let r = p.joined(state(vec![bob_with("main")]));
        assert_eq!(
            r.events,
            vec![
                (Audience::Everyone, Event::Status(Status::Joined)),
                (
                    Audience::Everyone,
                    Event::Room(state(vec![bob_with("main")]))
                ),
            ]
        );
        assert_eq!(
            sent(&r),
            vec![
                ClientMessage::Publish {
                    stream: "main".into(),
                    audio: true,
                    video: true
                },
                ClientMessage::Mute {
                    stream: "main".into(),
                    audio_muted: false,
                    video_muted: true
                },
                ClientMessage::Play {
                    participant: "bob".into(),
                    stream: "main".into()
                },
            ]
        );
        // Every request carries its own id.
        let ids: Vec<_> = r.send.iter().map(|m| m.id.clone().unwrap()).collect();
        assert_eq!(ids, ["publish-3", "mute-4", "play-5"]);
        assert!(publishes(&p, "bob", "main"));
    }

    #[test]
    fn nothing_is_written_before_the_join() {
        let mut p = Presence::new("demo", "me");
        let r = p.publish(PUBLISHER, "main", true, true).unwrap();
        assert!(r.send.is_empty());
        assert!(
            p.session(ClientMessage::Stop {
                session: "s".into()
            })
            .send
            .is_empty()
        );
        assert_eq!(
            p.publish(PUBLISHER, "main", true, true),
            Err(PublishError::StreamExists("main".into()))
        );
        assert!(matches!(
            p.publish(PUBLISHER, "a b", true, true),
            Err(PublishError::InvalidName(_))
        ));
    }

    #[test]
    fn a_subscriber_that_comes_later_gets_the_room_as_it_is_now() {
        let mut p = joined();
        let _ = p.on_server(server(ServerMessage::Left {
            username: "bob".into(),
        }));
        let r = p.subscribed(7);
        assert_eq!(
            r.events,
            vec![
                (Audience::One(7), Event::Status(Status::Joined)),
                (Audience::One(7), Event::Room(state(Vec::new()))),
            ]
        );
    }

    #[test]
    fn the_servers_speaker_goes_to_everyone_and_to_a_subscriber_that_comes_later() {
        let mut p = joined();
        let speaker = ServerMessage::ActiveSpeaker {
            username: Some("bob".into()),
        };
        let r = p.on_server(server(speaker.clone()));
        assert_eq!(
            r.events,
            [(Audience::Everyone, Event::Room(speaker.clone()))]
        );
        let r = p.subscribed(7);
        assert_eq!(
            r.events,
            vec![
                (Audience::One(7), Event::Status(Status::Joined)),
                (Audience::One(7), Event::Room(state(vec![bob_with("main")]))),
                (Audience::One(7), Event::Room(speaker)),
            ]
        );
        // Away from the room, nothing is known until the server says again.
        let _ = p.lost(Vec::new());
        let _ = p.joined(state(Vec::new()));
        assert_eq!(p.subscribed(8).events.len(), 2);
    }

    #[test]
    fn room_events_go_to_everyone_as_the_server_sent_them_and_keep_the_view() {
        let mut p = joined();
        let published = ServerMessage::Published {
            username: "bob".into(),
            stream: info("screen"),
        };
        let r = p.on_server(server(published.clone()));
        assert_eq!(r.events, vec![(Audience::Everyone, Event::Room(published))]);
        assert!(publishes(&p, "bob", "screen"));
        let muted = ServerMessage::Muted {
            username: "bob".into(),
            stream: "screen".into(),
            audio_muted: true,
            video_muted: false,
        };
        let _ = p.on_server(server(muted));
        assert!(p.participants()[0].streams[1].audio_muted);
        let _ = p.on_server(server(ServerMessage::Unpublished {
            username: "bob".into(),
            stream: "main".into(),
        }));
        assert!(!publishes(&p, "bob", "main"));
        let r = p.on_server(server(ServerMessage::Joined {
            username: "carol".into(),
        }));
        assert_eq!(r.events.len(), 1);
        assert_eq!(p.participants().len(), 2);
    }

    #[test]
    fn session_messages_go_to_the_session_owner_only() {
        let mut p = joined();
        let _ = p.publish(PUBLISHER, "main", true, true).unwrap();
        let request = ServerMessage::SessionRequest {
            session: "s1".into(),
            stream: "main".into(),
            viewer: "bob".into(),
        };
        let r = p.on_server(server(request.clone()));
        assert_eq!(
            r.events,
            vec![(Audience::One(PUBLISHER), Event::Session(request))]
        );
        let answer = ServerMessage::Sdp {
            session: "s1".into(),
            description: SessionDescription {
                kind: SdpType::Answer,
                sdp: "v=0\r\n".into(),
            },
        };
        let r = p.on_server(server(answer.clone()));
        assert_eq!(
            r.events,
            vec![(Audience::One(PUBLISHER), Event::Session(answer))]
        );
        // Someone else's session: nobody hears of it.
        let stray = ServerMessage::Ice {
            session: "s9".into(),
            candidate: "candidate:1".into(),
            sdp_m_line_index: 0,
            sdp_mid: None,
        };
        assert_eq!(p.on_server(server(stray)), Reaction::default());
        let ended = ServerMessage::SessionEnded {
            session: "s1".into(),
            reason: "viewer left".into(),
        };
        let r = p.on_server(server(ended.clone()));
        assert_eq!(
            r.events,
            vec![(Audience::One(PUBLISHER), Event::Session(ended.clone()))]
        );
        // Ended once.
        assert!(p.on_server(server(ended)).events.is_empty());
    }

    #[test]
    fn a_session_nobody_wants_is_stopped() {
        let mut p = joined();
        let request = ServerMessage::SessionRequest {
            session: "s1".into(),
            stream: "gone".into(),
            viewer: "bob".into(),
        };
        let r = p.on_server(server(request));
        assert!(r.events.is_empty());
        assert_eq!(
            sent(&r),
            vec![ClientMessage::Stop {
                session: "s1".into()
            }]
        );
        let started = ServerMessage::SessionStarted {
            session: "s2".into(),
            participant: "bob".into(),
            stream: "main".into(),
        };
        let r = p.on_server(server(started));
        assert_eq!(
            sent(&r),
            vec![ClientMessage::Stop {
                session: "s2".into()
            }]
        );
    }

    #[test]
    fn plays_are_answered_in_order_to_their_owners() {
        let mut p = joined();
        let _ = p.play(PLAYER, "bob", "main");
        let _ = p.play(PUBLISHER, "bob", "main");
        let started = |session: &str| ServerMessage::SessionStarted {
            session: session.into(),
            participant: "bob".into(),
            stream: "main".into(),
        };
        let r = p.on_server(server(started("s1")));
        assert_eq!(
            r.events,
            vec![(Audience::One(PLAYER), Event::Session(started("s1")))]
        );
        let r = p.on_server(server(started("s2")));
        assert_eq!(
            r.events,
            vec![(Audience::One(PUBLISHER), Event::Session(started("s2")))]
        );
    }

    #[test]
    fn an_accepted_chat_message_is_answered_when_it_comes_back() {
        let mut p = joined();
        let r = p.chat(10, None, "hi".into());
        assert_eq!(sent(&r), vec![chat_text("hi")]);
        assert!(r.chat_answers.is_empty(), "the server decides");
        let r = p.on_server(server(own_chat_back("hi")));
        assert_eq!(r.chat_answers, vec![(10, Ok(ChatSent::Accepted))]);
        assert_eq!(
            r.events,
            vec![(Audience::Everyone, Event::Room(own_chat_back("hi")))]
        );
    }

    #[test]
    fn a_refused_chat_message_is_answered_with_the_code_and_told_to_nobody_else() {
        let mut p = joined();
        let first = p.chat(10, None, "one".into());
        let second = p.chat(11, None, "two".into());
        let second_id = second.send[0].id.clone().unwrap();
        assert_ne!(first.send[0].id, second.send[0].id);
        let r = p.on_server(answering(&second_id, rate_limited()));
        assert_eq!(
            r.chat_answers,
            vec![(
                11,
                Err(ChatError::Refused {
                    code: ErrorCode::RateLimited,
                    message: "too many chat messages".into()
                })
            )]
        );
        assert!(r.events.is_empty());
        // The first one is still waiting, and is the one that comes back.
        let r = p.on_server(server(own_chat_back("one")));
        assert_eq!(r.chat_answers, vec![(10, Ok(ChatSent::Accepted))]);
    }

    #[test]
    fn an_error_nobody_waits_for_goes_to_everyone() {
        let mut p = joined();
        let r = p.on_server(answering("publish-99", rate_limited()));
        assert_eq!(
            r.events,
            vec![(Audience::Everyone, Event::Room(rate_limited()))]
        );
        assert!(r.chat_answers.is_empty());
    }

    #[test]
    fn chat_while_away_is_held_then_written_after_the_rejoin_and_its_refusal_told_to_everyone() {
        let mut p = joined();
        let _ = p.lost(Vec::new());
        for ticket in 0..CHAT_HOLD as u64 {
            let r = p.chat(ticket, None, format!("held {ticket}"));
            assert_eq!(r.chat_answers, vec![(ticket, Ok(ChatSent::Held))]);
            assert!(r.send.is_empty());
        }
        let r = p.chat(99, None, "one too many".into());
        assert_eq!(r.chat_answers, vec![(99, Err(ChatError::HoldFull))]);
        let r = p.joined(state(Vec::new()));
        let held: Vec<_> = (0..CHAT_HOLD)
            .map(|i| chat_text(&format!("held {i}")))
            .collect();
        assert_eq!(sent(&r), held);
        let id = r.send[0].id.clone().unwrap();
        let r = p.on_server(answering(&id, rate_limited()));
        assert!(r.chat_answers.is_empty(), "its caller was told: held");
        assert_eq!(
            r.events,
            vec![(Audience::Everyone, Event::Room(rate_limited()))]
        );
    }

    #[test]
    fn a_lost_connection_ends_sessions_and_keeps_what_was_not_written() {
        let mut p = joined();
        let _ = p.publish(PUBLISHER, "main", true, true).unwrap();
        let _ = p.on_server(server(ServerMessage::SessionRequest {
            session: "s1".into(),
            stream: "main".into(),
            viewer: "bob".into(),
        }));
        let written = p.chat(1, None, "written".into());
        let unwritten = p.chat(2, None, "not written".into());
        let r = p.lost(unwritten.send);
        assert_eq!(
            r.events,
            vec![
                (Audience::Everyone, Event::Status(Status::Reconnecting)),
                (
                    Audience::One(PUBLISHER),
                    Event::Session(ServerMessage::SessionEnded {
                        session: "s1".into(),
                        reason: "connection lost".into()
                    })
                ),
            ]
        );
        assert_eq!(
            r.chat_answers,
            vec![(2, Ok(ChatSent::Held)), (1, Err(ChatError::Unconfirmed))]
        );
        assert!(written.chat_answers.is_empty());
        assert!(p.participants().is_empty());
        let r = p.joined(state(Vec::new()));
        assert_eq!(
            sent(&r),
            vec![
                ClientMessage::Publish {
                    stream: "main".into(),
                    audio: true,
                    video: true
                },
                chat_text("not written")
            ]
        );
    }

    #[test]
    fn a_subscriber_that_goes_stops_its_sessions_and_unpublishes_its_streams() {
        let mut p = joined();
        let _ = p.publish(PUBLISHER, "main", true, true).unwrap();
        let _ = p.publish(PLAYER, "other", true, false).unwrap();
        let _ = p.on_server(server(ServerMessage::SessionRequest {
            session: "s1".into(),
            stream: "main".into(),
            viewer: "bob".into(),
        }));
        let r = p.unsubscribed(PUBLISHER);
        assert_eq!(
            sent(&r),
            vec![
                ClientMessage::Stop {
                    session: "s1".into()
                },
                ClientMessage::Unpublish {
                    stream: "main".into()
                },
            ]
        );
        // Its stream can be published again (by someone else), the other one not.
        assert!(p.publish(PLAYER, "main", true, true).is_ok());
        assert!(p.publish(PUBLISHER, "other", true, true).is_err());
    }

    #[test]
    fn a_final_failure_is_told_to_everyone_and_to_later_subscribers() {
        let mut p = Presence::new("demo", "me");
        let failure = JoinFailure::Refused {
            reason: FailReason::RoomFull,
            detail: "room demo is full".into(),
        };
        let r = p.failed(failure.clone());
        assert_eq!(
            r.events,
            vec![
                (Audience::Everyone, Event::Status(Status::Failed)),
                (Audience::Everyone, Event::Fatal(failure.clone())),
            ]
        );
        assert_eq!(
            p.subscribed(3).events,
            vec![
                (Audience::One(3), Event::Status(Status::Failed)),
                (Audience::One(3), Event::Fatal(failure)),
            ]
        );
        assert_eq!(p.publish(1, "main", true, true), Err(PublishError::Gone));
        assert_eq!(
            p.chat(5, None, "hi".into()).chat_answers,
            vec![(5, Err(ChatError::Gone))]
        );
    }
}
