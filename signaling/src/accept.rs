//! Accepting TCP connections: TCP_NODELAY, and a cap on concurrent connections per address.
//!
//! The cap counts TCP connections, whatever they carry (HTTP requests, half-sent requests,
//! WebSockets): one address cannot hold more sockets than `--max-connections-per-ip`, so it
//! cannot starve the file-descriptor table or the WebSocket slots of everyone else. The count
//! lives in a guard inside the accepted stream, so it follows the socket through the HTTP
//! upgrade into the WebSocket task and goes down exactly when the socket is closed.

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

/// What an address over its cap reads before the socket closes.
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n\
Content-Length: 39\r\nConnection: close\r\n\r\ntoo many connections from your address\n";

/// Open connections per address, shared by every accept.
#[derive(Debug, Clone)]
pub struct PerAddress {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// At most `max` concurrent connections per address.
    pub fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it holds `max` already.
    fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        let ip = counted_as(ip);
        let mut open = self.open.lock().unwrap();
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
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
struct AddressSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // No entry per address that ever connected: the map stays as small as the
                // set of addresses connected now.
                open.remove(&self.ip);
            }
        }
    }
}

/// The axum-server acceptor of the plain TCP listener (a TLS acceptor wraps it).
#[derive(Debug, Clone)]
pub struct LimitedAcceptor {
    per_address: PerAddress,
}

impl LimitedAcceptor {
    /// Accepts at most `per_address.max` connections per address at a time.
    pub fn new(per_address: PerAddress) -> LimitedAcceptor {
        LimitedAcceptor { per_address }
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
        match self.per_address.take(ip) {
            Some(slot) => Ok(CountedStream {
                inner: stream,
                _slot: slot,
            }),
            None => {
                tracing::debug!(%ip, "connection refused: too many from this address");
                // Best effort, never waiting: the socket buffer of a fresh connection is empty.
                let _ = stream.try_write(TOO_MANY);
                Err(io::Error::other("too many connections from this address"))
            }
        }
    }
}

/// An accepted TCP stream that holds its address's slot until it is dropped.
#[derive(Debug)]
pub struct CountedStream {
    inner: TcpStream,
    _slot: AddressSlot,
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
        let per = PerAddress::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let first = per.take(a).unwrap();
        let _second = per.take(a).unwrap();
        assert!(per.take(a).is_none());
        assert!(per.take(b).is_some());
        drop(first);
        assert!(per.take(a).is_some());
        // Two addresses of one IPv6 /64 share their slots.
        let x: IpAddr = "2001:db8::1".parse().unwrap();
        let y: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _x = per.take(x).unwrap();
        let _y = per.take(y).unwrap();
        assert!(per.take(x).is_none());
        assert!(per.take("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}
