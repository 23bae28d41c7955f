//! One participant's WebSocket: read frames into messages, write the hub's queue out, keep the
//! peer alive with pings, and end cleanly.
//!
//! The task owns both halves of the socket and `select!`s over five things: a frame from the
//! peer, a message queued by the hub, the ping timer, the join deadline, and server shutdown.
//! Whatever ends the loop (close, error, silence, full queue, a limit, shutdown), the peer is
//! unregistered exactly once at the end, which is what sends LEFT to the room. The socket is
//! closed only once that LEFT (or the one a `leave` caused) is written to the other members'
//! sockets, bounded by [`LEFT_FLUSH_WAIT`] ([`crate::hub::Flush`]): a client that waits for the
//! close after `leave` knows the room was told.
//!
//! Limits: frames up to [`room_protocol::MAX_MESSAGE_BYTES`] are parsed; larger ones up to
//! [`HARD_FRAME_LIMIT`] get an `error` and the connection stays; beyond that the WebSocket layer
//! refuses the frame as its header arrives (or the message as its fragments add up) and the
//! connection ends with close code 1009 (reading a frame that large is the attack). A message
//! unfinished for longer than `message_timeout` ends the connection (1008). Each participant's
//! messages pass its rate limits ([`crate::limits`]) before the hub sees them. A connection
//! that is not in a room holds one of the server's "unjoined" slots and must join within
//! `join_timeout` (1008 otherwise).
//!
//! A connection speaks one [`Dialect`]: the native protocol (`/ws`), or the original room
//! API's (`/`, see [`crate::wcs`]), whose frames are translated into native messages on the way
//! in and out; everything above (limits, keepalive, join gate, the hub) is the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use room_protocol::{ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, ServerMessage, WithId, wcs};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::auth::Access;
use crate::cluster::Cluster;
use crate::frames::MessageClock;
use crate::hub::{Flush, Hub, Progress};
use crate::limits::Limiters;
use crate::rooms::PeerId;
use crate::wcs::{Output, Translator};

/// Frames above this size end the connection (see the module doc).
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// How long one write may take before the peer counts as gone. A reader that stops reading fills
/// its TCP window, and a write would otherwise wait forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a closing connection waits for the peer's close frame after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How long an ending connection waits for the LEFT it caused to be written to the others.
const LEFT_FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The longest serde error quoted back in `error malformed` (serde quotes the input it refuses).
const MAX_PARSE_ERROR_CHARS: usize = 160;

/// A connection's place among the not-yet-joined ones: the slot it holds while it is in no
/// room, and when it must have joined by.
pub struct JoinGate {
    slots: Arc<Semaphore>,
    slot: Option<OwnedSemaphorePermit>,
    deadline: Option<Instant>,
}

impl JoinGate {
    /// A fresh connection holding `slot` of `slots`; its deadline starts when it is served.
    pub fn new(slots: Arc<Semaphore>, slot: OwnedSemaphorePermit) -> JoinGate {
        JoinGate {
            slots,
            slot: Some(slot),
            deadline: None,
        }
    }

    /// Follows the connection's membership after each message: joining frees the slot and
    /// lifts the deadline; leaving takes a slot again (`Err` when none is free) and restarts
    /// the deadline.
    fn update(&mut self, joined: bool, join_timeout: Duration) -> Result<(), ()> {
        if joined {
            self.slot = None;
            self.deadline = None;
        } else if self.slot.is_none() {
            self.slot = Some(self.slots.clone().try_acquire_owned().map_err(|_| ())?);
            self.deadline = Some(Instant::now() + join_timeout);
        }
        Ok(())
    }
}

/// Who is on the other end, and what decides whether it may join.
pub struct Client {
    /// The peer's address (throttling of wrong tokens is per address).
    pub addr: SocketAddr,
    /// The server's access rules.
    pub access: Arc<Access>,
    /// The other nodes serving the same rooms (`--redis`), if any.
    pub cluster: Option<Arc<Cluster>>,
}

/// The protocol a connection speaks.
pub enum Dialect {
    /// The native protocol ([`room_protocol`]).
    Native,
    /// The original room API's ([`room_protocol::wcs`]), translated (see [`crate::wcs`]).
    Wcs(Box<Translator>),
}

/// Runs one connection until it ends, inside a `connection` span that carries its peer id
/// (recorded once the hub has assigned it).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(name = "connection", skip_all, fields(peer))]
pub async fn serve<S>(
    socket: WebSocketStream<S>,
    clock: MessageClock,
    mut gate: JoinGate,
    hub: Arc<Hub>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    client: Client,
    mut dialect: Dialect,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Bounded: a peer that cannot keep up loses its connection instead of growing server memory.
    let (queue, mut outgoing) = mpsc::channel(config.outgoing_queue);
    let progress = Arc::new(Progress::default());
    let peer = match dialect {
        Dialect::Native => hub.register(queue, progress.clone()),
        // The SDK offers the sessions it plays (its playStream carries an offer).
        Dialect::Wcs(_) => hub.register_offering(queue, progress.clone()),
    };
    tracing::Span::current().record("peer", peer);
    tracing::debug!("connected");
    // Step times of a join (debug level): when each message was read or written, in ms since
    // the connection was accepted, and how long handling a read one took.
    let connected = Instant::now();
    let (mut sink, mut frames) = socket.split();
    // The first ping one interval from now, not at once: the peer has just spoken (its
    // handshake), and a ping in the middle of every join costs both ends a frame each way.
    // A tick that comes late (a busy runtime) is not made up for with a burst of pings.
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let limiters = Limiters::new(config.rate_limits);
    gate.deadline = Some(Instant::now() + config.join_timeout);
    // What this participant's `leave` queued to the others, to wait for before closing.
    let mut left = Flush::default();

    let close = loop {
        let join_deadline = gate.deadline;
        tokio::select! {
            _ = shutdown.cancelled() => break Some((CloseCode::Away, "server shutting down")),
            queued = outgoing.recv() => match queued {
                Some(text) => {
                    // Copied only when the step log is on (the text moves into the frame).
                    let step = tracing::enabled!(tracing::Level::DEBUG)
                        .then(|| outgoing_type(&text).to_owned());
                    let written = match &mut dialect {
                        Dialect::Native => send_text(&mut sink, text).await,
                        Dialect::Wcs(translator) => {
                            // The hub queues serialised native messages: read back here, at
                            // the one place this connection needs them as values.
                            match serde_json::from_str::<WithId<ServerMessage>>(&text) {
                                Ok(msg) => {
                                    let output = translator.from_server(msg);
                                    let (written, applied) = carry_out(&mut sink, output, &hub, &limiters, peer, &client).await;
                                    left.extend(applied);
                                    written
                                }
                                Err(err) => {
                                    tracing::error!("queued message not readable back: {err}");
                                    true
                                }
                            }
                        }
                    };
                    if !written {
                        break None;
                    }
                    progress.wrote();
                    tracing::debug!(step = step.as_deref().unwrap_or("?"), at_ms = ms_since(connected), "sent");
                }
                None => break Some((CloseCode::Policy, "too slow: outgoing queue full")),
            },
            frame = frames.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        match &mut dialect {
                            Dialect::Native => {
                                let read = Instant::now();
                                left.extend(read_text(&hub, &limiters, peer, &client, text.as_str()).await);
                                tracing::debug!(
                                    step = incoming_type(text.as_str()),
                                    at_ms = ms_since(connected),
                                    handled_us = read.elapsed().as_micros() as u64,
                                    "read"
                                );
                            }
                            Dialect::Wcs(translator) => {
                                let output = read_wcs(translator, &limiters, text.as_str());
                                let close = output.close;
                                let (written, applied) = carry_out(&mut sink, output, &hub, &limiters, peer, &client).await;
                                left.extend(applied);
                                if !written {
                                    break None;
                                }
                                if close {
                                    break Some((CloseCode::Policy, "refused by the server"));
                                }
                            }
                        }
                        if gate.update(hub.is_joined(peer), config.join_timeout).is_err() {
                            break Some((CloseCode::Again, "too many connections waiting to join"));
                        }
                    }
                    Some(Ok(Message::Binary(_))) => match &dialect {
                        Dialect::Native => hub.reject(peer, ErrorCode::Binary, "binary frames are not part of the protocol".into()),
                        Dialect::Wcs(_) => {
                            let output = wcs_fail(None, "binary frames are not part of the protocol".into());
                            if !carry_out(&mut sink, output, &hub, &limiters, peer, &client).await.0 {
                                break None;
                            }
                        }
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(err)) => {
                        tracing::debug!(cause = %err, "read failed");
                        break close_for(&err);
                    }
                }
            }
            _ = sleep_until(join_deadline.unwrap_or_else(Instant::now)), if join_deadline.is_some() => {
                tracing::info!("not in a room within {:?}: closing", config.join_timeout);
                break Some((CloseCode::Policy, "join a room within the join timeout"));
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.idle_timeout {
                    tracing::info!("silent for {:?}: dropping", config.idle_timeout);
                    break Some((CloseCode::Away, "keepalive timeout"));
                }
                if clock.unfinished_for() > config.message_timeout {
                    tracing::info!("message unfinished for {:?}: closing", config.message_timeout);
                    break Some((CloseCode::Policy, "message not finished within the message timeout"));
                }
                if !matches!(timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    break None;
                }
            }
        }
    };
    // Nothing more is written here: no one waits for this connection's writes.
    progress.close();
    // Leave the room before the close handshake, so the others hear LEFT at once; close only
    // once it is on their sockets.
    left.extend(hub.unregister(peer));
    if !left.wait(LEFT_FLUSH_WAIT).await {
        tracing::debug!("LEFT not written to every member within {LEFT_FLUSH_WAIT:?}");
    }
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
        // Complete the closing handshake (RFC 6455 section 7.1.1): closing the socket while the
        // peer's last frames (a pong, say) are unread would reset it, and the peer could lose
        // the close frame that says why.
        let _ = timeout(CLOSE_WAIT, async {
            while let Some(Ok(frame)) = frames.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!("disconnected");
}

/// The close frame that fails the connection after a read error (RFC 6455 section 7.1.7):
/// 1002 for protocol violations, 1007 for text that is not UTF-8, 1009 for a frame or message
/// over the hard limit; none when the socket itself is gone.
fn close_for(err: &WsError) -> Option<(CloseCode, &'static str)> {
    match err {
        WsError::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "text frame is not UTF-8")),
        WsError::Capacity(_) => Some((CloseCode::Size, "frame or message too large")),
        _ => None,
    }
}

/// Writes one text frame; false when the peer is gone or does not read.
async fn send_text<S>(sink: &mut S, text: String) -> bool
where
    S: futures::Sink<Message, Error = WsError> + Unpin,
{
    matches!(
        timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// Parses one frame of the original room API and translates it. Bad input (too large, not a
/// frame the server knows) gets `fail`, within the message rate limit, and nothing else.
fn read_wcs(translator: &mut Translator, limiters: &Limiters, text: &str) -> Output {
    if text.len() > MAX_MESSAGE_BYTES {
        let why = format!(
            "message is {} bytes, the limit is {MAX_MESSAGE_BYTES}",
            text.len()
        );
        return wcs_fail(None, why);
    }
    match serde_json::from_str::<wcs::ClientMessage>(text) {
        Ok(msg) => translator.from_client(msg),
        Err(err) => match limiters.check_messages() {
            Ok(()) => wcs_fail(wcs::frame_name(text), parse_error(&err)),
            Err(why) => wcs_fail(wcs::frame_name(text), why),
        },
    }
}

fn wcs_fail(api_method: Option<String>, info: String) -> Output {
    Output {
        frames: vec![wcs::ServerMessage::Fail((wcs::Failure {
            api_method,
            info,
        },))],
        ..Output::default()
    }
}

/// Writes a translation's frames, then applies its native requests as a native client's.
/// Returns whether the frames were written, and what a `leave` among them queued to the others.
async fn carry_out<S>(
    sink: &mut S,
    output: Output,
    hub: &Hub,
    limiters: &Limiters,
    peer: PeerId,
    client: &Client,
) -> (bool, Flush)
where
    S: futures::Sink<Message, Error = WsError> + Unpin,
{
    for frame in output.frames {
        let text = serde_json::to_string(&frame).expect("protocol frames always serialise");
        if !send_text(sink, text).await {
            return (false, Flush::default());
        }
    }
    let mut left = Flush::default();
    for request in output.requests {
        left.extend(apply(hub, limiters, peer, client, request).await);
    }
    (true, left)
}

/// Parses one text frame and hands it to the hub ([`apply`]); bad input gets an `error` reply.
/// Returns what a `leave` queued to the others.
async fn read_text(
    hub: &Hub,
    limiters: &Limiters,
    peer: PeerId,
    client: &Client,
    text: &str,
) -> Flush {
    if text.len() > MAX_MESSAGE_BYTES {
        let message = format!(
            "message is {} bytes, the limit is {MAX_MESSAGE_BYTES}",
            text.len()
        );
        hub.reject(peer, ErrorCode::TooLarge, message);
        return Flush::default();
    }
    match serde_json::from_str::<WithId<ClientMessage>>(text) {
        Ok(request) => apply(hub, limiters, peer, client, request).await,
        Err(err) => {
            match limiters.check_messages() {
                Ok(()) => hub.reject(peer, ErrorCode::Malformed, parse_error(&err)),
                Err(why) => hub.reject(peer, ErrorCode::RateLimited, why),
            }
            Flush::default()
        }
    }
}

/// Hands one message to the hub; a message over a rate limit gets an `error` reply instead
/// (the hub never sees it). A join's token is verified here, at the edge: the hub and the room
/// rules get the verdict. With other nodes, a join waits for its room's owner to be found (so
/// later messages follow it in order). Returns what a `leave` queued to the others.
async fn apply(
    hub: &Hub,
    limiters: &Limiters,
    peer: PeerId,
    client: &Client,
    request: WithId<ClientMessage>,
) -> Flush {
    let WithId { id, msg } = request;
    if let Err(why) = limiters.check(&msg) {
        hub.reject_request(peer, ErrorCode::RateLimited, why, id);
        return Flush::default();
    }
    match msg {
        ClientMessage::Join {
            room,
            username,
            token,
        } => {
            let token = token.as_ref().map(|t| t.expose());
            let admitted = client
                .access
                .join(client.addr.ip(), token, &room, &username);
            match &client.cluster {
                // A join routed to another node loses its id (the nodes' forwarding
                // does not carry it); one answered here keeps it.
                Some(cluster) => cluster.join(peer, room, username, admitted, id).await,
                None => hub.join(peer, room, username, admitted, id),
            }
            Flush::default()
        }
        msg => hub.handle_request(peer, msg, id),
    }
}

/// Milliseconds from `start` to now, for the step log.
fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// The `type` of a message this server wrote (serde puts the tag first), for the step log.
fn outgoing_type(text: &str) -> &str {
    text.strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?")
}

/// The `type` of a client's message, for the step log (`?` for anything that does not parse:
/// the log never quotes what a client sent). Parses again: called only with the log on.
fn incoming_type(text: &str) -> &'static str {
    serde_json::from_str::<WithId<ClientMessage>>(text)
        .map(|m| m.msg.kind())
        .unwrap_or("?")
}

/// serde's explanation, which quotes the offending input, cut to a short prefix.
fn parse_error(err: &serde_json::Error) -> String {
    let why = err.to_string();
    let why = match why.char_indices().nth(MAX_PARSE_ERROR_CHARS) {
        Some((end, _)) => format!("{}…", &why[..end]),
        None => why,
    };
    format!("not a protocol message: {why}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_errors_quote_little_of_the_input() {
        let input = format!(r#"{{"type":"{}"}}"#, "x".repeat(70_000));
        let err = serde_json::from_str::<room_protocol::ClientMessage>(&input).unwrap_err();
        let message = super::parse_error(&err);
        assert!(message.len() < 400, "{message}");
    }
}
