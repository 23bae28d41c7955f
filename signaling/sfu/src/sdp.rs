//! Codecs and SDP: what a publisher may send and a viewer is offered, what an ingest's answer
//! negotiated, and str0m's SDP handling behind `catch_unwind`.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use str0m::Rtc;
use str0m::change::SdpOffer;
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{MediaKind, Mid, Pt};

use crate::{SfuError, StreamKey};

/// The H264 profile a viewer is offered before its stream's ingest is known: constrained
/// baseline 3.1, packetization-mode 1, what webrtcsink, webrtcsrc and Chromium all do.
pub(crate) const H264_PROFILE: u32 = 0x42e01f;

/// The codecs a publisher may use: VP8, H264 (packetization-mode 1 in the usual profiles), Opus.
pub(crate) fn ingest_codecs() -> CodecConfig {
    let mut config = CodecConfig::empty();
    config.enable_opus(true, false);
    config.enable_vp8(true);
    config.enable_h264(true);
    // Packetization-mode 0 (single NAL units) is not forwarded as frames; keep mode 1 only.
    let params = config
        .params()
        .iter()
        .filter(|p| {
            let spec = p.spec();
            spec.codec != Codec::H264 || spec.format.packetization_mode == Some(1)
        })
        .copied()
        .collect();
    CodecConfig::new_from_payload_params(params)
}

/// The codecs offered to a viewer: those the stream's ingest negotiated per kind, else the
/// default set (Opus; VP8 and H264 42e01f mode 1).
pub(crate) fn viewer_codecs(ingest: Option<&StreamCodecs>) -> CodecConfig {
    let mut params: Vec<PayloadParams> = Vec::new();
    match ingest.map(|c| &c.audio).filter(|a| !a.is_empty()) {
        Some(audio) => params.extend(audio.iter().copied()),
        None => {
            let mut config = CodecConfig::empty();
            config.enable_opus(true, false);
            params.extend(config.params().iter().copied());
        }
    }
    match ingest.map(|c| &c.video).filter(|v| !v.is_empty()) {
        Some(video) => params.extend(video.iter().copied()),
        None => {
            let mut config = CodecConfig::empty();
            config.enable_vp8(true);
            config.add_h264(108.into(), Some(109.into()), true, H264_PROFILE);
            params.extend(config.params().iter().copied());
        }
    }
    CodecConfig::new_from_payload_params(params)
}

/// What an ingest negotiated, per kind (what its viewers are offered).
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamCodecs {
    pub(crate) audio: Vec<PayloadParams>,
    pub(crate) video: Vec<PayloadParams>,
}

/// The payload types an ingest's answer accepted, per kind.
pub(crate) fn negotiated_codecs(rtc: &Rtc, mids: &[Mid]) -> StreamCodecs {
    let mut codecs = StreamCodecs::default();
    let config = rtc.codec_config();
    for mid in mids {
        let Some(media) = rtc.media(*mid) else {
            continue;
        };
        let list = match media.kind() {
            MediaKind::Audio => &mut codecs.audio,
            MediaKind::Video => &mut codecs.video,
        };
        for pt in media.remote_pts() {
            if let Some(params) = config.params().iter().find(|p| p.pt() == *pt)
                && !list.iter().any(|p| p.pt() == *pt)
            {
                list.push(*params);
            }
        }
    }
    codecs
}

/// The SDP answer of a new ingest session's `rtc` to a publisher's `offer`. str0m's SDP code
/// runs behind `catch_unwind`: an offer that made it panic must not take the engine task (and
/// every other session) down with it.
/// `offer` parsed (a panic of the parser is a bad SDP too).
pub(crate) fn parse_offer(offer: &str) -> Result<SdpOffer, SfuError> {
    catch_unwind(|| SdpOffer::from_sdp_string(offer))
        .map_err(|_| SfuError::BadSdp("the SDP library panicked".into()))?
        .map_err(|e| SfuError::BadSdp(e.to_string()))
}

pub(crate) fn answer_offer(rtc: &mut Rtc, offer: &str) -> Result<String, SfuError> {
    let answered = catch_unwind(AssertUnwindSafe(|| {
        let offer = parse_offer(offer)?;
        rtc.sdp_api()
            .accept_offer(offer)
            .map(|answer| answer.to_sdp_string())
            .map_err(|e| SfuError::BadSdp(e.to_string()))
    }));
    answered.unwrap_or_else(|_| Err(SfuError::BadSdp("the SDP library panicked".into())))
}

/// The msid stream id of a viewer's tracks: the participant and stream names, reduced to
/// characters an SDP token may hold (and bounded), so tests and logs can tell streams apart.
pub(crate) fn msid_stream_id(stream: &StreamKey) -> String {
    let name = format!("{}-{}", stream.participant, stream.stream);
    let token: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if token.is_empty() {
        "stream".to_owned()
    } else {
        token
    }
}

/// `sdp` with every track in the msid stream `stream_id` (`a=msid:` and `a=ssrc:N msid:`
/// lines). str0m gives each m-line it answers a random stream of its own, and a browser then
/// puts audio and video in two MediaStreams: players that show `streams[0]` of each track
/// lose one of them.
pub(crate) fn one_msid_stream(sdp: &str, stream_id: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let (prefix, rest) = match line.find("msid:") {
            Some(at) if line.starts_with("a=msid:") || line.starts_with("a=ssrc:") => {
                line.split_at(at + "msid:".len())
            }
            _ => {
                out.push_str(line);
                continue;
            }
        };
        match rest.split_once(' ') {
            Some((_, track)) => {
                out.push_str(prefix);
                out.push_str(stream_id);
                out.push(' ');
                out.push_str(track);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// An ingest's payload types (and their retransmission types) → m-line, where a payload type
/// belongs to one m-line only.
pub(crate) fn payload_type_mids(rtc: &Rtc, mids: &[Mid]) -> HashMap<Pt, Mid> {
    let mut map: HashMap<Pt, Option<Mid>> = HashMap::new();
    let config = rtc.codec_config();
    for mid in mids {
        let Some(media) = rtc.media(*mid) else {
            continue;
        };
        for pt in media.remote_pts() {
            let resend = config
                .params()
                .iter()
                .find(|p| p.pt() == *pt)
                .and_then(|p| p.resend());
            for pt in std::iter::once(*pt).chain(resend) {
                map.entry(pt)
                    .and_modify(|m| {
                        if *m != Some(*mid) {
                            *m = None;
                        }
                    })
                    .or_insert(Some(*mid));
            }
        }
    }
    map.into_iter()
        .filter_map(|(pt, mid)| Some((pt, mid?)))
        .collect()
}

/// The `a=mid:` values of an SDP.
pub(crate) fn offered_mids(sdp: &str) -> Vec<Mid> {
    sdp.lines()
        .filter_map(|line| line.trim_end().strip_prefix("a=mid:"))
        .map(Mid::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;
    use str0m::RtcConfig;

    /// An offer as webrtcbin (GStreamer 1.22) makes it: VP8 without `a=ssrc`, Opus bundled.
    const WEBRTCBIN_OFFER: &str = "v=0\r
o=- 8961080853241700331 0 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=ice-options:trickle\r
a=group:BUNDLE video0 audio1\r
m=video 9 UDP/TLS/RTP/SAVPF 96\r
c=IN IP4 0.0.0.0\r
a=setup:actpass\r
a=ice-ufrag:TnnmOQT+MRGMOvWjj3l7fJ1/PepkxtC3\r
a=ice-pwd:dQ6FDL/7TBMyxLG3O5MpBDOCSATlV9f7\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=sendonly\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack pli\r
a=rtcp-fb:96 ccm fir\r
a=rtcp-fb:96 transport-cc\r
a=mid:video0\r
a=fingerprint:sha-256 4F:B2:F1:9A:70:B7:16:62:9C:12:2D:46:F0:AA:96:4A:51:96:89:73:C5:82:BC:8B:0A:E3:88:AD:F4:AC:03:B1\r
a=rtcp-mux-only\r
m=audio 0 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=setup:actpass\r
a=ice-ufrag:TnnmOQT+MRGMOvWjj3l7fJ1/PepkxtC3\r
a=ice-pwd:dQ6FDL/7TBMyxLG3O5MpBDOCSATlV9f7\r
a=bundle-only\r
a=rtcp-mux\r
a=rtcp-rsize\r
a=sendonly\r
a=rtpmap:111 OPUS/48000/2\r
a=rtcp-fb:111 transport-cc\r
a=fmtp:111 sprop-stereo=0;sprop-maxcapturerate=48000\r
a=ssrc:2708481156 msid:user932020743@host-4ffe569 webrtctransceiver1\r
a=ssrc:2708481156 cname:user932020743@host-4ffe569\r
a=mid:audio1\r
a=fingerprint:sha-256 4F:B2:F1:9A:70:B7:16:62:9C:12:2D:46:F0:AA:96:4A:51:96:89:73:C5:82:BC:8B:0A:E3:88:AD:F4:AC:03:B1\r
a=rtcp-mux-only\r
";

    fn ingest_rtc() -> Rtc {
        let mut config = RtcConfig::new().set_ice_lite(true);
        *config.codec_config() = ingest_codecs();
        config.build(Instant::now())
    }

    #[test]
    fn a_webrtcbin_offer_is_answered_with_its_codecs_and_payload_types_mapped() {
        let mut rtc = ingest_rtc();
        let answer = answer_offer(&mut rtc, WEBRTCBIN_OFFER).unwrap();
        assert!(
            answer.contains("a=ice-lite") && answer.contains("VP8/90000"),
            "{answer}"
        );
        let mids = offered_mids(WEBRTCBIN_OFFER);
        let codecs = negotiated_codecs(&rtc, &mids);
        assert_eq!(codecs.video.len(), 1);
        assert_eq!(codecs.video[0].spec().codec, Codec::Vp8);
        assert_eq!(codecs.audio[0].spec().codec, Codec::Opus);
        let pts = payload_type_mids(&rtc, &mids);
        assert_eq!(pts.get(&Pt::from(96)), Some(&Mid::from("video0")));
        assert_eq!(pts.get(&Pt::from(111)), Some(&Mid::from("audio1")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Offers with lines dropped, cut short or replaced by noise are answered or refused,
        /// never a panic (which would end every session of the engine).
        #[test]
        fn mangled_offers_are_answered_or_refused(
            drop_line in 0usize..40,
            cut in 0usize..2000,
            noise_line in 0usize..40,
            noise in "[ -~]{0,40}",
        ) {
            let mut lines: Vec<String> = WEBRTCBIN_OFFER.lines().map(str::to_owned).collect();
            if drop_line < lines.len() {
                lines.remove(drop_line);
            }
            if noise_line < lines.len() {
                lines[noise_line] = noise;
            }
            let mut offer = lines.join("\n");
            offer.truncate(cut.max(1).min(offer.len()));
            while !offer.is_char_boundary(offer.len()) {
                offer.pop();
            }
            let mut rtc = ingest_rtc();
            let _ = answer_offer(&mut rtc, &offer);
        }
    }

    #[test]
    fn msid_stream_ids_are_sdp_tokens() {
        let key = |participant: &str, stream: &str| StreamKey {
            room: "r".into(),
            participant: participant.into(),
            stream: stream.into(),
        };
        assert_eq!(msid_stream_id(&key("alice", "camera")), "alice-camera");
        assert_eq!(
            msid_stream_id(&key("al ice:😀", "cam\r\na=x")),
            "alice-camax"
        );
        assert_eq!(msid_stream_id(&key(&"x".repeat(100), "y")).len(), 64);
    }

    #[test]
    fn the_mids_of_an_sdp() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        assert_eq!(offered_mids(sdp), [Mid::from("video0"), Mid::from("1")]);
    }
}

#[cfg(test)]
mod msid_tests {
    #[test]
    fn every_track_joins_one_stream() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:aaa t1\r\na=ssrc:5 msid:aaa t1\r\na=ssrc:5 cname:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:bbb t2\r\n";
        assert_eq!(
            super::one_msid_stream(sdp, "ann-main"),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:ann-main t1\r\na=ssrc:5 msid:ann-main t1\r\na=ssrc:5 cname:x\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:ann-main t2\r\n"
        );
    }
}
