//! A write timeout on every connection a server accepts: a peer that takes no byte
//! for [`Limits::write_timeout`](crate::Limits::write_timeout) while the server has
//! bytes for it is dropped.
//!
//! It sits on the connection, not in the SSE body, because a reader that stops
//! reading stops the body too: once hyper's write buffer is full it no longer pulls
//! the body, so nothing in the body runs to notice. What does run is hyper's write
//! to the socket, pending; this is where the clock is. A connection with nothing to
//! send (an idle tail between pings) is not timed: it costs no buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A TCP connection whose writes fail with [`io::ErrorKind::TimedOut`] once the
/// socket has taken no byte for the timeout; hyper then drops the connection and
/// the response body (a tail, an archive being read) with it.
#[derive(Debug)]
pub struct WriteTimeout {
    io: TcpStream,
    timeout: Duration,
    /// Runs while a write is pending; created on the first stall, then reset.
    clock: Option<Pin<Box<Sleep>>>,
    /// Whether `clock` is running for the current stall.
    armed: bool,
    timed_out: bool,
}

impl WriteTimeout {
    /// `io` with a write timeout of `timeout`.
    pub fn new(io: TcpStream, timeout: Duration) -> Self {
        WriteTimeout {
            io,
            timeout,
            clock: None,
            armed: false,
            timed_out: false,
        }
    }

    fn timed_out_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer took no byte for {:?}", self.timeout),
        )
    }

    /// Polls one write-side operation, timing it while it is pending.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.timed_out {
            return Poll::Ready(Err(self.timed_out_error()));
        }
        if let Poll::Ready(done) = op(Pin::new(&mut self.io), cx) {
            // Progress (or an error of its own): the next stall starts a new clock.
            self.armed = false;
            return Poll::Ready(done);
        }
        let deadline = Instant::now() + self.timeout;
        let clock = self
            .clock
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            clock.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(clock.as_mut().poll(cx));
        self.timed_out = true;
        // Reset rather than close: the kernel drops what the peer never took at once,
        // instead of keeping it (and retrying it) for minutes after the close, and
        // the peer sees the connection end without having to read up to it.
        let _ = self.io.set_zero_linger();
        Poll::Ready(Err(self.timed_out_error()))
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().timed(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .timed(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().timed(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.timed_out {
            // Nothing to say to a peer that takes nothing: the reset ends it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
