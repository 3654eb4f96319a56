//! TLS 1.3 0-RTT on the HTTPS listener (RFC 8446 §2.3, RFC 8470), on when
//! `node.tls_early_data` is set. tokio-rustls finishes the whole handshake before it hands over
//! a stream, so a request sent as early data would still wait for the client's Finished and
//! 0-RTT would save nothing. With early data on, HTTPS connections use [`EarlyTls`] instead: a
//! stream over a rustls `ServerConnection` that gives HTTP the early data as soon as it is
//! decrypted, and whose answer leaves as 0.5-RTT data (after the server's Finished, before the
//! client's), so a resuming client has its answer one round trip sooner.
//!
//! Replay: whoever captured a client's first flight can send it again. rustls accepts early
//! data only with single-use stateful resumption (no tickets), so a node accepts a session's
//! early data at most once, and a replayed connection never completes its handshake. What the
//! request path needs to know is therefore whether the handshake was still incomplete when a
//! request was read: [`EarlyTls::flag`] is true until then, and such a request may only be GET
//! or HEAD (others get 425 Too Early) and is forwarded with `Early-Data: 1` (RFC 8470 §5).

use rustls::{ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS server stream that reads early data before the handshake completes.
pub struct EarlyTls<IO> {
    io: IO,
    conn: ServerConnection,
    /// The transport reached end of file.
    eof: bool,
    /// True while the handshake is incomplete (what is read then is early data).
    handshaking: Arc<AtomicBool>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> EarlyTls<IO> {
    /// Run the handshake until HTTP can start: the handshake is complete, or the client's
    /// early data was accepted and the server's flight (up to its Finished) is sent. The
    /// caller bounds the wait.
    pub async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut s = EarlyTls {
            io,
            conn,
            eof: false,
            handshaking: Arc::new(AtomicBool::new(true)),
        };
        std::future::poll_fn(|cx| s.poll_ready(cx)).await?;
        s.note_progress();
        Ok(s)
    }

    /// The rustls connection (SNI, ALPN).
    pub fn connection(&self) -> &ServerConnection {
        &self.conn
    }

    /// True while this connection's handshake is incomplete: a request read now came as
    /// early data.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.handshaking.clone()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut write_blocked = false;
            while self.conn.wants_write() {
                match self.write_io(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        write_blocked = true;
                        break;
                    }
                }
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if !write_blocked && self.conn.early_data().is_some() {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS handshake: end of file",
                )));
            }
            match self.read_io(cx) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn note_progress(&self) {
        self.handshaking
            .store(self.conn.is_handshaking(), Ordering::Release);
    }

    /// Read TLS records from the transport and process them.
    fn read_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut r = SyncRead {
            io: &mut self.io,
            cx,
        };
        let n = match self.conn.read_tls(&mut r) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.conn.process_new_packets() {
            // Send the alert describing the error if we can; the error is what counts.
            let _ = self.write_io(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        self.note_progress();
        Poll::Ready(Ok(n))
    }

    /// Write pending TLS records to the transport.
    fn write_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut w = SyncWrite {
            io: &mut self.io,
            cx,
        };
        match self.conn.write_tls(&mut w) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            r => Poll::Ready(r),
        }
    }

    /// Write what rustls holds; `Ok(true)` when all of it went out.
    fn flush_tls(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.write_io(cx) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for EarlyTls<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Early data comes first in the stream, then what follows the handshake.
            if let Some(mut early) = this.conn.early_data() {
                let n = early.read(buf.initialize_unfilled())?;
                if n > 0 {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
            }
            match this.conn.reader().read(buf.initialize_unfilled()) {
                // 0: the client closed the connection with close_notify.
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Handshake messages (the session tickets after the client's Finished) go out
            // before waiting for more input.
            this.flush_tls(cx)?;
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.read_io(cx) {
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EarlyTls<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut pos = 0;
        while pos < buf.len() {
            let n = this.conn.writer().write(&buf[pos..])?;
            pos += n;
            if n == 0 && !this.conn.wants_write() {
                // rustls holds plaintext it may not send before the handshake completes (not
                // the case once early data was accepted, which allows 0.5-RTT data): read on
                // so that the handshake finishes.
                if pos > 0 {
                    return Poll::Ready(Ok(pos));
                }
                match this.read_io(cx) {
                    Poll::Ready(Ok(0)) => {
                        this.eof = true;
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !this.flush_tls(cx)? {
                // The transport is full: report what rustls took, or wait.
                return if pos == 0 {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(pos))
                };
            }
        }
        Poll::Ready(Ok(pos))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        if !this.flush_tls(cx)? {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.send_close_notify();
        if !this.flush_tls(cx)? {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `std::io::Read` over an async transport: `WouldBlock` when it has nothing yet.
struct SyncRead<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for SyncRead<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// `std::io::Write` over an async transport: `WouldBlock` when it is full.
struct SyncWrite<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncWrite + Unpin> Write for SyncWrite<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
