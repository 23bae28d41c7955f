//! What roomsink and roomsrc share: the room properties, the read-only status, and room events
//! as bus messages and GObject signals.
//!
//! Every room event becomes one `gst::Structure` (names and fields below). An element posts it
//! as an element message on the bus and emits it as the signal of the same name, so
//! applications can use whichever they prefer:
//!
//! | name | fields |
//! |---|---|
//! | `room-state` | `room`, `username` (own), `capacity` (u32), `participants` (others, strv) |
//! | `room-joined` / `room-left` | `username` |
//! | `room-published` | `username`, `stream`, `audio`, `video` (bool) |
//! | `room-unpublished` | `username`, `stream` |
//! | `room-muted` | `username`, `stream`, `audio-muted`, `video-muted` (bool) |
//! | `room-message` | `from`, `to` (only for direct messages), `text`, `ts` (u64, ms since epoch) |
//! | `room-failed` | `reason` (`room-full`, `name-taken`, `unauthorized`, `invalid-name`, `unreachable`, ...), `detail` |
//! | `room-session-status` | `status` (`connecting`, `joined`, `reconnecting`, `failed`, `publishing`, `unpublished`, `session-requested`, `playing`, `stopped`), `stream`, `peer`, `reason` (where relevant: `failed` of a stream has `reason`, e.g. `stream-exists`) |

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use crate::client::{self, ChatError, ChatSent, Event, Key, RoomClient, Status};
use crate::subscription::Subscription;

/// Debug category of the room client and the shared element code (`GST_DEBUG=room:6`).
pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "room",
        gst::DebugColorFlags::empty(),
        Some("gst-room client"),
    )
});

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
                        default empty: the TURN servers and credentials the room server hands out at join")
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

/// Pad templates of raw video (names starting with "video") and raw audio (the others).
pub fn raw_pad_templates(
    direction: gst::PadDirection,
    presence: gst::PadPresence,
    names: &[&str],
) -> Vec<gst::PadTemplate> {
    names
        .iter()
        .map(|name| {
            let media = if name.starts_with("video") {
                "video/x-raw"
            } else {
                "audio/x-raw"
            };
            let caps = gst::Caps::builder(media).build();
            gst::PadTemplate::new(name, direction, presence, &caps).expect("valid template")
        })
        .collect()
}

/// One signal per room event, `(GstElement *element, GstStructure *event)`, emitted after the
/// bus message of the same name is posted. The structures' fields are in the module doc.
///
/// Threads: every `room-*` signal except `room-session-status` with `playing` / `stopped` is
/// emitted on a thread of the plugin's runtime (threads named `gst-room`), in the order the
/// participant saw the events, never with an element lock held. roomsrc's `playing` and
/// `stopped` come from the thread that adds or ends the player: a blocking-pool thread of the
/// same runtime, or the application's thread during a state change; roomsink's `publishing`,
/// `failed` and `unpublished` from the thread that starts or stops webrtcsink's signaller.
/// A handler may set the element's state: it is not waited for by itself.
pub fn event_signals() -> Vec<glib::subclass::Signal> {
    vec![
        /**
         * GstRoomSink::room-state / GstRoomSrc::room-state:
         * @event: `room-state` {room, username, capacity (u32), participants (strv, the others)}
         *
         * The room as found on joining, and again after every rejoin; also emitted for an
         * element that starts while its participant (shared) is already in the room.
         */
        event_signal("room-state"),
        /**
         * GstRoomSink::room-joined / GstRoomSrc::room-joined:
         * @event: `room-joined` {username}
         *
         * Someone else joined the room.
         */
        event_signal("room-joined"),
        /**
         * GstRoomSink::room-left / GstRoomSrc::room-left:
         * @event: `room-left` {username}
         *
         * Someone else left or dropped; their streams were unpublished first.
         */
        event_signal("room-left"),
        /**
         * GstRoomSink::room-published / GstRoomSrc::room-published:
         * @event: `room-published` {username, stream, audio, video}
         *
         * Someone else announced a stream.
         */
        event_signal("room-published"),
        /**
         * GstRoomSink::room-unpublished / GstRoomSrc::room-unpublished:
         * @event: `room-unpublished` {username, stream}
         *
         * Someone else withdrew a stream (or left).
         */
        event_signal("room-unpublished"),
        /**
         * GstRoomSink::room-muted / GstRoomSrc::room-muted:
         * @event: `room-muted` {username, stream, audio-muted, video-muted}
         *
         * The mute state of someone else's stream changed.
         */
        event_signal("room-muted"),
        /**
         * GstRoomSink::room-message / GstRoomSrc::room-message:
         * @event: `room-message` {from, to (direct messages only), text, ts (ms since epoch)}
         *
         * A chat message, stamped by the server; own room messages come back too.
         */
        event_signal("room-message"),
        /**
         * GstRoomSink::room-failed / GstRoomSrc::room-failed:
         * @event: `room-failed` {reason, detail}
         *
         * The join was refused (room-full, name-taken, unauthorized, invalid-name) or the
         * server was unreachable; an element error with the same reason follows.
         */
        event_signal("room-failed"),
        /**
         * GstRoomSink::room-session-status / GstRoomSrc::room-session-status:
         * @event: `room-session-status` {status, stream, peer, reason (for failed)}
         *
         * Progress of the participant (connecting, joined, reconnecting, failed), of roomsink's
         * stream (publishing, failed with a reason such as stream-exists, unpublished,
         * session-requested) and of roomsrc's players (playing, stopped).
         */
        event_signal("room-session-status"),
    ]
}

fn event_signal(name: &str) -> glib::subclass::Signal {
    glib::subclass::Signal::builder(name)
        .param_types([gst::Structure::static_type()])
        .build()
}

/// How an element's chat signals find its participant: `None` when not in a room.
pub type ClientOf = fn(&glib::Value) -> Option<RoomClient>;

/// The chat action signals both elements have, `send-message(text)` and
/// `send-message-to(username, text)`; `client_of` gets the participant from the instance.
pub fn chat_signals(client_of: ClientOf) -> Vec<glib::subclass::Signal> {
    vec![
        /**
         * send-message:
         * @text: the chat text (at most 4 KiB)
         *
         * Sends a chat message to everyone in the room. It comes back as room-message.
         *
         * While the connection to the server is lost and being retried, up to 16 messages are
         * held and sent after the rejoin (the call returns true); beyond that, or when the
         * element is not in a room, the message is dropped, a warning is posted, and the call
         * returns false.
         *
         * Returns: whether the message was sent or held for the rejoin
         */
        glib::subclass::Signal::builder("send-message")
            .param_types([String::static_type()])
            .return_type::<bool>()
            .action()
            .class_handler(move |args| {
                let text = args[1].get::<String>().expect("signal arg");
                Some(send_chat(&args[0], client_of(&args[0]), None, text).to_value())
            })
            .build(),
        /**
         * send-message-to:
         * @username: the only recipient
         * @text: the chat text (at most 4 KiB)
         *
         * Sends a direct chat message to one participant; it comes back as room-message with
         * `to` set, to the recipient and the sender only.
         *
         * Held during a reconnect like send-message.
         *
         * Returns: whether the message was sent or held for the rejoin
         */
        glib::subclass::Signal::builder("send-message-to")
            .param_types([String::static_type(), String::static_type()])
            .return_type::<bool>()
            .action()
            .class_handler(move |args| {
                let to = args[1].get::<String>().expect("signal arg");
                let text = args[2].get::<String>().expect("signal arg");
                Some(send_chat(&args[0], client_of(&args[0]), Some(to), text).to_value())
            })
            .build(),
    ]
}

fn send_chat(
    element: &glib::Value,
    client: Option<RoomClient>,
    to: Option<String>,
    text: String,
) -> bool {
    let refused = match client.map(|c| c.send_chat(to, text)) {
        Some(Ok(ChatSent::Sent | ChatSent::Held)) => return true,
        Some(Err(err)) => err,
        None => ChatError::Gone,
    };
    gst::warning!(CAT, "{refused}");
    if let Ok(element) = element.get::<gst::Element>() {
        gst::element_warning!(element, gst::ResourceError::Write, ("{}", refused));
    }
    false
}

/// Posts `event` on the bus and emits the signal of the same name.
pub fn post(element: &gst::Element, event: gst::Structure) {
    let name = event.name().to_string();
    let _ = element.post_message(
        gst::message::Element::builder(event.clone())
            .src(element)
            .build(),
    );
    element.emit_by_name::<()>(&name, &[&event]);
}

/// The session-status event.
pub fn session_status(status: &str, stream: Option<&str>, peer: Option<&str>) -> gst::Structure {
    gst::Structure::builder("room-session-status")
        .field("status", status)
        .field_if_some("stream", stream)
        .field_if_some("peer", peer)
        .build()
}

/// The bus message / signal a room event becomes, if it is one for applications.
pub fn event_structure(event: &Event) -> Option<gst::Structure> {
    let s = match event {
        Event::State {
            room,
            username,
            capacity,
            participants,
            ..
        } => gst::Structure::builder("room-state")
            .field("room", room)
            .field("username", username)
            .field("capacity", *capacity as u32)
            .field(
                "participants",
                participants
                    .iter()
                    .map(|p| p.username.clone())
                    .collect::<Vec<_>>(),
            )
            .build(),
        Event::Joined { username } => gst::Structure::builder("room-joined")
            .field("username", username)
            .build(),
        Event::Left { username } => gst::Structure::builder("room-left")
            .field("username", username)
            .build(),
        Event::Published { username, stream } => gst::Structure::builder("room-published")
            .field("username", username)
            .field("stream", &stream.stream)
            .field("audio", stream.audio)
            .field("video", stream.video)
            .build(),
        Event::Unpublished { username, stream } => gst::Structure::builder("room-unpublished")
            .field("username", username)
            .field("stream", stream)
            .build(),
        Event::Muted {
            username,
            stream,
            audio_muted,
            video_muted,
        } => gst::Structure::builder("room-muted")
            .field("username", username)
            .field("stream", stream)
            .field("audio-muted", audio_muted)
            .field("video-muted", video_muted)
            .build(),
        Event::Message { from, to, text, ts } => gst::Structure::builder("room-message")
            .field("from", from)
            .field_if_some("to", to.as_ref())
            .field("text", text)
            .field("ts", ts)
            .build(),
        _ => return None,
    };
    Some(s)
}

/// The `room-failed` event.
pub fn failed(reason: &str, detail: &str) -> gst::Structure {
    gst::Structure::builder("room-failed")
        .field("reason", reason)
        .field("detail", detail)
        .build()
}

/// Posts a refused join or unreachable server as the element error it is (after the
/// `room-failed` event): the message carries the reason, e.g. "room-full: room demo is full".
pub fn post_fatal(element: &gst::Element, reason: &str, detail: &str) {
    post(element, failed(reason, detail));
    let error = if reason == "unauthorized" {
        gst::ResourceError::NotAuthorized
    } else {
        gst::ResourceError::OpenRead
    };
    gst::element_error!(
        element,
        error,
        ("{}: {}", reason, detail),
        ["room join failed"]
    );
}

/// Posts every room event of `client` on `element`'s bus until stopped; a refused join or an
/// unreachable server becomes an element error. The events come on the plugin runtime's
/// threads: the `room-*` signals are emitted there.
pub fn spawn_poster(element: &gst::Element, client: &RoomClient) -> Subscription {
    let element = element.downgrade();
    Subscription::spawn(client, move |event| {
        // A weak ref: the pipeline owns the element, this task must not keep it alive.
        let alive = element.upgrade().map(|element| post_event(&element, event));
        async move { alive.unwrap_or(false) }
    })
}

/// Posts one room event; false when the element should stop listening (fatal).
fn post_event(element: &gst::Element, event: Event) -> bool {
    if let Some(structure) = event_structure(&event) {
        post(element, structure);
        if matches!(
            event,
            Event::State { .. } | Event::Joined { .. } | Event::Left { .. }
        ) {
            element.notify("participants");
        }
        return true;
    }
    match event {
        Event::Refused { code, message } => gst::element_warning!(
            element,
            gst::ResourceError::Write,
            ("room server refused a message: {:?}", code),
            ["{}", message]
        ),
        Event::Status(status) => {
            element.notify("status");
            element.notify("participants");
            let nick = RoomStatus::from(status);
            let nick =
                glib::EnumValue::from_value(&nick.to_value()).map(|(_, v)| v.nick().to_owned());
            post(
                element,
                session_status(&nick.unwrap_or_default(), None, None),
            );
        }
        Event::Fatal { reason, detail } => {
            element.notify("status");
            post_fatal(element, &reason, &detail);
            return false;
        }
        _ => {}
    }
    true
}

/// Waits on `bus` for the room event `name` whose structure satisfies `matches`, dropping the
/// messages before it; an error message ends the wait with its text. For applications and tests
/// that drive a pipeline without a main loop.
pub fn wait_for_event(
    bus: &gst::Bus,
    name: &str,
    timeout: Duration,
    matches: impl Fn(&gst::StructureRef) -> bool,
) -> Result<gst::Structure, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no {name} message within {timeout:?}"));
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(left.as_millis() as u64),
            &[gst::MessageType::Element, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => {
                return Err(format!(
                    "pipeline error while waiting for {name}: {} ({:?})",
                    err.error(),
                    err.debug()
                ));
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == name
                    && matches(s)
                {
                    return Ok(s.to_owned());
                }
            }
            _ => {}
        }
    }
}
