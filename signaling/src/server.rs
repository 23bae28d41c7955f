//! The HTTP side: one port serves the WebSocket (`/ws`), the conference page (`/`), a health
//! check (`/healthz`) and the operators' room list (`/rooms`).
//!
//! [`run`] is the whole server: the launcher's `server` command and the tests call it with a
//! bound listener and a shutdown future. On shutdown every connection sends a close frame and
//! `run` returns once all connection tasks have ended.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use crate::Config;
use crate::connection::{self, HARD_FRAME_LIMIT};
use crate::hub::Hub;
use crate::rooms::RoomRules;

/// Initial read buffer of a WebSocket; it grows for larger frames.
const READ_BUFFER: usize = 8 * 1024;

/// What every request handler shares.
#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    config: Arc<Config>,
    /// Caps open WebSockets; a permit lives as long as its connection task.
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Serves until `shutdown` completes, then closes every connection and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rules = RoomRules {
        capacity: config.max_participants,
        token: config.token.clone(),
        ice_servers: config.ice_servers.clone(),
    };
    let app = App {
        hub: Arc::new(Hub::new(rules)),
        connections: Arc::new(Semaphore::new(config.max_connections)),
        config: Arc::new(config),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };
    let router = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/rooms", get(rooms))
        .fallback_service(ServeDir::new(&app.config.web_dir))
        .with_state(app.clone());

    let cancel = app.shutdown.clone();
    // Signaling is small messages answered at once: without TCP_NODELAY, Nagle's algorithm
    // holds a second frame until the peer's delayed ACK, ~40 ms per hop (see `gst-room bench`).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await;
    // Upgraded connections are not the HTTP server's any more: wait for their close frames.
    app.shutdown.cancel();
    app.tasks.close();
    app.tasks.wait().await;
    served
}

async fn upgrade(State(app): State<App>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = app.connections.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let App {
        hub,
        config,
        shutdown,
        tasks,
        ..
    } = app;
    // Small buffers: tungstenite's 128 KiB defaults dominated memory per participant, and
    // every frame is flushed at once anyway.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                connection::serve(socket, hub, config, shutdown).await;
                drop(permit);
            })
        })
}

async fn rooms(State(app): State<App>) -> impl IntoResponse {
    axum::Json(app.hub.summary())
}
