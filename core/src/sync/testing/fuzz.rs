//! The harnesses of the byte-level fuzz targets, shared by `fuzz/fuzz_targets/` and the replay
//! of their seeds and kept crashers in `core/tests/decoders.rs`: a replay runs exactly what the
//! fuzzer ran (the same frame splitting, the same storage answers).

use std::sync::Arc;

use super::{Driver, Storage};
use crate::id::{Identity, Role};
use crate::storage::MemoryKv;
use crate::store::{DocStore, ManualClock, StoreOptions};
use crate::sync::engine::{Engine, EngineConfig, Input, OpenPolicy, Side};
use crate::sync::wire::{DEFAULT_MAX_FRAME, Message, decode};
use crate::sync::{ConnId, Output};

/// `wire_decode`: the frame decoder returns, never panics, and what it accepts re-encodes to
/// bytes that decode to the same message.
pub fn wire_decode(data: &[u8]) {
    if let Ok(m) = decode(data, DEFAULT_MAX_FRAME) {
        let again = decode(&m.encode(), DEFAULT_MAX_FRAME).expect("a re-encoded message decodes");
        assert_eq!(again, m, "a message survives re-encoding");
    }
}

/// Splits `engine_frames` input into frames: each a little-endian `u16` length and that many
/// bytes; what is left when a length runs past the end is the last frame.
pub fn split_frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        if len > rest.len() {
            frames.push(rest);
            return frames;
        }
        frames.push(&rest[..len]);
        data = &rest[len..];
    }
    if !data.is_empty() {
        frames.push(data);
    }
    frames
}

/// Joins frames into `engine_frames` input (for writing seeds).
pub fn join_frames(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let len = u16::try_from(f.len()).expect("a seed frame fits a u16 length");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// `engine_frames`: a relay-side engine over a real store (in memory; storage tasks run at
/// once, evicting past two resident documents) takes the frames of `data` from one peer after
/// a valid handshake, then time passes. It must never panic, and whatever it does, it answers
/// only the peer that spoke. Returns how many documents the relay stored.
pub fn engine_frames(data: &[u8]) -> usize {
    let mut config = EngineConfig::new("relay");
    config.resident_cap = 2;
    let identity = Identity {
        tenant: "t".into(),
        user: "relay".into(),
        device: "relay".into(),
        role: Role::Admin,
        install: [0; 8],
    };
    let Ok(store) =
        DocStore::with_kv(Arc::new(MemoryKv::new()), identity, Arc::new(ManualClock::new(0)), StoreOptions::default())
    else {
        return 0;
    };
    let mut d = Driver::new(Engine::new(config, Box::new(OpenPolicy), "s".into()), store, Storage::Immediate);
    let conn = ConnId(1);
    let mut outputs = d.handle(Input::Connected { conn, side: Side::Receiver });
    let join = Message::Join { sender_id: "p".into(), supported_protocol_versions: vec!["1".into()], metadata: None };
    outputs.extend(d.handle(Input::Frame { conn, frame: join.encode() }));
    for frame in split_frames(data) {
        outputs.extend(d.handle(Input::Frame { conn, frame: frame.to_vec() }));
    }
    d.now += 60 * 60 * 1000;
    outputs.extend(d.handle(Input::Tick));
    for o in outputs {
        if let Output::Send { conn: to, .. } | Output::Close { conn: to, .. } = o {
            assert_eq!(to, conn, "the engine answers only the peer that spoke");
        }
    }
    d.store.all_documents().map_or(0, |docs| docs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_as_they_were_joined_and_a_short_tail_is_one_frame() {
        let frames = vec![b"abc".to_vec(), Vec::new(), vec![0xfe; 300]];
        let joined = join_frames(&frames);
        assert_eq!(split_frames(&joined), frames.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(split_frames(&[9, 0, 1, 2]), vec![&[1u8, 2][..]]);
        assert_eq!(split_frames(&[7]), vec![&[7u8][..]]);
        assert!(split_frames(&[]).is_empty());
    }
}
