//! Unit tests of the routing rules: nodes as plain values, envelopes handed from one to the
//! other by the test, Redis's answers (the lease holder, the member record, who is alive)
//! given as arguments.

use std::time::{Duration, SystemTime};

use room_protocol::{ClientMessage, FailReason, ServerMessage};

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
}

fn rules() -> RoomRules {
    RoomRules {
        capacity: 3,
        ice_servers: Vec::new(),
        turn: None,
        max_streams: 4,
        media: Default::default(),
    }
}

/// A node of a cluster, numbering its sessions from `first_session`.
fn node(name: &str, first_session: u64) -> Routing {
    let mut routing = Routing::new(rules());
    routing.join_cluster(name.into(), first_session);
    routing
}

fn kind(msg: &ServerMessage) -> String {
    serde_json::to_value(msg).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One line per action: `send PEER TYPE [#ID]`, `close PEER`, `push NODE KIND …`,
/// `members ROOM USER@NODE/PEER …`.
fn describe(actions: &Actions) -> Vec<String> {
    actions
        .iter()
        .map(|action| match action {
            Action::Send { peer, msg, id } => match id {
                Some(id) => format!("send {peer} {} #{id}", kind(msg)),
                None => format!("send {peer} {}", kind(msg)),
            },
            Action::Close { peer } => format!("close {peer}"),
            Action::Media(command) => format!("media {command:?}"),
            Action::Remote(Outbound::Push { node, envelope }) => {
                format!("push {node} {}", describe_envelope(envelope))
            }
            Action::Remote(Outbound::Members { room, members }) => {
                let members: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}@{}/{}", m.record.username, m.node, m.peer))
                    .collect();
                format!("members {room} [{}]", members.join(" "))
            }
        })
        .collect()
}

fn describe_envelope(envelope: &Envelope) -> String {
    match envelope {
        Envelope::Join { peer, room, .. } => format!("join {peer} {room}"),
        Envelope::Client { peer, msg, .. } => {
            let msg = serde_json::to_value(msg).unwrap();
            format!("client {peer} {}", msg["type"].as_str().unwrap())
        }
        Envelope::Disconnect { peer, .. } => format!("disconnect {peer}"),
        Envelope::Claim { room, peers, .. } => format!("claim {room} {peers:?}"),
        Envelope::Owner { from, room } => format!("owner {room} {from}"),
        Envelope::Deliver { peer, msg, id } => match id {
            Some(id) => format!("deliver {peer} {} #{id}", kind(msg)),
            None => format!("deliver {peer} {}", kind(msg)),
        },
        Envelope::Evict { peer } => format!("evict {peer}"),
    }
}

/// The envelopes of `actions` pushed to `to`, in order.
fn pushed_to(actions: &Actions, to: &str) -> Vec<Envelope> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Remote(Outbound::Push { node, envelope }) if node == to => {
                Some(envelope.clone())
            }
            _ => None,
        })
        .collect()
}

/// Hands every envelope of `actions` for `to` to it; returns what that produced.
fn hand_over(actions: &Actions, to: &mut Routing) -> Actions {
    let me = to.me();
    pushed_to(actions, &me)
        .into_iter()
        .flat_map(|envelope| to.receive(envelope, now()))
        .collect()
}

/// `room` taken over by `owner` with an empty record, as on its first join.
fn own(owner: &mut Routing, room: &str) {
    owner.take_over(room, Vec::new(), &HashSet::new(), now());
}

fn local_join(routing: &mut Routing, room: &str, name: &str) -> (PeerId, Actions) {
    let (peer, _welcome) = routing.connect();
    let out = routing.join(
        peer,
        room.into(),
        name.into(),
        Ok(Grants::PARTICIPANT),
        None,
        now(),
    );
    (peer, out)
}

/// A participant of `edge` joins `room` owned by `owner`; envelopes are handed both ways.
fn remote_join(edge: &mut Routing, owner: &mut Routing, room: &str, name: &str) -> PeerId {
    let (peer, _welcome) = edge.connect();
    let owner_name = owner.me();
    let forwarded = edge.route_join(
        peer,
        room.into(),
        name.into(),
        Grants::PARTICIPANT,
        owner_name,
        None,
    );
    let answered = hand_over(&forwarded, owner);
    hand_over(&answered, edge);
    peer
}

fn publish(stream: &str) -> ClientMessage {
    ClientMessage::Publish {
        stream: stream.into(),
        audio: true,
        video: true,
    }
}

#[test]
fn a_single_node_only_sends_to_its_connections() {
    let mut alone = Routing::new(rules());
    let (ann, out) = local_join(&mut alone, "r", "ann");
    assert_eq!(describe(&out), [format!("send {ann} state")]);
    let (bob, out) = local_join(&mut alone, "r", "bob");
    assert_eq!(
        describe(&out),
        [format!("send {bob} state"), format!("send {ann} joined")]
    );
    let out = alone.handle(bob, publish("cam"), None);
    assert_eq!(describe(&out), [format!("send {ann} published")]);
    let out = alone.disconnect(ann);
    assert_eq!(describe(&out), [format!("send {bob} left")]);
    assert!(alone.watched_nodes().is_empty());
}

#[test]
fn a_routed_participants_messages_go_to_the_owner_and_its_answers_come_back() {
    let mut edge = node("a", 1);
    let mut owner = node("b", 1_000);
    own(&mut owner, "r");
    let (peer, _) = edge.connect();
    let forwarded = edge.route_join(
        peer,
        "r".into(),
        "ann".into(),
        Grants::PARTICIPANT,
        "b".into(),
        Some("j1".into()),
    );
    assert_eq!(describe(&forwarded), [format!("push b join {peer} r")]);
    assert!(
        edge.is_joined(peer),
        "joined from the moment it is forwarded"
    );
    assert_eq!(edge.watched_nodes(), HashSet::from(["b".to_owned()]));

    let answered = owner.receive(pushed_to(&forwarded, "b").remove(0), now());
    assert_eq!(
        describe(&answered),
        [
            format!("push a deliver {peer} state"),
            format!("members r [ann@a/{peer}]")
        ]
    );
    assert_eq!(owner.watched_nodes(), HashSet::from(["a".to_owned()]));
    let delivered = hand_over(&answered, &mut edge);
    assert_eq!(describe(&delivered), [format!("send {peer} state")]);

    // A refusal at the owner echoes the request id back to the socket.
    let out = edge.handle(
        peer,
        ClientMessage::Stop {
            session: "s9".into(),
        },
        Some("q7".into()),
    );
    assert_eq!(describe(&out), [format!("push b client {peer} stop")]);
    let refused = hand_over(&out, &mut owner);
    assert_eq!(
        describe(&refused),
        [format!("push a deliver {peer} error #q7")]
    );
    assert_eq!(
        describe(&hand_over(&refused, &mut edge)),
        [format!("send {peer} error #q7")]
    );

    // A second join is refused at the edge; leave goes to the owner and ends the route.
    let join = ClientMessage::Join {
        room: "other".into(),
        username: "ann".into(),
        token: None,
    };
    let out = edge.handle(peer, join, Some("j2".into()));
    assert_eq!(describe(&out), [format!("send {peer} failed #j2")]);
    let out = edge.handle(peer, ClientMessage::Leave {}, None);
    assert_eq!(describe(&out), [format!("push b client {peer} leave")]);
    assert!(!edge.is_joined(peer));
    let left = hand_over(&out, &mut owner);
    assert_eq!(describe(&left), ["members r []"]);
}

#[test]
fn a_join_for_a_room_not_owned_is_refused_as_unavailable_with_its_id() {
    let mut edge = node("a", 1);
    let mut stale = node("b", 1);
    let (peer, _) = edge.connect();
    let forwarded = edge.route_join(
        peer,
        "r".into(),
        "ann".into(),
        Grants::PARTICIPANT,
        "b".into(),
        Some("j".into()),
    );
    let refused = hand_over(&forwarded, &mut stale);
    assert_eq!(
        describe(&refused),
        [format!("push a deliver {peer} failed #j")]
    );
    let out = hand_over(&refused, &mut edge);
    assert_eq!(describe(&out), [format!("send {peer} failed #j")]);
    assert!(!edge.is_joined(peer), "a refused join removes the route");
}

#[test]
fn joins_wait_while_the_room_is_taken_over_and_are_applied_after() {
    let mut edge = node("a", 1);
    let mut owner = node("b", 1);
    owner.begin_acquiring("r");
    let (peer, _) = edge.connect();
    let forwarded = edge.route_join(
        peer,
        "r".into(),
        "ann".into(),
        Grants::PARTICIPANT,
        "b".into(),
        None,
    );
    assert!(hand_over(&forwarded, &mut owner).is_empty(), "waits");
    let out = owner.take_over("r", Vec::new(), &HashSet::new(), now());
    assert_eq!(
        describe(&out),
        [
            "members r []".to_owned(),
            format!("push a deliver {peer} state"),
            format!("members r [ann@a/{peer}]"),
        ]
    );

    // A lease not taken after all: the waiting joins are refused.
    owner.begin_acquiring("q");
    let (other, _) = edge.connect();
    let forwarded = edge.route_join(
        other,
        "q".into(),
        "bob".into(),
        Grants::PARTICIPANT,
        "b".into(),
        None,
    );
    assert!(hand_over(&forwarded, &mut owner).is_empty());
    let out = owner.release_waiting("q", now());
    assert_eq!(describe(&out), [format!("push a deliver {other} failed")]);
}

fn stored(node: &str, peer: PeerId, name: &str, streams: &[&str]) -> StoredMember {
    StoredMember {
        node: node.into(),
        peer,
        record: MemberRecord {
            peer: 0,
            username: name.into(),
            streams: streams
                .iter()
                .map(|s| room_protocol::StreamInfo {
                    stream: (*s).into(),
                    audio: true,
                    video: true,
                    audio_muted: false,
                    video_muted: false,
                })
                .collect(),
            grants: Grants::PARTICIPANT,
        },
    }
}

#[test]
fn a_takeover_restores_the_living_silently_announces_the_dead_and_tells_edges_first() {
    // Node a's participant ann is routed to room r of node c, which died; bob is on live
    // node b, cy was on c. a takes the room over.
    let mut a = node("a", 5_000);
    let mut c = node("c", 1);
    own(&mut c, "r");
    let ann = remote_join(&mut a, &mut c, "r", "ann");
    let members = vec![
        stored("a", ann, "ann", &[]),
        stored("b", 7, "bob", &["cam"]),
        stored("c", 3, "cy", &["mic"]),
    ];
    let alive = HashSet::from(["b".to_owned()]);
    let out = a.take_over("r", members, &alive, now());
    let lines = describe(&out);
    assert_eq!(
        lines[0], "push b owner r a",
        "the edge hears of the owner first"
    );
    assert_eq!(
        lines[1..],
        [
            format!("send {ann} unpublished"),
            "push b deliver 7 unpublished".to_owned(),
            format!("send {ann} left"),
            "push b deliver 7 left".to_owned(),
            format!("members r [ann@a/{ann} bob@b/7]"),
        ]
    );
    assert!(a.owns("r"));
    assert!(a.is_joined(ann), "ann is in the room run here now");
    // ann's messages are applied here, not forwarded to the dead owner.
    let out = a.handle(ann, publish("cam2"), None);
    assert!(pushed_to(&out, "c").is_empty());
    assert_eq!(
        describe(&out),
        [
            "push b deliver 7 published".to_owned(),
            format!("members r [ann@a/{ann} bob@b/7]")
        ]
    );
}

#[test]
fn a_takeover_does_not_restore_a_participant_that_left_meanwhile() {
    let mut a = node("a", 1);
    let members = vec![stored("a", 42, "gone", &[]), stored("b", 7, "bob", &[])];
    let alive = HashSet::from(["b".to_owned()]);
    let out = a.take_over("r", members, &alive, now());
    assert_eq!(
        describe(&out),
        [
            "push b owner r a",
            "push b deliver 7 left",
            "members r [bob@b/7]"
        ]
    );
}

#[test]
fn an_edge_ends_the_sessions_of_a_dead_owner_when_it_hears_left_for_the_other_end() {
    // ann on edge a plays bob's stream; bob is on edge e; the room's owner is b. Then b and e
    // die, and d takes the room over.
    let mut a = node("a", 1);
    let mut e = node("e", 1);
    let mut b = node("b", 100);
    own(&mut b, "r");
    let ann = remote_join(&mut a, &mut b, "r", "ann");
    let bob = remote_join(&mut e, &mut b, "r", "bob");
    let out = e.handle(bob, publish("cam"), None);
    let out = hand_over(&out, &mut b);
    hand_over(&out, &mut a);
    let play = ClientMessage::Play {
        participant: "bob".into(),
        stream: "cam".into(),
    };
    let out = a.handle(ann, play, None);
    let out = hand_over(&out, &mut b);
    let started = hand_over(&out, &mut a);
    assert_eq!(describe(&started), [format!("send {ann} session-started")]);

    let (rooms, out) = a.forget_node("b");
    assert_eq!(rooms, ["r"]);
    assert!(out.is_empty(), "joined participants wait for the new owner");
    let out = a.follow("r", Some("b"), "d");
    assert_eq!(describe(&out), [format!("push d claim r [{ann}]")]);

    let mut d = node("d", 9_000);
    let members = vec![
        stored("a", ann, "ann", &[]),
        stored("e", bob, "bob", &["cam"]),
    ];
    let alive = HashSet::from(["a".to_owned()]);
    let taken = d.take_over("r", members, &alive, now());
    let heard = hand_over(&taken, &mut a);
    assert_eq!(
        describe(&heard),
        [
            format!("push d claim r [{ann}]"),
            format!("send {ann} unpublished"),
            format!("send {ann} session-ended"),
            format!("send {ann} left"),
        ]
    );
}

#[test]
fn a_new_owner_ends_its_own_participants_sessions_with_the_departed() {
    let mut a = node("a", 1);
    let mut e = node("e", 1);
    let mut b = node("b", 100);
    own(&mut b, "r");
    let ann = remote_join(&mut a, &mut b, "r", "ann");
    let bob = remote_join(&mut e, &mut b, "r", "bob");
    let out = e.handle(bob, publish("cam"), None);
    let out = hand_over(&out, &mut b);
    hand_over(&out, &mut a);
    let play = ClientMessage::Play {
        participant: "bob".into(),
        stream: "cam".into(),
    };
    let out = a.handle(ann, play, None);
    hand_over(&hand_over(&out, &mut b), &mut a);

    // b and e die; a itself takes the room over.
    let members = vec![
        stored("a", ann, "ann", &[]),
        stored("e", bob, "bob", &["cam"]),
    ];
    let out = a.take_over("r", members, &HashSet::new(), now());
    assert_eq!(
        describe(&out),
        [
            format!("send {ann} unpublished"),
            format!("send {ann} session-ended"),
            format!("send {ann} left"),
            format!("members r [ann@a/{ann}]"),
        ]
    );
}

#[test]
fn forgetting_a_dead_node_drops_its_proxies_and_fails_its_pending_joins() {
    let mut a = node("a", 1);
    let mut b = node("b", 1);
    own(&mut a, "r");
    let (ann, _) = local_join(&mut a, "r", "ann");
    let bob = remote_join(&mut b, &mut a, "r", "bob");
    // A join of b's forwarded to a, still unanswered, and one of a's to b.
    let (cy, _) = a.connect();
    let pending = a.route_join(
        cy,
        "q".into(),
        "cy".into(),
        Grants::PARTICIPANT,
        "b".into(),
        Some("j".into()),
    );
    assert_eq!(describe(&pending), [format!("push b join {cy} q")]);
    let (rooms, out) = a.forget_node("b");
    assert!(
        rooms.is_empty(),
        "no joined participant of a in a room of b"
    );
    assert_eq!(
        describe(&out),
        [
            format!("send {ann} left"),
            format!("members r [ann@a/{ann}]"),
            format!("send {cy} failed #j"),
        ]
    );
    let _ = bob;
    assert!(!a.is_joined(cy));
    assert!(a.watched_nodes().is_empty());
}

#[test]
fn a_claim_drops_the_proxies_an_edge_no_longer_has() {
    let mut a = node("a", 1);
    let mut b = node("b", 1);
    own(&mut a, "r");
    let ann = remote_join(&mut b, &mut a, "r", "ann");
    let bob = remote_join(&mut b, &mut a, "r", "bob");
    let claim = Envelope::Claim {
        from: "b".into(),
        room: "r".into(),
        peers: vec![bob],
    };
    let out = a.receive(claim, now());
    assert_eq!(
        describe(&out),
        [
            format!("push b deliver {bob} left"),
            format!("members r [bob@b/{bob}]")
        ]
    );
    let _ = ann;
}

#[test]
fn a_room_given_up_closes_its_local_participants_and_evicts_the_others() {
    let mut a = node("a", 1);
    let mut b = node("b", 1);
    own(&mut a, "r");
    let (ann, _) = local_join(&mut a, "r", "ann");
    let bob = remote_join(&mut b, &mut a, "r", "bob");
    let out = a.abandon_room("r");
    let lines = describe(&out);
    assert!(lines.contains(&format!("close {ann}")), "{lines:?}");
    assert!(lines.contains(&format!("push b evict {bob}")), "{lines:?}");
    assert!(!a.owns("r"));
    assert!(!a.is_joined(ann));
    let evicted = hand_over(&out, &mut b);
    // bob hears ann leave before it is closed itself.
    assert_eq!(
        describe(&evicted),
        [
            format!("send {bob} left"),
            format!("close {bob}"),
            format!("push a disconnect {bob}")
        ]
    );
    assert!(!b.is_joined(bob));

    // Without Redis, everything shared goes.
    let mut c = node("c", 1);
    own(&mut c, "q");
    let cy = remote_join(&mut b, &mut c, "q", "cy");
    let out = b.give_up_everything();
    assert_eq!(
        describe(&out),
        [format!("close {cy}"), format!("push c disconnect {cy}")]
    );
}

#[test]
fn an_empty_room_is_released_after_two_ticks_unless_it_refilled() {
    let mut a = node("a", 1);
    own(&mut a, "r");
    let (ann, _) = local_join(&mut a, "r", "ann");
    assert_eq!(a.leases().renew, ["r"]);
    let _ = a.disconnect(ann);
    let first = a.leases();
    assert_eq!(first.renew, ["r"], "kept a tick: a join may be on its way");
    assert!(first.release.is_empty());
    let second = a.leases();
    assert_eq!(second.release, ["r"]);
    assert!(second.renew.is_empty());
    assert_eq!(a.released("r"), (false, Vec::new()));
    assert!(!a.owns("r"));

    own(&mut a, "q");
    let _ = a.leases();
    let _ = a.leases();
    let (bob, _) = local_join(&mut a, "q", "bob");
    let (refilled, out) = a.released("q");
    assert!(refilled, "refilled while released");
    assert_eq!(
        describe(&out),
        [format!("members q [bob@a/{bob}]")],
        "written again"
    );
    assert!(a.owns("q"));
}

#[test]
fn a_node_is_dead_after_two_missed_checks_in_a_row() {
    let mut liveness = Liveness::default();
    assert!(!liveness.checked("b", false));
    assert!(!liveness.checked("b", true), "one miss is forgiven");
    assert!(!liveness.checked("b", false));
    assert!(liveness.checked("b", false));
    assert!(
        !liveness.checked("b", false),
        "reported once, then counted again"
    );
}

#[test]
fn joins_refused_at_the_edge() {
    let mut a = node("a", 1);
    let (peer, _) = a.connect();
    let ok = Ok(Grants::PARTICIPANT);
    assert!(!a.refuses_at_the_edge(peer, "r", "ann", &ok));
    assert!(a.refuses_at_the_edge(peer, "bad room!", "ann", &ok));
    assert!(a.refuses_at_the_edge(peer, "r", "", &ok));
    let wrong = Err(Refusal::Wrong("no".into()));
    assert!(a.refuses_at_the_edge(peer, "r", "ann", &wrong));
    let _ = a.route_join(
        peer,
        "r".into(),
        "ann".into(),
        Grants::PARTICIPANT,
        "b".into(),
        None,
    );
    assert!(
        a.refuses_at_the_edge(peer, "r", "ann", &ok),
        "in a room already"
    );
    let out = a.join(peer, "r".into(), "ann".into(), ok, Some("j".into()), now());
    assert_eq!(describe(&out), [format!("send {peer} failed #j")]);
    match &out[0] {
        Action::Send {
            msg: ServerMessage::Failed { reason, .. },
            ..
        } => assert_eq!(*reason, FailReason::AlreadyJoined),
        other => panic!("{other:?}"),
    }
}
