//! `gst-room server`: the signaling server and the conference page, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use room_signaling::protocol::IceServer;
use room_signaling::{Config, DEFAULT_LISTEN, DEFAULT_MAX_PARTICIPANTS};

/// Flags of `gst-room server` (also used by `gst-room demo`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address and port to listen on (HTTP and WebSocket on one port). Port 0 picks a free one.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Most participants per room.
    #[arg(long, default_value_t = DEFAULT_MAX_PARTICIPANTS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_participants: u16,
    /// Require this token in every join (participants without it get "unauthorized").
    #[arg(long, env = "GST_ROOM_TOKEN")]
    pub token: Option<String>,
    /// Folder served at / (the conference page). Defaults to this source tree's signaling/web.
    #[arg(long)]
    pub web_dir: Option<PathBuf>,
    /// An ICE server handed to browsers in `welcome` (repeatable): stun:host:port, or
    /// turn:user:password@host:port for TURN with credentials.
    #[arg(long = "ice-server", value_parser = parse_ice_server)]
    pub ice_servers: Vec<IceServer>,
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

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Config {
        let mut config = Config {
            max_participants: self.max_participants.into(),
            token: self.token.clone(),
            ice_servers: self.ice_servers.clone(),
            ..Config::default()
        };
        if let Some(dir) = &self.web_dir {
            config.web_dir = dir.clone();
        }
        config
    }
}

/// Binds, prints the URL, serves until Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts wait for this exact line.
    println!("gst-room server listening on http://{addr}/ (WebSocket ws://{addr}/ws)");
    room_signaling::run(listener, args.config(), async {
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
            (turn.username.as_deref(), turn.credential.as_deref()),
            (Some("alice"), Some("s3cret"))
        );
        assert!(parse_ice_server("http://x").is_err());
        assert!(parse_ice_server("turn:nopass@host:1").is_err());
    }
}
