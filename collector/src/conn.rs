//! Connection limits (issue 17 item 2): at most `MESHAUDIT_MAX_CONNECTIONS`
//! client connections (more are closed as they arrive, before TLS or HTTP
//! costs anything), and a connection that neither reads nor writes a byte
//! for `MESHAUDIT_IDLE_TIMEOUT_SEC` is closed, whatever it was waiting for:
//! headers, a body, or the next request. The header and body deadlines are
//! set in [`crate::server`] (hyper) and [`crate::ingest::body`].
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::metrics::Metrics;
use axum_server::accept::Accept;
use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// An acceptor that takes a connection slot and adds the idle deadline.
#[derive(Clone)]
pub struct LimitAcceptor {
    slots: Arc<Semaphore>,
    idle: Duration,
    metrics: Arc<Metrics>,
}

impl LimitAcceptor {
    pub fn new(max_connections: usize, idle: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            idle,
            metrics,
        }
    }
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Limited<TcpStream>;
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => ready(Ok((
                Limited::new(stream, self.idle, permit, self.metrics.clone()),
                service,
            ))),
            Err(_) => {
                // Dropping the stream closes it: the client sees the refusal
                // at once instead of a connection that never answers.
                self.metrics.connections_refused.inc();
                ready(Err(io::Error::other("connection limit reached")))
            }
        }
    }
}

/// A stream holding a connection slot, closed after `idle` without I/O.
pub struct Limited<S> {
    inner: S,
    idle: Duration,
    last_io: Instant,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Limited<S> {
    fn new(inner: S, idle: Duration, slot: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connections_open.inc();
        let now = Instant::now();
        Self {
            inner,
            idle,
            last_io: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            metrics,
            _slot: slot,
        }
    }

    /// Called when the inner stream is not ready: `Ready` once the
    /// connection has been idle for too long. The timer is re-armed lazily
    /// (from `last_io`) rather than on every byte.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_io + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<S> Limited<S> {
    /// A write's outcome: progress resets the idle clock; not ready checks it.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.last_io = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S> Drop for Limited<S> {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_io = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_cut_after_the_idle_time_an_active_one_is_not() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let slots = Arc::new(Semaphore::new(1));
        let (client, server) = tokio::io::duplex(64);
        let permit = slots.clone().try_acquire_owned().unwrap();
        let mut s = Limited::new(server, Duration::from_secs(10), permit, metrics.clone());
        assert_eq!(metrics.connections_open.get(), 1);
        let mut client = client;
        // Activity keeps it open past the idle time.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
        }
        // Silence closes it.
        let mut b = [0u8; 1];
        let err = s.read(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(s);
        assert_eq!(metrics.connections_open.get(), 0);
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
    }
}
