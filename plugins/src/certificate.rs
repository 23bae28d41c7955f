//! One DTLS certificate per element (roomsink, roomsrc): ECDSA P-256, made once when the
//! element is created and presented by every session of it.
//!
//! Without it each session's webrtcbin uses GStreamer's generated RSA certificate, and peers
//! that offer only ECDHE-ECDSA cipher suites (aiortc) fail the handshake with "no shared
//! cipher" while GStreamer is the DTLS server; a server that carries media (`--media sfu`, its
//! DTLS stack signs with ECDSA only) asks the viewer for an ECDSA certificate and refuses the
//! handshake without one ("no client certificate received"). ECDSA also makes each handshake
//! cheaper.
//!
//! webrtcsink builds each session in a pipeline of its own (`consumer-pipeline-created`);
//! webrtcsrc hands out each session's webrtcbin (`webrtcbin-ready`). The certificate goes to
//! the webrtcbin's `dtlssrtpdec` as its `pem` (certificate then key) when the transport is
//! added, before any description is made, and the `a=fingerprint` of the descriptions is
//! corrected on their way out (see [`correct_fingerprints`], [`with_fingerprint_text`]).

use gst::glib;
use gst::prelude::*;

/// A certificate with its key, PEM-encoded one after the other, and its fingerprint.
pub struct DtlsCertificate {
    pub pem: String,
    /// SHA-256 of the certificate as SDP's `a=fingerprint:sha-256` writes it (`AB:CD:...`).
    pub fingerprint: String,
}

/// A new self-signed ECDSA P-256 certificate.
pub fn generate() -> Result<DtlsCertificate, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = rcgen::CertificateParams::new(vec!["gst-room".to_string()])?;
    let cert = params.self_signed(&key)?;
    Ok(DtlsCertificate {
        pem: format!("{}{}", cert.pem(), key.serialize_pem()),
        fingerprint: fingerprint(cert.der()),
    })
}

fn fingerprint(der: &[u8]) -> String {
    let digest = glib::compute_checksum_for_data(glib::ChecksumType::Sha256, der)
        .expect("SHA-256 is available");
    digest
        .as_bytes()
        .chunks(2)
        .map(|hex| std::str::from_utf8(hex).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// Makes every session `webrtcsink` starts present `certificate`.
pub fn use_for_sessions(webrtcsink: &gst::Element, certificate: &DtlsCertificate) {
    correct_fingerprints(webrtcsink, certificate.fingerprint.clone());
    let pem = certificate.pem.clone();
    webrtcsink.connect("consumer-pipeline-created", false, move |args| {
        let pipeline = args[2].get::<gst::Pipeline>().expect("signal signature");
        // webrtcbin may get its transports before it is added to the session pipeline, and
        // the DTLS elements are inside their transport bin when that bin is added: look inside
        // whatever is added, directly (element-added) or deeper (deep-element-added).
        let pem_ = pem.clone();
        pipeline.connect_element_added(move |_, element| set_pem_within(element, &pem_));
        let pem_ = pem.clone();
        pipeline.connect_deep_element_added(move |_, _, element| set_pem_within(element, &pem_));
        None
    });
}

/// Makes the webrtcbin of a viewer's session (webrtcsrc's `webrtcbin-ready`) present
/// `certificate`; the session's signaller corrects its answer's fingerprint
/// ([`with_fingerprint_text`]).
pub fn use_for_webrtcbin(webrtcbin: &gst::Element, certificate: &DtlsCertificate) {
    set_pem_within(webrtcbin, &certificate.pem);
    let Some(bin) = webrtcbin.downcast_ref::<gst::Bin>() else {
        return;
    };
    let pem = certificate.pem.clone();
    bin.connect_element_added(move |_, element| set_pem_within(element, &pem));
    let pem = certificate.pem.clone();
    bin.connect_deep_element_added(move |_, _, element| set_pem_within(element, &pem));
}

fn set_pem_within(element: &gst::Element, pem: &str) {
    set_pem(element, pem);
    if let Some(bin) = element.downcast_ref::<gst::Bin>() {
        for child in bin.iterate_recurse().into_iter().flatten() {
            set_pem(&child, pem);
        }
    }
}

fn set_pem(element: &gst::Element, pem: &str) {
    let is_dtls_decoder = element.factory().is_some_and(|f| f.name() == "dtlssrtpdec");
    if !is_dtls_decoder {
        return;
    }
    // Only while the decoder is still in NULL, before its transport starts. Setting `pem`
    // makes dtlsdec look up (the first time for a certificate: make, ~3 ms) its DTLS agent and
    // then replace its connection; its handlers for the peer's certificate and the SRTP keys
    // are connected to its connection on the way to READY. The session pipeline is running,
    // so another thread may bring the decoder to READY during the set: the handlers then went
    // to the old connection, the new one had none, and OpenSSL refused the viewer's
    // certificate ("certificate verify failed"; "Fatal SSL error" at the viewer). Holding the
    // decoder's state lock, which every state change of it (and of its children through it)
    // holds, keeps the set and the state change apart. The set calls nothing of ours.
    // (UPSTREAM.md: "DTLS certificate set under the decoder's state lock".)
    with_state_lock(element, || {
        if element.current_state() == gst::State::Null
            && element.pending_state() == gst::State::VoidPending
            && element.property::<Option<String>>("pem").as_deref() != Some(pem)
        {
            element.set_property("pem", pem);
        }
    });
}

/// Runs `f` holding `element`'s state lock (`GST_STATE_LOCK`, recursive), which
/// `gst_element_set_state` holds for the whole state change; gstreamer-rs has no safe binding.
fn with_state_lock<R>(element: &gst::Element, f: impl FnOnce() -> R) -> R {
    struct Unlock(*mut glib::ffi::GRecMutex);
    impl Drop for Unlock {
        fn drop(&mut self) {
            // SAFETY: locked below by this thread; the element outlives the guard.
            unsafe { glib::ffi::g_rec_mutex_unlock(self.0) }
        }
    }
    // SAFETY: `element` is a valid GstElement for the whole call; its state_lock is an
    // initialised GRecMutex for the element's lifetime.
    let _unlock = unsafe {
        let lock = std::ptr::addr_of_mut!((*element.as_ptr()).state_lock);
        glib::ffi::g_rec_mutex_lock(lock);
        Unlock(lock)
    };
    f()
}

/// webrtcbin (GStreamer 1.22) writes as `a=fingerprint` a digest of everything base64 in the
/// `pem` it was given, here the key as well as the certificate: replace it with the
/// certificate's real fingerprint in every description webrtcsink's signaller sends (its
/// `munge-session-description` signal), or peers that check it (browsers, aiortc) refuse.
fn correct_fingerprints(webrtcsink: &gst::Element, fingerprint: String) {
    webrtcsink.connect_notify(Some("signaller"), move |webrtcsink, _| {
        let signaller = webrtcsink.property::<glib::Object>("signaller");
        let fingerprint = fingerprint.clone();
        signaller.connect("munge-session-description", false, move |args| {
            let desc = args[2]
                .get::<gst_webrtc::WebRTCSessionDescription>()
                .expect("signal signature");
            Some(
                with_fingerprint(&desc, &fingerprint)
                    .unwrap_or(desc)
                    .to_value(),
            )
        });
    });
}

fn with_fingerprint(
    desc: &gst_webrtc::WebRTCSessionDescription,
    fingerprint: &str,
) -> Option<gst_webrtc::WebRTCSessionDescription> {
    let text = desc.sdp().as_text().ok()?;
    let munged = with_fingerprint_text(&text, fingerprint);
    let sdp = gst_sdp::SDPMessage::parse_buffer(munged.as_bytes()).ok()?;
    Some(gst_webrtc::WebRTCSessionDescription::new(desc.type_(), sdp))
}

/// `sdp` with every `a=fingerprint` line giving `fingerprint` (SHA-256), the certificate's real
/// one (see [`correct_fingerprints`] for why).
pub fn with_fingerprint_text(sdp: &str, fingerprint: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            if line.starts_with("a=fingerprint:") {
                format!("a=fingerprint:sha-256 {fingerprint}\r\n")
            } else {
                line.to_string()
            }
        })
        .collect()
}
