//! Which STUN/TURN servers a WebRTC session of an element uses, and how to hand them to its
//! webrtcbin.
//!
//! The room server hands each joined participant ICE servers in `state` (WebRTC
//! `RTCIceServer` form: `turn:host:port` URLs plus username and credential, TURN REST
//! credentials included). webrtcbin wants one `stun://host:port` and a list of
//! `turn(s)://user:pass@host:port` URIs instead. The element's own `stun-server` and
//! `turn-servers` properties, when set, replace the server's. `relay-only` makes webrtcbin use
//! relayed candidates only (`ice-transport-policy=relay`): the peer never learns the host's
//! addresses, and tests can force the TURN path.
//!
//! `turns:` (TURN over TLS) is handed to webrtcbin as `turns://`, but libnice (0.1.21, the
//! GStreamer 1.22 ICE agent) has no TLS for standard TURN: it opens a TCP connection to the
//! server's port and speaks TURN in the clear, so it never sees or checks a certificate.
//! coturn's TLS port accepts such connections too, which is how the elements get through
//! networks that let only TCP to port 443 out; the media stays DTLS-SRTP end to end.
//!
//! Applied in `webrtcbin-ready`, which webrtcsink and webrtcsrc emit for every session before
//! negotiating: by then the participant has joined, so the server's ICE servers (and fresh
//! TURN credentials after a rejoin) are known.

use gst::prelude::*;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use room_protocol::IceServer;

/// The ICE configuration of one webrtcbin.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// `stun://host:port`.
    pub stun_server: Option<String>,
    /// `turn(s)://user:pass@host:port[?transport=udp|tcp]`, user and password percent-encoded.
    pub turn_servers: Vec<String>,
    /// Only relayed (TURN) candidates.
    pub relay_only: bool,
}

// TURN URIs carry passwords: `Debug` counts them instead of printing them.
impl std::fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("stun_server", &self.stun_server)
            .field(
                "turn_servers",
                &format_args!("<{} redacted>", self.turn_servers.len()),
            )
            .field("relay_only", &self.relay_only)
            .finish()
    }
}

impl IceConfig {
    /// The element's own `stun-server` / `turn-servers` where set, else the room server's.
    pub fn choose(
        own_stun: Option<&str>,
        own_turn: &[String],
        server: &[IceServer],
        relay_only: bool,
    ) -> IceConfig {
        let from_server = from_ice_servers(server);
        IceConfig {
            stun_server: own_stun.map(str::to_owned).or(from_server.stun_server),
            turn_servers: if own_turn.is_empty() {
                from_server.turn_servers
            } else {
                own_turn.to_vec()
            },
            relay_only,
        }
    }

    /// Configures a webrtcbin that has not started gathering candidates yet.
    pub fn apply(&self, webrtcbin: &gst::Element) {
        if let Some(stun) = &self.stun_server {
            webrtcbin.set_property("stun-server", stun);
        }
        for turn in &self.turn_servers {
            // false means webrtcbin could not parse it; it logs why (GST_DEBUG=webrtcice:4).
            if !webrtcbin.emit_by_name::<bool>("add-turn-server", &[turn]) {
                gst::warning!(
                    crate::events::CAT,
                    obj = webrtcbin,
                    "webrtcbin refused a TURN server"
                );
            }
        }
        if self.relay_only {
            webrtcbin.set_property(
                "ice-transport-policy",
                gst_webrtc::WebRTCICETransportPolicy::Relay,
            );
        }
        disable_upnp(webrtcbin);
    }
}

/// Turns off libnice's UPnP IGD port mapping (on by default) for `webrtcbin`'s ICE agent. A
/// room needs no port mappings on the user's router (TURN covers what host and server-reflexive
/// candidates do not; browsers do no UPnP either), and with it on every session's agent sends
/// SSDP discovery to the LAN and holds extra sockets (port 1900 on each address) for its life.
fn disable_upnp(webrtcbin: &gst::Element) {
    // webrtcbin's `ice-agent` (a GstWebRTCNice) exposes its NiceAgent as `agent`.
    let Some(ice) = webrtcbin.property::<Option<gst::glib::Object>>("ice-agent") else {
        return;
    };
    if ice.find_property("agent").is_none() {
        return;
    }
    let agent = ice.property::<gst::glib::Object>("agent");
    if agent.find_property("upnp").is_some() {
        agent.set_property("upnp", false);
    }
}

/// The room server's ICE servers in webrtcbin's form: the first STUN URL, every TURN URL with
/// its credentials. Entries webrtcbin cannot use (`stuns:`, TURN without credentials) are left out.
pub fn from_ice_servers(servers: &[IceServer]) -> IceConfig {
    let mut config = IceConfig::default();
    for server in servers {
        for url in &server.urls {
            if let Some(address) = url.strip_prefix("stun:") {
                config
                    .stun_server
                    .get_or_insert_with(|| format!("stun://{address}"));
            } else if let Some(turn) = turn_uri(url, server) {
                config.turn_servers.push(turn);
            }
        }
    }
    config
}

/// `turn:host:port?q` + user/credential → `turn://user:pass@host:port?q`. TURN REST usernames
/// contain ':' and base64 passwords '/', '+' and '=': both are percent-encoded, and webrtcbin
/// decodes them before handing them to libnice.
fn turn_uri(url: &str, server: &IceServer) -> Option<String> {
    let (scheme, address) = url
        .strip_prefix("turn:")
        .map(|a| ("turn", a))
        .or_else(|| url.strip_prefix("turns:").map(|a| ("turns", a)))?;
    let user = utf8_percent_encode(server.username.as_deref()?, NON_ALPHANUMERIC);
    let pass = utf8_percent_encode(server.credential.as_ref()?.expose(), NON_ALPHANUMERIC);
    Some(format!("{scheme}://{user}:{pass}@{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(url: &str, user: &str, pass: &str) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            username: Some(user.into()),
            credential: Some(pass.into()),
        }
    }

    #[test]
    fn server_entries_become_webrtcbin_uris() {
        let stun = IceServer {
            urls: vec!["stun:s.example:3478".into(), "stun:s2.example:3478".into()],
            username: None,
            credential: None,
        };
        let servers = [
            stun,
            turn(
                "turn:10.0.0.1:3478?transport=udp",
                "1700000000:alice",
                "Cd/49soE35ICqcJF/bCTn8Z4OyE=",
            ),
            turn("turns:t.example:5349?transport=tcp", "bob", "p@ss"),
            IceServer {
                urls: vec!["turn:nocreds.example:3478".into()],
                username: None,
                credential: None,
            },
        ];
        let config = from_ice_servers(&servers);
        assert_eq!(config.stun_server.as_deref(), Some("stun://s.example:3478"));
        assert_eq!(
            config.turn_servers,
            [
                "turn://1700000000%3Aalice:Cd%2F49soE35ICqcJF%2FbCTn8Z4OyE%3D@10.0.0.1:3478?transport=udp",
                "turns://bob:p%40ss@t.example:5349?transport=tcp",
            ]
        );
    }

    #[test]
    fn element_properties_override_the_server() {
        let servers = [
            IceServer {
                urls: vec!["stun:s.example:3478".into()],
                username: None,
                credential: None,
            },
            turn("turn:t.example:3478", "u", "p"),
        ];
        let none = IceConfig::choose(None, &[], &servers, false);
        assert_eq!(none, from_ice_servers(&servers));
        let own_turn = vec!["turn://me:pw@mine.example:3478".to_owned()];
        let own = IceConfig::choose(Some("stun://mine.example:3478"), &own_turn, &servers, true);
        assert_eq!(own.stun_server.as_deref(), Some("stun://mine.example:3478"));
        assert_eq!(own.turn_servers, own_turn);
        assert!(own.relay_only);
        assert!(!format!("{own:?}").contains("pw"));
    }
}
