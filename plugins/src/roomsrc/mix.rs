//! roomsrc's mix mode: every participant in one `video` pad (a grid that reflows) and one
//! `audio` pad (everyone mixed).
//!
//! ```text
//! videotestsrc(black, live) ─┐
//! per participant: queue ─ videoconvert ─ textoverlay(name) ─┴ compositor ─ capsfilter ─▶ video
//! audiotestsrc(silence, live) ─┐
//! per participant: queue ─ audioconvert ─ audioresample ─┴ audiomixer ─ capsfilter ─▶ audio
//! ```
//!
//! The live background sources are what keep both pads flowing while the room is empty, so a
//! recording or a live sink never stalls. Tiles are ordered by username and keep their aspect
//! ratio inside their cell (compositor's `sizing-policy`).
//!
//! Layouts: `grid` (everyone the same size, [`cell`]) and `speaker` (the active speaker large
//! above a strip of the others, [`speaker_cell`]; roomsrc tells the mix who speaks, and the
//! mix cuts to them at most once per [`MIN_CUT_INTERVAL`], see [`Cuts`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gst::glib;

use gst::prelude::*;

/// How the mix is configured (roomsrc's mix-* properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixFormat {
    pub width: i32,
    pub height: i32,
    pub framerate: gst::Fraction,
    pub layout: Layout,
}

/// How the tiles are laid out (roomsrc's `mix-layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[enum_type(name = "GstRoomMixLayout")]
pub enum Layout {
    /// Everyone the same size.
    #[default]
    #[enum_value(
        name = "Grid: everyone the same size, in username order",
        nick = "grid"
    )]
    Grid,
    /// The active speaker large, the others in a strip below.
    #[enum_value(
        name = "Speaker: the active speaker large, the others in a strip below",
        nick = "speaker"
    )]
    Speaker,
}

/// The speaker layout changes its large tile at most this often: a recording cuts, it does
/// not flicker between two people who talk over each other.
pub const MIN_CUT_INTERVAL: Duration = Duration::from_secs(2);

/// Which participant the speaker layout shows large, following the active speaker with at
/// most one cut per [`MIN_CUT_INTERVAL`]. Nobody speaking keeps the last speaker large.
#[derive(Debug, Default)]
pub struct Cuts {
    shown: Option<String>,
    wanted: Option<String>,
    last_cut: Option<Instant>,
}

impl Cuts {
    /// The active speaker is now `username`.
    pub fn want(&mut self, username: String) {
        self.wanted = Some(username);
    }

    /// Cuts to the wanted speaker if it is not shown and the last cut is old enough; true when
    /// it did (the layout must be redone).
    pub fn cut_if_due(&mut self, now: Instant) -> bool {
        let recent = self
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_CUT_INTERVAL);
        if self.wanted.is_none() || self.wanted == self.shown || recent {
            return false;
        }
        self.shown = self.wanted.clone();
        self.last_cut = Some(now);
        true
    }

    /// Who is shown large.
    pub fn shown(&self) -> Option<&str> {
        self.shown.as_deref()
    }
}

/// Extra time the mixers wait for participants' data: decoding and the jitterbuffer make
/// remote frames arrive later than the local background.
const MIXER_LATENCY_NS: u64 = 100_000_000;

/// A mixer for the grid or the voices: live, waiting [`MIXER_LATENCY_NS`] for late inputs,
/// not waiting at all for inputs that have not produced their first buffer yet
/// (`ignore-inactive-pads`: a participant whose decoder has not started), and starting its
/// output at the running time of its first input buffer (`start-time-selection=first`).
///
/// The last one is what keeps the mix from ending before it starts (GStreamer 1.22; UPSTREAM.md:
/// "videoaggregator ends a live mix before it starts"). With the
/// default (`zero`) the aggregator may time out before the background's first buffer: always
/// when its task runs between the pipeline handing out the clock and setting the mixer's base
/// time (a zero base time puts the deadline hours in the past), and whenever the live
/// background is slower than the latency to start. On that timeout every pad is still
/// "inactive", and videoaggregator (`fill_queues`) counts a mixer whose pads are all inactive
/// as all-EOS: the compositor sends EOS and never outputs a frame again, while audio (the
/// silence comes sooner) keeps flowing. With `first` the aggregator does not time out at all
/// before some input has a buffer, and the background never becomes inactive again.
fn live_mixer(factory: &str) -> Result<gst::Element, gst::glib::BoolError> {
    gst::ElementFactory::make(factory)
        .property("latency", MIXER_LATENCY_NS)
        .property("ignore-inactive-pads", true)
        .property_from_str("start-time-selection", "first")
        .build()
}

/// One participant's input to a mixer.
struct Input {
    elements: Vec<gst::Element>,
    mixer_pad: gst::Pad,
}

/// The mixing elements inside roomsrc and the inputs attached to them.
pub struct Mix {
    format: MixFormat,
    /// The capsfilters that fix the output format (background and output of each mixer).
    video_filters: [gst::Element; 2],
    compositor: gst::Element,
    audiomixer: gst::Element,
    /// Video tiles by (username, stream), in grid order.
    tiles: BTreeMap<(String, String), Input>,
    voices: BTreeMap<(String, String), Input>,
    cuts: Cuts,
}

impl Mix {
    /// Adds the mixers to `bin` and returns the mix with its two output pads (video, audio).
    pub fn new(
        bin: &gst::Bin,
        format: MixFormat,
    ) -> Result<(Mix, gst::Pad, gst::Pad), gst::glib::BoolError> {
        let video_caps = video_caps(format);
        let audio_caps = gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("rate", 48_000)
            .field("channels", 2)
            .field("layout", "interleaved")
            .build();
        let background = gst::ElementFactory::make("videotestsrc")
            .property("is-live", true)
            .property_from_str("pattern", "black")
            .build()?;
        let background_caps = gst::ElementFactory::make("capsfilter")
            .property("caps", &video_caps)
            .build()?;
        let compositor = live_mixer("compositor")?;
        compositor.set_property_from_str("background", "black");
        let video_out = gst::ElementFactory::make("capsfilter")
            .property("caps", &video_caps)
            .build()?;
        let silence = gst::ElementFactory::make("audiotestsrc")
            .property("is-live", true)
            .property_from_str("wave", "silence")
            .build()?;
        let silence_caps = gst::ElementFactory::make("capsfilter")
            .property("caps", &audio_caps)
            .build()?;
        let audiomixer = live_mixer("audiomixer")?;
        let audio_out = gst::ElementFactory::make("capsfilter")
            .property("caps", &audio_caps)
            .build()?;
        bin.add_many([&background, &background_caps, &compositor, &video_out])?;
        bin.add_many([&silence, &silence_caps, &audiomixer, &audio_out])?;
        gst::Element::link_many([&background, &background_caps, &compositor, &video_out])?;
        gst::Element::link_many([&silence, &silence_caps, &audiomixer, &audio_out])?;
        let video_filters = [background_caps.clone(), video_out.clone()];
        let mix = Mix {
            format,
            video_filters,
            compositor,
            audiomixer,
            tiles: BTreeMap::new(),
            voices: BTreeMap::new(),
            cuts: Cuts::default(),
        };
        Ok((
            mix,
            video_out.static_pad("src").unwrap(),
            audio_out.static_pad("src").unwrap(),
        ))
    }

    /// Applies the mix-* properties (they may be set after `mix=true`).
    pub fn set_format(&mut self, format: MixFormat) {
        self.format = format;
        for filter in &self.video_filters {
            filter.set_property("caps", video_caps(format));
        }
        self.reflow();
    }

    /// Attaches a participant's decoded pad (video: a labelled tile; audio: a voice).
    pub fn attach(
        &mut self,
        bin: &gst::Bin,
        key: (String, String),
        pad: &gst::Pad,
    ) -> Result<(), gst::glib::BoolError> {
        let video = pad.name().starts_with("video");
        let elements = if video {
            let label = if key.1 == "main" {
                key.0.clone()
            } else {
                format!("{} ({})", key.0, key.1)
            };
            vec![
                gst::ElementFactory::make("queue").build()?,
                gst::ElementFactory::make("videoconvert").build()?,
                gst::ElementFactory::make("textoverlay")
                    .property("text", label)
                    .property_from_str("valignment", "bottom")
                    .property_from_str("halignment", "left")
                    .property("font-desc", "Sans 14")
                    .property("shaded-background", true)
                    .build()?,
                gst::ElementFactory::make("videoconvert").build()?,
            ]
        } else {
            vec![
                gst::ElementFactory::make("queue").build()?,
                gst::ElementFactory::make("audioconvert").build()?,
                gst::ElementFactory::make("audioresample").build()?,
            ]
        };
        let mixer = if video {
            &self.compositor
        } else {
            &self.audiomixer
        };
        let mixer_pad = mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| gst::glib::bool_error!("mixer refused a pad"))?;
        bin.add_many(&elements)?;
        gst::Element::link_many(&elements)?;
        let last = elements.last().unwrap().static_pad("src").unwrap();
        last.link(&mixer_pad)
            .map_err(|e| gst::glib::bool_error!("{e:?}"))?;
        for element in &elements {
            element.sync_state_with_parent()?;
        }
        pad.link(&elements[0].static_pad("sink").unwrap())
            .map_err(|e| gst::glib::bool_error!("{e:?}"))?;
        let input = Input {
            elements,
            mixer_pad,
        };
        if video {
            self.tiles.insert(key, input);
            self.reflow();
        } else {
            self.voices.insert(key, input);
        }
        Ok(())
    }

    /// Detaches a participant's inputs (after its webrtcsrc stopped) and reflows the grid.
    pub fn detach(&mut self, bin: &gst::Bin, key: &(String, String)) {
        for (input, mixer) in [
            (self.tiles.remove(key), &self.compositor),
            (self.voices.remove(key), &self.audiomixer),
        ] {
            let Some(input) = input else { continue };
            // Releasing the mixer pad flushes it, which frees a thread blocked pushing into it;
            // only then can the branch stop.
            mixer.release_request_pad(&input.mixer_pad);
            for element in &input.elements {
                let _ = element.set_state(gst::State::Null);
                let _ = bin.remove(element);
            }
        }
        self.reflow();
    }

    /// Number of video tiles.
    pub fn tiles(&self) -> usize {
        self.tiles.len()
    }

    /// The active speaker changed to `username` (the speaker layout cuts to it when due).
    pub fn set_speaker(&mut self, username: String, now: Instant) {
        self.cuts.want(username);
        self.cut_if_due(now);
    }

    /// Cuts to the active speaker if the speaker layout may cut now (called regularly).
    pub fn cut_if_due(&mut self, now: Instant) {
        if self.cuts.cut_if_due(now) && self.format.layout == Layout::Speaker {
            self.reflow();
        }
    }

    /// Lays the tiles out: a near-square grid in username order, or the speaker large.
    fn reflow(&self) {
        let count = self.tiles.len();
        let large = self
            .tiles
            .keys()
            .position(|(user, _)| Some(user.as_str()) == self.cuts.shown())
            .unwrap_or(0);
        let (width, height) = (self.format.width, self.format.height);
        for (index, input) in self.tiles.values().enumerate() {
            let (x, y, w, h) = match self.format.layout {
                Layout::Grid => cell(index, count, width, height),
                Layout::Speaker => speaker_cell(index, large, count, width, height),
            };
            let pad = &input.mixer_pad;
            pad.set_property("xpos", x);
            pad.set_property("ypos", y);
            pad.set_property("width", w);
            pad.set_property("height", h);
            pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
            pad.set_property("zorder", 1u32 + index as u32);
        }
    }
}

fn video_caps(format: MixFormat) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", format.width)
        .field("height", format.height)
        .field("framerate", format.framerate)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

/// Share of the height the speaker layout gives the strip of the others.
const STRIP_SHARE: i32 = 4;
/// The strip's tiles are at most this fraction of the width (a strip of two does not stretch).
const STRIP_MIN_SLOTS: i32 = 4;

/// The rectangle of tile `index` of `count` in the speaker layout, tile `large` being the
/// speaker: it takes the top (1 − 1/[`STRIP_SHARE`]) of the picture, the others share the strip
/// below, centred, in their order. Alone, a tile takes the whole picture.
pub fn speaker_cell(
    index: usize,
    large: usize,
    count: usize,
    width: i32,
    height: i32,
) -> (i32, i32, i32, i32) {
    if count <= 1 {
        return (0, 0, width, height);
    }
    let strip_h = height / STRIP_SHARE;
    if index == large {
        return (0, 0, width, height - strip_h);
    }
    let others = (count - 1) as i32;
    let slot_w = width / others.max(STRIP_MIN_SLOTS);
    let left = (width - slot_w * others) / 2;
    let slot = if index < large { index } else { index - 1 } as i32;
    (left + slot * slot_w, height - strip_h, slot_w, strip_h)
}

/// The rectangle of tile `index` of `count` in a `width`×`height` grid: ⌈√count⌉ columns.
pub fn cell(index: usize, count: usize, width: i32, height: i32) -> (i32, i32, i32, i32) {
    let cols = (count as f64).sqrt().ceil().max(1.0) as usize;
    let rows = count.div_ceil(cols).max(1);
    let (w, h) = (width / cols as i32, height / rows as i32);
    ((index % cols) as i32 * w, (index / cols) as i32 * h, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_speaker_is_large_above_a_strip_of_the_others() {
        assert_eq!(speaker_cell(0, 0, 1, 1280, 720), (0, 0, 1280, 720));
        assert_eq!(speaker_cell(1, 1, 2, 1280, 720), (0, 0, 1280, 540));
        assert_eq!(speaker_cell(0, 1, 2, 1280, 720), (480, 540, 320, 180));
        // Five: the four others centred in order, the speaker's slot skipped.
        assert_eq!(speaker_cell(2, 2, 5, 1280, 720), (0, 0, 1280, 540));
        let strip: Vec<_> = [0, 1, 3, 4]
            .iter()
            .map(|&i| speaker_cell(i, 2, 5, 1280, 720).0)
            .collect();
        assert_eq!(strip, [0, 320, 640, 960]);
    }

    #[test]
    fn cuts_follow_the_speaker_at_most_once_per_two_seconds() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut cuts = Cuts::default();
        assert!(!cuts.cut_if_due(at(0)), "nobody to cut to");
        cuts.want("a".into());
        assert!(cuts.cut_if_due(at(0)), "the first cut is at once");
        assert_eq!(cuts.shown(), Some("a"));
        cuts.want("b".into());
        assert!(!cuts.cut_if_due(at(1000)));
        cuts.want("a".into());
        assert!(!cuts.cut_if_due(at(1500)), "back to the shown one: no cut");
        cuts.want("b".into());
        assert!(!cuts.cut_if_due(at(1999)));
        assert!(cuts.cut_if_due(at(2000)));
        assert_eq!(cuts.shown(), Some("b"));
        assert!(!cuts.cut_if_due(at(9000)), "already shown");
    }

    #[test]
    fn grid_is_near_square() {
        assert_eq!(cell(0, 1, 1280, 720), (0, 0, 1280, 720));
        assert_eq!(cell(1, 2, 1280, 720), (640, 0, 640, 720));
        assert_eq!(cell(2, 3, 1280, 720), (0, 360, 640, 360));
        assert_eq!(cell(4, 5, 1200, 600), (400, 300, 400, 300));
    }
}
