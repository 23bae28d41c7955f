//! The web page mirrors the protocol in JavaScript; its test parses
//! `tests/browser/protocol-examples.json`. This test keeps that file equal to
//! `room_protocol::examples()`, so the page is always checked against the Rust definition.
//! Regenerate with `UPDATE_FIXTURES=1 cargo test -p gst-room-tests --test protocol_fixture`.

use std::path::PathBuf;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/protocol-examples.json")
}

#[test]
fn browser_fixture_equals_the_rust_examples() {
    let (client, server) = room_protocol::examples();
    let (request, refusal) = room_protocol::id_examples();
    let expected = serde_json::json!({
        "client": client,
        "server": server,
        "with_id": { "client": request, "server": refusal },
    });
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(
            fixture_path(),
            serde_json::to_string_pretty(&expected).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(fixture_path()).expect("the fixture exists");
    let actual: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        actual, expected,
        "run with UPDATE_FIXTURES=1 to regenerate, then check the page's protocol.js"
    );
}

#[test]
fn the_server_accepts_what_the_fixture_says_clients_send() {
    let text = std::fs::read_to_string(fixture_path()).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    for msg in fixture["client"].as_array().unwrap() {
        serde_json::from_value::<room_protocol::ClientMessage>(msg.clone())
            .unwrap_or_else(|e| panic!("{msg}: {e}"));
    }
    let request = &fixture["with_id"]["client"];
    let parsed: room_protocol::WithId<room_protocol::ClientMessage> =
        serde_json::from_value(request.clone()).unwrap_or_else(|e| panic!("{request}: {e}"));
    assert!(parsed.id.is_some(), "the fixture's request has an id");
}
