//! The room settings and the read-only status both elements have (their GObject properties).

use gst::glib;
use gst::prelude::*;

use crate::client::{self, Key, RoomClient, Status};

/// The default room server (`gst-room server` without flags).
pub const DEFAULT_SERVER_URL: &str = "ws://127.0.0.1:8443/ws";
/// No STUN server by default: rooms on a LAN need none, and a public default would leak traffic
/// and stall ICE gathering on machines without internet.
pub const DEFAULT_STUN_SERVER: Option<&str> = None;
/// Host and server-reflexive candidates are allowed by default; relay-only hides the host's
/// addresses at the cost of a TURN hop.
pub const DEFAULT_RELAY_ONLY: bool = false;

/// The element's link with its room (read-only `status` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstRoomStatus")]
pub enum RoomStatus {
    /// Not started (NULL/READY).
    #[default]
    #[enum_value(name = "Idle: not in a room", nick = "idle")]
    Idle,
    /// Connecting and joining.
    #[enum_value(name = "Connecting to the room server", nick = "connecting")]
    Connecting,
    /// In the room.
    #[enum_value(name = "Joined the room", nick = "joined")]
    Joined,
    /// Connection lost, retrying with backoff.
    #[enum_value(name = "Reconnecting after a lost connection", nick = "reconnecting")]
    Reconnecting,
    /// Join refused or server unreachable.
    #[enum_value(name = "Failed: join refused or server unreachable", nick = "failed")]
    Failed,
}

impl From<Status> for RoomStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Connecting => RoomStatus::Connecting,
            Status::Joined => RoomStatus::Joined,
            Status::Reconnecting => RoomStatus::Reconnecting,
            Status::Failed => RoomStatus::Failed,
        }
    }
}

/// The room settings both elements have. `Debug` leaves out the token and the TURN URLs
/// (they carry credentials), so logging settings never writes a secret.
#[derive(Clone)]
pub struct RoomSettings {
    pub server_url: String,
    pub room: Option<String>,
    pub username: String,
    pub token: Option<String>,
    pub stun_server: Option<String>,
    pub turn_servers: Vec<String>,
    /// PEM certificates trusted for `wss://` besides the system's roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub relay_only: bool,
}

impl std::fmt::Debug for RoomSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomSettings")
            .field("server_url", &self.server_url)
            .field("room", &self.room)
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("stun_server", &self.stun_server)
            .field(
                "turn_servers",
                &format_args!("<{} redacted>", self.turn_servers.len()),
            )
            .field("relay_only", &self.relay_only)
            .finish()
    }
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            server_url: DEFAULT_SERVER_URL.into(),
            room: None,
            username: generated_username(),
            token: None,
            stun_server: DEFAULT_STUN_SERVER.map(Into::into),
            turn_servers: Vec::new(),
            tls_ca_file: None,
            relay_only: DEFAULT_RELAY_ONLY,
        }
    }
}

/// `gst-XXXXXX`: a username that is unlikely to be taken.
fn generated_username() -> String {
    format!("gst-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl RoomSettings {
    /// The participant these settings describe, or what is wrong with them.
    pub fn key(&self) -> Result<Key, String> {
        let room = self.room.clone().ok_or("the room property is not set")?;
        room_protocol::validate_name(&room).map_err(|why| format!("room {why}"))?;
        room_protocol::validate_username(&self.username)
            .map_err(|why| format!("username {why}"))?;
        let url = url::Url::parse(&self.server_url)
            .map_err(|e| format!("server-url {:?}: {e}", self.server_url))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!(
                "server-url {:?} must start with ws:// or wss://",
                self.server_url
            ));
        }
        if let Some(path) = &self.tls_ca_file
            && url.scheme() == "wss"
        {
            // Read now, so that a wrong path fails the state change instead of the first join.
            crate::tls::load_ca_file(path)?;
        }
        Ok(Key {
            server_url: self.server_url.clone(),
            room,
            username: self.username.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
        })
    }

    /// The ICE configuration of a session of `client`'s participant: these settings' servers
    /// where set, else those the room server handed out at join; relay-only as set.
    pub fn ice_config(&self, client: &RoomClient) -> crate::ice::IceConfig {
        crate::ice::IceConfig::choose(
            self.stun_server.as_deref(),
            &self.turn_servers,
            &client.ice_servers(),
            self.relay_only,
        )
    }

    /// The property specs of the shared settings and the read-only state.
    pub fn properties() -> Vec<glib::ParamSpec> {
        let d = RoomSettings::default();
        vec![
            glib::ParamSpecString::builder("server-url")
                .nick("Server URL")
                .blurb("WebSocket URL of the room server, of the form ws://host:port/ws, or wss://host:port/ws \
                        over TLS (the server's certificate must be trusted: system roots or tls-ca-file; \
                        never a fallback to ws)")
                .default_value(Some(DEFAULT_SERVER_URL))
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("room")
                .nick("Room")
                .blurb("Name of the room to join (created on first join); required. 1-64 of A-Z a-z 0-9 _ -")
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("username")
                .nick("Username")
                .blurb("The participant's name in the room (default: a generated gst-XXXXXX). Elements of one \
                        process with the same server-url, room and username are one participant. \
                        1-32 of A-Z a-z 0-9 _ - .")
                .default_value(None)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("token")
                .nick("Token")
                .blurb("Access token to join a server that wants one: a token minted with `gst-room token` (for this room and username), or the server's shared --token")
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("stun-server")
                .nick("STUN server")
                .blurb("STUN server of the form stun://host:port, used instead of the room server's; \
                        default none: the room server's STUN server if it hands one out, else host candidates only")
                .default_value(d.stun_server.as_deref())
                .mutable_ready()
                .build(),
            gst::ParamSpecArray::builder("turn-servers")
                .nick("TURN servers")
                .blurb("TURN servers of the form turn(s)://username:password@host:port[?transport=udp|tcp] \
                        (username and password percent-encoded), used instead of the room server's; \
                        default empty: the TURN servers and credentials the room server hands out at join. \
                        turns:// reaches the server over TCP but speaks TURN unencrypted (libnice has no TLS): \
                        the server's certificate is not checked")
                .element_spec(&glib::ParamSpecString::builder("turn-server").build())
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("tls-ca-file")
                .nick("TLS CA file")
                .blurb("PEM file of certificates trusted for a wss:// server-url besides the system's roots: \
                        an extra CA, or the server's self-signed certificate (gst-room server --tls-self-signed \
                        prints its path). An untrusted server fails with reason tls")
                .mutable_ready()
                .build(),
            glib::ParamSpecBoolean::builder("relay-only")
                .nick("Relay only")
                .blurb("Use only relayed (TURN) candidates (webrtcbin ice-transport-policy=relay): peers never \
                        learn this host's addresses; media fails without a reachable TURN server")
                .default_value(DEFAULT_RELAY_ONLY)
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("status", RoomStatus::Idle)
                .nick("Status")
                .blurb("The link with the room: idle, connecting, joined, reconnecting or failed")
                .read_only()
                .build(),
            glib::ParamSpecBoxed::builder::<Vec<String>>("participants")
                .nick("Participants")
                .blurb("Usernames in the room, own included (empty until joined; notifies when it changes)")
                .read_only()
                .build(),
        ]
    }

    /// Sets a shared property; false when `name` is not one of them.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "server-url" => {
                self.server_url = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(|| DEFAULT_SERVER_URL.into())
            }
            "room" => self.room = value.get().expect("type checked upstream"),
            "username" => {
                self.username = value
                    .get::<Option<String>>()
                    .unwrap()
                    .unwrap_or_else(generated_username)
            }
            "token" => self.token = value.get().expect("type checked upstream"),
            "stun-server" => self.stun_server = value.get().expect("type checked upstream"),
            "tls-ca-file" => {
                self.tls_ca_file = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
            }
            "relay-only" => self.relay_only = value.get().expect("type checked upstream"),
            "turn-servers" => {
                let array = value.get::<gst::Array>().expect("type checked upstream");
                self.turn_servers = array
                    .iter()
                    .filter_map(|v| v.get::<String>().ok())
                    .collect();
            }
            _ => return false,
        }
        true
    }

    /// Reads a shared property (the read-only ones need the running client).
    pub fn get(&self, name: &str, client: Option<&client::RoomClient>) -> Option<glib::Value> {
        Some(match name {
            "server-url" => self.server_url.to_value(),
            "room" => self.room.to_value(),
            "username" => self.username.to_value(),
            "token" => self.token.to_value(),
            "stun-server" => self.stun_server.to_value(),
            "tls-ca-file" => self
                .tls_ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "relay-only" => self.relay_only.to_value(),
            "turn-servers" => {
                gst::Array::new(self.turn_servers.iter().map(|s| s.to_send_value())).to_value()
            }
            "status" => client
                .map(|c| RoomStatus::from(c.status()))
                .unwrap_or_default()
                .to_value(),
            "participants" => client.map(|c| c.usernames()).unwrap_or_default().to_value(),
            _ => return None,
        })
    }
}
