//! KOL listing, search and merging, and how `merged_into` links resolve.

use std::collections::{HashMap, HashSet};

use super::index::{KolSummary, StoredKolSummary, fold};
use super::{DocStore, Origin, StoreError, keys, lock};
use crate::id::DocumentId;
use crate::model::{self, Kind, KolProfile};

impl DocStore {
    /// Every KOL profile summary, merged losers included, unsorted.
    fn all_summaries(&self) -> Result<Vec<KolSummary>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.kv.scan_prefix(keys::SUMMARY_PREFIX)? {
            // A damaged entry hides one KOL from the list, not the whole list; the document
            // itself is still there and rewrites its summary on its next change.
            let Some(id) = keys::trailing_id(&k) else {
                tracing::warn!("skipping a malformed KOL summary key");
                continue;
            };
            match minicbor::decode::<StoredKolSummary>(&v) {
                Ok(stored) => out.push(stored.into_summary(id)),
                Err(_) => tracing::warn!(document = %id, "skipping an unreadable KOL summary"),
            }
        }
        Ok(out)
    }

    /// The KOLs to show: merged duplicates are left out when their winner is here. Sorted by
    /// reading (kana) or name. Each carries its newest interaction's start, its merged
    /// profiles' included (one key read per profile, from the interaction index).
    pub fn list_kols(&self) -> Result<Vec<KolSummary>, StoreError> {
        let all = self.all_summaries()?;
        let resolver = Resolver::new(&all);
        let mut newest: HashMap<DocumentId, i64> = HashMap::new();
        if self.options.screen_indexes {
            for s in &all {
                if let Some(start) = self.newest_interaction(&s.id)? {
                    let at = newest.entry(resolver.resolve(s.id)).or_insert(start);
                    *at = (*at).max(start);
                }
            }
        }
        let mut shown: Vec<KolSummary> = all
            .into_iter()
            .filter(|s| resolver.resolve(s.id) == s.id)
            .map(|s| KolSummary { last_interaction: newest.get(&s.id).copied(), ..s })
            .collect();
        shown.sort_by_cached_key(|s| (s.sort_key(), s.id));
        Ok(shown)
    }

    /// KOLs whose name, reading or institution contain every term of `query` (kana-, width- and
    /// case-insensitive).
    pub fn search_kols(&self, query: &str) -> Result<Vec<KolSummary>, StoreError> {
        let terms: Vec<String> = query.split_whitespace().map(fold).collect();
        Ok(self.list_kols()?.into_iter().filter(|s| s.matches(&terms)).collect())
    }

    /// The profile a KOL id stands for now: itself, or the profile it was merged into.
    pub fn resolve_kol(&self, id: &DocumentId) -> Result<DocumentId, StoreError> {
        let all = self.all_summaries()?;
        Ok(Resolver::new(&all).resolve(*id))
    }

    /// Records of `kind` that belong to a KOL, including those filed under profiles merged into it.
    pub fn records_for_kol(&self, kol: &DocumentId, kind: Kind) -> Result<Vec<DocumentId>, StoreError> {
        let mut out = Vec::new();
        for m in self.kol_members(kol)? {
            for k in self.kv.scan_keys(&keys::kol_ref_prefix(&m, kind))? {
                out.extend(keys::trailing_id(&k));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The profiles whose records count as `kol`'s: `kol`, what it resolves to, and every
    /// profile resolving there (merged into it, directly or through a chain). With screen
    /// indexes, read from the merged profiles' links (`x/g/`) instead of every summary: only a
    /// merged profile resolves elsewhere than to itself.
    pub(super) fn kol_members(&self, kol: &DocumentId) -> Result<HashSet<DocumentId>, StoreError> {
        if self.options.screen_indexes { self.members_by_merge_links(kol) } else { self.members_by_summaries(kol) }
    }

    fn members_by_summaries(&self, kol: &DocumentId) -> Result<HashSet<DocumentId>, StoreError> {
        let all = self.all_summaries()?;
        let resolver = Resolver::new(&all);
        let candidates: Vec<DocumentId> = all.iter().map(|s| s.id).collect();
        Ok(members(&resolver, &candidates, kol))
    }

    fn members_by_merge_links(&self, kol: &DocumentId) -> Result<HashSet<DocumentId>, StoreError> {
        let mut next = HashMap::new();
        for (key, value) in self.kv.scan_prefix(keys::SCREEN_MERGED)? {
            let (Some(from), Ok(into)) = (keys::trailing_id(&key), <[u8; 16]>::try_from(value.as_slice())) else {
                tracing::warn!("skipping a malformed merge link");
                continue;
            };
            let into = DocumentId::from_bytes(into);
            // As `Resolver::new`: a link to a profile not listed here leads nowhere.
            let listed =
                self.kv.get(&keys::summary(&into))?.is_some_and(|v| minicbor::decode::<StoredKolSummary>(&v).is_ok());
            if listed {
                next.insert(from, into);
            }
        }
        let candidates: Vec<DocumentId> = next.keys().copied().collect();
        Ok(members(&Resolver { next }, &candidates, kol))
    }

    /// Merges duplicate KOL profiles: `winner` absorbs `loser`'s details, `loser` records
    /// `merged_into`. Both changes are written in one batch. Records filed under the loser are
    /// not touched (some are locked); lookups resolve them to the winner.
    pub fn merge_kols(&self, winner: &DocumentId, loser: &DocumentId) -> Result<(), StoreError> {
        let winner = self.resolve_kol(winner)?;
        if winner == *loser || self.resolve_kol(loser)? == winner {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let who = &self.identity;
        let mut cache = lock(&self.cache);
        let mut l = self.take_pending(&mut cache, loser, Origin::Local)?;
        l.merged_away = true;
        let mut w = self.take_pending(&mut cache, &winner, Origin::Local)?;
        let loser_profile: KolProfile = model::read_record(&l.doc)?;
        if loser_profile.merged_into.is_some() {
            return Err(StoreError::Invalid("that profile is already merged into another"));
        }
        let winner_str = winner.to_string();
        model::update_record::<KolProfile, _>(&mut l.doc, who, now, |p| p.merged_into = Some(winner_str))?;
        model::update_record::<KolProfile, _>(&mut w.doc, who, now, |p| {
            model::absorb_profile(p, &loser_profile, &loser.to_string())
        })?;
        self.commit(&mut cache, vec![l, w])
    }
}

/// `kol`, what it resolves to, and each of `candidates` resolving there.
fn members(resolver: &Resolver, candidates: &[DocumentId], kol: &DocumentId) -> HashSet<DocumentId> {
    let target = resolver.resolve(*kol);
    let mut members: HashSet<DocumentId> =
        candidates.iter().copied().filter(|id| resolver.resolve(*id) == target).collect();
    members.insert(target);
    members.insert(*kol);
    members
}

/// Follows `merged_into` links. Two devices may merge a pair in opposite directions while
/// offline; the resulting cycle resolves to its smallest id, the same answer on every device.
struct Resolver {
    next: HashMap<DocumentId, DocumentId>,
}

impl Resolver {
    fn new(all: &[KolSummary]) -> Self {
        let present: HashSet<DocumentId> = all.iter().map(|s| s.id).collect();
        let next =
            all.iter().filter_map(|s| s.merged_into.filter(|t| present.contains(t)).map(|t| (s.id, t))).collect();
        Self { next }
    }

    fn resolve(&self, start: DocumentId) -> DocumentId {
        let mut seen = vec![start];
        let mut cur = start;
        while let Some(&n) = self.next.get(&cur) {
            if let Some(pos) = seen.iter().position(|s| *s == n) {
                return seen[pos..].iter().copied().min().unwrap_or(n);
            }
            seen.push(n);
            cur = n;
        }
        cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DocumentId {
        DocumentId::from_bytes([n; 16])
    }

    fn profile(n: u8, merged_into: Option<u8>) -> KolSummary {
        KolSummary {
            id: id(n),
            name: format!("Dr. {n}"),
            name_kana: None,
            institution: "Univ".into(),
            specialty: None,
            merged_into: merged_into.map(id),
            do_not_contact: false,
            privacy: model::PrivacyState::Active,
            tier: None,
            therapeutic_areas: Vec::new(),
            last_interaction: None,
        }
    }

    /// Merge links read from `x/g/` give the members every summary gives: chains, a cycle made
    /// by opposite offline merges, a link to a profile not here.
    #[test]
    fn merge_links_give_the_members_every_summary_gives() {
        let who = crate::Identity {
            tenant: "t".into(),
            user: "u".into(),
            device: "d".into(),
            role: crate::Role::Msl,
            install: [1; 8],
        };
        let kv = std::sync::Arc::new(crate::storage::MemoryKv::new());
        let clock = std::sync::Arc::new(super::super::ManualClock::new(1));
        let s = DocStore::with_kv(kv, who, clock, super::super::StoreOptions::default()).unwrap();
        let ids: Vec<DocumentId> =
            (0..6).map(|n| s.create("x", &KolProfile::new(format!("Dr. {n}"), "U")).unwrap()).collect();
        let link = |from: usize, into: String| {
            s.update(&ids[from], |p: &mut KolProfile| p.merged_into = Some(into)).unwrap();
        };
        link(0, ids[1].to_string()); // a chain 0 -> 1 -> 2
        link(1, ids[2].to_string());
        link(3, ids[4].to_string()); // a cycle 3 <-> 4
        link(4, ids[3].to_string());
        link(5, DocumentId::from_bytes([9; 16]).to_string()); // to a profile not here
        for id in &ids {
            assert_eq!(s.members_by_merge_links(id).unwrap(), s.members_by_summaries(id).unwrap(), "{id}");
        }
        assert_eq!(s.members_by_merge_links(&ids[2]).unwrap().len(), 3);
    }

    /// Each profile and what it is merged into.
    type Links = &'static [(u8, Option<u8>)];
    /// Where a profile resolves to.
    type Expected = &'static [(u8, u8)];

    /// Where each profile's `merged_into` links lead. Ids are `[n; 16]`, so a smaller `n` is a
    /// smaller id: a cycle resolves to its smallest member on every device.
    #[test]
    fn merged_into_links_resolve_to_one_profile_on_every_device() {
        #[rustfmt::skip]
        let table: &[(&str, Links, Expected)] = &[
            ("no links",                 &[(1, None), (2, None)],                   &[(1, 1), (2, 2)]),
            ("one merge",                &[(1, Some(2)), (2, None)],                &[(1, 2), (2, 2)]),
            ("a chain",                  &[(1, Some(2)), (2, Some(3)), (3, None)],  &[(1, 3), (2, 3), (3, 3)]),
            ("a chain, listed backwards",&[(3, None), (2, Some(3)), (1, Some(2))],  &[(1, 3), (2, 3), (3, 3)]),
            ("merged both ways offline", &[(1, Some(2)), (2, Some(1))],             &[(1, 1), (2, 1)]),
            ("the same, the other way",  &[(2, Some(1)), (1, Some(2))],             &[(1, 1), (2, 1)]),
            ("a cycle of three",         &[(3, Some(1)), (1, Some(2)), (2, Some(3))], &[(1, 1), (2, 1), (3, 1)]),
            ("a chain into a cycle",     &[(4, Some(3)), (3, Some(2)), (2, Some(3))], &[(4, 2), (3, 2), (2, 2)]),
            ("merged into itself",       &[(1, Some(1))],                           &[(1, 1)]),
            ("merged into a missing one",&[(1, Some(9)), (2, Some(1))],             &[(1, 1), (2, 1)]),
            ("an id not listed at all",  &[(1, Some(2)), (2, None)],                &[(8, 8)]),
        ];
        for (case, profiles, expected) in table {
            let all: Vec<KolSummary> = profiles.iter().map(|(n, into)| profile(*n, *into)).collect();
            let resolver = Resolver::new(&all);
            for (from, to) in *expected {
                assert_eq!(resolver.resolve(id(*from)), id(*to), "{case}: {from} resolves to {to}");
            }
        }
    }
}
