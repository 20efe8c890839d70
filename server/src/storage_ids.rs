//! Storage ids are bound to the device that first presents them.
//!
//! A peer's storage id names the sync states the relay keeps for it (per document). Without a
//! binding, a device could present another device's storage id and so read or overwrite the
//! relay's sync state for it; and one device could make the relay keep state for any number of
//! ids. The first device to present an id owns it; at most [`MAX_PER_DEVICE`] per device.

use liaison_core::storage::{KvStore, StorageError};

use crate::auth::Principal;
use crate::keys;

/// Distinct storage ids one device (tenant, user, device) may present.
pub const MAX_PER_DEVICE: usize = 32;

/// Why a storage id was refused. The texts are the close reasons (a fixed set).
#[derive(Debug, thiserror::Error)]
pub enum StorageIdError {
    #[error("storage id belongs to another device")]
    Taken,
    #[error("too many storage ids for this device")]
    TooMany,
    #[error("storage ids cannot be checked")]
    Store(#[from] StorageError),
}

fn owner_key(storage_id: &str) -> Vec<u8> {
    keys::storage_id(storage_id)
}

/// Tenant, user and device names are checked names (no `/`), so this prefix is unambiguous.
fn device_prefix(p: &Principal) -> Vec<u8> {
    keys::storage_ids_of_device(&p.tenant, &p.user, &p.device)
}

fn owner_value(p: &Principal) -> Vec<u8> {
    format!("{}/{}/{}", p.tenant, p.user, p.device).into_bytes()
}

/// Every key that binds a storage id to a device of `tenant` (a purge deletes them).
pub fn tenant_keys(kv: &dyn KvStore, tenant: &str) -> Result<Vec<Vec<u8>>, StorageError> {
    let by_device = keys::storage_ids_of_tenant(tenant);
    let mut keys = kv.scan_keys(&by_device)?;
    let owner = format!("{tenant}/").into_bytes();
    for (k, v) in kv.scan_prefix(keys::STORAGE_IDS)? {
        if v.starts_with(&owner) {
            keys.push(k);
        }
    }
    Ok(keys)
}

/// Binds `storage_id` to the principal's device if it is new, or checks it is already its own.
pub fn claim(kv: &dyn KvStore, p: &Principal, storage_id: &str) -> Result<(), StorageIdError> {
    let key = owner_key(storage_id);
    match kv.get(&key)? {
        Some(owner) if owner == owner_value(p) => Ok(()),
        Some(_) => Err(StorageIdError::Taken),
        None => {
            let prefix = device_prefix(p);
            if kv.scan_keys(&prefix)?.len() >= MAX_PER_DEVICE {
                return Err(StorageIdError::TooMany);
            }
            let mut batch = liaison_core::storage::Batch::new();
            batch.put(key, owner_value(p));
            batch.put([prefix.as_slice(), storage_id.as_bytes()].concat(), Vec::new());
            kv.apply(batch)?;
            kv.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::RoleName;
    use liaison_core::storage::MemoryKv;

    fn device(user: &str, device: &str) -> Principal {
        Principal {
            tenant: "pharma-a".into(),
            user: user.into(),
            device: device.into(),
            role: RoleName::Msl,
            teams: vec!["onc-east".into()],
            token_id: "t".into(),
            token_hash: "h".into(),
            support: Vec::new(),
        }
    }

    #[test]
    fn the_first_device_owns_a_storage_id_and_each_device_has_a_cap() {
        let kv = MemoryKv::default();
        let sato = device("sato", "sato-phone");
        claim(&kv, &sato, "sato-store").unwrap();
        claim(&kv, &sato, "sato-store").unwrap();
        assert!(matches!(claim(&kv, &device("mallory", "m-phone"), "sato-store"), Err(StorageIdError::Taken)));
        assert!(matches!(claim(&kv, &device("sato", "sato-tablet"), "sato-store"), Err(StorageIdError::Taken)));
        for n in 1..MAX_PER_DEVICE {
            claim(&kv, &sato, &format!("s{n}")).unwrap();
        }
        assert!(matches!(claim(&kv, &sato, "one-more"), Err(StorageIdError::TooMany)));
        claim(&kv, &sato, "s1").unwrap();
    }
}
