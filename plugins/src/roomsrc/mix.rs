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

use std::collections::BTreeMap;

use gst::prelude::*;

/// How the mix is configured (roomsrc's mix-* properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixFormat {
    pub width: i32,
    pub height: i32,
    pub framerate: gst::Fraction,
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

    /// Lays the tiles out in a near-square grid, in username order.
    fn reflow(&self) {
        for (index, input) in self.tiles.values().enumerate() {
            let (x, y, w, h) = cell(
                index,
                self.tiles.len(),
                self.format.width,
                self.format.height,
            );
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

/// The rectangle of tile `index` of `count` in a `width`×`height` grid: ⌈√count⌉ columns.
pub fn cell(index: usize, count: usize, width: i32, height: i32) -> (i32, i32, i32, i32) {
    let cols = (count as f64).sqrt().ceil().max(1.0) as usize;
    let rows = count.div_ceil(cols).max(1);
    let (w, h) = (width / cols as i32, height / rows as i32);
    ((index % cols) as i32 * w, (index / cols) as i32 * h, w, h)
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn grid_is_near_square() {
        assert_eq!(cell(0, 1, 1280, 720), (0, 0, 1280, 720));
        assert_eq!(cell(1, 2, 1280, 720), (640, 0, 640, 720));
        assert_eq!(cell(2, 3, 1280, 720), (0, 360, 640, 360));
        assert_eq!(cell(4, 5, 1200, 600), (400, 300, 400, 300));
    }
}
