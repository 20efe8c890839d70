//! Chunk framing: a format byte and a truncated SHA-256 before each stored chunk, so damage on
//! disk is found when a document is read, not merged into it.

use sha2::{Digest, Sha256};

const CHUNK_FORMAT: u8 = 1;
const CHECKSUM_LEN: usize = 8;

pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + CHECKSUM_LEN + payload.len());
    out.push(CHUNK_FORMAT);
    out.extend_from_slice(&Sha256::digest(payload)[..CHECKSUM_LEN]);
    out.extend_from_slice(payload);
    out
}

pub(super) fn unframe(stored: &[u8]) -> Result<&[u8], &'static str> {
    match stored.split_first() {
        Some((&CHUNK_FORMAT, rest)) if rest.len() >= CHECKSUM_LEN => {
            let (sum, payload) = rest.split_at(CHECKSUM_LEN);
            if Sha256::digest(payload)[..CHECKSUM_LEN] == *sum { Ok(payload) } else { Err("chunk checksum mismatch") }
        }
        Some((&CHUNK_FORMAT, _)) | None => Err("chunk truncated"),
        Some(_) => Err("unknown chunk format"),
    }
}
