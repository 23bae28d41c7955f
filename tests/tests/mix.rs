//! roomsrc mix mode: the grid shows each participant's colour in its own tile, reflows as
//! people come and go, and keeps sending black frames and silence when the room is empty.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::TestServer;
use gst_room_tests::media::*;

const RED: Rgb = [230, 20, 20];
const BLUE: Rgb = [20, 40, 230];
const GREEN: Rgb = [20, 200, 40];
const BLACK: Rgb = [0, 0, 0];
const TOLERANCE: u8 = 45;

/// The latest mixed frame and audio buffer count.
#[derive(Default)]
struct Latest {
    frame: Option<gst::Sample>,
    frames: usize,
    audio: usize,
}

struct MixViewer {
    pipeline: gst::Pipeline,
    latest: Arc<Mutex<Latest>>,
}

impl MixViewer {
    fn start(url: &str, room: &str) -> MixViewer {
        let pipeline = gst::parse::launch(&format!(
            "roomsrc name=room mix=true mix-width=320 mix-height=240 server-url={url} room={room} username=mixer \
             room.video ! videoconvert ! video/x-raw,format=RGB ! appsink name=v sync=false \
             room.audio ! audioconvert ! appsink name=a sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let latest = Arc::new(Mutex::new(Latest::default()));
        let video = pipeline
            .by_name("v")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let record = latest.clone();
        video.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut latest = record.lock().unwrap();
                    latest.frame = Some(sample);
                    latest.frames += 1;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let audio = pipeline
            .by_name("a")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let record = latest.clone();
        audio.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    record.lock().unwrap().audio += 1;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        MixViewer { pipeline, latest }
    }

    fn tiles(&self) -> u32 {
        self.pipeline.by_name("room").unwrap().property("mix-tiles")
    }

    /// Waits until the grid has one tile per colour showing `colours` in order (tile centres);
    /// no colours means no tiles and a black frame.
    fn wait_for_grid(&self, colours: &[Rgb]) {
        let deadline = Instant::now() + MEDIA_WAIT;
        loop {
            fail_on_error(&self.pipeline);
            let sampled = self.sample_tiles(colours.len());
            let colours = if colours.is_empty() {
                &[BLACK][..]
            } else {
                colours
            };
            let expected_tiles = if colours == [BLACK] { 0 } else { colours.len() };
            if self.tiles() as usize == expected_tiles
                && sampled.as_ref().is_some_and(|s| {
                    s.iter()
                        .zip(colours)
                        .all(|(a, b)| close_to(*a, *b, TOLERANCE))
                })
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "grid never showed {colours:?}; tiles {} sampled {sampled:?}; {}",
                self.tiles(),
                self.states()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The colour at the centre of each of `count` tiles of the latest frame (away from the
    /// name label at the bottom left).
    fn sample_tiles(&self, count: usize) -> Option<Vec<Rgb>> {
        let sample = self.latest.lock().unwrap().frame.clone()?;
        let count = count.max(1);
        expected_tiles(count)
            .iter()
            .map(|&(x, y, w, h)| {
                let (x, y, w, h) = (
                    x as f64 / 320.0,
                    y as f64 / 240.0,
                    w as f64 / 320.0,
                    h as f64 / 240.0,
                );
                region_colour(
                    &sample,
                    (x + w * 0.4, y + h * 0.3, x + w * 0.6, y + h * 0.5),
                )
            })
            .collect()
    }

    /// The states of the pipeline and of roomsrc's children, for a failure message.
    fn states(&self) -> String {
        let state = |e: &gst::Element| {
            let (_, current, pending) = e.state(gst::ClockTime::ZERO);
            format!("{}={current:?}/{pending:?}", e.name())
        };
        let room = self.pipeline.by_name("room").unwrap();
        let mut out = vec![state(self.pipeline.upcast_ref()), state(&room)];
        for child in room.downcast_ref::<gst::Bin>().unwrap().children() {
            out.push(state(&child));
        }
        out.join(" ")
    }

    fn counts(&self) -> (usize, usize) {
        let latest = self.latest.lock().unwrap();
        (latest.frames, latest.audio)
    }
}

/// Where the tiles of a 320×240 grid of `count` participants are (x, y, w, h), written out:
/// ⌈√count⌉ columns, tiles in username order, left to right then top to bottom.
fn expected_tiles(count: usize) -> &'static [(i32, i32, i32, i32)] {
    match count {
        1 => &[(0, 0, 320, 240)],
        2 => &[(0, 0, 160, 240), (160, 0, 160, 240)],
        3 => &[(0, 0, 160, 120), (160, 0, 160, 120), (0, 120, 160, 120)],
        _ => panic!("no layout written out for {count} tiles"),
    }
}

impl Drop for MixViewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[test]
fn grid_shows_everyone_and_reflows_as_people_come_and_go() {
    init();
    let server = TestServer::default_config();
    let url = server.ws_url();
    let mix = MixViewer::start(&url, "grid");
    // Empty room: black frames and silence keep flowing.
    let deadline = Instant::now() + MEDIA_WAIT;
    while mix.counts().0 < 10 || mix.counts().1 < 10 {
        assert!(
            Instant::now() < deadline,
            "no output from an empty room: {:?}; {}",
            mix.counts(),
            mix.states()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    mix.wait_for_grid(&[]);

    // Tiles are in username order: alice (red), bob (blue)... but the room holds 3 including
    // the mixer, so the third publisher joins after one leaves.
    let alice = start(&publisher_line(&url, "grid", "alice", RED, ""));
    let bob = start(&publisher_line(&url, "grid", "bob", BLUE, ""));
    mix.wait_for_grid(&[RED, BLUE]);

    stop(&alice);
    mix.wait_for_grid(&[BLUE]);
    let carol = start(&publisher_line(&url, "grid", "carol", GREEN, ""));
    mix.wait_for_grid(&[BLUE, GREEN]);

    stop(&bob);
    stop(&carol);
    mix.wait_for_grid(&[]);
    let before = mix.counts();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        mix.counts().0 > before.0 && mix.counts().1 > before.1,
        "output stalled after everyone left"
    );
}

#[test]
fn three_publishers_make_three_tiles() {
    init();
    let config = room_signaling::Config {
        max_participants: 4,
        ..Default::default()
    };
    let server = TestServer::start(config);
    let url = server.ws_url();
    let mix = MixViewer::start(&url, "three");
    let publishers: Vec<_> = [("a", RED), ("b", BLUE), ("c", GREEN)]
        .iter()
        .map(|(name, colour)| start(&publisher_line(&url, "three", name, *colour, "")))
        .collect();
    mix.wait_for_grid(&[RED, BLUE, GREEN]);
    stop(&publishers[1]);
    mix.wait_for_grid(&[RED, GREEN]);
    for p in &publishers {
        stop(p);
    }
}
