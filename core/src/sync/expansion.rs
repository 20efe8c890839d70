//! How many items automerge's columns decode to, counted from their run headers without decoding
//! a single item into memory. The chunk walk is in [`super::inflation`]; this is the per-column part.
//!
//! automerge 0.12 decodes run-length-encoded columns item by item while loading: a document
//! chunk's change columns are collected into `Vec`s (`change_graph.rs` `ChangeGraphCols::load`),
//! and every op of a document, bundle or change is visited once (`OpSet::load` and the change
//! collector; `Change::verify_ops` for a change chunk, which so cannot be bounded by its length).
//! A 71-byte document chunk whose change actor column is one run of 50 million took peak RSS from
//! 5 to 203 MB in 0.44 s; a run of 2^62 is an out-of-memory kill, or a loop that never ends.
//!
//! The formats (`columnar/encoding/{rle,boolean,delta,raw}.rs`, the same in hexane 1.0's decoders),
//! by the low three bits of a column specification:
//! - RLE (group 0, actor 1, integer 2, delta 3, string 5, value metadata 6): a signed LEB count
//!   `n`; `n > 0` is a run of `n` copies of the one value after it, `n < 0` is `-n` literal values,
//!   `n == 0` is a run of as many nulls as the unsigned LEB after it says. Values are unsigned LEB
//!   numbers, signed LEB deltas (delta), or a length-prefixed UTF-8 string (string).
//! - Boolean (4): unsigned LEB run lengths, alternately false and true.
//! - Raw value (7): bytes, sliced by the lengths in the value metadata; no items of its own.

use std::io::Read;

use flate2::bufread::DeflateDecoder;

use super::inflation::{BUFFER_BYTES, Counter, InflationError, take};

/// Adds to `items` how many items a column of specification `spec` decodes to, reading its bytes
/// (already inflated) from `source` to their end; [`InflationError::TooManyItems`] as soon as the
/// total passes the limit, before the items of the run that passes it are read. Never allocates.
pub(crate) fn count_items(spec: u64, source: &mut impl Source, items: &mut Counter) -> Result<(), InflationError> {
    match spec & 0b111 {
        0 | 1 | 2 | 6 => rle(source, Value::Unsigned, items),
        3 => rle(source, Value::Signed, items),
        5 => rle(source, Value::String, items),
        4 => boolean(source, items),
        _ => Ok(()), // raw values: counted as bytes; the value metadata holds their items
    }
}

/// Where a column's bytes come from: a slice, or a deflate stream inflated through a fixed buffer.
pub(crate) trait Source {
    /// The next byte; `None` at the end.
    fn next_byte(&mut self) -> Result<Option<u8>, InflationError>;
    /// Skips `len` bytes; [`InflationError::Truncated`] if fewer are left.
    fn skip(&mut self, len: u64) -> Result<(), InflationError>;
}

impl Source for &[u8] {
    fn next_byte(&mut self) -> Result<Option<u8>, InflationError> {
        Ok(self.split_first().map(|(&byte, rest)| {
            *self = rest;
            byte
        }))
    }

    fn skip(&mut self, len: u64) -> Result<(), InflationError> {
        take(self, len).map(drop)
    }
}

/// A deflate stream read through a [`BUFFER_BYTES`] buffer, counting what it inflates to;
/// [`InflationError::TooLarge`] as soon as that passes `limit`. Decodes as automerge's
/// `DeflateDecoder::read_to_end` does (the same decoder, so the same end and trailing bytes).
pub(crate) struct Inflating<'a> {
    decoder: DeflateDecoder<&'a [u8]>,
    buffer: [u8; BUFFER_BYTES],
    start: usize,
    end: usize,
    inflated: u64,
    limit: u64,
}

impl<'a> Inflating<'a> {
    pub(crate) fn new(deflated: &'a [u8], limit: u64) -> Self {
        Inflating {
            decoder: DeflateDecoder::new(deflated),
            buffer: [0; BUFFER_BYTES],
            start: 0,
            end: 0,
            inflated: 0,
            limit,
        }
    }

    /// Reads what is left and returns how many bytes the whole stream inflated to.
    pub(crate) fn finish(mut self) -> Result<u64, InflationError> {
        while self.refill()? {}
        Ok(self.inflated)
    }

    /// Replaces the buffer's contents with the next inflated bytes; `false` at the end of the stream.
    fn refill(&mut self) -> Result<bool, InflationError> {
        let read = match self.decoder.read(&mut self.buffer) {
            Ok(read) => read,
            Err(_) => return Err(InflationError::Deflate), // a slice never reports `Interrupted`
        };
        self.inflated = self.inflated.saturating_add(read as u64);
        if self.inflated > self.limit {
            return Err(InflationError::TooLarge);
        }
        (self.start, self.end) = (0, read);
        Ok(read > 0)
    }
}

impl Source for Inflating<'_> {
    fn next_byte(&mut self) -> Result<Option<u8>, InflationError> {
        if self.start == self.end && !self.refill()? {
            return Ok(None);
        }
        let byte = self.buffer[self.start];
        self.start += 1;
        Ok(Some(byte))
    }

    fn skip(&mut self, mut len: u64) -> Result<(), InflationError> {
        loop {
            let buffered = (self.end - self.start) as u64;
            if len <= buffered {
                self.start += len as usize; // at most the buffer's length
                return Ok(());
            }
            len -= buffered;
            if !self.refill()? {
                return Err(InflationError::Truncated);
            }
        }
    }
}

/// How a run-length-encoded column's values are written.
#[derive(Debug, Clone, Copy)]
enum Value {
    Unsigned,
    Signed,
    String,
}

fn rle(source: &mut impl Source, value: Value, items: &mut Counter) -> Result<(), InflationError> {
    while let Some(first) = source.next_byte()? {
        let count = sleb_from(first, source)?;
        if count > 0 {
            items.add(count.unsigned_abs())?;
            skip_value(source, value)?;
        } else if count < 0 {
            let literals = count.unsigned_abs();
            items.add(literals)?;
            // Bounded by the limit just checked, and each value takes at least one byte.
            for _ in 0..literals {
                skip_value(source, value)?;
            }
        } else {
            items.add(uleb(source)?)?;
        }
    }
    Ok(())
}

fn skip_value(source: &mut impl Source, value: Value) -> Result<(), InflationError> {
    match value {
        Value::Unsigned => uleb(source).map(drop),
        Value::Signed => sleb(source).map(drop),
        Value::String => {
            let len = uleb(source)?;
            source.skip(len)
        }
    }
}

fn boolean(source: &mut impl Source, items: &mut Counter) -> Result<(), InflationError> {
    while let Some(first) = source.next_byte()? {
        items.add(uleb_from(first, source)?)?;
    }
    Ok(())
}

/// An unsigned LEB128 number of at most 64 bits (ten bytes).
pub(crate) fn uleb(source: &mut impl Source) -> Result<u64, InflationError> {
    let first = source.next_byte()?.ok_or(InflationError::Truncated)?;
    uleb_from(first, source)
}

/// A signed LEB128 number of at most 64 bits (ten bytes).
pub(crate) fn sleb(source: &mut impl Source) -> Result<i64, InflationError> {
    let first = source.next_byte()?.ok_or(InflationError::Truncated)?;
    sleb_from(first, source)
}

fn uleb_from(first: u8, source: &mut impl Source) -> Result<u64, InflationError> {
    let (mut value, mut shift, mut byte) = (0u64, 0u32, first);
    loop {
        let low = u64::from(byte & 0x7f);
        if shift == 63 && byte > 1 {
            return Err(InflationError::BadNumber); // a 65th bit, or an eleventh byte
        }
        value |= low << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        byte = source.next_byte()?.ok_or(InflationError::Truncated)?;
    }
}

fn sleb_from(first: u8, source: &mut impl Source) -> Result<i64, InflationError> {
    let (mut value, mut shift, mut byte) = (0i64, 0u32, first);
    loop {
        if shift == 63 && byte != 0 && byte != 0x7f {
            return Err(InflationError::BadNumber); // bits past the sign, or an eleventh byte
        }
        value |= i64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                value |= -1i64 << shift; // sign-extend
            }
            return Ok(value);
        }
        byte = source.next_byte()?.ok_or(InflationError::Truncated)?;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use automerge::{ActorId, Automerge, ObjType, ROOT, ReadDoc, transaction::Transactable};
    use flate2::{Compression, write::DeflateEncoder};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::sync::inflation::{Bounds, InflationError::*, Measure, check_sync_message, measure};

    /// The relay's bound: 4 frames of 8 MiB.
    const RELAY: Bounds = Bounds::for_max_bytes(32 * 1024 * 1024);
    const UNBOUNDED: Bounds = Bounds { max_bytes: u64::MAX, max_items: u64::MAX };

    const GROUP: u64 = 0;
    const ACTOR: u64 = 1;
    const INTEGER: u64 = 2;
    const DELTA: u64 = 3;
    const BOOLEAN: u64 = 4;
    const STRING: u64 = 5;
    const VALUE_META: u64 = 6;
    const VALUE_RAW: u64 = 7;
    const DEFLATE: u64 = 0b1000;

    fn push_uleb(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    fn push_sleb(out: &mut Vec<u8>, mut value: i64) {
        loop {
            let low = (value & 0x7f) as u8;
            value >>= 7;
            let last = (value == 0 && low & 0x40 == 0) || (value == -1 && low & 0x40 != 0);
            out.push(if last { low } else { low | 0x80 });
            if last {
                return;
            }
        }
    }

    fn run(count: i64, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        push_sleb(&mut out, count);
        push_uleb(&mut out, value);
        out
    }

    fn null_run(count: u64) -> Vec<u8> {
        let mut out = vec![0];
        push_uleb(&mut out, count);
        out
    }

    fn uleb_list(values: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        values.iter().for_each(|&value| push_uleb(&mut out, value));
        out
    }

    fn string_run(count: i64, value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_sleb(&mut out, count);
        push_uleb(&mut out, value.len() as u64);
        out.extend(value.as_bytes());
        out
    }

    fn deflate(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// How many items `column` decodes to as a column of `spec`; the same through a slice and
    /// deflated, errors included.
    fn items(spec: u64, column: &[u8]) -> Result<u64, InflationError> {
        let mut counted = Counter::new(u64::MAX, TooManyItems);
        let plain = count_items(spec, &mut &column[..], &mut counted).map(|()| counted.total());
        let deflated = deflate(column);
        let mut source = Inflating::new(&deflated, u64::MAX);
        let mut counted = Counter::new(u64::MAX, TooManyItems);
        let inflated = count_items(spec, &mut source, &mut counted).map(|()| counted.total());
        assert_eq!(plain, inflated);
        if plain.is_ok() {
            assert_eq!(source.finish(), Ok(column.len() as u64));
        }
        plain
    }

    /// A chunk with the checksum automerge checks (`storage/chunk.rs` `hash`): the first four
    /// bytes of SHA-256 over the type, the uLEB length and the data.
    fn signed_chunk(chunk_type: u8, data: &[u8]) -> Vec<u8> {
        let mut header = vec![chunk_type];
        push_uleb(&mut header, data.len() as u64);
        let hash = Sha256::new().chain_update(&header).chain_update(data).finalize();
        let mut out = vec![0x85, 0x6f, 0x4a, 0x83];
        out.extend(&hash[..4]);
        out.extend(header);
        out.extend(data);
        out
    }

    /// Column metadata and data, columns in the order given (automerge wants them ascending).
    fn columns(columns: &[(u64, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
        let (mut meta, mut data) = (Vec::new(), Vec::new());
        push_uleb(&mut meta, columns.len() as u64);
        for (spec, column) in columns {
            push_uleb(&mut meta, *spec);
            push_uleb(&mut meta, column.len() as u64);
            data.extend(column);
        }
        (meta, data)
    }

    /// A document chunk (`storage/document.rs`) with one 16-byte actor and no heads.
    fn document(change_columns: &[(u64, Vec<u8>)], op_columns: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut data = vec![1, 16];
        data.extend([7; 16]);
        data.push(0);
        let ((change_meta, change_data), (op_meta, op_data)) = (columns(change_columns), columns(op_columns));
        data.extend([change_meta, op_meta, change_data, op_data].concat());
        signed_chunk(0, &data)
    }

    /// A change chunk's body (`storage/change.rs`): no deps, a 16-byte actor, seq 1, start op 1.
    fn change_body(op_columns: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut data = vec![0, 16];
        data.extend([7; 16]);
        data.extend([1, 1, 0, 0, 0]); // seq, start op, timestamp, empty message, no other actors
        let (meta, columns) = columns(op_columns);
        [data, meta, columns].concat()
    }

    /// `ops` ops that each put null at root key "a", in the five columns a change cannot do
    /// without (key string, insert, action, value metadata, pred group): five items an op.
    fn put_ops(ops: i64) -> Vec<(u64, Vec<u8>)> {
        vec![
            ((1 << 4) | STRING, string_run(ops, "a")),
            ((3 << 4) | BOOLEAN, uleb_list(&[ops as u64])),
            ((4 << 4) | INTEGER, run(ops, 1)),
            ((5 << 4) | VALUE_META, run(ops, 0)),
            ((7 << 4) | GROUP, run(ops, 0)),
        ]
    }

    /// A change chunk's bytes for each of its sizes: as made, and as a sync message carries it.
    fn text_doc(len: usize) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let notes = tx.put_object(ROOT, "notes", ObjType::Text).unwrap();
        let text: String = (0..len).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        tx.splice_text(&notes, 0, 0, &text).unwrap();
        tx.commit();
        doc
    }

    fn ops_and_changes(doc: &Automerge) -> (u64, u64) {
        let changes = doc.get_changes(&[]);
        (changes.iter().map(|change| change.len() as u64).sum(), changes.len() as u64)
    }

    /// Passes the relay's bound; a document has at most 16 op and 9 change columns of one item
    /// per op or change (successors and dependencies aside), and no op decodes to fewer than 4.
    fn assert_honest(bytes: &[u8], ops: u64, changes: u64) -> Measure {
        let measured = measure(bytes, RELAY).unwrap();
        assert!(measured.items >= 4 * ops, "{measured:?} for {ops} ops");
        assert!(measured.items <= 16 * ops + 9 * changes + 2 * ops, "{measured:?} for {ops} ops, {changes} changes");
        assert_eq!(measure(bytes, Bounds { max_items: measured.items, ..UNBOUNDED }), Ok(measured));
        assert_eq!(measure(bytes, Bounds { max_items: measured.items - 1, ..UNBOUNDED }), Err(TooManyItems));
        measured
    }

    #[test]
    fn runs_literals_nulls_and_booleans_count_exactly() {
        for spec in [GROUP, ACTOR, INTEGER, VALUE_META] {
            assert_eq!(items(spec, &[]), Ok(0));
            assert_eq!(items(spec, &run(3, 300)), Ok(3));
            let literals = [vec![0x7d], uleb_list(&[1, 300, u64::MAX])].concat(); // -3
            assert_eq!(items(spec, &literals), Ok(3));
            assert_eq!(items(spec, &null_run(1 << 40)), Ok(1 << 40));
            assert_eq!(items(spec, &[run(2, 5), null_run(4), literals.clone()].concat()), Ok(9));
        }
        let deltas = [run(5, 1), vec![0x7e, 0x7f, 0x40]].concat(); // 5 × +1, then -1 and -64
        assert_eq!(items(DELTA, &deltas), Ok(7));
        let strings = [string_run(2, "pulse"), vec![0x7e, 1, b'x', 0], null_run(3)].concat();
        assert_eq!(items(STRING, &strings), Ok(7));
        assert_eq!(items(BOOLEAN, &uleb_list(&[0, 3, 1 << 40])), Ok(3 + (1 << 40)));
        assert_eq!(items(VALUE_RAW, &run(1 << 40, 0)), Ok(0), "raw values are bytes");
        let longest_run = [[0xff; 9].as_slice(), &[0x00, 0x01]].concat(); // i64::MAX copies of +1
        assert_eq!(items(DELTA, &longest_run), Ok(i64::MAX as u64));
    }

    #[test]
    fn the_limit_is_exact_and_stops_before_reading_a_run() {
        let count = |column: &[u8], limit| {
            let mut counted = Counter::new(limit, TooManyItems);
            count_items(ACTOR, &mut &column[..], &mut counted).map(|()| counted.total())
        };
        let column = [run(5, 1), null_run(5)].concat();
        assert_eq!(count(&column, 10), Ok(10));
        assert_eq!(count(&column, 9), Err(TooManyItems));
        // A literal run of 2^40 values with none of them present: refused on its header alone.
        let mut literal_bomb = Vec::new();
        push_sleb(&mut literal_bomb, -(1 << 40));
        assert_eq!(count(&literal_bomb, 1 << 39), Err(TooManyItems));
        assert_eq!(count(&literal_bomb, u64::MAX), Err(Truncated));
        // i64::MIN is 2^63 literals (automerge negates it: a panic in debug builds).
        assert_eq!(count(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f], 1 << 62), Err(TooManyItems));
    }

    #[test]
    fn malformed_columns_are_typed_errors() {
        assert_eq!(items(ACTOR, &[0x02]), Err(Truncated), "a run without its value");
        assert_eq!(items(ACTOR, &[0x7e, 0x01]), Err(Truncated), "two literals, one present");
        assert_eq!(items(ACTOR, &[0x00]), Err(Truncated), "a null run without its length");
        assert_eq!(items(STRING, &[0x02, 0x05, b'a']), Err(Truncated), "a string past the end");
        assert_eq!(items(BOOLEAN, &[0x80]), Err(Truncated));
        assert_eq!(items(ACTOR, &[0xff; 11]), Err(BadNumber));
        assert_eq!(items(ACTOR, &[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]), Err(BadNumber));
        assert_eq!(items(DELTA, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), Err(BadNumber));
        let mut counted = Counter::new(u64::MAX, TooManyItems);
        assert_eq!(count_items(ACTOR, &mut Inflating::new(&[0xff; 8], u64::MAX), &mut counted), Err(Deflate));
        let many_runs = deflate(&run(1, 0).repeat(100_000));
        let mut counted = Counter::new(u64::MAX, TooManyItems);
        assert_eq!(count_items(ACTOR, &mut Inflating::new(&many_runs, 1000), &mut counted), Err(TooLarge));
    }

    #[test]
    fn numbers_decode_as_leb128() {
        for value in [0, 1, 63, 64, -1, -64, -65, 127, 128, -128, i64::from(i32::MIN), i64::MAX, i64::MIN] {
            let mut encoded = Vec::new();
            push_sleb(&mut encoded, value);
            assert_eq!(sleb(&mut &encoded[..]), Ok(value), "{value}");
        }
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut encoded = Vec::new();
            push_uleb(&mut encoded, value);
            assert_eq!(uleb(&mut &encoded[..]), Ok(value), "{value}");
        }
    }

    #[test]
    fn an_actor_run_bomb_is_refused_and_automerge_would_expand_it() {
        let change_actor_column = |count| document(&[(ACTOR, run(count, 0))], &[]);
        let bomb = change_actor_column(50_000_000);
        assert!(bomb.len() <= 71, "{} bytes", bomb.len());
        assert_eq!(measure(&bomb, RELAY), Err(TooManyItems));
        assert_eq!(measure(&bomb, Bounds::for_max_bytes(4 * 32 * 1024 * 1024)), Err(TooManyItems));
        // automerge collects the run into a `Vec` before it checks anything else: the length it
        // then complains about is the run's (`ChangeGraphCols::load`, `change_graph.rs`).
        let small = change_actor_column(1_000_000);
        assert_eq!(measure(&small, UNBOUNDED), Ok(Measure { bytes: small.len() as u64, items: 1_000_000 }));
        let error = Automerge::load(&small).unwrap_err().to_string();
        assert!(error.contains("expected=1000000"), "{error}");
    }

    #[test]
    fn a_change_chunk_bomb_is_refused_and_automerge_would_load_it() {
        let bomb = signed_chunk(1, &change_body(&put_ops(1 << 40)));
        assert!(bomb.len() < 80, "{} bytes", bomb.len());
        assert_eq!(measure(&bomb, RELAY), Err(TooManyItems));
        let compressed = signed_chunk(2, &deflate(&change_body(&put_ops(1 << 40))));
        assert_eq!(measure(&compressed, RELAY), Err(TooManyItems));
        // The same 60 bytes with 20 000 ops are a valid change, loaded op by op.
        let small = signed_chunk(1, &change_body(&put_ops(20_000)));
        assert_eq!(measure(&small, UNBOUNDED).map(|measured| measured.items), Ok(5 * 20_000));
        let doc = Automerge::load(&small).unwrap();
        assert_eq!(ops_and_changes(&doc), (20_000, 1));
    }

    #[test]
    fn null_boolean_string_and_deflated_bombs_are_refused() {
        let huge = 1_i64 << 50;
        let bombs = [
            document(&[(ACTOR, null_run(huge as u64))], &[]),
            document(&[], &[((3 << 4) | BOOLEAN, uleb_list(&[0, huge as u64]))]),
            document(&[], &[((1 << 4) | STRING, string_run(huge, "a"))]),
            document(&[], &[((2 << 4) | DELTA, run(huge, 1))]),
            document(&[], &[((2 << 4) | ACTOR | DEFLATE, deflate(&run(1000, 0).repeat(100_000)))]),
            signed_chunk(
                3,
                &[vec![0, 0], columns(&[(ACTOR, null_run(huge as u64))]).0, null_run(huge as u64), vec![0]].concat(),
            ),
        ];
        for bomb in bombs {
            assert!(bomb.len() < 2048, "{} bytes", bomb.len());
            assert_eq!(measure(&bomb, RELAY), Err(TooManyItems));
        }
    }

    #[test]
    fn honest_documents_pass_with_their_real_counts() {
        let mut text = text_doc(200_000);
        let (ops, changes) = ops_and_changes(&text);
        let saved = assert_honest(&text.save(), ops, changes);
        assert!(saved.items < RELAY.max_items / 3, "{saved:?}");
        assert_eq!(measure(&text.save_nocompress(), RELAY).map(|measured| measured.items), Ok(saved.items));

        // Deletes, and a second and third actor editing concurrently.
        let heads = text.get_heads();
        let notes = text.get(ROOT, "notes").unwrap().unwrap().1;
        let mut other = text.fork().with_actor(ActorId::random());
        let mut third = text.fork().with_actor(ActorId::random());
        for (round, doc) in [&mut text, &mut other, &mut third].into_iter().enumerate() {
            let mut tx = doc.transaction();
            tx.splice_text(&notes, 1000 * round, 500, "edited").unwrap();
            tx.put(ROOT, "round", round as i64).unwrap();
            tx.commit();
        }
        text.merge(&mut other).unwrap();
        text.merge(&mut third).unwrap();
        let (ops, changes) = ops_and_changes(&text);
        assert_honest(&text.save(), ops, changes);
        let after = text.save_after(&heads);
        assert_eq!(after[8], 1, "change chunks");
        assert_honest(&after, ops - 200_001, changes - 1);
        let bundle = text.bundle(text.get_changes(&heads).iter().map(|change| change.hash())).unwrap();
        assert_honest(bundle.bytes(), ops - 200_001, changes - 1);
        let mut first = text.get_changes(&[])[0].clone();
        let compressed = first.bytes();
        assert_eq!(compressed[8], 2);
        assert_honest(&compressed, 200_001, 1);

        // Many small changes from many actors.
        let mut many = Automerge::new();
        for round in 0..10_000_u32 {
            if round % 100 == 0 {
                many.set_actor(ActorId::random());
            }
            let mut tx = many.transaction();
            tx.put(ROOT, format!("field {}", round % 40), i64::from(round)).unwrap();
            tx.commit();
        }
        let (ops, changes) = ops_and_changes(&many);
        assert_honest(&many.save(), ops, changes);
    }

    #[test]
    fn a_real_v2_sync_message_passes_with_the_document_it_carries() {
        let mut sender = text_doc(50_000);
        let msg = crate::sync::inflation::tests::first_message_with_changes(&mut sender);
        let chunks: Vec<&[u8]> = msg.changes.iter().collect();
        assert_eq!(chunks.iter().map(|chunk| chunk[8]).collect::<Vec<_>>(), [0], "one document chunk");
        let measured = check_sync_message(&msg, RELAY).unwrap();
        assert_eq!(Ok(measured), measure(chunks[0], RELAY));
        let (ops, changes) = ops_and_changes(&sender);
        assert!(measured.items >= 4 * ops && measured.items <= 18 * ops + 9 * changes, "{measured:?}");
        let tight = Bounds { max_items: measured.items - 1, ..RELAY };
        assert_eq!(check_sync_message(&msg, tight), Err(TooManyItems));
    }

    /// A document, a change, a compressed change and a bundle, made by automerge.
    static HONEST: std::sync::LazyLock<[Vec<u8>; 4]> = std::sync::LazyLock::new(|| {
        let mut doc = text_doc(2000);
        let heads = doc.get_heads();
        let mut tx = doc.transaction();
        tx.put(ROOT, "title", "notes").unwrap();
        tx.commit();
        let mut changes = doc.get_changes(&[]);
        let bundle = doc.bundle(changes.iter().map(|change| change.hash())).unwrap().bytes().to_vec();
        let compressed = changes[0].bytes().into_owned();
        assert_eq!([compressed[8], bundle[8]], [2, 3]);
        [doc.save(), doc.save_after(&heads), compressed, bundle]
    });

    #[derive(Debug, Clone)]
    enum Run {
        Repeat(i64, u64),
        Literal(Vec<u64>),
        Null(u64),
    }

    fn encode(runs: &[Run]) -> Vec<u8> {
        let mut out = Vec::new();
        for run in runs {
            match run {
                Run::Repeat(count, value) => {
                    push_sleb(&mut out, *count);
                    push_uleb(&mut out, *value);
                }
                Run::Literal(values) => {
                    push_sleb(&mut out, -(values.len() as i64));
                    values.iter().for_each(|&value| push_uleb(&mut out, value));
                }
                Run::Null(count) => out.extend(null_run(*count)),
            }
        }
        out
    }

    fn any_run() -> impl Strategy<Value = Run> {
        prop_oneof![
            (1..1_000_000_i64, any::<u64>()).prop_map(|(count, value)| Run::Repeat(count, value)),
            prop::collection::vec(any::<u64>(), 1..8).prop_map(Run::Literal),
            (0..1_000_000_u64).prop_map(Run::Null),
        ]
    }

    proptest! {
        /// Encoded runs count to what they hold, through a slice and deflated; cut anywhere, they
        /// count to no more, or fail.
        #[test]
        fn runs_count_to_their_sum(runs in prop::collection::vec(any_run(), 0..16), cut in any::<prop::sample::Index>()) {
            let column = encode(&runs);
            let expected: u64 = runs.iter().map(|run| match run {
                Run::Repeat(count, _) => *count as u64,
                Run::Literal(values) => values.len() as u64,
                Run::Null(count) => *count,
            }).sum();
            prop_assert_eq!(items(ACTOR, &column), Ok(expected));
            let truncated = &column[..cut.index(column.len() + 1)];
            match items(ACTOR, truncated) {
                Ok(counted) => prop_assert!(counted <= expected),
                Err(error) => prop_assert!(matches!(error, Truncated | BadNumber), "{error:?}"),
            }
        }

        /// Arbitrary bytes as a column of every type, plain and deflated, never panic.
        #[test]
        fn arbitrary_columns_never_panic(spec in 0u64..8, bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut counted = Counter::new(1 << 20, TooManyItems);
            let _ = count_items(spec, &mut &bytes[..], &mut counted);
            let mut counted = Counter::new(1 << 20, TooManyItems);
            let _ = count_items(spec, &mut Inflating::new(&bytes, 1 << 16), &mut counted);
            let _ = items(spec, &bytes);
        }

        /// Honest chunks of every type with one byte changed or cut short: an answer, never a panic.
        #[test]
        fn damaged_honest_chunks_never_panic(which in 0usize..4, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut chunk = HONEST[which].clone();
            let index = at.index(chunk.len());
            let _ = measure(&chunk[..index], RELAY);
            chunk[index] = byte;
            let _ = measure(&chunk, Bounds { max_bytes: 1 << 20, max_items: 1 << 16 });
        }

        /// Arbitrary bytes as the body of a signed chunk of every type, under a small bound.
        #[test]
        fn arbitrary_chunks_never_panic(kind in 0u8..4, bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let small = Bounds { max_bytes: 1 << 20, max_items: 1 << 16 };
            let _ = measure(&signed_chunk(kind, &bytes), small);
            let _ = measure(&signed_chunk(2, &deflate(&bytes)), small);
        }
    }
}
