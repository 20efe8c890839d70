//! Forwards the library's `tracing` output to the app's logger. Events are queued (bounded; the
//! excess is dropped and counted, never blocking the caller) and delivered from one long-lived
//! thread.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::{Layer, Registry, reload};

use crate::error::LiaisonError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
            LogLevel::Trace => Self::TRACE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    pub level: LogLevel,
    /// The Rust module that logged, like `liaison_core::client`.
    pub target: String,
    /// The message and its fields (`key=value`). Never holds tokens or record contents.
    pub message: String,
}

/// The app's logger.
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One record. If it throws, the record is lost and the next one comes as usual.
    fn log(&self, record: LogRecord) -> Result<(), crate::error::CallbackError>;
}

/// Hands `record` to the app's sink; what it throws (or a panic on the way) loses the record,
/// never the forwarding thread.
fn hand(sink: &Arc<dyn LogSink>, record: LogRecord) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.log(record)));
}

enum Msg {
    Record(LogRecord),
    Sink(Arc<dyn LogSink>),
}

struct Forwarder {
    tx: SyncSender<Msg>,
    level: reload::Handle<LevelFilter, Registry>,
}

static FORWARDER: OnceLock<Mutex<Option<Forwarder>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

struct ForwardLayer {
    tx: SyncSender<Msg>,
}

impl<S: tracing::Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut v = Fields(String::new());
        event.record(&mut v);
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        };
        let record = LogRecord { level, target: meta.target().to_owned(), message: v.0 };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Record(record)) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            let _ = write!(self.0, "{sep}{value:?}");
        } else {
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            let _ = write!(self.0, "{sep}{value}");
        } else {
            let _ = write!(self.0, "{sep}{}={value}", field.name());
        }
    }
}

fn deliver(rx: Receiver<Msg>) {
    let mut sink: Option<Arc<dyn LogSink>> = None;
    let mut reported = 0;
    for msg in rx {
        match msg {
            Msg::Sink(s) => sink = Some(s),
            Msg::Record(r) => {
                if let Some(s) = &sink {
                    let dropped = DROPPED.load(Ordering::Relaxed);
                    if dropped != reported {
                        hand(
                            s,
                            LogRecord {
                                level: LogLevel::Warn,
                                target: "liaison_ffi::logging".into(),
                                message: format!(
                                    "{} log records dropped: the app's logger fell behind",
                                    dropped - reported
                                ),
                            },
                        );
                        reported = dropped;
                    }
                    hand(s, r);
                }
            }
        }
    }
}

/// Sends the library's logs at `max_level` and above to `sink`. May be called again to change
/// the sink or the level. If the host process already installed a global `tracing` subscriber,
/// that one keeps the logs and this returns an error.
#[uniffi::export]
pub fn set_log_sink(sink: Arc<dyn LogSink>, max_level: LogLevel) -> Result<(), LiaisonError> {
    let cell = FORWARDER.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let (tx, rx) = sync_channel(4096);
        std::thread::Builder::new()
            .name("liaison-log".into())
            .spawn(move || deliver(rx))
            .map_err(|e| LiaisonError::Sync(format!("cannot start the log thread: {}", e.kind())))?;
        let (filter, handle) = reload::Layer::new(LevelFilter::from(max_level));
        let subscriber = Registry::default().with(filter).with(ForwardLayer { tx: tx.clone() });
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| LiaisonError::InvalidInput("a tracing subscriber is already installed".into()))?;
        *guard = Some(Forwarder { tx, level: handle });
    }
    let fwd = guard.as_ref().ok_or(LiaisonError::Closed)?;
    fwd.level
        .modify(|f| *f = max_level.into())
        .map_err(|_| LiaisonError::InvalidInput("cannot change the log level".into()))?;
    fwd.tx.send(Msg::Sink(sink)).map_err(|_| LiaisonError::Closed)?;
    Ok(())
}
