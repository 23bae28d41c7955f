//! `gst-room`: the room server, the demo, and preset pipelines, in one command.
//!
//! - `server.rs`: `gst-room server` (the signaling library's `run` behind clap flags);
//! - `token.rs`: `gst-room token` (mint access tokens) and the token-secret flags;
//! - `demo.rs`: `gst-room demo` (server + demo publisher + invite link);
//! - `invite.rs`: invite links people can open (never a wildcard address), certificate names;
//! - `commands.rs`: `publish`, `play`, `mix`, `launch`, `pipelines`;
//! - `presets.rs`: the pipelines of `pipelines/`, built in, with `${VAR}` substitution;
//! - `runner.rs`: running a pipeline (bus loop, room events, chat from stdin, Ctrl-C → EOS).
//!
//! Logging is set up once here (`RUST_LOG`, default `info`, to stderr; tokens and TURN
//! passwords never appear at any level); stdout carries what scripts read: the server URL, the
//! invite link, room event lines.

mod commands;
mod demo;
mod invite;
mod presets;
mod runner;
mod server;
mod token;
mod turn;

use std::process::ExitCode;

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
    /// Mint an access token for one room and username (signed with the server's --token-secret).
    Token(token::TokenArgs),
    /// Run the server and a demo publisher (demo-bot) in room "demo"; print the invite link.
    Demo(demo::DemoArgs),
    /// Publish a test pattern, a camera or a media file into a room.
    Publish(commands::PublishArgs),
    /// Play one participant, or everyone mixed, on screen.
    Play(commands::PlayArgs),
    /// Mix a whole room (grid + audio) to the screen, a file (.mp4/.webm) or an RTMP server.
    Mix(commands::MixArgs),
    /// Run a gst-launch-1.0 style pipeline with the room elements built in.
    Launch(commands::LaunchArgs),
    /// List the preset pipelines and their variables, or print one ready for gst-launch-1.0.
    Pipelines(commands::PipelinesArgs),
    /// Benchmarks: join time, latency, publisher CPU per viewer, server load (table + JSON lines).
    Bench(room_bench::BenchArgs),
}

/// Logs to stderr at `RUST_LOG`'s levels (default `info`), with the WebSocket crates
/// (tungstenite and its async wrappers, on the server's and the elements' connections) capped at
/// debug: their trace level dumps every frame's payload (tokens, TURN credentials) in hex, so
/// no filter may turn it on. A directive such as `tungstenite=debug` in the filter itself would
/// act as a floor (turning their debug output on at the default level), hence a second filter
/// that can only take away. The two are one filter (`and`), whose level hint is the stricter
/// of theirs: that hint is what lets disabled `tracing` callsites (the `connection` span) and
/// `log` records (tungstenite's per-frame trace lines, through the `log` bridge) be skipped at
/// the call site. Nested per-layer filters would hint the outer one's level only (the cap's
/// TRACE), and every frame's log records would then go through both filters (a tenth of the
/// server's CPU under `gst-room bench server` at `RUST_LOG=warn`).
fn init_logging() {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let levels = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("tungstenite", LevelFilter::DEBUG)
        .with_target("async_tungstenite", LevelFilter::DEBUG)
        .with_target("tokio_tungstenite", LevelFilter::DEBUG);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(stderr.with_filter(levels.and(cap)))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Token(args) => token::run(args),
            Command::Demo(args) => demo::run(args).await,
            Command::Publish(args) => commands::publish(args).await,
            Command::Play(args) => commands::play(args).await,
            Command::Mix(args) => commands::mix(args).await,
            Command::Launch(args) => commands::launch(args).await,
            Command::Pipelines(args) => commands::pipelines(args),
            Command::Bench(args) => room_bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gst-room: {err:#}");
            ExitCode::FAILURE
        }
    }
}
