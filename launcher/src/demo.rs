//! `gst-room demo`: the main job on embedded defaults. Starts the room server, publishes a
//! moving test pattern with a clock and a tone as demo-bot in room "demo", and prints the invite
//! link to open in a browser. Ctrl-C stops the publisher (EOS), then the server.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::invite;
use crate::presets::Preset;
use crate::runner::{self, RunOptions};
use crate::server::{self, ServerArgs};

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
    let started = server::start(&args.server).await?;
    // demo-bot joins the way a guest would, through the first invite link: that address is
    // covered by the certificate (self-signed: every listened address; a real one: its name,
    // given as --public-url).
    let server_url = invite::ws_url(&started.links[0]);
    let certificate = started.certificate();
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
    let pipeline = runner::build(&Preset::find("publish-test")?.render(&values)?)?;
    runner::trust(&pipeline, certificate.as_deref());
    println!(
        "demo-bot is publishing in room {}. Open the invite link in a browser:",
        args.room
    );
    for link in &started.links {
        println!("  {link}?room={}", args.room);
    }
    println!("Type a line to chat as demo-bot; Ctrl-C stops.");
    let result = runner::run(
        &pipeline,
        RunOptions {
            quiet: args.quiet,
            duration: None,
            chat: true,
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
