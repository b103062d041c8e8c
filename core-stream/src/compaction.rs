//! Log compaction: keep the latest record of each key.
//!
//! The cleaner of a partition builds a map from each key (a 128-bit hash of it) to the offset
//! of its latest record, over the partition up to its last stable offset, then rewrites its
//! closed segments keeping only records that are the latest of their key, so offsets never
//! change (a reader sees gaps, as Kafka serves them). A tombstone (a keyed record without a
//! value) goes once it is older than `delete_retention_ms`; records of aborted transactions
//! go; transaction markers stay. A rewritten segment replaces the old file by an atomic
//! rename, so a crash leaves one or the other, never a mix. The map holds at most
//! [`MAP_ENTRIES`] keys: past that, only the segments before the point the map reached are
//! cleaned, and the next pass goes on from there.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, Record};
use crate::error::Result;

/// Most keys the cleaner remembers in one pass (about 24 bytes each).
pub const MAP_ENTRIES: usize = 1_000_000;

/// What the cleaner must know about transactions (the Kafka front-end keeps them).
pub trait TxnView: Send + Sync + std::fmt::Debug {
    /// Whether `producer_id`'s transactional record at `offset` belongs to an aborted
    /// transaction.
    fn is_aborted(&self, stream: &str, partition: i32, producer_id: i64, offset: i64) -> bool;
    /// The last stable offset (nothing at or after it is cleaned).
    fn stable_offset(&self, stream: &str, partition: i32, hw: i64) -> i64;
}

/// A key's 128-bit fingerprint (two SipHash runs with different prefixes).
pub fn key_hash(key: &[u8]) -> u128 {
    let h = |salt: u8| {
        let mut s = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut s);
        key.hash(&mut s);
        s.finish()
    };
    (u128::from(h(1)) << 64) | u128::from(h(2))
}

/// Latest offset of each key.
#[derive(Debug, Default)]
pub struct OffsetMap {
    map: HashMap<u128, i64>,
    /// Offset after the last record added (the map covers records before it).
    pub end: i64,
    /// True when the map stopped early because it was full.
    pub full: bool,
}

/// Where a batch comes from, for the transaction questions.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Partition.
    pub partition: i32,
    /// Transactions, when the stream may hold transactional batches.
    pub txn: Option<&'a dyn TxnView>,
}

impl Place<'_> {
    fn aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.txn.is_some_and(|t| {
                t.is_aborted(self.stream, self.partition, h.producer_id, h.base_offset)
            })
    }
}

impl OffsetMap {
    /// An empty map of a log starting at `offset`.
    pub fn starting_at(offset: i64) -> Self {
        Self {
            end: offset,
            ..Default::default()
        }
    }

    /// Adds the records of one stored batch. False when the map is full (the batch was not
    /// added; `end` stays before it).
    pub fn add(&mut self, bytes: &Bytes, h: &BatchHeader, place: Place<'_>) -> Result<bool> {
        if h.is_control() || place.aborted(h) {
            self.end = h.last_offset() + 1;
            return Ok(true);
        }
        if self.map.len() + h.record_count.max(0) as usize > MAP_ENTRIES {
            self.full = true;
            return Ok(false);
        }
        for r in batch::decode_records(bytes)? {
            if let Some(k) = &r.key {
                self.map.insert(key_hash(k), r.offset);
            }
        }
        self.end = h.last_offset() + 1;
        Ok(true)
    }

    /// Keys in the map.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key was added.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn latest(&self, key: &[u8]) -> Option<i64> {
        self.map.get(&key_hash(key)).copied()
    }
}

/// What cleaning did to one batch.
#[derive(Debug)]
pub enum Cleaned {
    /// Nothing removed: keep the stored bytes.
    Same,
    /// Every record removed.
    Gone,
    /// Some records removed: the rebuilt batch.
    Rebuilt(Bytes),
}

/// Cleans one stored batch against the map. Records after `map.end` are kept (the map does
/// not know what follows them); `tombstones_before` is the record time below which a
/// tombstone that is the latest of its key goes.
pub fn clean_batch(
    bytes: &Bytes,
    h: &BatchHeader,
    map: &OffsetMap,
    tombstones_before: i64,
    place: Place<'_>,
) -> Result<Cleaned> {
    if h.is_control() {
        return Ok(Cleaned::Same);
    }
    if place.aborted(h) {
        return Ok(Cleaned::Gone);
    }
    let records = batch::decode_records(bytes)?;
    let total = records.len();
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|r| {
            let Some(k) = &r.key else {
                return true;
            };
            if r.offset >= map.end {
                return true;
            }
            match map.latest(k) {
                Some(latest) if r.offset < latest => false,
                _ => !(r.value.is_none() && r.timestamp < tombstones_before),
            }
        })
        .collect();
    Ok(if kept.len() == total {
        Cleaned::Same
    } else if kept.is_empty() {
        Cleaned::Gone
    } else {
        Cleaned::Rebuilt(batch::rebuild_batch(h, &kept))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>, ts: i64) -> Record {
        Record {
            timestamp: ts,
            key: Some(Bytes::from(key.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
            ..Default::default()
        }
    }

    fn stored(base: i64, recs: &[Record]) -> (Bytes, BatchHeader) {
        let mut b = bytes::BytesMut::from(&batch::build_batch(recs, None)[..]);
        batch::set_base_offset(&mut b, base);
        let b = b.freeze();
        let h = batch::validate(&b).unwrap();
        (b, h)
    }

    #[test]
    fn keeps_the_latest_record_per_key_with_its_offset() {
        let place = Place {
            stream: "s",
            partition: 0,
            txn: None,
        };
        let (b1, h1) = stored(
            0,
            &[
                rec("a", Some("1"), 10),
                rec("b", Some("1"), 10),
                rec("a", Some("2"), 11),
            ],
        );
        let (b2, h2) = stored(3, &[rec("b", None, 12), rec("c", Some("1"), 12)]);
        let mut map = OffsetMap::default();
        assert!(map.add(&b1, &h1, place).unwrap());
        assert!(map.add(&b2, &h2, place).unwrap());
        assert_eq!(map.len(), 3);
        // Tombstones still young: kept.
        let Cleaned::Rebuilt(r1) = clean_batch(&b1, &h1, &map, 0, place).unwrap() else {
            panic!("batch 1 loses records");
        };
        let h = batch::validate_stored(&r1).unwrap();
        assert_eq!(
            (h.base_offset, h.last_offset()),
            (0, 2),
            "offsets unchanged"
        );
        let recs = batch::decode_records(&r1).unwrap();
        assert_eq!(recs.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2]);
        assert_eq!(recs[0].value.as_deref(), Some(&b"2"[..]));
        assert!(matches!(
            clean_batch(&b2, &h2, &map, 0, place).unwrap(),
            Cleaned::Same
        ));
        // Old tombstone: gone.
        let Cleaned::Rebuilt(r2) = clean_batch(&b2, &h2, &map, 100, place).unwrap() else {
            panic!("tombstone not removed");
        };
        let recs = batch::decode_records(&r2).unwrap();
        assert_eq!(recs.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4]);
        // Everything superseded: the batch goes.
        let (b3, h3) = stored(5, &[rec("c", Some("2"), 13)]);
        map.add(&b3, &h3, place).unwrap();
        assert!(matches!(
            clean_batch(&b2, &h2, &map, 100, place).unwrap(),
            Cleaned::Gone
        ));
    }
}
