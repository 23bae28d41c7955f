//! `gst-room demo`: the main job on embedded defaults. Starts the room server, publishes a
//! moving test pattern with a clock and a tone as demo-bot in room "demo", and prints the invite
//! link to open in a browser. Ctrl-C stops the publisher (EOS), then the server.

use std::collections::BTreeMap;

use std::time::Duration;

use anyhow::Context;
use room_signaling::auth::Grants;
use room_signaling::protocol::Secret;

use crate::invite;
use crate::presets::Preset;
use crate::runner::{self, RunOptions};
use crate::server::{self, ServerArgs};
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
    gstroom::app::init()?;
    let started = server::start(&args.server).await?;
    // demo-bot and the guest of the printed invite link get tokens when the server wants them.
    let config = &started.config;
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
    // demo-bot joins the way a guest would, through the first invite link: that address is
    // covered by the certificate (self-signed: every listened address; a real one: its name,
    // given as --public-url).
    let server_url = invite::ws_url(&started.links[0]);
    let certificate = started.certificate();
    let links = started.links.clone();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(room_signaling::run(
        started.listener,
        started.config,
        async {
            let _ = server_stopped.await;
        },
    ));

    let values = BTreeMap::from([
        ("SERVER".to_owned(), server_url),
        ("ROOM".to_owned(), args.room.clone()),
        ("USERNAME".to_owned(), "demo-bot".to_owned()),
    ]);
    let pipeline = gstroom::app::parse_pipeline(&Preset::find("publish-test")?.render(&values)?)?;
    if let Some(token) = &bot_token {
        runner::set_room_token(&pipeline, token.expose());
    }
    gstroom::app::trust_ca_file(&pipeline, certificate.as_deref());
    println!(
        "demo-bot is publishing in room {}. Open the invite link in a browser:",
        args.room
    );
    for link in &links {
        match &guest_token {
            Some(token) => println!(
                "  {}",
                invite_link(link, &args.room, "guest", token.expose())
            ),
            None => println!("  {link}?room={}", args.room),
        }
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
