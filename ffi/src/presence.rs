//! Presence: "who has this plan open now". `publish_presence` says what this user is doing on
//! a record (sent again every [`HEARTBEAT`] while set, so it holds; `None` clears it at once);
//! `watch_presence` hears the colleagues present on a record, each until their presence
//! expires ([`TTL_MS`] without hearing from them) or they clear it. Carried as automerge-repo
//! ephemeral messages through the relay (core's `sync::presence`), which passes them only to
//! devices that may read the record and only in their author's own name. Offline nothing is
//! sent or heard; nothing is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liaison_core::client::SyncClient;
use liaison_core::sync::engine::Event;
use liaison_core::sync::presence::{self, MAX_STATE_CHARS, Presence};
use liaison_core::{DocumentId, Identity};

use crate::error::{CallbackError, LiaisonError};
use crate::store::{LiaisonStore, lock, parse_id};

/// How long a presence holds without being heard again (ms).
pub const TTL_MS: i64 = 30_000;
/// How often a set presence is sent again.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// A colleague present on a record.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PresenceEntry {
    pub user: String,
    pub device: String,
    /// What they are doing, as their app said ("editing objectives").
    pub state: String,
    /// When it lapses unless heard again (ms since the epoch).
    pub expires_at_ms: i64,
}

/// Hears who is present on a record: the whole list after each change (arrivals, new states,
/// departures and expiries). Called on a library thread.
#[uniffi::export(with_foreign)]
pub trait PresenceObserver: Send + Sync {
    fn on_presence(&self, present: Vec<PresenceEntry>) -> Result<(), CallbackError>;
}

/// A running presence watch. `cancel` (or dropping it) ends it.
#[derive(Debug, uniffi::Object)]
pub struct PresenceHandle {
    cancelled: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

#[uniffi::export]
impl PresenceHandle {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

impl Drop for PresenceHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The presence this device publishes, per record, and whether its heartbeat runs.
#[derive(Debug, Default)]
pub(crate) struct Published {
    states: Arc<Mutex<HashMap<DocumentId, String>>>,
    heartbeat: std::sync::OnceLock<()>,
}

/// Who is present on one record, as heard: one entry per device, each with its expiry.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    by_device: BTreeMap<String, PresenceEntry>,
}

impl Roster {
    /// Takes in a presence heard at `now_ms`; whether the roster changed.
    pub(crate) fn heard(&mut self, p: Presence, now_ms: i64) -> bool {
        if p.ttl_ms == 0 {
            return self.by_device.remove(&p.device).is_some();
        }
        let entry = PresenceEntry {
            user: p.user,
            device: p.device.clone(),
            state: p.state,
            expires_at_ms: now_ms + i64::from(p.ttl_ms),
        };
        let changed = self.by_device.get(&p.device).is_none_or(|e| e.state != entry.state || e.user != entry.user);
        self.by_device.insert(p.device, entry);
        changed
    }

    /// Drops what lapsed by `now_ms`; whether any did.
    pub(crate) fn expire(&mut self, now_ms: i64) -> bool {
        let before = self.by_device.len();
        self.by_device.retain(|_, e| e.expires_at_ms > now_ms);
        self.by_device.len() != before
    }

    /// When the next entry lapses.
    pub(crate) fn next_expiry(&self) -> Option<i64> {
        self.by_device.values().map(|e| e.expires_at_ms).min()
    }

    pub(crate) fn entries(&self) -> Vec<PresenceEntry> {
        self.by_device.values().cloned().collect()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// This device's presence: `state`, or gone (`None`).
fn own(identity: &Identity, state: Option<&str>) -> Presence {
    let ttl = if state.is_some() { TTL_MS } else { 0 };
    Presence {
        user: identity.user.clone(),
        device: identity.device.clone(),
        state: state.unwrap_or_default().to_owned(),
        ttl_ms: ttl.try_into().unwrap_or_default(),
    }
}

#[uniffi::export]
impl LiaisonStore {
    /// Says what this user is doing on a record (`state`, at most 64 characters, such as
    /// "editing"), to colleagues watching its presence; sent again every 10 s while set. `None`
    /// clears it. Needs sync started (otherwise nobody hears it).
    pub fn publish_presence(&self, id: String, state: Option<String>) -> Result<(), LiaisonError> {
        let doc = parse_id(&id)?;
        if let Some(s) = &state
            && (s.trim().is_empty() || s.chars().count() > MAX_STATE_CHARS || s.chars().any(char::is_control))
        {
            return Err(LiaisonError::InvalidInput(format!(
                "a presence state is 1 to {MAX_STATE_CHARS} characters, without control characters"
            )));
        }
        let identity = self.core()?.identity().clone();
        {
            let mut states = lock(&self.presence.states);
            match &state {
                Some(s) => states.insert(doc, s.clone()),
                None => states.remove(&doc),
            };
        }
        if let Some(client) = lock(&self.client).as_ref() {
            client.subscribe(doc);
            client.send_ephemeral(doc, presence::encode(&own(&identity, state.as_deref())));
        }
        self.start_heartbeat(identity)
    }

    /// Hears the colleagues present on a record (not this device): the current list first
    /// (empty until someone is heard), then after each arrival, change, departure or expiry.
    /// Needs sync started.
    pub fn watch_presence(
        &self,
        id: String,
        observer: Arc<dyn PresenceObserver>,
    ) -> Result<Arc<PresenceHandle>, LiaisonError> {
        let doc = parse_id(&id)?;
        let own = self.core()?.identity().device.clone();
        let mut events = {
            let client = lock(&self.client);
            let client: &SyncClient =
                client.as_ref().ok_or_else(|| LiaisonError::Sync("start sync before watching presence".into()))?;
            client.subscribe(doc);
            client.events()
        };
        let rt = self.runtime.as_ref().ok_or(LiaisonError::Closed)?;
        let handle = Arc::new(PresenceHandle {
            cancelled: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        let (cancelled, wake) = (handle.cancelled.clone(), handle.wake.clone());
        rt.spawn(async move {
            let mut roster = Roster::default();
            let tell = |roster: &Roster| {
                if cancelled.load(Ordering::SeqCst) {
                    return;
                }
                let present = roster.entries();
                let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observer.on_presence(present)));
                if !matches!(call, Ok(Ok(()))) {
                    tracing::warn!("a presence observer threw; later updates still come");
                }
            };
            tell(&roster);
            loop {
                if cancelled.load(Ordering::SeqCst) {
                    return;
                }
                let lapse = roster.next_expiry().map(|at| Duration::from_millis(u64::try_from(at - now_ms() + 1).unwrap_or(0)));
                let changed = tokio::select! {
                    e = events.recv() => match e {
                        Ok(Event::Ephemeral { doc: about, data, .. }) if about == doc => {
                            match presence::decode(&data) {
                                Some(p) if p.device != own => roster.heard(p, now_ms()),
                                _ => false,
                            }
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => false,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = async { match lapse { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
                        roster.expire(now_ms())
                    }
                    () = wake.notified() => false,
                };
                if changed {
                    tell(&roster);
                }
            }
        });
        Ok(handle)
    }
}

impl LiaisonStore {
    /// Starts (once) the task that sends every set presence again every [`HEARTBEAT`].
    fn start_heartbeat(&self, identity: Identity) -> Result<(), LiaisonError> {
        if self.presence.heartbeat.get().is_some() {
            return Ok(());
        }
        let rt = self.runtime.as_ref().ok_or(LiaisonError::Closed)?;
        if self.presence.heartbeat.set(()).is_err() {
            return Ok(());
        }
        let states = Arc::downgrade(&self.presence.states);
        let client = Arc::downgrade(&self.client);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let (Some(states), Some(client)) = (states.upgrade(), client.upgrade()) else { return };
                let states: Vec<(DocumentId, String)> = lock(&states).iter().map(|(d, s)| (*d, s.clone())).collect();
                if let Some(c) = lock(&client).as_ref() {
                    for (doc, state) in states {
                        c.send_ephemeral(doc, presence::encode(&own(&identity, Some(&state))));
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(device: &str, state: &str, ttl_ms: u32) -> Presence {
        Presence { user: device.trim_end_matches("-phone").into(), device: device.into(), state: state.into(), ttl_ms }
    }

    #[test]
    fn a_roster_keeps_one_entry_per_device_until_it_lapses_or_is_cleared() {
        let mut r = Roster::default();
        assert!(r.heard(p("sato-phone", "editing", 30_000), 1_000));
        assert!(!r.heard(p("sato-phone", "editing", 30_000), 2_000), "a heartbeat changes nothing visible");
        assert_eq!(r.entries()[0].expires_at_ms, 32_000, "but moves the expiry");
        assert!(r.heard(p("suzuki-phone", "reading", 30_000), 3_000));
        assert!(r.heard(p("sato-phone", "editing objectives", 30_000), 4_000), "a new state");
        assert_eq!(r.next_expiry(), Some(33_000));
        assert!(!r.expire(32_999));
        assert!(r.expire(33_000), "suzuki lapsed");
        assert_eq!(r.entries().iter().map(|e| e.device.as_str()).collect::<Vec<_>>(), ["sato-phone"]);
        assert!(r.heard(p("sato-phone", "", 0), 5_000), "cleared");
        assert!(r.entries().is_empty() && r.next_expiry().is_none());
    }
}
