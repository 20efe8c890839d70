use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn doc() -> DocumentId {
    DocumentId::from_bytes(core::array::from_fn(|i| i as u8))
}

// Fixtures made with Python's cbor2 from the JavaScript shapes (cbor-x keeps key order).
const JS_JOIN: &str = "a46474797065646a6f696e6873656e646572496467706565722d6a737819737570706f7274656450726f746f636f6c56657273696f6e738161316c706565724d65746164617461a26973746f7261676549646773746f72652d316b6973457068656d6572616cf4";
const JS_SYNC: &str = "a564747970656473796e636873656e6465724964616168746172676574496461626a646f63756d656e744964781a3142686833705539674c585a694e444c3650456131477339666864646174614442010203";
const SPEC_JOIN: &str = "a56474797065646a6f696e6873656e646572496461707819737570706f7274656450726f746f636f6c56657273696f6e736131686d65746164617461a16b6973457068656d6572616cf56565787472618201a1617802";
const TAGGED_SYNC: &str = "a564747970656473796e636873656e6465724964616168746172676574496461626a646f63756d656e744964781a3142686833705539674c585a694e444c365045613147733966686464617461d840420909";
const JS_REMOTE_HEADS: &str = "a564747970657472656d6f74652d68656164732d6368616e6765646873656e6465724964616168746172676574496461626a646f63756d656e744964781a3142686833705539674c585a694e444c36504561314773396668686e65774865616473a1627331a26568656164738168614756736247383d6974696d657374616d70fb4278bcfe56800000";

#[test]
fn decodes_and_reencodes_a_javascript_join_byte_for_byte() {
    let m = decode(&hex(JS_JOIN), DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(
        m,
        Message::Join {
            sender_id: "peer-js".into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: Some(PeerMetadata {
                storage_id: Some(StorageId("store-1".into())),
                is_ephemeral: false,
                catalog: None,
            }),
        }
    );
    assert_eq!(m.encode(), hex(JS_JOIN));
}

#[test]
fn a_liaison_join_carries_its_catalog_request_and_round_trips() {
    let join = Message::Join {
        sender_id: "phone".into(),
        supported_protocol_versions: vec!["1".into()],
        metadata: Some(PeerMetadata {
            storage_id: Some(StorageId("store-1".into())),
            is_ephemeral: false,
            catalog: Some(crate::sync::catalog::CatalogRequest { cursor: 7, scope: "ab12".into() }),
        }),
    };
    assert_eq!(decode(&join.encode(), DEFAULT_MAX_FRAME).unwrap(), join);
}

#[test]
fn decodes_and_reencodes_a_javascript_sync_byte_for_byte() {
    let m = decode(&hex(JS_SYNC), DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(
        m,
        Message::Sync { sender_id: "a".into(), target_id: "b".into(), document_id: doc(), data: vec![0x42, 1, 2, 3] }
    );
    assert_eq!(m.encode(), hex(JS_SYNC));
}

#[test]
fn accepts_the_spec_shapes_and_skips_unknown_keys() {
    // `metadata` instead of `peerMetadata`, one version string instead of an array, an extra key.
    let m = decode(&hex(SPEC_JOIN), DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(
        m,
        Message::Join {
            sender_id: "p".into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: Some(PeerMetadata { storage_id: None, is_ephemeral: true, catalog: None }),
        }
    );
}

#[test]
fn accepts_typed_array_tagged_data_and_float_timestamps() {
    let m = decode(&hex(TAGGED_SYNC), DEFAULT_MAX_FRAME).unwrap();
    assert!(matches!(m, Message::Sync { data, .. } if data == [9, 9]));
    let m = decode(&hex(JS_REMOTE_HEADS), DEFAULT_MAX_FRAME).unwrap();
    let Message::RemoteHeadsChanged { new_heads, .. } = m else { panic!("wrong type") };
    let at = &new_heads[&StorageId("s1".into())];
    assert_eq!((at.heads.as_slice(), at.timestamp), (["aGVsbG8=".to_owned()].as_slice(), 1_700_000_000_000));
}

#[test]
fn unknown_message_types_are_not_errors() {
    let mut buf = Vec::new();
    Encoder::new(&mut buf)
        .map(2)
        .unwrap()
        .str("type")
        .unwrap()
        .str("future-thing")
        .unwrap()
        .str("x")
        .unwrap()
        .u8(1)
        .unwrap();
    assert_eq!(decode(&buf, DEFAULT_MAX_FRAME), Ok(Message::Unknown { type_name: "future-thing".into() }));
}

#[test]
fn refuses_oversized_frames_before_parsing() {
    let frame = vec![0xff; 100];
    assert_eq!(decode(&frame, 99), Err(DecodeError::TooLarge { size: 100, limit: 99 }));
}

#[test]
fn clear_errors_for_malformed_frames() {
    assert_eq!(decode(&[], 10), Err(DecodeError::Cbor));
    assert_eq!(decode(&[0x01], 10), Err(DecodeError::NotAMap));
    // {"type": "sync"} without the rest.
    let m = Message::Unknown { type_name: "sync".into() }.encode();
    assert_eq!(decode(&m, 100), Err(DecodeError::Missing { message: "sync", field: "senderId" }));
    // A bad document id is named as such, without echoing it.
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    e.map(4).unwrap();
    e.str("type").unwrap().str("doc-unavailable").unwrap();
    e.str("senderId").unwrap().str("a").unwrap();
    e.str("targetId").unwrap().str("b").unwrap();
    e.str("documentId").unwrap().str("secret-not-an-id").unwrap();
    let err = decode(&buf, 1000).unwrap_err();
    assert_eq!(err, DecodeError::BadDocumentId { field: "documentId" });
    assert!(!err.to_string().contains("secret"));
    // Trailing garbage after a valid message.
    let mut two = hex(JS_SYNC);
    two.push(0x00);
    assert_eq!(decode(&two, DEFAULT_MAX_FRAME), Err(DecodeError::Trailing));
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // {"type": "sync", "x": [[[[...]]]]} nested 100,000 deep.
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    e.map(2).unwrap().str("type").unwrap().str("sync").unwrap().str("x").unwrap();
    for _ in 0..100_000 {
        e.array(1).unwrap();
    }
    e.u8(0).unwrap();
    assert_eq!(decode(&buf, usize::MAX), Err(DecodeError::TooDeep));
}

#[test]
fn indefinite_length_maps_and_strings_decode() {
    let mut buf = Vec::new();
    let mut e = Encoder::new(&mut buf);
    e.begin_map().unwrap();
    e.str("type").unwrap().str("leave").unwrap();
    e.str("senderId").unwrap().begin_str().unwrap().str("pe").unwrap().str("er").unwrap().end().unwrap();
    e.end().unwrap();
    assert_eq!(decode(&buf, 1000), Ok(Message::Leave { sender_id: "peer".into() }));
}

fn peer() -> impl Strategy<Value = PeerId> {
    "[a-zA-Z0-9+/=-]{0,24}".prop_map(PeerId)
}

fn meta() -> impl Strategy<Value = Option<PeerMetadata>> {
    proptest::option::of(
        (proptest::option::of("[a-z0-9-]{1,20}".prop_map(StorageId)), any::<bool>())
            .prop_map(|(storage_id, is_ephemeral)| PeerMetadata { storage_id, is_ephemeral, catalog: None }),
    )
}

fn docid() -> impl Strategy<Value = DocumentId> {
    any::<[u8; 16]>().prop_map(DocumentId::from_bytes)
}

fn message() -> impl Strategy<Value = Message> {
    let data = prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (peer(), prop::collection::vec("[0-9]{1,2}", 0..3), meta()).prop_map(|(s, v, m)| Message::Join {
            sender_id: s,
            supported_protocol_versions: v,
            metadata: m
        }),
        (peer(), peer(), "[0-9]", meta()).prop_map(|(s, t, v, m)| Message::Peer {
            sender_id: s,
            target_id: t,
            selected_protocol_version: v,
            metadata: m
        }),
        peer().prop_map(|s| Message::Leave { sender_id: s }),
        (proptest::option::of(peer()), proptest::option::of(peer()), ".{0,40}").prop_map(|(s, t, m)| Message::Error {
            sender_id: s,
            target_id: t,
            message: m
        }),
        (peer(), peer(), docid(), data.clone()).prop_map(|(s, t, d, x)| Message::Request {
            sender_id: s,
            target_id: t,
            document_id: d,
            data: x
        }),
        (peer(), peer(), docid(), data.clone()).prop_map(|(s, t, d, x)| Message::Sync {
            sender_id: s,
            target_id: t,
            document_id: d,
            data: x
        }),
        (peer(), peer(), docid()).prop_map(|(s, t, d)| Message::DocUnavailable {
            sender_id: s,
            target_id: t,
            document_id: d
        }),
        (peer(), peer(), any::<u64>(), "[a-z0-9]{0,16}", docid(), data).prop_map(|(s, t, c, sid, d, x)| {
            Message::Ephemeral { sender_id: s, target_id: t, count: c, session_id: sid, document_id: d, data: x }
        }),
        (
            peer(),
            peer(),
            prop::collection::vec("[a-z]{1,8}".prop_map(StorageId), 0..3),
            prop::collection::vec("[a-z]{1,8}".prop_map(StorageId), 0..3)
        )
            .prop_map(|(s, t, add, remove)| Message::RemoteSubscriptionChange {
                sender_id: s,
                target_id: t,
                add,
                remove
            }),
        (
            peer(),
            peer(),
            docid(),
            prop::collection::btree_map(
                "[a-z]{1,8}".prop_map(StorageId),
                (prop::collection::vec("[a-f0-9]{64}", 0..3), any::<u64>())
                    .prop_map(|(heads, timestamp)| HeadsAt { heads, timestamp }),
                0..3
            )
        )
            .prop_map(|(s, t, d, h)| Message::RemoteHeadsChanged {
                sender_id: s,
                target_id: t,
                document_id: d,
                new_heads: h
            }),
        "[a-z]{1,12}-future".prop_map(|t| Message::Unknown { type_name: t }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = m.encode();
        prop_assert_eq!(decode(&bytes, DEFAULT_MAX_FRAME), Ok(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, DEFAULT_MAX_FRAME);
    }

    #[test]
    fn mutated_valid_frames_never_panic(m in message(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = m.encode();
        for (i, b) in flips {
            if !bytes.is_empty() {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
        }
        let _ = decode(&bytes, DEFAULT_MAX_FRAME);
        bytes.truncate(bytes.len() / 2);
        let _ = decode(&bytes, DEFAULT_MAX_FRAME);
    }
}
