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
    /// The text is not valid base58, or its 4-byte checksum does not match.
    #[error("document id is not valid bs58check")]
    Encoding,
    /// The text decodes to this many bytes instead of 16.
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

    /// The id's 16 raw bytes.
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
    /// The tenant (pharma client) the user works for.
    pub tenant: String,
    /// The signed-in user, as the relay's credentials name them. Recorded in `authors`, submissions
    /// and unlocks.
    pub user: String,
    /// This device's name, as the relay's credentials name it.
    pub device: String,
    /// The user's role, which gates unlocking and legal holds locally.
    pub role: Role,
    /// Random bytes made once per local store; the last 8 bytes of every actor id (see above).
    pub install: [u8; 8],
}

/// Roles as the relay knows them; locally they only gate unlocking and legal holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A medical science liaison.
    Msl,
    /// A manager of MSLs.
    Manager,
    /// Medical-information staff, who answer medical information requests; may change legal holds.
    MedicalInformation,
    /// An administrator: may unlock submitted records and change legal holds.
    Admin,
}

impl Identity {
    /// The automerge actor id for this (tenant, user, device, install).
    ///
    /// Derived, not random, so an author can be verified: its first [`ACTOR_PRINCIPAL_BYTES`]
    /// are [`actor_principal`] of (tenant, user, device), which the relay recomputes from the
    /// credential a change arrives with and refuses changes whose actor does not carry it. The
    /// last 8 bytes are `install`, so a reinstalled app never reuses an actor id.
    pub fn actor_id(&self) -> automerge::ActorId {
        actor_id_for(&self.tenant, &self.user, &self.device, &self.install)
    }

    /// The part of this identity's actor ids that the relay checks: see [`actor_principal`].
    pub fn actor_principal(&self) -> [u8; ACTOR_PRINCIPAL_BYTES] {
        actor_principal(&self.tenant, &self.user, &self.device)
    }
}

/// Bytes of an actor id that name its principal (tenant, user, device).
pub const ACTOR_PRINCIPAL_BYTES: usize = 16;

/// `SHA-256("liaison-actor/v2\0" ‖ len ‖ tenant ‖ len ‖ user ‖ len ‖ device)[..16]`, lengths as
/// 8-byte big-endian integers: the first 16 bytes of every actor id of that principal. Any
/// automerge-repo client can follow the scheme (JavaScript: `crypto.createHash("sha256")`).
pub fn actor_principal(tenant: &str, user: &str, device: &str) -> [u8; ACTOR_PRINCIPAL_BYTES] {
    let mut h = Sha256::new();
    h.update(b"liaison-actor/v2\0");
    for part in [tenant.as_bytes(), user.as_bytes(), device.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut out = [0u8; ACTOR_PRINCIPAL_BYTES];
    out.copy_from_slice(&digest[..ACTOR_PRINCIPAL_BYTES]);
    out
}

/// See [`Identity::actor_id`]: [`actor_principal`] followed by the 8 install bytes (24 bytes).
pub fn actor_id_for(tenant: &str, user: &str, device: &str, install: &[u8; 8]) -> automerge::ActorId {
    let mut bytes = actor_principal(tenant, user, device).to_vec();
    bytes.extend_from_slice(install);
    automerge::ActorId::from(bytes)
}

/// Whether `actor` is one of the principal's actor ids (whatever its install bytes).
pub fn actor_belongs_to(actor: &automerge::ActorId, principal: &[u8; ACTOR_PRINCIPAL_BYTES]) -> bool {
    let bytes = actor.to_bytes();
    bytes.len() == ACTOR_PRINCIPAL_BYTES + 8 && bytes[..ACTOR_PRINCIPAL_BYTES] == principal[..]
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
        assert_eq!(base.to_bytes().len(), 24);
        assert!(actor_belongs_to(&base, &actor_principal("t", "u", "d")));
        assert!(actor_belongs_to(&actor_id_for("t", "u", "d", &[9; 8]), &actor_principal("t", "u", "d")));
        assert!(!actor_belongs_to(&base, &actor_principal("t", "u", "e")));
        assert!(!actor_belongs_to(
            &automerge::ActorId::from(&actor_principal("t", "u", "d")[..]),
            &actor_principal("t", "u", "d")
        ));
    }

    const ACTOR_FIXTURE: &str = "8c25c8bf3a802ddcc1203efd127f2f690102030405060708";

    #[test]
    fn actor_scheme_matches_its_fixture() {
        // The documented scheme, computed independently with Python's hashlib:
        // sha256(b"liaison-actor/v2\0" + (len+bytes for "pharma-a", "sato", "sato-phone"))[:16].
        let actor = actor_id_for("pharma-a", "sato", "sato-phone", &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(actor.to_hex_string(), ACTOR_FIXTURE);
    }
}
