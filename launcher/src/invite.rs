//! Addresses people can reach: the invite links the server prints, and the names its
//! self-signed certificate covers.
//!
//! A wildcard listen address (`0.0.0.0`, `[::]`) is never shown to anyone: nobody can open it.
//! Instead there is one link per non-loopback address of the machine's interfaces (IPv4 for
//! `0.0.0.0`; IPv4 and IPv6 for `[::]`, which Linux makes dual-stack), plus the host name when
//! it resolves to one of them. `--public-url` (reverse proxy, NAT, DNS name) replaces them all.

use std::net::{IpAddr, SocketAddr};

/// The machine's interface addresses (loopback included); empty when they cannot be listed.
pub fn interface_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
        Err(err) => {
            tracing::warn!("cannot list the network interfaces: {err}");
            Vec::new()
        }
    }
}

/// The machine's host name, if it has one.
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on
    // success (a truncated name is cut at the last byte we zeroed).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The addresses a server listening on `listen` can be reached at from other machines.
pub fn reachable_addresses(listen: IpAddr, interfaces: &[IpAddr]) -> Vec<IpAddr> {
    if !listen.is_unspecified() {
        return vec![listen];
    }
    let mut addresses: Vec<IpAddr> = interfaces
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            // `[::]` also accepts IPv4; link-local IPv6 needs a zone id a URL cannot carry.
            IpAddr::V6(v6) => listen.is_ipv6() && !v6.is_unicast_link_local(),
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The base URLs (`scheme://host:port/`) of the invite links: `hosts` are the reachable
/// addresses, then the host name when it resolved to one of them (`host_name_resolves`). When
/// there is no reachable address at all (an isolated machine) the loopback address stands in.
pub fn base_urls(
    tls: bool,
    listen: SocketAddr,
    reachable: &[IpAddr],
    host_name: Option<&str>,
) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    let port = listen.port();
    let mut hosts: Vec<String> = reachable
        .iter()
        .map(|ip| SocketAddr::new(*ip, port).to_string())
        .collect();
    if hosts.is_empty() {
        let loopback = match listen.ip() {
            IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        };
        hosts.push(SocketAddr::new(loopback, port).to_string());
    }
    if let Some(name) = host_name {
        hosts.push(format!("{name}:{port}"));
    }
    hosts
        .into_iter()
        .map(|host| format!("{scheme}://{host}/"))
        .collect()
}

/// `--public-url` as a base URL ending in `/`: `https://conf.example.org` →
/// `https://conf.example.org/`.
pub fn parse_public_url(arg: &str) -> Result<String, String> {
    let url = url::Url::parse(arg).map_err(|e| format!("{arg:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{arg:?}: expected http(s)://host[:port][/path], e.g. https://conf.example.org"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{arg:?}: no ?query or #fragment, please"));
    }
    let mut base = url.to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    Ok(base)
}

/// The WebSocket URL of a base URL: `https://h:1/x/` → `wss://h:1/x/ws`.
pub fn ws_url(base: &str) -> String {
    let ws = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{ws}ws")
}

/// The names a self-signed certificate must cover: `localhost`, the loopback addresses, the
/// host name, every address the server listens on (each interface address for a wildcard) and
/// the `--public-url` host.
pub fn certificate_names(
    listen: IpAddr,
    interfaces: &[IpAddr],
    host_name: Option<&str>,
    public_host: Option<&str>,
) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    names.extend(host_name.map(str::to_owned));
    names.extend(public_host.map(|h| h.trim_matches(['[', ']']).to_owned()));
    let mut addresses = vec![IpAddr::from([127, 0, 0, 1])];
    if listen.is_unspecified() {
        addresses.extend(interfaces.iter().filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        }));
    } else {
        addresses.push(listen);
    }
    names.extend(addresses.iter().map(IpAddr::to_string));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_is_replaced_by_each_reachable_interface_address() {
        let interfaces = [
            ip("127.0.0.1"),
            ip("10.0.0.5"),
            ip("192.168.1.7"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::5"),
        ];
        let v4 = reachable_addresses(ip("0.0.0.0"), &interfaces);
        assert_eq!(v4, [ip("10.0.0.5"), ip("192.168.1.7")]);
        let v6 = reachable_addresses(ip("::"), &interfaces);
        assert_eq!(v6, [ip("10.0.0.5"), ip("192.168.1.7"), ip("2001:db8::5")]);
        let listen: SocketAddr = "[::]:8443".parse().unwrap();
        let urls = base_urls(true, listen, &v6, Some("box"));
        assert_eq!(
            urls,
            [
                "https://10.0.0.5:8443/",
                "https://192.168.1.7:8443/",
                "https://[2001:db8::5]:8443/",
                "https://box:8443/"
            ]
        );
        assert!(
            urls.iter()
                .all(|u| !u.contains("0.0.0.0") && !u.contains("[::]"))
        );
    }

    #[test]
    fn a_specific_address_is_its_own_link_and_the_scheme_follows_tls() {
        let listen: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let reachable = reachable_addresses(listen.ip(), &[ip("10.0.0.5")]);
        assert_eq!(
            base_urls(false, listen, &reachable, None),
            ["http://127.0.0.1:8443/"]
        );
        let lonely: SocketAddr = "0.0.0.0:9".parse().unwrap();
        assert_eq!(base_urls(true, lonely, &[], None), ["https://127.0.0.1:9/"]);
    }

    #[test]
    fn public_urls_are_checked_and_give_the_websocket_url() {
        assert_eq!(
            parse_public_url("https://conf.example.org").unwrap(),
            "https://conf.example.org/"
        );
        assert_eq!(
            ws_url(&parse_public_url("https://example.org/conf").unwrap()),
            "wss://example.org/conf/ws"
        );
        assert_eq!(ws_url("http://10.0.0.5:8443/"), "ws://10.0.0.5:8443/ws");
        assert!(parse_public_url("ftp://x").is_err());
        assert!(parse_public_url("conf.example.org").is_err());
        assert!(parse_public_url("https://x/?room=a").is_err());
    }

    #[test]
    fn certificate_names_cover_loopback_the_host_and_every_listened_address() {
        let names = certificate_names(
            ip("0.0.0.0"),
            &[ip("127.0.0.1"), ip("10.0.0.5"), ip("fe80::1")],
            Some("box"),
            Some("conf.example.org"),
        );
        assert_eq!(
            names,
            [
                "localhost",
                "box",
                "conf.example.org",
                "127.0.0.1",
                "10.0.0.5"
            ]
        );
        let names = certificate_names(ip("10.0.0.5"), &[], None, None);
        assert_eq!(names, ["localhost", "127.0.0.1", "10.0.0.5"]);
    }
}
