//! The disk formats of the meta and the KOL summary (fixtures), and search folding.

use super::*;

#[test]
fn fold_matches_kana_forms_and_case() {
    assert_eq!(fold("ヤマダ"), "やまだ");
    assert_eq!(fold("ﾔﾏﾀﾞ"), "やまだ");
    assert_eq!(fold("ＴＯＫＹＯ Univ"), "tokyo univ");
    assert_eq!(fold("ー"), "ー");
}

#[test]
fn stored_summary_format_is_stable() {
    // Changing this fixture means every phone's index must be rebuilt: bump the store format.
    let s = StoredKolSummary {
        name: "A".into(),
        name_kana: Some("あ".into()),
        institution: "B".into(),
        specialty: None,
        merged_into: None,
        do_not_contact: None,
        privacy: None,
        tier: None,
        therapeutic_areas: None,
    };
    let bytes = encode(&s);
    // minicbor leaves trailing `None` fields out of the array.
    assert_eq!(bytes, [0x83, 0x61, b'A', 0x63, 0xe3, 0x81, 0x82, 0x61, b'B']);
    assert_eq!(minicbor::decode::<StoredKolSummary>(&bytes).ok(), Some(s));
}

/// Fields 5 to 8 (the KOL list's do-not-contact, privacy, tier and areas) follow the old
/// ones; a summary written before them (the fixture above) reads with none.
#[test]
fn stored_summary_with_list_fields_format_is_stable() {
    let mut profile = KolProfile::new("A", "B");
    profile.contact.do_not_contact = true;
    profile.privacy = PrivacyState::OptedOut;
    profile.tier = Some("1".into());
    profile.therapeutic_areas = vec!["c".into()];
    let s = StoredKolSummary::from_profile(profile);
    let bytes = encode(&s);
    let mut expected = vec![0x89, 0x61, b'A', 0xf6, 0x61, b'B', 0xf6, 0xf6, 0xf5, 0x69];
    expected.extend_from_slice(b"opted_out");
    expected.extend_from_slice(&[0x61, b'1', 0x81, 0x61, b'c']);
    assert_eq!(bytes, expected);
    let summary = minicbor::decode::<StoredKolSummary>(&bytes).unwrap_or_else(|_| unreachable!());
    let summary = summary.into_summary(DocumentId::from_bytes([1; 16]));
    assert!(summary.do_not_contact);
    assert_eq!((summary.privacy, summary.tier.as_deref()), (PrivacyState::OptedOut, Some("1")));
    assert_eq!(summary.therapeutic_areas, ["c"]);
    // A profile with none of them encodes as before they existed.
    let plain = StoredKolSummary::from_profile(KolProfile::new("A", "B"));
    assert_eq!(encode(&plain), [0x83, 0x61, b'A', 0xf6, 0x61, b'B']);
}

#[test]
fn doc_meta_format_is_stable() {
    let m = DocMeta {
        kind: Some("interaction".into()),
        next_chunk: 3,
        chunks: 2,
        refs: vec!["x".into()],
        ..DocMeta::default()
    };
    let bytes = encode(&m);
    let mut expected = vec![0x84, 0x6b];
    expected.extend_from_slice(b"interaction");
    expected.extend_from_slice(&[0x03, 0x02, 0x81, 0x61, b'x']);
    assert_eq!(bytes, expected);
    assert_eq!(minicbor::decode::<DocMeta>(&bytes).ok(), Some(m));
}

/// Heads (field 6) and the feed entry (field 7): one byte string of whole hashes, and a
/// number. A meta written before them (the fixture above) decodes with none.
#[test]
fn doc_meta_with_heads_and_feed_entry_format_is_stable() {
    let m = DocMeta {
        kind: Some("interaction".into()),
        next_chunk: 3,
        chunks: 2,
        refs: vec![],
        tenant: Some("t".into()),
        team: None,
        heads: vec![ChangeHash([0xaa; 32]), ChangeHash([0xbb; 32])],
        feed: Some(300),
    };
    let bytes = encode(&m);
    let mut expected = vec![0x88, 0x6b];
    expected.extend_from_slice(b"interaction");
    expected.extend_from_slice(&[0x03, 0x02, 0x80, 0x61, b't', 0xf6, 0x58, 64]);
    expected.extend_from_slice(&[0xaa; 32]);
    expected.extend_from_slice(&[0xbb; 32]);
    expected.extend_from_slice(&[0x19, 0x01, 0x2c]);
    assert_eq!(bytes, expected);
    assert_eq!(minicbor::decode::<DocMeta>(&bytes).ok(), Some(m.clone()));

    // No heads but a feed entry: the heads are a null in the array.
    let no_heads = DocMeta { heads: vec![], ..m };
    assert_eq!(minicbor::decode::<DocMeta>(&encode(&no_heads)).ok(), Some(no_heads));
    // Heads that are not whole hashes do not decode.
    let mut bad = bytes.clone();
    let at = bad.iter().position(|b| *b == 64).unwrap_or(0);
    bad[at] = 63;
    bad.remove(at + 1);
    assert!(minicbor::decode::<DocMeta>(&bad).is_err());

    let old = [0x84, 0x61, b'x', 0x01, 0x01, 0x80];
    let decoded: DocMeta = minicbor::decode(&old).unwrap_or_default();
    assert_eq!((decoded.heads, decoded.feed, decoded.chunks), (vec![], None, 1));
}
