//! Decompression of the records section of Kafka batches (gzip, snappy, lz4, zstd), so MQTT
//! and AMQP readers can read what Kafka clients compressed. Kafka readers never need it: they
//! get the stored bytes as they are.
//!
//! Every decoder is bounded: output past `limit` bytes is an error, not an allocation, so a
//! small hostile batch cannot expand into unbounded memory.

use std::io::Read;

use crate::batch::Compression;
use crate::error::StreamError;

/// Largest zstd window accepted (a frame may claim up to 3.75 TB; Kafka clients use far less).
const MAX_ZSTD_WINDOW: u64 = 32 * 1024 * 1024;

/// The 8-byte magic of xerial's snappy framing, which the Java client writes.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

fn corrupt(_: impl std::fmt::Debug) -> StreamError {
    StreamError::CorruptBatch("records section does not decompress")
}

/// Reads `r` to the end, failing once more than `limit` bytes come out.
fn bounded(mut r: impl Read, limit: usize) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    (&mut r)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > limit {
        return Err(StreamError::CorruptBatch(
            "records section decompresses past the limit",
        ));
    }
    Ok(out)
}

fn snappy_raw(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), StreamError> {
    let len = snap::raw::decompress_len(data).map_err(corrupt)?;
    if out.len() + len > limit {
        return Err(StreamError::CorruptBatch(
            "records section decompresses past the limit",
        ));
    }
    let at = out.len();
    out.resize(at + len, 0);
    snap::raw::Decoder::new()
        .decompress(data, &mut out[at..])
        .map_err(corrupt)?;
    Ok(())
}

/// Snappy as Kafka clients write it: either xerial's framing (magic, version, compatible
/// version, then length-prefixed raw blocks; the Java client) or one raw block (librdkafka).
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC) else {
        snappy_raw(data, limit, &mut out)?;
        return Ok(out);
    };
    rest = rest
        .get(8..)
        .ok_or(StreamError::CorruptBatch("truncated xerial snappy header"))?;
    while !rest.is_empty() {
        let head: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(StreamError::CorruptBatch("truncated xerial snappy block"))?;
        let n = u32::from_be_bytes(head) as usize;
        let block = rest
            .get(4..4 + n)
            .ok_or(StreamError::CorruptBatch("truncated xerial snappy block"))?;
        snappy_raw(block, limit, &mut out)?;
        rest = &rest[4 + n..];
    }
    Ok(out)
}

/// Decompresses a records section compressed with `codec`, producing at most `limit` bytes.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, StreamError> {
    match codec {
        Compression::None => bounded(data, limit),
        Compression::Gzip => bounded(flate2::read::GzDecoder::new(data), limit),
        Compression::Snappy => snappy(data, limit),
        Compression::Lz4 => bounded(lz4_flex::frame::FrameDecoder::new(data), limit),
        Compression::Zstd => {
            let d =
                ruzstd::decoding::StreamingDecoder::new_with_max_window_size(data, MAX_ZSTD_WINDOW)
                    .map_err(corrupt)?;
            bounded(d, limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_raw_and_xerial_framing_both_decode() {
        let text = b"hello hello hello hello snappy".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&text).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            text
        );
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1u32.to_be_bytes());
        framed.extend_from_slice(&1u32.to_be_bytes());
        for half in text.chunks(text.len() / 2) {
            let block = snap::raw::Encoder::new().compress_vec(half).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(
            decompress(Compression::Snappy, &framed, 1 << 20).unwrap(),
            text
        );
    }

    #[test]
    fn output_past_the_limit_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 10_000);
        assert_eq!(
            decompress(Compression::Gzip, &gz, 1 << 20).unwrap().len(),
            1 << 20
        );
        assert!(decompress(Compression::Gzip, &gz, 1000).is_err());
        let lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        let mut lz = lz;
        std::io::Write::write_all(&mut lz, &zeros).unwrap();
        let lz = lz.finish().unwrap();
        assert!(decompress(Compression::Lz4, &lz, 1000).is_err());
        let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert!(decompress(Compression::Snappy, &raw, 1000).is_err());
        for junk in [
            &b"\x00\x01\x02"[..],
            b"\x82SNAPPY\x00\x00",
            b"\xff\xff\xff\xff\xff",
        ] {
            for codec in [
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
                Compression::Zstd,
            ] {
                assert!(decompress(codec, junk, 1000).is_err(), "{codec:?} {junk:?}");
            }
        }
    }
}
