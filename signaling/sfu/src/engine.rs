//! The engine task: one UDP socket, every session's str0m `Rtc`, the [`Routes`] and
//! [`Demux`] state machines, and the commands from [`crate::Sfu`] handles.
//!
//! One loop: wait for a datagram, a command, the earliest session/route deadline or
//! cancellation; hand the input to the session it belongs to; then drain the outputs of every
//! session that has work (transmits go straight to the socket, events become route decisions,
//! frames written to viewers make those viewers drain in turn) until none has.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::crypto::{CryptoProvider, from_feature_flags};
use str0m::format::{CodecConfig, CodecExtra};
use str0m::ice::{StunMessage, TransId};
use str0m::media::Pt;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive, TcpType, Transmit};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::addresses::{destination_for, send_address, unmapped};
use crate::demux::{Demux, DropReason, Kind, Route};
use crate::routes::{Action, Routes, Timeline};
use crate::sdp::{
    StreamCodecs, answer_offer, ingest_codecs, msid_stream_id, negotiated_codecs, offered_mids,
    one_msid_stream, payload_type_mids, viewer_codecs,
};
use crate::speakers::{SpeakerChange, Speakers};
use crate::tcp::{TcpConnections, TcpEvent};
use crate::{SfuError, SfuEvent, SfuLimits, SfuStats, StreamKey};

/// A connected session whose ICE stays disconnected this long fails.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);
/// str0m's ICE-lite agent drops a candidate pair without a binding request for 15 s, but
/// libnice (webrtcbin) sends binding indications, not requests, once connected. Traffic that a
/// session accepted from its peer's address counts as consent: after this long without a
/// binding request, the engine hands str0m one in the peer's name (see [`Engine::refresh_consent`]).
const CONSENT_REFRESH: Duration = Duration::from_secs(8);
/// SSRCs an ingest m-line can be mapped to by payload type (see [`map_unsignalled_ssrc`]).
const MAX_UNSIGNALLED_SSRCS: usize = 8;
/// How often the per-second figures roll over.
const STATS_PERIOD: Duration = Duration::from_secs(1);
/// How stale the figures `Sfu::stats` reads may be (they are also refreshed after every
/// command and before every event).
const STATS_SNAPSHOT: Duration = Duration::from_millis(100);
/// Datagrams read per wake beyond the first.
const RECV_BATCH: usize = 64;
/// Largest datagram read (anything longer is truncated by the kernel and then malformed).
const RECV_BUFFER: usize = 2048;

pub(crate) enum Command {
    Publish {
        session: String,
        stream: StreamKey,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Subscribe {
        session: String,
        stream: StreamKey,
        audio: bool,
        video: bool,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    SubscribeOffered {
        session: String,
        stream: StreamKey,
        offer: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        session: String,
        answer: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Candidate {
        session: String,
        candidate: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Close {
        session: String,
        reply: oneshot::Sender<()>,
    },
}

fn is_keyframe(data: &MediaData) -> bool {
    match &data.codec_extra {
        CodecExtra::Vp8(extra) => extra.is_keyframe,
        CodecExtra::H264(extra) => extra.is_keyframe,
        // Not a codec this SFU negotiates: never hold a viewer back waiting for it.
        _ => true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ingest,
    Viewer,
}

struct Peer {
    name: String,
    role: Role,
    stream: StreamKey,
    rtc: Rtc,
    created: Instant,
    connected: bool,
    disconnected_since: Option<Instant>,
    /// The server's offer to a viewer, until its answer.
    pending: Option<SdpPendingOffer>,
    next_timeout: Instant,
    /// A viewer's media timeline per m-line (continuous across re-publishes).
    timelines: HashMap<Mid, Timeline>,
    /// The server's ICE credentials for this session.
    local_creds: IceCreds,
    /// The peer's ICE ufrag, from its first verified check.
    remote_ufrag: Option<String>,
    /// When the peer's last binding request (real or on its behalf) reached str0m.
    last_consent: Instant,
    /// An ingest's payload types → its m-line, for RTP whose SSRC the offer did not announce.
    pt_mids: HashMap<Pt, Mid>,
    /// SSRCs known to str0m (announced or mapped), to skip the lookup.
    known_ssrcs: Vec<Ssrc>,
    /// str0m panicked in this session: it is closed and fails.
    broken: bool,
}

impl Peer {
    /// After a panic inside str0m the session's state is not to be trusted: stop it (the next
    /// drain reports it failed).
    fn break_down(&mut self) {
        warn!(
            session = self.name,
            "the WebRTC library panicked: media session ended"
        );
        self.broken = true;
        self.rtc.disconnect();
    }
}

/// The failure reason of a session whose str0m panicked.
const INTERNAL_ERROR: &str = "internal error in the WebRTC library";

/// Runs `f`, one call into str0m for one session, catching a panic: a packet or timer that
/// trips str0m ends that session, not the engine task with every other session in it.
fn guard<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// One frame from ingest `source` to write to one viewer's m-line.
struct Write {
    source: String,
    viewer: String,
    mid: Mid,
    data: Arc<MediaData>,
}

/// Between the last frame of one ingest and the first of its replacement on a viewer's track.
const SOURCE_SWITCH_GAP: Duration = Duration::from_millis(20);

pub(crate) struct Engine {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    candidates: Vec<SocketAddr>,
    /// ICE over TCP (`crate::tcp`): the listener until the task starts, the passive TCP
    /// candidates (the advertised addresses with the TCP port), the open connections.
    tcp_listener: Option<TcpListener>,
    tcp_candidates: Vec<SocketAddr>,
    tcp: TcpConnections,
    limits: SfuLimits,
    events: mpsc::Sender<SfuEvent>,
    shared_stats: Arc<Mutex<SfuStats>>,
    crypto: Arc<CryptoProvider>,
    peers: HashMap<u64, Peer>,
    ids: HashMap<String, u64>,
    next_id: u64,
    demux: Demux<u64>,
    routes: Routes,
    codecs: HashMap<StreamKey, StreamCodecs>,
    /// Who speaks in each room, from the ingests' audio levels.
    speakers: Speakers,
    /// When sessions need a look (str0m timeouts, connect timeout, disconnect grace); entries
    /// may be stale (the session's time moved or it is gone): a look at the wrong time is
    /// harmless, so nothing is removed early and every wake costs only the sessions due.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Sessions with outputs to drain.
    dirty: VecDeque<u64>,
    writes: VecDeque<Write>,
    stats: SfuStats,
    period_start: Instant,
    last_published: Instant,
    period_frames: u64,
    period_sent: u64,
}

impl Engine {
    pub(crate) fn new(
        socket: UdpSocket,
        candidates: Vec<SocketAddr>,
        tcp: Option<TcpListener>,
        limits: SfuLimits,
        events: mpsc::Sender<SfuEvent>,
        shared_stats: Arc<Mutex<SfuStats>>,
    ) -> Self {
        let local_addr = socket
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let tcp_port = tcp
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let tcp_candidates = match tcp_port {
            Some(port) => candidates
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect(),
            None => Vec::new(),
        };
        Self {
            socket: Arc::new(socket),
            local_addr,
            candidates,
            tcp_listener: tcp,
            tcp_candidates,
            tcp: TcpConnections::default(),
            limits,
            events,
            shared_stats,
            crypto: Arc::new(from_feature_flags()),
            peers: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
            demux: Demux::new(),
            routes: Routes::new(),
            codecs: HashMap::new(),
            speakers: Speakers::new(),
            timers: BinaryHeap::new(),
            dirty: VecDeque::new(),
            writes: VecDeque::new(),
            stats: SfuStats::default(),
            period_start: Instant::now(),
            last_published: Instant::now(),
            period_frames: 0,
            period_sent: 0,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        let socket = self.socket.clone();
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut tcp_events = self
            .tcp_listener
            .take()
            .map(|listener| crate::tcp::start(listener, self.limits.max_sessions, cancel.clone()));
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.command(command, Instant::now()),
                    None => break,
                },
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => {
                        self.datagram(Protocol::Udp, &buf[..len], source, Instant::now());
                        // What else is queued, without another turn of the loop each.
                        for _ in 0..RECV_BATCH {
                            let Ok((len, source)) = socket.try_recv_from(&mut buf) else {
                                break;
                            };
                            self.datagram(Protocol::Udp, &buf[..len], source, Instant::now());
                        }
                    }
                    // ICMP errors of earlier sends surface here on some systems: not fatal.
                    Err(error) => debug!(%error, "media port receive error"),
                },
                event = next_tcp_event(&mut tcp_events) => match event {
                    Some(event) => self.tcp_event(event, Instant::now()),
                    None => tcp_events = None,
                },
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            self.on_time(now);
            if now >= self.last_published + STATS_SNAPSHOT {
                self.publish_stats();
            }
        }
        let sessions = self.peers.len();
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            self.close_peer(id, Instant::now());
        }
        info!(sessions, "SFU stopped");
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.period_start + STATS_PERIOD;
        if let Some(Reverse((at, _))) = self.timers.peek() {
            deadline = deadline.min(*at);
        }
        if let Some(route_deadline) = self.routes.next_deadline() {
            deadline = deadline.min(route_deadline);
        }
        if let Some(speakers_deadline) = self.speakers.next_deadline() {
            deadline = deadline.min(speakers_deadline);
        }
        deadline.max(Instant::now())
    }

    fn schedule(&mut self, at: Instant, id: u64) {
        self.timers.push(Reverse((at, id)));
    }

    // ---- commands ----

    fn command(&mut self, command: Command, now: Instant) {
        // Replies go out after the effects are drained and the figures published, so a caller
        // sees its call reflected in `Sfu::stats`.
        match command {
            Command::Publish {
                session,
                stream,
                offer,
                reply,
            } => {
                let result = self.publish(session, stream, &offer, now);
                self.settle(now);
                let _ = reply.send(result);
            }
            Command::Subscribe {
                session,
                stream,
                audio,
                video,
                reply,
            } => {
                let result = self.subscribe(session, stream, audio, video, now);
                self.settle(now);
                let _ = reply.send(result);
            }
            Command::SubscribeOffered {
                session,
                stream,
                offer,
                reply,
            } => {
                let result = self.subscribe_offered(session, stream, &offer, now);
                self.settle(now);
                let _ = reply.send(result);
            }
            Command::Answer {
                session,
                answer,
                reply,
            } => {
                let result = self.answer(&session, &answer, now);
                self.settle(now);
                let _ = reply.send(result);
            }
            Command::Candidate {
                session,
                candidate,
                reply,
            } => {
                let result = self.remote_candidate(&session, &candidate);
                self.settle(now);
                let _ = reply.send(result);
            }
            Command::Close { session, reply } => {
                if let Some(id) = self.ids.get(&session).copied() {
                    info!(session, "media session closed");
                    self.close_peer(id, now);
                }
                self.settle(now);
                let _ = reply.send(());
            }
        }
    }

    fn settle(&mut self, now: Instant) {
        self.drain_all(now);
        self.publish_stats();
    }

    fn check_new_session(&self, session: &str, sdp: Option<&str>) -> Result<(), SfuError> {
        if self.ids.contains_key(session) || self.routes.contains(session) {
            return Err(SfuError::SessionExists(session.to_owned()));
        }
        if self.peers.len() >= self.limits.max_sessions {
            return Err(SfuError::Limit(format!(
                "{} media sessions",
                self.limits.max_sessions
            )));
        }
        if sdp.is_some_and(|s| s.len() > self.limits.max_sdp_bytes) {
            return Err(SfuError::BadSdp(format!(
                "longer than {} bytes",
                self.limits.max_sdp_bytes
            )));
        }
        Ok(())
    }

    fn new_rtc(&self, codecs: CodecConfig, now: Instant) -> (Rtc, IceCreds) {
        let creds = IceCreds::new();
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds.clone())
            .set_crypto_provider(self.crypto.clone())
            .set_send_buffer_audio(self.limits.send_buffer_audio.max(1))
            .set_send_buffer_video(self.limits.send_buffer_video.max(1));
        *config.codec_config() = codecs;
        let mut rtc = config.build(now);
        for candidate in &self.candidates {
            match Candidate::host(*candidate, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(error) => warn!(%candidate, %error, "unusable media address"),
            }
        }
        // Passive: the peer connects (RFC 6544); the server never dials out.
        for candidate in &self.tcp_candidates {
            let built = Candidate::builder()
                .tcp()
                .host(*candidate)
                .tcptype(TcpType::Passive)
                .build();
            match built {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(error) => warn!(%candidate, %error, "unusable media TCP address"),
            }
        }
        (rtc, creds)
    }

    fn add_peer(
        &mut self,
        name: String,
        role: Role,
        stream: StreamKey,
        rtc: Rtc,
        creds: IceCreds,
        now: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.demux.add_session(id, &creds.ufrag);
        self.ids.insert(name.clone(), id);
        self.peers.insert(
            id,
            Peer {
                name,
                role,
                stream,
                rtc,
                created: now,
                connected: false,
                disconnected_since: None,
                pending: None,
                next_timeout: now,
                timelines: HashMap::new(),
                local_creds: creds,
                remote_ufrag: None,
                last_consent: now,
                pt_mids: HashMap::new(),
                known_ssrcs: Vec::new(),
                broken: false,
            },
        );
        self.schedule(now + self.limits.connect_timeout, id);
        self.dirty.push_back(id);
        id
    }

    /// An offer's `m_lines` within the limit of tracks per stream.
    fn check_track_count(&self, m_lines: usize) -> Result<(), SfuError> {
        if m_lines > self.limits.max_tracks_per_stream {
            return Err(SfuError::Limit(format!(
                "{m_lines} m-lines, at most {} per stream",
                self.limits.max_tracks_per_stream
            )));
        }
        Ok(())
    }

    fn publish(
        &mut self,
        session: String,
        stream: StreamKey,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        self.check_new_session(&session, Some(offer))?;
        self.check_track_count(offer.lines().filter(|l| l.starts_with("m=")).count())?;
        let mids = offered_mids(offer);
        let (mut rtc, creds) = self.new_rtc(ingest_codecs(), now);
        let answer = answer_offer(&mut rtc, offer)?;
        let negotiated = negotiated_codecs(&rtc, &mids);
        if negotiated.audio.is_empty() && negotiated.video.is_empty() {
            return Err(SfuError::BadSdp(
                "no offered codec is one the server forwards (VP8, H.264 with \
                 packetization-mode=1, Opus)"
                    .into(),
            ));
        }
        let pt_mids = payload_type_mids(&rtc, &mids);
        self.routes
            .add_ingest(&session, &stream)
            .map_err(|_| SfuError::SessionExists(session.clone()))?;
        info!(session, ?stream, "ingest session created");
        self.codecs.insert(stream.clone(), negotiated);
        let id = self.add_peer(session, Role::Ingest, stream, rtc, creds, now);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.pt_mids = pt_mids;
        }
        Ok(answer)
    }

    fn subscribe(
        &mut self,
        session: String,
        stream: StreamKey,
        audio: bool,
        video: bool,
        now: Instant,
    ) -> Result<String, SfuError> {
        self.check_new_session(&session, None)?;
        if !audio && !video {
            return Err(SfuError::BadSdp("neither audio nor video asked".into()));
        }
        if self.routes.viewer_count(&stream) >= self.limits.max_viewers_per_stream {
            return Err(SfuError::Limit(format!(
                "{} viewers per stream",
                self.limits.max_viewers_per_stream
            )));
        }
        let (mut rtc, creds) = self.new_rtc(viewer_codecs(self.codecs.get(&stream)), now);
        let mut change = rtc.sdp_api();
        // One msid stream for both tracks: browsers then put them in one MediaStream.
        let msid = msid_stream_id(&stream);
        let audio_mid = audio.then(|| {
            change.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(msid.clone()),
                None,
                None,
            )
        });
        let video_mid = video.then(|| {
            change.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some(msid.clone()),
                None,
                None,
            )
        });
        let Some((offer, pending)) = change.apply() else {
            return Err(SfuError::BadSdp("no m-line to offer".into()));
        };
        self.routes
            .add_viewer(&session, &stream, audio_mid, video_mid)
            .map_err(|_| SfuError::SessionExists(session.clone()))?;
        info!(session, ?stream, audio, video, "viewer session created");
        let id = self.add_peer(session, Role::Viewer, stream, rtc, creds, now);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.pending = Some(pending);
        }
        Ok(offer.to_sdp_string())
    }

    /// A viewer session whose viewer offered (receive-only audio and/or video): the server
    /// answers, sending on the first m-line of each kind. Its tracks get one msid stream, as
    /// in [`Engine::subscribe`].
    fn subscribe_offered(
        &mut self,
        session: String,
        stream: StreamKey,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        self.check_new_session(&session, Some(offer))?;
        if self.routes.viewer_count(&stream) >= self.limits.max_viewers_per_stream {
            return Err(SfuError::Limit(format!(
                "{} viewers per stream",
                self.limits.max_viewers_per_stream
            )));
        }
        let mids = offered_mids(offer);
        self.check_track_count(mids.len())?;
        let (mut rtc, creds) = self.new_rtc(viewer_codecs(self.codecs.get(&stream)), now);
        let answer = answer_offer(&mut rtc, offer)?;
        let sending = |kind: MediaKind| {
            mids.iter().copied().find(|mid| {
                rtc.media(*mid).is_some_and(|m| {
                    m.kind() == kind
                        && matches!(m.direction(), Direction::SendOnly | Direction::SendRecv)
                })
            })
        };
        let (audio_mid, video_mid) = (sending(MediaKind::Audio), sending(MediaKind::Video));
        if audio_mid.is_none() && video_mid.is_none() {
            return Err(SfuError::BadSdp(
                "the offer receives neither audio nor video".into(),
            ));
        }
        self.routes
            .add_viewer(&session, &stream, audio_mid, video_mid)
            .map_err(|_| SfuError::SessionExists(session.clone()))?;
        info!(
            session,
            ?stream,
            ?audio_mid,
            ?video_mid,
            "viewer session created on its offer"
        );
        let answer = one_msid_stream(&answer, &msid_stream_id(&stream));
        self.add_peer(session, Role::Viewer, stream, rtc, creds, now);
        Ok(answer)
    }

    fn answer(&mut self, session: &str, answer: &str, now: Instant) -> Result<(), SfuError> {
        if answer.len() > self.limits.max_sdp_bytes {
            return Err(SfuError::BadSdp(format!(
                "longer than {} bytes",
                self.limits.max_sdp_bytes
            )));
        }
        let id = *self.ids.get(session).ok_or(SfuError::UnknownSession)?;
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownSession)?;
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let pending = peer
            .pending
            .take()
            .ok_or_else(|| SfuError::BadSdp("no offer of the server waits for an answer".into()))?;
        let accepted = catch_unwind(AssertUnwindSafe(|| {
            peer.rtc
                .sdp_api()
                .accept_answer(pending, parsed)
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("the SDP library panicked".to_owned()));
        if let Err(error) = accepted {
            // The refused answer spent the server's offer: the session cannot be negotiated
            // any more, so it ends now rather than at its connect timeout.
            info!(session, %error, "viewer's answer refused: media session closed");
            self.close_peer(id, now);
            return Err(SfuError::BadSdp(format!("{error} (session closed)")));
        }
        self.dirty.push_back(id);
        Ok(())
    }

    fn remote_candidate(&mut self, session: &str, candidate: &str) -> Result<(), SfuError> {
        let id = *self.ids.get(session).ok_or(SfuError::UnknownSession)?;
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Err(SfuError::BadCandidate("end of candidates".into()));
        }
        if line.len() > self.limits.max_sdp_bytes / 16 {
            return Err(SfuError::BadCandidate("too long".into()));
        }
        let parsed = catch_unwind(|| Candidate::from_sdp_string(line))
            .map_err(|_| SfuError::BadCandidate("unparsable".into()))?
            .map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        let peer = self.peers.get_mut(&id).ok_or(SfuError::UnknownSession)?;
        peer.rtc.add_remote_candidate(parsed);
        self.dirty.push_back(id);
        Ok(())
    }

    // ---- datagrams ----

    /// An event of the TCP side: a connection opened or closed, or a framed packet, which is
    /// handled as a datagram.
    fn tcp_event(&mut self, event: TcpEvent, now: Instant) {
        match event {
            TcpEvent::Opened { peer, writer } => self.tcp.opened(peer, writer),
            TcpEvent::Closed { peer } => self.tcp.closed(peer),
            TcpEvent::Packet { peer, packet } => self.datagram(Protocol::Tcp, &packet, peer, now),
        }
    }

    /// The local candidate a packet from `source` over `proto` arrived on.
    fn destination(&self, proto: Protocol, source: SocketAddr) -> SocketAddr {
        match proto {
            Protocol::Tcp => destination_for(source, &self.tcp_candidates),
            _ => destination_for(source, &self.candidates),
        }
    }

    fn datagram(&mut self, proto: Protocol, datagram: &[u8], source: SocketAddr, now: Instant) {
        self.stats.datagrams_received += 1;
        let source = unmapped(source);
        let (id, kind) = match self.demux.route(datagram, source) {
            Route::Session(id, kind) => (id, kind),
            Route::Drop(reason) => {
                self.count_drop(reason);
                return;
            }
        };
        let destination = self.destination(proto, source);
        let Some(peer) = self.peers.get_mut(&id) else {
            self.stats.dropped.unknown_address += 1;
            return;
        };
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            self.stats.dropped.malformed += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        if !peer.rtc.accepts(&input) {
            self.stats.dropped.rejected += 1;
            return;
        }
        match kind {
            Kind::Stun => {
                if let Some(remote) = binding_request_remote_ufrag(datagram) {
                    // accepts() verified the check's integrity against this session's password.
                    self.demux.learn(source, id);
                    peer.remote_ufrag.get_or_insert_with(|| remote.to_owned());
                    peer.last_consent = now;
                }
            }
            Kind::RtpOrRtcp if peer.role == Role::Ingest => map_unsignalled_ssrc(peer, datagram),
            _ => {}
        }
        match guard(|| peer.rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                self.stats.dropped.session_error += 1;
                debug!(session = peer.name, %error, "datagram refused by the session");
            }
            None => peer.break_down(),
        }
        if kind != Kind::Stun {
            self.refresh_consent(id, proto, source, now);
        }
        self.dirty.push_back(id);
        self.drain_all(now);
    }

    /// Keeps a session whose peer sends traffic but no binding requests (libnice) alive in
    /// str0m's ICE-lite agent: a binding request in the peer's name, as from `source`, with the
    /// credentials of the session (the server's password, which a real request carries too).
    /// str0m's answer to it goes to the peer, which ignores an unknown transaction.
    fn refresh_consent(&mut self, id: u64, proto: Protocol, source: SocketAddr, now: Instant) {
        let hmac = self.crypto.sha1_hmac_provider;
        let destination = self.destination(proto, source);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.connected || now.saturating_duration_since(peer.last_consent) < CONSENT_REFRESH {
            return;
        }
        let Some(remote) = peer.remote_ufrag.as_deref() else {
            return;
        };
        let username = format!("{}:{remote}", peer.local_creds.ufrag);
        let request = StunMessage::binding_request(&username, TransId::new(), true, 0, 1, false);
        let mut buf = vec![0u8; 512];
        let sign = |key: &[u8], payloads: &[&[u8]]| hmac.sha1_hmac(key, payloads);
        let Ok(len) = request.to_bytes(Some(peer.local_creds.pass.as_bytes()), &mut buf, sign)
        else {
            return;
        };
        let Ok(contents) = DatagramRecv::try_from(&buf[..len]) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        peer.last_consent = now;
        match guard(|| peer.rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(error)) => debug!(session = peer.name, %error, "consent refresh refused"),
            None => peer.break_down(),
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        let dropped = &mut self.stats.dropped;
        match reason {
            DropReason::Malformed => dropped.malformed += 1,
            DropReason::UnknownUfrag => dropped.unknown_ufrag += 1,
            DropReason::UnknownAddress => dropped.unknown_address += 1,
        }
    }

    // ---- time ----

    fn on_time(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !due.contains(&id) {
                due.push(id);
            }
        }
        for id in due {
            self.look_at(id, now);
        }
        if self.routes.next_deadline().is_some_and(|d| d <= now) {
            for action in self.routes.poll(now) {
                self.act(action);
            }
        }
        self.drain_all(now);
        for change in self.speakers.tick(now) {
            self.speaker_changed(change);
        }
        if now >= self.period_start + STATS_PERIOD {
            self.roll_period(now);
        }
    }

    /// A session's timer went off: str0m's timeout, the connect timeout, the disconnect grace.
    fn look_at(&mut self, id: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.next_timeout <= now {
            match guard(|| peer.rtc.handle_input(Input::Timeout(now))) {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    debug!(session = peer.name, %error, "session timeout handling failed")
                }
                None => peer.break_down(),
            }
            self.dirty.push_back(id);
        }
        let failure = if !peer.connected && now >= peer.created + self.limits.connect_timeout {
            Some(format!(
                "not connected within {} s",
                self.limits.connect_timeout.as_secs()
            ))
        } else if peer
            .disconnected_since
            .is_some_and(|since| now >= since + DISCONNECT_GRACE)
        {
            Some("ICE disconnected".to_owned())
        } else {
            None
        };
        if let Some(reason) = failure {
            self.fail(id, reason, now);
        }
    }

    fn roll_period(&mut self, now: Instant) {
        let frames = self.routes.counters().forwarded
            - self.stats.dropped_frames.codec_mismatch
            - self.stats.dropped_frames.write_failed;
        self.stats.frames_forwarded_per_second = frames.saturating_sub(self.period_frames);
        self.stats.datagrams_sent_per_second =
            self.stats.datagrams_sent.saturating_sub(self.period_sent);
        self.period_frames = frames;
        self.period_sent = self.stats.datagrams_sent;
        self.period_start = now;
        debug!(
            sessions = self.peers.len(),
            frames_per_second = self.stats.frames_forwarded_per_second,
            datagrams_per_second = self.stats.datagrams_sent_per_second,
            dropped = ?self.stats.dropped,
            "SFU figures"
        );
    }

    // ---- outputs ----

    /// Drains every dirty session and carries out the frame writes this causes.
    fn drain_all(&mut self, now: Instant) {
        loop {
            if let Some(id) = self.dirty.pop_front() {
                self.drain(id, now);
            } else if let Some(write) = self.writes.pop_front() {
                self.write(write);
            } else {
                break;
            }
        }
    }

    fn drain(&mut self, id: u64, now: Instant) {
        let mut events = Vec::new();
        let mut failure = None;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        loop {
            if !peer.rtc.is_alive() {
                failure = Some(
                    if peer.broken {
                        INTERNAL_ERROR
                    } else {
                        "closed"
                    }
                    .to_owned(),
                );
                break;
            }
            let Some(output) = guard(|| peer.rtc.poll_output()) else {
                peer.break_down();
                failure = Some(INTERNAL_ERROR.to_owned());
                break;
            };
            match output {
                Ok(Output::Timeout(t)) => {
                    if t != peer.next_timeout || t <= now {
                        self.timers.push(Reverse((t, id)));
                    }
                    peer.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(transmit)) => {
                    match send_out(&self.socket, &self.tcp, self.local_addr, &transmit) {
                        true => self.stats.datagrams_sent += 1,
                        false => self.stats.dropped.send_failed += 1,
                    }
                }
                Ok(Output::Event(event)) => events.push(event),
                Err(error) => {
                    failure = Some(format!("session error: {error}"));
                    break;
                }
            }
        }
        for event in events {
            self.event(id, event, now);
        }
        if let Some(reason) = failure {
            self.fail(id, reason, now);
        }
    }

    fn event(&mut self, id: u64, event: Event, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match event {
            Event::Connected => {
                peer.connected = true;
                peer.disconnected_since = None;
                let session = peer.name.clone();
                info!(session, role = ?peer.role, "media session connected");
                self.emit(SfuEvent::Connected {
                    session: session.clone(),
                });
                for action in self.routes.connected(&session, now) {
                    self.act(action);
                }
            }
            Event::IceConnectionStateChange(state) => {
                if state == IceConnectionState::Disconnected && peer.connected {
                    if peer.disconnected_since.is_none() {
                        peer.disconnected_since = Some(now);
                        self.timers.push(Reverse((now + DISCONNECT_GRACE, id)));
                    }
                } else if matches!(
                    state,
                    IceConnectionState::Connected | IceConnectionState::Completed
                ) {
                    peer.disconnected_since = None;
                }
            }
            Event::MediaAdded(added) if peer.role == Role::Ingest => {
                let session = peer.name.clone();
                for action in self
                    .routes
                    .ingest_track(&session, added.mid, added.kind, now)
                {
                    self.act(action);
                }
            }
            Event::MediaData(data) if peer.role == Role::Ingest => {
                if let Some(level) = data.ext_vals.audio_level
                    && data.params.spec().codec.is_audio()
                {
                    self.speakers.observe(&peer.stream, level, now);
                }
                let forward = self.routes.media(
                    &peer.name,
                    data.mid,
                    is_keyframe(&data),
                    data.contiguous,
                    now,
                );
                if self.routes.is_current_ingest(&peer.name) {
                    let codecs = self.codecs.entry(peer.stream.clone()).or_default();
                    let used = match data.params.spec().codec.is_audio() {
                        true => &mut codecs.audio,
                        false => &mut codecs.video,
                    };
                    // Viewers subscribing from now on are offered the codec in use only.
                    if used.len() != 1 || used[0].pt() != data.params.pt() {
                        *used = vec![data.params];
                    }
                }
                let data = Arc::new(data);
                for (viewer, mid) in forward.targets {
                    self.writes.push_back(Write {
                        source: peer.name.clone(),
                        viewer,
                        mid,
                        data: data.clone(),
                    });
                }
                for action in forward.actions {
                    self.act(action);
                }
            }
            Event::KeyframeRequest(request) if peer.role == Role::Viewer => {
                let session = peer.name.clone();
                for action in self.routes.keyframe_request(&session, request.mid, now) {
                    self.act(action);
                }
            }
            Event::Closed => {
                let reason = "peer closed".to_owned();
                self.fail(id, reason, now);
            }
            _ => {}
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::RequestKeyframe { session, mid } => {
                let Some(id) = self.ids.get(&session).copied() else {
                    return;
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                let Some(mut writer) = peer.rtc.writer(mid) else {
                    return;
                };
                let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                    KeyframeRequestKind::Pli
                } else {
                    KeyframeRequestKind::Fir
                };
                match writer.request_keyframe(None, kind) {
                    Ok(()) => debug!(session, ?kind, "keyframe requested"),
                    Err(error) => debug!(session, %error, "keyframe request failed"),
                }
                self.dirty.push_back(id);
            }
        }
    }

    fn write(&mut self, write: Write) {
        let Some(id) = self.ids.get(&write.viewer).copied() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(writer) = peer.rtc.writer(write.mid) else {
            self.stats.dropped_frames.write_failed += 1;
            return;
        };
        let data = &write.data;
        // The viewer's payload type for the ingest's codec, among those it accepted.
        let pt = writer
            .match_params(data.params)
            .filter(|pt| writer.payload_params().any(|p| p.pt() == *pt));
        let Some(pt) = pt else {
            self.stats.dropped_frames.codec_mismatch += 1;
            return;
        };
        let frequency = data.time.frequency();
        let gap = SOURCE_SWITCH_GAP.as_micros() as u64 * u64::from(frequency.get()) / 1_000_000;
        let ticks =
            peer.timelines
                .entry(write.mid)
                .or_default()
                .map(&write.source, data.time.numer(), gap);
        let time = MediaTime::new(ticks, frequency);
        // The publisher's audio level goes on to the viewer (RFC 6464, when negotiated).
        let writer = match data.ext_vals.audio_level {
            Some(level) => writer.audio_level(level, data.ext_vals.voice_activity.unwrap_or(false)),
            None => writer,
        };
        match guard(|| writer.write(pt, data.network_time, time, data.data.clone())) {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                self.stats.dropped_frames.write_failed += 1;
                debug!(session = write.viewer, %error, "frame write failed");
            }
            None => peer.break_down(),
        }
        self.dirty.push_back(id);
    }

    // ---- session ends ----

    fn speaker_changed(&mut self, change: SpeakerChange) {
        debug!(room = change.room, username = ?change.username, "active speaker");
        self.emit(SfuEvent::ActiveSpeaker {
            room: change.room,
            username: change.username,
        });
    }

    fn emit(&mut self, event: SfuEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.events_dropped += 1;
            warn!("SFU event channel full or closed: event dropped");
        }
    }

    fn fail(&mut self, id: u64, reason: String, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let session = peer.name.clone();
        info!(session, reason, "media session failed");
        self.close_peer(id, now);
        // The figures first: whoever handles the event sees the session gone from them too.
        self.publish_stats();
        self.emit(SfuEvent::Failed { session, reason });
    }

    fn close_peer(&mut self, id: u64, now: Instant) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        // Tell the peer (RTCP BYE, DTLS close_notify) as far as str0m has it ready now.
        let (socket, tcp, local) = (&self.socket, &self.tcp, self.local_addr);
        guard(|| {
            if peer.rtc.is_alive() && peer.rtc.close().is_ok() {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
                while let Ok(Output::Transmit(transmit)) = peer.rtc.poll_output() {
                    send_out(socket, tcp, local, &transmit);
                }
            }
        });
        self.ids.remove(&peer.name);
        self.demux.remove_session(id);
        self.routes.remove(&peer.name);
        if peer.role == Role::Ingest
            && !self
                .peers
                .values()
                .any(|p| p.role == Role::Ingest && p.stream == peer.stream)
        {
            self.codecs.remove(&peer.stream);
            if let Some(change) = self.speakers.remove(&peer.stream) {
                self.speaker_changed(change);
            }
        }
    }

    /// Frames the routes sent to viewers minus those the viewers' sessions did not take.
    fn frames_written(&self) -> u64 {
        self.routes
            .counters()
            .forwarded
            .saturating_sub(self.stats.dropped_frames.codec_mismatch)
            .saturating_sub(self.stats.dropped_frames.write_failed)
    }

    fn publish_stats(&mut self) {
        let (ingest, viewers) = self.routes.session_counts();
        let counters = self.routes.counters();
        let frames_written = self.frames_written();
        let stats = &mut self.stats;
        stats.sessions = self.peers.len();
        stats.ingest_sessions = ingest;
        stats.viewer_sessions = viewers;
        stats.connected_sessions = self.peers.values().filter(|p| p.connected).count();
        stats.frames_forwarded = frames_written;
        stats.dropped_frames.superseded = counters.dropped_superseded;
        stats.dropped_frames.extra_track = counters.dropped_extra_track;
        stats.dropped_frames.waiting_keyframe = counters.dropped_waiting_keyframe;
        stats.keyframe_requests_sent = counters.keyframe_requests_sent;
        stats.keyframe_requests_coalesced = counters.keyframe_requests_coalesced;
        let snapshot = stats.clone();
        self.last_published = Instant::now();
        *self
            .shared_stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
    }
}

/// Sends one of str0m's transmits: over the UDP socket, or framed on the TCP connection from
/// its destination. False when it could not be sent (socket buffer full, no such connection).
fn send_out(
    socket: &UdpSocket,
    tcp: &TcpConnections,
    local: SocketAddr,
    transmit: &Transmit,
) -> bool {
    match transmit.proto {
        Protocol::Tcp => tcp.send(transmit.destination, &transmit.contents),
        _ => {
            let to = send_address(transmit.destination, local);
            socket.try_send_to(&transmit.contents, to).is_ok()
        }
    }
}

/// The next event of the TCP side; never, without one.
async fn next_tcp_event(events: &mut Option<mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The remote ufrag of a STUN binding request (USERNAME "local:remote").
fn binding_request_remote_ufrag(datagram: &[u8]) -> Option<&str> {
    let message = StunMessage::parse(datagram).ok()?;
    if !message.is_binding_request() {
        return None;
    }
    let (_local, remote) = message.username()?.split_once(':')?;
    Some(remote)
}

/// str0m routes incoming RTP by the SSRCs an offer announces (`a=ssrc`) or by the RTP `mid`
/// header extension; a webrtcbin offer may have neither for a track (no `a=ssrc` when its caps
/// carry no ssrc, no mid extension). Such RTP is mapped here by payload type to the one m-line
/// that negotiated it, once per m-line (a second SSRC of a payload type that already has a
/// stream is left to str0m, which drops it).
fn map_unsignalled_ssrc(peer: &mut Peer, datagram: &[u8]) {
    // RTP, not RTCP (packet types 192..=223 where the marker bit and payload type are).
    let Some(&second) = datagram.get(1) else {
        return;
    };
    if (192..=223).contains(&second) || datagram.len() < 12 {
        return;
    }
    let ssrc = Ssrc::from(u32::from_be_bytes([
        datagram[8],
        datagram[9],
        datagram[10],
        datagram[11],
    ]));
    if peer.known_ssrcs.contains(&ssrc) || peer.known_ssrcs.len() >= MAX_UNSIGNALLED_SSRCS {
        return;
    }
    let pt = Pt::from(second & 0x7f);
    let Some(mid) = peer.pt_mids.get(&pt).copied() else {
        return;
    };
    let mut api = peer.rtc.direct_api();
    if api.stream_rx(&ssrc).is_some() {
        peer.known_ssrcs.push(ssrc);
        return;
    }
    let is_main = peer
        .rtc
        .codec_config()
        .params()
        .iter()
        .any(|p| p.pt() == pt);
    let mut api = peer.rtc.direct_api();
    match api.stream_rx_by_mid(mid, None).map(|s| s.ssrc()) {
        None if is_main => {
            api.expect_stream_rx(ssrc, None, mid, None);
        }
        Some(main) if !is_main => {
            api.expect_stream_rx(main, Some(ssrc), mid, None);
        }
        _ => return,
    }
    debug!(session = peer.name, ?ssrc, %mid, "unannounced SSRC mapped by payload type");
    peer.known_ssrcs.push(ssrc);
}
