//! [`PgHints`]: hints over PostgreSQL's `LISTEN`/`NOTIFY`, on channel `liaison_hints`.
//!
//! - **One dedicated connection per node**, never from the store's pool and never through a
//!   transaction pooler (PgBouncer in transaction mode drops `LISTEN` between transactions):
//!   it listens, and it also sends what [`Hints::publish`] queued. Its `application_name` is
//!   `liaison-relay-hints <node id>`, so an operator can tell the nodes' listeners apart.
//! - Notifications are read by driving the connection with `poll_message`; each payload is
//!   decoded as hostile (see `payload.rs`) and a refused one is logged and skipped.
//! - **Reconnects forever** once started: 100 ms after a loss, doubling to 5 s between tries,
//!   back to 100 ms once a connection listened for 30 s. Notifications sent while no
//!   connection listens are lost, so after every `LISTEN` the receivers get
//!   [`HintEvent::Resync`](super::HintEvent::Resync). A query every 10 s (5 s to answer)
//!   finds a connection that died without closing.
//! - Queued hints survive a loss: what was being sent is queued again and sent after the
//!   reconnect (perhaps twice; hints are idempotent).
//! - TLS exactly as the store's pool: the same `[storage]` rules and the same rustls roots.
//!
//! A store that wants a hint to leave only if its transaction commits sends
//! [`NOTIFY_SQL`] with [`PgHints::payloads`] inside that transaction: PostgreSQL delivers a
//! `NOTIFY` at commit, and drops it on rollback.

use std::convert::Infallible;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use liaison_core::storage::StorageError;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Notification, Socket};

use super::payload::{self, Pending};
use super::{Arrival, Hint, HintError, HintReceiver, Hints, NodeId, events_channel};
use crate::config::{DbTls, StorageConfig};
use crate::storage::connect;
use crate::storage::pg_kv::map_pg_err;

/// The channel every node listens on and notifies.
pub(crate) const CHANNEL: &str = "liaison_hints";
/// Sends one payload (`$1`) to every listening node; inside a transaction, at its commit.
pub const NOTIFY_SQL: &str = "SELECT pg_notify('liaison_hints', $1)";
/// The listener's `application_name`, followed by a space and the node's id.
pub const APPLICATION_NAME: &str = "liaison-relay-hints";

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A session that stayed up this long resets the pause between tries; a shorter one (a
/// database that accepts the connection and then fails every query) keeps it growing.
const STABLE_SESSION: Duration = Duration::from_secs(30);
const HEALTH_EVERY: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole connect (TCP, TLS, authentication); `connect_timeout` bounds only the socket's.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);

/// A node's hint channel over PostgreSQL. Dropping it closes its connection and ends its
/// receivers' streams.
#[derive(Debug)]
pub struct PgHints {
    node: NodeId,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What the node's handle and its listener task share.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Woken by a publish; holds one permit if nobody waits.
    wake: Notify,
    events: broadcast::Sender<Arrival>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic elsewhere while holding it left a coalesced set of hints: still good.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PgHints {
    /// Connects to `[storage]`'s database and listens, on the current tokio runtime. Returns
    /// once the first `LISTEN` succeeded, or its error (a clear start-up failure); after that,
    /// losses are reconnected in the background.
    pub async fn connect(storage: &StorageConfig) -> Result<Self, HintError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| HintError::NoRuntime)?;
        let node = NodeId::random();
        let mut config = connect::pg_config(storage)?;
        config.application_name(format!("{APPLICATION_NAME} {node}"));
        let shared = Arc::new(Shared { pending: Mutex::default(), wake: Notify::new(), events: events_channel() });
        let (first, listening) = oneshot::channel();
        let task = match storage.tls {
            DbTls::Disable => runtime.spawn(listen(config, tokio_postgres::NoTls, node, Arc::clone(&shared), first)),
            DbTls::VerifyFull => {
                let tls = connect::rustls_connector(storage)?;
                runtime.spawn(listen(config, tls, node, Arc::clone(&shared), first))
            }
        };
        // Dropped on an error below, which ends the task.
        let hints = Self { node, shared, task };
        listening.await.map_err(|_| HintError::Stopped)??;
        Ok(hints)
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// `hints` as payloads for [`NOTIFY_SQL`], from this node, for a store that sends them
    /// in its own transaction (each at most 7,900 bytes).
    pub fn payloads(&self, hints: &[Hint]) -> Vec<String> {
        payload::encode(self.node, &Pending::of(hints))
    }
}

impl Drop for PgHints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hints for PgHints {
    fn publish(&self, hints: &[Hint]) -> Result<(), HintError> {
        if self.task.is_finished() {
            return Err(HintError::Stopped);
        }
        let mut pending = self.shared.pending();
        for hint in hints {
            pending.add(*hint);
        }
        drop(pending);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn subscribe(&self) -> HintReceiver {
        HintReceiver::new(self.shared.events.subscribe(), self.node)
    }
}

/// The listener task: a session, and after each loss a pause and a new one. The first
/// session's outcome goes to `first`; if it never listened, the task ends there.
async fn listen<T>(
    config: tokio_postgres::Config,
    tls: T,
    node: NodeId,
    shared: Arc<Shared>,
    first: oneshot::Sender<Result<(), HintError>>,
) where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut first = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        let mut session = Session { node, shared: &shared, in_flight: Pending::default(), listened: false };
        let lost = session.run(&config, tls.clone(), &mut first).await;
        let (in_flight, listened) = (session.in_flight, session.listened);
        shared.pending().merge(in_flight);
        if let Some(first) = first.take() {
            let _ = first.send(Err(HintError::Listen(lost)));
            return;
        }
        if listened && started.elapsed() >= STABLE_SESSION {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(error = %lost, retry_in_ms = backoff.as_millis(), "the hint listener lost PostgreSQL");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life, from connect to its loss.
struct Session<'a> {
    node: NodeId,
    shared: &'a Shared,
    /// Hints taken from the queue and not yet known sent: queued again if the session ends.
    in_flight: Pending,
    listened: bool,
}

impl Session<'_> {
    /// Returns why the session ended; it never ends otherwise.
    async fn run<T>(
        &mut self,
        config: &tokio_postgres::Config,
        tls: T,
        first: &mut Option<oneshot::Sender<Result<(), HintError>>>,
    ) -> StorageError
    where
        T: MakeTlsConnect<Socket>,
    {
        let (client, mut connection) = match tokio::time::timeout(CONNECT_LIMIT, config.connect(tls)).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return map_pg_err(&e),
            Err(_) => return StorageError::Backend("PostgreSQL did not accept the hint listener within 15 s".into()),
        };
        let (node, shared) = (self.node, self.shared);
        let (in_flight, listened) = (&mut self.in_flight, &mut self.listened);
        let events = &shared.events;
        let reader = async {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(note))) => deliver(events, &note),
                    Some(Ok(AsyncMessage::Notice(notice))) => {
                        tracing::debug!(message = notice.message(), "PostgreSQL notice on the hint listener");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return map_pg_err(&e),
                    None => return StorageError::Backend("the connection to PostgreSQL was lost".into()),
                }
            }
        };
        let writer = async {
            answered(client.batch_execute(&format!("LISTEN {CHANNEL}"))).await?;
            *listened = true;
            // Sent after LISTEN took effect: whatever a receiver missed before, it catches up.
            // Before `connect` returns, so a receiver subscribed after it has one resync only.
            let _ = events.send(Arrival::Resync);
            if let Some(first) = first.take() {
                let _ = first.send(Ok(()));
            }
            let notify = answered(client.prepare(NOTIFY_SQL)).await?;
            let mut health = tokio::time::interval(HEALTH_EVERY);
            health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let queued = std::mem::take(&mut *shared.pending());
                in_flight.merge(queued);
                for text in payload::encode(node, in_flight) {
                    answered(client.execute(&notify, &[&text])).await?;
                }
                *in_flight = Pending::default();
                tokio::select! {
                    () = shared.wake.notified() => {}
                    _ = health.tick() => drop(answered(client.simple_query("SELECT 1")).await?),
                }
            }
        };
        tokio::select! {
            lost = reader => lost,
            lost = writer => match lost {
                Err(lost) => lost,
                Ok::<Infallible, _>(never) => match never {},
            },
        }
    }
}

/// Hands a notification's hints to the node's receivers; a refused payload is logged, without
/// its text, and skipped.
fn deliver(events: &broadcast::Sender<Arrival>, note: &Notification) {
    if note.channel() != CHANNEL {
        return;
    }
    match payload::decode(note.payload()) {
        Ok(decoded) => {
            for hint in decoded.hints {
                // No receiver: nobody to tell.
                let _ = events.send(Arrival::Hint { from: decoded.from, hint });
            }
        }
        Err(e) => tracing::warn!(
            error = %e,
            sender_pid = note.process_id(),
            bytes = note.payload().len(),
            "a hint notification was refused"
        ),
    }
}

/// A query's answer within [`ANSWER_TIMEOUT`]: a connection that died without closing is
/// found by its silence.
async fn answered<T>(query: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, StorageError> {
    match tokio::time::timeout(ANSWER_TIMEOUT, query).await {
        Ok(answer) => answer.map_err(|e| map_pg_err(&e)),
        Err(_) => Err(StorageError::Backend("PostgreSQL did not answer the hint listener within 5 s".into())),
    }
}
