//! roomsink and roomsrc over `wss://`: a TLS server in this process with a self-signed
//! certificate, elements that trust it through `tls-ca-file`, and elements that must refuse a
//! certificate they do not trust — at once, with the reason, never over plain ws.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_room_tests::media::*;
use gst_room_tests::{TestServer, self_signed_certificate};

const GREEN: Rgb = [20, 200, 40];
const TOLERANCE: u8 = 40;
/// A TLS failure is final, not retried like a network error: well within this.
const TLS_FAILURE_WAIT: Duration = Duration::from_secs(10);

fn tls_server(tag: &str) -> (TestServer, room_signaling::tls::TlsFiles) {
    let files = self_signed_certificate(tag);
    let server = TestServer::start(room_signaling::Config {
        tls: Some(files.clone()),
        ..Default::default()
    });
    (server, files)
}

#[test]
fn elements_trusting_the_self_signed_certificate_confer_over_wss() {
    init();
    let (server, files) = tls_server("confer");
    let url = server.wss_url();
    let ca = format!("tls-ca-file={}", files.cert.display());
    let publisher = start(&publisher_line(&url, "secure", "bot", GREEN, &ca));
    let viewer = Viewer::new(
        &url,
        &format!("room=secure username=viewer participant=bot {ca}"),
    )
    .start();
    viewer.wait("green frames over wss", |s| {
        s.frames.get("video_bot").copied().unwrap_or(0) >= 10
            && s.colour
                .get("video_bot")
                .is_some_and(|c| close_to(*c, GREEN, TOLERANCE))
    });
    assert_eq!(
        viewer.roomsrc.property::<Option<String>>("tls-ca-file"),
        Some(files.cert.display().to_string())
    );
    stop(&publisher);
}

/// Starts a viewer of `url` with `extra` roomsrc properties and returns its error text and how
/// long it took to come.
fn refused(url: &str, extra: &str) -> (String, Duration) {
    let viewer = gst::parse::launch(&format!(
        "roomsrc server-url={url} room=secure username=intruder {extra} ! fakesink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let started = Instant::now();
    // The state change may fail at once or the error may follow: either way the bus has it.
    let _ = viewer.set_state(gst::State::Playing);
    let bus = viewer.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(MEDIA_WAIT.as_secs()),
            &[gst::MessageType::Error],
        )
        .expect("an error, not a hang");
    let took = started.elapsed();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    viewer.set_state(gst::State::Null).unwrap();
    (err.error().to_string(), took)
}

#[test]
fn an_untrusted_certificate_fails_at_once_with_the_tls_reason() {
    init();
    let (server, _) = tls_server("untrusted");
    let url = server.wss_url();
    let host = "127.0.0.1";

    // The system's roots alone do not know a self-signed certificate.
    let (error, took) = refused(&url, "");
    assert!(
        error.starts_with(&format!("tls: certificate not trusted for {host}")),
        "{error}"
    );
    assert!(took < TLS_FAILURE_WAIT, "took {took:?}");

    // Another certificate (another key) as tls-ca-file does not make this one trusted.
    let other = self_signed_certificate("untrusted-other");
    let (error, took) = refused(&url, &format!("tls-ca-file={}", other.cert.display()));
    assert!(
        error.starts_with(&format!("tls: certificate not trusted for {host}")),
        "{error}"
    );
    assert!(took < TLS_FAILURE_WAIT, "took {took:?}");
}

#[test]
fn a_certificate_for_another_name_fails_with_the_tls_reason() {
    init();
    // Trusted (it is the tls-ca-file), but issued for localhost only: 127.0.0.1 is not covered.
    let dir = std::env::temp_dir().join(format!("gst-room-test-tls-{}-name", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (files, _) = room_signaling::tls::self_signed(&dir, &["localhost".to_owned()]).unwrap();
    let server = TestServer::start(room_signaling::Config {
        tls: Some(files.clone()),
        ..Default::default()
    });
    let (error, took) = refused(
        &server.wss_url(),
        &format!("tls-ca-file={}", files.cert.display()),
    );
    assert!(
        error.starts_with(
            "tls: certificate not trusted for 127.0.0.1 (it is not valid for that name)"
        ),
        "{error}"
    );
    assert!(took < TLS_FAILURE_WAIT, "took {took:?}");
}

#[test]
fn a_missing_tls_ca_file_fails_the_state_change_naming_the_file() {
    init();
    let (server, _) = tls_server("missing");
    let (error, took) = refused(&server.wss_url(), "tls-ca-file=/nonexistent/ca.pem");
    assert!(error.contains("tls-ca-file /nonexistent/ca.pem"), "{error}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_plain_ws_client_gets_no_room_from_a_tls_server() {
    init();
    let (server, files) = tls_server("plain");
    // Same port, ws:// instead of wss://: no silent downgrade — the server only speaks TLS.
    let (error, _) = refused(
        &server.ws_url(),
        &format!("tls-ca-file={}", files.cert.display()),
    );
    assert!(error.starts_with("unreachable:"), "{error}");
}
