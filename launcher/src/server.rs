//! `gst-room server`: the signaling server and the conference page, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use room_signaling::cluster::ClusterConfig;
use room_signaling::protocol::IceServer;
use room_signaling::{
    Config, DEFAULT_AUTH_FAILURES_PER_MINUTE, DEFAULT_LISTEN, DEFAULT_MAX_PARTICIPANTS,
};

use crate::token::SecretArgs;

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
            .field("redis", &redacted(&self.redis))
            .field("node_id", &self.node_id)
            .field("advertise_url", &self.advertise_url)
            .finish()
    }
}

impl ServerArgs {
    /// The server configuration these flags describe (reads --token-secret-file).
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config {
            max_participants: self.max_participants.into(),
            token: self.token.clone().map(Into::into),
            token_secret: self.secret.secret()?,
            admin_token: self.admin_token.clone().map(Into::into),
            auth_failures_per_minute: self.auth_failures_per_minute,
            allowed_origins: self.allowed_origins.clone(),
            ice_servers: self.ice_servers.clone(),
            ..Config::default()
        };
        if let Some(dir) = &self.web_dir {
            config.web_dir = dir.clone();
        }
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

/// Binds, prints the URL, serves until Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts wait for this exact line.
    println!("gst-room server listening on http://{addr}/ (WebSocket ws://{addr}/ws)");
    room_signaling::run(listener, config, async {
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
