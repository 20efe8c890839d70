//! The text of one `NOTIFY liaison_hints`: who sent it and what changed, in a few bytes per
//! hint, as many hints per notification as fit.
//!
//! ```text
//! payload = "1" SP node *(SP entry)            ; "1": this format
//! node    = 32 hex digits                      ; the sender's NodeId
//! entry   = "s"                                ; Hint::Security
//!         / "d" 32hex ":" 1*16hex              ; Hint::Doc: id, version
//! ```
//!
//! Hex is lowercase. A payload is at most [`MAX_PAYLOAD`] bytes (PostgreSQL refuses 8,000 or
//! more); more hints are split over several payloads: a document entry is at most 51 bytes, so
//! one payload holds about 150.
//!
//! [`decode`] reads text anyone connected to the database may have sent: it checks every byte,
//! allocates in proportion to the (bounded) input, and refuses the whole payload on any fault.

use std::collections::BTreeMap;

use liaison_core::DocumentId;

use super::{Hint, HintError, NodeId};

/// The most a payload holds, below PostgreSQL's limit of 8,000 bytes with room to spare.
pub(crate) const MAX_PAYLOAD: usize = 7900;
/// The first word of every payload; a new format takes a new word.
const FORMAT: &str = "1";

/// Hints waiting to be sent, coalesced: a document's highest version, one security hint.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    docs: BTreeMap<DocumentId, u64>,
    security: bool,
}

impl Pending {
    pub(crate) fn of(hints: &[Hint]) -> Self {
        let mut pending = Self::default();
        for hint in hints {
            pending.add(*hint);
        }
        pending
    }

    pub(crate) fn add(&mut self, hint: Hint) {
        match hint {
            Hint::Doc { id, version } => {
                let held = self.docs.entry(id).or_insert(version);
                *held = (*held).max(version);
            }
            Hint::Security => self.security = true,
        }
    }

    pub(crate) fn merge(&mut self, other: Self) {
        for (id, version) in other.docs {
            self.add(Hint::Doc { id, version });
        }
        self.security |= other.security;
    }
}

/// A decoded payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) from: NodeId,
    pub(crate) hints: Vec<Hint>,
}

/// `pending` as payloads of at most [`MAX_PAYLOAD`] bytes each; none if nothing is pending.
pub(crate) fn encode(node: NodeId, pending: &Pending) -> Vec<String> {
    let header = format!("{FORMAT} {node}");
    let security = pending.security.then(|| "s".to_owned());
    let docs = pending.docs.iter().map(|(id, version)| format!("d{}:{version:x}", hex(id.as_bytes())));
    let mut payloads = Vec::new();
    let mut current = header.clone();
    for entry in security.into_iter().chain(docs) {
        if current.len() + 1 + entry.len() > MAX_PAYLOAD {
            payloads.push(std::mem::replace(&mut current, header.clone()));
        }
        current.push(' ');
        current.push_str(&entry);
    }
    if current.len() > header.len() {
        payloads.push(current);
    }
    payloads
}

/// Reads one payload; any fault refuses all of it, with a reason that does not quote it.
pub(crate) fn decode(payload: &str) -> Result<Decoded, HintError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(HintError::Payload("longer than any relay sends"));
    }
    let mut words = payload.split(' ');
    if words.next() != Some(FORMAT) {
        return Err(HintError::Payload("an unknown format"));
    }
    let from = words.next().and_then(unhex16).map(NodeId).ok_or(HintError::Payload("a bad node id"))?;
    let mut hints = Vec::new();
    let mut security = false;
    for word in words {
        if word == "s" {
            // Once is enough, however often a payload repeats it.
            if !std::mem::replace(&mut security, true) {
                hints.push(Hint::Security);
            }
            continue;
        }
        let (id, version) =
            word.strip_prefix('d').and_then(|doc| doc.split_once(':')).ok_or(HintError::Payload("an unknown entry"))?;
        let id = unhex16(id).map(DocumentId::from_bytes).ok_or(HintError::Payload("a bad document id"))?;
        let version = unhex_version(version).ok_or(HintError::Payload("a bad version"))?;
        hints.push(Hint::Doc { id, version });
    }
    Ok(Decoded { from, hints })
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// A lowercase hex digit's value.
fn digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Exactly 32 lowercase hex digits as 16 bytes.
fn unhex16(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(bytes)
}

/// 1 to 16 lowercase hex digits (no sign, no prefix) as a u64.
fn unhex_version(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    text.bytes().try_fold(0u64, |value, byte| Some((value << 4) | u64::from(digit(byte)?)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODE: NodeId = NodeId([0xab; 16]);

    fn doc(n: u32, version: u64) -> Hint {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        Hint::Doc { id: DocumentId::from_bytes(id), version }
    }

    fn decode_all(payloads: &[String]) -> Pending {
        let mut all = Pending::default();
        for payload in payloads {
            let decoded = decode(payload).unwrap();
            assert_eq!(decoded.from, NODE);
            all.merge(Pending::of(&decoded.hints));
        }
        all
    }

    #[test]
    fn the_format_is_fixed() {
        let pending = Pending::of(&[doc(1, 0x2a), Hint::Security, doc(1, 3), doc(2, u64::MAX)]);
        let payloads = encode(NODE, &pending);
        let id = |n: u8| format!("{n:08x}{}", "0".repeat(24));
        let expected = format!("1 {} s d{}:2a d{}:ffffffffffffffff", "ab".repeat(16), id(1), id(2));
        assert_eq!(payloads, vec![expected]);
        assert!(encode(NODE, &Pending::default()).is_empty(), "nothing pending, nothing sent");
    }

    #[test]
    fn many_hints_split_into_payloads_under_the_limit_and_come_back_whole() {
        let hints: Vec<Hint> = (0..2000).map(|n| doc(n, u64::MAX - u64::from(n))).chain([Hint::Security]).collect();
        let pending = Pending::of(&hints);
        let payloads = encode(NODE, &pending);
        assert!(payloads.len() >= 13, "2,000 entries of 51 bytes: {} payloads", payloads.len());
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
        }
        assert!(payloads[0].len() > MAX_PAYLOAD - 51, "payloads are filled before a new one starts");
        assert_eq!(decode_all(&payloads), pending);
    }

    #[test]
    fn hostile_payloads_are_refused_whole() {
        let node = "ab".repeat(16);
        let id = "0f".repeat(16);
        let refused = [
            String::new(),
            "garbage".to_owned(),
            format!("2 {node} s"),
            format!("1 {node}x s"),
            format!("1 {} s", "AB".repeat(16)),
            format!("1 {node} s "),
            format!("1 {node}  s"),
            format!("1 {node} x"),
            format!("1 {node} d{id}"),
            format!("1 {node} d{id}:"),
            format!("1 {node} d{id}:+1"),
            format!("1 {node} d{id}:-1"),
            format!("1 {node} d{id}:0x1"),
            format!("1 {node} d{id}:1ffffffffffffffff"),
            format!("1 {node} d{id}:1:2"),
            format!("1 {node} d{}:1", "zz".repeat(16)),
            format!("1 {node} d{}:1", "0f".repeat(17)),
            format!("1 {node} d{}é:1", "0f".repeat(15)),
            format!("1 {node}{}", " s".repeat(MAX_PAYLOAD)),
            "é".repeat(MAX_PAYLOAD),
        ];
        for payload in &refused {
            let e = decode(payload).unwrap_err();
            assert!(matches!(e, HintError::Payload(_)), "{e}");
            if let Some(start) = payload.get(..20) {
                assert!(!e.to_string().contains(start), "quotes the payload: {e}");
            }
        }
        let valid = decode(&format!("1 {node} d{id}:0 d{id}:ffffffffffffffff")).unwrap();
        assert_eq!(valid.hints.len(), 2);
    }

    #[test]
    fn a_security_hint_repeated_thousands_of_times_is_one() {
        let payload = format!("1 {}{}", "ab".repeat(16), " s".repeat((MAX_PAYLOAD - 40) / 2));
        assert_eq!(decode(&payload).unwrap().hints, vec![Hint::Security]);
        assert!(decode(&format!("1 {}", "ab".repeat(16))).unwrap().hints.is_empty());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&text);
            let _ = decode(&String::from_utf8_lossy(&bytes));
            let _ = decode(&format!("1 {} {text}", "ab".repeat(16)));
        }

        #[test]
        fn whatever_is_encoded_decodes_to_the_same(
            docs in proptest::collection::vec((any::<[u8; 16]>(), any::<u64>()), 0..400),
            security in any::<bool>(),
        ) {
            let mut hints: Vec<Hint> =
                docs.iter().map(|(id, version)| Hint::Doc { id: DocumentId::from_bytes(*id), version: *version }).collect();
            if security {
                hints.push(Hint::Security);
            }
            let pending = Pending::of(&hints);
            let payloads = encode(NODE, &pending);
            prop_assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
            prop_assert_eq!(decode_all(&payloads), pending);
        }
    }
}
