//! Denormalised indexes kept beside the documents, in the same batch as each write, so that
//! listing and searching KOLs never loads an Automerge document: their on-disk forms, and how
//! a document's index entries are derived from its content and moved when it changes.

use automerge::{Automerge, ChangeHash};
use minicbor::{Decode, Encode};
use unicode_normalization::UnicodeNormalization;

use super::keys;
use super::screen::{self, Entry};
use crate::DocumentId;
use crate::model::{
    self, EngagementPlan, Interaction, Kind, KolProfile, MedicalInformationRequest, MedicalInsight, PrivacyState,
    Record,
};
use crate::storage::Batch;

/// What the KOL list shows, read from the index without loading the document: the
/// [`KolProfile`]'s fields as of the last write that indexed it (every write on a device; on a
/// relay, see [`DocStore::append_sync_batch`](super::DocStore::append_sync_batch)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KolSummary {
    /// The KOL profile's document id.
    pub id: DocumentId,
    /// Full name as displayed.
    pub name: String,
    /// Reading of the name (Japanese kana), used for sorting and search.
    pub name_kana: Option<String>,
    /// The KOL's main institution.
    pub institution: String,
    /// Medical specialty.
    pub specialty: Option<String>,
    /// The profile this duplicate was merged into, if it was (`None` also when the stored link
    /// is not a valid document id). [`DocStore::resolve_kol`](super::DocStore::resolve_kol)
    /// follows these links.
    pub merged_into: Option<DocumentId>,
    /// The KOL asked not to be contacted.
    pub do_not_contact: bool,
    /// Opt-out or anonymisation state.
    pub privacy: PrivacyState,
    /// Tier or influence rating, as the company's segmentation names it.
    pub tier: Option<String>,
    /// Therapeutic areas the KOL works in.
    pub therapeutic_areas: Vec<String>,
    /// When the KOL's newest interaction began (milliseconds since the Unix epoch), counting
    /// those filed under profiles merged into it; `None` without any (or in a store without
    /// screen indexes). Read from the interaction index when listing, so it follows every
    /// interaction written, moved or removed.
    pub last_interaction: Option<i64>,
}

/// On-disk form of [`KolSummary`] (the id is in the key). Field numbers are the format: never
/// reuse one. Guarded by a fixture test.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) struct StoredKolSummary {
    #[n(0)]
    pub name: String,
    #[n(1)]
    pub name_kana: Option<String>,
    #[n(2)]
    pub institution: String,
    #[n(3)]
    pub specialty: Option<String>,
    #[n(4)]
    pub merged_into: Option<String>,
    // Fields 5 to 8 came with the screen indexes: absent (so `None`) in summaries written
    // before, and `None` when they hold the default, so a profile without them encodes as before.
    /// `Some(true)` when the KOL asked not to be contacted.
    #[n(5)]
    pub do_not_contact: Option<bool>,
    /// The privacy state's name when it is not active.
    #[n(6)]
    pub privacy: Option<String>,
    #[n(7)]
    pub tier: Option<String>,
    /// `None` when there are none.
    #[n(8)]
    pub therapeutic_areas: Option<Vec<String>>,
}

impl StoredKolSummary {
    pub fn from_profile(p: KolProfile) -> Self {
        Self {
            name: p.name,
            name_kana: p.name_kana,
            institution: p.institution,
            specialty: p.specialty,
            merged_into: p.merged_into,
            do_not_contact: p.contact.do_not_contact.then_some(true),
            // A state a newer app wrote is kept as "" (read back as unknown, never as active).
            privacy: (p.privacy != PrivacyState::Active).then(|| p.privacy.name().unwrap_or_default().to_owned()),
            tier: p.tier,
            therapeutic_areas: Some(p.therapeutic_areas).filter(|a| !a.is_empty()),
        }
    }

    pub fn into_summary(self, id: DocumentId) -> KolSummary {
        KolSummary {
            id,
            name: self.name,
            name_kana: self.name_kana,
            institution: self.institution,
            specialty: self.specialty,
            merged_into: self.merged_into.and_then(|m| m.parse().ok()),
            do_not_contact: self.do_not_contact.unwrap_or(false),
            privacy: self.privacy.as_deref().map_or(PrivacyState::Active, PrivacyState::parse),
            tier: self.tier,
            therapeutic_areas: self.therapeutic_areas.unwrap_or_default(),
            last_interaction: None,
        }
    }
}

/// Per-document bookkeeping: what is needed to write the next chunk and to clean old index
/// entries when a record's references change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub(crate) struct DocMeta {
    /// `None` for documents that are not liaison records (kept and synced, not indexed).
    #[n(0)]
    pub kind: Option<String>,
    #[n(1)]
    pub next_chunk: u64,
    #[n(2)]
    pub chunks: u64,
    /// KOL ids this document is indexed under.
    #[n(3)]
    pub refs: Vec<String>,
    /// The envelope's tenant and team, for the relay's access decisions without a load.
    #[n(4)]
    pub tenant: Option<String>,
    #[n(5)]
    pub team: Option<String>,
    /// The document's heads after the write that wrote this meta. Empty in metas written
    /// before heads were kept (until the document's next write).
    #[cbor(n(6), with = "heads_cbor", has_nil)]
    pub heads: Vec<ChangeHash>,
    /// The sequence number of the document's entry in its tenant's change feed (see `feed`),
    /// so the next write can remove it; `None` if it has none.
    #[n(7)]
    pub feed: Option<u64>,
}

impl DocMeta {
    pub fn kind(&self) -> Option<Kind> {
        self.kind.as_deref().and_then(Kind::parse)
    }
}

/// Change hashes as stored: the 32-byte hashes one after another (`p/` values and, as one CBOR
/// byte string, [`heads_cbor`]).
pub(super) fn hashes_to_bytes(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

/// The hashes of [`hashes_to_bytes`]; `None` if the length is not a multiple of 32.
pub(super) fn hashes_from_bytes(bytes: &[u8]) -> Option<Vec<ChangeHash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes.chunks_exact(32).map(|c| ChangeHash::try_from(c).ok()).collect()
}

/// CBOR form of a list of change hashes (a field's `with` module): one byte string holding the
/// hashes one after another. An empty list is nil: left out at the end of an array (so a meta
/// without heads encodes as it did before heads were kept) and decoded from a missing field or
/// a null.
pub(super) mod heads_cbor {
    use automerge::ChangeHash;
    use minicbor::data::Type;
    use minicbor::{Decoder, Encoder};

    pub fn encode<Ctx, W: minicbor::encode::Write>(
        heads: &[ChangeHash],
        e: &mut Encoder<W>,
        _: &mut Ctx,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        if heads.is_empty() {
            e.null()?;
        } else {
            e.bytes(&super::hashes_to_bytes(heads))?;
        }
        Ok(())
    }

    pub fn decode<Ctx>(d: &mut Decoder<'_>, _: &mut Ctx) -> Result<Vec<ChangeHash>, minicbor::decode::Error> {
        if d.datatype()? == Type::Null {
            d.null()?;
            return Ok(Vec::new());
        }
        super::hashes_from_bytes(d.bytes()?)
            .ok_or_else(|| minicbor::decode::Error::message("heads are not 32-byte hashes"))
    }

    pub fn nil() -> Option<Vec<ChangeHash>> {
        Some(Vec::new())
    }

    pub fn is_nil(heads: &[ChangeHash]) -> bool {
        heads.is_empty()
    }
}

pub(crate) fn encode<T: Encode<()>>(v: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail.
    minicbor::to_vec(v).unwrap_or_default()
}

/// Folds text for search: compatibility normalisation (half-width kana and full-width Latin
/// become their ordinary forms), lower case, and katakana to hiragana, so that "ヤマダ",
/// "ﾔﾏﾀﾞ" and "やまだ" all match.
pub fn fold(s: &str) -> String {
    s.nfkc()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

impl KolSummary {
    /// Whether every whitespace-separated term of `query` occurs in the name, kana or institution.
    pub fn matches(&self, folded_terms: &[String]) -> bool {
        let hay = [fold(&self.name), self.name_kana.as_deref().map(fold).unwrap_or_default(), fold(&self.institution)];
        folded_terms.iter().all(|t| hay.iter().any(|h| h.contains(t.as_str())))
    }

    /// Sort key: the reading when there is one (Japanese names sort by kana), else the name.
    pub fn sort_key(&self) -> String {
        fold(self.name_kana.as_deref().unwrap_or(&self.name))
    }
}

/// What the indexes say about one document, derived from its content.
#[derive(Debug, Default)]
pub(super) struct IndexData {
    pub(super) kind: Option<Kind>,
    pub(super) summary: Option<StoredKolSummary>,
    pub(super) refs: Vec<String>,
    pub(super) owner: Option<(String, String)>,
    /// Its screen index entries (written only by stores that keep them).
    pub(super) screen: Vec<Entry>,
}

pub(super) fn index_data(doc: &Automerge) -> IndexData {
    let kind = match model::document_kind(doc) {
        Ok(kind) => kind,
        Err(e) => return IndexData { screen: screen::of_unreadable(doc, &e), ..IndexData::default() },
    };
    let owner = model::read_owner(doc).ok();
    let mut data = IndexData { kind: Some(kind), owner, ..IndexData::default() };
    // Creator and creation time, for the screens (author, a request's age); a profile needs none.
    let envelope = || model::read_envelope(doc).ok();
    let mut readable = true;
    match kind {
        Kind::KolProfile => {
            if let Some(p) = hydrate::<KolProfile>(doc) {
                data.screen = screen::of_profile(p.merged_into.as_deref());
                data.summary = Some(StoredKolSummary::from_profile(p));
            } else {
                readable = false;
            }
        }
        Kind::Interaction => {
            if let Some(i) = hydrate::<Interaction>(doc) {
                data.refs = i.kol_refs();
                data.screen = screen::of_interaction(&i, envelope().as_ref());
            } else {
                readable = false;
            }
        }
        Kind::MedicalInsight => {
            if let Some(i) = hydrate::<MedicalInsight>(doc) {
                data.refs = i.kol_refs();
                data.screen = screen::of_insight(i.status, i.kol_ids, envelope().as_ref());
            } else {
                readable = false;
            }
        }
        Kind::MedicalInformationRequest => {
            if let Some(m) = hydrate::<MedicalInformationRequest>(doc) {
                data.refs = m.kol_refs();
                data.screen = screen::of_mir(&m, envelope().as_ref());
            } else {
                readable = false;
            }
        }
        Kind::EngagementPlan => {
            if let Some(p) = hydrate::<EngagementPlan>(doc) {
                data.refs = p.kol_refs();
                data.screen = screen::of_plan(&p);
            } else {
                readable = false;
            }
        }
    }
    if !readable {
        data.screen = vec![screen::unreadable(Some(kind.as_str()), None)];
    }
    data
}

/// The record, or `None` with a warning: a record that does not hydrate is not listed or
/// indexed by KOL (the document itself is kept and synced), and is counted as unreadable.
fn hydrate<R: Record>(doc: &Automerge) -> Option<R> {
    model::read_record::<R>(doc)
        .inspect_err(|e| tracing::warn!(kind = %R::KIND, error = %e, "record does not hydrate; not indexed"))
        .ok()
}

/// Moves a document's index entries from what `old` says to what `idx` says; `meta` takes the
/// new kind, references and owner.
pub(super) fn reindex(batch: &mut Batch, id: &DocumentId, old: &DocMeta, meta: &mut DocMeta, idx: &IndexData) {
    if let Some(old_kind) = old.kind() {
        for r in &old.refs {
            if let Ok(kol) = r.parse::<DocumentId>() {
                batch.delete(keys::kol_ref(&kol, old_kind, id));
            }
        }
    }
    meta.kind = idx.kind.map(|k| k.as_str().to_owned());
    meta.refs = idx.refs.clone();
    // A document's owner, once known, never changes here: a later change that broke or moved
    // the envelope (refused by the relay, but defence in depth) cannot take the document out
    // of its tenant's catalog, export or purge.
    if meta.tenant.is_none() || meta.team.is_none() {
        (meta.tenant, meta.team) = idx.owner.clone().unzip();
    }
    if let Some(kind) = idx.kind {
        batch.put(keys::kind(kind, id), Vec::new());
        for r in &idx.refs {
            if let Ok(kol) = r.parse::<DocumentId>() {
                batch.put(keys::kol_ref(&kol, kind, id), Vec::new());
            }
        }
    }
    if let Some(s) = &idx.summary {
        batch.put(keys::summary(id), encode(s));
    }
}

#[cfg(test)]
#[path = "index/tests.rs"]
mod tests;
