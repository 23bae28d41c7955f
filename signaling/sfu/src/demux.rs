//! Which session a datagram on the shared UDP port belongs to, without I/O.
//!
//! The rule (as LiveKit's UDP mux): a STUN message carrying a USERNAME goes to the session whose
//! local ICE ufrag is the USERNAME's first part (peers address the server's ufrag in their
//! connectivity checks); everything else (DTLS, RTP, RTCP, STUN without USERNAME) goes by its
//! source address, learned when that address passed an ICE check of a session (the engine calls
//! [`Demux::learn`] after str0m verified the check's integrity). Datagrams that are too short for
//! their protocol's header, unknown first bytes (RFC 7983), STUN that does not parse, an unknown
//! ufrag or an unknown address are dropped with a [`DropReason`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;

use str0m::ice::StunMessage;

/// Addresses remembered per session (a peer's candidate pairs that passed a check); the oldest
/// is forgotten past this.
pub const MAX_ADDRESSES_PER_SESSION: usize = 4;

/// The protocols sharing the port (RFC 7983 first-byte ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    RtpOrRtcp,
}

/// Why a datagram was dropped before reaching a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Too short for its header, an unknown first byte, or STUN that does not parse.
    Malformed,
    /// A STUN USERNAME naming no session's ufrag.
    UnknownUfrag,
    /// Not STUN, from an address no session has learned.
    UnknownAddress,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<S> {
    Session(S, Kind),
    Drop(DropReason),
}

/// Minimum lengths: STUN header 20 bytes, DTLS record header 13, RTCP header 8, RTP header 12.
const STUN_HEADER: usize = 20;
const DTLS_RECORD_HEADER: usize = 13;
const RTP_HEADER: usize = 12;
const RTCP_HEADER: usize = 8;

/// The protocol of a datagram by its first byte (RFC 7983), if its header fits.
pub fn classify(datagram: &[u8]) -> Option<Kind> {
    let first = *datagram.first()?;
    let (kind, min_len) = match first {
        0..=3 => (Kind::Stun, STUN_HEADER),
        20..=63 => (Kind::Dtls, DTLS_RECORD_HEADER),
        128..=191 => {
            // RTCP packet types 192..=223 sit where RTP's marker bit + payload type would be.
            let rtcp = datagram.get(1).is_some_and(|pt| (192..=223).contains(pt));
            (Kind::RtpOrRtcp, if rtcp { RTCP_HEADER } else { RTP_HEADER })
        }
        _ => return None,
    };
    (datagram.len() >= min_len).then_some(kind)
}

/// The session tables: ufrag → session, address → session.
#[derive(Debug)]
pub struct Demux<S> {
    by_ufrag: HashMap<String, S>,
    by_addr: HashMap<SocketAddr, S>,
    addrs_of: HashMap<S, VecDeque<SocketAddr>>,
}

impl<S> Default for Demux<S> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

impl<S: Copy + Eq + Hash> Demux<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session whose local ICE ufrag is `ufrag`.
    pub fn add_session(&mut self, session: S, ufrag: &str) {
        self.by_ufrag.insert(ufrag.to_owned(), session);
    }

    /// Forget a session: its ufrag and addresses.
    pub fn remove_session(&mut self, session: S) {
        self.by_ufrag.retain(|_, s| *s != session);
        for addr in self.addrs_of.remove(&session).unwrap_or_default() {
            self.by_addr.remove(&addr);
        }
    }

    /// `addr` passed an ICE check of `session`: its non-STUN datagrams go there from now on (an
    /// address moves to the session that checked it last).
    pub fn learn(&mut self, addr: SocketAddr, session: S) {
        match self.by_addr.insert(addr, session) {
            Some(previous) if previous == session => return,
            Some(previous) => {
                if let Some(addrs) = self.addrs_of.get_mut(&previous) {
                    addrs.retain(|a| *a != addr);
                }
            }
            None => {}
        }
        let addrs = self.addrs_of.entry(session).or_default();
        addrs.push_back(addr);
        if addrs.len() > MAX_ADDRESSES_PER_SESSION
            && let Some(oldest) = addrs.pop_front()
        {
            self.by_addr.remove(&oldest);
        }
    }

    /// Number of learned addresses (all sessions).
    pub fn address_count(&self) -> usize {
        self.by_addr.len()
    }

    /// The session `datagram` from `source` belongs to.
    pub fn route(&self, datagram: &[u8], source: SocketAddr) -> Route<S> {
        let Some(kind) = classify(datagram) else {
            return Route::Drop(DropReason::Malformed);
        };
        if kind == Kind::Stun {
            let Ok(message) = StunMessage::parse(datagram) else {
                return Route::Drop(DropReason::Malformed);
            };
            if let Some((local_ufrag, _remote)) = message.split_username() {
                return match self.by_ufrag.get(local_ufrag) {
                    Some(session) => Route::Session(*session, kind),
                    None => Route::Drop(DropReason::UnknownUfrag),
                };
            }
        }
        match self.by_addr.get(&source) {
            Some(session) => Route::Session(*session, kind),
            None => Route::Drop(DropReason::UnknownAddress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use str0m::ice::{StunMessage, TransId};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// A STUN binding request as a peer sends it to the server: USERNAME "server:peer".
    fn binding_request(username: &str) -> Vec<u8> {
        let message =
            StunMessage::binding_request(username, TransId::new(), true, 0, 0x6e00_1eff, false);
        let mut buf = vec![0u8; 1500];
        let hmac = |_key: &[u8], _payloads: &[&[u8]]| [0u8; 20];
        let n = message.to_bytes(Some(b"password"), &mut buf, hmac).unwrap();
        buf.truncate(n);
        buf
    }

    fn rtp_packet() -> Vec<u8> {
        let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42];
        packet.extend_from_slice(&[0x10, 0, 0x9d, 0x01, 0x2a]);
        packet
    }

    #[test]
    fn stun_goes_by_ufrag_and_the_rest_by_learned_address() {
        let mut demux = Demux::new();
        demux.add_session(1u64, "srv1");
        demux.add_session(2u64, "srv2");
        let request = binding_request("srv2:peer");
        assert_eq!(
            demux.route(&request, addr(1)),
            Route::Session(2, Kind::Stun)
        );
        assert_eq!(
            demux.route(&rtp_packet(), addr(1)),
            Route::Drop(DropReason::UnknownAddress)
        );
        demux.learn(addr(1), 2);
        assert_eq!(
            demux.route(&rtp_packet(), addr(1)),
            Route::Session(2, Kind::RtpOrRtcp)
        );
        assert_eq!(
            demux.route(&binding_request("nobody:peer"), addr(1)),
            Route::Drop(DropReason::UnknownUfrag)
        );
    }

    #[test]
    fn an_address_moves_to_the_session_that_checked_it_last_and_removal_forgets_it() {
        let mut demux = Demux::new();
        demux.add_session(1u64, "a");
        demux.add_session(2u64, "b");
        demux.learn(addr(1), 1);
        demux.learn(addr(1), 2);
        assert_eq!(
            demux.route(&rtp_packet(), addr(1)),
            Route::Session(2, Kind::RtpOrRtcp)
        );
        demux.remove_session(1);
        assert_eq!(
            demux.route(&rtp_packet(), addr(1)),
            Route::Session(2, Kind::RtpOrRtcp)
        );
        demux.remove_session(2);
        assert_eq!(demux.address_count(), 0);
        assert_eq!(
            demux.route(&binding_request("b:peer"), addr(1)),
            Route::Drop(DropReason::UnknownUfrag)
        );
    }

    #[test]
    fn addresses_per_session_are_bounded() {
        let mut demux = Demux::new();
        for port in 0..20 {
            demux.learn(addr(port), 7u64);
        }
        assert_eq!(demux.address_count(), MAX_ADDRESSES_PER_SESSION);
        assert_eq!(
            demux.route(&rtp_packet(), addr(19)),
            Route::Session(7, Kind::RtpOrRtcp)
        );
        assert_eq!(
            demux.route(&rtp_packet(), addr(0)),
            Route::Drop(DropReason::UnknownAddress)
        );
    }

    #[test]
    fn truncated_headers_are_malformed() {
        let demux: Demux<u64> = Demux::new();
        for datagram in [
            &[][..],
            &[0x80, 96, 0, 1][..],                 // RTP shorter than 12
            &[0x80, 200, 0][..],                   // RTCP shorter than 8
            &[22, 0xfe, 0xfd, 0, 0][..],           // DTLS shorter than 13
            &[0, 1, 0, 0, 0x21, 0x12, 0xa4][..],   // STUN shorter than 20
            &[100, 1, 2, 3, 4, 5, 6, 7, 8, 9][..], // no protocol starts with 100
        ] {
            assert_eq!(
                demux.route(datagram, addr(1)),
                Route::Drop(DropReason::Malformed),
                "{datagram:?}"
            );
        }
        let request = binding_request("srv:peer");
        for len in 0..request.len() {
            assert_eq!(
                demux.route(&request[..len], addr(1)),
                Route::Drop(DropReason::Malformed),
                "STUN cut at {len}"
            );
        }
    }

    proptest! {
        /// Random and truncated datagrams never panic, and never reach a session unless they
        /// come from its learned address or name its ufrag.
        #[test]
        fn random_datagrams_never_reach_a_session_by_accident(
            datagram in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..300,
            port in 1u16..100,
        ) {
            let mut demux = Demux::new();
            demux.add_session(1u64, "known");
            demux.learn(addr(1000), 1);
            let truncated = &datagram[..cut.min(datagram.len())];
            for d in [&datagram[..], truncated] {
                match demux.route(d, addr(port)) {
                    Route::Session(s, Kind::Stun) => {
                        let message = StunMessage::parse(d).unwrap();
                        prop_assert_eq!(s, 1);
                        prop_assert_eq!(message.split_username().unwrap().0, "known");
                    }
                    Route::Session(_, kind) => prop_assert!(false, "{:?} from an unknown address", kind),
                    Route::Drop(_) => {}
                }
            }
        }

        /// Every prefix of a valid STUN request, RTP packet, or random tail keeps the demultiplexer
        /// alive and the known session routable.
        #[test]
        fn truncated_stun_and_rtp_do_not_disturb_a_session(cut in 0usize..200, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut demux = Demux::new();
            demux.add_session(1u64, "known");
            demux.learn(addr(1000), 1);
            let mut request = binding_request("known:peer");
            request.extend_from_slice(&tail);
            let _ = demux.route(&request[..cut.min(request.len())], addr(5));
            let rtp = rtp_packet();
            let _ = demux.route(&rtp[..cut.min(rtp.len())], addr(5));
            prop_assert_eq!(demux.route(&rtp_packet(), addr(1000)), Route::Session(1, Kind::RtpOrRtcp));
        }
    }
}
