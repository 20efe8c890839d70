//! Connection limits: how many HTTP connections are open (in the listener's acceptor), how long
//! a new one may take to start its first request, and how many WebSockets one token holds.
//!
//! hyper times the reading of a request head (`header_read_timeout`, set in `lib.rs`), but only
//! once it parses HTTP/1. Before that, the TLS handshake and hyper-util's protocol sniffing (it
//! reads up to the 24 bytes of the HTTP/2 preface to choose HTTP/1 or HTTP/2) wait as long as
//! the client likes: a client that finishes TLS and sends nothing, or sends `PRI * HTTP/2.0\r\n`
//! and stops, would hold its connection for ever. So [`LimitedAcceptor`] gives each accepted
//! connection one deadline, `header_read_timeout_secs` after it was accepted, for the TLS
//! handshake and the sniffed bytes; hyper's own timer takes over from there.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// What hyper-util reads to tell HTTP/2 with prior knowledge from HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The reason counted in `liaison_connections_closed_total` for a connection refused at the cap.
pub const AT_CAPACITY: &str = "too many http connections";

/// Wraps the listener's acceptor (TLS or plain): at most `max_connections` accepted TCP
/// connections are open at once, and each must start its first request in time.
#[derive(Debug, Clone)]
pub struct LimitedAcceptor<A> {
    inner: A,
    permits: Arc<Semaphore>,
    start_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<A> LimitedAcceptor<A> {
    pub fn new(inner: A, max_connections: usize, start_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
        Self { inner, permits, start_timeout, metrics }
    }
}

impl<A, S> Accept<TcpStream, S> for LimitedAcceptor<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Limited<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // Closed at once, before TLS: the connection costs no handshake and no task beyond this.
            drop(stream);
            self.metrics.closed(AT_CAPACITY);
            return Box::pin(std::future::ready(Err(io::Error::other(AT_CAPACITY))));
        };
        let deadline = Instant::now() + self.start_timeout;
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = tokio::time::timeout_at(deadline, accepting)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            let start_deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
            Ok((Limited { inner: stream, start_deadline, preface_matched: 0, _permit: permit }, service))
        })
    }
}

/// An accepted connection: holds its place under the cap until dropped (for a WebSocket, when
/// the socket ends), and fails its reads if the protocol is not sniffed by the deadline.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    /// Until hyper-util has sniffed the protocol: when it must have been.
    start_deadline: Option<Pin<Box<Sleep>>>,
    /// How many bytes received so far match the HTTP/2 preface.
    preface_matched: usize,
    _permit: OwnedSemaphorePermit,
}

impl<S> Limited<S> {
    /// Follows hyper-util's sniffing: it has decided once a byte differs from the HTTP/2
    /// preface (HTTP/1) or the whole preface has arrived (HTTP/2).
    fn sniff(&mut self, received: &[u8]) {
        for byte in received {
            if H2_PREFACE.get(self.preface_matched) == Some(byte) {
                self.preface_matched += 1;
                if self.preface_matched < H2_PREFACE.len() {
                    continue;
                }
            }
            self.start_deadline = None;
            return;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.start_deadline.is_none() {
            return polled;
        }
        match polled {
            Poll::Ready(Ok(())) => {
                self.sniff(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.start_deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection did not start a request in time",
                ))),
                _ => Poll::Pending,
            },
            failed => failed,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open WebSockets per token id.
#[derive(Debug, Clone, Default)]
pub struct PerToken {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl PerToken {
    /// A slot for one more WebSocket with `token_id`, or `None` if `max` are open.
    pub fn try_open(&self, token_id: &str, max: usize) -> Option<TokenSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.get(token_id).copied().unwrap_or(0);
        if count >= max {
            return None;
        }
        open.insert(token_id.to_owned(), count + 1);
        Some(TokenSlot { open: self.open.clone(), token_id: token_id.to_owned() })
    }

    /// How many WebSockets `token_id` has open.
    pub fn open(&self, token_id: &str) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(token_id).copied().unwrap_or(0)
    }
}

/// One open WebSocket of a token: the slot is released when this is dropped.
#[derive(Debug)]
pub struct TokenSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    token_id: String,
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.token_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn each_token_holds_at_most_max_slots_until_they_are_dropped() {
        let per_token = PerToken::default();
        let first = per_token.try_open("tok_a", 2).expect("a first slot");
        let second = per_token.try_open("tok_a", 2).expect("a second slot");
        assert!(per_token.try_open("tok_a", 2).is_none(), "a third slot for one token");
        let other = per_token.try_open("tok_b", 2).expect("another token is counted apart");
        drop(first);
        assert_eq!(per_token.open("tok_a"), 1);
        let _again = per_token.try_open("tok_a", 2).expect("a slot was released");
        drop((second, other));
        assert_eq!(per_token.open("tok_b"), 0);
    }

    fn limited(stream: tokio::io::DuplexStream, timeout: Duration) -> Limited<tokio::io::DuplexStream> {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap_or_else(|_| unreachable!());
        let start_deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        Limited { inner: stream, start_deadline, preface_matched: 0, _permit: permit }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_fail_if_the_protocol_is_not_known_by_the_deadline() {
        for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
            let (mut client, server) = tokio::io::duplex(64);
            let started = Instant::now();
            let mut server = limited(server, Duration::from_secs(10));
            client.write_all(sent).await.unwrap();
            let mut buf = vec![0u8; sent.len()];
            server.read_exact(&mut buf).await.unwrap();
            let e = server.read(&mut [0u8; 8]).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "after {sent:?}");
            assert_eq!(started.elapsed(), Duration::from_secs(10));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_protocol_is_known_reads_wait_as_long_as_they_like() {
        for sent in [&b"G"[..], H2_PREFACE] {
            let (mut client, server) = tokio::io::duplex(64);
            let mut server = limited(server, Duration::from_secs(10));
            client.write_all(sent).await.unwrap();
            let mut buf = vec![0u8; sent.len()];
            server.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(server.read(&mut [0u8; 8]).await.unwrap(), 1, "after {sent:?}");
        }
    }
}
