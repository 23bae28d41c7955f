//! Property tests of the room rules: arbitrary sequences of operations by several participants,
//! with the invariants checked after every step. `PROPTEST_CASES` sets the number of sequences
//! (CI: the default below; `scripts/fuzz.sh`: a million).

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::auth::{Grants, Refusal};

const PEERS: u64 = 5;
const CAPACITY: usize = 3;
const MAX_STREAMS: usize = 4;
const ROOMS: [&str; 2] = ["a", "b"];
const NAMES: [&str; 4] = ["ann", "bob", "cy", "bad name"];
const STREAMS: [&str; 6] = ["s0", "s1", "s2", "s3", "s4", ""];

#[derive(Debug, Clone)]
enum Op {
    Connect(PeerId),
    Disconnect(PeerId),
    /// A join whose token was checked at the edge: the grants it carries, or a refusal.
    Join(PeerId, String, String, Option<Grants>),
    /// Any other message (a `join` arriving here is one whose token nobody verified).
    Send(PeerId, ClientMessage),
}

fn name(i: usize) -> String {
    NAMES[i % NAMES.len()].to_owned()
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    let stream = (0..STREAMS.len()).prop_map(|i| STREAMS[i].to_owned());
    let session = (0u64..12).prop_map(|i| format!("s{i}"));
    prop_oneof![
        1 => (0..ROOMS.len(), 0..NAMES.len()).prop_map(|(r, n)| ClientMessage::Join {
            room: ROOMS[r].into(),
            username: name(n),
            token: None,
        }),
        1 => Just(ClientMessage::Leave {}),
        3 => (stream.clone(), any::<bool>()).prop_map(|(stream, video)| ClientMessage::Publish {
            stream,
            audio: true,
            video,
        }),
        1 => stream.clone().prop_map(|stream| ClientMessage::Unpublish { stream }),
        1 => stream.clone().prop_map(|stream| ClientMessage::Mute {
            stream,
            audio_muted: true,
            video_muted: false,
        }),
        1 => (proptest::option::of(0..NAMES.len()), "[a-z]{0,3}")
            .prop_map(|(to, text)| ClientMessage::Message { to: to.map(name), text }),
        4 => (0..NAMES.len(), stream).prop_map(|(n, stream)| ClientMessage::Play {
            participant: name(n),
            stream,
        }),
        2 => (session.clone(), any::<bool>()).prop_map(|(session, offer)| ClientMessage::Sdp {
            session,
            description: SessionDescription {
                kind: if offer { SdpType::Offer } else { SdpType::Answer },
                sdp: "v=0\r\n".into(),
            },
        }),
        1 => session.clone().prop_map(|session| ClientMessage::Ice {
            session,
            candidate: "candidate:1".into(),
            sdp_m_line_index: 0,
            sdp_mid: None,
        }),
        2 => session.prop_map(|session| ClientMessage::Stop { session }),
    ]
}

fn grants() -> impl Strategy<Value = Option<Grants>> {
    proptest::option::weighted(
        0.9,
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(publish, subscribe, chat)| {
            Grants {
                publish,
                subscribe,
                chat,
                admin: false,
            }
        }),
    )
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 1..=PEERS;
    prop_oneof![
        2 => peer.clone().prop_map(Op::Connect),
        1 => peer.clone().prop_map(Op::Disconnect),
        4 => (peer.clone(), 0..ROOMS.len(), 0..NAMES.len(), grants())
            .prop_map(|(p, r, n, g)| Op::Join(p, ROOMS[r].into(), name(n), g)),
        12 => (peer, client_message()).prop_map(|(p, m)| Op::Send(p, m)),
    ]
}

fn is_join_answer(msg: &ServerMessage) -> bool {
    matches!(
        msg,
        ServerMessage::State { .. } | ServerMessage::Failed { .. }
    )
}

/// Everything that must hold between any two operations.
fn check_invariants(rooms: &Rooms) -> Result<(), TestCaseError> {
    let mut members_seen = HashSet::new();
    for (name, room) in &rooms.rooms {
        prop_assert!(!room.members.is_empty(), "empty room {name} kept");
        prop_assert!(room.members.len() <= CAPACITY, "room {name} over capacity");
        let mut usernames = HashSet::new();
        for peer in &room.members {
            prop_assert!(members_seen.insert(*peer), "peer {peer} in two rooms");
            let member = rooms.member(*peer);
            prop_assert!(
                member.is_some(),
                "room {name} lists {peer}, who is not a member"
            );
            let member = member.unwrap();
            prop_assert_eq!(&member.room, name);
            prop_assert!(
                usernames.insert(member.username.clone()),
                "name taken twice"
            );
            prop_assert!(member.streams.len() <= MAX_STREAMS, "too many streams");
        }
    }
    for (peer, state) in &rooms.peers {
        if state.member.is_some() {
            prop_assert!(
                members_seen.contains(peer),
                "member {peer} missing from its room"
            );
        }
    }
    let mut plays = HashSet::new();
    for (id, s) in &rooms.sessions {
        // Two live ends, in one room, and the stream still published by its publisher (these
        // rooms are mesh rooms: every session has a viewer).
        let viewer = s.viewer.and_then(|v| rooms.member(v));
        let (Some(publisher), Some(viewer)) = (rooms.member(s.publisher), viewer) else {
            return Err(TestCaseError::fail(format!(
                "session {id} has an end that left"
            )));
        };
        prop_assert_eq!(&publisher.room, &viewer.room);
        prop_assert!(Some(s.publisher) != s.viewer);
        prop_assert!(
            publisher.streams.iter().any(|info| info.stream == s.stream),
            "session {} outlived its stream",
            id
        );
        prop_assert!(
            plays.insert((s.publisher, s.viewer, s.stream.clone())),
            "two sessions for one viewer and stream"
        );
    }
    Ok(())
}

fn apply(rooms: &mut Rooms, op: &Op) -> Result<(), TestCaseError> {
    let out = match op {
        Op::Connect(peer) if !rooms.is_connected(*peer) => rooms.connect(*peer),
        Op::Connect(_) => return Ok(()),
        Op::Join(peer, room, username, grants) => {
            let connected = rooms.is_connected(*peer);
            let admitted = grants.ok_or_else(|| Refusal::Wrong("a wrong token".into()));
            let out = rooms.join(
                *peer,
                room.clone(),
                username.clone(),
                admitted,
                SystemTime::now(),
            );
            let answers = out
                .iter()
                .filter(|(to, m)| to == peer && is_join_answer(m))
                .count();
            prop_assert_eq!(answers, usize::from(connected), "join answers: {:?}", out);
            out
        }
        Op::Disconnect(peer) => {
            let out = rooms.disconnect(*peer);
            prop_assert!(
                out.iter().all(|(to, _)| to != peer),
                "message to a closed peer"
            );
            out
        }
        Op::Send(peer, msg) => {
            let connected = rooms.is_connected(*peer);
            let out = rooms.handle(*peer, msg.clone());
            let answers = out
                .iter()
                .filter(|(to, m)| to == peer && is_join_answer(m))
                .count();
            let expected = usize::from(connected && matches!(msg, ClientMessage::Join { .. }));
            prop_assert_eq!(answers, expected, "join answers to {:?}: {:?}", msg, out);
            prop_assert!(
                out.iter().all(|(to, m)| to == peer || !is_join_answer(m)),
                "a join answer reached someone else"
            );
            out
        }
    };
    prop_assert!(
        out.iter().all(|(to, _)| rooms.is_connected(*to)),
        "message to an unknown peer: {:?}",
        out
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
    ))]

    #[test]
    fn room_rules_keep_their_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut rooms = Rooms::new(RoomRules {
            capacity: CAPACITY,
            ice_servers: Vec::new(),
            max_streams: MAX_STREAMS,
            media: Default::default(),
            turn: None,
        });
        for op in &ops {
            apply(&mut rooms, op)?;
            check_invariants(&rooms)?;
        }
    }
}
