//! The participant's WebSocket: connecting (TCP_NODELAY, `wss://` with the plugin's TLS
//! policy), joining, writing and reading protocol messages, and the polite leave.
//!
//! Only the actor calls these; it owns the [`Socket`].

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{ConnectStream, client_async_tls_with_connector_and_config};
use async_tungstenite::tungstenite::{self, Message};
use futures::StreamExt;
use room_protocol::{ClientMessage, FailReason, ServerMessage, WithId};

use super::{JoinFailure, Key, LEAVE_TIMEOUT};

/// The WebSocket to the room server.
pub type Socket = WebSocketStream<ConnectStream>;

/// Why the connection failed; worth trying again, unlike a [`JoinFailure`].
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The server URL cannot be connected to as written.
    #[error("{url}: {why}")]
    BadUrl { url: String, why: String },
    /// No TCP connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket failed (handshake, read or write).
    #[error(transparent)]
    WebSocket(#[from] tungstenite::Error),
    /// A text frame that is not a protocol message: some other server.
    #[error("not a room server: {0}")]
    NotARoomServer(#[from] serde_json::Error),
    /// The server closed the connection.
    #[error("closed by the server")]
    Closed,
}

/// Why a connection attempt did not end in the room.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The server said no, or TLS cannot work: final.
    #[error(transparent)]
    Final(#[from] JoinFailure),
    /// Network or protocol trouble: worth retrying.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// One of several servers without its Redis, or a room moving after a server died: a
    /// moment later the join succeeds (here or, through a load balancer, elsewhere).
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server answered the join with something else than `state` or `failed`.
    #[error("unexpected answer to join: {0}")]
    UnexpectedAnswer(String),
}

/// Connects and joins `key`'s room: the socket and the server's `state`.
pub async fn connect_and_join(
    key: &Key,
    token: Option<&str>,
) -> Result<(Socket, ServerMessage), JoinError> {
    let mut ws = connect(&key.server_url, key.tls_ca_file.as_deref()).await?;
    let join = ClientMessage::Join {
        room: key.room.clone(),
        username: key.username.clone(),
        token: token.map(Into::into),
    };
    send(
        &mut ws,
        &WithId {
            id: Some("join".into()),
            msg: join,
        },
    )
    .await?;
    loop {
        let answer = next_message(&mut ws)
            .await
            .unwrap_or(Err(TransportError::Closed))?;
        match answer.msg {
            ServerMessage::Welcome { .. } => continue,
            state @ ServerMessage::State { .. } => return Ok((ws, state)),
            ServerMessage::Failed {
                reason: FailReason::Unavailable,
                detail,
            } => return Err(JoinError::Unavailable(detail)),
            ServerMessage::Failed { reason, detail } => {
                return Err(JoinFailure::Refused { reason, detail }.into());
            }
            other => return Err(JoinError::UnexpectedAnswer(format!("{other:?}"))),
        }
    }
}

/// Opens the WebSocket with TCP_NODELAY: each signaling message is small and waited for, and
/// Nagle's algorithm would hold one back until the server's delayed ACK (~40 ms a hop).
/// `wss://` trusts the system's roots and `ca_file`; a TLS failure is final.
async fn connect(url: &str, ca_file: Option<&std::path::Path>) -> Result<Socket, JoinError> {
    let bad_url = |why: &str| TransportError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad_url(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad_url("no host"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad_url("no port"))?;
    let connector = match parsed.scheme() {
        "wss" => Some(crate::tls::connector(ca_file).map_err(JoinFailure::Tls)?),
        _ => None,
    };
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|source| TransportError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = client_async_tls_with_connector_and_config(url, tcp, connector, None)
        .await
        .map_err(|e| match crate::tls::failure(&e, host) {
            Some(detail) => JoinError::Final(JoinFailure::Tls(detail)),
            None => TransportError::WebSocket(e).into(),
        })?;
    Ok(ws)
}

/// Writes one message.
pub async fn send(ws: &mut Socket, msg: &WithId<ClientMessage>) -> Result<(), TransportError> {
    let text = serde_json::to_string(msg).expect("protocol messages serialise");
    ws.send(Message::text(text)).await?;
    Ok(())
}

/// The next protocol message with the request id it echoes, if any; `None` when the connection
/// closed. Non-protocol text is an error (a server speaking another protocol), pings and pongs
/// are skipped.
pub async fn next_message(
    ws: &mut Socket,
) -> Option<Result<WithId<ServerMessage>, TransportError>> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).map_err(Into::into));
            }
            Ok(Message::Close(_)) => return None,
            Ok(_) => continue,
            Err(e) => return Some(Err(e.into())),
        }
    }
}

/// Sends `leave` and a close frame, then waits until the server closes its end: the server
/// has then taken the participant out of the room and told the others LEFT. Bounded by
/// [`LEAVE_TIMEOUT`] (a dead link never answers).
pub async fn leave(ws: &mut Socket) {
    let polite = async {
        let leave = WithId {
            id: None,
            msg: ClientMessage::Leave {},
        };
        send(ws, &leave).await?;
        ws.close(None).await?;
        while let Some(frame) = ws.next().await {
            frame?;
        }
        Ok::<(), TransportError>(())
    };
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, polite).await;
}
