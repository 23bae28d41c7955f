//! What protects browsers: the Origin and Host rule of `/ws`, and the security headers every
//! response carries.
//!
//! **Origin.** A browser sends `Origin` with every WebSocket request, and any web site a person
//! visits may try to open one to a server on their LAN or localhost. `/ws` accepts a browser
//! only when its `Origin` is the page's own origin (its host and port are the `Host` the request
//! was sent to) or one listed with `--allow-origin`. Requests without `Origin` come from
//! programs (the GStreamer elements, CLI tools), which a web page cannot forge, and are accepted.
//!
//! **Host.** DNS rebinding turns an attacker's name into 127.0.0.1, which makes the attacker's
//! page "same origin" with a local server. On a loopback listener the `Host` header must
//! therefore name the server itself: `localhost`, `127.0.0.1` (or the bound loopback address)
//! or `[::1]`, with the port — or the host of an `--allow-origin` origin, which is how a reverse
//! proxy in front of a loopback server passes the public name on. On other listeners names
//! cannot be known; use tokens there.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use tower_http::set_header::SetResponseHeaderLayer;

/// Content-Security-Policy of every response. The page loads only its own scripts, styles and
/// icon; media come from the camera and peer connections (no URLs). `connect-src` allows any
/// ws:/wss: because the page's Server field (and `?server=`) may name another room server
/// the user chooses (the page asks before sending camera or microphone there); script-src
/// 'self' is what keeps injected script out, and without script nothing can connect anyway.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; media-src 'self' blob: mediastream:; \
     connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The headers added to every response (page, files, API, errors).
pub fn security_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Older browsers ignore frame-ancestors: clickjacking of Join/Publish needs a frame.
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Invite links may carry a room name; nothing leaks to other sites through Referer.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// One tower layer per header of [`security_headers`], to put around the router.
pub fn security_header_layers() -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    security_headers()
        .into_iter()
        .map(|(name, value)| SetResponseHeaderLayer::overriding(name, value))
        .collect()
}

/// Who may open `/ws`, decided from the request headers.
#[derive(Debug, Clone)]
pub struct OriginRule {
    /// `--allow-origin` values, normalised (lower case, no trailing `/`).
    allowed: Vec<String>,
    /// For a loopback listener, the `Host` values that name it (its own names with its port, and
    /// the hosts of the allowed origins).
    loopback_hosts: Option<Vec<String>>,
}

impl OriginRule {
    /// The rule for a server listening on `local` with `--allow-origin` values `allowed`.
    pub fn new(local: SocketAddr, allowed: &[String]) -> Self {
        let port = local.port();
        let loopback_hosts = local.ip().is_loopback().then(|| {
            let mut hosts = vec![
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ];
            hosts.push(local.to_string());
            hosts
        });
        let allowed: Vec<String> = allowed.iter().map(|o| normalise_origin(o)).collect();
        let loopback_hosts = loopback_hosts.map(|mut hosts| {
            hosts.extend(
                allowed
                    .iter()
                    .filter_map(|o| authority(o))
                    .map(str::to_owned),
            );
            hosts
        });
        OriginRule {
            allowed,
            loopback_hosts,
        }
    }

    /// Ok, or why the request is refused.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        if let Some(names) = &self.loopback_hosts {
            match &host {
                Some(h) if names.contains(h) => {}
                Some(h) => {
                    return Err(format!(
                        "Host {h:?} does not name this server (a local server answers only to \
                         localhost, 127.0.0.1 or [::1] with its port)"
                    ));
                }
                None => return Err("no Host header".into()),
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(()); // not a browser
        };
        let origin = normalise_origin(origin.to_str().unwrap_or("null"));
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        match (authority(&origin), &host) {
            (Some(a), Some(h)) if a == h => Ok(()),
            _ => Err(format!(
                "Origin {origin:?} may not open a room connection here: only pages served by \
                 this server and origins allowed with --allow-origin may"
            )),
        }
    }
}

/// `host[:port]` of an http(s) origin.
fn authority(origin: &str) -> Option<&str> {
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
}

fn normalise_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The 403 a refused `/ws` request gets.
pub fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(header::HOST, host.parse().unwrap());
        }
        if let Some(origin) = origin {
            h.insert(header::ORIGIN, origin.parse().unwrap());
        }
        h
    }

    #[test]
    fn own_origin_allowed_origins_and_programs_pass() {
        let rule = OriginRule::new(
            "0.0.0.0:8443".parse().unwrap(),
            &["https://Meet.example.org/".into()],
        );
        let ok = |host, origin| rule.check(&headers(host, origin)).is_ok();
        assert!(ok(
            Some("room.example.org"),
            Some("https://room.example.org")
        ));
        assert!(ok(Some("10.0.0.5:8443"), Some("http://10.0.0.5:8443")));
        assert!(ok(Some("10.0.0.5:8443"), Some("https://meet.example.org")));
        assert!(ok(Some("10.0.0.5:8443"), None), "no Origin: not a browser");
        assert!(!ok(Some("10.0.0.5:8443"), Some("http://evil.example")));
        assert!(!ok(Some("10.0.0.5:8443"), Some("null")));
        assert!(!ok(Some("10.0.0.5:8443"), Some("http://10.0.0.5:8444")));
    }

    #[test]
    fn a_loopback_server_answers_only_to_its_own_names() {
        let rule = OriginRule::new("127.0.0.1:8443".parse().unwrap(), &[]);
        let ok = |host, origin| rule.check(&headers(host, origin)).is_ok();
        assert!(ok(Some("127.0.0.1:8443"), Some("http://127.0.0.1:8443")));
        assert!(ok(Some("localhost:8443"), None));
        assert!(ok(Some("[::1]:8443"), None));
        // DNS rebinding: the attacker's name resolves to 127.0.0.1, Origin and Host agree.
        assert!(!ok(
            Some("evil.example:8443"),
            Some("http://evil.example:8443")
        ));
        assert!(!ok(Some("localhost:9999"), None));
        assert!(!ok(None, None));
        // Behind a reverse proxy that passes the public name on, listed with --allow-origin.
        let proxied = OriginRule::new(
            "127.0.0.1:8443".parse().unwrap(),
            &["https://meet.example.org".into()],
        );
        let ok = |host, origin| proxied.check(&headers(host, origin)).is_ok();
        assert!(ok(
            Some("meet.example.org"),
            Some("https://meet.example.org")
        ));
        assert!(!ok(
            Some("other.example.org"),
            Some("https://other.example.org")
        ));
    }
}
