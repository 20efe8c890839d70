//! One WebSocket's task: frames from the device go to the relay's actor, what the actor queued
//! goes to the device, and the connection's limits (rate, idle time, frame size, write deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures::{SinkExt, StreamExt};

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

pub(super) async fn serve_socket(
    socket: WebSocket,
    principal: Principal,
    relay: RelayHandle,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let conn = relay.next_conn();
    let (outbox, mut out_rx) = outbox(OUTBOX_FRAMES, limits.max_outbox_bytes);
    tracing::debug!(conn = conn.0, tenant = %principal.tenant, "connection opened");
    relay.send(ActorMsg::Open { conn, principal, outbox }).await;
    let (mut sink, mut stream) = socket.split();
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
                        if !bucket.take() {
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
                    Ok(Ok(true)) => {}
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

/// Frames queued for one connection and written before one flush.
const OUTBOX_FRAMES: usize = 4096;

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
    S: futures::Sink<WsMessage> + Unpin,
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
