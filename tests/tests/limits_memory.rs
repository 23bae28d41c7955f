//! Unfinished WebSocket messages cannot make the server's memory grow: each one is dropped
//! within the message timeout and its memory is reused. A test binary of its own, because it
//! reads this process's resident memory (the in-process server's), which other tests running
//! alongside would disturb.

use std::time::Duration;

use async_tungstenite::tokio::connect_async;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use futures::StreamExt;
use gst_room_tests::{TestServer, WAIT};
use room_signaling::Config;

const CONNECTIONS: usize = 40;
const MESSAGE_START: usize = 900 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
const ROUNDS: usize = 5;

/// Resident memory of this process, in bytes.
fn rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024.0
}

/// CONNECTIONS clients each send the first 900 KiB of a message and never the rest, then read
/// (answering pings) until the server closes them. Returns the memory held while they were open.
async fn one_round(url: &str) -> f64 {
    let before = rss();
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS {
        let (mut ws, _) = connect_async(url).await.unwrap();
        let start = Frame::message(vec![b' '; MESSAGE_START], OpCode::Data(Data::Text), false);
        ws.send(Message::Frame(start)).await.unwrap();
        open.push(ws);
    }
    // Let the server read everything (a welcome comes first, then nothing until the close).
    for ws in &mut open {
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
                Some(Ok(Message::Text(_))) => break,
                Some(Ok(Message::Ping(_))) => continue,
                other => panic!("expected the welcome, got {other:?}"),
            }
        }
    }
    let held = rss() - before;
    // Read all of them at once, so every ping is answered: only the message timeout ends them.
    // Each ends with the server's close frame and then the end of the stream: the server drops
    // the socket, and the buffers with it, when its connection task ends.
    let ends = futures::future::join_all(open.iter_mut().map(|ws| async move {
        let mut close = None;
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => close = frame,
                Ok(Some(Ok(_))) => continue,
                // A pong written just after the server's close can make the close a reset.
                Ok(Some(Err(_)) | None) => return close,
                Err(_) => {
                    panic!("a connection with an unfinished message still open after {WAIT:?}")
                }
            }
        }
    }))
    .await;
    for close in ends.into_iter().flatten() {
        // The message timeout (1008) ends these connections, before the join deadline (10 s).
        assert_eq!(close.code, CloseCode::Policy);
        assert!(close.reason.contains("message"), "{}", close.reason);
    }
    held
}

#[tokio::test]
async fn unfinished_messages_are_dropped_and_memory_does_not_grow() {
    let server = TestServer::start(Config {
        message_timeout: Duration::from_secs(1),
        max_connections_per_ip: CONNECTIONS + 10,
        ..Config::default()
    });
    let url = server.ws_url();
    let mut after = Vec::new();
    let mut held = Vec::new();
    for _ in 0..ROUNDS {
        held.push(one_round(&url).await);
        after.push(rss());
    }
    println!(
        "held while open: {:?} MiB; resident after each round: {:?} MiB",
        held.iter().map(|b| (b / MIB).round()).collect::<Vec<_>>(),
        after.iter().map(|b| (b / MIB).round()).collect::<Vec<_>>()
    );
    // The attack did pin memory while the connections were open (else this test proves nothing)...
    assert!(
        held[0] > 0.5 * (CONNECTIONS * MESSAGE_START) as f64,
        "{held:?}"
    );
    // ...and rounds after the first reuse it instead of adding to it: had the server kept the
    // unfinished messages, each round would add what one round pins (36 MiB), 144 MiB in all.
    // Allowing two rounds' worth leaves room for the allocator's own moves (about ±20 MiB
    // between rounds here).
    let growth = after[ROUNDS - 1] - after[0];
    assert!(
        growth < 2.0 * (CONNECTIONS * MESSAGE_START) as f64,
        "resident memory grew by {:.0} MiB over {} rounds",
        growth / MIB,
        ROUNDS - 1
    );
}
