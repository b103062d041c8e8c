//! The narrow storage traits the rest of the core talks to, so a distributed engine can later
//! stand where the embedded segment log stands today, and the result types they share:
//!
//! - [`PartitionLog`]: append a batch and learn its offsets once durable, read from an offset,
//!   the high watermark, wake-ups for new data, retention.
//! - [`LogFactory`]: opens the partition logs of a stream.
//!
//! [`crate::segment_logs::SegmentLogs`] is the embedded implementation (segment files + group commit).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use crate::batch::BatchHeader;
use crate::config::StreamConfig;
use crate::error::{Result, StreamError};

/// What an append produced. The data is in the page cache; `durable` resolves once it is on
/// disk, together with everything routing it wrote (durable queues it was enqueued in).
#[derive(Debug)]
pub struct AppendOutcome {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// First offset still stored in the partition.
    pub log_start_offset: i64,
    /// True when the batch was a retried duplicate and was not written again.
    pub duplicate: bool,
    /// Wait on this before acknowledging.
    pub durable: DurableTicket,
    /// Indexes (in append order, from 0) of records a subscriber's full queue refused
    /// (policy `reject-publish`): they are stored in their stream, but the writer should be
    /// told.
    pub refused: Vec<u32>,
    /// Indexes of records some subscriber (queue, connected client) took; the others matched
    /// nothing (AMQP `mandatory` publishes are returned).
    pub routed: Vec<u32>,
}

/// One watched position a [`DurableTicket`] waits for.
#[derive(Debug)]
struct Wait {
    rx: watch::Receiver<i64>,
    failed: Arc<AtomicBool>,
    target: i64,
}

/// A claim on durability: resolves when each log it covers has made the append durable
/// (its high watermark passed the append).
#[derive(Debug, Default)]
pub struct DurableTicket {
    waits: Vec<Wait>,
}

impl DurableTicket {
    /// A ticket that resolves when the watched high watermark reaches `target`, or fails once
    /// `failed` is set. `rx = None`: durable already (or never waited for, per the policy).
    pub fn new(rx: Option<watch::Receiver<i64>>, failed: Arc<AtomicBool>, target: i64) -> Self {
        Self {
            waits: rx
                .map(|rx| Wait { rx, failed, target })
                .into_iter()
                .collect(),
        }
    }

    /// Adds another log's claim: the ticket then resolves when both are durable.
    pub fn join(&mut self, other: DurableTicket) {
        self.waits.extend(other.waits);
    }

    /// Waits until the appended records are durable (per the fsync policy).
    pub async fn wait(self) -> Result<()> {
        for Wait {
            mut rx,
            failed,
            target,
        } in self.waits
        {
            let reached = rx
                .wait_for(|hw| *hw >= target || failed.load(Ordering::Acquire))
                .await
                .map(|hw| *hw >= target)
                .map_err(|_| StreamError::ShuttingDown)?;
            if !reached {
                return Err(fsync_failed());
            }
        }
        Ok(())
    }
}

/// Result of a read: whole stored batches plus the partition's bounds at read time.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Stored batch bytes, ready to be served as they are. Empty at the tail.
    pub data: Bytes,
    /// Offset after the last durable record: readers never see past it.
    pub high_watermark: i64,
    /// First offset still stored.
    pub log_start_offset: i64,
}

/// The error every writer of a partition gets after one of its fsyncs failed.
pub fn fsync_failed() -> StreamError {
    StreamError::Io(std::io::Error::other(
        "an fsync of this partition failed; it accepts no more writes",
    ))
}

/// One partition's storage.
pub trait PartitionLog: Send + Sync + std::fmt::Debug {
    /// Appends validated batches (`batch::validate_all`): assigns offsets, checks
    /// idempotent-producer sequences; the outcome's ticket resolves once durable.
    fn append(&self, data: &[u8], headers: &[BatchHeader]) -> Result<AppendOutcome>;
    /// Whole stored batches from the one holding `offset`, up to `max_bytes` (at least one).
    fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult>;
    /// Offset after the last record readers may see.
    fn high_watermark(&self) -> i64;
    /// First offset still stored.
    fn log_start_offset(&self) -> i64;
    /// Wakes `n` (`notify_one`) whenever the high watermark advances, while `n` is alive.
    fn register_listener(&self, n: &Arc<Notify>);
    /// A watch of the high watermark.
    fn watch_high_watermark(&self) -> watch::Receiver<i64>;
    /// First batch at or after a timestamp: `(offset, timestamp)`.
    fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>>;
    /// `(offset, timestamp)` of the largest timestamp.
    fn max_timestamp(&self) -> Option<(i64, i64)>;
    /// Bytes stored.
    fn size_bytes(&self) -> u64;
    /// New retention/segment settings.
    fn set_config(&self, config: StreamConfig);
    /// Applies retention now, never deleting data at or after `keep_from` (still referenced
    /// by a queue); returns how many units (segments) were deleted.
    fn apply_retention(&self, now_ms: i64, keep_from: Option<i64>) -> Result<usize>;
    /// Compacts closed segments when the stream's cleanup policy says so (see
    /// [`crate::compaction`]); returns how many segments were rewritten.
    fn compact(
        &self,
        _now_ms: i64,
        _txn: Option<&dyn crate::compaction::TxnView>,
    ) -> Result<usize> {
        Ok(0)
    }
    /// Moves the log start offset forward to `offset` (Kafka DeleteRecords); durable when it
    /// returns. Returns the log start offset after the call.
    fn delete_before(&self, offset: i64) -> Result<i64>;
    /// Makes everything appended durable now (used at shutdown).
    fn flush(&self) -> Result<()>;
    /// Deletes all stored data (the stream was deleted).
    fn destroy(&self) -> Result<()>;
    /// Local directory holding the data, for embedded logs.
    fn data_dir(&self) -> Option<&Path>;
}

/// Opens partition logs.
pub trait LogFactory: Send + Sync + std::fmt::Debug {
    /// Opens (creating or recovering) partition `index` of `stream`.
    fn open(
        &self,
        stream: &str,
        index: u32,
        config: &StreamConfig,
    ) -> Result<Arc<dyn PartitionLog>>;
    /// Removes any data left under this name (before a stream of that name is created anew).
    fn remove(&self, stream: &str, index: u32) -> Result<()>;
    /// Opens (creating or recovering) the log of the core's queue `id`, kept apart from the
    /// streams (queues hold references to records, not streams of their own).
    fn open_queue_log(&self, id: u64, config: &StreamConfig) -> Result<Arc<dyn PartitionLog>>;
    /// Ids of every queue log present (to clean up logs whose queue is gone).
    fn queue_log_ids(&self) -> Result<Vec<u64>>;
    /// Deletes a queue's log.
    fn remove_queue_log(&self, id: u64) -> Result<()>;
    /// Called once every log was opened, before anything is served: makes all the data found
    /// at open durable (a crashed process may have left written, unacknowledged data in the
    /// page cache only; it counts toward high watermarks now, so it must be on disk).
    fn recovered(&self) -> Result<()>;
    /// Stops background work after the last flush.
    fn shutdown(&self);
}
