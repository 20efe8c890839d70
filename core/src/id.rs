//! Identifiers: automerge-repo document ids and liaison's derived actor ids.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// An automerge-repo document id: the bs58check encoding of 16 random bytes (a UUID).
///
/// The same string opens the document in any automerge-repo client as `automerge:<id>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

/// Why a string is not a document id. Carries no part of the input: ids can arrive from anywhere.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("document id is not valid bs58check")]
    Encoding,
    #[error("document id must decode to 16 bytes, got {0}")]
    Length(usize),
}

impl DocumentId {
    /// A fresh id from the operating system's randomness.
    pub fn random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }

    /// An id from caller-supplied bytes, for deterministic tests and simulations.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The `automerge:<id>` URL used by automerge-repo.
    pub fn url(&self) -> String {
        format!("automerge:{self}")
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.0).with_check().into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix("automerge:").unwrap_or(s);
        let bytes = bs58::decode(s).with_check(None).into_vec().map_err(|_| IdError::Encoding)?;
        let arr: [u8; 16] = bytes.as_slice().try_into().map_err(|_| IdError::Length(bytes.len()))?;
        Ok(Self(arr))
    }
}

/// Who is editing: the signed-in user on one device of one tenant.
///
/// `install` is a random value made once per local store. It keeps actor ids unique when the
/// same user reinstalls the app on the same device and starts again from an empty store: two
/// histories under one actor id would corrupt every document they meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub tenant: String,
    pub user: String,
    pub device: String,
    pub role: Role,
    pub install: [u8; 8],
}

/// Roles as the relay knows them; the local store uses them only to gate unlocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Msl,
    Manager,
    MedicalInformation,
    Admin,
}

impl Identity {
    /// The automerge actor id for this (tenant, user, device, install).
    ///
    /// Derived, not random, so an author can be verified: anyone holding the four inputs (the
    /// document's `authors` map records them) can recompute it.
    pub fn actor_id(&self) -> automerge::ActorId {
        actor_id_for(&self.tenant, &self.user, &self.device, &self.install)
    }
}

/// See [`Identity::actor_id`].
pub fn actor_id_for(tenant: &str, user: &str, device: &str, install: &[u8; 8]) -> automerge::ActorId {
    let mut h = Sha256::new();
    h.update(b"liaison-actor/v1\0");
    for part in [tenant.as_bytes(), user.as_bytes(), device.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(install);
    let digest = h.finalize();
    automerge::ActorId::from(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_id_round_trips_through_bs58check() {
        let id = DocumentId::from_bytes([7; 16]);
        let s = id.to_string();
        assert_eq!(s.parse::<DocumentId>(), Ok(id));
        assert_eq!(id.url().parse::<DocumentId>(), Ok(id));
    }

    #[test]
    fn document_id_matches_automerge_repo_fixture() {
        // bs58check (double SHA-256 checksum) of bytes 0..16, as automerge-repo's binaryToDocumentId; computed independently in Python.
        let id = DocumentId::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(id.to_string(), "1Bhh3pU9gLXZiNDL6PEa1Gs9fh");
    }

    #[test]
    fn document_id_rejects_bad_checksum_and_length() {
        let mut s = DocumentId::from_bytes([1; 16]).to_string();
        let last = s.pop().unwrap_or('1');
        s.push(if last == '2' { '3' } else { '2' });
        assert_eq!(s.parse::<DocumentId>(), Err(IdError::Encoding));
        let short = bs58::encode([1u8; 4]).with_check().into_string();
        assert_eq!(short.parse::<DocumentId>(), Err(IdError::Length(4)));
        assert_eq!("not base58 0OIl".parse::<DocumentId>(), Err(IdError::Encoding));
    }

    #[test]
    fn actor_ids_differ_by_each_input() {
        let base = actor_id_for("t", "u", "d", &[0; 8]);
        assert_eq!(base, actor_id_for("t", "u", "d", &[0; 8]));
        assert_ne!(base, actor_id_for("t", "u", "e", &[0; 8]));
        assert_ne!(base, actor_id_for("t", "ud", "", &[0; 8]));
        assert_ne!(base, actor_id_for("t", "u", "d", &[1; 8]));
        assert_eq!(base.to_bytes().len(), 16);
    }
}
