//! Presence: who has a record open and what they are doing ("editing the plan"), carried as
//! automerge-repo ephemeral messages, which the relay forwards to the document's other peers.
//!
//! A presence message is a CBOR map with the key `liaison-presence` (never `liaison`: notices
//! are taken only from the relay, presence comes from colleagues): the author's user and device,
//! a short state, and how long it holds (`ttl_ms`) unless sent again; `ttl_ms` 0 says "gone".
//! Receivers decode it as hostile input: bounded lengths, a bounded lifetime, nothing else
//! inflated. The relay checks that the user and device named are the sender's own (the engine
//! first checks that a device sends under its own peer id), so a device cannot show a
//! colleague as present.

/// The key that marks presence among ephemeral messages.
pub const PRESENCE_KEY: &str = "liaison-presence";
/// Longest state, in characters ("editing objectives").
pub const MAX_STATE_CHARS: usize = 64;
/// Longest user or device name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest a presence holds without being sent again.
pub const MAX_TTL_MS: u32 = 120_000;

/// One device's presence on a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The author's user.
    pub user: String,
    /// The author's device.
    pub device: String,
    /// What they are doing, as the app names it (at most [`MAX_STATE_CHARS`] characters).
    pub state: String,
    /// How long it holds unless sent again; 0: gone now.
    pub ttl_ms: u32,
}

/// The message for `p`.
pub fn encode(p: &Presence) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    let _ = e
        .map(5)
        .and_then(|e| e.str(PRESENCE_KEY))
        .and_then(|e| e.u8(1))
        .and_then(|e| e.str("user"))
        .and_then(|e| e.str(&p.user))
        .and_then(|e| e.str("device"))
        .and_then(|e| e.str(&p.device))
        .and_then(|e| e.str("state"))
        .and_then(|e| e.str(&p.state))
        .and_then(|e| e.str("ttl_ms"))
        .and_then(|e| e.u32(p.ttl_ms));
    buf
}

/// Whether ephemeral data claims to be presence (whether or not it is well formed).
pub fn is_presence(data: &[u8]) -> bool {
    let mut d = minicbor::Decoder::new(data);
    matches!(d.map(), Ok(Some(_))) && d.str().is_ok_and(|k| k == PRESENCE_KEY)
}

/// The presence in `data`, if it is well formed and within bounds.
pub fn decode(data: &[u8]) -> Option<Presence> {
    let mut d = minicbor::Decoder::new(data);
    if d.map().ok()?? != 5 || d.str().ok()? != PRESENCE_KEY || d.u8().ok()? != 1 {
        return None;
    }
    let mut field =
        |name: &str| -> Option<String> { (d.str().ok()? == name).then(|| d.str().ok().map(str::to_owned))? };
    let user = field("user")?;
    let device = field("device")?;
    let state = field("state")?;
    if d.str().ok()? != "ttl_ms" {
        return None;
    }
    let ttl_ms = d.u32().ok()?;
    let bounded = |s: &str| !s.is_empty() && s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control);
    if !bounded(&user) || !bounded(&device) || state.chars().count() > MAX_STATE_CHARS || ttl_ms > MAX_TTL_MS {
        return None;
    }
    if state.chars().any(char::is_control) || d.position() != data.len() {
        return None;
    }
    Some(Presence { user, device, state, ttl_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Presence {
        Presence { user: "sato".into(), device: "sato-phone".into(), state: "editing 目標".into(), ttl_ms: 30_000 }
    }

    #[test]
    fn presence_round_trips_and_is_told_apart_from_other_ephemera() {
        let p = sample();
        let data = encode(&p);
        assert!(is_presence(&data));
        assert_eq!(decode(&data), Some(p));
        assert!(!is_presence(&crate::sync::notice::encode_erasure()), "a notice is not presence");
        assert!(!is_presence(b"anything"));
    }

    #[test]
    fn presence_out_of_bounds_or_malformed_is_refused() {
        let long_state = Presence { state: "x".repeat(MAX_STATE_CHARS + 1), ..sample() };
        let long_ttl = Presence { ttl_ms: MAX_TTL_MS + 1, ..sample() };
        let no_user = Presence { user: String::new(), ..sample() };
        let control = Presence { device: "a\nb".into(), ..sample() };
        for bad in [long_state, long_ttl, no_user, control] {
            assert_eq!(decode(&encode(&bad)), None, "{bad:?}");
        }
        let mut trailing = encode(&sample());
        trailing.push(0);
        assert_eq!(decode(&trailing), None, "trailing bytes");
        let data = encode(&sample());
        for cut in 0..data.len() {
            assert_eq!(decode(&data[..cut]), None, "cut at {cut}");
        }
    }
}
