//! GStreamer's webrtcbin (what webrtcsink and webrtcsrc wrap) against the SFU on loopback:
//! a webrtcbin publisher (VP8 with a very long keyframe interval, Opus) and a webrtcbin viewer
//! that joins later and decodes, which needs the SFU to get it a keyframe from the publisher.
//!
//! str0m's DTLS has no RSA and webrtcbin presents a generated RSA certificate by default, so
//! both webrtcbins get an ECDSA P-256 one (as roomsink does for its sessions): `pem` on their
//! `dtlssrtpdec` while it is in NULL, and the real fingerprint in the descriptions they send
//! (webrtcbin 1.22 digests the key with the certificate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use room_sfu::{Sfu, SfuConfig, StreamKey};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

/// An ECDSA P-256 certificate and key (PEM, one after the other) and the certificate's SHA-256
/// fingerprint as `a=fingerprint:sha-256` writes it.
fn ecdsa_certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["gst-room-test".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let digest =
        gst::glib::compute_checksum_for_data(gst::glib::ChecksumType::Sha256, cert.der()).unwrap();
    let fingerprint = digest
        .as_bytes()
        .chunks(2)
        .map(|hex| std::str::from_utf8(hex).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    (
        format!("{}{}", cert.pem(), key.serialize_pem()),
        fingerprint,
    )
}

/// Gives every DTLS decoder in `bin`, now or added later, the certificate `pem` (while in NULL).
fn use_certificate(bin: &gst::Bin, pem: &str) {
    let set = |element: &gst::Element, pem: &str| {
        if element.factory().is_some_and(|f| f.name() == "dtlssrtpdec")
            && element.current_state() == gst::State::Null
        {
            element.set_property("pem", pem);
        }
    };
    for element in bin.iterate_recurse().into_iter().flatten() {
        set(&element, pem);
    }
    let pem = pem.to_owned();
    bin.connect_deep_element_added(move |_, _, element| set(element, &pem));
}

/// `sdp` with its `a=fingerprint` lines naming `fingerprint`.
fn with_fingerprint(sdp: &str, fingerprint: &str) -> String {
    sdp.lines()
        .map(|line| {
            if line.starts_with("a=fingerprint:") {
                format!("a=fingerprint:sha-256 {fingerprint}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

fn key() -> StreamKey {
    StreamKey {
        room: "room".into(),
        participant: "alice".into(),
        stream: "camera".into(),
    }
}

/// Runs `signal` (create-offer / create-answer) and returns the SDP text of the reply.
fn create_description(webrtcbin: &gst::Element, signal: &str, field: &str) -> String {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]);
    assert_eq!(promise.wait(), gst::PromiseResult::Replied, "{signal}");
    let reply = promise.get_reply().expect("a reply");
    let description = reply
        .get::<gst_webrtc::WebRTCSessionDescription>(field)
        .unwrap_or_else(|e| panic!("{signal}: {e:?} in {reply}"));
    set_description(webrtcbin, "set-local-description", &description);
    description.sdp().as_text().unwrap()
}

fn set_description(
    webrtcbin: &gst::Element,
    signal: &str,
    description: &gst_webrtc::WebRTCSessionDescription,
) {
    let promise = gst::Promise::new();
    webrtcbin.emit_by_name::<()>(signal, &[description, &promise]);
    promise.wait();
}

fn remote(sdp_type: gst_webrtc::WebRTCSDPType, text: &str) -> gst_webrtc::WebRTCSessionDescription {
    let sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("SDP from the SFU");
    gst_webrtc::WebRTCSessionDescription::new(sdp_type, sdp)
}

fn check_bus(pipeline: &gst::Pipeline) {
    let bus = pipeline.bus().unwrap();
    while let Some(message) = bus.pop() {
        if let gst::MessageView::Error(error) = message.view() {
            panic!("{}: {:?}", error.error(), error.debug());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtcbin_publisher_and_viewer_through_the_sfu() {
    gst::init().unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cancel = CancellationToken::new();
    // libnice gathers no loopback candidates: bound to every address, the SFU advertises the
    // machine's addresses too.
    let config = SfuConfig::new("0.0.0.0:0".parse::<SocketAddr>().unwrap());
    let (sfu, mut events, _task) = Sfu::start(config, cancel.clone()).await.unwrap();

    // The publisher: a keyframe only at the start and when asked for one.
    let publisher = gst::parse::launch(
        "webrtcbin name=pub bundle-policy=max-bundle \
         videotestsrc is-live=true pattern=red ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! vp8enc deadline=1 keyframe-max-dist=100000 ! rtpvp8pay pt=96 \
         ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! pub. \
         audiotestsrc is-live=true ! opusenc ! rtpopuspay pt=111 \
         ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! pub.",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let pub_bin = publisher.by_name("pub").unwrap();
    let (pem, fingerprint) = ecdsa_certificate();
    use_certificate(publisher.upcast_ref(), &pem);
    publisher.set_state(gst::State::Playing).unwrap();
    for index in 0..2u32 {
        let transceiver = pub_bin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>(
                "get-transceiver",
                &[&(index as i32)],
            )
            .expect("a transceiver per stream");
        transceiver.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
        );
    }
    let offer =
        tokio::task::block_in_place(|| create_description(&pub_bin, "create-offer", "offer"));
    let answer = sfu
        .publish("ingest", key(), &with_fingerprint(&offer, &fingerprint))
        .await
        .expect("publish");
    tokio::task::block_in_place(|| {
        set_description(
            &pub_bin,
            "set-remote-description",
            &remote(gst_webrtc::WebRTCSDPType::Answer, &answer),
        )
    });

    // Let the publisher's first keyframe go by before the viewer exists.
    let deadline = Instant::now() + PATIENCE;
    while sfu.stats().connected_sessions < 1 {
        assert!(
            Instant::now() < deadline,
            "publisher not connected: {:?}",
            sfu.stats()
        );
        check_bus(&publisher);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The viewer: decodes VP8, counts frames.
    let viewer = gst::Pipeline::new();
    use_certificate(viewer.upcast_ref(), &pem);
    let sub_bin = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .build()
        .unwrap();
    viewer.add(&sub_bin).unwrap();
    let decoded = Arc::new(AtomicU64::new(0));
    let audio_buffers = Arc::new(AtomicU64::new(0));
    let (weak, counter, audio) = (viewer.downgrade(), decoded.clone(), audio_buffers.clone());
    sub_bin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap();
        let media = caps.structure(0).unwrap().get::<String>("media").unwrap();
        let description = if media == "video" {
            "rtpvp8depay ! vp8dec ! fakesink name=video-sink sync=false"
        } else {
            "fakesink sync=false"
        };
        let branch = gst::parse::bin_from_description(description, true).unwrap();
        pipeline.add(&branch).unwrap();
        branch.sync_state_with_parent().unwrap();
        let sink_pad = branch.static_pad("sink").unwrap();
        let count = if media == "video" {
            counter.clone()
        } else {
            audio.clone()
        };
        let probe_pad = if media == "video" {
            branch
                .by_name("video-sink")
                .unwrap()
                .static_pad("sink")
                .unwrap()
        } else {
            sink_pad.clone()
        };
        probe_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            count.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        pad.link(&sink_pad).unwrap();
    });
    viewer.set_state(gst::State::Playing).unwrap();
    let offer = sfu
        .subscribe("viewer", key(), true, true)
        .await
        .expect("subscribe");
    let answer = tokio::task::block_in_place(|| {
        set_description(
            &sub_bin,
            "set-remote-description",
            &remote(gst_webrtc::WebRTCSDPType::Offer, &offer),
        );
        create_description(&sub_bin, "create-answer", "answer")
    });
    sfu.answer("viewer", &with_fingerprint(&answer, &fingerprint))
        .await
        .expect("answer");

    let deadline = Instant::now() + PATIENCE;
    while decoded.load(Ordering::Relaxed) < 30 || audio_buffers.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "viewer decoded {} video frames, {} audio buffers; {:?}",
            decoded.load(Ordering::Relaxed),
            audio_buffers.load(Ordering::Relaxed),
            sfu.stats()
        );
        check_bus(&publisher);
        check_bus(&viewer);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = sfu.stats();
    println!(
        "webrtcbin viewer decoded {} frames; {stats:?}",
        decoded.load(Ordering::Relaxed)
    );
    assert!(stats.keyframe_requests_sent >= 1, "{stats:?}");
    assert_eq!(stats.dropped_frames.codec_mismatch, 0, "{stats:?}");

    // libnice sends no binding requests once connected; str0m's ICE-lite agent gives a pair up
    // after 15 s without one. Media must still flow well past that.
    let before = decoded.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(25)).await;
    check_bus(&publisher);
    check_bus(&viewer);
    let after = decoded.load(Ordering::Relaxed);
    println!(
        "decoded {} more frames in the following 25 s",
        after - before
    );
    assert!(
        after > before + 100,
        "media stopped after {before} frames (now {after})"
    );
    while let Ok(event) = events.try_recv() {
        assert!(
            matches!(event, room_sfu::SfuEvent::Connected { .. }),
            "{event:?}"
        );
    }
    assert_eq!(sfu.stats().connected_sessions, 2);
    viewer.set_state(gst::State::Null).unwrap();
    publisher.set_state(gst::State::Null).unwrap();
    cancel.cancel();
}
