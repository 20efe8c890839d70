//! One WebSocket's task: frames from the device go to the relay's actor, what the actor queued
//! goes to the device, and the connection's limits (rate, idle time, frame size, write deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage};
use futures::{Sink, SinkExt, Stream, StreamExt};

use crate::auth::Principal;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::outbox::{OutboxReceiver, Outgoing, outbox};
use crate::relay::{ActorMsg, RelayHandle, close};

/// A token bucket: `rate` per second sustained, `burst` at once.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Most frames one flush to a device carries.
const MAX_COALESCED: usize = 64;

/// Serves one WebSocket until it ends: `sink` and `stream` are its halves (a split
/// `axum::extract::ws::WebSocket`, or channels in tests).
pub(super) async fn serve_socket<W, R>(
    mut sink: W,
    mut stream: R,
    principal: Principal,
    relay: RelayHandle,
    limits: Limits,
    metrics: Arc<Metrics>,
) where
    W: Sink<WsMessage> + Unpin,
    R: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
{
    let conn = relay.next_conn();
    let (outbox, mut out_rx) = outbox(limits.max_outbox_bytes);
    tracing::debug!(conn = conn.0, tenant = %principal.tenant, "connection opened");
    relay.send(ActorMsg::Open { conn, principal, outbox }).await;
    let mut bucket = Bucket {
        tokens: f64::from(limits.message_burst),
        rate: f64::from(limits.messages_per_second),
        burst: f64::from(limits.message_burst),
        at: Instant::now(),
    };
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let write_deadline = Duration::from_secs(limits.write_timeout_secs.max(1));
    let cut = out_rx.cut_signal();
    loop {
        tokio::select! {
            // The actor cut us (a client too slow to read, its outbox full): end now, even if
            // the socket would block; what was queued is dropped with the task.
            () = cut.notified() => break,
            incoming = tokio::time::timeout(idle, stream.next()) => {
                let reply = match incoming {
                    Err(_) => Some((close::IDLE, "idle timeout")),
                    Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => break,
                    Ok(Some(Err(e))) => {
                        if is_too_large(&e) { Some((close::TOO_BIG, "frame too large")) } else { break }
                    }
                    Ok(Some(Ok(WsMessage::Binary(b)))) => {
                        // Messages the relay invited (a new phone fetching what the catalog
                        // listed) do not count against the rate.
                        if !out_rx.take_invited() && !bucket.take() {
                            Some((close::RATE, "message rate exceeded"))
                        } else {
                            // The actor's inbound queue is bounded in bytes: wait for room
                            // (the socket is not read meanwhile: TCP pushes back on the client).
                            let permit = relay.inbound_permit(b.len()).await;
                            relay.send(ActorMsg::Frame { conn, frame: b.to_vec(), permit }).await;
                            None
                        }
                    }
                    Ok(Some(Ok(WsMessage::Text(_)))) => Some((close::PROTOCOL, "binary frames only")),
                    Ok(Some(Ok(_))) => None, // ping and pong
                };
                if let Some((code, reason)) = reply {
                    count_close(&out_rx, &metrics, reason);
                    let _ = tokio::time::timeout(write_deadline, sink.send(close_frame(code, reason))).await;
                    break;
                }
            }
            out = out_rx.recv() => {
                let Some(first) = out else { break };
                // A client that does not take what is written within the deadline is cut.
                let written = tokio::select! {
                    () = cut.notified() => break,
                    r = tokio::time::timeout(write_deadline, write_queued(&mut sink, first, &mut out_rx)) => r,
                };
                match written {
                    Ok(Ok(true)) => {
                        // The engine waits for room and the outbox has drained: say so.
                        if out_rx.room_due() {
                            relay.send(ActorMsg::Room { conn }).await;
                        }
                    }
                    Ok(Ok(false) | Err(())) => break,
                    Err(_) => {
                        count_close(&out_rx, &metrics, "write timeout");
                        tracing::info!(conn = conn.0, "a client did not read within the write deadline; cut");
                        break;
                    }
                }
            }
        }
    }
    relay.send(ActorMsg::Closed { conn }).await;
}

/// Counts the task's reason for ending the connection, unless the actor ended it first (and
/// counted its own): each connection is counted once.
fn count_close(out_rx: &OutboxReceiver, metrics: &Metrics, reason: &str) {
    if out_rx.first_to_end() {
        metrics.closed(reason);
    }
}

fn close_frame(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))
}

/// Whether a read failed because the peer's frame or message is over the limit.
fn is_too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    use tungstenite::error::{CapacityError, Error as WsError};
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) = s.downcast_ref::<WsError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Writes `first` and whatever else is queued (up to [`MAX_COALESCED`]) with one flush: with
/// TCP_NODELAY on, a flush per frame would cost a TLS record and a segment each. `Ok(false)`
/// when the connection ends here (a close was sent), `Err` when the socket failed.
async fn write_queued<S>(sink: &mut S, first: Outgoing, out_rx: &mut OutboxReceiver) -> Result<bool, ()>
where
    S: Sink<WsMessage> + Unpin,
{
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(o) = next.take() {
        match o {
            Outgoing::Frame(f) => sink.feed(WsMessage::Binary(f.into())).await.map_err(|_| ())?,
            Outgoing::Close(code, reason) => {
                sink.flush().await.map_err(|_| ())?;
                let _ = sink.send(close_frame(code, &reason)).await;
                return Ok(false);
            }
        }
        fed += 1;
        if fed < MAX_COALESCED {
            next = out_rx.try_recv();
        }
    }
    sink.flush().await.map_err(|_| ())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::Ordering;

    use futures::channel::mpsc;

    use super::*;
    use crate::relay::testing::{self, TestRelay};

    /// The device's end of a socket served over channels: what it sends, what it is sent.
    struct Device {
        sends: mpsc::UnboundedSender<Result<WsMessage, axum::Error>>,
        receives: mpsc::UnboundedReceiver<WsMessage>,
    }

    impl Device {
        /// The close frame the relay sent, after whatever came before it.
        async fn closed(&mut self) -> (u16, String) {
            while let Some(message) = self.receives.next().await {
                if let WsMessage::Close(Some(frame)) = message {
                    return (frame.code, frame.reason.as_str().to_owned());
                }
            }
            panic!("the socket ended without a close frame");
        }
    }

    /// Serves a socket over channels until the task ends (within ten seconds).
    async fn serve(relay: &TestRelay, script: impl FnOnce(&Device)) -> Device {
        let (sink, receives) = mpsc::unbounded();
        let (sends, stream) = mpsc::unbounded();
        let device = Device { sends, receives };
        script(&device);
        let task = serve_socket(
            sink,
            stream,
            relay.principal.clone(),
            relay.relay.clone(),
            relay.config.limits.clone(),
            relay.metrics.clone(),
        );
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the socket task ends");
        relay.settled().await;
        device
    }

    #[tokio::test]
    async fn a_message_over_the_limit_closes_with_1009_counted_once() {
        let relay = testing::start();
        let mut device = serve(&relay, |device| {
            use tungstenite::error::{CapacityError, Error as WsError};
            let too_long = WsError::Capacity(CapacityError::MessageTooLong { size: 2 << 20, max_size: 1 << 20 });
            device.sends.unbounded_send(Err(axum::Error::new(too_long))).unwrap();
        })
        .await;
        assert_eq!(device.closed().await, (close::TOO_BIG, "frame too large".to_owned()));
        assert_eq!(relay.closed("frame too large"), 1);
        assert_eq!(relay.closed_total(), 1);
        assert_eq!(relay.metrics.connections_open.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn another_read_error_ends_the_socket_without_a_close_or_a_count() {
        let relay = testing::start();
        let mut device = serve(&relay, |device| {
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            device.sends.unbounded_send(Err(axum::Error::new(reset))).unwrap();
        })
        .await;
        assert!(device.receives.next().await.is_none(), "nothing sent");
        assert_eq!(relay.closed_total(), 0);
    }

    #[tokio::test]
    async fn a_binary_message_goes_to_the_engine_and_its_close_comes_back_counted_once() {
        let relay = testing::start();
        let mut device = serve(&relay, |device| {
            device.sends.unbounded_send(Ok(WsMessage::Binary(vec![0xff, 0x00, 0x13].into()))).unwrap();
        })
        .await;
        assert_eq!(relay.metrics.frames_in.load(Ordering::Relaxed), 1, "forwarded to the actor");
        assert_eq!(device.closed().await, (close::PROTOCOL, "malformed frame".to_owned()));
        assert_eq!(relay.closed("malformed frame"), 1);
        assert_eq!(relay.closed_total(), 1);
    }

    #[tokio::test]
    async fn text_messages_are_refused() {
        let relay = testing::start();
        let mut device = serve(&relay, |device| {
            device.sends.unbounded_send(Ok(WsMessage::Text("hello".into()))).unwrap();
        })
        .await;
        assert_eq!(device.closed().await, (close::PROTOCOL, "binary frames only".to_owned()));
        assert_eq!(relay.metrics.frames_in.load(Ordering::Relaxed), 0);
        assert_eq!(relay.closed_total(), 1);
    }
}
