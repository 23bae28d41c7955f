//! The gst-room server: rooms, participants, chat, and the relay that lets two participants set
//! up a WebRTC session. It carries no media, unless asked to (`--media sfu`: then it is one end
//! of every session and forwards each stream to its viewers).
//!
//! - [`room_protocol`] (re-exported as [`protocol`]): the messages, defined once.
//! - `rooms`: the room rules as a state machine without I/O (capacity, names, streams, sessions).
//! - `hub`: the rules behind one lock, plus every connection's bounded outgoing queue.
//! - `connection`: one WebSocket — parse, limit, keepalive, write, close.
//! - `limits`: the per-participant rate limits (token buckets).
//! - `frames`: watches WebSocket frames to time out messages that never finish.
//! - `accept`: TCP accept with TCP_NODELAY and the connection caps (in all, following the
//!   file limit, and per address).
//! - `server`: the HTTP routes and [`run`], the entry point of the binary and the tests.
//! - `turn`: short-lived TURN credentials (TURN REST convention, as coturn checks them).
//! - `auth`: who may join (access tokens with grants, the shared token) and read `/rooms`,
//!   with a throttle on wrong tokens per address.
//! - `cluster`: several nodes serving the same rooms through Redis (`--redis`): each room has
//!   one owning node, the others forward to it. `cluster::rules` decides (without I/O, held by
//!   the hub), the cluster's tasks talk to Redis.
//! - `web_guard`: the Origin/Host rule of `/ws` and the security headers of every response.
//! - `tls`: the certificate served over TLS, the kept self-signed one, fingerprints.
//! - `wcs`: the original room API's clients (Flashphoner Web Call Server's Web SDK) on `/`:
//!   their protocol translated into the native one.
//! - `media`: media through the server (`--media sfu`): the media engine and the tasks that
//!   tie it to the room rules.
//! - `agent`: participants without a WebSocket (served inside the server, media on the
//!   server), registered with the hub like a connection.
//! - `whip`: WHIP ingest and WHEP playback over HTTP, through agents.
//!
//! Errors stop at the connection they belong to: bad input gets an `error` message, a broken
//! socket ends only its own task; only failing to serve the listener ends [`run`].

pub mod accept;
pub mod agent;
pub mod auth;
pub mod cluster;
pub mod connection;
pub mod frames;
pub mod hub;
pub mod limits;
pub mod media;
pub mod rooms;
pub mod server;
pub mod tls;
pub mod turn;
pub mod wcs;
pub mod web_guard;
pub mod whip;

use std::path::PathBuf;
use std::time::Duration;

pub use limits::{RateLimit, RateLimits};
pub use room_protocol as protocol;
pub use server::run;

/// Default room capacity.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 3;
/// Default number of wrong tokens an address may present per minute.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 10;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The most open TCP connections by default, when the file limit allows as many (see
/// [`accept::FileBudget`]): memory, not descriptors, bounds the server then.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on concurrent TCP connections from one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 20;
/// The most WebSockets not in a room by default, when the file limit allows
/// [`DEFAULT_MAX_CONNECTIONS`] connections (see [`accept::FileBudget`]).
pub const DEFAULT_MAX_UNJOINED: usize = 1_000;
/// Default time a WebSocket may stay without joining a room.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a WebSocket message may take from its first to its last byte.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time HTTP requests in flight get to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Default most streams one participant publishes.
pub const DEFAULT_MAX_STREAMS: usize = 4;

/// How the server is run. `Config::default()` is what `gst-room server` uses without flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most participants per room.
    pub max_participants: usize,
    /// The shared token (`--token`): when set, a join carrying it is admitted (publish, play
    /// and chat; any room, any name).
    pub token: Option<protocol::Secret>,
    /// The HS256 key of access tokens (`--token-secret`): when set, a join carrying a valid
    /// token for its room and username is admitted with the token's grants.
    pub token_secret: Option<protocol::Secret>,
    /// The admin token (`--admin-token`): `Authorization: Bearer` value that may read `/rooms`
    /// (as may an access token with the admin grant).
    pub admin_token: Option<protocol::Secret>,
    /// Wrong tokens one address may present per minute; further attempts in that minute are
    /// refused without being checked.
    pub auth_failures_per_minute: u32,
    /// Browser origins besides the page's own that may open `/ws` (`--allow-origin`), e.g.
    /// `https://meet.example.org`.
    pub allowed_origins: Vec<String>,
    /// Sent to each participant in `state`, once it has joined.
    pub ice_servers: Vec<protocol::IceServer>,
    /// TURN REST secret and URLs (`--turn-secret`, `--turn-url`, `--turn-ttl`): each joined
    /// participant also gets a TURN server with credentials minted for it.
    pub turn: Option<turn::TurnRest>,
    /// The folder served at `/` (the conference page).
    pub web_dir: PathBuf,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// A connection silent for longer (no frame, no pong) is dropped and its participant leaves.
    pub idle_timeout: Duration,
    /// Most open TCP connections (page, WebSocket, unfinished requests alike); more are
    /// answered HTTP 503 and closed at once. The default follows RLIMIT_NOFILE
    /// ([`accept::FileBudget`]).
    pub max_connections: usize,
    /// Most concurrent TCP connections (HTTP or WebSocket) from one address (an IPv6 address
    /// counts as its /64); more are answered 429 and closed at once.
    pub max_connections_per_ip: usize,
    /// Most WebSockets that have not joined a room; more get HTTP 503. The default follows
    /// RLIMIT_NOFILE ([`accept::FileBudget`]).
    pub max_unjoined: usize,
    /// A WebSocket not in a room for this long (after connecting or leaving) is closed.
    pub join_timeout: Duration,
    /// Time for a client to send a request's headers (the WebSocket upgrade included), and for
    /// an idle keep-alive connection to start its next request; then the socket is closed.
    pub header_timeout: Duration,
    /// Time a WebSocket message may take from its first byte to its last (all fragments).
    pub message_timeout: Duration,
    /// On shutdown, time HTTP requests in flight get before their sockets are closed.
    pub shutdown_grace: Duration,
    /// Most streams one participant publishes at a time.
    pub max_streams: usize,
    /// Per-participant message rates.
    pub rate_limits: RateLimits,
    /// Messages queued for one connection before it counts as too slow and is dropped.
    pub outgoing_queue: usize,
    /// Serve https/wss with this certificate; plain http/ws when `None`.
    pub tls: Option<tls::TlsFiles>,
    /// Serve rooms together with the other nodes on this Redis (`--redis`); `None`: alone, in
    /// memory.
    pub cluster: Option<cluster::ClusterConfig>,
    /// Media peer to peer (the default) or through the server (`--media sfu`).
    pub media: media::MediaConfig,
}

impl Default for Config {
    fn default() -> Self {
        let budget = accept::FileBudget::of_this_process();
        Config {
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            token: None,
            token_secret: None,
            admin_token: None,
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            allowed_origins: Vec::new(),
            ice_servers: Vec::new(),
            turn: None,
            web_dir: default_web_dir(),
            // Ping every second, drop after 3 s of silence: LEFT reaches the room within 4 s.
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            max_connections: budget.max_connections(),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_unjoined: budget.max_unjoined(),
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_streams: DEFAULT_MAX_STREAMS,
            rate_limits: RateLimits::default(),
            outgoing_queue: 256,
            tls: None,
            cluster: None,
            media: media::MediaConfig::Mesh,
        }
    }
}

/// The page folder of this source tree (`signaling/web`), used when none is given.
pub fn default_web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
}
