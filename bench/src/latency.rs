//! `gst-room bench latency`: glass-to-glass latency at 640x480@30 in one process and clock.
//!
//! ```text
//! videotestsrc ! I420 640x480@30 ! identity (stamp: barcode of frame n, time of n) ! roomsink pub
//! roomsrc participant=pub latency=L ─(probe: decoded)─ raw ! queue ! fakesink sync=true (handoff: displayed)
//! ```
//!
//! The stamp draws a 32-bit barcode (the 16-bit frame number and its complement, 32x32 luma
//! blocks aligned to VP8 macroblocks, black or white) into the top of each frame and keeps the
//! instant it did so. The viewer reads the barcode back twice: right after decoding (roomsrc's
//! pad) and when a synchronising sink would show it (fakesink `sync=true`, after the pipeline's
//! latency, which includes roomsrc's jitterbuffer `latency`). Unreadable barcodes (the
//! complement does not match) are counted, not guessed.
//!
//! One publisher serves a fresh viewer per `latency` value; the first frames after each start
//! (keyframe, bandwidth ramp-up) are skipped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gst::prelude::*;
use gst_video::prelude::*;

use super::{Child, Figure, PICTURE, Running, ms};

const ROOM: &str = "latency";
const PUBLISHER: &str = "pub";
const WIDTH: usize = 640;
const BLOCK: usize = 32;
const BITS: usize = 32;
/// Luma of a set / unset bit (video range).
const WHITE: u8 = 235;
const BLACK: u8 = 16;

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Frames measured per latency setting, after the warm-up (300 frames = 10 s at 30 fps).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// roomsrc `latency` values (ms) to compare, comma-separated. (0 is left out by default: on
    /// GStreamer 1.22 a zero jitterbuffer latency stalls the stream for seconds at a time.)
    #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
    latencies: Vec<u32>,
    /// Decoded frames skipped after each viewer starts.
    #[arg(long, default_value_t = 60)]
    warmup: u32,
    /// Seconds a viewer may take to deliver its frames before it counts as failed.
    #[arg(long, default_value_t = 40)]
    timeout: u64,
}

/// Capture instants by frame number (the barcode carries 16 bits).
type Stamps = Arc<Mutex<Vec<Option<Instant>>>>;

/// What one viewer measured.
#[derive(Default)]
struct Measured {
    /// Decoded frames so far (warm-up included).
    seen: u32,
    /// Displayed frames so far (warm-up included).
    shown: u32,
    unreadable: u32,
    decoded: Vec<f64>,
    displayed: Vec<f64>,
}

pub fn run(args: LatencyArgs) -> anyhow::Result<Vec<Figure>> {
    super::init_gstreamer()?;
    let wait = Duration::from_secs(args.timeout);
    let (_server, url) = Child::room_server(8)?;
    let stamps: Stamps = Arc::new(Mutex::new(vec![None; 1 << 16]));
    let _publisher = start_publisher(&url, &stamps, wait)?;

    let mut figures = Vec::new();
    let mut displayed_medians = Vec::new();
    for &latency in &args.latencies {
        let measured = Arc::new(Mutex::new(Measured::default()));
        let viewer = viewer(&url, latency, &stamps, &measured, args.warmup)?;
        viewer.set_state(gst::State::Playing)?;
        let start = Instant::now();
        let result = loop {
            if let Err(err) = super::check_bus(&viewer) {
                break Err(err);
            }
            let m = measured.lock().unwrap();
            if m.decoded.len() >= args.runs as usize && m.displayed.len() >= args.runs as usize {
                break Ok(());
            }
            drop(m);
            if start.elapsed() > wait {
                break Err(anyhow::anyhow!(
                    "fewer than {} frames within {wait:?}",
                    args.runs
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = viewer.set_state(gst::State::Null);
        let m = std::mem::take(&mut *measured.lock().unwrap());
        if let Err(err) = result {
            eprintln!("latency={latency}: {err:#} (kept what arrived)");
        }
        eprintln!(
            "latency={latency}: {} frames seen, {} decoded and {} displayed samples, {} unreadable barcodes",
            m.seen,
            m.decoded.len(),
            m.displayed.len(),
            m.unreadable
        );
        if let Some(f) =
            Figure::from_samples(format!("decoded_latency{latency}ms"), "ms", &m.decoded)
        {
            figures.push(f);
        }
        if let Some(f) =
            Figure::from_samples(format!("displayed_latency{latency}ms"), "ms", &m.displayed)
        {
            displayed_medians.push((latency, f.median));
            figures.push(f);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if figures.is_empty() {
        bail!("no latency sample at all");
    }
    // What the jitterbuffer setting adds to what is shown, relative to the smallest setting.
    if let Some(&(base_latency, base)) = displayed_medians.iter().min_by_key(|(l, _)| *l) {
        for &(latency, median) in &displayed_medians {
            if latency != base_latency {
                eprintln!(
                    "latency={latency} shows frames {:.1} ms later than latency={base_latency} (displayed medians)",
                    median - base
                );
            }
        }
    }
    Ok(figures)
}

/// Publishes the stamped test pattern; returns once the stream is announced.
fn start_publisher(url: &str, stamps: &Stamps, wait: Duration) -> anyhow::Result<Running> {
    let pipeline = gstroom::app::parse_pipeline(&format!(
        "videotestsrc is-live=true {PICTURE} ! video/x-raw,format=I420,width={WIDTH},height=480,framerate=30/1 ! \
         identity name=stamp ! roomsink server-url={url} room={ROOM} username={PUBLISHER} video-caps=video/x-vp8"
    ))?;
    let pad = pipeline
        .by_name("stamp")
        .and_then(|e| e.static_pad("sink"))
        .expect("identity sink pad");
    let stamps = stamps.clone();
    let next = AtomicU32::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(video) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let buffer = buffer.make_mut();
        if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video) {
            let stride = frame.plane_stride()[0] as usize;
            if let Ok(luma) = frame.plane_data_mut(0) {
                // The barcode holds 16 bits: numbers wrap after 36 minutes at 30 fps.
                let number = next.fetch_add(1, Ordering::Relaxed) as u16;
                draw(luma, stride, number);
                stamps.lock().unwrap()[number as usize] = Some(Instant::now());
            }
        }
        gst::PadProbeReturn::Ok
    });
    let pipeline = Running::start(pipeline)?;
    super::wait_for_element_message(&pipeline, "room-session-status", wait, |s| {
        s.get::<String>("status").is_ok_and(|v| v == "publishing")
    })
    .context("the publisher")?;
    Ok(pipeline)
}

/// A viewer with roomsrc `latency`; records decoded and displayed latencies into `measured`.
fn viewer(
    url: &str,
    latency: u32,
    stamps: &Stamps,
    measured: &Arc<Mutex<Measured>>,
    warmup: u32,
) -> anyhow::Result<gst::Pipeline> {
    let (pipeline, roomsrc) =
        super::roomsrc_viewer(url, ROOM, &format!("viewer-l{latency}"), PUBLISHER)?;
    roomsrc.set_property("latency", latency);
    let weak = pipeline.downgrade();
    let (stamps, measured) = (stamps.clone(), measured.clone());
    roomsrc.connect_pad_added(move |_, pad| {
        // Weak: the pipeline owns roomsrc, which owns this closure.
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        if !pad.name().starts_with("video") {
            return;
        }
        let (s, m) = (stamps.clone(), measured.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(buffer) = info.buffer() {
                let mut m = m.lock().unwrap();
                m.seen += 1;
                if m.seen > warmup {
                    match elapsed_since_stamp(pad, buffer, &s) {
                        Some(latency) => m.decoded.push(latency),
                        None => m.unreadable += 1,
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
        let sink = match super::link_raw_sink(&pipeline, pad, true) {
            Ok(sink) => sink,
            Err(err) => {
                return gst::element_error!(pipeline, gst::CoreError::Pad, ("{err:#}"));
            }
        };
        sink.set_property("signal-handoffs", true);
        let (s, m) = (stamps.clone(), measured.clone());
        sink.connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().ok()?;
            let pad = args[2].get::<gst::Pad>().ok()?;
            let latency = elapsed_since_stamp(&pad, &buffer, &s);
            let mut m = m.lock().unwrap();
            m.shown += 1;
            if m.shown > warmup
                && let Some(latency) = latency
            {
                m.displayed.push(latency);
            }
            None
        });
    });
    Ok(pipeline)
}

/// Milliseconds since the frame in `buffer` was stamped, if its barcode reads.
fn elapsed_since_stamp(pad: &gst::Pad, buffer: &gst::BufferRef, stamps: &Stamps) -> Option<f64> {
    let now = Instant::now();
    let caps = pad.current_caps()?;
    let video = gst_video::VideoInfo::from_caps(&caps).ok()?;
    if !video.format_info().is_yuv() || video.width() < WIDTH as u32 {
        return None;
    }
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video).ok()?;
    let number = read(frame.plane_data(0).ok()?, frame.plane_stride()[0] as usize)?;
    let stamped = stamps.lock().unwrap()[number as usize]?;
    Some(ms(now.saturating_duration_since(stamped)))
}

/// The block (column, row) of bit `i`: 20 blocks per 640-pixel row.
fn block(i: usize) -> (usize, usize) {
    let per_row = WIDTH / BLOCK;
    (i % per_row, i / per_row)
}

/// Draws `number` and its complement as 32 black/white luma blocks at the top of the frame.
fn draw(luma: &mut [u8], stride: usize, number: u16) {
    let code = (number as u32) << 16 | (!number) as u32;
    for i in 0..BITS {
        let value = if code >> (BITS - 1 - i) & 1 == 1 {
            WHITE
        } else {
            BLACK
        };
        let (col, row) = block(i);
        for y in row * BLOCK..(row + 1) * BLOCK {
            let start = y * stride + col * BLOCK;
            luma[start..start + BLOCK].fill(value);
        }
    }
}

/// Reads the barcode (the centre 16x16 of each block); `None` when the check half disagrees.
fn read(luma: &[u8], stride: usize) -> Option<u16> {
    let mut code = 0u32;
    for i in 0..BITS {
        let (col, row) = block(i);
        let (x0, y0) = (col * BLOCK + BLOCK / 4, row * BLOCK + BLOCK / 4);
        let mut sum = 0u32;
        for y in y0..y0 + BLOCK / 2 {
            let start = y * stride + x0;
            sum += luma
                .get(start..start + BLOCK / 2)?
                .iter()
                .map(|&v| v as u32)
                .sum::<u32>();
        }
        let mean = sum / (BLOCK as u32 / 2).pow(2);
        code = code << 1 | u32::from(mean > 128);
    }
    let (number, check) = ((code >> 16) as u16, code as u16);
    (number == !check).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barcode_round_trip() {
        let stride = WIDTH;
        let mut luma = vec![128u8; stride * 480];
        for n in [0u16, 1, 0x1234, 0xffff] {
            draw(&mut luma, stride, n);
            assert_eq!(read(&luma, stride), Some(n));
        }
        luma[..stride * 64].fill(128);
        assert_eq!(read(&luma, stride), None);
    }
}
