//! The pipeline subcommands: each picks a preset from `pipelines/`, fills its variables from
//! the flags, builds it, and runs it (E2: building errors and running errors are reported
//! apart).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::presets::{PRESETS, Preset, parse_assignment};
use crate::runner::{self, RunOptions};

/// Where and as whom (shared by the pipeline subcommands). `Debug` is hand-written below: the
/// token never reaches a log.
#[derive(clap::Args, Clone)]
pub struct RoomArgs {
    /// Room server WebSocket URL: ws://HOST:PORT/ws, or wss://HOST:PORT/ws over TLS.
    #[arg(long, default_value = "ws://127.0.0.1:8443/ws")]
    pub server: String,
    /// PEM certificates trusted for a wss:// server besides the system's roots: a CA, or the
    /// server's self-signed certificate (the room elements' tls-ca-file).
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Room name.
    #[arg(long, default_value = "demo")]
    pub room: String,
    /// Own participant name (each subcommand has its own default).
    #[arg(long)]
    pub username: Option<String>,
    /// Access token for servers that want one (from `gst-room token`, or the shared --token);
    /// set on every room element of the pipeline, never written into its description.
    #[arg(long, env = "GST_ROOM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Set any variable of the preset pipeline: NAME=value (see `gst-room pipelines`).
    #[arg(long = "set", value_parser = parse_assignment)]
    pub set: Vec<(String, String)>,
    /// No status line once a second.
    #[arg(long)]
    pub quiet: bool,
    /// Stop (EOS) after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
}

impl std::fmt::Debug for RoomArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomArgs")
            .field("server", &self.server)
            .field("room", &self.room)
            .field("username", &self.username)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("set", &self.set)
            .field("quiet", &self.quiet)
            .field("duration", &self.duration)
            .finish()
    }
}

impl RoomArgs {
    fn values(&self) -> BTreeMap<String, String> {
        let mut values = BTreeMap::from([
            ("SERVER".to_owned(), self.server.clone()),
            ("ROOM".to_owned(), self.room.clone()),
        ]);
        if let Some(username) = &self.username {
            values.insert("USERNAME".into(), username.clone());
        }
        values.extend(self.set.iter().cloned());
        values
    }

    fn options(&self, chat: bool) -> RunOptions {
        RunOptions {
            quiet: self.quiet,
            duration: self.duration.map(Duration::from_secs_f64),
            chat,
            token: self.token.clone().map(Into::into),
        }
    }
}

/// What `publish` sends.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Source {
    /// Moving pattern with a clock, and a tone.
    Test,
    /// V4L2 camera and the default microphone.
    Camera,
    /// A media file (--file).
    File,
}

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    room: RoomArgs,
    /// What to publish.
    #[arg(long, value_enum, default_value = "test")]
    source: Source,
    /// The media file for --source file.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct PlayArgs {
    #[command(flatten)]
    room: RoomArgs,
    /// Whom to play; without it, everyone mixed in a grid.
    #[arg(long)]
    participant: Option<String>,
    /// Decode but show nothing (fakesink), e.g. on a headless machine.
    #[arg(long)]
    headless: bool,
}

#[derive(clap::Args, Debug)]
pub struct MixArgs {
    #[command(flatten)]
    room: RoomArgs,
    /// Record to this file: .mp4 (H.264+AAC) or .webm (VP8+Opus). Ctrl-C finalizes it.
    #[arg(long, conflicts_with = "rtmp")]
    output: Option<PathBuf>,
    /// Stream to this RTMP URL instead.
    #[arg(long)]
    rtmp: Option<String>,
    /// Mixed video width and height.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// grid: everyone the same size; speaker: whoever speaks large, the others in a strip
    /// (cuts at most once per 2 s).
    #[arg(long, value_enum, default_value = "grid")]
    layout: Layout,
}

/// `gst-room mix --layout` (roomsrc's `mix-layout`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Layout {
    Grid,
    Speaker,
}

impl Layout {
    fn nick(self) -> &'static str {
        match self {
            Layout::Grid => "grid",
            Layout::Speaker => "speaker",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// The pipeline, as for gst-launch-1.0 (one argument or several words).
    #[arg(required = true, num_args = 1..)]
    pipeline: Vec<String>,
    /// No status line once a second.
    #[arg(long)]
    quiet: bool,
    /// Stop (EOS) after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// tls-ca-file for every room element of the pipeline (PEM certificates trusted for wss://
    /// besides the system's roots).
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct PipelinesArgs {
    /// Print this preset as a gst-launch-1.0 description (variables filled) instead of listing.
    #[arg(long)]
    print: Option<String>,
    /// Variables for --print: NAME=value.
    #[arg(long = "set", value_parser = parse_assignment)]
    set: Vec<(String, String)>,
}

/// `gst-room publish`.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let mut values = args.room.values();
    let preset = match args.source {
        Source::Test => "publish-test",
        Source::Camera => "publish-camera",
        Source::File => {
            let file = args.file.context("--source file needs --file PATH")?;
            let path = std::fs::canonicalize(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            values.insert("URI".into(), format!("file://{}", path.display()));
            "publish-file"
        }
    };
    run_preset(preset, &values, &args.room, args.room.options(true)).await
}

/// `gst-room play`.
pub async fn play(args: PlayArgs) -> anyhow::Result<()> {
    let mut values = args.room.values();
    if args.headless {
        values.insert("VIDEOSINK".into(), "fakesink".into());
        values.insert("AUDIOSINK".into(), "fakesink".into());
    }
    let preset = match args.participant {
        Some(name) => {
            values.insert("PARTICIPANT".into(), name);
            "play-participant"
        }
        None => "play-mix",
    };
    run_preset(preset, &values, &args.room, args.room.options(false)).await
}

/// `gst-room mix`.
pub async fn mix(args: MixArgs) -> anyhow::Result<()> {
    let mut values = args.room.values();
    values.insert("WIDTH".into(), args.width.to_string());
    values.insert("HEIGHT".into(), args.height.to_string());
    values.insert("LAYOUT".into(), args.layout.nick().into());
    let preset = match (&args.output, &args.rtmp) {
        (Some(output), _) => {
            values.insert("OUTPUT".into(), output.display().to_string());
            match output.extension().and_then(|e| e.to_str()) {
                Some("mp4") => "record-mix-mp4",
                Some("webm") => "record-mix-webm",
                _ => bail!(
                    "--output must end in .mp4 or .webm, not {}",
                    output.display()
                ),
            }
        }
        (None, Some(rtmp)) => {
            values.insert("RTMP".into(), rtmp.clone());
            "restream-mix"
        }
        (None, None) => "play-mix",
    };
    run_preset(preset, &values, &args.room, args.room.options(false)).await?;
    if let Some(output) = args.output {
        println!("recorded {}", output.display());
    }
    Ok(())
}

/// `gst-room launch`.
pub async fn launch(args: LaunchArgs) -> anyhow::Result<()> {
    gstroom::app::init()?;
    let pipeline = gstroom::app::parse_pipeline(&args.pipeline.join(" "))?;
    gstroom::app::trust_ca_file(&pipeline, args.tls_ca_file.as_deref());
    let options = RunOptions {
        quiet: args.quiet,
        duration: args.duration.map(Duration::from_secs_f64),
        chat: true,
        token: None,
    };
    runner::run(&pipeline, options).await
}

/// `gst-room pipelines`.
pub fn pipelines(args: PipelinesArgs) -> anyhow::Result<()> {
    if let Some(name) = args.print {
        let values = args.set.into_iter().collect();
        println!(
            "{}",
            Preset::find(&name)?
                .render(&values)?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(());
    }
    for preset in PRESETS {
        println!("{:<18} {}", preset.name, preset.summary());
        for var in preset.variables() {
            println!("    {:<12} = {:<28} {}", var.name, var.default, var.help);
        }
    }
    Ok(())
}

async fn run_preset(
    name: &str,
    values: &BTreeMap<String, String>,
    room: &RoomArgs,
    options: RunOptions,
) -> anyhow::Result<()> {
    gstroom::app::init()?;
    let description = Preset::find(name)?.render(values)?;
    let pipeline =
        gstroom::app::parse_pipeline(&description).with_context(|| format!("pipeline {name}"))?;
    if let Some(token) = &options.token {
        runner::set_room_token(&pipeline, token.expose());
    }
    gstroom::app::trust_ca_file(&pipeline, room.tls_ca_file.as_deref());
    runner::run(&pipeline, options).await
}
