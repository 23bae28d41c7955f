//! The addresses of the media port: what the server's candidates advertise, which of them a
//! datagram arrived on (the socket may be bound to the unspecified address), and IPv4 peers of
//! a dual-stack socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The addresses the server's candidates carry: `configured`, else the bound address, else
/// (bound to the unspecified address) every local address of its family.
/// `dual_stack`: bound to `[::]` without IPV6_V6ONLY, the socket takes IPv4 too.
pub(crate) fn advertised_addresses(
    configured: &[IpAddr],
    bound: SocketAddr,
    dual_stack: bool,
) -> Vec<SocketAddr> {
    let port = bound.port();
    if !configured.is_empty() {
        return configured
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
    }
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut local: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .filter(|ip| dual_stack || ip.is_ipv4() == bound.is_ipv4())
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    // IPv4 first (what most peers reach), loopback last.
    local.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6()));
    local.dedup();
    if local.is_empty() {
        let loopback = if bound.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        local.push(SocketAddr::new(loopback, port));
    }
    local
}

/// An IPv4 peer as a dual-stack socket reports it (`::ffff:a.b.c.d`) → its IPv4 address, as
/// the peer's candidates and str0m know it.
pub(crate) fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Where to send to `destination` from a socket bound to `local`: IPv4 peers of an IPv6
/// (dual-stack) socket by their mapped address.
pub(crate) fn send_address(destination: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (destination, local) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => destination,
    }
}

/// The local candidate a datagram from `source` arrived on. The socket may be bound to the
/// unspecified address (no per-datagram destination), and str0m only answers checks that
/// arrive on one of its candidates, so this picks the advertised address a peer at `source`
/// would use: loopback for loopback peers, else the first of the same family.
pub(crate) fn destination_for(source: SocketAddr, candidates: &[SocketAddr]) -> SocketAddr {
    let same_family = |a: &&SocketAddr| a.is_ipv4() == source.is_ipv4();
    candidates
        .iter()
        .filter(same_family)
        .find(|a| a.ip().is_loopback() == source.ip().is_loopback())
        .or_else(|| candidates.iter().find(same_family))
        .or_else(|| candidates.first())
        .copied()
        .unwrap_or(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn advertised_addresses_follow_the_configuration_then_the_bound_address() {
        let bound = addr("0.0.0.0:7882");
        let configured = [IpAddr::from([203, 0, 113, 7])];
        assert_eq!(
            advertised_addresses(&configured, bound, false),
            [addr("203.0.113.7:7882")]
        );
        assert_eq!(
            advertised_addresses(&[], addr("192.0.2.9:7000"), false),
            [addr("192.0.2.9:7000")]
        );
        let local = advertised_addresses(&[], bound, false);
        assert!(
            local.iter().all(|a| a.is_ipv4() && a.port() == 7882),
            "{local:?}"
        );
        assert!(local.contains(&addr("127.0.0.1:7882")), "{local:?}");
        assert!(
            local.last().unwrap().ip().is_loopback(),
            "loopback last: {local:?}"
        );
    }

    #[test]
    fn a_dual_stack_socket_advertises_both_families_and_speaks_ipv4_mapped() {
        let local = advertised_addresses(&[], addr("[::]:7882"), true);
        assert!(local.contains(&addr("127.0.0.1:7882")), "{local:?}");
        assert!(local.first().unwrap().is_ipv4(), "IPv4 first: {local:?}");
        assert_eq!(
            unmapped(addr("[::ffff:192.0.2.1]:5000")),
            addr("192.0.2.1:5000")
        );
        assert_eq!(
            unmapped(addr("[2001:db8::1]:5000")),
            addr("[2001:db8::1]:5000")
        );
        assert_eq!(
            send_address(addr("192.0.2.1:5000"), addr("[::]:7882")),
            addr("[::ffff:192.0.2.1]:5000")
        );
        assert_eq!(
            send_address(addr("192.0.2.1:5000"), addr("0.0.0.0:7882")),
            addr("192.0.2.1:5000")
        );
    }

    #[test]
    fn a_datagram_arrives_on_the_candidate_its_sender_would_use() {
        let candidates = [
            addr("192.0.2.2:7882"),
            addr("127.0.0.1:7882"),
            addr("[fd00::2]:7882"),
        ];
        assert_eq!(
            destination_for(addr("127.0.0.1:5000"), &candidates),
            candidates[1]
        );
        assert_eq!(
            destination_for(addr("198.51.100.4:5000"), &candidates),
            candidates[0]
        );
        assert_eq!(
            destination_for(addr("[2001:db8::1]:5000"), &candidates),
            candidates[2]
        );
        // Only a public address advertised (behind NAT): loopback senders too.
        let public = [addr("203.0.113.7:7882")];
        assert_eq!(destination_for(addr("127.0.0.1:5000"), &public), public[0]);
    }
}
