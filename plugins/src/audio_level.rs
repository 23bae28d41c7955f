//! Audio levels on the wire: RFC 6464 ("client-to-mixer audio level", the
//! `urn:ietf:params:rtp-hdrext:ssrc-audio-level` RTP header extension browsers send with every
//! audio packet).
//!
//! roomsink measures each raw buffer before its Opus encoder ([`meter`]: GStreamer's `level`
//! with `audio-level-meta`, a `GstAudioLevelMeta` the encoder carries to its output) and its
//! payloaders write the meta into the extension ([`add_extension`], from webrtcsink's
//! `payloader-setup`; the extension's id then appears in the offer). On the receiving side
//! webrtcbin's caps carry the offered extension, the depayloader enables GStreamer's
//! `rtphdrextclientaudiolevel` for it by itself (`auto-header-extension`), which puts the
//! level back into a meta, and the decoder carries it to the decoded buffer, where roomsrc
//! reads it ([`received_level`]). Browsers send the same extension, so their levels arrive the
//! same way. From a publisher that sends no levels (already-encoded input to roomsink, a peer
//! without the extension) roomsrc measures the decoded samples itself ([`level_of_buffer`]):
//! the pads it exposes outlive the sessions behind them, so a `level` element per participant
//! would have to be moved from session to session, where a probe measuring in place needs
//! nothing.

use gst::prelude::*;
use gst_audio::AudioLevelMeta;
use gst_rtp::prelude::*;

/// The header extension's URI (RFC 6464).
pub const URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// The extension id roomsink offers. webrtcsink maps its congestion-control extension (TWCC)
/// to id 1 on GStreamer 1.22, whose payloaders lack the `extensions` property it would pick a
/// free id from; 2 is the next one.
pub const EXTENSION_ID: u32 = 2;
/// RFC 6464's level of silence (−127 dBov).
pub const SILENT: u8 = room_protocol::speaker::SILENT;

/// The RFC 6464 level of interleaved signed 16-bit samples: the RMS in −dBov, 0 (full scale)
/// to 127 (silence), as `level` computes it.
pub fn level_of_s16(samples: impl ExactSizeIterator<Item = i16>) -> u8 {
    let count = samples.len();
    if count == 0 {
        return SILENT;
    }
    let sum: f64 = samples
        .map(|s| {
            let x = f64::from(s) / 32768.0;
            x * x
        })
        .sum();
    let rms = (sum / count as f64).sqrt();
    if rms <= 0.0 {
        return SILENT;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, f64::from(SILENT)) as u8
}

/// The level of a buffer of interleaved S16LE samples (`None` if it cannot be read).
pub fn level_of_buffer(buffer: &gst::BufferRef) -> Option<u8> {
    let map = buffer.map_readable().ok()?;
    let samples = map
        .as_slice()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]));
    Some(level_of_s16(samples))
}

/// `level` measuring every buffer into a `GstAudioLevelMeta` (RFC 6464 units, what the
/// payloader's extension writes), without bus messages. Raw audio in, the same out.
pub fn meter() -> Result<gst::Element, gst::glib::BoolError> {
    gst::ElementFactory::make("level")
        .property("audio-level-meta", true)
        .property("post-messages", false)
        .build()
}

/// Adds the level extension to an audio payloader (webrtcsink's `payloader-setup`): it writes
/// each packet's `GstAudioLevelMeta`, and its id appears in the payloader's caps, so in the offer.
pub fn add_extension(payloader: &gst::Element) {
    let Some(extension) = gst_rtp::RTPHeaderExtension::create_from_uri(URI) else {
        return;
    };
    extension.set_id(EXTENSION_ID);
    payloader.emit_by_name::<()>("add-extension", &[&extension]);
}

/// Where a received level comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelSource {
    /// The publisher's RFC 6464 extension.
    Extension,
    /// Measured here from the decoded samples.
    Measured,
}

/// The level of a decoded buffer (interleaved S16LE, as opusdec gives): the publisher's, if the
/// buffer carries it, else measured.
pub fn received_level(buffer: &gst::BufferRef) -> Option<(u8, LevelSource)> {
    if let Some(meta) = buffer.meta::<AudioLevelMeta>() {
        return Some((meta.level(), LevelSource::Extension));
    }
    level_of_buffer(buffer).map(|level| (level, LevelSource::Measured))
}

/// `sdp` without the extension's `vad=on` attribute, which GStreamer 1.22 always writes
/// (`rtphdrextclientaudiolevel`'s `vad` is read-only, true) and which means what its absence
/// means (RFC 6464 §4: "on" is the default). Peers that parse `a=extmap:` as exactly id and URI
/// (aiortc: "too many values to unpack") refused the whole offer over it; browsers write none.
pub fn without_default_vad(sdp: &str) -> String {
    let attribute = format!(" {URI} vad=on");
    sdp.split_inclusive('\n')
        .map(|line| {
            if line.starts_with("a=extmap:") && line.trim_end().ends_with(&attribute) {
                line.replacen(&attribute, &format!(" {URI}"), 1)
            } else {
                line.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_vad_attribute_is_left_out_and_nothing_else_changes() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n\
                     a=extmap:1 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                     a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n\
                     a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=off\r\n";
        let expected = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n\
                        a=extmap:1 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                        a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
                        a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=off\r\n";
        assert_eq!(super::without_default_vad(offer), expected);
    }

    use super::*;

    #[test]
    fn levels_are_minus_dbov_of_the_rms() {
        assert_eq!(level_of_s16([0i16; 480].into_iter()), SILENT);
        assert_eq!(level_of_s16(std::iter::empty::<i16>()), SILENT);
        // A full-scale square wave: 0 dBov.
        let square = (0..480).map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN });
        assert_eq!(level_of_s16(square), 0);
        // A sine at half scale: RMS 0.5/√2, −9 dBov.
        let sine = (0..480).map(|i| {
            let phase = i as f64 * 2.0 * std::f64::consts::PI / 48.0;
            (phase.sin() * 16384.0) as i16
        });
        assert_eq!(level_of_s16(sine), 9);
    }

    /// What roomsink and roomsrc rely on in GStreamer 1.22: a level set before opusenc comes out
    /// of opusdec on the other side of the RTP extension.
    #[test]
    fn a_level_crosses_encoder_extension_and_decoder() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "audiotestsrc num-buffers=50 volume=0.25 ! audio/x-raw,format=S16LE,rate=48000,channels=1 \
             ! level audio-level-meta=true post-messages=false ! opusenc ! rtpopuspay name=pay ! rtpopusdepay \
             ! opusdec ! appsink name=out sync=false",
        )
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap();
        let by_name = |n| pipeline.by_name(n).unwrap();
        add_extension(&by_name("pay"));
        // As across a network: only the packet's bytes reach the depayloader, no meta.
        by_name("pay").static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BUFFER,
            |_, info| {
                let Some(packet) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let bytes = packet.map_readable().unwrap().to_vec();
                let mut copy = gst::Buffer::from_mut_slice(bytes);
                packet
                    .copy_into(
                        copy.make_mut(),
                        gst::BufferCopyFlags::TIMESTAMPS | gst::BufferCopyFlags::FLAGS,
                        ..,
                    )
                    .unwrap();
                info.data = Some(gst::PadProbeData::Buffer(copy));
                gst::PadProbeReturn::Ok
            },
        );
        let sink = by_name("out").downcast::<gst_app::AppSink>().unwrap();
        let caps_with_id = by_name("pay").static_pad("src").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut levels = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let buffer = sample.buffer().unwrap();
            levels.push(received_level(buffer).unwrap());
        }
        let caps = caps_with_id.current_caps().unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        let extmap = format!("extmap-{EXTENSION_ID}");
        // `extmap-2` is (direction, URI, attributes): the extension has a `vad` attribute.
        let offered = caps.structure(0).unwrap().value(extmap.as_str()).ok();
        assert!(
            offered.is_some_and(|v| format!("{v:?}").contains(URI)),
            "{caps}"
        );
        assert!(levels.len() > 10, "{levels:?}");
        // A sine at 0.25 of full scale: −15 dBov.
        let from_extension = levels
            .iter()
            .filter(|(l, s)| *s == LevelSource::Extension && (14..=16).contains(l))
            .count();
        assert!(from_extension * 10 >= levels.len() * 9, "{levels:?}");
    }
}
