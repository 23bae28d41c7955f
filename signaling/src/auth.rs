//! Who may join a room, and who may read the room list.
//!
//! Three kinds of credential, all optional (a server with none of them is open to anyone who
//! can reach it):
//! - **access tokens** (`--token-secret`): JWTs signed with HS256 ([`mint`], `gst-room token`)
//!   that name one room (or `*` for every room), one username (`sub`), an expiry (`exp`) and
//!   [`Grants`]. A token opens exactly that room for exactly that username until it expires;
//!   its grants decide what the participant may do there.
//! - **the shared token** (`--token`): one secret for everyone; it grants publish, play and
//!   chat in any room under any name.
//! - **the admin token** (`--admin-token`): read `/rooms`. An access token with the `admin`
//!   grant does the same.
//!
//! Every check here is a pure function of its inputs (the time is passed in), so it is unit
//! tested without a clock; [`Access`] adds the throttle, which counts failed attempts per
//! client address: after [`Config::auth_failures_per_minute`](crate::Config) wrong tokens
//! within a minute, further attempts from that address are refused *without being checked*
//! until the minute is over. A missing token is not counted (nothing was guessed).
//!
//! The shared and admin tokens are compared in constant time (`subtle`), so the time a refusal
//! takes says nothing about how much of a guess was right. JWT signatures are checked by
//! `jsonwebtoken` (aws-lc-rs, which compares HMACs in constant time).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use room_protocol::Secret;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::Config;

/// The room name an access token uses to open every room.
pub const ANY_ROOM: &str = "*";
/// The shortest `--token-secret` accepted: HS256 keys shorter than its 32-byte output are
/// easier to brute-force offline from one captured token.
pub const MIN_SECRET_BYTES: usize = 32;
/// How long failed attempts are remembered per address.
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Above this many remembered addresses, expired entries are dropped (bounded memory).
const THROTTLE_PRUNE_AT: usize = 10_000;

/// What a participant may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Announce streams (`publish`).
    pub publish: bool,
    /// Watch others' streams (`play`).
    pub subscribe: bool,
    /// Send chat messages (everyone receives chat).
    pub chat: bool,
    /// Read the operators' `/rooms` listing.
    pub admin: bool,
}

impl Grants {
    /// What a participant of an open server, or one with the shared token, may do.
    pub const PARTICIPANT: Grants = Grants {
        publish: true,
        subscribe: true,
        chat: true,
        admin: false,
    };
}

/// The claims of an access token (the JWT payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The room it opens, or [`ANY_ROOM`].
    pub room: String,
    /// The username it is for.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; refused from that second on.
    pub exp: u64,
    /// What the participant may do.
    pub grants: Grants,
}

/// Signs `claims` with `secret` (HS256): the token `gst-room token` prints.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Checks the signature and expiry of `token` at `now` (seconds since the epoch).
pub fn verify(key: &DecodingKey, token: &str, now: u64) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    // The expiry is checked below against the time passed in, not the library's clock.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|err| format!("the token is not valid ({})", why_invalid(&err)))?
        .claims;
    if claims.exp <= now {
        return Err(format!(
            "the token expired {} s ago",
            now.saturating_sub(claims.exp)
        ));
    }
    Ok(claims)
}

/// Why a token failed to decode, in words that quote nothing of it (a decoding error may name
/// a byte of the token, and refusals are logged).
fn why_invalid(err: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => "wrong signature",
        ErrorKind::InvalidAlgorithm => "not signed with HS256",
        ErrorKind::Json(_) => "claims missing or of the wrong form",
        _ => "not a signed token",
    }
}

/// Compares two secrets in constant time (for equal lengths; the length itself is not secret).
fn same_secret(given: &str, expected: &Secret) -> bool {
    given.as_bytes().ct_eq(expected.expose().as_bytes()).into()
}

/// Why an attempt was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credential where one is required (not counted by the throttle).
    Missing(String),
    /// A credential was presented and is wrong, expired, or for something else (counted).
    Wrong(String),
    /// Too many wrong credentials from this address: refused without checking.
    Throttled(String),
}

impl Refusal {
    /// The explanation for the client.
    pub fn detail(&self) -> &str {
        match self {
            Refusal::Missing(d) | Refusal::Wrong(d) | Refusal::Throttled(d) => d,
        }
    }
}

/// The server's credentials, without the throttle: pure checks.
pub struct Policy {
    key: Option<DecodingKey>,
    shared: Option<Secret>,
    admin: Option<Secret>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("access_tokens", &self.key.is_some())
            .field("shared_token", &self.shared.is_some())
            .field("admin_token", &self.admin.is_some())
            .finish()
    }
}

impl Policy {
    /// The policy of `config`.
    pub fn new(config: &Config) -> Self {
        Policy {
            key: config
                .token_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            shared: config.token.clone(),
            admin: config.admin_token.clone(),
        }
    }

    /// Whether joins need a token at all.
    pub fn required(&self) -> bool {
        self.key.is_some() || self.shared.is_some()
    }

    /// May `token` join `room` as `username` at `now` (seconds since the epoch)? Returns the
    /// participant's grants.
    pub fn join(
        &self,
        token: Option<&str>,
        room: &str,
        username: &str,
        now: u64,
    ) -> Result<Grants, Refusal> {
        const MISSING: &str =
            "this server needs a token to join (ask the organiser for an invite link)";
        let Some(claims) = self.claims_for_room(token, room, now, MISSING)? else {
            return Ok(Grants::PARTICIPANT);
        };
        if claims.sub != username {
            return Err(Refusal::Wrong(format!(
                "the token is for username {}, not {username}",
                claims.sub
            )));
        }
        Ok(claims.grants)
    }

    /// May `token` watch streams of `room` at `now` without joining it (a WHEP player)? An
    /// access token must be for that room (or every room); its username is not checked (the
    /// player takes no name in the room). Returns its grants: the caller checks subscribe.
    pub fn view(&self, token: Option<&str>, room: &str, now: u64) -> Result<Grants, Refusal> {
        const MISSING: &str = "this server needs a token (Authorization: Bearer ...)";
        Ok(self
            .claims_for_room(token, room, now, MISSING)?
            .map_or(Grants::PARTICIPANT, |claims| claims.grants))
    }

    /// The claims of an access token for `room` at `now`; `None` when no token is needed or
    /// the shared secret was given (every grant). `missing` is the refusal without a token.
    fn claims_for_room(
        &self,
        token: Option<&str>,
        room: &str,
        now: u64,
        missing: &str,
    ) -> Result<Option<Claims>, Refusal> {
        if !self.required() {
            return Ok(None);
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::Missing(missing.into()));
        };
        if self.shared.as_ref().is_some_and(|s| same_secret(token, s)) {
            return Ok(None);
        }
        let Some(key) = &self.key else {
            return Err(Refusal::Wrong("wrong token".into()));
        };
        let claims = verify(key, token, now).map_err(Refusal::Wrong)?;
        if claims.room != room && claims.room != ANY_ROOM {
            return Err(Refusal::Wrong(format!(
                "the token is for room {}, not {room}",
                claims.room
            )));
        }
        Ok(Some(claims))
    }

    /// May `bearer` (the `Authorization: Bearer` value) read `/rooms` at `now`?
    pub fn admin(&self, bearer: Option<&str>, now: u64) -> Result<(), Refusal> {
        let Some(bearer) = bearer.filter(|t| !t.is_empty()) else {
            return Err(Refusal::Missing(
                "the room list needs an admin token (Authorization: Bearer ...)".into(),
            ));
        };
        if self.admin.as_ref().is_some_and(|s| same_secret(bearer, s)) {
            return Ok(());
        }
        let Some(key) = &self.key else {
            return Err(Refusal::Wrong("wrong admin token".into()));
        };
        match verify(key, bearer, now) {
            Ok(claims) if claims.grants.admin => Ok(()),
            Ok(_) => Err(Refusal::Wrong("the token has no admin grant".into())),
            Err(why) => Err(Refusal::Wrong(why)),
        }
    }
}

/// Counts failed attempts per address in fixed one-minute windows.
#[derive(Debug)]
struct Throttle {
    limit: u32,
    /// Address → (start of its window, failures in it).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// The time left until `addr` may try again, when it has used up its failures.
    fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap();
        let (start, count) = *failures.get(&key(addr))?;
        let left = THROTTLE_WINDOW.checked_sub(now.saturating_duration_since(start))?;
        (count >= self.limit && !left.is_zero()).then_some(left)
    }

    fn fail(&self, addr: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= THROTTLE_PRUNE_AT {
            failures
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < THROTTLE_WINDOW);
        }
        let entry = failures.entry(key(addr)).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= THROTTLE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// The throttle's key: the IPv4 address, or the /64 network of an IPv6 address (one host
/// usually has a whole /64 to pick addresses from).
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// The policy plus the throttle on failures: what the connections and `/rooms` ask.
#[derive(Debug)]
pub struct Access {
    policy: Policy,
    throttle: Throttle,
}

impl Access {
    /// The access rules of `config`.
    pub fn new(config: &Config) -> Self {
        Access {
            policy: Policy::new(config),
            throttle: Throttle {
                limit: config.auth_failures_per_minute,
                failures: Mutex::new(HashMap::new()),
            },
        }
    }

    /// [`Policy::join`] for a client at `addr`, throttled.
    pub fn join(
        &self,
        addr: IpAddr,
        token: Option<&str>,
        room: &str,
        username: &str,
    ) -> Result<Grants, Refusal> {
        self.throttled(addr, |policy| {
            policy.join(token, room, username, unix_now())
        })
    }

    /// [`Policy::view`] for a client at `addr`, throttled.
    pub fn view(&self, addr: IpAddr, token: Option<&str>, room: &str) -> Result<Grants, Refusal> {
        self.throttled(addr, |policy| policy.view(token, room, unix_now()))
    }

    /// [`Policy::admin`] for a client at `addr`, throttled.
    pub fn admin(&self, addr: IpAddr, bearer: Option<&str>) -> Result<(), Refusal> {
        self.throttled(addr, |policy| policy.admin(bearer, unix_now()))
    }

    fn throttled<T>(
        &self,
        addr: IpAddr,
        check: impl FnOnce(&Policy) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let now = Instant::now();
        if let Some(left) = self.throttle.blocked(addr, now) {
            return Err(Refusal::Throttled(format!(
                "too many wrong tokens from your address: try again in {} s",
                left.as_secs().max(1)
            )));
        }
        let result = check(&self.policy);
        if let Err(Refusal::Wrong(why)) = &result {
            tracing::info!(%addr, "refused a wrong token: {why}");
            self.throttle.fail(addr, now);
        }
        result
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn policy() -> Policy {
        Policy::new(&Config {
            token_secret: Some(SECRET.into()),
            token: Some("shared".into()),
            admin_token: Some("admin".into()),
            ..Config::default()
        })
    }

    fn token(room: &str, sub: &str, exp: u64, grants: Grants) -> String {
        let claims = Claims {
            room: room.into(),
            sub: sub.into(),
            exp,
            grants,
        };
        mint(SECRET.as_bytes(), &claims)
    }

    #[test]
    fn a_token_opens_its_room_for_its_username_until_it_expires() {
        let p = policy();
        let t = token("a", "alice", 1000, Grants::PARTICIPANT);
        assert_eq!(p.join(Some(&t), "a", "alice", 999), Ok(Grants::PARTICIPANT));
        assert!(
            matches!(p.join(Some(&t), "a", "alice", 1000), Err(Refusal::Wrong(d)) if d.contains("expired"))
        );
        assert!(
            matches!(p.join(Some(&t), "b", "alice", 999), Err(Refusal::Wrong(d)) if d.contains("room a"))
        );
        assert!(
            matches!(p.join(Some(&t), "a", "bob", 999), Err(Refusal::Wrong(d)) if d.contains("username alice"))
        );
        let any = token(ANY_ROOM, "alice", 1000, Grants::PARTICIPANT);
        assert!(p.join(Some(&any), "b", "alice", 999).is_ok());
    }

    #[test]
    fn forged_and_missing_tokens_are_refused_and_the_shared_token_works() {
        let p = policy();
        let forged = mint(
            b"another secret of thirty-two bytes!",
            &Claims {
                room: "a".into(),
                sub: "alice".into(),
                exp: 1000,
                grants: Grants::PARTICIPANT,
            },
        );
        assert!(matches!(
            p.join(Some(&forged), "a", "alice", 1),
            Err(Refusal::Wrong(_))
        ));
        assert!(matches!(
            p.join(None, "a", "alice", 1),
            Err(Refusal::Missing(_))
        ));
        assert!(matches!(
            p.join(Some("sharee"), "a", "alice", 1),
            Err(Refusal::Wrong(_))
        ));
        assert_eq!(p.join(Some("shared"), "a", "x", 1), Ok(Grants::PARTICIPANT));
        let open = Policy::new(&Config::default());
        assert_eq!(open.join(None, "a", "x", 1), Ok(Grants::PARTICIPANT));
    }

    #[test]
    fn admin_needs_the_admin_token_or_the_admin_grant() {
        let p = policy();
        assert!(p.admin(Some("admin"), 1).is_ok());
        assert!(matches!(p.admin(None, 1), Err(Refusal::Missing(_))));
        assert!(matches!(p.admin(Some("shared"), 1), Err(Refusal::Wrong(_))));
        let user = token(ANY_ROOM, "ops", 10, Grants::PARTICIPANT);
        assert!(p.admin(Some(&user), 1).is_err());
        let ops = token(
            ANY_ROOM,
            "ops",
            10,
            Grants {
                admin: true,
                ..Grants::PARTICIPANT
            },
        );
        assert!(p.admin(Some(&ops), 1).is_ok());
        assert!(p.admin(Some(&ops), 10).is_err(), "expired");
    }

    #[test]
    fn the_throttle_blocks_after_the_limit_within_a_window() {
        let t = Throttle {
            limit: 2,
            failures: Mutex::new(HashMap::new()),
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        t.fail(a, start);
        assert_eq!(t.blocked(a, start), None);
        t.fail(a, start);
        assert!(t.blocked(a, start).is_some());
        assert!(t.blocked("192.0.2.2".parse().unwrap(), start).is_none());
        assert_eq!(t.blocked(a, start + THROTTLE_WINDOW), None);
        // One /64 is one key.
        assert_eq!(
            key("2001:db8::1".parse().unwrap()),
            key("2001:db8::ffff:1".parse().unwrap())
        );
    }
}
