//! liaison's notices: refusal and erasure, carried as automerge-repo ephemeral messages.

use automerge::ChangeHash;

/// The `data` of a refusal notice: an ephemeral message the liaison client understands and
/// other automerge-repo clients surface as an ordinary ephemeral message.
pub const REFUSAL_KIND: &str = "liaison/refused";

/// The `data` of an erasure notice: `{"liaison": "liaison/erased"}` on the erased document.
pub const ERASED_KIND: &str = "liaison/erased";

/// Encodes a refusal notice: `{"liaison": "liaison/refused", "changes": [hex], "code", "message"}`.
pub fn encode_refusal(hashes: &[ChangeHash], code: &str, message: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    let _ = e.map(4).and_then(|e| e.str("liaison")).and_then(|e| e.str(REFUSAL_KIND));
    let _ = e.str("changes").and_then(|e| e.array(hashes.len() as u64));
    for h in hashes {
        let _ = e.str(&h.to_string());
    }
    let _ = e.str("code").and_then(|e| e.str(code));
    let _ = e.str("message").and_then(|e| e.str(message));
    buf
}

/// Encodes an erasure notice.
pub fn encode_erasure() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = minicbor::Encoder::new(&mut buf).map(1).and_then(|e| e.str("liaison")).and_then(|e| e.str(ERASED_KIND));
    buf
}

/// Whether ephemeral data is a liaison notice of any kind (a CBOR map with a `liaison` key).
pub fn is_liaison_notice(data: &[u8]) -> bool {
    let mut d = minicbor::Decoder::new(data);
    let Ok(Some(n)) = d.map() else { return false };
    for _ in 0..n.min(16) {
        match d.str() {
            Ok("liaison") => return true,
            Ok(_) => {
                if d.skip().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Whether ephemeral data is an erasure notice.
pub fn is_erasure(data: &[u8]) -> bool {
    let mut d = minicbor::Decoder::new(data);
    let Ok(Some(n)) = d.map() else { return false };
    for _ in 0..n.min(16) {
        match d.str() {
            Ok("liaison") => return d.str().is_ok_and(|k| k == ERASED_KIND),
            Ok(_) => {
                if d.skip().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Decodes a refusal notice; `None` for any other ephemeral data.
pub fn decode_refusal(data: &[u8]) -> Option<(Vec<ChangeHash>, String, String)> {
    let mut d = minicbor::Decoder::new(data);
    let n = d.map().ok()??;
    let mut kind = None;
    let mut hashes = Vec::new();
    let mut code = String::new();
    let mut message = String::new();
    for _ in 0..n.min(16) {
        match d.str().ok()? {
            "liaison" => kind = Some(d.str().ok()?.to_owned()),
            "changes" => {
                let len = d.array().ok()??;
                for _ in 0..len.min(100_000) {
                    hashes.push(d.str().ok()?.parse::<ChangeHash>().ok()?);
                }
            }
            "code" => code = d.str().ok()?.to_owned(),
            "message" => message = d.str().ok()?.to_owned(),
            _ => d.skip().ok()?,
        }
    }
    (kind.as_deref() == Some(REFUSAL_KIND)).then_some((hashes, code, message))
}
