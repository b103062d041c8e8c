//! The one record format: Kafka record batches (magic v2), whatever protocol wrote them.
//!
//! Every partition log stores these batches byte for byte, so a Kafka fetch can be served from
//! the stored bytes. This module validates batch headers without trusting any count in them,
//! builds uncompressed batches for writers that are not Kafka clients, and decodes records with
//! a bounded decoder that keeps duplicate header keys.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StreamError;

/// Bytes before the CRC-covered part: base offset (8), batch length (4), leader epoch (4), magic (1), crc (4).
pub const CRC_START: usize = 21;
/// Size of a v2 batch header, including the record count.
pub const HEADER_LEN: usize = 61;
/// Offset of the batch length field; `base offset + length field` = 12 bytes of framing.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest encoding of one record (length, attributes, timestamp delta, offset delta, key, value, header count).
const MIN_RECORD_LEN: usize = 7;

/// Compression codec named by the low three bits of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip (1).
    Gzip,
    /// snappy, xerial framing (2).
    Snappy,
    /// LZ4 frame (3).
    Lz4,
    /// zstd (4).
    Zstd,
}

/// The fields of a v2 batch header that the core acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the log on append).
    pub base_offset: i64,
    /// Whole batch size in bytes, including the 12 framing bytes.
    pub size: usize,
    /// Attributes bits (compression, timestamp type, transactional, control).
    pub attributes: i16,
    /// `last offset - base offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records the batch claims.
    pub record_count: i32,
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Codec of the records section.
    pub fn compression(&self) -> Result<Compression, StreamError> {
        Ok(match self.attributes & 0x7 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return Err(StreamError::CorruptBatch("unknown compression codec")),
        })
    }

    /// Whether the batch is a transaction control batch (a commit or abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch belongs to a transaction (its records count only once committed).
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the broker stamped the batch (Kafka's `LogAppendTime`): every record's
    /// timestamp is then the batch's max timestamp.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME != 0
    }
}

/// Attributes bit of a batch whose timestamps are the broker's append time.
const LOG_APPEND_TIME: i16 = 0x08;

/// A copy of `data` (one or more batches as a producer sent them) with every batch stamped
/// with the broker's append time, as Kafka does for a `LogAppendTime` topic: the timestamp-type
/// bit set, the max timestamp = `now_ms`, the CRC recomputed. Only the 61-byte headers change
/// (compressed records stay compressed). A batch whose framing or CRC is already wrong is
/// copied unchanged (the append then refuses it): a fresh CRC must never cover bad bytes.
pub fn stamp_log_append_time(data: &[u8], now_ms: i64) -> Bytes {
    let mut out = BytesMut::from(data);
    let mut pos = 0;
    while let Some((_, size)) = peek_frame(&out[pos..]) {
        let end = pos + size;
        if end > out.len() {
            break;
        }
        let b = &mut out[pos..end];
        let crc_ok = crc32c::crc32c(&b[CRC_START..]) == be_i32(b, 17) as u32;
        if crc_ok && b[16] == 2 && be_i16(b, 21) & 0x20 == 0 {
            let attributes = be_i16(b, 21) | LOG_APPEND_TIME;
            b[21..23].copy_from_slice(&attributes.to_be_bytes());
            b[35..43].copy_from_slice(&now_ms.to_be_bytes());
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        pos = end;
    }
    out.freeze()
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Reads the framing of the batch at the start of `buf`: `(base_offset, total size)`.
/// Returns `None` if fewer than 12 bytes are present or the length is not plausible.
pub fn peek_frame(buf: &[u8]) -> Option<(i64, usize)> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, 8);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some((be_i64(buf, 0), len as usize + LOG_OVERHEAD))
}

/// Parses the header of the batch at the start of `buf` without checking the CRC.
/// `buf` must hold at least the 61 header bytes; the declared size is not checked against `buf`.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, StreamError> {
    let (base_offset, size) =
        peek_frame(buf).ok_or(StreamError::CorruptBatch("batch length too small"))?;
    if buf.len() < HEADER_LEN {
        return Err(StreamError::CorruptBatch("truncated batch header"));
    }
    if buf[16] != 2 {
        return Err(StreamError::UnsupportedMagic(buf[16] as i8));
    }
    Ok(BatchHeader {
        base_offset,
        size,
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        first_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        record_count: be_i32(buf, 57),
    })
}

/// Fully validates the complete batch at the start of `buf` (CRC32C, sizes, counts) and returns
/// its header. Never trusts a count: the record count must agree with the last offset delta
/// and, for uncompressed batches, fit in the bytes present.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, StreamError> {
    validate_counts(buf, false)
}

/// [`validate`] for batches read back from a segment: a compacted batch holds fewer records
/// than its offset range (Kafka's cleaner keeps the range, so offsets never change).
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, StreamError> {
    validate_counts(buf, true)
}

fn validate_counts(buf: &[u8], compacted_ok: bool) -> Result<BatchHeader, StreamError> {
    let h = parse_header(buf)?;
    if h.size > buf.len() {
        return Err(StreamError::CorruptBatch("batch longer than the data"));
    }
    let stored_crc = be_i32(buf, 17) as u32;
    if crc32c::crc32c(&buf[CRC_START..h.size]) != stored_crc {
        return Err(StreamError::CorruptBatch("CRC32C mismatch"));
    }
    let counts_agree = if compacted_ok {
        h.record_count > 0 && h.record_count - 1 <= h.last_offset_delta
    } else {
        h.record_count > 0 && h.last_offset_delta == h.record_count - 1
    };
    if !counts_agree {
        return Err(StreamError::CorruptBatch(
            "record count disagrees with last offset delta",
        ));
    }
    if h.compression()? == Compression::None
        && (h.record_count as usize).saturating_mul(MIN_RECORD_LEN) > h.size - HEADER_LEN
    {
        return Err(StreamError::CorruptBatch(
            "record count larger than the records section",
        ));
    }
    Ok(h)
}

/// Walks a buffer of concatenated batches, validating each. Returns the headers in order.
/// Used on produce input (never trusted) before anything is written.
pub fn validate_all(mut buf: &[u8]) -> Result<Vec<BatchHeader>, StreamError> {
    let mut out = Vec::with_capacity(1);
    if buf.is_empty() {
        return Err(StreamError::CorruptBatch("empty record set"));
    }
    while !buf.is_empty() {
        let h = validate(buf)?;
        buf = &buf[h.size..];
        out.push(h);
    }
    Ok(out)
}

/// Sets the base offset (outside the CRC) of the batch at the start of `buf`.
pub fn set_base_offset(buf: &mut [u8], offset: i64) {
    buf[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// One record as the core hands it to non-Kafka readers and takes it from non-Kafka writers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Offset in its partition (filled in by decoding; ignored when building).
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Partitioning key.
    pub key: Option<Bytes>,
    /// Payload.
    pub value: Option<Bytes>,
    /// Ordered headers; duplicate names are kept.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn put_opt_bytes(buf: &mut BytesMut, b: &Option<Bytes>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

/// The header fields of a batch being written (see [`encode_batch`]).
struct NewBatch {
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: (i64, i16, i32),
}

/// Writes one uncompressed v2 batch: the header, then each record with its offset and
/// timestamp relative to the batch's (`offset_of(i, record)`), then the length and CRC.
fn encode_batch(
    b: NewBatch,
    records: &[Record],
    offset_of: impl Fn(usize, &Record) -> i64,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + records.len() * 32);
    buf.put_i64(b.base_offset);
    buf.put_i32(0); // length, patched below
    buf.put_i32(0); // partition leader epoch
    buf.put_u8(2);
    buf.put_u32(0); // crc, patched below
    buf.put_i16(b.attributes);
    buf.put_i32(b.last_offset_delta);
    buf.put_i64(b.first_timestamp);
    buf.put_i64(b.max_timestamp);
    let (pid, epoch, seq) = b.producer;
    buf.put_i64(pid);
    buf.put_i16(epoch);
    buf.put_i32(seq);
    buf.put_i32(records.len() as i32);
    let mut body = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        body.clear();
        body.put_u8(0);
        put_varint(&mut body, r.timestamp - b.first_timestamp);
        put_varint(&mut body, offset_of(i, r) - b.base_offset);
        put_opt_bytes(&mut body, &r.key);
        put_opt_bytes(&mut body, &r.value);
        put_varint(&mut body, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_varint(&mut body, k.len() as i64);
            body.put_slice(k);
            put_opt_bytes(&mut body, v);
        }
        put_varint(&mut buf, body.len() as i64);
        buf.put_slice(&body);
    }
    let len = (buf.len() - LOG_OVERHEAD) as i32;
    buf[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

/// Builds one uncompressed v2 batch (base offset 0; the log assigns the real one) from records.
/// Used by writers that are not Kafka clients and by tests.
pub fn build_batch(records: &[Record], producer: Option<(i64, i16, i32)>) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let first_ts = records[0].timestamp;
    let max_ts = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(first_ts);
    let head = NewBatch {
        base_offset: 0,
        attributes: 0,
        last_offset_delta: records.len() as i32 - 1,
        first_timestamp: first_ts,
        max_timestamp: max_ts,
        producer: producer.unwrap_or((-1, -1, -1)),
    };
    encode_batch(head, records, |i, _| i as i64)
}

/// Rebuilds a stored batch with only some of its records (log compaction): same base offset,
/// last offset delta, timestamps type, producer and transactional flag, so offsets and the
/// producer's sequence bookkeeping stay as they were; records keep their own offsets and
/// timestamps. Written uncompressed.
pub fn rebuild_batch(h: &BatchHeader, records: &[Record]) -> Bytes {
    let head = NewBatch {
        base_offset: h.base_offset,
        attributes: h.attributes & !0x07,
        last_offset_delta: h.last_offset_delta,
        first_timestamp: h.first_timestamp,
        max_timestamp: h.max_timestamp,
        producer: (h.producer_id, h.producer_epoch, h.base_sequence),
    };
    encode_batch(head, records, |_, r| r.offset)
}

/// The whole batches at the start of `data`, one at a time (a cut-off batch at the end ends
/// the walk): how stored bytes read from a log are taken apart.
pub fn split_batches(mut data: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        let (_, size) = peek_frame(&data)?;
        (size <= data.len()).then(|| data.split_to(size))
    })
}

/// Builds a transaction marker: a control batch of one record whose key says commit or abort
/// (Kafka's `EndTransactionMarker`: key = version 0, type 0 abort / 1 commit; value =
/// version 0, coordinator epoch). Base offset 0 (the log assigns the real one).
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    timestamp: i64,
) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(0);
    let record = Record {
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        ..Default::default()
    };
    let mut b =
        BytesMut::from(&build_batch(&[record], Some((producer_id, producer_epoch, -1)))[..]);
    // Attributes: transactional (0x10) and control (0x20); then the CRC again.
    b[21..23].copy_from_slice(&0x30i16.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A cursor over untrusted bytes for the bounded record decoder.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<i64, StreamError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(StreamError::CorruptBatch("truncated varint"))?;
            self.pos += 1;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(StreamError::CorruptBatch("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], StreamError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(StreamError::CorruptBatch("length past end of record"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn opt_bytes(&mut self, src: &Bytes) -> Result<Option<Bytes>, StreamError> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        let start = self.pos;
        self.take(n as usize)?;
        Ok(Some(src.slice(start..self.pos)))
    }
}

/// Most bytes one batch's records may decompress to for non-Kafka readers.
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// Decodes the records of one batch (`batch` = whole batch bytes), decompressing gzip, snappy,
/// lz4 and zstd batches (at most [`MAX_DECOMPRESSED`] bytes). Transaction control batches hold
/// no user records and decode to none. Bounded: every length is checked against the bytes
/// present; nothing is reserved from counts.
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, StreamError> {
    let h = validate_stored(batch)?;
    if h.is_control() {
        return Ok(Vec::new());
    }
    let body = match h.compression()? {
        Compression::None => batch.slice(HEADER_LEN..h.size),
        codec => Bytes::from(crate::compression::decompress(
            codec,
            &batch[HEADER_LEN..h.size],
            MAX_DECOMPRESSED,
        )?),
    };
    let mut r = Reader { buf: &body, pos: 0 };
    let mut out = Vec::new();
    for _ in 0..h.record_count {
        let len = r.varint()?;
        if len < 0 {
            return Err(StreamError::CorruptBatch("negative record length"));
        }
        let end = r
            .pos
            .checked_add(len as usize)
            .ok_or(StreamError::CorruptBatch("record length overflows"))?;
        let _attrs = r.take(1)?;
        let ts_delta = r.varint()?;
        let off_delta = r.varint()?;
        let key = r.opt_bytes(&body)?;
        let value = r.opt_bytes(&body)?;
        let n_headers = r.varint()?;
        let mut headers = Vec::new();
        for _ in 0..n_headers.max(0) {
            let klen = r.varint()?;
            if klen < 0 {
                return Err(StreamError::CorruptBatch("negative header key length"));
            }
            let kstart = r.pos;
            r.take(klen as usize)?;
            let k = body.slice(kstart..r.pos);
            let v = r.opt_bytes(&body)?;
            headers.push((k, v));
        }
        if r.pos != end {
            return Err(StreamError::CorruptBatch("record length mismatch"));
        }
        out.push(Record {
            offset: h.base_offset.wrapping_add(off_delta),
            timestamp: if h.is_log_append_time() {
                h.max_timestamp
            } else {
                h.first_timestamp.wrapping_add(ts_delta)
            },
            key,
            value,
            headers,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str) -> Record {
        Record {
            timestamp: 1000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![
                (Bytes::from_static(b"h"), Some(Bytes::from_static(b"1"))),
                (Bytes::from_static(b"h"), Some(Bytes::from_static(b"2"))),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn built_batch_validates_and_decodes_with_duplicate_headers() {
        let b = build_batch(&[rec("a"), rec("b")], None);
        let h = validate(&b).unwrap();
        assert_eq!(h.record_count, 2);
        assert_eq!(h.size, b.len());
        let recs = decode_records(&b).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].offset, 1);
        assert_eq!(recs[1].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(recs[0].headers.len(), 2);
    }

    #[test]
    fn log_append_time_stamps_every_sound_batch_and_no_corrupt_one() {
        let one = build_batch(&[rec("a"), rec("b")], None);
        let two = build_batch(&[rec("c")], None);
        let mut bad = two.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let data = [&one[..], &two[..], &bad[..]].concat();
        let out = stamp_log_append_time(&data, 5000);
        let batches: Vec<Bytes> = split_batches(out.clone()).collect();
        assert_eq!(batches.len(), 3);
        for b in &batches[..2] {
            let h = validate(b).expect("a fresh CRC over the stamped header");
            assert!(h.is_log_append_time());
            assert_eq!((h.first_timestamp, h.max_timestamp), (1000, 5000));
            assert!(decode_records(b)
                .unwrap()
                .iter()
                .all(|r| r.timestamp == 5000));
        }
        assert_eq!(
            &batches[2][..],
            &bad[..],
            "a corrupt batch is left for the append to refuse"
        );
        assert!(validate(&batches[2]).is_err());
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let b = build_batch(&[rec("a")], None);
        let mut m = b.to_vec();
        let last = m.len() - 1;
        m[last] ^= 1;
        assert!(matches!(validate(&m), Err(StreamError::CorruptBatch(_))));
    }

    #[test]
    fn huge_record_count_in_61_byte_batch_is_rejected() {
        let b = build_batch(&[rec("a")], None);
        let mut m = b[..HEADER_LEN].to_vec();
        m[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
        m[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&m[CRC_START..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(validate(&m).is_err());
    }
}
