//! Arbitrary frames into a relay-side engine after a valid handshake: it must never panic,
//! whatever a peer sends (bad sync messages, bad changes, unknown documents).
#![no_main]

use libfuzzer_sys::fuzz_target;
use liaison_core::sync::wire::Message;
use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, OpenPolicy, Output, Side, StorageResult};

fuzz_target!(|data: &[u8]| {
    let mut e = Engine::new(EngineConfig::new("relay"), Box::new(OpenPolicy), "s".into());
    let conn = ConnId(1);
    e.handle(0, Input::Connected { conn, side: Side::Receiver });
    let join = Message::Join { sender_id: "p".into(), supported_protocol_versions: vec!["1".into()], metadata: None };
    e.handle(1, Input::Frame { conn, frame: join.encode() });
    // Split the input into frames at 0xFF 0xFE markers so one run can send several.
    for (i, frame) in data.split(|b| *b == 0xfe).enumerate() {
        let outs = e.handle(2 + i as i64, Input::Frame { conn, frame: frame.to_vec() });
        for o in outs {
            if let Output::Storage { task, .. } = o {
                e.handle(3 + i as i64, Input::StorageDone { task, result: StorageResult::Loaded { data: None, sync_states: vec![] } });
            }
        }
    }
});
