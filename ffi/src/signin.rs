//! Enterprise sign-in and sign-out as the apps see them: the app's [`CredentialProvider`]
//! (MSAL, AppAuth) adapted to core's async trait, run on the runtime's blocking threads (a
//! library-owned thread, never the sync task), and `sign_out`, which stops sync, closes the
//! store and removes its directory.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use liaison_core::DocStore;
use liaison_core::client::{self, Credential, IssuedCredential, ProviderFailed};

use crate::error::{CallbackError, LiaisonError};
use crate::store::{LiaisonStore, lock};
use crate::sync::{Note, SyncConfig, SyncStatus};

/// Why the library asks for a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CredentialReason {
    /// First connection: a device credential the app kept (from `credential_issued`) is fine.
    Initial,
    /// The relay refused the credential as expired or unknown: give a fresh IdP token (MSAL
    /// `acquireTokenSilent` with force refresh), not the kept device credential.
    Expired,
    /// The relay revoked the credential: only a fresh IdP token helps. Answering
    /// `NoCredential` (or the same credential) makes the library erase the local records.
    Revoked,
}

/// What the app's provider answers.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum CredentialAnswer {
    /// A liaison device credential the app kept (from `credential_issued`).
    DeviceCredential { token: String },
    /// The identity provider's access token; the library exchanges it at the relay's
    /// `POST /v1/enrol` for a device credential and hands that to `credential_issued`.
    IdpAccessToken { token: String },
    /// No credential without the user (signed out, interactive sign-in needed): the status
    /// says `Unauthorized`; call `retry_sign_in` after the user signed in.
    NoCredential,
    /// It failed for now (no network to the IdP): asked again after the backoff, never wipes.
    Failed,
}

/// The app's source of credentials. Called on a library thread (never the UI thread: it may
/// block, up to 60 s), at most once per connection attempt. Must not show UI.
#[uniffi::export(with_foreign)]
pub trait CredentialProvider: Send + Sync {
    /// A credential for the relay. Throwing counts as `Failed`.
    fn credential(&self, reason: CredentialReason) -> Result<CredentialAnswer, CallbackError>;
    /// A device credential the library got by enrolment: keep it in the Keychain/Keystore and
    /// return it as `DeviceCredential` next time. `expires_at_ms` is when it expires. Throwing
    /// is logged; the credential is used for this connection either way.
    fn credential_issued(&self, token: String, expires_at_ms: Option<i64>) -> Result<(), CallbackError>;
}

/// The foreign provider as core's [`client::CredentialProvider`].
struct Foreign(Arc<dyn CredentialProvider>);

impl std::fmt::Debug for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForeignCredentialProvider")
    }
}

impl client::CredentialProvider for Foreign {
    fn credential(
        &self,
        reason: client::CredentialReason,
    ) -> BoxFuture<'static, Result<Option<Credential>, ProviderFailed>> {
        let provider = self.0.clone();
        let reason = match reason {
            client::CredentialReason::Initial => CredentialReason::Initial,
            client::CredentialReason::Expired => CredentialReason::Expired,
            client::CredentialReason::Revoked => CredentialReason::Revoked,
        };
        Box::pin(async move {
            // A blocking thread: the app's code may wait on its IdP; a panic or an exception
            // the bindings turn into one counts as a failure.
            match tokio::task::spawn_blocking(move || provider.credential(reason)).await {
                Ok(Ok(CredentialAnswer::DeviceCredential { token })) if !token.is_empty() => {
                    Ok(Some(Credential::Device(token)))
                }
                Ok(Ok(CredentialAnswer::IdpAccessToken { token })) if !token.is_empty() => {
                    Ok(Some(Credential::IdpAccessToken(token)))
                }
                Ok(Ok(CredentialAnswer::NoCredential)) => Ok(None),
                Ok(_) | Err(_) => Err(ProviderFailed),
            }
        })
    }

    fn issued(&self, credential: IssuedCredential) {
        let provider = self.0.clone();
        let IssuedCredential { token, expires_at_ms } = credential;
        // Fire and forget, on a blocking thread: the sync task does not wait for the app.
        drop(tokio::task::spawn_blocking(move || {
            if provider.credential_issued(token, expires_at_ms).is_err() {
                tracing::warn!("the app's credential provider threw on credential_issued");
            }
        }));
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl LiaisonStore {
    /// Starts syncing with credentials from the app's provider (enterprise sign-in):
    /// `config.token` is ignored (leave it empty). See `CredentialProvider` for when it is
    /// called, and mobile-bindings/README.md for the contract. Async as `start_sync`.
    pub async fn start_sync_with_sign_in(
        &self,
        config: SyncConfig,
        provider: Arc<dyn CredentialProvider>,
    ) -> Result<(), LiaisonError> {
        let config = SyncConfig { token: String::new(), ..config };
        self.start_client(config, Some(Arc::new(Foreign(provider)))).await
    }

    /// Asks the credential provider again and reconnects now: after the user signed in
    /// interactively (status `Unauthorized`), or to resume after `Revoked`. It only queues the
    /// request for the sync client: synchronous.
    pub fn retry_sign_in(&self) -> Result<(), LiaisonError> {
        let guard = lock(&self.client);
        let client = guard.as_ref().ok_or_else(|| LiaisonError::Sync("sync is not running".into()))?;
        client.retry_sign_in();
        Ok(())
    }

    /// Signs out: stops sync, closes the store and removes its directory (every record, edits
    /// the relay has not acknowledged included, sync states, the install id), so nothing of the
    /// tenant remains on the device. Afterwards every call fails with `SignedOut`; open a new
    /// store (an empty one) to sign in again. The app forgets its own credentials itself.
    /// Cancelled while calls in flight finish, it leaves the store open (sync stopped); once the
    /// files' removal began, it completes.
    pub async fn sign_out(&self) -> Result<(), LiaisonError> {
        let client = lock(&self.client).take();
        if let Some(c) = client {
            c.shutdown().await;
        }
        let Some(store) = lock(&self.store).take() else { return Ok(()) };
        // Calls in flight hold the store for a moment; it closes when the last one returns.
        // Cancelled while it waits, sign-out puts the store back: open, usable, nothing removed.
        let mut waiting = PutBack { slot: &self.store, store: Some(store) };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let only = loop {
            let Some(store) = waiting.store.take() else { return Err(LiaisonError::Closed) };
            match Arc::try_unwrap(store) {
                Ok(only) => break only,
                Err(shared) => {
                    waiting.store = Some(shared);
                    if tokio::time::Instant::now() >= deadline {
                        // Still in use: the store stays open and usable; nothing was removed.
                        return Err(LiaisonError::StoreInUse);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // From here on sign-out completes even if its caller leaves: the removal runs on.
        let path = self.path.clone();
        // Closing flushes the store: on a library thread too, not the caller's.
        tokio::task::spawn_blocking(move || {
            drop(only);
            std::fs::remove_dir_all(&path)
        })
        .await
        .map_err(|_| LiaisonError::Storage("removing the store's files failed".into()))?
        .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        .map_err(|e| LiaisonError::Storage(format!("cannot remove the store's files: {}", e.kind())))?;
        tracing::info!("signed out: the store's files are removed");
        let _ = self.notes.send(Note::Status(SyncStatus::stopped()));
        Ok(())
    }
}

/// Puts the store back into its slot when dropped still holding it (a sign-out that gave up or
/// was cancelled while calls were in flight).
struct PutBack<'a> {
    slot: &'a std::sync::Mutex<Option<Arc<DocStore>>>,
    store: Option<Arc<DocStore>>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            *lock(self.slot) = Some(store);
        }
    }
}
