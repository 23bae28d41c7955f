//! `gst-room demo`: the main job on embedded defaults. Starts the room server, publishes a
//! moving test pattern with a clock and a tone as demo-bot in room "demo", and prints the invite
//! link to open in a browser. Ctrl-C stops the publisher (EOS), then the server.

use std::collections::BTreeMap;

use std::time::Duration;

use anyhow::Context;
use room_signaling::auth::Grants;
use room_signaling::protocol::Secret;

use crate::presets::Preset;
use crate::runner::{self, RunOptions};
use crate::server::ServerArgs;
use crate::token::{invite_link, mint_for};

/// How long the tokens the demo mints for itself and its guest are valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Room the demo publisher joins.
    #[arg(long, default_value = "demo")]
    room: String,
    /// No status line once a second.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    runner::init_gstreamer()?;
    let config = args.server.config()?;
    // demo-bot and the guest of the printed invite link get tokens when the server wants them.
    let token_for = |username: &str| -> Option<Secret> {
        match (&config.token_secret, &config.token) {
            (Some(secret), _) => Some(
                mint_for(
                    secret,
                    &args.room,
                    username,
                    DEMO_TOKEN_TTL,
                    Grants::PARTICIPANT,
                )
                .into(),
            ),
            (None, shared) => shared.clone(),
        }
    };
    let bot_token = token_for("demo-bot");
    let guest_token = token_for("guest");
    let listener = tokio::net::TcpListener::bind(args.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.server.listen))?;
    let addr = listener.local_addr()?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(room_signaling::run(listener, config, async {
        let _ = server_stopped.await;
    }));

    let values = BTreeMap::from([
        ("SERVER".to_owned(), format!("ws://{addr}/ws")),
        ("ROOM".to_owned(), args.room.clone()),
        ("USERNAME".to_owned(), "demo-bot".to_owned()),
    ]);
    let pipeline = runner::build(&Preset::find("publish-test")?.render(&values)?)?;
    if let Some(token) = &bot_token {
        runner::set_room_token(&pipeline, token.expose());
    }
    println!("gst-room server listening on http://{addr}/ (WebSocket ws://{addr}/ws)");
    println!(
        "demo-bot is publishing in room {}. Open the invite link in a browser:",
        args.room
    );
    match &guest_token {
        Some(token) => println!(
            "  {}",
            invite_link(
                &format!("http://{addr}"),
                &args.room,
                "guest",
                token.expose()
            )
        ),
        None => println!("  http://{addr}/?room={}", args.room),
    }
    println!("Type a line to chat as demo-bot; Ctrl-C stops.");
    let result = runner::run(
        &pipeline,
        RunOptions {
            quiet: args.quiet,
            duration: None,
            chat: true,
            token: None,
        },
    )
    .await;
    let _ = stop_server.send(());
    server
        .await
        .context("server task")?
        .context("server failed")?;
    result
}
