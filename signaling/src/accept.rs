//! Accepting TCP connections: TCP_NODELAY, and caps on concurrent connections, in all and per
//! address.
//!
//! The caps count TCP connections, whatever they carry (HTTP requests, half-sent requests,
//! WebSockets): the server holds at most `--max-connections` sockets, so a crowd of unfinished
//! requests cannot use up the process's file descriptors (and with them `/healthz`, Redis and
//! the connections already served); one address holds at most `--max-connections-per-ip`, so
//! it cannot take the whole budget from everyone else. The counts live in a guard inside the
//! accepted stream, so they follow the socket through the HTTP upgrade into the WebSocket task
//! and go down exactly when the socket is closed. A connection over a cap is accepted, answered
//! at once (HTTP 503 when the server is full, 429 when its address is) and closed: it is never
//! left in the listen queue until the client gives up.
//!
//! The defaults of `--max-connections` and `--max-unjoined` follow the process's file limit
//! (RLIMIT_NOFILE), see [`FileBudget`].

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a connection over its address's cap reads before the socket closes.
const TOO_MANY_FROM_ADDRESS: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n\
Content-Length: 39\r\nConnection: close\r\n\r\ntoo many connections from your address\n";

/// What a connection over the server's cap reads before the socket closes.
const SERVER_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n";

/// File descriptors kept out of the connection cap whatever the limit: standard streams, the
/// runtime's epoll and wake-up descriptors, the listener, signal handling, the TLS files read
/// on SIGHUP, the Redis connections of `--redis` (a handful), name lookups.
const FIXED_RESERVE: u64 = 64;

/// The share of the file limit kept out of the connection cap on top of [`FIXED_RESERVE`] (one
/// `RESERVE_SHARE`th): descriptors whose number grows with the load, which a fixed number
/// cannot cover. A page file is open while it is sent (one per request being answered), and
/// `gst-room demo` runs its media pipelines in the server's process, every WebRTC session with
/// UDP sockets of its own.
const RESERVE_SHARE: u64 = 8;

/// What the process's file limit (the soft RLIMIT_NOFILE, `ulimit -n`) leaves for client
/// connections, and the caps that follow from it: the defaults of `--max-connections` and
/// `--max-unjoined`.
///
/// Each connection is one descriptor; the rest of the limit is kept for everything else the
/// process opens: [`FIXED_RESERVE`] plus one [`RESERVE_SHARE`]th of the limit (1 024 leaves 832
/// connections; 256 leaves 160). The caps never exceed the fixed defaults
/// ([`crate::DEFAULT_MAX_CONNECTIONS`], [`crate::DEFAULT_MAX_UNJOINED`]), which bound memory
/// when the file limit is high. The unjoined cap is a tenth of the connection cap, as those
/// fixed defaults are: connections that never join leave most of the budget to participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBudget {
    /// The soft RLIMIT_NOFILE; `None` when unlimited.
    pub nofile: Option<u64>,
    /// The descriptors kept out of the connection cap (0 without a limit).
    pub reserve: u64,
    /// The most connections the limit allows (`usize::MAX` without a limit).
    pub connections: usize,
}

impl FileBudget {
    /// The budget of a process whose soft file limit is `nofile` (`None`: no limit).
    pub fn for_limit(nofile: Option<u64>) -> FileBudget {
        let Some(limit) = nofile else {
            return FileBudget {
                nofile,
                reserve: 0,
                connections: usize::MAX,
            };
        };
        let reserve = FIXED_RESERVE + limit / RESERVE_SHARE;
        let left = limit.saturating_sub(reserve).max(1);
        FileBudget {
            nofile,
            reserve,
            connections: usize::try_from(left).unwrap_or(usize::MAX),
        }
    }

    /// The budget of this process, from its soft RLIMIT_NOFILE now.
    pub fn of_this_process() -> FileBudget {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        FileBudget::for_limit(limit.current)
    }

    /// The default of `--max-connections`.
    pub fn max_connections(&self) -> usize {
        self.connections.min(crate::DEFAULT_MAX_CONNECTIONS)
    }

    /// The default of `--max-unjoined`.
    pub fn max_unjoined(&self) -> usize {
        (self.max_connections() / 10).clamp(1, crate::DEFAULT_MAX_UNJOINED)
    }

    /// Logs the caps in force and what the file limit allows; warns when `max_connections`
    /// is more than that (past the limit, accepting fails and new clients wait in the listen
    /// queue instead of being refused).
    pub fn log(&self, max_connections: usize, max_unjoined: usize) {
        let Some(nofile) = self.nofile else {
            tracing::info!(
                "connection caps: --max-connections {max_connections}, --max-unjoined \
                 {max_unjoined} (RLIMIT_NOFILE unlimited)"
            );
            return;
        };
        tracing::info!(
            "connection caps: --max-connections {max_connections}, --max-unjoined {max_unjoined} \
             (RLIMIT_NOFILE {nofile} allows {} connections, keeping {} descriptors for files, \
             Redis and media)",
            self.connections,
            self.reserve
        );
        if max_connections > self.connections {
            tracing::warn!(
                "--max-connections {max_connections} is more than RLIMIT_NOFILE {nofile} allows \
                 ({}): raise the file limit (ulimit -n, systemd LimitNOFILE=) or lower the cap",
                self.connections
            );
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The server holds `--max-connections` connections.
    ServerFull,
    /// The client's address holds `--max-connections-per-ip`.
    AddressFull,
}

/// The open connections, in all and per address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The connection caps with the open connections they count, shared by every accept.
#[derive(Debug, Clone)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_address: usize,
    open: Arc<Mutex<Open>>,
}

impl ConnectionCaps {
    /// At most `max_total` concurrent connections, `max_per_address` of them from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> ConnectionCaps {
        ConnectionCaps {
            max_total,
            max_per_address,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, or why there is none.
    fn take(&self, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let ip = counted_as(ip);
        let mut open = self.open.lock().unwrap();
        if open.total >= self.max_total {
            return Err(Refusal::ServerFull);
        }
        let count = open.per_address.entry(ip).or_default();
        if *count >= self.max_per_address {
            return Err(Refusal::AddressFull);
        }
        *count += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

/// The address a connection counts against: an IPv4 client on a dual-stack socket is one
/// address however it is written, and an IPv6 client is its /64 (one host usually holds a whole
/// /64, as the wrong-token throttle of `auth` assumes too).
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
struct ConnectionSlot {
    ip: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        open.total -= 1;
        if let Some(count) = open.per_address.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // No entry per address that ever connected: the map stays as small as the
                // set of addresses connected now.
                open.per_address.remove(&self.ip);
            }
        }
    }
}

/// The axum-server acceptor of the plain TCP listener (a TLS acceptor wraps it).
#[derive(Debug, Clone)]
pub struct LimitedAcceptor {
    caps: ConnectionCaps,
}

impl LimitedAcceptor {
    /// Accepts connections within `caps`.
    pub fn new(caps: ConnectionCaps) -> LimitedAcceptor {
        LimitedAcceptor { caps }
    }
}

impl<S> Accept<TcpStream, S> for LimitedAcceptor {
    type Stream = CountedStream;
    type Service = S;
    type Future = Ready<io::Result<(CountedStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        ready(self.admit(stream).map(|stream| (stream, service)))
    }
}

impl LimitedAcceptor {
    fn admit(&self, stream: TcpStream) -> io::Result<CountedStream> {
        // Signaling is small messages answered at once: without TCP_NODELAY, Nagle's algorithm
        // holds a second frame until the peer's delayed ACK, ~40 ms per hop (`gst-room bench`).
        stream.set_nodelay(true)?;
        let ip = stream.peer_addr()?.ip();
        let (answer, why) = match self.caps.take(ip) {
            Ok(slot) => {
                return Ok(CountedStream {
                    inner: stream,
                    _slot: slot,
                });
            }
            Err(Refusal::ServerFull) => (SERVER_FULL, "too many connections"),
            Err(Refusal::AddressFull) => (
                TOO_MANY_FROM_ADDRESS,
                "too many connections from this address",
            ),
        };
        tracing::debug!(%ip, "connection refused: {why}");
        // Best effort, never waiting: the socket buffer of a fresh connection is empty. The
        // socket closes here, as `stream` is dropped.
        let _ = stream.try_write(answer);
        Err(io::Error::other(why))
    }
}

/// An accepted TCP stream that holds its slot until it is dropped.
#[derive(Debug)]
pub struct CountedStream {
    inner: TcpStream,
    _slot: ConnectionSlot,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_address_and_come_back_on_drop() {
        let caps = ConnectionCaps::new(100, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let first = caps.take(a).unwrap();
        let _second = caps.take(a).unwrap();
        assert_eq!(caps.take(a).unwrap_err(), Refusal::AddressFull);
        assert!(caps.take(b).is_ok());
        drop(first);
        assert!(caps.take(a).is_ok());
        // Two addresses of one IPv6 /64 share their slots.
        let x: IpAddr = "2001:db8::1".parse().unwrap();
        let y: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _x = caps.take(x).unwrap();
        let _y = caps.take(y).unwrap();
        assert!(caps.take(x).is_err());
        assert!(caps.take("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_server_cap_counts_every_address_and_comes_back_on_drop() {
        let caps = ConnectionCaps::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        let first = caps.take(a).unwrap();
        let _second = caps.take(a).unwrap();
        let _third = caps.take(b).unwrap();
        assert_eq!(caps.take(c).unwrap_err(), Refusal::ServerFull);
        assert_eq!(caps.take(a).unwrap_err(), Refusal::ServerFull);
        drop(first);
        let _fourth = caps.take(c).unwrap();
        // Refusals took nothing: the counts are the open slots.
        let open = caps.open.lock().unwrap();
        assert_eq!(open.total, 3);
        assert_eq!(open.per_address.values().sum::<usize>(), 3);
    }

    #[test]
    fn the_file_limit_keeps_a_reserve_and_the_fixed_defaults_bound_the_caps() {
        // The systemd and login default.
        let budget = FileBudget::for_limit(Some(1024));
        assert_eq!((budget.reserve, budget.connections), (64 + 128, 832));
        assert_eq!((budget.max_connections(), budget.max_unjoined()), (832, 83));
        let small = FileBudget::for_limit(Some(256));
        assert_eq!((small.max_connections(), small.max_unjoined()), (160, 16));
        // A limit below the reserve still lets one client in.
        let tiny = FileBudget::for_limit(Some(20));
        assert_eq!((tiny.max_connections(), tiny.max_unjoined()), (1, 1));
        // A high limit, or none: memory, not descriptors, bounds the caps.
        for high in [Some(1 << 20), None] {
            let budget = FileBudget::for_limit(high);
            assert_eq!(budget.max_connections(), crate::DEFAULT_MAX_CONNECTIONS);
            assert_eq!(budget.max_unjoined(), crate::DEFAULT_MAX_UNJOINED);
        }
    }
}
