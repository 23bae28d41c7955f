//! ICE over TCP on the media port (RFC 6544): for peers whose network drops UDP.
//!
//! The server advertises a *passive* TCP host candidate beside each UDP one (same addresses,
//! the TCP port); a peer that cannot use UDP connects to it (its candidates are `tcptype
//! active`) and sends its ICE checks, DTLS and SRTP over that connection, each packet framed
//! by a two-byte length (RFC 4571). str0m handles TCP candidates like UDP ones (sans-IO: the
//! protocol is a field of each input and output); this module only carries the framed packets.
//!
//! One task accepts connections; each connection has a reader task, which hands every packet
//! to the engine as [`TcpEvent::Packet`] with the connection's remote address, and a writer
//! task, which frames what the engine sends to that address. The engine demultiplexes TCP
//! packets exactly as datagrams (by ICE ufrag, then by the learned source address).
//!
//! Bounds: at most as many connections at once as the engine takes sessions
//! ([`crate::SfuLimits::max_sessions`]; more are closed at once), a connection that carries
//! nothing for [`IDLE`] is closed, and each connection queues at most
//! [`WRITE_QUEUE`] packets for writing (more are dropped, as a full UDP socket buffer drops).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::addresses::unmapped;

/// A connection without a packet this long is closed (a connected peer sends media and
/// consent checks every few seconds).
pub(crate) const IDLE: Duration = Duration::from_secs(30);
/// Packets queued for one connection's writer.
const WRITE_QUEUE: usize = 1024;
/// Events queued for the engine.
const EVENT_QUEUE: usize = 4096;

/// What the TCP side tells the engine.
pub(crate) enum TcpEvent {
    /// A connection from `peer` is open; packets for it go to `writer`.
    Opened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// One framed packet from `peer`.
    Packet { peer: SocketAddr, packet: Vec<u8> },
    /// The connection from `peer` is closed.
    Closed { peer: SocketAddr },
}

/// The engine's side: the open connections' writers, by remote address.
#[derive(Default)]
pub(crate) struct TcpConnections {
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
}

impl TcpConnections {
    pub(crate) fn opened(&mut self, peer: SocketAddr, writer: mpsc::Sender<Vec<u8>>) {
        self.writers.insert(peer, writer);
    }

    pub(crate) fn closed(&mut self, peer: SocketAddr) {
        self.writers.remove(&peer);
    }

    /// Queues `packet` for the connection from `peer`; false when there is none or its queue
    /// is full.
    pub(crate) fn send(&self, peer: SocketAddr, packet: &[u8]) -> bool {
        self.writers
            .get(&peer)
            .is_some_and(|writer| writer.try_send(packet.to_vec()).is_ok())
    }
}

/// Starts accepting on `listener`, at most `max_connections` open at once (until `cancel`);
/// the events come out of the receiver.
pub(crate) fn start(
    listener: TcpListener,
    max_connections: usize,
    cancel: CancellationToken,
) -> mpsc::Receiver<TcpEvent> {
    let (events, receiver) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(accept(listener, max_connections, events, cancel));
    receiver
}

async fn accept(
    listener: TcpListener,
    max_connections: usize,
    events: mpsc::Sender<TcpEvent>,
    cancel: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: wait a little rather than spin.
                debug!(%error, "media TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= max_connections {
            debug!(%peer, "media TCP connection refused: too many open");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let peer = unmapped(peer);
        let (reader, writer) = stream.into_split();
        let (queue, queued) = mpsc::channel(WRITE_QUEUE);
        if events
            .send(TcpEvent::Opened {
                peer,
                writer: queue,
            })
            .await
            .is_err()
        {
            return;
        }
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(write(writer, queued));
        let (events, open) = (events.clone(), open.clone());
        tokio::spawn(async move {
            read(reader, peer, &events).await;
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = events.send(TcpEvent::Closed { peer }).await;
        });
    }
}

/// Reads RFC 4571 frames until the connection ends, idles for [`IDLE`], or the engine is gone.
async fn read(mut reader: OwnedReadHalf, peer: SocketAddr, events: &mpsc::Sender<TcpEvent>) {
    loop {
        let packet = match tokio::time::timeout(IDLE, read_frame(&mut reader)).await {
            Ok(Ok(packet)) => packet,
            Ok(Err(_)) | Err(_) => return,
        };
        if events
            .send(TcpEvent::Packet { peer, packet })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// One frame: a two-byte big-endian length, then that many bytes.
async fn read_frame(reader: &mut OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let length = reader.read_u16().await?;
    let mut packet = vec![0; usize::from(length)];
    reader.read_exact(&mut packet).await?;
    Ok(packet)
}

/// Writes each queued packet as a frame until the engine forgets the connection.
async fn write(mut writer: OwnedWriteHalf, mut queued: mpsc::Receiver<Vec<u8>>) {
    while let Some(packet) = queued.recv().await {
        if write_frame(&mut writer, &packet).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_frame(writer: &mut OwnedWriteHalf, packet: &[u8]) -> std::io::Result<()> {
    let Ok(length) = u16::try_from(packet.len()) else {
        // Nothing str0m sends is this large; never a frame with a wrong length.
        return Ok(());
    };
    let mut frame = Vec::with_capacity(2 + packet.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(packet);
    writer.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn frames_both_ways_and_a_closed_connection_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let mut events = start(listener, 2, cancel.clone());
        let mut client = TcpStream::connect(addr).await.unwrap();
        let Some(TcpEvent::Opened { peer, writer }) = events.recv().await else {
            panic!("no connection");
        };
        assert_eq!(peer, client.local_addr().unwrap());
        // Two frames in one write, and an empty one.
        client
            .write_all(&[0, 3, 1, 2, 3, 0, 1, 9, 0, 0])
            .await
            .unwrap();
        for expected in [vec![1, 2, 3], vec![9], vec![]] {
            let Some(TcpEvent::Packet { packet, .. }) = events.recv().await else {
                panic!("no packet");
            };
            assert_eq!(packet, expected);
        }
        let mut connections = TcpConnections::default();
        connections.opened(peer, writer);
        assert!(connections.send(peer, &[7, 7]));
        let mut framed = [0u8; 4];
        client.read_exact(&mut framed).await.unwrap();
        assert_eq!(framed, [0, 2, 7, 7]);
        // A length with too few bytes after it, then the end: closed.
        client.write_all(&[0, 5, 1]).await.unwrap();
        drop(client);
        assert!(matches!(events.recv().await, Some(TcpEvent::Closed { .. })));
        connections.closed(peer);
        assert!(!connections.send(peer, &[1]));
        // At most two open at once: the third is closed as it comes.
        let _second = TcpStream::connect(addr).await.unwrap();
        let _first_again = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(events.recv().await, Some(TcpEvent::Opened { .. })));
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        cancel.cancel();
    }
}
