//! The browser paths of `bench latency`: runs tests/browser/bench-latency.mjs with this binary
//! (`GST_ROOM_BIN`) and a generated Y4M camera, and turns the samples it prints into figures.
//!
//! The script prints one JSON line per figure, `{"figure": NAME, "samples": [ms…],
//! "anchor": "loopback" | null}`, and one `{"anchor": "loopback", "samples": [ms…]}` for
//! Chromium's plain RTCPeerConnection loopback; everything else it says goes to stderr.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

use super::super::{Figure, Summary};
use super::{LatencyArgs, code};

const SCRIPT: &str = "tests/browser/bench-latency.mjs";
/// The Chromium camera: 320x240@30 (the browser tests' size, at the gst side's frame rate),
/// 150 frames: codes repeat every 5 s, far above any latency measured.
const CAMERA: (usize, usize, u32, u16) = (320, 240, 30, 150);

#[derive(Deserialize)]
struct Line {
    figure: Option<String>,
    anchor: Option<String>,
    samples: Vec<f64>,
}

pub fn run(args: &LatencyArgs, paths: &[&str]) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let script = super::super::join::checkout_file(SCRIPT, &exe)?;
    let dir = std::env::temp_dir().join(format!("gst-room-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let camera = dir.join("code.y4m");
    let (w, h, fps, frames) = CAMERA;
    code::write_y4m(&camera, w, h, fps, frames).context("writing the Y4M camera")?;
    let media: Vec<&str> = args.media.iter().map(|m| m.name()).collect();
    let mut command = Command::new("node");
    command
        .arg(&script)
        .args(["--paths", &paths.join(",")])
        .args(["--media", &media.join(",")])
        .args(["--runs", &args.runs.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .args(["--camera", &camera.display().to_string()])
        .args(["--camera-frames", &frames.to_string()])
        .args(["--camera-fps", &fps.to_string()]);
    if args.no_anchor {
        command.arg("--no-anchor");
    }
    let mut child = command
        .env("GST_ROOM_BIN", &exe)
        .stdout(Stdio::piped())
        .spawn()
        .context("running node (Node 20+ is needed for the browser paths)")?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with('{') {
            lines.push(serde_json::from_str::<Line>(&line).with_context(|| line.clone())?);
        } else {
            eprintln!("{line}");
        }
    }
    let status = child.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let anchor = |name: &str| {
        lines
            .iter()
            .find(|l| l.figure.is_none() && l.anchor.as_deref() == Some(name))
            .and_then(|l| Summary::of(&l.samples))
            .map(|s| s.median)
    };
    let figures: Vec<Figure> = lines
        .iter()
        .filter_map(|l| {
            let name = l.figure.as_ref()?;
            let figure = Figure::from_samples(name.clone(), "ms", &l.samples)?;
            Some(figure.with_anchor(l.anchor.as_deref().and_then(anchor)))
        })
        .collect();
    if figures.is_empty() {
        return Err(anyhow!("{} printed no figure", script.display()));
    }
    Ok(figures)
}
