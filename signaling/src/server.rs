//! The HTTP side: one port serves the WebSocket (`/ws`), the conference page (`/`), a health
//! check (`/healthz`) and the operators' room list (`/rooms`, admin token required). `/ws`
//! follows the Origin/Host rule of [`crate::web_guard`]; every response carries its security
//! headers.
//!
//! [`run`] is the whole server: the launcher's `server` command and the tests call it with a
//! bound listener and a shutdown future. On shutdown every connection sends a close frame and
//! `run` returns once all connection tasks have ended.
//!
//! [`serve`] is the one place where HTTP is served (axum-server), in plain text or over TLS
//! (`Config::tls`; the certificate is read again on SIGHUP, open connections stay).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::accept::{TcpConfigAcceptor, TcpSocketConfig};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use crate::Config;
use crate::auth::{Access, Refusal};
use crate::cluster::Cluster;
use crate::connection::{self, HARD_FRAME_LIMIT};
use crate::hub::Hub;
use crate::rooms::RoomRules;
use crate::tls::TlsFiles;
use crate::web_guard::{self, OriginRule};

/// Initial read buffer of a WebSocket; it grows for larger frames.
const READ_BUFFER: usize = 8 * 1024;

/// What every request handler shares.
#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    config: Arc<Config>,
    /// Caps open WebSockets; a permit lives as long as its connection task.
    connections: Arc<Semaphore>,
    /// Tokens, grants and the throttle on wrong ones.
    access: Arc<Access>,
    /// Which browsers (and Host names) may open `/ws`.
    origins: Arc<OriginRule>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The other nodes (`--redis`), if any.
    cluster: Option<Arc<Cluster>>,
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
    };
    let hub = Arc::new(Hub::new(rules));
    let shutdown_all = CancellationToken::new();
    let cluster = match &config.cluster {
        Some(cluster) => Some(
            Cluster::start(
                hub.clone(),
                cluster,
                config.max_participants,
                shutdown_all.clone(),
            )
            .await
            .map_err(|e| {
                std::io::Error::other(format!("cannot reach Redis at {}: {e}", cluster.redis_url))
            })?,
        ),
        None => None,
    };
    let app = App {
        hub,
        cluster,
        connections: Arc::new(Semaphore::new(config.max_connections)),
        access: Arc::new(Access::new(&config)),
        origins: Arc::new(OriginRule::new(
            listener.local_addr()?,
            &config.allowed_origins,
        )),
        config: Arc::new(config),
        shutdown: shutdown_all,
        tasks: TaskTracker::new(),
    };
    let mut router = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(health))
        .route("/rooms", get(rooms))
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
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancel.cancel();
        stop.graceful_shutdown(None);
    });
    let served = serve(listener, router, tls, handle).await;
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
/// plain HTTP.
async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    // Signaling is small messages answered at once: without TCP_NODELAY, Nagle's algorithm
    // holds a second frame until the peer's delayed ACK, ~40 ms per hop (see `gst-room bench`).
    let tcp = TcpConfigAcceptor::new(TcpSocketConfig::new().nodelay(true));
    let server = axum_server::Server::from_listener(listener).handle(handle);
    // The peer address is needed to throttle wrong tokens per address.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(config) => {
            let acceptor = RustlsAcceptor::new(config).acceptor(tcp);
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
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(why) = app.origins.check(&headers) {
        tracing::info!(%addr, "refused a WebSocket: {why}");
        return web_guard::forbidden(&why);
    }
    let Ok(permit) = app.connections.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let App {
        hub,
        config,
        shutdown,
        tasks,
        access,
        cluster,
        ..
    } = app;
    let client = connection::Client {
        addr,
        access,
        cluster,
    };
    // Small buffers: tungstenite's 128 KiB defaults dominated memory per participant, and
    // every frame is flushed at once anyway.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                connection::serve(socket, hub, config, shutdown, client).await;
                drop(permit);
            })
        })
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

/// `ok`; with `--redis`, also whether Redis answers (503 while it does not: joins are refused).
async fn health(State(app): State<App>) -> Response {
    match &app.cluster {
        None => "ok\n".into_response(),
        Some(cluster) if cluster.is_available() => "ok\nredis: connected\n".into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis: unavailable\n").into_response(),
    }
}
