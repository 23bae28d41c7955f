//! `gst-room`: the room server, the demo, and preset pipelines, in one command.
//!
//! Each subcommand lives in its own file; this one parses the command line, sets up logging
//! once (`RUST_LOG`, default `info`), and runs the chosen subcommand on a tokio runtime.

mod server;

use clap::{Parser, Subcommand};

/// Video conference rooms as GStreamer elements.
#[derive(Parser, Debug)]
#[command(name = "gst-room", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the room server: WebSocket signaling at /ws and the conference page at /.
    Server(server::ServerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Server(args) => runtime.block_on(server::run(args)),
    }
}
