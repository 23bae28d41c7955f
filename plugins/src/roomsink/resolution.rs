//! The shared video encoder's picture size: smaller while what it makes does not fit the
//! weakest viewer's link, back up once the link has room for the bigger size again
//! (UPSTREAM.md: "vp8enc's least bitrate per picture size").
//!
//! In real time, libvpx has a least bitrate per picture size under which its target means
//! nothing: at its coarsest quantizer it still makes what the picture needs. `gst-room bench
//! network`'s moving 640x480@30 picture came out at ~865 kbit/s whatever the target (100 or
//! 265 kbit/s), 480x360 at ~645, 320x240 at ~338, 240x180 at ~237, 160x120 at ~137. Behind a
//! 0.5 Mbit/s uplink the shared encoder kept sending ~900 kbit/s: the link's queue stayed full,
//! every keyframe the viewer asked for was lost in it and the viewer decoded 5 frames in 15 s.
//! webrtcsink's own encoders drop frames instead (`dropframe-threshold`) and scale down at fixed
//! bitrates; one encoder dropping frames drops them for every viewer, and fixed bitrates fit
//! one kind of picture only. So the size here follows what the encoder is *measured* to make:
//!
//! - **down** one step when, over the last [`WINDOW`] at this size, the encoder made more than
//!   the weakest link leaves for video (its budget) and more than [`HEADROOM`] × its mean
//!   target over that window (it cannot follow the target at this size; the mean, not the
//!   latest, as the encoder follows a falling target a few frames late). Keyframes do not count (their rate is set by
//!   the viewers' requests, not the picture size): the rate is that of the delta frames, as if
//!   every frame were one. Far over, it skips steps: to the biggest size whose share of the
//!   pixels, times what this size made, fits the budget (a cap falling from 1 to 0.5 Mbit/s
//!   went 640x480 → 320x240 in one step instead of two seconds of overload);
//! - **up** one step, at least [`STEP_UP_AFTER`] after the last change, when the budget is
//!   [`HEADROOM`] × what the bigger size was measured to make when it did not fit (remembered for
//!   [`REMEMBER`]; after that, this size's output scaled by the pixel count). A step up that
//!   has to come down again within [`STEP_UP_AFTER`] doubles the wait before the next one (up to
//!   [`LONGEST_WAIT`]); a step up that holds for [`HELD`] brings it back. Near a link's rate
//!   GCC's estimate saw-tooths, and without this the size went up and down every few seconds
//!   (a keyframe for every viewer each time).
//!
//! Every change is a keyframe at the new size for every viewer (VP8 and H.264 carry the size in
//! keyframes; decoders and webrtcsink follow without renegotiation).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::bitrate::VideoRate;

/// The sizes the encoder may use, as fractions of the input's width and height (the last is a
/// quarter: 640x480 → 160x120, 1280x720 → 320x180).
pub const SCALES: [(u32, u32); 5] = [(1, 1), (3, 4), (1, 2), (3, 8), (1, 4)];
/// How long the encoder's output is measured at one size before deciding.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The least time at one size before stepping up (stepping down waits only for [`WINDOW`]): a
/// step up that does not fit costs the viewers a second of overload.
pub const STEP_UP_AFTER: Duration = Duration::from_secs(5);
/// The longest wait before a step up, after steps up that did not hold.
pub const LONGEST_WAIT: Duration = Duration::from_secs(20);
/// How long a step up must hold for the wait before the next one to go back to
/// [`STEP_UP_AFTER`].
pub const HELD: Duration = Duration::from_secs(10);
/// Margin between the encoder's output and the budget it must fit in.
pub const HEADROOM: f64 = 1.2;
/// How long a size's measured output is trusted: the picture may have become easier.
pub const REMEMBER: Duration = Duration::from_secs(30);

/// One encoded frame.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub bytes: usize,
    pub keyframe: bool,
    /// The encoder's target bitrate when it came out.
    pub target: u32,
}

/// The size decisions of one shared video encoder, without I/O (see the module docs).
#[derive(Debug)]
pub struct Scaler {
    /// Index in [`SCALES`].
    step: usize,
    /// When `step` was entered (or the scaler made).
    since: Instant,
    /// The encoder's output in the last [`WINDOW`] at `step`, oldest first.
    window: VecDeque<(Instant, Output)>,
    /// Per step: the bitrate the encoder made there when it did not fit, and when.
    made: [Option<(u32, Instant)>; SCALES.len()],
    /// The least time at `step` before a step up.
    wait: Duration,
    /// Whether `step` was entered going up.
    went_up: bool,
}

impl Scaler {
    pub fn new(now: Instant) -> Scaler {
        Scaler {
            step: 0,
            since: now,
            window: VecDeque::new(),
            made: [None; SCALES.len()],
            wait: STEP_UP_AFTER,
            went_up: false,
        }
    }

    /// The encoder put out `output` at `now`; `budget` is what the weakest viewer's link leaves
    /// for video (`None` while nobody watches: the size stays). Returns the new step when the
    /// size must change.
    pub fn on_output(
        &mut self,
        now: Instant,
        output: Output,
        budget: Option<u32>,
    ) -> Option<usize> {
        self.window.push_back((now, output));
        while self
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.window.pop_front();
        }
        let budget = budget?;
        if now.duration_since(self.since) < WINDOW {
            return None;
        }
        let here = now.duration_since(self.since);
        if self.went_up && here >= HELD {
            self.wait = STEP_UP_AFTER;
        }
        let made = self.rate();
        let targets = self.window.iter().map(|(_, o)| f64::from(o.target));
        let target = targets.sum::<f64>() / self.window.len().max(1) as f64;
        let too_much = made > budget && f64::from(made) > HEADROOM * target;
        if too_much && self.step + 1 < SCALES.len() {
            if self.went_up && here < STEP_UP_AFTER {
                self.wait = (self.wait * 2).min(LONGEST_WAIT);
            }
            self.made[self.step] = Some((made, now));
            let down = self.step_that_fits(made, budget);
            return Some(self.enter(down, false, now));
        }
        let room = || f64::from(budget) >= HEADROOM * self.need_above(made, now);
        if self.step > 0 && here >= self.wait && room() {
            return Some(self.enter(self.step - 1, true, now));
        }
        None
    }

    /// The bitrate (bit/s) of the output in the window, as if every frame were a delta frame
    /// (all of it if there are only keyframes).
    fn rate(&self) -> u32 {
        let deltas = self.window.iter().filter(|(_, o)| !o.keyframe);
        let (count, bytes) = deltas.fold((0, 0), |(n, b), (_, o)| (n + 1, b + o.bytes));
        let bytes = if count > 0 {
            bytes as f64 * self.window.len() as f64 / f64::from(count)
        } else {
            self.window.iter().map(|(_, o)| o.bytes).sum::<usize>() as f64
        };
        (bytes * 8.0 / WINDOW.as_secs_f64()) as u32
    }

    /// The next step down, or a smaller one: the first whose share of this step's pixels
    /// times `made` fits in `budget` (else the smallest).
    fn step_that_fits(&self, made: u32, budget: u32) -> usize {
        let expected = |step: usize| f64::from(made) * pixels(step) / pixels(self.step);
        (self.step + 1..SCALES.len())
            .find(|&step| expected(step) <= f64::from(budget))
            .unwrap_or(SCALES.len() - 1)
    }

    /// What the next bigger size is expected to make, this size making `made`.
    fn need_above(&self, made: u32, now: Instant) -> f64 {
        match self.made[self.step - 1] {
            Some((need, at)) if now.duration_since(at) < REMEMBER => f64::from(need),
            _ => f64::from(made) * pixels(self.step - 1) / pixels(self.step),
        }
    }

    fn enter(&mut self, step: usize, up: bool, now: Instant) -> usize {
        self.step = step;
        self.went_up = up;
        self.since = now;
        self.window.clear();
        step
    }
}

/// The pixel count of a step relative to the input's.
fn pixels(step: usize) -> f64 {
    let (n, d) = SCALES[step];
    (f64::from(n) / f64::from(d)).powi(2)
}

/// The raw caps that make the encoder's input `step`'s size for an input of `input` caps
/// (any caps at step 0: the input passes unscaled).
pub fn caps_for(step: usize, input: Option<&gst::CapsRef>) -> gst::Caps {
    let info = input.and_then(|c| gst_video::VideoInfo::from_caps(c).ok());
    match info {
        Some(info) if step > 0 => {
            let (n, d) = SCALES[step];
            // Even sizes: I420's chroma planes are half the size.
            let even = |v: u32| ((v * n / d).max(2) + 1) & !1;
            gst::Caps::builder("video/x-raw")
                .field("width", even(info.width()) as i32)
                .field("height", even(info.height()) as i32)
                .field("pixel-aspect-ratio", info.par())
                .build()
        }
        _ => gst::Caps::new_empty_simple("video/x-raw"),
    }
}

/// Makes the size of `filter`'s output (a capsfilter between `videoscale` and the encoder)
/// follow the encoder's output measured at `encoded` (the encoder's src pad).
pub fn install(filter: &gst::Element, encoded: &gst::Pad, rate: Arc<VideoRate>) {
    let scaler = Mutex::new(Scaler::new(Instant::now()));
    let filter = filter.downgrade();
    encoded.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let (target, budget) = rate.target_and_budget();
        let output = Output {
            bytes: buffer.size(),
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            target,
        };
        let step = scaler
            .lock()
            .unwrap()
            .on_output(Instant::now(), output, budget);
        // Weak: the branch owns the filter and the encoder, whose pad holds this closure.
        if let (Some(step), Some(filter)) = (step, filter.upgrade()) {
            let input = filter
                .static_pad("sink")
                .and_then(|p| p.peer())
                .and_then(|p| p.parent_element())
                .and_then(|scale| scale.static_pad("sink"))
                .and_then(|p| p.current_caps());
            let caps = caps_for(step, input.as_deref());
            gst::info!(
                super::bitrate::CAT,
                obj = filter,
                "picture size {caps} (encoder made more than the link takes, or room again)"
            );
            // The filter asks upstream to renegotiate; videoscale applies it to the next frame.
            filter.set_property("caps", caps);
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds up to `seconds` of output at `kbps` (30 frames/s); stops at the first change of
    /// size and returns its step.
    fn feed(
        scaler: &mut Scaler,
        clock: &mut Instant,
        seconds: u64,
        kbps: u32,
        target: u32,
        budget: Option<u32>,
    ) -> Option<usize> {
        let bytes = (kbps as usize * 1000 / 8) / 30;
        let frame = Output {
            bytes,
            keyframe: false,
            target,
        };
        for _ in 0..seconds * 30 {
            *clock += Duration::from_micros(33_334);
            if let Some(step) = scaler.on_output(*clock, frame, budget) {
                return Some(step);
            }
        }
        None
    }

    #[test]
    fn keyframes_and_a_falling_target_are_not_a_picture_too_big() {
        let mut clock = Instant::now();
        let mut scaler = Scaler::new(clock);
        // 30 fps of 1 Mbit/s delta frames, at a 1 Mbit/s target on a 1.1 Mbit/s budget, with
        // a keyframe four times their size every 250 ms (viewers losing packets): 1.4 Mbit/s
        // out, and no step down.
        for i in 0..300 {
            clock += Duration::from_micros(33_334);
            let keyframe = i % 8 == 0;
            let output = Output {
                bytes: if keyframe { 16_668 } else { 4_167 },
                keyframe,
                target: 1_000_000,
            };
            assert_eq!(scaler.on_output(clock, output, Some(1_100_000)), None);
        }
        // The estimate halves within half a second; the encoder follows 5 frames late.
        let target = |i: u32| 1_000_000 - 500_000 * i.min(15) / 15;
        for i in 0..30u32 {
            clock += Duration::from_micros(33_334);
            let output = Output {
                bytes: target(i.saturating_sub(5)) as usize / 8 / 30,
                keyframe: false,
                target: target(i),
            };
            assert_eq!(scaler.on_output(clock, output, Some(550_000)), None);
        }
        // It does not follow: one step down within a second.
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 900, 500_000, Some(550_000)),
            Some(1)
        );
    }

    #[test]
    fn steps_down_while_the_encoder_cannot_fit_and_back_up_when_the_link_has_room() {
        let mut clock = Instant::now();
        let mut scaler = Scaler::new(clock);
        // Nobody watches: whatever it makes, the size stays.
        assert_eq!(feed(&mut scaler, &mut clock, 3, 900, 100_000, None), None);
        // It fits: nothing changes.
        assert_eq!(
            feed(&mut scaler, &mut clock, 3, 900, 1_500_000, Some(2_000_000)),
            None
        );
        // Over its target but the link takes it (the target is capped by video-bitrate): stays.
        assert_eq!(
            feed(&mut scaler, &mut clock, 3, 900, 500_000, Some(2_000_000)),
            None
        );
        // A 0.5 Mbit/s link: 865 kbit/s at full size, within a second straight to 1/2, where a
        // quarter of the pixels would make 216 kbit/s (3/4: 487).
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 865, 265_000, Some(312_000)),
            Some(2)
        );
        // 338 at 1/2 does not fit either: 3/8 after a second; 237 there fits.
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 338, 265_000, Some(312_000)),
            Some(3)
        );
        assert_eq!(
            feed(&mut scaler, &mut clock, 10, 237, 265_000, Some(312_000)),
            None
        );
        // The cap is lifted: up only once the budget covers 1.2 × what the bigger size made
        // (338 → 406 kbit/s) ...
        assert_eq!(
            feed(&mut scaler, &mut clock, 10, 237, 340_000, Some(400_000)),
            None
        );
        assert_eq!(
            feed(&mut scaler, &mut clock, 1, 237, 800_000, Some(1_000_000)),
            Some(2)
        );
        // ... and no sooner than 5 s after the last change; 645 × 1.2 = 774 > 700: stays.
        assert_eq!(
            feed(&mut scaler, &mut clock, 10, 338, 600_000, Some(700_000)),
            None
        );
        assert_eq!(
            feed(&mut scaler, &mut clock, 1, 338, 1_000_000, Some(1_200_000)),
            Some(1)
        );
        assert_eq!(
            feed(&mut scaler, &mut clock, 4, 645, 1_000_000, Some(1_500_000)),
            None
        );
        // What the full size made is older than 30 s: 645 × 16/9 × 1.2 = 1376 kbit/s expected.
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 645, 1_000_000, Some(1_300_000)),
            None
        );
        assert_eq!(
            feed(&mut scaler, &mut clock, 1, 645, 1_000_000, Some(1_400_000)),
            Some(0)
        );
    }

    #[test]
    fn forgets_what_a_size_made_and_then_scales_by_pixels() {
        let mut clock = Instant::now();
        let mut scaler = Scaler::new(clock);
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 500, 265_000, Some(312_000)),
            Some(1)
        );
        // Within 30 s the full size needs 1.2 × 500 kbit/s.
        assert_eq!(
            feed(&mut scaler, &mut clock, 25, 200, 450_000, Some(550_000)),
            None
        );
        // After that, 200 × 16/9 × 1.2 = 427 kbit/s is expected: up.
        assert_eq!(
            feed(&mut scaler, &mut clock, 10, 200, 450_000, Some(550_000)),
            Some(0)
        );
    }

    #[test]
    fn a_step_up_that_does_not_hold_doubles_the_wait_for_the_next() {
        let mut clock = Instant::now();
        let mut scaler = Scaler::new(clock);
        // 1.2 × the 500 kbit/s the full size made fits in 1.2 Mbit/s; 500 × 9/16 fits in 300.
        let (fits, over) = (Some(1_200_000), Some(300_000));
        // Each step up comes down again within 2 s (the link's estimate saw-tooths): the wait
        // for the next doubles, 5, 10, 20 s, and stays at 20.
        for wait in [5, 10, 20, 20] {
            assert_eq!(
                feed(&mut scaler, &mut clock, 2, 500, 255_000, over),
                Some(1)
            );
            assert_eq!(
                feed(&mut scaler, &mut clock, wait - 1, 400, 850_000, fits),
                None
            );
            assert_eq!(
                feed(&mut scaler, &mut clock, 2, 400, 850_000, fits),
                Some(0)
            );
        }
        // This one holds for 10 s: the wait is 5 s again.
        assert_eq!(feed(&mut scaler, &mut clock, 11, 500, 850_000, fits), None);
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 500, 255_000, over),
            Some(1)
        );
        assert_eq!(feed(&mut scaler, &mut clock, 4, 400, 850_000, fits), None);
        assert_eq!(
            feed(&mut scaler, &mut clock, 2, 400, 850_000, fits),
            Some(0)
        );
    }

    #[test]
    fn never_goes_below_the_smallest_size() {
        let mut clock = Instant::now();
        let mut scaler = Scaler::new(clock);
        let steps: Vec<usize> = (0..8)
            .filter_map(|_| feed(&mut scaler, &mut clock, 2, 900, 100_000, Some(100_000)))
            .collect();
        assert_eq!(steps, [4]);
        let mut scaler = Scaler::new(clock);
        let steps: Vec<usize> = (0..8)
            .filter_map(|_| feed(&mut scaler, &mut clock, 2, 3000, 100_000, Some(100_000)))
            .collect();
        assert_eq!(steps, [4]);
    }

    #[test]
    fn sizes_keep_the_aspect_and_are_even() {
        gst::init().unwrap();
        let input = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", 1280)
            .field("height", 720)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        let caps = caps_for(3, Some(&input));
        let s = caps.structure(0).unwrap();
        assert_eq!(s.get::<i32>("width").unwrap(), 480);
        assert_eq!(s.get::<i32>("height").unwrap(), 270);
        let s = caps_for(1, Some(&input));
        assert_eq!(s.structure(0).unwrap().get::<i32>("height").unwrap(), 540);
        assert_eq!(
            caps_for(0, Some(&input)),
            gst::Caps::new_empty_simple("video/x-raw")
        );
    }
}
