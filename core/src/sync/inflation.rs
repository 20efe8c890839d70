//! How large automerge chunks become once loaded, measured without loading them: the bytes their
//! deflated parts inflate to, and the items their run-length-encoded columns decode to.
//!
//! automerge 0.12 inflates compressed change chunks and deflated document (and bundle) columns with
//! an unbounded `read_to_end`: one 255 KiB sync frame of deflated zeros took the relay from 41 to
//! 829 MB RSS, and an 8 MiB frame is an out-of-memory kill. It also decodes every column item by
//! item (see `expansion.rs`): a 71-byte document chunk holding one run of 50 million took 200 MB,
//! a 68-byte change chunk of 1.68 million ops 643 MB. So untrusted bytes are walked here first, streaming every deflate stream through a fixed
//! buffer and reading only run headers, and stopping as soon as either total passes its bound; only
//! bytes that pass reach `load_incremental`.

use std::io::Read;

use flate2::bufread::DeflateDecoder;

use super::expansion::{self, Inflating, sleb, uleb};

/// Why a byte string was refused. Messages name no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflationError {
    /// The bytes would inflate past [`Bounds::max_bytes`].
    #[error("chunks inflate past the limit")]
    TooLarge,
    /// The columns would decode to more than [`Bounds::max_items`] items.
    #[error("chunk columns decode to more items than the limit")]
    TooManyItems,
    /// A chunk does not start with automerge's magic bytes.
    #[error("chunk does not start with the automerge magic bytes")]
    BadMagic,
    /// The bytes end inside a chunk, or a length in a header points past the end.
    #[error("chunk is truncated or a length points past its end")]
    Truncated,
    /// A chunk header names a chunk type this check does not know (the type byte).
    #[error("unknown chunk type {0}")]
    UnknownChunkType(u8),
    /// A LEB128 length or count in a header or column is malformed.
    #[error("malformed LEB128 number")]
    BadNumber,
    /// A deflated part does not inflate.
    #[error("corrupt deflate stream")]
    Deflate,
}

/// The most that one check lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Bytes once every deflated part is inflated, chunk headers included.
    pub max_bytes: u64,
    /// Items (values, nulls, booleans) that all columns decode to.
    pub max_items: u64,
}

impl Bounds {
    /// `max_bytes`, and a quarter as many items (8 Mi at the relay's 32 MiB). An item costs
    /// automerge up to ~80 bytes and ~0.4 µs to load, worst in change chunks (one 68-byte change of
    /// 1.68 million ops, 8 Mi items, took 643 MB and 3.6 s; 8 million ops took 3 GB and 24 s),
    /// while honest documents stay well below: a 200 KB note is 2.2 million items, a document of
    /// 100 000 one-value changes 1.6 million.
    pub const fn for_max_bytes(max_bytes: u64) -> Self {
        Bounds { max_bytes, max_items: max_bytes / 4 }
    }
}

/// What a check measured; each at most its [`Bounds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Bytes once every deflated part is inflated, chunk headers included.
    pub bytes: u64,
    /// Items that all columns decode to.
    pub items: u64,
}

/// What `bytes` (one or more chunks back to back, as `load_incremental` takes them) hold once
/// loaded; [`InflationError::TooLarge`] or [`InflationError::TooManyItems`] as soon as a total
/// passes its bound. Never inflates into memory (a fixed buffer of [`BUFFER_BYTES`]), except a
/// compressed change chunk, inflated into a buffer of exactly its size once streaming it has shown
/// that it fits `max_bytes` (automerge then makes the same copy). While parsing, automerge briefly
/// holds about twice `max_bytes` (the input and the inflated copy).
pub fn measure(bytes: &[u8], bounds: Bounds) -> Result<Measure, InflationError> {
    let mut budget = Budget::new(bounds);
    budget.chunks(bytes)?;
    Ok(budget.measure())
}

/// [`measure`] summed over every byte string in a sync message's `changes`, one bound for all.
pub fn check_sync_message(msg: &automerge::sync::Message, bounds: Bounds) -> Result<Measure, InflationError> {
    let mut budget = Budget::new(bounds);
    for bytes in msg.changes.iter() {
        budget.chunks(bytes)?;
    }
    Ok(budget.measure())
}

/// Stack buffer the deflate streams are read through (the decoder's own state is fixed too).
pub const BUFFER_BYTES: usize = 16 * 1024;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Bit 3 of a column specification: the column's data is deflated (`columns/column_specification.rs`).
const DEFLATE_BIT: u64 = 0b1000;
const HASH_BYTES: u64 = 32;

/// A running total that fails with `over` once it passes `limit`.
#[derive(Debug)]
pub(crate) struct Counter {
    total: u64,
    limit: u64,
    over: InflationError,
}

impl Counter {
    pub(crate) fn new(limit: u64, over: InflationError) -> Self {
        Counter { total: 0, limit, over }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn add(&mut self, amount: u64) -> Result<(), InflationError> {
        self.total = self.total.saturating_add(amount);
        if self.total > self.limit { Err(self.over) } else { Ok(()) }
    }

    fn left(&self) -> u64 {
        self.limit.saturating_sub(self.total)
    }
}

struct Budget {
    bytes: Counter,
    items: Counter,
}

impl Budget {
    fn new(bounds: Bounds) -> Self {
        Budget {
            bytes: Counter::new(bounds.max_bytes, InflationError::TooLarge),
            items: Counter::new(bounds.max_items, InflationError::TooManyItems),
        }
    }

    fn measure(&self) -> Measure {
        Measure { bytes: self.bytes.total(), items: self.items.total() }
    }

    /// Mirrors `storage/chunk.rs` `Chunk::parse`, applied until the input is used up.
    fn chunks(&mut self, mut input: &[u8]) -> Result<(), InflationError> {
        while !input.is_empty() {
            let chunk_start = input;
            if take(&mut input, 4)? != MAGIC {
                return Err(InflationError::BadMagic);
            }
            take(&mut input, 4)?; // checksum: automerge's to check, not ours
            let chunk_type = take(&mut input, 1)?[0];
            let data_len = uleb(&mut input)?;
            let header_len = (chunk_start.len() - input.len()) as u64;
            let data = take(&mut input, data_len)?;
            self.bytes.add(header_len)?;
            match chunk_type {
                0 => self.document(data)?,
                1 => {
                    self.bytes.add(data_len)?;
                    self.change(data)?;
                }
                2 => {
                    let change = self.inflate(data)?;
                    self.change(&change)?;
                }
                3 => self.bundle(data)?,
                other => return Err(InflationError::UnknownChunkType(other)),
            }
        }
        Ok(())
    }

    /// `storage/document.rs`: actors, heads, column metadata, column data, head indices.
    fn document(&mut self, mut data: &[u8]) -> Result<(), InflationError> {
        let data_len = data.len() as u64;
        skip_actors(&mut data)?;
        skip_hashes(&mut data)?;
        let (change_meta, change_len) = column_metadata(&mut data)?;
        let (op_meta, op_len) = column_metadata(&mut data)?;
        let (change_data, op_data) = (take(&mut data, change_len)?, take(&mut data, op_len)?);
        self.bytes.add(data_len - change_len - op_len)?; // all but the column data, which `take` found
        self.columns(change_meta, change_data)?;
        self.columns(op_meta, op_data)
    }

    /// `storage/bundle/storage.rs`: deps, actors, columns; automerge ignores (we count) the rest.
    fn bundle(&mut self, mut data: &[u8]) -> Result<(), InflationError> {
        let data_len = data.len() as u64;
        skip_hashes(&mut data)?;
        skip_actors(&mut data)?;
        let (change_meta, change_len) = column_metadata(&mut data)?;
        let change_data = take(&mut data, change_len)?;
        let (op_meta, op_len) = column_metadata(&mut data)?;
        let op_data = take(&mut data, op_len)?;
        self.bytes.add(data_len - change_len - op_len)?;
        self.columns(change_meta, change_data)?;
        self.columns(op_meta, op_data)
    }

    /// The body of a change chunk (`storage/change.rs` `Change::parse_following_header`), whose
    /// bytes are already counted. Ops are not bounded by the chunk's length: `Change::verify_ops`
    /// reads every op of its run-length-encoded columns, so one run of 2^62 is a loop without end.
    fn change(&mut self, mut data: &[u8]) -> Result<(), InflationError> {
        skip_hashes(&mut data)?; // dependencies
        let actor_len = uleb(&mut data)?;
        take(&mut data, actor_len)?;
        uleb(&mut data)?; // sequence number
        uleb(&mut data)?; // start op
        sleb(&mut data)?; // timestamp
        let message_len = uleb(&mut data)?;
        take(&mut data, message_len)?;
        skip_actors(&mut data)?; // other actors
        let (op_meta, op_len) = column_metadata(&mut data)?;
        let mut op_data = take(&mut data, op_len)?; // then extra bytes, kept but never decoded
        let mut meta = op_meta;
        for _ in 0..uleb(&mut meta)? {
            let spec = uleb(&mut meta)?;
            let mut column = take(&mut op_data, uleb(&mut meta)?)?;
            // automerge refuses a change with deflated columns without reading them
            // (`CompressedChangeCols`), so they decode to nothing.
            if spec & DEFLATE_BIT == 0 {
                expansion::count_items(spec, &mut column, &mut self.items)?;
            }
        }
        Ok(())
    }

    /// Counts each column in `data` as laid out by `meta` (already validated by `column_metadata`).
    fn columns(&mut self, mut meta: &[u8], mut data: &[u8]) -> Result<(), InflationError> {
        for _ in 0..uleb(&mut meta)? {
            let spec = uleb(&mut meta)?;
            let len = uleb(&mut meta)?;
            let mut column = take(&mut data, len)?;
            if spec & DEFLATE_BIT == 0 {
                self.bytes.add(len)?;
                expansion::count_items(spec, &mut column, &mut self.items)?;
            } else {
                let mut inflating = Inflating::new(column, self.bytes.left());
                expansion::count_items(spec, &mut inflating, &mut self.items)?;
                self.bytes.add(inflating.finish()?)?;
            }
        }
        Ok(())
    }

    /// A compressed change chunk's body inflated, once streaming it through a fixed buffer has
    /// shown that it fits: at most `max_bytes`, and exactly as much as automerge will allocate.
    fn inflate(&mut self, deflated: &[u8]) -> Result<Vec<u8>, InflationError> {
        let len = Inflating::new(deflated, self.bytes.left()).finish()?;
        self.bytes.add(len)?;
        let mut inflated = Vec::with_capacity(usize::try_from(len).map_err(|_| InflationError::TooLarge)?);
        DeflateDecoder::new(deflated).take(len).read_to_end(&mut inflated).map_err(|_| InflationError::Deflate)?;
        Ok(inflated)
    }
}

/// Column metadata (`columns/raw_column.rs` `RawColumns::parse`): a count, then a u32 specification
/// and a length per column. Returns the metadata's bytes and the total data length. Each column
/// takes at least two bytes, so a huge count fails on truncation after a few iterations.
fn column_metadata<'a>(input: &mut &'a [u8]) -> Result<(&'a [u8], u64), InflationError> {
    let start = *input;
    let count = uleb(input)?;
    let mut total: u64 = 0;
    for _ in 0..count {
        if uleb(input)? > u64::from(u32::MAX) {
            return Err(InflationError::BadNumber);
        }
        total = total.checked_add(uleb(input)?).ok_or(InflationError::Truncated)?;
    }
    Ok((&start[..start.len() - input.len()], total))
}

/// A count, then that many 32-byte change hashes.
fn skip_hashes(input: &mut &[u8]) -> Result<(), InflationError> {
    let count = uleb(input)?;
    take(input, count.checked_mul(HASH_BYTES).ok_or(InflationError::Truncated)?).map(drop)
}

/// A count, then that many length-prefixed actor ids.
fn skip_actors(input: &mut &[u8]) -> Result<(), InflationError> {
    for _ in 0..uleb(input)? {
        let len = uleb(input)?;
        take(input, len)?;
    }
    Ok(())
}

pub(crate) fn take<'a>(input: &mut &'a [u8], len: u64) -> Result<&'a [u8], InflationError> {
    let len = usize::try_from(len).map_err(|_| InflationError::Truncated)?;
    let (taken, rest) = input.split_at_checked(len).ok_or(InflationError::Truncated)?;
    *input = rest;
    Ok(taken)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use automerge::{Automerge, ObjType, ROOT, sync, sync::SyncDoc, transaction::Transactable};
    use flate2::{Compression, write::DeflateEncoder};
    use proptest::prelude::*;

    use super::InflationError::{BadMagic, BadNumber, Deflate, TooLarge, Truncated, UnknownChunkType};
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const TYPE_BYTE: usize = 8;

    /// The inflated bytes alone, items unbounded.
    fn inflated_size(bytes: &[u8], limit: u64) -> Result<u64, InflationError> {
        measure(bytes, Bounds { max_bytes: limit, max_items: u64::MAX }).map(|measured| measured.bytes)
    }

    /// `len` bytes of note-like text, varied enough to be realistic, repetitive enough that
    /// automerge deflates the columns holding it.
    fn text_doc(len: usize) -> Automerge {
        const WORDS: [&str; 8] =
            ["triage", "pulse 88", "bp 120/80", "splint", "left", "morphine 5mg", "GCS 14", "clear"];
        let mut state: u32 = 12_345;
        let mut text = String::with_capacity(len + 16);
        while text.len() < len {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            text.push_str(WORDS[(state >> 16) as usize % WORDS.len()]);
            text.push(if state.is_multiple_of(7) { '\n' } else { ' ' });
        }
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let notes = tx.put_object(ROOT, "notes", ObjType::Text).unwrap();
        tx.splice_text(&notes, 0, 0, &text).unwrap();
        tx.commit();
        doc
    }

    /// The size, after checking the bound is exact: passes at the size, `TooLarge` one below.
    fn exact_size(bytes: &[u8]) -> u64 {
        let size = inflated_size(bytes, u64::MAX).unwrap();
        assert_eq!(inflated_size(bytes, size), Ok(size));
        assert_eq!(inflated_size(bytes, size - 1), Err(TooLarge));
        size
    }

    fn push_uleb(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// A chunk with a correct header apart from the checksum (which automerge checks after parsing).
    fn chunk(chunk_type: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0xde, 0xad, 0xbe, 0xef, chunk_type]);
        push_uleb(&mut out, data.len() as u64);
        out.extend(data);
        out
    }

    /// A document chunk: no actors, no heads, no change columns, one op column.
    fn document_with_one_column(spec: u64, column: &[u8]) -> Vec<u8> {
        let mut data = vec![0, 0, 0, 1];
        push_uleb(&mut data, spec);
        push_uleb(&mut data, column.len() as u64);
        data.extend(column);
        chunk(0, &data)
    }

    fn deflated_zeros(len: u64) -> Vec<u8> {
        let zeros = [0u8; 64 * 1024];
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        for _ in 0..len / zeros.len() as u64 {
            encoder.write_all(&zeros).unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn documents_and_bundles_count_as_their_inflated_columns() {
        let doc = text_doc(200_000);
        let saved = doc.save();
        assert_eq!(saved[TYPE_BYTE], 0);
        let size = exact_size(&saved);
        assert!(size > 2 * saved.len() as u64, "columns are deflated: {size} from {}", saved.len());
        let uncompressed = doc.save_nocompress();
        assert_eq!(exact_size(&uncompressed), uncompressed.len() as u64);
        // Only the column lengths in the metadata and the chunk length differ in encoding.
        assert!(size.abs_diff(uncompressed.len() as u64) < 32, "{size} vs {}", uncompressed.len());
        let bundle = doc.bundle(doc.get_changes(&[]).iter().map(|change| change.hash())).unwrap();
        assert_eq!(bundle.bytes()[TYPE_BYTE], 3);
        assert!(exact_size(bundle.bytes()) > 2 * bundle.bytes().len() as u64);
    }

    #[test]
    fn changes_count_as_their_uncompressed_bytes_back_to_back() {
        let mut doc = text_doc(200_000);
        let mut change = doc.get_changes(&[]).pop().unwrap();
        let raw = change.raw_bytes().to_vec();
        assert_eq!(raw[TYPE_BYTE], 1);
        assert_eq!(exact_size(&raw), raw.len() as u64);
        let compressed = change.bytes().into_owned();
        assert_eq!(compressed[TYPE_BYTE], 2, "automerge compresses a change this large");
        assert!(exact_size(&compressed).abs_diff(raw.len() as u64) < 4);
        Automerge::new().load_incremental(&compressed).unwrap();

        let heads = doc.get_heads();
        for round in 0..3_i64 {
            let mut tx = doc.transaction();
            tx.put(ROOT, "round", round).unwrap();
            tx.commit();
        }
        let after = doc.save_after(&heads);
        assert_eq!(exact_size(&after), after.len() as u64);
        let all = [compressed.as_slice(), &after, &raw].concat();
        assert_eq!(exact_size(&all), exact_size(&compressed) + after.len() as u64 + raw.len() as u64);
    }

    #[test]
    fn a_real_sync_message_passes_and_is_bounded() {
        let msg = first_message_with_changes(&mut text_doc(200_000));
        let bytes_only = |max_bytes| Bounds { max_bytes, max_items: u64::MAX };
        let size = check_sync_message(&msg, bytes_only(u64::MAX)).unwrap().bytes;
        assert!(size > 200_000);
        assert_eq!(check_sync_message(&msg, bytes_only(size)).map(|measured| measured.bytes), Ok(size));
        assert_eq!(check_sync_message(&msg, bytes_only(size - 1)), Err(TooLarge));
    }

    #[test]
    fn bombs_are_refused_at_the_limit() {
        let deflated = deflated_zeros(64 * MIB);
        let change_bomb = chunk(2, &deflated);
        assert!(change_bomb.len() < 256 * 1024, "{} bytes on the wire", change_bomb.len());
        assert_eq!(inflated_size(&change_bomb, 16 * MIB), Err(TooLarge));
        let header_len = (change_bomb.len() - deflated.len()) as u64;
        assert_eq!(inflated_size(&change_bomb, u64::MAX), Ok(64 * MIB + header_len));

        let value_column_deflated = (1 << 4) | DEFLATE_BIT | 6;
        let document_bomb = document_with_one_column(value_column_deflated, &deflated);
        assert_eq!(inflated_size(&document_bomb, 16 * MIB), Err(TooLarge));
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let change = text_doc(10).get_changes(&[]).pop().unwrap().raw_bytes().to_vec();
        let max = u64::MAX;
        assert_eq!(inflated_size(&[], 0), Ok(0));
        assert_eq!(inflated_size(&change[..6], max), Err(Truncated));
        assert_eq!(inflated_size(&change[..change.len() - 1], max), Err(Truncated), "length past the end");
        assert_eq!(inflated_size(&[change.as_slice(), &MAGIC[..2]].concat(), max), Err(Truncated));
        let mut bad_magic = change.clone();
        bad_magic[0] ^= 1;
        assert_eq!(inflated_size(&bad_magic, max), Err(BadMagic));
        let mut unknown = change.clone();
        unknown[TYPE_BYTE] = 7;
        assert_eq!(inflated_size(&unknown, max), Err(UnknownChunkType(7)));
        let mut overlong = [&MAGIC[..], &[0, 0, 0, 0, 1]].concat();
        overlong.extend([0xff; 10]);
        assert_eq!(inflated_size(&overlong, max), Err(BadNumber));
        assert_eq!(inflated_size(&chunk(2, &[0xff; 16]), max), Err(Deflate));
        let column_past_end = chunk(0, &[0, 0, 0, 1, 0x16, 100, 1, 2, 3]);
        assert_eq!(inflated_size(&column_past_end, max), Err(Truncated));
        let huge_heads = chunk(0, &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(inflated_size(&huge_heads, max), Err(Truncated));
        let wide_spec = chunk(0, &[0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0]);
        assert_eq!(inflated_size(&wide_spec, max), Err(BadNumber));
    }

    proptest! {
        /// Raw bytes, and the same bytes as the body of a chunk of every type (and one unknown).
        #[test]
        fn arbitrary_bytes_never_panic(kind in 0u8..5, bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let small = Bounds { max_bytes: MIB, max_items: 1024 };
            let _ = measure(&bytes, small);
            let _ = measure(&chunk(kind, &bytes), small);
        }
    }

    /// Syncs `sender` with an empty peer until its first message that carries changes, as
    /// the receiver would get it off the wire.
    pub(crate) fn first_message_with_changes(sender: &mut Automerge) -> sync::Message {
        let mut receiver = Automerge::new();
        let (mut sender_state, mut receiver_state) = (sync::State::new(), sync::State::new());
        let mut msg = sender.generate_sync_message(&mut sender_state).unwrap();
        while msg.changes.is_empty() {
            receiver.receive_sync_message(&mut receiver_state, msg).unwrap();
            let reply = receiver.generate_sync_message(&mut receiver_state).unwrap();
            sender.receive_sync_message(&mut sender_state, reply).unwrap();
            msg = sender.generate_sync_message(&mut sender_state).unwrap();
        }
        sync::Message::decode(&msg.encode()).unwrap()
    }
}
