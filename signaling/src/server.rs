//! The HTTP side: one port serves the WebSocket (`/ws`), the conference page (`/`), the
//! original room API's WebSocket (a WebSocket upgrade on `/`, see [`crate::wcs`]), a health
//! check (`/healthz`), the operators' room list (`/rooms`, admin token required) and the WHIP
//! and WHEP doors (`/whip/...`, `/whep/...`, see [`crate::whip`]). Both WebSockets follow the
//! Origin/Host rule of [`crate::web_guard`]; every response carries its security headers.
//!
//! [`run`] is the whole server: the launcher's `server` command and the tests call it with a
//! bound listener and a shutdown future. On shutdown every connection sends a close frame and
//! `run` returns once all connection tasks have ended; HTTP requests still in flight get
//! `shutdown_grace`, then their sockets are closed, so shutdown takes a bounded time whatever
//! clients do.
//!
//! [`serve`] is the one place where HTTP is served (axum-server), in plain text or over TLS
//! (`Config::tls`; the certificate is read again on SIGHUP, open connections stay). It gives
//! the header-read timeout, the bounded graceful shutdown, the peer address and the acceptor
//! (per-address cap, TCP_NODELAY) that the TLS acceptor wraps. The WebSocket handshake is done
//! here rather than by axum's `WebSocketUpgrade`, so that the upgraded socket can be watched
//! frame by frame (see [`crate::frames`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use crate::Config;
use crate::accept::{ConnectionCaps, FileBudget, LimitedAcceptor};
use crate::auth::{Access, Refusal};
use crate::cluster::Cluster;
use crate::connection::{self, HARD_FRAME_LIMIT, JoinGate};
use crate::frames::MessageWatch;
use crate::hub::Hub;
use crate::media::{Media, MediaConfig};
use crate::rooms::RoomRules;
use crate::tls::TlsFiles;
use crate::web_guard::{self, OriginRule};
use crate::whip::Doors;

/// Initial read buffer of a WebSocket; it grows for larger frames.
const READ_BUFFER: usize = 8 * 1024;

/// What every request handler shares.
#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    config: Arc<Config>,
    /// Caps WebSockets not in a room; a permit lives until its connection joins.
    unjoined: Arc<Semaphore>,
    /// Tokens, grants and the throttle on wrong ones.
    access: Arc<Access>,
    /// Which browsers (and Host names) may open `/ws`.
    origins: Arc<OriginRule>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The other nodes (`--redis`), if any.
    cluster: Option<Arc<Cluster>>,
    /// The media engine (`--media sfu`), if any.
    media: Option<Media>,
}

/// Serves until `shutdown` completes, then closes every connection and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rules = RoomRules {
        capacity: config.max_participants,
        ice_servers: config.ice_servers.clone(),
        turn: config.turn.clone(),
        max_streams: config.max_streams,
        media: config.media.mode(),
    };
    let hub = Arc::new(Hub::new(rules));
    let shutdown_all = CancellationToken::new();
    let tasks = TaskTracker::new();
    let media = match &config.media {
        MediaConfig::Mesh => None,
        MediaConfig::Sfu(settings) => {
            Some(Media::start(hub.clone(), settings, shutdown_all.clone(), &tasks).await?)
        }
    };
    let cluster = match &config.cluster {
        Some(cluster) => Some(
            Cluster::start(
                hub.clone(),
                cluster,
                config.max_participants,
                shutdown_all.clone(),
                &tasks,
            )
            .await
            .map_err(|e| {
                std::io::Error::other(format!("cannot reach Redis at {}: {e}", cluster.redis_url))
            })?,
        ),
        None => None,
    };
    let access = Arc::new(Access::new(&config));
    let doors = Doors::new(
        hub.clone(),
        access.clone(),
        &config,
        media.is_some(),
        shutdown_all.clone(),
        tasks.clone(),
    );
    let app = App {
        hub,
        cluster,
        media,
        unjoined: Arc::new(Semaphore::new(config.max_unjoined)),
        access,
        origins: Arc::new(OriginRule::new(
            listener.local_addr()?,
            &config.allowed_origins,
        )),
        config: Arc::new(config),
        shutdown: shutdown_all,
        tasks,
    };
    let mut router = Router::new()
        .route("/ws", get(upgrade))
        .route("/", get(root))
        .route("/healthz", get(health))
        .route("/rooms", get(rooms))
        .merge(doors.routes())
        .fallback_service(ServeDir::new(&app.config.web_dir))
        .with_state(app.clone());
    for layer in web_guard::security_header_layers() {
        router = router.layer(layer);
    }

    let tls = match &app.config.tls {
        Some(files) => Some(tls_config(files).await?),
        None => None,
    };
    let reload = tls
        .clone()
        .zip(app.config.tls.clone())
        .map(|(config, files)| tokio::spawn(reload_on_sighup(config, files)));
    let handle = axum_server::Handle::new();
    let cancel = app.shutdown.clone();
    let grace = app.config.shutdown_grace;
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancel.cancel();
        stop.graceful_shutdown(Some(grace));
    });
    let served = serve(listener, router, tls, handle, &app.config).await;
    if let Some(reload) = reload {
        reload.abort();
    }
    // Upgraded connections are not the HTTP server's any more: wait for their close frames.
    app.shutdown.cancel();
    app.tasks.close();
    app.tasks.wait().await;
    served
}

/// Serves `router` on `listener` until `handle` shuts it down: over TLS when `tls` is set, else
/// plain HTTP. Every request's headers must arrive within `config.header_timeout`; the server
/// holds at most `config.max_connections` sockets, each address `config.max_connections_per_ip`
/// of them (counted before any TLS handshake).
async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    handle: axum_server::Handle<std::net::SocketAddr>,
    config: &Config,
) -> std::io::Result<()> {
    FileBudget::of_this_process().log(config.max_connections, config.max_unjoined);
    let caps = ConnectionCaps::new(config.max_connections, config.max_connections_per_ip);
    let tcp = LimitedAcceptor::new(caps);
    // hyper's header timer starts with the first byte of a request (and runs again while a
    // keep-alive connection waits for its next one); a connection that never sends a byte is
    // axum-server's first-request timeout. Known gap: the header timer is HTTP/1's; HTTP/2 with
    // prior knowledge (h2c) is still served, because hyper-util's auto builder ignores
    // `http1_only` when upgrades are enabled, so an h2c connection is bounded only by the
    // per-address cap.
    let mut server = axum_server::Server::from_listener(listener)
        .handle(handle)
        .first_request_timeout(config.header_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(config.header_timeout);
    // The peer address is needed to throttle wrong tokens and to count connections per address.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(tls).acceptor(tcp);
            server.acceptor(acceptor).serve(service).await
        }
        None => server.acceptor(tcp).serve(service).await,
    }
}

/// The rustls configuration of `files`, with a message that names the file at fault.
async fn tls_config(files: &TlsFiles) -> std::io::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "TLS certificate {} / key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ),
            )
        })
}

/// Reads the certificate again on every SIGHUP (a renewed certificate without a restart). New
/// connections get the new one; open connections are not touched. A bad file keeps the old one.
async fn reload_on_sighup(config: RustlsConfig, files: TlsFiles) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the TLS certificate will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "SIGHUP: TLS certificate reloaded")
            }
            Err(err) => tracing::error!(
                cert = %files.cert.display(),
                "SIGHUP: TLS certificate not reloaded, keeping the old one: {err}"
            ),
        }
    }
}

async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    upgrade_to(app, peer_addr, request, connection::Dialect::Native)
}

/// `/`: the original room API's WebSocket when the request is an upgrade (its SDK connects to
/// `ws://HOST:PORT`), the conference page otherwise. A `?token=` on the WebSocket URL is the
/// access token of a client that has no other place for one (the SDK's example page).
async fn root(
    State(app): State<App>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    if !request.headers().contains_key(header::UPGRADE) {
        return match ServeDir::new(&app.config.web_dir).try_call(request).await {
            Ok(page) => page.map(Body::new),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
        };
    }
    let token = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(|t| room_protocol::Secret::from(t.to_owned()))
    });
    let media = app.config.media.mode();
    // The connection's id for the SDK's logs; the hub's peer id is assigned later.
    let session = format!("wcs-{}", rand::random::<u32>());
    let translator = crate::wcs::Translator::new(media, session, token);
    upgrade_to(
        app,
        peer_addr,
        request,
        connection::Dialect::Wcs(Box::new(translator)),
    )
}

/// Upgrades `request` to a WebSocket that speaks `dialect`, after the Origin/Host rule, the
/// handshake checks and the cap on connections not in a room.
fn upgrade_to(
    app: App,
    peer_addr: SocketAddr,
    mut request: Request,
    dialect: connection::Dialect,
) -> Response {
    if let Err(why) = app.origins.check(request.headers()) {
        tracing::info!(%peer_addr, "refused a WebSocket: {why}");
        return web_guard::forbidden(&why);
    }
    let accept_key = match websocket_accept_key(request.headers()) {
        Ok(key) => key,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let Ok(unjoined) = app.unjoined.clone().try_acquire_owned() else {
        let why = "too many connections waiting to join\n";
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let App {
        hub,
        config,
        unjoined: unjoined_slots,
        shutdown,
        tasks,
        access,
        cluster,
        ..
    } = app;
    let client = connection::Client {
        addr: peer_addr,
        access,
        cluster,
    };
    tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => return tracing::debug!(%peer_addr, cause = %err, "upgrade failed"),
        };
        let (watched, clock) = MessageWatch::new(TokioIo::new(upgraded));
        let socket =
            WebSocketStream::from_raw_socket(watched, Role::Server, Some(websocket_config())).await;
        let gate = JoinGate::new(unjoined_slots, unjoined);
        connection::serve(socket, clock, gate, hub, config, shutdown, client, dialect).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
        .body(Body::empty())
        .expect("a valid response")
}

/// The WebSocket limits. Small buffers: tungstenite's 128 KiB defaults dominated memory per
/// participant, and every frame is flushed at once anyway. tungstenite checks the frame limit
/// on each frame header and the message limit as fragments are added, before buffering more.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT))
}

/// Checks an RFC 6455 opening handshake and returns the `Sec-WebSocket-Accept` value.
fn websocket_accept_key(headers: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err("expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)\n");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err("unsupported WebSocket version: expected Sec-WebSocket-Version: 13\n");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key\n")?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The room list, for an admin token (`Authorization: Bearer ...`); 401 otherwise.
async fn rooms(
    State(app): State<App>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match app.access.admin(addr.ip(), bearer) {
        Ok(()) => match &app.cluster {
            None => axum::Json(app.hub.summary()).into_response(),
            Some(cluster) => match cluster.summary().await {
                Ok(list) => axum::Json(list).into_response(),
                Err(e) => {
                    let body = format!("Redis unavailable: {e}\n");
                    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
                }
            },
        },
        Err(refusal) => {
            let status = match refusal {
                Refusal::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
            (status, challenge, format!("{}\n", refusal.detail())).into_response()
        }
    }
}

/// `ok`; with `--redis`, also whether Redis answers (503 while it does not: joins are refused);
/// with `--media sfu`, the media port, sessions and forwarding rate.
async fn health(State(app): State<App>) -> Response {
    let media = app.media.as_ref().map(Media::health).unwrap_or_default();
    match &app.cluster {
        None => format!("ok\n{media}").into_response(),
        Some(cluster) if cluster.is_available() => {
            format!("ok\nredis: connected\n{media}").into_response()
        }
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis: unavailable\n").into_response(),
    }
}
