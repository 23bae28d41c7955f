//! `gst-room server`: the signaling server and the conference page, until Ctrl-C.
//!
//! [`start`] is shared with `gst-room demo`: it binds, prepares TLS (the given certificate or
//! the kept self-signed one), prints what people need (the invite links, the certificate's
//! fingerprints) and warns when other machines' browsers could not use the page.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use room_signaling::cluster::ClusterConfig;
use room_signaling::media::{DEFAULT_MEDIA_PORT, MediaConfig, SfuSettings};
use room_signaling::protocol::IceServer;
use room_signaling::tls::{self, TlsFiles};
use room_signaling::{
    Config, DEFAULT_AUTH_FAILURES_PER_MINUTE, DEFAULT_HEADER_TIMEOUT, DEFAULT_JOIN_TIMEOUT,
    DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_PARTICIPANTS, DEFAULT_MAX_STREAMS,
    DEFAULT_MESSAGE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, RateLimit, RateLimits,
};
use tokio::net::TcpListener;

use crate::invite;

use crate::token::SecretArgs;
use crate::turn::TurnArgs;

/// Flags of `gst-room server` (also used by `gst-room demo`). `Debug` is hand-written below:
/// tokens and TURN passwords never reach a log.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Address and port to listen on (HTTP and WebSocket on one port). Port 0 picks a free one.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Most participants per room.
    #[arg(long, default_value_t = DEFAULT_MAX_PARTICIPANTS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_participants: u16,
    /// A shared token: a join carrying it is admitted (publish, play, chat; any room and name).
    /// With --token-secret too, either kind of token is accepted.
    #[arg(long, env = "GST_ROOM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Bearer token that may read /rooms (as may an access token with the admin grant).
    #[arg(long, env = "GST_ROOM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Wrong tokens one address may present per minute; further attempts in that minute are
    /// refused without being checked.
    #[arg(long, default_value_t = DEFAULT_AUTH_FAILURES_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failures_per_minute: u32,
    /// A browser origin besides the page's own that may open /ws, e.g.
    /// https://meet.example.org (repeatable).
    #[arg(long = "allow-origin")]
    pub allowed_origins: Vec<String>,
    /// Folder served at / (the conference page). Defaults to this source tree's signaling/web.
    #[arg(long)]
    pub web_dir: Option<PathBuf>,
    /// An ICE server handed to each participant once it has joined (repeatable): stun:host:port, or
    /// turn:user:password@host:port for TURN with credentials.
    #[arg(long = "ice-server", value_parser = parse_ice_server)]
    pub ice_servers: Vec<IceServer>,
    /// Serve https and wss with this certificate (PEM; a chain is fine, the server's own
    /// certificate first). Re-read on SIGHUP, without dropping connections.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve https and wss with a self-signed certificate, generated once in --tls-dir and then
    /// reused (its names: localhost, the host name, every listened address). Prints its path
    /// and fingerprints, for browsers and for the elements' tls-ca-file.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Folder of the self-signed certificate (cert.pem, key.pem). Default:
    /// $XDG_STATE_HOME/gst-room/tls, else ~/.local/state/gst-room/tls.
    #[arg(long, value_name = "DIR", requires = "tls_self_signed")]
    pub tls_dir: Option<PathBuf>,
    /// The URL people reach this server at (reverse proxy, NAT, DNS name), e.g.
    /// https://conf.example.org: the invite links use it instead of the listen addresses.
    #[arg(long, value_name = "URL", value_parser = invite::parse_public_url)]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub turn: TurnArgs,
    /// Serve rooms together with the other servers on this Redis, redis://HOST:PORT[/DB]
    /// (a participant may connect to any of them). Without it, rooms live in this process only.
    #[arg(long, env = "GST_ROOM_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// This server's id among those sharing the Redis (default: a random one). Must be unique.
    #[arg(long, requires = "redis")]
    pub node_id: Option<String>,
    /// The URL other servers and operators know this one by, recorded with its heartbeat
    /// (default: http://LISTEN/).
    #[arg(long, requires = "redis")]
    pub advertise_url: Option<String>,
    /// Most open TCP connections (page, WebSocket, unfinished requests alike); more are
    /// answered HTTP 503 and closed at once. Default: what the file limit (ulimit -n) leaves
    /// after 64 + 1/8 of it for the server's own files, Redis and media (1024 → 832), at most
    /// 10000. The server logs the caps it uses at start.
    #[arg(long, value_parser = at_least_one)]
    pub max_connections: Option<usize>,
    /// Most concurrent TCP connections (page, WebSocket, unfinished requests) from one IP
    /// address (an IPv6 address counts as its /64); more are answered 429 and closed.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP, value_parser = at_least_one)]
    pub max_connections_per_ip: usize,
    /// Most WebSockets that have not joined a room; more are answered HTTP 503. Default: a
    /// tenth of the default --max-connections (1024 → 83), at most 1000.
    #[arg(long, value_parser = at_least_one)]
    pub max_unjoined: Option<usize>,
    /// Seconds a WebSocket may stay without joining a room (after connecting or leaving).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_JOIN_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub join_timeout: f64,
    /// Seconds a client has to send a request's headers (the WebSocket upgrade included).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub header_timeout: f64,
    /// Seconds a WebSocket message may take from its first byte to its last fragment.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MESSAGE_TIMEOUT.as_secs_f64(), value_parser = seconds)]
    pub message_timeout: f64,
    /// Seconds HTTP requests in flight get to finish when the server stops.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs_f64(), value_parser = seconds)]
    pub shutdown_grace: f64,
    /// Most streams one participant publishes at a time (more: error too-many-streams).
    #[arg(long, default_value_t = DEFAULT_MAX_STREAMS, value_parser = at_least_one)]
    pub max_streams: usize,
    /// Where media goes: mesh (peer to peer; the server carries none, each publisher uploads
    /// every stream once per viewer) or sfu (through the server: each publisher uploads each
    /// stream once, the server forwards it to every viewer, all on one UDP port, --media-port).
    #[arg(long, value_enum, default_value_t = MediaArg::Mesh)]
    pub media: MediaArg,
    /// The UDP port of all media with --media sfu (on the --listen address; on every address
    /// for a loopback --listen, as peers on this machine send from its other addresses): the
    /// one port to open in a firewall besides the HTTP one.
    #[arg(long, default_value_t = DEFAULT_MEDIA_PORT)]
    pub media_port: u16,
    /// The TCP port of ICE over TCP with --media sfu, for participants whose network drops UDP
    /// (they connect to it; UDP stays preferred). Default: the --media-port number (0: any
    /// free port).
    #[arg(long, value_name = "PORT", conflicts_with = "no_media_tcp")]
    pub media_tcp_port: Option<u16>,
    /// No ICE over TCP with --media sfu: media on the UDP port only.
    #[arg(long)]
    pub no_media_tcp: bool,
    /// An address peers send media to with --media sfu (repeatable), e.g. the public address
    /// of a server behind NAT. Default: the --public-url host when it is an IP address or
    /// resolves to one, else the addresses of the invite links (the listen address, or each
    /// interface address for 0.0.0.0 / [::]); for a loopback --listen, every local address.
    #[arg(long = "media-ip", value_name = "IP")]
    pub media_ips: Vec<IpAddr>,
    /// Chat messages per participant: RATE[:BURST] (per second; the burst defaults to 2×RATE).
    #[arg(long, value_name = "RATE[:BURST]", default_value_t = RateLimits::default().chat)]
    pub chat_limit: RateLimit,
    /// `play` requests per participant: RATE[:BURST].
    #[arg(long, value_name = "RATE[:BURST]", default_value_t = RateLimits::default().play)]
    pub play_limit: RateLimit,
    /// join, leave, publish, unpublish and mute messages per participant: RATE[:BURST].
    #[arg(long, value_name = "RATE[:BURST]", default_value_t = RateLimits::default().room_events)]
    pub room_event_limit: RateLimit,
    /// Messages of any kind per participant: RATE[:BURST].
    #[arg(long, value_name = "RATE[:BURST]", default_value_t = RateLimits::default().messages)]
    pub message_limit: RateLimit,
}

/// The address the media port binds: the listen address, except for a loopback one: WebRTC
/// stacks (libnice, Chromium) gather no loopback candidates, so media of this machine's
/// participants arrives from its other addresses; the port then listens on all of them (IPv4
/// and IPv6 alike for `::1`).
fn media_bind_ip(listen: IpAddr) -> IpAddr {
    match listen {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        other => other,
    }
}

/// `--media`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaArg {
    /// Peer to peer: the server carries no media.
    Mesh,
    /// Through the server (SFU).
    Sfu,
}

fn at_least_one(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{arg:?} is not a whole number of at least 1")),
    }
}

fn seconds(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "{arg:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// `stun:host:port` or `turn(s):user:password@host:port[?transport=...]`.
fn parse_ice_server(arg: &str) -> Result<IceServer, String> {
    let (scheme, rest) = arg
        .split_once(':')
        .ok_or_else(|| format!("{arg:?}: expected stun:… or turn:…"))?;
    if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
        return Err(format!(
            "{arg:?}: the scheme must be stun, stuns, turn or turns"
        ));
    }
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let (username, credential) = credentials
                .split_once(':')
                .ok_or_else(|| format!("{arg:?}: credentials are user:password"))?;
            Ok(IceServer {
                urls: vec![format!("{scheme}:{host}")],
                username: Some(username.into()),
                credential: Some(credential.into()),
            })
        }
        None => Ok(IceServer {
            urls: vec![arg.into()],
            username: None,
            credential: None,
        }),
    }
}

impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServerArgs")
            .field("listen", &self.listen)
            .field("max_participants", &self.max_participants)
            .field("token", &redacted(&self.token))
            .field("secret", &self.secret)
            .field("admin_token", &redacted(&self.admin_token))
            .field("auth_failures_per_minute", &self.auth_failures_per_minute)
            .field("allowed_origins", &self.allowed_origins)
            .field("web_dir", &self.web_dir)
            .field("ice_servers", &self.ice_servers)
            .field("turn", &self.turn)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_unjoined", &self.max_unjoined)
            .field("join_timeout", &self.join_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("message_timeout", &self.message_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_streams", &self.max_streams)
            .field("chat_limit", &self.chat_limit)
            .field("play_limit", &self.play_limit)
            .field("room_event_limit", &self.room_event_limit)
            .field("message_limit", &self.message_limit)
            .field("media", &self.media)
            .field("media_port", &self.media_port)
            .field("media_tcp_port", &self.media_tcp_port)
            .field("no_media_tcp", &self.no_media_tcp)
            .field("media_ips", &self.media_ips)
            .field("redis", &redacted(&self.redis))
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .finish()
    }
}

impl ServerArgs {
    /// The server configuration these flags describe (reads --token-secret-file).
    pub fn config(&self) -> anyhow::Result<Config> {
        let defaults = Config::default();
        let mut config = Config {
            max_participants: self.max_participants.into(),
            token: self.token.clone().map(Into::into),
            token_secret: self.secret.secret()?,
            admin_token: self.admin_token.clone().map(Into::into),
            auth_failures_per_minute: self.auth_failures_per_minute,
            allowed_origins: self.allowed_origins_with_public_url(),
            ice_servers: self.ice_servers.clone(),
            turn: self.turn.turn()?,
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_ip: self.max_connections_per_ip,
            max_unjoined: self.max_unjoined.unwrap_or(defaults.max_unjoined),
            join_timeout: Duration::from_secs_f64(self.join_timeout),
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            message_timeout: Duration::from_secs_f64(self.message_timeout),
            shutdown_grace: Duration::from_secs_f64(self.shutdown_grace),
            max_streams: self.max_streams,
            rate_limits: RateLimits {
                chat: self.chat_limit,
                play: self.play_limit,
                room_events: self.room_event_limit,
                messages: self.message_limit,
            },
            ..defaults
        };
        if let Some(dir) = &self.web_dir {
            config.web_dir = dir.clone();
        }
        config.media = match self.media {
            MediaArg::Mesh => MediaConfig::Mesh,
            MediaArg::Sfu => MediaConfig::Sfu(SfuSettings {
                bind: SocketAddr::new(media_bind_ip(self.listen.ip()), self.media_port),
                tcp_bind: (!self.no_media_tcp).then(|| {
                    let port = self.media_tcp_port.unwrap_or(self.media_port);
                    SocketAddr::new(media_bind_ip(self.listen.ip()), port)
                }),
                advertised: self.media_addresses(),
            }),
        };
        config.cluster = self.redis.as_ref().map(|url| ClusterConfig {
            redis_url: url.clone(),
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(ClusterConfig::random_node_id),
            advertise_url: self
                .advertise_url
                .clone()
                .unwrap_or_else(|| format!("http://{}/", self.listen)),
        });
        Ok(config)
    }
}

impl ServerArgs {
    /// The addresses the media server announces (`--media-ip`, see its help); empty for a
    /// loopback server: the media server then announces every local address (see
    /// [`media_bind_ip`]).
    fn media_addresses(&self) -> Vec<IpAddr> {
        if !self.media_ips.is_empty() {
            return self.media_ips.clone();
        }
        let public_host = self
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()));
        if let Some(host) = public_host {
            match host.parse::<IpAddr>() {
                Ok(ip) => return vec![ip],
                Err(_) => {
                    // Resolved once, at start: media goes to an address, not a name.
                    let resolved: Vec<IpAddr> =
                        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), self.media_port))
                            .map(|addrs| addrs.map(|a| a.ip()).collect())
                            .unwrap_or_default();
                    if !resolved.is_empty() {
                        return resolved;
                    }
                    eprintln!(
                        "WARNING: --public-url host {host} does not resolve: media is announced on \
                         the listen addresses; give --media-ip"
                    );
                }
            }
        }
        if self.listen.ip().is_loopback() {
            return Vec::new();
        }
        invite::reachable_addresses(self.listen.ip(), &invite::interface_addresses())
    }

    /// `--allow-origin` plus the origin of `--public-url`: behind a reverse proxy the page's own
    /// origin is the public one, and the proxy passes that name on as `Host`.
    fn allowed_origins_with_public_url(&self) -> Vec<String> {
        let public = self
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        self.allowed_origins.iter().cloned().chain(public).collect()
    }
}

/// A bound server, ready to run, and what was printed about it.
pub struct Started {
    pub listener: TcpListener,
    pub config: Config,
    /// Invite base URLs (`https://10.0.0.5:8443/`), never a wildcard address.
    pub links: Vec<String>,
}

impl Started {
    /// The certificate file elements of this machine trust the server with (`tls-ca-file`).
    pub fn certificate(&self) -> Option<PathBuf> {
        self.config.tls.as_ref().map(|files| files.cert.clone())
    }
}

/// Binds, prepares TLS and prints the listening line, the certificate and the warnings; the
/// caller prints the invite links (`Started::links`) in its own words.
pub async fn start(args: &ServerArgs) -> anyhow::Result<Started> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let interfaces = invite::interface_addresses();
    let host_name = invite::host_name();
    let files = prepare_tls(args, addr.ip(), &interfaces, host_name.as_deref())?;
    let tls = files.is_some();
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    // Tests and scripts wait for this exact line.
    println!("gst-room server listening on {http}://{addr}/ (WebSocket {ws}://{addr}/ws)");
    if let Some(files) = &files {
        print_certificate(files)?;
    }
    let links = match &args.public_url {
        Some(url) => vec![url.clone()],
        None => {
            let reachable = invite::reachable_addresses(addr.ip(), &interfaces);
            // A loopback server is for this machine only: its host name helps nobody else.
            let name = match addr.ip().is_loopback() {
                true => None,
                false => resolving_host_name(host_name, addr.port(), &reachable).await,
            };
            invite::base_urls(tls, addr, &reachable, name.as_deref())
        }
    };
    if !tls && !addr.ip().is_loopback() && args.public_url.is_none() {
        eprintln!(
            "WARNING: listening on {addr} without TLS: browsers on other machines will not allow \
             camera or microphone on http:// pages. Use --tls-self-signed (LAN) or --tls-cert/--tls-key, \
             or put a TLS proxy in front and give --public-url https://..."
        );
    }
    let mut config = args.config()?;
    config.tls = files;
    if let MediaConfig::Sfu(media) = &config.media {
        let ips: Vec<String> = media.advertised.iter().map(IpAddr::to_string).collect();
        println!(
            "media through the server: udp {} (open this UDP port), announced as {}",
            media.bind,
            match ips.is_empty() {
                true => "every local address".to_owned(),
                false => ips.join(", "),
            }
        );
    }
    Ok(Started {
        listener,
        config,
        links,
    })
}

/// The certificate to serve, if any: the given files (checked now, so a typo fails at start),
/// or the self-signed one made to cover this server's names.
fn prepare_tls(
    args: &ServerArgs,
    listen: IpAddr,
    interfaces: &[IpAddr],
    host_name: Option<&str>,
) -> anyhow::Result<Option<TlsFiles>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls::first_certificate(cert)?;
        return Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }));
    }
    if !args.tls_self_signed {
        return Ok(None);
    }
    let public_host = args
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    let names = invite::certificate_names(listen, interfaces, host_name, public_host.as_deref());
    let dir = args.tls_dir.clone().unwrap_or_else(tls::default_dir);
    let (files, origin) = tls::self_signed(&dir, &names)?;
    let how = match origin {
        tls::Origin::Generated => "generated",
        tls::Origin::Reused => "reused",
        tls::Origin::Reissued => "reissued with the same key for new names",
    };
    println!("self-signed certificate {how}, for {}", names.join(", "));
    Ok(Some(files))
}

/// Prints where the certificate is and how to recognise it (for browsers' warnings, Chromium's
/// SPKI list and the elements' tls-ca-file).
fn print_certificate(files: &TlsFiles) -> anyhow::Result<()> {
    let fingerprints = tls::fingerprints(&files.cert)?;
    println!("TLS certificate: {}", files.cert.display());
    println!("  SHA-256 fingerprint: {}", fingerprints.sha256);
    println!(
        "  SPKI SHA-256 (Chromium --ignore-certificate-errors-spki-list): {}",
        fingerprints.spki_sha256
    );
    Ok(())
}

/// The host name, when it resolves to an address people can reach this server at (Debian maps
/// it to 127.0.1.1 by default, which helps nobody else).
async fn resolving_host_name(
    name: Option<String>,
    port: u16,
    reachable: &[IpAddr],
) -> Option<String> {
    let name = name?;
    let resolved = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::lookup_host((name.as_str(), port)),
    )
    .await
    .ok()?
    .ok()?;
    let reaches = resolved.map(|a| a.ip()).any(|ip| reachable.contains(&ip));
    reaches.then_some(name)
}

/// Binds, prints the URL and the invite links, serves until Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let started = start(&args).await?;
    println!("Open the conference page in a browser (an invite link is the page with ?room=NAME):");
    for link in &started.links {
        println!("  {link}");
    }
    if let Some(cert) = started.certificate().filter(|_| args.tls_self_signed) {
        println!(
            "Elements and gst-room commands on other machines: copy {} and give it as tls-ca-file / --tls-ca-file",
            cert.display()
        );
    }
    room_signaling::run(started.listener, started.config, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: closing connections");
    })
    .await
    .context("server failed")
}

#[cfg(test)]
mod tests {
    use super::parse_ice_server;

    #[test]
    fn ice_servers_take_turn_credentials_out_of_the_url() {
        let stun = parse_ice_server("stun:stun.example.org:3478").unwrap();
        assert_eq!(
            (stun.urls[0].as_str(), stun.username),
            ("stun:stun.example.org:3478", None)
        );
        let turn =
            parse_ice_server("turn:alice:s3cret@turn.example.org:3478?transport=udp").unwrap();
        assert_eq!(turn.urls, ["turn:turn.example.org:3478?transport=udp"]);
        assert_eq!(
            (
                turn.username.as_deref(),
                turn.credential.as_ref().map(|c| c.expose())
            ),
            (Some("alice"), Some("s3cret"))
        );
        assert!(parse_ice_server("http://x").is_err());
        assert!(parse_ice_server("turn:nopass@host:1").is_err());
    }
}
