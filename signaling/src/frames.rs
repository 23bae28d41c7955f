//! Watching WebSocket frames go by, to time out messages that never finish.
//!
//! tungstenite assembles fragmented messages and enforces the frame and message size limits as
//! the fragments arrive, but it only hands out whole messages: a peer that sends the first
//! 900 KiB of a message and then only answers pings would pin that memory for as long as it
//! stays connected, and nothing above tungstenite can see it. [`MessageWatch`] sits between the
//! upgraded socket and tungstenite, reads the frame headers in the byte stream (with
//! tungstenite's own header parser) and records since when a data message has been under way.
//! The connection closes a socket whose message is unfinished for longer than
//! `--message-timeout`. Control frames (ping, pong, close) may legally arrive between the
//! fragments of a message; they do not count as progress.
//!
//! It only observes: the bytes reach tungstenite unchanged, and whatever tungstenite refuses
//! (bad headers, oversized frames) ends the connection there.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;

/// The longest WebSocket frame header (a masked frame with a 64-bit length).
const MAX_HEADER: usize = 14;

/// Since when the peer's current data message has been under way, shared between the watch
/// (which sets it) and the connection task (which reads it).
#[derive(Debug, Clone, Default)]
pub struct MessageClock(Arc<Mutex<Option<Instant>>>);

impl MessageClock {
    /// How long the current message has been unfinished; zero between messages.
    pub fn unfinished_for(&self) -> Duration {
        self.0
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn set(&self, since: Option<Instant>) {
        *self.0.lock().unwrap() = since;
    }
}

/// A socket whose incoming WebSocket frames are watched (see the module doc).
#[derive(Debug)]
pub struct MessageWatch<S> {
    inner: S,
    clock: MessageClock,
    /// Header bytes of the next frame read so far.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The current frame is a data frame with FIN set: its end ends the message.
    ends_message: bool,
    /// A data message has started and not ended.
    in_message: bool,
    /// The stream stopped making sense (tungstenite will refuse it too): stop parsing.
    lost: bool,
}

impl<S> MessageWatch<S> {
    /// Watches `inner`, which must be at the start of the WebSocket byte stream.
    pub fn new(inner: S) -> (MessageWatch<S>, MessageClock) {
        let clock = MessageClock::default();
        let watch = MessageWatch {
            inner,
            clock: clock.clone(),
            header: Vec::with_capacity(MAX_HEADER),
            payload_left: 0,
            ends_message: false,
            in_message: false,
            lost: false,
        };
        (watch, clock)
    }

    /// Follows the frames through bytes just read.
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let n = bytes
                    .len()
                    .min(self.payload_left.try_into().unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            match FrameHeader::parse(&mut Cursor::new(&self.header)) {
                Ok(None) if self.header.len() < MAX_HEADER => {}
                Ok(Some((header, length))) => {
                    self.header.clear();
                    self.frame_started(&header, length);
                }
                Ok(None) | Err(_) => self.lost = true,
            }
        }
    }

    fn frame_started(&mut self, header: &FrameHeader, length: u64) {
        let is_data = matches!(header.opcode, OpCode::Data(_));
        if is_data && !self.in_message {
            self.in_message = true;
            self.clock.set(Some(Instant::now()));
        }
        self.ends_message = is_data && header.is_final;
        self.payload_left = length;
        if length == 0 {
            self.frame_done();
        }
    }

    fn frame_done(&mut self) {
        if self.ends_message {
            self.ends_message = false;
            self.in_message = false;
            self.clock.set(None);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MessageWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MessageWatch<S> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;

    /// A masked client frame, as bytes on the wire.
    fn frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
        let mut frame = Frame::message(payload.to_vec(), opcode, is_final);
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_message_is_unfinished_until_its_final_fragment_even_across_pings() {
        let (mut watch, clock) = MessageWatch::new(());
        let whole = frame(OpCode::Data(Data::Text), true, b"hello");
        // Byte by byte, as a slow peer would send it.
        for b in &whole[..whole.len() - 1] {
            watch.observe(std::slice::from_ref(b));
        }
        assert!(clock.0.lock().unwrap().is_some());
        watch.observe(&whole[whole.len() - 1..]);
        assert!(clock.0.lock().unwrap().is_none());

        watch.observe(&frame(OpCode::Data(Data::Text), false, &[b'x'; 70_000]));
        let mut pong = Frame::pong(Vec::new());
        pong.header_mut().mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        pong.format(&mut bytes).unwrap();
        watch.observe(&bytes);
        assert!(clock.0.lock().unwrap().is_some(), "a pong is not progress");
        watch.observe(&frame(OpCode::Data(Data::Continue), true, b"end"));
        assert!(clock.0.lock().unwrap().is_none());
        assert!(!watch.lost);
    }
}
