//! Per-participant rate limits: token buckets (`governor`, GCRA) owned by each connection.
//!
//! Each connection has one bucket per kind of message that makes the server work for others
//! (chat fans out to the room, `play` asks a publisher for a peer connection, `publish` /
//! `unpublish` / `mute` / `join` / `leave` reach everyone in the room) and one for every
//! message. A message over its limit is dropped and answered with `error rate-limited`: the
//! flooder is the only one slowed down, and since it gets one reply per message, a flooder that
//! does not read fills its own outgoing queue and is disconnected (see `hub`). The room rules
//! never see the dropped message, so they stay free of clocks.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use room_protocol::ClientMessage;

/// A token bucket: `per_second` messages a second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate, messages per second.
    pub per_second: NonZeroU32,
    /// Messages accepted at once after a quiet period.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` a second, bursts of `burst`; both must be at least 1.
    pub const fn new(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: NonZeroU32::new(per_second).expect("a rate of at least 1"),
            burst: NonZeroU32::new(burst).expect("a burst of at least 1"),
        }
    }

    fn limiter(self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(Quota::per_second(self.per_second).allow_burst(self.burst))
    }
}

/// The command-line form: `RATE` or `RATE:BURST` (messages per second, bucket size); the burst
/// defaults to twice the rate.
impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            part.trim()
                .parse::<NonZeroU32>()
                .map_err(|_| format!("{part:?} is not a whole number of at least 1"))
        };
        let (per_second, burst) = match s.split_once(':') {
            Some((rate, burst)) => (number(rate)?, number(burst)?),
            None => {
                let rate = number(s)?;
                (rate, rate.saturating_mul(NonZeroU32::new(2).unwrap()))
            }
        };
        Ok(RateLimit { per_second, burst })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.per_second, self.burst)
    }
}

/// The limits a server applies to every participant (part of [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Chat messages.
    pub chat: RateLimit,
    /// `play` requests.
    pub play: RateLimit,
    /// Room events a participant causes: `join`, `leave`, `publish`, `unpublish`, `mute`.
    pub room_events: RateLimit,
    /// Every message, whatever its kind (SDP and ICE included).
    pub messages: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            chat: RateLimit::new(10, 20),
            // roomsrc plays every stream of a room at once when it joins: a room of 3 with
            // 4 streams each is 8 plays in a burst.
            play: RateLimit::new(5, 20),
            room_events: RateLimit::new(5, 20),
            // ICE trickling sends a few dozen candidates per session within a second.
            messages: RateLimit::new(100, 200),
        }
    }
}

/// One connection's buckets. Created with the connection, dropped with it.
pub struct Limiters {
    limits: RateLimits,
    chat: DefaultDirectRateLimiter,
    play: DefaultDirectRateLimiter,
    room_events: DefaultDirectRateLimiter,
    messages: DefaultDirectRateLimiter,
}

impl Limiters {
    /// Full buckets.
    pub fn new(limits: RateLimits) -> Limiters {
        Limiters {
            limits,
            chat: limits.chat.limiter(),
            play: limits.play.limiter(),
            room_events: limits.room_events.limiter(),
            messages: limits.messages.limiter(),
        }
    }

    /// Takes a token for `msg` from its kind's bucket and from the every-message bucket; `Err`
    /// with the explanation for its sender when either is empty (a message refused by its
    /// kind's bucket takes nothing from the every-message one).
    pub fn check(&self, msg: &ClientMessage) -> Result<(), String> {
        let (kind, bucket, limit) = match msg {
            ClientMessage::Message { .. } => ("chat messages", &self.chat, self.limits.chat),
            ClientMessage::Play { .. } => ("play requests", &self.play, self.limits.play),
            ClientMessage::Join { .. }
            | ClientMessage::Leave {}
            | ClientMessage::Publish { .. }
            | ClientMessage::Unpublish { .. }
            | ClientMessage::Mute { .. } => (
                "join/leave/publish/unpublish/mute messages",
                &self.room_events,
                self.limits.room_events,
            ),
            ClientMessage::Sdp { .. } | ClientMessage::Ice { .. } | ClientMessage::Stop { .. } => {
                return self.check_messages();
            }
        };
        if bucket.check().is_err() {
            return Err(over(kind, limit));
        }
        self.check_messages()
    }

    /// Takes a token of the every-message bucket (also for input that never parsed).
    pub fn check_messages(&self) -> Result<(), String> {
        self.messages
            .check()
            .map_err(|_| over("messages", self.limits.messages))
    }
}

fn over(kind: &str, limit: RateLimit) -> String {
    format!(
        "too many {kind}: at most {} per second (bursts of {})",
        limit.per_second, limit.burst
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_and_optional_burst() {
        assert_eq!("10:20".parse(), Ok(RateLimit::new(10, 20)));
        assert_eq!("7".parse(), Ok(RateLimit::new(7, 14)));
        assert!("0:5".parse::<RateLimit>().is_err());
        assert!("x".parse::<RateLimit>().is_err());
        assert_eq!(RateLimit::new(3, 4).to_string(), "3:4");
    }

    #[test]
    fn a_burst_passes_then_the_bucket_refuses() {
        let limits = RateLimits {
            chat: RateLimit::new(1, 3),
            ..RateLimits::default()
        };
        let buckets = Limiters::new(limits);
        let chat = ClientMessage::Message {
            to: None,
            text: "x".into(),
        };
        for _ in 0..3 {
            assert!(buckets.check(&chat).is_ok());
        }
        let refused = buckets.check(&chat).unwrap_err();
        assert!(refused.contains("chat messages"), "{refused}");
        // Other kinds have their own buckets.
        assert!(buckets.check(&ClientMessage::Leave {}).is_ok());
    }

    #[test]
    fn every_kind_of_message_takes_from_its_bucket_and_the_every_message_one() {
        let one = RateLimit::new(1, 1);
        let buckets = Limiters::new(RateLimits {
            chat: one,
            play: one,
            room_events: one,
            messages: RateLimit::new(1, 6),
        });
        let play = ClientMessage::Play {
            participant: "a".into(),
            stream: "b".into(),
        };
        let publish = ClientMessage::Publish {
            stream: "s".into(),
            audio: true,
            video: true,
        };
        let mute = ClientMessage::Mute {
            stream: "s".into(),
            audio_muted: true,
            video_muted: true,
        };
        let stop = ClientMessage::Stop {
            session: "s1".into(),
        };
        assert!(buckets.check(&play).is_ok());
        assert!(buckets.check(&play).unwrap_err().contains("play requests"));
        assert!(buckets.check(&publish).is_ok());
        // mute shares the room-event bucket with publish, join, leave and unpublish.
        assert!(buckets.check(&mute).unwrap_err().contains("mute"));
        assert!(buckets.check(&ClientMessage::Leave {}).is_err());
        // Refused messages took no token: 2 taken so far; SDP/ICE/stop only use the last bucket.
        for _ in 0..4 {
            assert!(buckets.check(&stop).is_ok());
        }
        assert!(
            buckets
                .check(&stop)
                .unwrap_err()
                .contains("too many messages")
        );
        assert!(buckets.check_messages().is_err());
    }
}
