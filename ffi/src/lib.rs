//! liaison-ffi: the library the iOS and Android apps link, and the only crate that knows uniffi.
//!
//! It is glue: [`LiaisonStore`] wraps liaison-core's `DocStore` and `SyncClient`, the records are
//! core's own types declared to uniffi, errors become one flat [`LiaisonError`], the app's
//! observer and logger are called from library-owned threads. Rules live in core.

#[cfg(target_os = "android")]
mod android;
mod background;
mod error;
mod logging;
mod presence;
mod rows;
mod signin;
mod status;
mod store;
mod sync;
mod text;
mod types;
mod versioned;
mod watch;
mod work;

pub use background::BackgroundSyncReport;
pub use error::{CallbackError, LiaisonError};
pub use logging::{LogLevel, LogRecord, LogSink, set_log_sink};
pub use presence::{PresenceEntry, PresenceHandle, PresenceObserver};
pub use rows::{DraftRow, InteractionRow, MirRow, QueryRows, TaskRow};
pub use signin::{CredentialAnswer, CredentialProvider, CredentialReason};
pub use status::{AuthProblem, SyncProblem, WipeReason};
pub use store::{LiaisonStore, StoreConfig};
pub use sync::{LiaisonObserver, NetworkState, RefusedChange, SyncConfig, SyncState, SyncStatus, TrustConfig};
pub use text::SharedTextField;
pub use types::{DocumentChange, HistoryEntry, KolSummary, RecordKind};
pub use versioned::{InsightRead, InteractionRead, KolRead, PlanRead, RecordValue, RequestRead};
pub use watch::{QueryObserver, QueryUpdate, RecordObserver, RowChange, SyncStatusObserver, WatchHandle};

uniffi::setup_scaffolding!("liaison");
