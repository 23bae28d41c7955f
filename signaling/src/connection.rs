//! One participant's WebSocket: read frames into messages, write the hub's queue out, keep the
//! peer alive with pings, and end cleanly.
//!
//! The task owns both halves of the socket and `select!`s over four things: a frame from the
//! peer, a message queued by the hub, the ping timer, and server shutdown. Whatever ends the loop
//! (close, error, silence, full queue, shutdown), the peer is unregistered exactly once at the
//! end, which is what sends LEFT to the room.
//!
//! Limits: frames up to [`room_protocol::MAX_MESSAGE_BYTES`] are parsed; larger ones up to
//! [`HARD_FRAME_LIMIT`] get an `error` and the connection stays; beyond that the WebSocket layer
//! refuses the frame and the connection ends (reading a frame that large is the attack).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::{SinkExt, StreamExt};
use room_protocol::{ClientMessage, ErrorCode, MAX_MESSAGE_BYTES};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::auth::Access;
use crate::cluster::Cluster;
use crate::hub::Hub;

/// Frames above this size end the connection (see the module doc).
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// How long one write may take before the peer counts as gone. A reader that stops reading fills
/// its TCP window, and a write would otherwise wait forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other end, and what decides whether it may join.
pub struct Client {
    /// The peer's address (throttling of wrong tokens is per address).
    pub addr: SocketAddr,
    /// The server's access rules.
    pub access: Arc<Access>,
    /// The other nodes serving the same rooms (`--redis`), if any.
    pub cluster: Option<Arc<Cluster>>,
}

/// Runs one connection until it ends.
pub async fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    client: Client,
) {
    // Bounded: a peer that cannot keep up loses its connection instead of growing server memory.
    let (queue, mut outgoing) = mpsc::channel(config.outgoing_queue);
    let peer = hub.register(queue);
    let span = tracing::info_span!("connection", peer);
    let _enter = span.enter();
    tracing::debug!("connected");
    let (mut sink, mut frames) = socket.split();
    let mut ping = tokio::time::interval(config.ping_interval);
    let mut last_heard = Instant::now();

    let close = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some((close_code::AWAY, "server shutting down")),
            queued = outgoing.recv() => match queued {
                Some(text) => {
                    if !matches!(timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await, Ok(Ok(()))) {
                        break None;
                    }
                }
                None => break Some((close_code::POLICY, "too slow: outgoing queue full")),
            },
            frame = frames.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => read_text(&hub, peer, &client, text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        hub.reject(peer, ErrorCode::Binary, "binary frames are not part of the protocol".into())
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(err)) => {
                        tracing::debug!(cause = %err, "read failed");
                        break None;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.idle_timeout {
                    tracing::info!("silent for {:?}: dropping", config.idle_timeout);
                    break Some((close_code::AWAY, "keepalive timeout"));
                }
                if !matches!(timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    break None;
                }
            }
        }
    };
    // Leave the room before the close handshake, so the others hear LEFT at once.
    hub.unregister(peer);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    }
    tracing::debug!("disconnected");
}

/// Parses one text frame and hands it to the hub; bad input gets an `error` reply. A join's
/// token is verified here, at the edge: the hub and the room rules get the verdict. With other
/// nodes, a join waits for its room's owner to be found (so later messages follow it in order).
async fn read_text(hub: &Hub, peer: u64, client: &Client, text: &str) {
    if text.len() > MAX_MESSAGE_BYTES {
        let message = format!(
            "message is {} bytes, the limit is {MAX_MESSAGE_BYTES}",
            text.len()
        );
        return hub.reject(peer, ErrorCode::TooLarge, message);
    }
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Join {
            room,
            username,
            token,
        }) => {
            let token = token.as_ref().map(|t| t.expose());
            let admitted = client
                .access
                .join(client.addr.ip(), token, &room, &username);
            match &client.cluster {
                Some(cluster) => cluster.join(peer, room, username, admitted).await,
                None => hub.join(peer, room, username, admitted),
            }
        }
        Ok(msg) => hub.handle(peer, msg),
        Err(err) => hub.reject(
            peer,
            ErrorCode::Malformed,
            format!("not a protocol message: {err}"),
        ),
    }
}
