//! `gst-room bench anchor-server` (hidden): the stock gst-plugins-rs signalling server, the
//! anchor the join and server benchmarks compare against.
//!
//! This is what the crate's own `gst-webrtc-signalling-server` binary does without TLS: one
//! `Server` around the stock `Handler`, and every accepted TCP stream handed to it. It runs in
//! its own process (like ours in `gst-room server`), prints [`LISTENING`] and the URL, and stops
//! when stdin closes or on Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;
use gst_plugin_webrtc_signalling::handlers::Handler;
use gst_plugin_webrtc_signalling::server::Server;
use tokio::io::AsyncReadExt;

/// The line the orchestrator waits for, followed by the WebSocket URL.
pub const LISTENING: &str = "anchor signalling server listening on ";

#[derive(clap::Args, Debug)]
pub struct AnchorServerArgs {
    /// Address and port to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

pub async fn serve(args: AnchorServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = Server::spawn(Handler::new);
    println!("{LISTENING}ws://{}", listener.local_addr()?);
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => return Err::<(), _>(err),
            };
            let mut server = server.clone();
            tokio::spawn(async move {
                let _ = server.accept_async(stream).await;
            });
        }
    };
    tokio::select! {
        result = accept => result.context("accepting connections"),
        _ = stdin_closed() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Completes when stdin reaches end of file (the orchestrator dropped its end).
pub async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}
