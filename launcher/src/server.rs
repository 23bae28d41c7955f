//! `gst-room server`: the signaling server and the conference page, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
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
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Config {
        let mut config = Config {
            max_participants: self.max_participants.into(),
            token: self.token.clone(),
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
