//! The narrow storage traits the rest of the core talks to, so a distributed engine can later
//! stand where the embedded segment log stands today:
//!
//! - [`PartitionLog`]: append a batch and learn its offsets once durable, read from an offset,
//!   the high watermark, wake-ups for new data, retention.
//! - [`LogFactory`]: opens the partition logs of a stream.
//!
//! [`SegmentLogs`] is the embedded implementation (segment files + group commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::batch::BatchHeader;
use crate::commit::Syncer;
use crate::config::{FsyncPolicy, StreamConfig};
use crate::error::Result;
use crate::file_cache::FileCache;
use crate::partition::{AppendOutcome, Partition, ReadResult};

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
    /// Applies retention now; returns how many units (segments) were deleted.
    fn apply_retention(&self, now_ms: i64) -> Result<usize>;
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
    /// Stops background work after the last flush.
    fn shutdown(&self);
}

/// The embedded default: segment files under `<data dir>/streams/<stream>-<partition>/`,
/// made durable by one group-commit thread.
#[derive(Debug)]
pub struct SegmentLogs {
    root: PathBuf,
    fsync: FsyncPolicy,
    syncer: Arc<Syncer>,
    files: Arc<FileCache>,
}

impl SegmentLogs {
    /// Logs under `root` with the given durability policy, keeping at most `max_open_files`
    /// segment files open; starts the fsync thread.
    pub fn new(
        root: PathBuf,
        fsync: FsyncPolicy,
        fsync_interval: std::time::Duration,
        max_open_files: usize,
    ) -> Self {
        Self {
            root,
            fsync,
            syncer: Syncer::start(fsync_interval),
            files: FileCache::new(max_open_files),
        }
    }

    /// Segment files open now (bounded by `max_open_files`).
    pub fn open_files(&self) -> usize {
        self.files.open_files()
    }

    fn dir(&self, stream: &str, index: u32) -> PathBuf {
        self.root.join(format!("{stream}-{index}"))
    }
}

impl LogFactory for SegmentLogs {
    fn open(
        &self,
        stream: &str,
        index: u32,
        config: &StreamConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        let p = Partition::open(
            stream,
            index,
            self.dir(stream, index),
            config.clone(),
            self.fsync,
            self.syncer.clone(),
            self.files.clone(),
        )?;
        Ok(p)
    }

    fn remove(&self, stream: &str, index: u32) -> Result<()> {
        let d = self.dir(stream, index);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        Ok(())
    }

    fn shutdown(&self) {
        self.syncer.shutdown();
    }
}
