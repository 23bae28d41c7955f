//! Shared helpers of the integration tests: an in-process server on a free port, and a raw
//! protocol client over a real WebSocket.
//!
//! Media helpers (pipelines, frame checks) live in [`media`].

pub mod cluster;
pub mod coturn;
pub mod media;
pub mod netns;
pub mod netpeer;

use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{ConnectStream, connect_async};
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use room_protocol::{ClientMessage, ServerMessage};
use room_signaling::Config;

/// How long a test waits for one expected message before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this process on 127.0.0.1 and a free port; stopped on drop.
pub struct TestServer {
    /// `127.0.0.1:PORT`.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `config` on its own runtime thread, so it serves whatever the test
    /// does (blocking GStreamer calls included).
    pub fn start(config: Config) -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config)
    }

    /// Starts a server on `addr` (e.g. the address of a stopped one, to test reconnection).
    pub fn start_on(addr: std::net::SocketAddr, config: Config) -> TestServer {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, bound) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                room_signaling::run(listener, config, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = bound.recv().unwrap();
        TestServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A server with the default configuration.
    pub fn default_config() -> TestServer {
        Self::start(Config::default())
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `wss://127.0.0.1:PORT/ws` (for a server started with `Config::tls`).
    pub fn wss_url(&self) -> String {
        format!("wss://{}/ws", self.addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits until every connection got its close frame.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1 in a fresh folder of this test run
/// (`tag` tells the folders of one test apart); each call makes a new key.
pub fn self_signed_certificate(tag: &str) -> room_signaling::tls::TlsFiles {
    let dir = std::env::temp_dir().join(format!("gst-room-test-tls-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    room_signaling::tls::self_signed(&dir, &names)
        .expect("self-signed certificate")
        .0
}

/// A participant speaking the protocol directly over a WebSocket.
pub struct Client {
    ws: WebSocketStream<ConnectStream>,
    /// The `welcome` the server opened with.
    pub welcome: Option<ServerMessage>,
}

impl Client {
    /// Connects and consumes the `welcome`.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = connect_async(url)
            .await
            .expect("connect to the test server");
        let mut client = Client { ws, welcome: None };
        let welcome = client.recv().await;
        assert!(
            matches!(welcome, ServerMessage::Welcome { .. }),
            "{welcome:?}"
        );
        client.welcome = Some(welcome);
        client
    }

    /// Connects and joins `room` as `username`; panics unless `state` comes back.
    pub async fn join(url: &str, room: &str, username: &str) -> Client {
        let mut client = Client::connect(url).await;
        let state = client.request_join(room, username).await;
        assert!(
            matches!(state, ServerMessage::State { .. }),
            "join refused: {state:?}"
        );
        client
    }

    /// Joins `room` as `username` in a room routed through the server (`--media sfu`), where
    /// the server says at once who speaks (nobody yet).
    pub async fn join_sfu_room(url: &str, room: &str, username: &str) -> Client {
        let mut client = Client::join(url, room, username).await;
        assert_eq!(
            client.recv().await,
            ServerMessage::ActiveSpeaker { username: None }
        );
        client
    }

    /// Sends `join` and returns the answer (`state` or `failed`).
    pub async fn request_join(&mut self, room: &str, username: &str) -> ServerMessage {
        self.request_join_with_token(room, username, None).await
    }

    /// Sends `join` with `token` and returns the answer (`state` or `failed`).
    pub async fn request_join_with_token(
        &mut self,
        room: &str,
        username: &str,
        token: Option<&str>,
    ) -> ServerMessage {
        self.send(&ClientMessage::Join {
            room: room.into(),
            username: username.into(),
            token: token.map(Into::into),
        })
        .await;
        self.recv().await
    }

    /// Waits until the server has applied everything sent so far: a request that always gets an
    /// `error` reply, which comes after the replies to earlier messages of this connection.
    pub async fn sync(&mut self) {
        self.send(&ClientMessage::Stop {
            session: "sync-barrier".into(),
        })
        .await;
        self.recv_until("sync reply", |m| matches!(m, ServerMessage::Error { .. }))
            .await;
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &ClientMessage) {
        self.send_raw(&serde_json::to_string(msg).unwrap()).await;
    }

    /// Sends any text frame, valid or not.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a raw WebSocket message (binary, ...).
    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next protocol message; panics after [`WAIT`] or when the connection ends.
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv(WAIT)
            .await
            .expect("expected a message from the server")
    }

    /// The next protocol message within `wait`, or `None`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<ServerMessage> {
        self.try_recv_with_id(wait).await.map(|m| m.msg)
    }

    /// The next protocol message with the request id it echoes, if any.
    pub async fn recv_with_id(&mut self) -> room_protocol::WithId<ServerMessage> {
        self.try_recv_with_id(WAIT)
            .await
            .expect("expected a message from the server")
    }

    async fn try_recv_with_id(
        &mut self,
        wait: Duration,
    ) -> Option<room_protocol::WithId<ServerMessage>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame.ok()? {
                Message::Text(text) => {
                    return Some(
                        serde_json::from_str(text.as_str())
                            .expect("server sent a protocol message"),
                    );
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Skips messages until one matches; panics after [`WAIT`].
    pub async fn recv_until(
        &mut self,
        what: &str,
        matches: impl Fn(&ServerMessage) -> bool,
    ) -> ServerMessage {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(msg) if matches(&msg) => return msg,
                Some(_) => continue,
                None => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// Sends `text` from this client (username `from`) to `to` only, and checks that `to`'s
    /// client `recipient` receives it next.
    pub async fn chat_reaches(&mut self, from: &str, recipient: &mut Client, to: &str, text: &str) {
        self.send(&ClientMessage::Message {
            to: Some(to.into()),
            text: text.into(),
        })
        .await;
        let msg = recipient.recv().await;
        assert!(
            matches!(&msg, ServerMessage::Message { from: f, to: Some(t), text: x, .. }
                if f == from && t == to && x == text),
            "{to} expected {text:?} from {from}: {msg:?}"
        );
    }

    /// Publishes `stream` with audio and video.
    pub async fn publish(&mut self, stream: &str) {
        self.send(&ClientMessage::Publish {
            stream: stream.into(),
            audio: true,
            video: true,
        })
        .await;
    }

    /// `play` of `participant`'s `stream`: the session id of the `session-started` that
    /// answers it.
    pub async fn play_session(&mut self, participant: &str, stream: &str) -> String {
        self.send(&ClientMessage::Play {
            participant: participant.into(),
            stream: stream.into(),
        })
        .await;
        let started = self
            .recv_until("session-started", |m| {
                matches!(m, ServerMessage::SessionStarted { .. })
            })
            .await;
        let ServerMessage::SessionStarted { session, .. } = started else {
            unreachable!("recv_until returned a session-started")
        };
        session
    }

    /// Reads until `left who`: the sessions that `session-ended` ended before it, sorted.
    pub async fn sessions_ended_before_left(&mut self, who: &str) -> Vec<String> {
        let mut ended = Vec::new();
        loop {
            match self.recv().await {
                ServerMessage::SessionEnded { session, .. } => ended.push(session),
                ServerMessage::Left { username } if username == who => break,
                _ => {}
            }
        }
        ended.sort();
        ended
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        if let Some(msg) = self.try_recv(Duration::from_millis(300)).await {
            panic!("expected no message, got {msg:?}");
        }
    }

    /// Closes the socket abruptly-but-politely (a close frame, then drop).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The raw stream, for tests that stop reading on purpose.
    pub fn into_inner(self) -> WebSocketStream<ConnectStream> {
        self.ws
    }
}

/// A minimal HTTP/1.0 GET over a real socket to `host:port` (no client crate needed for a few
/// assertions): the status code and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect for HTTP");
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An HTTP response read off a real socket.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    /// The body (empty for 101 Switching Protocols).
    pub body: String,
}

impl HttpReply {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` (a complete HTTP/1.1 request head, blank line included) to `addr` and reads
/// the response: the head, then `Content-Length` bytes of body (none for a 101 upgrade).
pub async fn http_exchange(addr: &str, request: &str) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect for HTTP");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("HTTP response in time")
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head[9..12].parse().unwrap();
    let mut reply = HttpReply {
        status,
        head,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while status != 101 && body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("HTTP body in time")
            .unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// A GET of `path` with extra header lines (`"Name: value"`), `Host` set to `addr`.
pub async fn http_get_with(addr: &str, path: &str, headers: &[&str]) -> HttpReply {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    http_exchange(addr, &request).await
}

/// A WebSocket upgrade request for `/ws` with `Host: host` and the extra header lines; the
/// reply is 101 when the server accepts it.
pub async fn ws_handshake(addr: &str, host: &str, headers: &[&str]) -> HttpReply {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    http_exchange(addr, &request).await
}
