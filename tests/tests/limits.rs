//! The server's limits, each against a real server over real sockets: per-address and unjoined
//! connection caps, the join deadline, HTTP header timeouts and bounded shutdown, WebSocket
//! size limits on fragments and the unfinished-message timeout, rate limits (a flood limits
//! only the flooder), one session per viewer and stream, streams per participant, and short
//! error echoes. Limits are set low and timeouts short in each test's configuration so the
//! tests are quick; the defaults are in README's Limits table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{TokioAdapter, client_async};
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures::StreamExt;
use gst_room_tests::{TestServer, WAIT, http_get};
use room_protocol::*;
use room_signaling::{Config, RateLimit, RateLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// A TCP connection to `server` from the local address `ip` (127.0.0.2 etc. are routable on
/// Linux loopback: a second client address without a network namespace).
async fn tcp_from(server: SocketAddr, ip: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.expect("TCP connect")
}

/// A WebSocket from `ip`, welcome consumed; `Err` when the server refuses the handshake.
async fn connect_from(server: &TestServer, ip: &str) -> Result<Ws, WsError> {
    let tcp = tcp_from(server.addr, ip).await;
    let (mut ws, _) = client_async(server.ws_url(), tcp).await?;
    let welcome = next(&mut ws).await;
    assert!(
        matches!(welcome, Some(ServerMessage::Welcome { .. })),
        "{welcome:?}"
    );
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: &ClientMessage) {
    ws.send(Message::text(serde_json::to_string(msg).unwrap()))
        .await
        .expect("send");
}

/// The next protocol message, or `None` when the connection closes; panics after [`WAIT`].
async fn next(ws: &mut Ws) -> Option<ServerMessage> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message or the close within WAIT");
        match frame {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads (answering pings) until the server has closed the connection and dropped the socket
/// (the end of the stream: by then the connection's slots are free); returns its close frame.
async fn close_frame(ws: &mut Ws) -> Option<CloseFrame> {
    let mut close = None;
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server closes within WAIT");
        match frame {
            Some(Ok(Message::Close(frame))) => close = frame,
            None | Some(Err(_)) => return close,
            Some(Ok(_)) => continue,
        }
    }
}

async fn join_from(server: &TestServer, ip: &str, room: &str, name: &str) -> Ws {
    let mut ws = connect_from(server, ip).await.expect("connect");
    send(
        &mut ws,
        &ClientMessage::Join {
            room: room.into(),
            username: name.into(),
            token: None,
        },
    )
    .await;
    let state = next(&mut ws).await;
    assert!(
        matches!(state, Some(ServerMessage::State { .. })),
        "{state:?}"
    );
    ws
}

async fn join(server: &TestServer, room: &str, name: &str) -> Ws {
    join_from(server, "127.0.0.1", room, name).await
}

/// Waits until everything sent so far was applied (a `stop` of no session always gets an error).
async fn sync(ws: &mut Ws) -> Vec<ServerMessage> {
    send(
        ws,
        &ClientMessage::Stop {
            session: "barrier".into(),
        },
    )
    .await;
    let mut before = Vec::new();
    loop {
        match next(ws).await.expect("connection open") {
            ServerMessage::Error {
                code: ErrorCode::UnknownSession,
                message,
            } if message.contains("barrier") => return before,
            other => before.push(other),
        }
    }
}

fn publish(stream: &str) -> ClientMessage {
    ClientMessage::Publish {
        stream: stream.into(),
        audio: true,
        video: true,
    }
}

fn error_code(msg: &Option<ServerMessage>) -> Option<ErrorCode> {
    match msg {
        Some(ServerMessage::Error { code, .. }) => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_slot_and_another_address_still_gets_in() {
    let server = TestServer::start(Config {
        max_connections_per_ip: 3,
        ..Config::default()
    });
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(join(&server, "r", &format!("u{i}")).await);
    }
    // The 4th connection from 127.0.0.1 is answered 429 and closed at once. (A client that
    // has sent its request by then may see the close as a reset instead of the 429.)
    match connect_from(&server, "127.0.0.1").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 429),
        Err(WsError::Io(_)) => {}
        Err(other) => panic!("expected HTTP 429, got {other}"),
        Ok(_) => panic!("a 4th connection from one address was accepted"),
    }
    let mut tcp = tcp_from(server.addr, "127.0.0.1").await;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");

    // Someone else, from another address, joins the same room as usual.
    let mut other = join_from(&server, "127.0.0.2", "r2", "other").await;
    sync(&mut other).await;

    // A closed connection gives its slot back.
    held.pop().unwrap().close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while connect_from(&server, "127.0.0.1").await.is_err() {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_connection_that_does_not_join_in_time_is_closed_and_unjoined_ones_are_capped() {
    let server = TestServer::start(Config {
        join_timeout: Duration::from_secs(1),
        max_unjoined: 2,
        ..Config::default()
    });
    let mut idle = connect_from(&server, "127.0.0.1").await.unwrap();
    let mut idle2 = connect_from(&server, "127.0.0.2").await.unwrap();
    // A third connection that has not joined is refused, whatever its address.
    match connect_from(&server, "127.0.0.3").await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    let started = Instant::now();
    for ws in [&mut idle, &mut idle2] {
        let frame = close_frame(ws).await.expect("a close frame");
        assert_eq!(frame.code, CloseCode::Policy);
        assert!(frame.reason.contains("join"), "{}", frame.reason);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A client that joins in time stays (its slot among the unjoined is freed on joining).
    let mut joined = join_from(&server, "127.0.0.3", "r", "late").await;
    let mut second = join_from(&server, "127.0.0.3", "r", "later").await;
    let mut third = join_from(&server, "127.0.0.3", "r", "latest").await;
    // Well past the deadline, the joined connections are still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for ws in [&mut joined, &mut second, &mut third] {
        sync(ws).await;
    }
}

#[tokio::test]
async fn leaving_a_room_restarts_the_join_deadline_and_needs_an_unjoined_slot() {
    let server = TestServer::start(Config {
        join_timeout: Duration::from_secs(1),
        max_unjoined: 1,
        ..Config::default()
    });
    // Leaving starts the deadline again.
    let mut alice = join(&server, "r", "alice").await;
    send(&mut alice, &ClientMessage::Leave {}).await;
    let frame = close_frame(&mut alice).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("join"), "{}", frame.reason);
    // Leaving when every unjoined slot is taken closes the connection (1013, try again).
    let mut bob = join(&server, "r", "bob").await;
    let _waiting = connect_from(&server, "127.0.0.2").await.unwrap();
    send(&mut bob, &ClientMessage::Leave {}).await;
    assert_eq!(
        close_frame(&mut bob).await.map(|f| f.code),
        Some(CloseCode::Again)
    );
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let server = TestServer::start(Config {
        header_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    let addr = server.addr.to_string();
    let half_requests = [
        // Silent, a request cut short, an upgrade cut short, and an idle keep-alive connection.
        "",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    let mut open = Vec::new();
    for half in half_requests {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(half.as_bytes()).await.unwrap();
        open.push((half, tcp, Instant::now()));
    }
    // Meanwhile the server answers everyone else.
    assert_eq!(http_get(&addr, "/healthz").await, (200, "ok\n".into()));
    for (half, mut tcp, since) in open {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{half:?} still open after {WAIT:?}");
        assert!(
            since.elapsed() >= Duration::from_millis(900),
            "{half:?} closed before the timeout"
        );
    }
}

#[tokio::test]
async fn shutdown_completes_while_a_half_sent_request_is_held() {
    let mut server = TestServer::start(Config {
        // Far longer than the test: shutdown must not wait for it.
        header_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_millis(500),
        ..Config::default()
    });
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut participant = join(&server, "r", "alice").await;
    let started = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || server.stop());
    assert_eq!(
        close_frame(&mut participant).await.map(|f| f.code),
        Some(CloseCode::Away)
    );
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("run() returned although a request was half sent")
        .unwrap();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest).await;
    println!("shutdown took {:?}", started.elapsed());
}

/// A masked client data frame (tungstenite masks it when sending as a client).
fn fragment(opcode: Data, is_final: bool, payload: Vec<u8>) -> Message {
    Message::Frame(Frame::message(payload, OpCode::Data(opcode), is_final))
}

#[tokio::test]
async fn fragments_count_towards_the_message_limit_as_they_arrive() {
    let server = TestServer::default_config();
    let mut ws = join(&server, "r", "alice").await;
    // A fragmented message within 64 KiB is assembled and handled like any other.
    let text = serde_json::to_string(&ClientMessage::Message {
        to: None,
        text: "hello in pieces".into(),
    })
    .unwrap();
    let (a, b) = text.as_bytes().split_at(10);
    ws.send(fragment(Data::Text, false, a.to_vec()))
        .await
        .unwrap();
    ws.send(fragment(Data::Continue, true, b.to_vec()))
        .await
        .unwrap();
    assert!(
        matches!(next(&mut ws).await, Some(ServerMessage::Message { text, .. }) if text == "hello in pieces")
    );
    // Fragments of 600 KiB each: the second one takes the message past 1 MiB and the server
    // fails the connection with 1009 before the message is complete.
    let piece = vec![b' '; 600 * 1024];
    ws.send(fragment(Data::Text, false, piece.clone()))
        .await
        .unwrap();
    let _ = ws.send(fragment(Data::Continue, false, piece)).await;
    let frame = close_frame(&mut ws).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Size);
}

#[tokio::test]
async fn rfc6455_protocol_errors_close_the_connection() {
    let server = TestServer::default_config();
    // A continuation frame with no message to continue.
    let mut ws = join(&server, "r", "alice").await;
    ws.send(fragment(Data::Continue, true, b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        close_frame(&mut ws).await.map(|f| f.code),
        Some(CloseCode::Protocol)
    );
    // A text frame that is not UTF-8.
    let mut ws = join(&server, "r", "bob").await;
    ws.send(fragment(Data::Text, true, vec![0xff, 0xfe]))
        .await
        .unwrap();
    assert_eq!(
        close_frame(&mut ws).await.map(|f| f.code),
        Some(CloseCode::Invalid)
    );
    // A new data message in the middle of a fragmented one.
    let mut ws = join(&server, "r", "carol").await;
    ws.send(fragment(Data::Text, false, b"{".to_vec()))
        .await
        .unwrap();
    ws.send(fragment(Data::Text, true, b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        close_frame(&mut ws).await.map(|f| f.code),
        Some(CloseCode::Protocol)
    );
}

/// A WebSocket handshake by hand, so the test can then write frames no client library would.
async fn raw_websocket(server: &TestServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Reads server frames until a close frame; returns its code.
async fn raw_close_code(tcp: &mut TcpStream) -> u16 {
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut all))
        .await
        .expect("the server closes")
        .ok();
    let mut rest = &all[..];
    while rest.len() >= 2 {
        let (opcode, len) = (rest[0] & 0x0f, usize::from(rest[1] & 0x7f));
        assert!(len < 126, "small server frames only");
        if opcode == 0x8 {
            return u16::from_be_bytes([rest[2], rest[3]]);
        }
        rest = &rest[2 + len..];
    }
    panic!("no close frame in {all:?}");
}

#[tokio::test]
async fn unmasked_frames_and_reserved_bits_close_the_connection_with_1002() {
    let server = TestServer::default_config();
    let frames: [&[u8]; 2] = [
        // A text frame "{}" without the mask every client frame must carry.
        &[0x81, 0x02, b'{', b'}'],
        // A masked, empty text frame with RSV1 set (no extension was negotiated).
        &[0xc1, 0x80, 1, 2, 3, 4],
    ];
    for frame in frames {
        let mut tcp = raw_websocket(&server).await;
        tcp.write_all(frame).await.unwrap();
        assert_eq!(raw_close_code(&mut tcp).await, 1002, "{frame:?}");
    }
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_at_its_header_before_any_payload() {
    let server = TestServer::default_config();
    let mut tcp = raw_websocket(&server).await;
    // The header of a masked 100 MiB text frame, and not one byte of its payload.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(100u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    assert_eq!(raw_close_code(&mut tcp).await, 1009);
}

#[tokio::test]
async fn an_unfinished_message_is_dropped_within_its_timeout_even_if_pings_are_answered() {
    let server = TestServer::start(Config {
        message_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    let mut ws = join(&server, "r", "alice").await;
    let mut watcher = join(&server, "r", "bob").await;
    ws.send(fragment(Data::Text, false, vec![b' '; 900 * 1024]))
        .await
        .unwrap();
    let started = Instant::now();
    // Reading answers the server's pings, so only the unfinished message can end this.
    let frame = close_frame(&mut ws).await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("message"), "{}", frame.reason);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The room hears LEFT at once; the other participant is untouched.
    let msgs = sync(&mut watcher).await;
    assert!(
        msgs.iter()
            .any(|m| matches!(m, ServerMessage::Left { username } if username == "alice")),
        "{msgs:?}"
    );
}

#[tokio::test]
async fn a_chat_flood_limits_the_flooder_and_a_reader_gets_every_message_let_through() {
    let server = TestServer::start(Config {
        rate_limits: RateLimits {
            chat: RateLimit::new(10, 20),
            ..RateLimits::default()
        },
        ..Config::default()
    });
    let flooder = join(&server, "r", "flood").await;
    let mut reader = join(&server, "r", "reader").await;
    // The reader reads at its own pace all along (and so answers the server's pings), until
    // the flooder's end-of-test marker (a `published`).
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match next(&mut reader).await.expect("the reader stays connected") {
                ServerMessage::Message { text, .. } => got.push(text),
                ServerMessage::Published { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        (got, reader)
    });
    const SENT: usize = 2_000;
    let (mut sink, mut replies) = flooder.split();
    // The flooder reads its replies as it sends, so it is limited, not disconnected.
    let counting = tokio::spawn(async move {
        let mut echoed = Vec::new();
        let mut limited = 0;
        while echoed.len() + limited < SENT {
            let frame = tokio::time::timeout(WAIT, replies.next()).await.unwrap();
            let Some(Ok(Message::Text(text))) = frame else {
                continue;
            };
            match serde_json::from_str::<ServerMessage>(&text).unwrap() {
                ServerMessage::Message { from, text, .. } if from == "flood" => echoed.push(text),
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => limited += 1,
                _ => {}
            }
        }
        (echoed, limited)
    });
    let started = Instant::now();
    for i in 0..SENT {
        let msg = ClientMessage::Message {
            to: None,
            text: format!("m{i}"),
        };
        sink.send(Message::text(serde_json::to_string(&msg).unwrap()))
            .await
            .unwrap();
    }
    let (echoed, limited) = counting.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(echoed.len() + limited, SENT);
    assert!(
        echoed.len() >= 20 && echoed.len() as f64 <= 20.0 + 10.0 * elapsed + 1.0,
        "{} let through in {elapsed:.2} s",
        echoed.len()
    );
    // The reader, reading at its own pace, got exactly those messages, in order, and stays.
    sink.send(Message::text(
        serde_json::to_string(&publish("done")).unwrap(),
    ))
    .await
    .unwrap();
    let (got, mut reader) = reading.await.unwrap();
    assert_eq!(got, echoed);
    sync(&mut reader).await;
}

#[tokio::test]
async fn a_flooder_that_does_not_read_is_disconnected_and_the_room_stays() {
    let server = TestServer::default_config();
    let mut flooder = join(&server, "r", "flood").await;
    let mut reader = join(&server, "r", "reader").await;
    let chat = Message::text(r#"{"type":"message","text":"spam"}"#);
    let started = Instant::now();
    // The reader reads (and answers pings) all along.
    let reading = tokio::spawn(async move {
        let mut chat_seen = 0;
        loop {
            match next(&mut reader).await.expect("the reader stays connected") {
                ServerMessage::Message { .. } => chat_seen += 1,
                ServerMessage::Left { username } if username == "flood" => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        (chat_seen, reader)
    });
    // Never reading: its replies (mostly rate-limited errors, ~20 MB for this many) fill its
    // own queue or socket, not the reader's, until the server gives up on it.
    for _ in 0..200_000 {
        if flooder.send(chat.clone()).await.is_err() {
            break;
        }
    }
    let (chat_seen, mut reader) = reading.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        chat_seen as f64 <= 20.0 + 10.0 * elapsed + 1.0,
        "{chat_seen} chat messages reached the reader in {elapsed:.1} s"
    );
    sync(&mut reader).await;
}

#[tokio::test]
async fn a_hundred_plays_of_one_stream_make_one_session() {
    let server = TestServer::start(Config {
        // No rate limit in the way: the rule itself is under test.
        rate_limits: RateLimits {
            play: RateLimit::new(1000, 1000),
            ..RateLimits::default()
        },
        ..Config::default()
    });
    let mut publisher = join(&server, "r", "pub").await;
    let mut viewer = join(&server, "r", "view").await;
    send(&mut publisher, &publish("main")).await;
    sync(&mut publisher).await;
    let play = ClientMessage::Play {
        participant: "pub".into(),
        stream: "main".into(),
    };
    for _ in 0..100 {
        send(&mut viewer, &play).await;
    }
    let replies = sync(&mut viewer).await;
    let started = replies
        .iter()
        .filter(|m| matches!(m, ServerMessage::SessionStarted { .. }))
        .count();
    let refused = replies
        .iter()
        .filter(|m| error_code(&Some((*m).clone())) == Some(ErrorCode::AlreadyPlaying))
        .count();
    assert_eq!((started, refused), (1, 99), "{replies:?}");
    let requests: Vec<_> = sync(&mut publisher)
        .await
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::SessionRequest { .. }))
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

#[tokio::test]
async fn the_fifth_stream_is_refused_and_a_newcomer_sees_four() {
    let server = TestServer::default_config();
    let mut alice = join(&server, "r", "alice").await;
    for i in 0..4 {
        send(&mut alice, &publish(&format!("s{i}"))).await;
    }
    send(&mut alice, &publish("s4")).await;
    let replies = sync(&mut alice).await;
    assert_eq!(
        replies
            .iter()
            .map(|m| error_code(&Some(m.clone())))
            .collect::<Vec<_>>(),
        [Some(ErrorCode::TooManyStreams)]
    );
    let mut bob = connect_from(&server, "127.0.0.1").await.unwrap();
    send(
        &mut bob,
        &ClientMessage::Join {
            room: "r".into(),
            username: "bob".into(),
            token: None,
        },
    )
    .await;
    match next(&mut bob).await {
        Some(ServerMessage::State { participants, .. }) => {
            assert_eq!(participants[0].streams.len(), 4)
        }
        other => panic!("{other:?}"),
    }
    // Unpublishing frees a place.
    send(
        &mut alice,
        &ClientMessage::Unpublish {
            stream: "s0".into(),
        },
    )
    .await;
    send(&mut alice, &publish("s4")).await;
    let replies = sync(&mut alice).await;
    assert!(
        matches!(&replies[..], [ServerMessage::Joined { username }] if username == "bob"),
        "{replies:?}"
    );
}

#[tokio::test]
async fn errors_quote_only_a_short_prefix_of_large_input() {
    let server = TestServer::default_config();
    let mut ws = connect_from(&server, "127.0.0.1").await.unwrap();
    let huge = "x".repeat(60_000);
    let inputs = [
        serde_json::to_string(&ClientMessage::Join {
            room: "r".into(),
            username: huge.clone(),
            token: None,
        })
        .unwrap(),
        format!(r#"{{"type":"{huge}"}}"#),
        format!(r#"{{"type":"leave","{huge}":1}}"#),
    ];
    for input in inputs {
        ws.send(Message::text(input)).await.unwrap();
        let reply = next(&mut ws).await.unwrap();
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.len() < 400, "reply of {} bytes: {json}", json.len());
        assert!(json.contains("xxxx…"), "{json}");
    }
    let mut joined = join(&server, "r", "alice").await;
    send(&mut joined, &ClientMessage::Stop { session: huge }).await;
    let reply = next(&mut joined).await.unwrap();
    assert!(
        serde_json::to_string(&reply).unwrap().len() < 300,
        "{reply:?}"
    );
}
