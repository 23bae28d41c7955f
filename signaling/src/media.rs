//! The media path through the server (`--media sfu`): the media engine (the gst-room-sfu crate:
//! str0m, one UDP port for every peer) and the tasks that tie it to the room rules.
//!
//! The rules decide (`crate::rooms`: which sessions exist, who offers); the engine only carries
//! media. The hub hands the rules' [`MediaCommand`]s to one task, [`carry_out`], through an
//! ordered queue: it calls the engine one command at a time, in the order the rules produced
//! them (a candidate never overtakes its session's offer), and feeds what the engine answers
//! (its SDP, or why it refused) back to the rules through the hub. The hub's lock is never held
//! while the engine works: the queue is filled under the lock (without waiting), emptied by the
//! task outside it. A second task, [`follow_events`], turns the engine's own events (a session
//! lost) into inputs of the rules the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::rooms::{MediaCommand, StreamRef};
use room_sfu::{Sfu, SfuConfig, SfuEvent, SfuLimits, SfuStats, StreamKey};

/// The default UDP port of the media engine (`--media-port`).
pub const DEFAULT_MEDIA_PORT: u16 = 7882;
/// Commands waiting for the engine; more make the server refuse the sessions concerned
/// ("the media server is overloaded") rather than queue without bound.
const QUEUE: usize = 4096;
/// How often the server logs the engine's figures while it carries sessions.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where media goes, and with `Sfu` how the engine is reached.
#[derive(Debug, Clone, Default)]
pub enum MediaConfig {
    /// Peer to peer: the server carries no media (`--media mesh`, the default).
    #[default]
    Mesh,
    /// Through the server (`--media sfu`).
    Sfu(SfuSettings),
}

/// The media engine's socket and the addresses it gives peers.
#[derive(Debug, Clone)]
pub struct SfuSettings {
    /// The UDP address the engine binds (`--media-port` on the listen address).
    pub bind: SocketAddr,
    /// The addresses peers send media to (its ICE candidates, `--media-ip`). Empty: the bound
    /// address, or every local address when bound to a wildcard.
    pub advertised: Vec<IpAddr>,
}

/// The running media engine, for `/healthz` and the log.
#[derive(Clone)]
pub struct Media {
    sfu: Sfu,
    addr: SocketAddr,
}

impl Media {
    /// Starts the engine on `settings.bind`, attaches it to `hub`, and spawns the tasks that
    /// feed it (on `tasks`; they end with `shutdown`).
    pub async fn start(
        hub: Arc<Hub>,
        settings: &SfuSettings,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> std::io::Result<Media> {
        let config = SfuConfig {
            bind: settings.bind,
            advertised: settings.advertised.clone(),
            limits: SfuLimits::default(),
        };
        let (sfu, events, engine) = Sfu::start(config, shutdown.clone()).await.map_err(|e| {
            std::io::Error::other(format!(
                "cannot start the media server on udp {}: {e}",
                settings.bind
            ))
        })?;
        let addr = sfu.local_addr();
        let (commands, queue) = mpsc::channel(QUEUE);
        hub.attach_media(commands);
        tasks.spawn(carry_out(sfu.clone(), queue, hub.clone(), shutdown.clone()));
        tasks.spawn(follow_events(events, hub));
        tasks.spawn(log_figures(sfu.clone(), shutdown));
        tasks.spawn(async move {
            let _ = engine.await;
        });
        tracing::info!("media through the server on udp {addr} (open this UDP port)");
        Ok(Media { sfu, addr })
    }

    /// The engine's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lines for `/healthz`: the media port, the sessions, the forwarding rate.
    pub fn health(&self) -> String {
        let stats = self.sfu.stats();
        format!(
            "media: sfu udp {}\nmedia sessions: {} ({} connected)\nmedia frames forwarded/s: {}\nmedia datagrams sent/s: {}\nmedia datagrams dropped: {}\n",
            self.addr.port(),
            stats.sessions,
            stats.connected_sessions,
            stats.frames_forwarded_per_second,
            stats.datagrams_sent_per_second,
            dropped(&stats)
        )
    }
}

/// Datagrams the engine dropped, for every reason.
fn dropped(stats: &SfuStats) -> u64 {
    let d = stats.dropped;
    d.malformed + d.unknown_ufrag + d.unknown_address + d.rejected + d.session_error + d.send_failed
}

fn key(stream: StreamRef) -> StreamKey {
    StreamKey {
        room: stream.room,
        participant: stream.participant,
        stream: stream.stream,
    }
}

/// Calls the engine for each command, in order, and gives its answers to the rules, until
/// `shutdown` (the hub, which holds the queue's sender, outlives this task).
async fn carry_out(
    sfu: Sfu,
    mut queue: mpsc::Receiver<MediaCommand>,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            _ = shutdown.cancelled() => return,
            command = queue.recv() => command,
        };
        let Some(command) = command else { return };
        let session = command.session().to_owned();
        let described = match command {
            MediaCommand::Publish { stream, offer, .. } => {
                sfu.publish(&session, key(stream), &offer).await.map(Some)
            }
            MediaCommand::Subscribe {
                stream,
                audio,
                video,
                ..
            } => sfu
                .subscribe(&session, key(stream), audio, video)
                .await
                .map(Some),
            MediaCommand::View { stream, offer, .. } => {
                sfu.view(&session, key(stream), &offer).await.map(Some)
            }
            MediaCommand::Answer { answer, .. } => {
                sfu.answer(&session, &answer).await.map(|_| None)
            }
            // A candidate the engine cannot use (end-of-candidates, an mDNS name) leaves the
            // session as it is: it still has the others, and the peer's checks.
            MediaCommand::Candidate { candidate, .. } => {
                if let Err(err) = sfu.remote_candidate(&session, &candidate).await {
                    tracing::debug!(session, "candidate {candidate:?} not used: {err}");
                }
                Ok(None)
            }
            MediaCommand::Close { .. } => {
                sfu.close(&session).await;
                Ok(None)
            }
        };
        match described {
            Ok(Some(sdp)) => hub.update(|rules| rules.media_description(&session, sdp)),
            Ok(None) => {}
            Err(err) => {
                tracing::info!(session, "media refused: {err}");
                let reason = format!("media refused: {err}");
                hub.update(|rules| rules.media_failed(&session, &reason));
            }
        }
    }
}

/// The engine's events: a lost session ends for its participant.
async fn follow_events(mut events: mpsc::Receiver<SfuEvent>, hub: Arc<Hub>) {
    while let Some(event) = events.recv().await {
        match event {
            SfuEvent::Connected { session } => tracing::debug!(session, "media connected"),
            SfuEvent::Failed { session, reason } => {
                tracing::info!(session, "media lost: {reason}");
                let reason = format!("media lost: {reason}");
                hub.update(|rules| rules.media_failed(&session, &reason));
            }
        }
    }
}

/// Logs the engine's figures every [`LOG_EVERY`] while it carries sessions (and once when the
/// last one ends).
async fn log_figures(sfu: Sfu, shutdown: CancellationToken) {
    let mut last_sessions = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LOG_EVERY) => {}
        }
        let stats = sfu.stats();
        if stats.sessions > 0 || last_sessions > 0 {
            tracing::info!(
                "media: {} sessions ({} connected), {} frames/s forwarded, {} datagrams/s sent, {} datagrams dropped",
                stats.sessions,
                stats.connected_sessions,
                stats.frames_forwarded_per_second,
                stats.datagrams_sent_per_second,
                dropped(&stats)
            );
        }
        last_sessions = stats.sessions;
    }
}
