//! Short-lived TURN credentials, the TURN REST API convention coturn implements with
//! `use-auth-secret` + `static-auth-secret`: the username is `<expiry unix time>:<name>`, the
//! password is base64(HMAC-SHA1(secret, username)). The TURN server checks the HMAC with the
//! same secret and refuses the username once its expiry has passed; nothing is stored.
//!
//! The clock is the caller's: [`TurnRest::ice_server`] takes `now`, so the room rules mint
//! credentials without reading a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use room_protocol::{IceServer, Secret};
use sha1::Sha1;

/// Default lifetime of minted TURN credentials (`--turn-ttl`): a day, the convention's usual value.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(86_400);

/// The TURN servers sharing one REST secret with this server, and how long credentials live.
#[derive(Debug, Clone)]
pub struct TurnRest {
    /// The `static-auth-secret` of the TURN server(s).
    pub secret: Secret,
    /// `turn:HOST:PORT[?transport=udp|tcp]` or `turns:…` URLs, handed out as one ICE server.
    pub urls: Vec<String>,
    /// Lifetime of each minted credential.
    pub ttl: Duration,
}

impl TurnRest {
    /// The ICE server entry for `name`, with credentials valid until `now + ttl`.
    pub fn ice_server(&self, name: &str, now: SystemTime) -> IceServer {
        let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + self.ttl;
        let (username, password) = credentials(self.secret.expose(), name, expiry.as_secs());
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(password.into()),
        }
    }
}

/// The TURN REST (username, password) for `name` expiring at `expiry` (unix seconds).
pub fn credentials(secret: &str, name: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{name}");
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// Checks a `--turn-url`: `turn:` or `turns:`, a host and a port, optionally
/// `?transport=udp|tcp`, no credentials (they are minted).
pub fn validate_turn_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"))
        .ok_or_else(|| format!("{url:?}: a TURN URL starts with turn: or turns:"))?;
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    if address.contains('@') {
        return Err(format!(
            "{url:?}: no credentials in --turn-url (they are minted from --turn-secret)"
        ));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?}: expected turn:HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "{url:?}: expected turn:HOST:PORT with a port 1-65535"
        ));
    }
    match query {
        None | Some("transport=udp") | Some("transport=tcp") => Ok(()),
        Some(other) => Err(format!(
            "{url:?}: unknown {other:?}, only ?transport=udp or ?transport=tcp"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_convention() {
        // echo -n "1700000000:alice" | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(
            credentials("north", "alice", 1_700_000_000),
            (
                "1700000000:alice".to_owned(),
                "Cd/49soE35ICqcJF/bCTn8Z4OyE=".to_owned()
            )
        );
    }

    #[test]
    fn minted_ice_server_expires_ttl_after_now() {
        let turn = TurnRest {
            secret: "north".into(),
            urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
            ttl: Duration::from_secs(100),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_699_999_900);
        let server = turn.ice_server("alice", now);
        assert_eq!(server.urls, turn.urls);
        assert_eq!(server.username.as_deref(), Some("1700000000:alice"));
        assert_eq!(
            server.credential.as_ref().map(Secret::expose),
            Some("Cd/49soE35ICqcJF/bCTn8Z4OyE=")
        );
    }

    #[test]
    fn turn_urls_are_checked() {
        for good in [
            "turn:turn.example.org:3478",
            "turn:10.0.0.1:3478?transport=tcp",
            "turns:turn.example.org:5349?transport=tcp",
            "turn:[::1]:3478",
        ] {
            assert_eq!(validate_turn_url(good), Ok(()), "{good}");
        }
        for bad in [
            "stun:x:3478",
            "turn:x",
            "turn::3478",
            "turn:x:0",
            "turn:u:p@x:3478",
            "turn:x:3478?transport=sctp",
        ] {
            assert!(validate_turn_url(bad).is_err(), "{bad}");
        }
    }
}
