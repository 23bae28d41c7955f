//! `gst-room bench latency-peer publish|view` (hidden): the gst side of the browser paths of
//! `bench latency`, run by tests/browser/bench-latency.mjs. It prints, on stdout, one line per
//! frame with the wall-clock time in ms ([`super::code::wall_ms`], the page's clock too):
//!
//! ```text
//! ready                       (publish: the stream is announced; view: the pipeline runs)
//! stamp NUMBER MS             (publish: frame NUMBER was stamped at MS)
//! shown NUMBER MS             (view: the synchronising sink showed frame NUMBER at MS)
//! unreadable MS               (view: a frame without a readable code)
//! ```
//!
//! and runs until stdin closes.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use super::super::Running;
use super::code::wall_ms;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Role {
    /// A stamped 640x480@30 test picture published with roomsink.
    Publish,
    /// roomsrc (default settings) showing `--participant`'s video.
    View,
}

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    #[arg(value_enum)]
    role: Role,
    /// The room server's WebSocket URL.
    #[arg(long)]
    url: String,
    #[arg(long)]
    room: String,
    #[arg(long)]
    username: String,
    /// view: whose video to show.
    #[arg(long, default_value = "pub")]
    participant: String,
}

pub fn run(args: PeerArgs) -> anyhow::Result<()> {
    super::super::init_gstreamer()?;
    let (url, room, username) = (&args.url, &args.room, &args.username);
    let pipeline = match args.role {
        Role::Publish => {
            let pipeline = gstroom::app::parse_pipeline(&format!(
                "videotestsrc is-live=true {} ! {} ! identity name=stamp ! \
                 roomsink server-url={url} room={room} username={username} video-caps=video/x-vp8",
                super::super::PICTURE,
                super::CAPS
            ))?;
            super::stamp_frames(&pipeline, |n| println!("stamp {n} {:.3}", wall_ms()));
            let pipeline = Running::start(pipeline)?;
            super::super::wait_for_element_message(
                &pipeline,
                "room-session-status",
                Duration::from_secs(30),
                |s| s.get::<String>("status").is_ok_and(|v| v == "publishing"),
            )
            .context("the publisher")?;
            pipeline
        }
        Role::View => {
            let (pipeline, roomsrc) =
                super::super::roomsrc_viewer(url, room, username, &args.participant)?;
            super::show_video_pads(
                &pipeline,
                &roomsrc,
                |_, _| {},
                |code, _| match code {
                    Some(n) => println!("shown {n} {:.3}", wall_ms()),
                    None => println!("unreadable {:.3}", wall_ms()),
                },
            );
            Running::start(pipeline)?
        }
    };
    println!("ready");
    let closed = Arc::new(AtomicBool::new(false));
    let c = closed.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        c.store(true, Ordering::SeqCst);
    });
    while !closed.load(Ordering::SeqCst) {
        super::super::check_bus(&pipeline)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
