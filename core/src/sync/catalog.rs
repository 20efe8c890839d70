//! The team catalog: how a device learns, without knowing ids, every document it may read.
//!
//! - A device asks in its `join` (peer metadata `liaisonCatalog: {cursor, scope}`): the position
//!   it reached last time in the relay's change feed and the fingerprint of the access it had
//!   then. Nothing else asks: automerge-repo JavaScript and samod clients never see a catalog.
//! - The relay answers with [`CatalogPage`]s, liaison ephemeral notices on the reserved
//!   [`catalog_doc`] id: every readable document changed since the cursor (or all of them, with
//!   `reset`, when the access changed or the cursor is unknown), with the heads it holds and
//!   whether it was erased; the last page ends with the new cursor and the reader's [`Scope`].
//!   While connected, documents that change and that the device is not syncing yet come as
//!   pages without an end.
//! - A device syncs the listed documents whose heads it lacks, deletes erased ones, and deletes
//!   its copies of documents its new scope no longer covers (access removed).
//!
//! Everything here is decoded defensively: sizes are bounded and a malformed page is `None`.

use automerge::ChangeHash;

use crate::DocumentId;
use crate::model::Kind;

/// The `liaison` value of a catalog page.
pub const CATALOG_KIND: &str = "liaison/catalog";

/// Entries a relay puts in one page: about 60 bytes each, so a page stays near 128 KiB.
pub const PAGE_ENTRIES: usize = 2_000;

/// The most entries a device accepts in one page.
const MAX_ENTRIES: u64 = 20_000;
/// The most heads one entry may name.
const MAX_HEADS: u64 = 256;
/// The most scope rules.
const MAX_RULES: u64 = 1_024;
/// The longest string accepted in a page.
const MAX_STR: usize = 1_024;

/// The document id catalog pages travel on. No document has it: its bytes are all zero, which
/// no random id is, and the engine answers any sync for it with "unavailable".
pub const fn catalog_doc() -> DocumentId {
    DocumentId::from_bytes([0; 16])
}

/// What a device sends in its `join`: where it stopped last time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogRequest {
    /// The relay's feed position the device has fully received (0: never).
    pub cursor: u64,
    /// The fingerprint of the scope that position was read under (empty: never).
    pub scope: String,
}

/// One kind of document a reader may read: a tenant, one team of it or all (`None`), one kind
/// or all (`None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScopeRule {
    /// The tenant.
    pub tenant: String,
    /// The team, or every team of the tenant.
    pub team: Option<String>,
    /// The kind, or every kind.
    pub kind: Option<Kind>,
}

/// Everything a reader may read, as rules; the relay derives it from the same roles and teams
/// its access policy reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// The rules, sorted.
    pub rules: Vec<ScopeRule>,
}

impl Scope {
    /// A scope of these rules (sorted, without repeats).
    pub fn new(mut rules: Vec<ScopeRule>) -> Self {
        rules.sort();
        rules.dedup();
        Self { rules }
    }

    /// Whether a document owned by (`tenant`, `team`) of `kind` is readable under the scope.
    pub fn allows(&self, tenant: &str, team: Option<&str>, kind: Option<Kind>) -> bool {
        self.rules.iter().any(|r| {
            r.tenant == tenant
                && r.team.as_deref().is_none_or(|t| Some(t) == team)
                && r.kind.is_none_or(|k| Some(k) == kind)
        })
    }

    /// A short fingerprint: equal scopes, equal fingerprints (16 hex digits of SHA-256).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for r in &self.rules {
            for part in [Some(r.tenant.as_str()), r.team.as_deref(), r.kind.map(Kind::as_str)] {
                match part {
                    Some(s) => {
                        h.update([1]);
                        h.update((s.len() as u32).to_be_bytes());
                        h.update(s.as_bytes());
                    }
                    None => h.update([0]),
                }
            }
        }
        h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One document in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The document.
    pub doc: DocumentId,
    /// Its heads on the relay (empty when erased).
    pub heads: Vec<ChangeHash>,
    /// It was erased: delete the local copy.
    pub erased: bool,
}

/// The end of an answer: where the device will be once it has everything listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEnd {
    /// The feed position the answer covers.
    pub cursor: u64,
    /// What the device may read now.
    pub scope: Scope,
}

/// One catalog notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPage {
    /// Part of an answer listing every readable document (not only those changed).
    pub reset: bool,
    /// The documents.
    pub entries: Vec<CatalogEntry>,
    /// Set on the last page of an answer; `None` on the others and on live updates.
    pub end: Option<CatalogEnd>,
}

/// Encodes a page as the `data` of an ephemeral message.
pub fn encode_page(page: &CatalogPage) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    // Writing into a Vec cannot fail.
    let _ = (|| -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
        e.map(3 + u64::from(page.end.is_some()))?;
        e.str("liaison")?.str(CATALOG_KIND)?;
        e.str("reset")?.bool(page.reset)?;
        e.str("entries")?.array(page.entries.len() as u64)?;
        for en in &page.entries {
            e.array(3)?.bytes(en.doc.as_bytes())?.array(en.heads.len() as u64)?;
            for h in &en.heads {
                e.bytes(h.as_ref())?;
            }
            e.bool(en.erased)?;
        }
        if let Some(end) = &page.end {
            e.str("end")?.map(2)?.str("cursor")?.u64(end.cursor)?.str("rules")?;
            e.array(end.scope.rules.len() as u64)?;
            for r in &end.scope.rules {
                e.array(3)?.str(&r.tenant)?;
                match &r.team {
                    Some(t) => e.str(t)?,
                    None => e.null()?,
                };
                match r.kind {
                    Some(k) => e.str(k.as_str())?,
                    None => e.null()?,
                };
            }
        }
        Ok(())
    })();
    buf
}

/// Decodes a page; `None` for anything else or anything malformed or oversized.
pub fn decode_page(data: &[u8]) -> Option<CatalogPage> {
    let mut d = minicbor::Decoder::new(data);
    let n = d.map().ok()??;
    let mut kind = false;
    let mut page = CatalogPage { reset: false, entries: Vec::new(), end: None };
    for _ in 0..n.min(8) {
        match d.str().ok()? {
            "liaison" => kind = d.str().ok()? == CATALOG_KIND,
            "reset" => page.reset = d.bool().ok()?,
            "entries" => {
                let len = d.array().ok()??;
                if len > MAX_ENTRIES {
                    return None;
                }
                for _ in 0..len {
                    (d.array().ok()?? == 3).then_some(())?;
                    let id: [u8; 16] = d.bytes().ok()?.try_into().ok()?;
                    let hn = d.array().ok()??;
                    if hn > MAX_HEADS {
                        return None;
                    }
                    let mut heads = Vec::with_capacity(hn as usize);
                    for _ in 0..hn {
                        heads.push(ChangeHash::try_from(d.bytes().ok()?).ok()?);
                    }
                    let erased = d.bool().ok()?;
                    page.entries.push(CatalogEntry { doc: DocumentId::from_bytes(id), heads, erased });
                }
            }
            "end" => page.end = Some(decode_end(&mut d)?),
            _ => d.skip().ok()?,
        }
    }
    kind.then_some(page)
}

fn decode_end(d: &mut minicbor::Decoder<'_>) -> Option<CatalogEnd> {
    let n = d.map().ok()??;
    let mut cursor = None;
    let mut rules = Vec::new();
    for _ in 0..n.min(8) {
        match d.str().ok()? {
            "cursor" => cursor = Some(d.u64().ok()?),
            "rules" => {
                let len = d.array().ok()??;
                if len > MAX_RULES {
                    return None;
                }
                for _ in 0..len {
                    (d.array().ok()?? == 3).then_some(())?;
                    let tenant = short(d.str().ok()?)?;
                    let team = optional_str(d)?;
                    let kind = match optional_str(d)? {
                        Some(k) => Some(Kind::parse(&k)?),
                        None => None,
                    };
                    rules.push(ScopeRule { tenant, team, kind });
                }
            }
            _ => d.skip().ok()?,
        }
    }
    Some(CatalogEnd { cursor: cursor?, scope: Scope::new(rules) })
}

fn short(s: &str) -> Option<String> {
    (s.len() <= MAX_STR).then(|| s.to_owned())
}

fn optional_str(d: &mut minicbor::Decoder<'_>) -> Option<Option<String>> {
    if d.datatype().ok()? == minicbor::data::Type::Null {
        d.skip().ok()?;
        return Some(None);
    }
    Some(Some(short(d.str().ok()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tenant: &str, team: Option<&str>, kind: Option<Kind>) -> ScopeRule {
        ScopeRule { tenant: tenant.into(), team: team.map(Into::into), kind }
    }

    #[test]
    fn a_page_round_trips_and_other_notices_are_not_pages() {
        let page = CatalogPage {
            reset: true,
            entries: vec![
                CatalogEntry { doc: DocumentId::random(), heads: vec![ChangeHash([7; 32])], erased: false },
                CatalogEntry { doc: DocumentId::random(), heads: vec![], erased: true },
            ],
            end: Some(CatalogEnd {
                cursor: 42,
                scope: Scope::new(vec![
                    rule("acme", Some("onc"), None),
                    rule("acme", None, Some(Kind::MedicalInformationRequest)),
                ]),
            }),
        };
        assert_eq!(decode_page(&encode_page(&page)), Some(page.clone()));
        let live = CatalogPage { end: None, reset: false, ..page };
        assert_eq!(decode_page(&encode_page(&live)), Some(live));
        assert_eq!(decode_page(&crate::sync::notice::encode_erasure()), None);
        assert_eq!(decode_page(b"\xff\x00garbage"), None);
    }

    #[test]
    fn truncated_or_oversized_pages_are_refused() {
        let page = CatalogPage {
            reset: false,
            entries: vec![CatalogEntry { doc: DocumentId::random(), heads: vec![ChangeHash([1; 32])], erased: false }],
            end: Some(CatalogEnd { cursor: 1, scope: Scope::new(vec![rule("acme", None, None)]) }),
        };
        let bytes = encode_page(&page);
        for cut in 0..bytes.len() {
            assert_eq!(decode_page(&bytes[..cut]), None, "cut at {cut}");
        }
        // An array header claiming more entries than allowed is refused before any allocation.
        let mut big = Vec::new();
        let mut e = minicbor::Encoder::new(&mut big);
        e.map(2).unwrap().str("liaison").unwrap().str(CATALOG_KIND).unwrap();
        e.str("entries").unwrap().array(u64::MAX).unwrap();
        assert_eq!(decode_page(&big), None);
    }

    #[test]
    fn scopes_allow_by_tenant_team_and_kind_and_fingerprint_what_they_allow() {
        let msl = Scope::new(vec![rule("acme", Some("onc"), None), rule("acme", Some("cardio"), None)]);
        assert!(msl.allows("acme", Some("onc"), Some(Kind::Interaction)));
        assert!(!msl.allows("acme", Some("neuro"), Some(Kind::Interaction)));
        assert!(!msl.allows("other", Some("onc"), Some(Kind::Interaction)));
        assert!(!msl.allows("acme", None, None));
        let mi = Scope::new(vec![rule("acme", None, Some(Kind::MedicalInformationRequest))]);
        assert!(mi.allows("acme", Some("any"), Some(Kind::MedicalInformationRequest)));
        assert!(!mi.allows("acme", Some("any"), Some(Kind::EngagementPlan)));
        let reordered = Scope::new(vec![rule("acme", Some("cardio"), None), rule("acme", Some("onc"), None)]);
        assert_eq!(msl.fingerprint(), reordered.fingerprint());
        assert_ne!(msl.fingerprint(), mi.fingerprint());
        assert_ne!(
            Scope::new(vec![rule("ab", Some("c"), None)]).fingerprint(),
            Scope::new(vec![rule("a", Some("bc"), None)]).fingerprint()
        );
        assert_eq!(msl.fingerprint().len(), 16);
    }
}
