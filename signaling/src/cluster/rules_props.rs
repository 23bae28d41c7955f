//! Property tests of the routing rules: three nodes as plain values, with a model of Redis
//! between them (room leases, member records, one inbox per node), driven by arbitrary
//! operations of participants spread over the nodes. After each operation every inbox is
//! drained, as the inbox tasks would. `PROPTEST_CASES` sets the number of sequences.
//!
//! - A cluster behaves as one node: every participant receives what it would from a single
//!   node given the same operations, whichever node it is on and whichever node owns its room.
//! - After a node dies and the survivors forget it (taking its rooms over), every survivor's
//!   view of its room — who is there, which sessions are open — is the room its owner runs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use room_protocol::{SdpType, SessionDescription};

use super::*;

const NODES: usize = 3;
/// Participant `p` connects through node `p % NODES`.
const PARTICIPANTS: usize = 6;
const CAPACITY: usize = 3;
const ROOMS: [&str; 2] = ["r", "q"];
/// Participant `p` joins as `NAMES[p]`, or now and then under another's name.
const NAMES: [&str; PARTICIPANTS] = ["ann", "bob", "cy", "dee", "eve", "fay"];
const STREAMS: [&str; 2] = ["cam", "mic"];
/// Sessions are named in operations by the order in which they were started (see `Sessions`).
const SESSIONS: usize = 6;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
}

fn rules() -> RoomRules {
    RoomRules {
        capacity: CAPACITY,
        ice_servers: Vec::new(),
        turn: None,
        max_streams: 4,
        media: Default::default(),
    }
}

fn node_name(node: usize) -> String {
    format!("n{node}")
}

fn node_index(name: &str) -> usize {
    name[1..].parse().unwrap()
}

/// A message a participant sends, other than `join`.
#[derive(Debug, Clone)]
enum Msg {
    Leave,
    Publish(usize),
    Unpublish(usize),
    Mute(usize, bool),
    Chat(Option<usize>),
    Play(usize, usize),
    Sdp(usize),
    Ice(usize),
    Stop(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Disconnect(usize),
    /// Join room, as name (its own when `None`), with a token accepted or not.
    Join(usize, usize, Option<usize>, bool),
    Send(usize, Msg),
    /// Every live node's lease tick.
    Tick,
}

fn msg() -> impl Strategy<Value = Msg> {
    let stream = 0..STREAMS.len();
    let session = 0..SESSIONS;
    prop_oneof![
        1 => Just(Msg::Leave),
        5 => stream.clone().prop_map(Msg::Publish),
        1 => stream.clone().prop_map(Msg::Unpublish),
        1 => (stream.clone(), any::<bool>()).prop_map(|(s, m)| Msg::Mute(s, m)),
        2 => proptest::option::of(0..NAMES.len()).prop_map(Msg::Chat),
        8 => (0..NAMES.len(), stream).prop_map(|(n, s)| Msg::Play(n, s)),
        2 => session.clone().prop_map(Msg::Sdp),
        1 => session.clone().prop_map(Msg::Ice),
        2 => session.prop_map(Msg::Stop),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PARTICIPANTS;
    prop_oneof![
        1 => p.clone().prop_map(Op::Connect),
        1 => p.clone().prop_map(Op::Disconnect),
        4 => (
            p.clone(),
            0..ROOMS.len(),
            proptest::option::weighted(0.1, 0..NAMES.len()),
            proptest::bool::weighted(0.95),
        )
            .prop_map(|(p, r, n, ok)| Op::Join(p, r, n, ok)),
        14 => (p, msg()).prop_map(|(p, m)| Op::Send(p, m)),
        2 => Just(Op::Tick),
    ]
}

/// Raw session ids (numbered by whichever node runs the room) ↔ the order sessions started in.
#[derive(Debug, Default)]
struct Sessions {
    order: Vec<String>,
}

impl Sessions {
    /// The raw id of the `n`th session, or one no node ever uses.
    fn raw(&self, n: usize) -> String {
        self.order
            .get(n)
            .cloned()
            .unwrap_or_else(|| format!("never{n}"))
    }

    fn canonical(&mut self, raw: &str) -> String {
        let n = match self.order.iter().position(|s| s == raw) {
            Some(n) => n,
            None => {
                self.order.push(raw.to_owned());
                self.order.len() - 1
            }
        };
        format!("#{n}")
    }

    /// `msg` as a client sends it, its sessions named by their raw ids.
    fn client_message(&self, msg: &Msg) -> ClientMessage {
        match msg {
            Msg::Leave => ClientMessage::Leave {},
            Msg::Publish(s) => ClientMessage::Publish {
                stream: STREAMS[*s].into(),
                audio: true,
                video: true,
            },
            Msg::Unpublish(s) => ClientMessage::Unpublish {
                stream: STREAMS[*s].into(),
            },
            Msg::Mute(s, muted) => ClientMessage::Mute {
                stream: STREAMS[*s].into(),
                audio_muted: *muted,
                video_muted: false,
            },
            Msg::Chat(to) => ClientMessage::Message {
                to: to.map(|n| NAMES[n].to_owned()),
                text: "hi".into(),
            },
            Msg::Play(n, s) => ClientMessage::Play {
                participant: NAMES[*n].into(),
                stream: STREAMS[*s].into(),
            },
            Msg::Sdp(k) => ClientMessage::Sdp {
                session: self.raw(*k),
                description: SessionDescription {
                    kind: SdpType::Offer,
                    sdp: "v=0\r\n".into(),
                },
            },
            Msg::Ice(k) => ClientMessage::Ice {
                session: self.raw(*k),
                candidate: "candidate:1".into(),
                sdp_m_line_index: 0,
                sdp_mid: None,
            },
            Msg::Stop(k) => ClientMessage::Stop {
                session: self.raw(*k),
            },
        }
    }

    /// What a participant received, comparable across servers: session ids by start order,
    /// no chat times, refusals by their code or reason (their texts name raw ids).
    fn normalise(&mut self, msg: ServerMessage) -> Option<ServerMessage> {
        Some(match msg {
            ServerMessage::Welcome { .. } => return None,
            ServerMessage::Message { from, to, text, .. } => ServerMessage::Message {
                from,
                to,
                text,
                ts: 0,
            },
            ServerMessage::Failed { reason, .. } => ServerMessage::Failed {
                reason,
                detail: String::new(),
            },
            ServerMessage::Error { code, .. } => ServerMessage::Error {
                code,
                message: String::new(),
            },
            ServerMessage::SessionRequest {
                session,
                stream,
                viewer,
            } => ServerMessage::SessionRequest {
                session: self.canonical(&session),
                stream,
                viewer,
            },
            ServerMessage::SessionStarted {
                session,
                participant,
                stream,
            } => ServerMessage::SessionStarted {
                session: self.canonical(&session),
                participant,
                stream,
            },
            ServerMessage::Sdp {
                session,
                description,
            } => ServerMessage::Sdp {
                session: self.canonical(&session),
                description,
            },
            ServerMessage::Ice {
                session,
                candidate,
                sdp_m_line_index,
                sdp_mid,
            } => ServerMessage::Ice {
                session: self.canonical(&session),
                candidate,
                sdp_m_line_index,
                sdp_mid,
            },
            ServerMessage::SessionEnded { session, reason } => ServerMessage::SessionEnded {
                session: self.canonical(&session),
                reason,
            },
            other => other,
        })
    }
}

fn admitted(ok: bool) -> Result<Grants, Refusal> {
    if ok {
        Ok(Grants::PARTICIPANT)
    } else {
        Err(Refusal::Wrong("a wrong token".into()))
    }
}

/// The reference: one node, the room rules alone.
#[derive(Default)]
struct One {
    rooms: Option<Rooms>,
    peers: HashMap<usize, PeerId>,
    next_peer: PeerId,
    received: HashMap<usize, Vec<ServerMessage>>,
    sessions: Sessions,
}

impl One {
    fn new() -> Self {
        One {
            rooms: Some(Rooms::new(rules())),
            next_peer: 1,
            ..One::default()
        }
    }

    fn rooms(&mut self) -> &mut Rooms {
        self.rooms.as_mut().unwrap()
    }

    fn apply(&mut self, op: &Op) {
        let out = match op {
            Op::Connect(p) if !self.peers.contains_key(p) => {
                let peer = self.next_peer;
                self.next_peer += 1;
                self.peers.insert(*p, peer);
                self.rooms().connect(peer)
            }
            Op::Disconnect(p) => match self.peers.remove(p) {
                Some(peer) => self.rooms().disconnect(peer),
                None => return,
            },
            Op::Join(p, room, name, ok) => match self.peers.get(p).copied() {
                Some(peer) => self.rooms().join(
                    peer,
                    ROOMS[*room].into(),
                    NAMES[name.unwrap_or(*p)].into(),
                    admitted(*ok),
                    now(),
                ),
                None => return,
            },
            Op::Send(p, msg) => match self.peers.get(p).copied() {
                Some(peer) => {
                    let msg = self.sessions.client_message(msg);
                    self.rooms().handle(peer, msg)
                }
                None => return,
            },
            Op::Connect(_) | Op::Tick => return,
        };
        for (peer, msg) in out {
            let p = self
                .peers
                .iter()
                .find(|(_, q)| **q == peer)
                .map(|(p, _)| *p)
                .expect("messages go to connected participants");
            if let Some(msg) = self.sessions.normalise(msg) {
                self.received.entry(p).or_default().push(msg);
            }
        }
    }
}

/// Three nodes and a model of Redis.
struct Cluster {
    /// `None`: dead.
    nodes: Vec<Option<Routing>>,
    /// Room → the node holding its lease.
    leases: HashMap<String, usize>,
    /// Room → its member record.
    records: HashMap<String, Vec<StoredMember>>,
    inboxes: Vec<VecDeque<Envelope>>,
    /// Participant → its connection: (node, peer id there).
    connections: HashMap<usize, (usize, PeerId)>,
    received: HashMap<usize, Vec<ServerMessage>>,
    sessions: Sessions,
    /// Connections the routing closed.
    closed: Vec<usize>,
    /// Participant → how much of what it received came before it last left or connected: a
    /// participant's view of its room starts there.
    fresh_from: HashMap<usize, usize>,
    /// Participant → the sessions it stopped (the owner tells only the other end).
    stopped: HashMap<usize, HashSet<String>>,
}

impl Cluster {
    fn new() -> Self {
        let nodes = (0..NODES)
            .map(|n| {
                let mut routing = Routing::new(rules());
                // Far apart, as the random starting points are.
                routing.join_cluster(node_name(n), 1 + (n as u64) * 1_000_000);
                Some(routing)
            })
            .collect();
        Cluster {
            nodes,
            leases: HashMap::new(),
            records: HashMap::new(),
            inboxes: vec![VecDeque::new(); NODES],
            connections: HashMap::new(),
            received: HashMap::new(),
            sessions: Sessions::default(),
            closed: Vec::new(),
            fresh_from: HashMap::new(),
            stopped: HashMap::new(),
        }
    }

    fn node(&mut self, n: usize) -> &mut Routing {
        self.nodes[n].as_mut().expect("a live node")
    }

    fn alive(&self) -> HashSet<String> {
        (0..NODES)
            .filter(|n| self.nodes[*n].is_some())
            .map(node_name)
            .collect()
    }

    /// Carries out node `n`'s actions, as its hub and writer would.
    fn carry_out(&mut self, n: usize, actions: Actions) {
        for action in actions {
            match action {
                Action::Send { peer, msg, .. } => {
                    let p = self
                        .connections
                        .iter()
                        .find(|(_, c)| **c == (n, peer))
                        .map(|(p, _)| *p);
                    // A message for a connection that has closed is dropped by the hub.
                    if let Some(p) = p
                        && let Some(msg) = self.sessions.normalise(msg)
                    {
                        self.received.entry(p).or_default().push(msg);
                    }
                }
                // Mesh rooms: the rules never ask for the media engine.
                Action::Media(command) => panic!("a media command in a mesh room: {command:?}"),
                Action::Close { peer } => {
                    let p = self
                        .connections
                        .iter()
                        .find(|(_, c)| **c == (n, peer))
                        .map(|(p, _)| *p);
                    if let Some(p) = p {
                        self.connections.remove(&p);
                        self.closed.push(p);
                    }
                }
                Action::Remote(Outbound::Push { node, envelope }) => {
                    self.inboxes[node_index(&node)].push_back(envelope);
                }
                Action::Remote(Outbound::Members { room, members }) => {
                    if members.is_empty() {
                        self.records.remove(&room);
                    } else {
                        self.records.insert(room, members);
                    }
                }
            }
        }
    }

    /// Applies every envelope waiting in a live node's inbox, until none is left; those for
    /// dead nodes are never read.
    fn drain_inboxes(&mut self) {
        loop {
            let mut any = false;
            for n in 0..NODES {
                if self.nodes[n].is_none() {
                    continue;
                }
                while let Some(envelope) = self.inboxes[n].pop_front() {
                    any = true;
                    let out = self.node(n).receive(envelope, now());
                    self.carry_out(n, out);
                }
            }
            if !any {
                return;
            }
        }
    }

    /// The owner lookup of node `n` for `room` (the lease is taken, and the room rebuilt from
    /// its record, when nobody holds it).
    fn owner_of(&mut self, n: usize, room: &str) -> usize {
        match self.leases.get(room).copied() {
            Some(holder) if holder != n => holder,
            Some(_) if self.node(n).owns(room) => n,
            _ => {
                self.leases.insert(room.to_owned(), n);
                self.node(n).begin_acquiring(room);
                let stored = self.records.get(room).cloned().unwrap_or_default();
                let mut alive = self.alive();
                alive.remove(&node_name(n));
                let out = self.node(n).take_over(room, stored, &alive, now());
                self.carry_out(n, out);
                n
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Connect(p) if !self.connections.contains_key(p) => {
                let n = p % NODES;
                let (peer, out) = self.node(n).connect();
                self.connections.insert(*p, (n, peer));
                self.start_view(*p);
                self.carry_out(n, out);
            }
            Op::Disconnect(p) => {
                if let Some((n, peer)) = self.connections.remove(p) {
                    let out = self.node(n).disconnect(peer);
                    self.carry_out(n, out);
                }
            }
            Op::Join(p, room, name, ok) => {
                if let Some((n, peer)) = self.connections.get(p).copied() {
                    self.join(
                        n,
                        peer,
                        ROOMS[*room],
                        NAMES[name.unwrap_or(*p)],
                        admitted(*ok),
                    );
                }
            }
            Op::Send(p, msg) => {
                if let Some((n, peer)) = self.connections.get(p).copied() {
                    match msg {
                        Msg::Leave => self.start_view(*p),
                        Msg::Stop(k) => {
                            self.stopped.entry(*p).or_default().insert(format!("#{k}"));
                        }
                        _ => {}
                    }
                    let msg = self.sessions.client_message(msg);
                    let out = self.node(n).handle(peer, msg, None);
                    self.carry_out(n, out);
                }
            }
            Op::Connect(_) => {}
            Op::Tick => self.tick(),
        }
        self.drain_inboxes();
    }

    fn start_view(&mut self, p: usize) {
        let seen = self.received.get(&p).map_or(0, Vec::len);
        self.fresh_from.insert(p, seen);
    }

    /// What `p` believes now (see [`View`]).
    fn view(&self, p: usize) -> View {
        let received = self.received.get(&p).map(Vec::as_slice).unwrap_or_default();
        let from = self.fresh_from.get(&p).copied().unwrap_or(0);
        let mut view = view_of(&received[from..]);
        if let Some(stopped) = self.stopped.get(&p) {
            view.sessions
                .retain(|session, _| !stopped.contains(session));
        }
        view
    }

    /// A join as the node's cluster task runs it.
    fn join(
        &mut self,
        n: usize,
        peer: PeerId,
        room: &str,
        name: &str,
        admitted: Result<Grants, Refusal>,
    ) {
        let (room, name) = (room.to_owned(), name.to_owned());
        let out = if self
            .node(n)
            .refuses_at_the_edge(peer, &room, &name, &admitted)
        {
            self.node(n).join(peer, room, name, admitted, None, now())
        } else {
            let owner = self.owner_of(n, &room);
            if owner == n {
                self.node(n).join(peer, room, name, admitted, None, now())
            } else {
                let grants = admitted.unwrap();
                let owner = node_name(owner);
                self.node(n)
                    .route_join(peer, room, name, grants, owner, None)
            }
        };
        self.carry_out(n, out);
    }

    /// Every live node's lease tick (leases never expire here: each is renewed).
    fn tick(&mut self) {
        for n in 0..NODES {
            if self.nodes[n].is_none() {
                continue;
            }
            let leases = self.node(n).leases();
            for room in leases.release {
                if self.leases.get(&room) == Some(&n) {
                    self.leases.remove(&room);
                    self.records.remove(&room);
                }
                let (refilled, out) = self.node(n).released(&room);
                self.carry_out(n, out);
                if refilled {
                    self.leases.insert(room, n);
                }
            }
            for room in leases.renew {
                assert_eq!(
                    self.leases.get(&room),
                    Some(&n),
                    "renewing a lease of another"
                );
            }
        }
    }

    /// Node `n` dies: its connections are gone, its inbox unread; the others notice and
    /// forget it, the first to look a room up taking it over.
    fn kill(&mut self, n: usize) {
        self.nodes[n] = None;
        self.connections.retain(|_, (node, _)| *node != n);
        self.leases.retain(|_, holder| *holder != n);
        let dead = node_name(n);
        for survivor in 0..NODES {
            if self.nodes[survivor].is_none() {
                continue;
            }
            let (rooms, out) = self.node(survivor).forget_node(&dead);
            self.carry_out(survivor, out);
            for room in rooms {
                let owner = self.owner_of(survivor, &room);
                let out = self
                    .node(survivor)
                    .follow(&room, Some(&dead), &node_name(owner));
                self.carry_out(survivor, out);
            }
            self.drain_inboxes();
        }
    }
}

/// What participant `p` believes from what it received: its room, who else is there, and the
/// sessions it has open (by canonical id).
#[derive(Debug, Default, PartialEq)]
struct View {
    room: Option<String>,
    others: HashSet<String>,
    /// Session → the other end's username.
    sessions: HashMap<String, String>,
}

fn view_of(received: &[ServerMessage]) -> View {
    let mut view = View::default();
    for msg in received {
        match msg {
            ServerMessage::State {
                room, participants, ..
            } => {
                view = View {
                    room: Some(room.clone()),
                    others: participants.iter().map(|p| p.username.clone()).collect(),
                    sessions: HashMap::new(),
                }
            }
            ServerMessage::Joined { username } => {
                view.others.insert(username.clone());
            }
            ServerMessage::Left { username } => {
                view.others.remove(username);
            }
            ServerMessage::SessionStarted {
                session,
                participant: other,
                ..
            }
            | ServerMessage::SessionRequest {
                session,
                viewer: other,
                ..
            } => {
                view.sessions.insert(session.clone(), other.clone());
            }
            ServerMessage::SessionEnded { session, .. } => {
                view.sessions.remove(session);
            }
            _ => {}
        }
    }
    view
}

/// `ops`, after every participant has connected and joined one of the two rooms (each room
/// then has a participant on every node, and is owned by the node of its first).
fn everyone_connected(ops: Vec<Op>) -> Vec<Op> {
    let connect = (0..PARTICIPANTS).map(Op::Connect);
    let join = (0..PARTICIPANTS).map(|p| Op::Join(p, p % ROOMS.len(), None, true));
    connect.chain(join).chain(ops).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
    ))]

    #[test]
    fn a_cluster_behaves_as_one_node(ops in proptest::collection::vec(op(), 1..60)) {
        let mut one = One::new();
        let mut cluster = Cluster::new();
        for op in &everyone_connected(ops) {
            one.apply(op);
            cluster.apply(op);
            prop_assert!(cluster.closed.is_empty(), "closed {:?} after {:?}", cluster.closed, op);
            for p in 0..PARTICIPANTS {
                let expected = one.received.get(&p).map(Vec::as_slice).unwrap_or_default();
                let got = cluster.received.get(&p).map(Vec::as_slice).unwrap_or_default();
                prop_assert_eq!(got, expected, "participant {} after {:?}", p, op);
            }
        }
        // Each room is run by the node holding its lease, and by no other.
        for (n, routing) in cluster.nodes.iter().enumerate() {
            let routing = routing.as_ref().unwrap();
            for room in ROOMS {
                if routing.owns(room) {
                    prop_assert_eq!(cluster.leases.get(room), Some(&n));
                }
            }
        }
    }

    #[test]
    fn after_a_node_dies_the_survivors_agree(
        ops in proptest::collection::vec(op(), 1..60),
        dead in 0..NODES,
        after in proptest::collection::vec(op(), 0..20),
    ) {
        let mut cluster = Cluster::new();
        for op in &everyone_connected(ops) {
            cluster.apply(op);
        }
        cluster.kill(dead);
        // Survivors go on: the rooms work after the takeover.
        for op in &after {
            if let Op::Connect(p) | Op::Disconnect(p) | Op::Join(p, ..) | Op::Send(p, _) = op
                && p % NODES == dead
            {
                continue;
            }
            cluster.apply(op);
        }
        // Every survivor's view of its room is the room its owner runs.
        let survivors: Vec<usize> = cluster.connections.keys().copied().collect();
        for p in survivors {
            let view = cluster.view(p);
            let Some(room) = &view.room else { continue };
            let (n, peer) = cluster.connections[&p];
            let joined = cluster.node(n).is_joined(peer);
            let Some(owner) = cluster.leases.get(room).copied() else {
                prop_assert!(!joined, "participant {} in {} that nobody owns", p, room);
                continue;
            };
            let owner = cluster.node(owner);
            let members: Vec<MemberRecord> = owner.rooms.members_of(room);
            let me = members.iter().find(|m| {
                (m.peer == peer && owner.me() == node_name(n))
                    || owner.origins.get(&m.peer) == Some(&(node_name(n), peer))
            });
            let Some(me) = me else {
                return Err(TestCaseError::fail(format!(
                    "participant {p} believes it is in {room}, its owner does not: {view:?}"
                )));
            };
            let others: HashSet<String> = members
                .iter()
                .filter(|m| m.username != me.username)
                .map(|m| m.username.clone())
                .collect();
            prop_assert_eq!(&view.others, &others, "participant {}'s view of {}", p, room);
            for (session, other) in &view.sessions {
                prop_assert!(
                    view.others.contains(other),
                    "participant {}'s session {} with {}, who is gone", p, session, other
                );
            }
        }
    }
}
