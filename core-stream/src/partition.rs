//! A partition's log: an ordered list of segments, the append path with idempotent-producer
//! checks, reads up to the high watermark, retention, and the live-tail wake-up of readers.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use crate::batch::{self, BatchHeader};
use crate::commit::{Syncable, Syncer};
use crate::config::{FsyncPolicy, StreamConfig};
use crate::error::{Result, StreamError};
use crate::file_cache::FileCache;
use crate::log::{AppendOutcome, DurableTicket, ReadResult};
use crate::segment::{self, Segment};

/// How many recent batches per producer are remembered to recognise retried duplicates
/// (Kafka clients keep at most five requests in flight).
const PRODUCER_WINDOW: usize = 5;

#[derive(Debug, Clone, Copy)]
struct ProducerBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<ProducerBatch>,
}

#[derive(Debug)]
struct Inner {
    segments: Vec<Segment>,
    log_start: i64,
    /// Set while this partition waits in the syncer's queue.
    queued: bool,
    /// Position (segment base, bytes) up to which the data is durable.
    durable_seg: i64,
    durable_pos: u64,
    producers: HashMap<i64, ProducerEntry>,
    write_buf: Vec<u8>,
    /// The handle the active segment was written through since the last fsync (`None`: nothing
    /// unsynced). The fsync goes through the same handle that wrote, so a write-back error is
    /// reported to it even if the file cache closed and reopened the file meanwhile.
    dirty: Option<Arc<std::fs::File>>,
    /// Closed segments whose data the syncer has not fsync'd yet.
    unsynced: Vec<Arc<std::fs::File>>,
}

impl Inner {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a partition always has a segment")
    }
    fn next_offset(&self) -> i64 {
        self.active().next_offset
    }
    fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
    /// Byte limit readers may read to in the segment starting at `base`.
    fn read_limit(&self, seg: &Segment) -> u64 {
        match seg.base_offset.cmp(&self.durable_seg) {
            std::cmp::Ordering::Less => seg.size,
            std::cmp::Ordering::Equal => self.durable_pos.min(seg.size),
            std::cmp::Ordering::Greater => 0,
        }
    }
}

/// One partition of a stream.
#[derive(Debug)]
pub struct Partition {
    /// Stream this partition belongs to.
    pub stream: String,
    /// Index within the stream.
    pub index: u32,
    dir: PathBuf,
    fsync: FsyncPolicy,
    config: RwLock<StreamConfig>,
    inner: Mutex<Inner>,
    /// High watermark: offset after the last record readers may see (durable under `always`).
    hw: watch::Sender<i64>,
    /// Set when an fsync failed: what was written may not be on disk, so nothing more is
    /// acknowledged or accepted (like Kafka taking a log directory offline).
    failed: Arc<AtomicBool>,
    listeners: Mutex<Vec<Weak<Notify>>>,
    syncer: Arc<Syncer>,
    files: Arc<FileCache>,
    /// Set while writes fail (disk full, I/O error), so the failure is logged once per episode
    /// and the recovery once, not once per request.
    write_fault: AtomicBool,
    /// Serialises `sync()` calls (the syncer thread and a shutdown flush): one sync must not
    /// publish a high watermark past closed segments another is still fsyncing.
    sync_lock: Mutex<()>,
    /// Self-reference: the syncer queue holds partitions by `Arc`.
    me: Weak<Partition>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Partition {
    /// Opens (or creates) the partition directory, verifying and truncating the active segment's tail.
    pub fn open(
        stream: &str,
        index: u32,
        dir: PathBuf,
        config: StreamConfig,
        fsync: FsyncPolicy,
        syncer: Arc<Syncer>,
        files: Arc<FileCache>,
    ) -> Result<Arc<Self>> {
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            // The new directory's entry must be durable too, or a crash could lose the
            // partition with everything acknowledged in it.
            if let Some(parent) = dir.parent() {
                fs::File::open(parent)?.sync_all()?;
            }
        }
        let now = now_ms();
        // A compaction interrupted by a crash leaves its unfinished copy: the original stands.
        for e in fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().ends_with(CLEANED_SUFFIX) {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut bases: Vec<i64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::new();
        let mut producers = HashMap::new();
        for (i, base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let path = dir.join(segment::file_name(*base));
            let (seg, rec) = Segment::open(&path, *base, last, now, &files)?;
            if rec.truncated_bytes > 0 {
                warn!(stream, partition = index, segment = %path.display(), bytes = rec.truncated_bytes,
                    "recovery cut off a torn or corrupt tail");
            }
            for h in &rec.headers {
                note_producer(&mut producers, h, h.base_offset);
            }
            segments.push(seg);
        }
        // An empty last segment (a crash between roll and first write) stays: its name is the
        // next offset, which the segment before it may no longer show (compaction can remove
        // its last batches).
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, now, &files)?);
        }
        let active = segments.last().expect("non-empty");
        // DeleteRecords may have moved the start past the first segment's base.
        let log_start = read_log_start(&dir)?
            .unwrap_or(i64::MIN)
            .max(segments[0].base_offset)
            .min(active.next_offset);
        let (next, durable_seg, durable_pos) =
            (active.next_offset, active.base_offset, active.size);
        if bases.len() > 1 || next > 0 {
            // One line per partition is noise with many streams: debug level (the core logs
            // the totals).
            tracing::debug!(
                stream,
                partition = index,
                log_start,
                next_offset = next,
                "partition recovered"
            );
        }
        let inner = Inner {
            segments,
            log_start,
            queued: false,
            durable_seg,
            durable_pos,
            producers,
            write_buf: Vec::new(),
            dirty: None,
            unsynced: Vec::new(),
        };
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            stream: stream.to_string(),
            index,
            dir,
            fsync,
            config: RwLock::new(config),
            inner: Mutex::new(inner),
            hw: watch::channel(next).0,
            failed: Arc::new(AtomicBool::new(false)),
            listeners: Mutex::new(Vec::new()),
            syncer,
            files,
            write_fault: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the settings (retention, segment size) after a config change.
    pub fn set_config(&self, config: StreamConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Offset after the last record readers may see.
    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start
    }

    /// Bytes stored in this partition.
    pub fn size_bytes(&self) -> u64 {
        self.lock().size()
    }

    /// Appends already validated batches (see [`batch::validate_all`]); assigns offsets,
    /// checks idempotent-producer sequences and returns a ticket that resolves once durable.
    pub fn append(&self, data: &[u8], headers: &[BatchHeader]) -> Result<AppendOutcome> {
        if self.failed.load(Ordering::Acquire) {
            return Err(crate::log::fsync_failed());
        }
        let now = now_ms();
        let (segment_bytes, segment_ms) = {
            let c = self.config.read().unwrap_or_else(|e| e.into_inner());
            (c.segment_bytes, c.segment_ms)
        };
        let mut inner = self.lock();
        // Idempotence: a retried batch that is already stored returns its original offsets.
        if let [h] = headers {
            if let Some(dup) = check_producer(&inner.producers, h)? {
                let log_start_offset = inner.log_start;
                drop(inner);
                return Ok(AppendOutcome {
                    base_offset: dup.base_offset,
                    last_offset: dup.last_offset,
                    log_start_offset,
                    duplicate: true,
                    durable: self.ticket(dup.last_offset + 1),
                    refused: Vec::new(),
                    routed: Vec::new(),
                });
            }
        } else {
            for h in headers {
                if check_producer(&inner.producers, h)?.is_some() {
                    return Err(StreamError::CorruptBatch(
                        "duplicate batch inside a multi-batch append",
                    ));
                }
            }
        }
        let active = inner.active();
        if active.size > 0
            && (active.size + data.len() as u64 > segment_bytes
                || now - active.created_ms > segment_ms)
        {
            if let Err(e) = self.roll(&mut inner, now) {
                return Err(self.write_failed(e));
            }
        }
        let base = inner.next_offset();
        let mut buf = std::mem::take(&mut inner.write_buf);
        buf.clear();
        buf.extend_from_slice(data);
        let mut assigned = Vec::with_capacity(headers.len());
        let (mut pos, mut next) = (0usize, base);
        for h in headers {
            batch::set_base_offset(&mut buf[pos..], next);
            // Partition leader epoch (outside the CRC): this single node is always epoch 0.
            buf[pos + 12..pos + 16].copy_from_slice(&0i32.to_be_bytes());
            let mut h2 = *h;
            h2.base_offset = next;
            assigned.push(h2);
            pos += h.size;
            next = h2.last_offset() + 1;
        }
        let res = inner
            .segments
            .last_mut()
            .expect("non-empty")
            .append(&buf, &assigned);
        inner.write_buf = buf;
        let file = res.map_err(|e| self.write_failed(e))?;
        if self.write_fault.load(Ordering::Relaxed)
            && self.write_fault.swap(false, Ordering::AcqRel)
        {
            info!(stream = %self.stream, partition = self.index, "writes succeed again");
        }
        if self.fsync != FsyncPolicy::Never && inner.dirty.is_none() {
            inner.dirty = Some(file);
        }
        for h in &assigned {
            note_producer(&mut inner.producers, h, h.base_offset);
        }
        let log_start_offset = inner.log_start;
        let last_offset = next - 1;
        match self.fsync {
            FsyncPolicy::Always => {
                if !inner.queued {
                    inner.queued = true;
                    drop(inner);
                    if let Some(me) = self.me.upgrade() {
                        self.syncer.enqueue(me);
                    }
                }
            }
            FsyncPolicy::Interval | FsyncPolicy::Never => {
                let active = inner.active();
                let (seg, pos) = (active.base_offset, active.size);
                inner.durable_seg = seg;
                inner.durable_pos = pos;
                self.set_hw(next);
                let lazy_sync = self.fsync == FsyncPolicy::Interval && !inner.queued;
                inner.queued |= lazy_sync;
                drop(inner);
                if let Some(me) = self.me.upgrade().filter(|_| lazy_sync) {
                    self.syncer.enqueue_lazy(me);
                }
                self.wake_listeners();
            }
        }
        Ok(AppendOutcome {
            base_offset: base,
            last_offset,
            log_start_offset,
            duplicate: false,
            durable: self.ticket(next),
            refused: Vec::new(),
            routed: Vec::new(),
        })
    }

    fn ticket(&self, target: i64) -> DurableTicket {
        DurableTicket::new(
            (self.fsync == FsyncPolicy::Always).then(|| self.hw.subscribe()),
            self.failed.clone(),
            target,
        )
    }

    /// Closes the active segment and starts another. The closed file is handed to the syncer
    /// (no fsync on the append path); its data becomes visible when the syncer has synced it.
    fn roll(&self, inner: &mut Inner, now: i64) -> Result<()> {
        let next = inner.active().next_offset;
        let seg = Segment::create(&self.dir, next, now, &self.files)?;
        if let Some(old) = inner.dirty.take() {
            inner.unsynced.push(old);
        }
        inner.segments.push(seg);
        Ok(())
    }

    /// Logs a failed write once per episode (the disk is full, or the device fails) with the
    /// stream, partition and errno; the caller answers the writer with the error.
    fn write_failed(&self, e: StreamError) -> StreamError {
        if let StreamError::Io(io) = &e {
            if !self.write_fault.swap(true, Ordering::AcqRel) {
                error!(stream = %self.stream, partition = self.index, errno = io.raw_os_error().unwrap_or(0),
                    error = %io, "writes to this partition fail; writers get a storage error until they succeed again");
            }
        }
        e
    }

    /// Called by the syncer: fsyncs what is written and advances the high watermark.
    pub fn sync(&self) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (closed, file, seg, pos, next) = {
            let mut inner = self.lock();
            inner.queued = false;
            let closed = std::mem::take(&mut inner.unsynced);
            let file = inner.dirty.take();
            let a = inner.active();
            (closed, file, a.base_offset, a.size, a.next_offset)
        };
        // Closed segments first, then the active one: everything before `pos` is then on disk.
        if let Err(e) = closed
            .iter()
            .chain(file.iter())
            .try_for_each(|f| f.sync_data())
        {
            // The kernel may have dropped the dirty pages: nothing written since the last good
            // fsync can be vouched for, so fail the waiters and refuse further writes.
            self.failed.store(true, Ordering::Release);
            self.hw.send_modify(|_| ()); // wake waiters so they see the failure
            return Err(e.into());
        }
        if self.fsync == FsyncPolicy::Always {
            {
                // The durable position and the high watermark move together under the lock,
                // so a reader never sees bytes past the watermark it reports.
                let mut inner = self.lock();
                if (seg, pos) > (inner.durable_seg, inner.durable_pos) {
                    inner.durable_seg = seg;
                    inner.durable_pos = pos;
                }
                self.set_hw(next);
            }
            self.wake_listeners();
        }
        Ok(())
    }

    /// Advances the high watermark (never backwards). Callers hold the partition lock.
    fn set_hw(&self, next: i64) {
        self.hw.send_if_modified(|hw| {
            if next > *hw {
                *hw = next;
                true
            } else {
                false
            }
        });
    }

    fn wake_listeners(&self) {
        let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        ls.retain(|w| match w.upgrade() {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        });
    }

    /// Registers a reader to be woken (`notify_one`) whenever the high watermark advances.
    /// The registration lasts as long as the caller keeps the `Arc<Notify>`.
    pub fn register_listener(&self, n: &Arc<Notify>) {
        let mut ls = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        ls.retain(|w| w.strong_count() > 0);
        if !ls.iter().any(|w| w.as_ptr() == Arc::as_ptr(n)) {
            ls.push(Arc::downgrade(n));
        }
    }

    /// A watch of the high watermark, for readers that follow one partition.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.hw.subscribe()
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (but at least one batch). `offset == high watermark` returns no data.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let (file, pos, limit, log_start, hw) = {
            let inner = self.lock();
            let hw = self.high_watermark();
            let log_start = inner.log_start;
            if offset < log_start || offset > hw {
                return Err(StreamError::OffsetOutOfRange {
                    offset,
                    start: log_start,
                    end: hw,
                });
            }
            if offset == hw {
                return Ok(ReadResult {
                    data: Bytes::new(),
                    high_watermark: hw,
                    log_start_offset: log_start,
                });
            }
            let i = inner
                .segments
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            let mut found = None;
            for seg in &inner.segments[i..] {
                let limit = inner.read_limit(seg);
                if let Some((pos, _)) = seg.position_of(offset, limit)? {
                    found = Some((seg.file()?, pos, limit));
                    break;
                }
            }
            match found {
                Some((f, p, l)) => (f, p, l, log_start, hw),
                None => {
                    return Ok(ReadResult {
                        data: Bytes::new(),
                        high_watermark: hw,
                        log_start_offset: log_start,
                    })
                }
            }
        };
        let data = segment::read_batches(&file, pos, max_bytes, limit)?;
        Ok(ReadResult {
            data,
            high_watermark: hw,
            log_start_offset: log_start,
        })
    }

    /// Earliest offset whose batch has a timestamp >= `ts`, with that batch's timestamp.
    /// Batch granularity: the answer is the first offset of the matching batch.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let inner = self.lock();
        for seg in &inner.segments {
            if seg.max_timestamp < ts {
                continue;
            }
            let limit = inner.read_limit(seg);
            if let Some((pos, h)) = seg.batch_for_timestamp(ts, limit)? {
                let from = inner.log_start;
                // Record granularity, as Kafka answers: the first record of the batch at or
                // after `ts` (the batch header alone only bounds it).
                let found = record_in_batch(seg, pos, h, limit, |r| {
                    r.timestamp >= ts && r.offset >= from
                });
                return Ok(Some(found.unwrap_or_else(|| {
                    let t = if h.first_timestamp >= ts {
                        h.first_timestamp
                    } else {
                        h.max_timestamp
                    };
                    (h.base_offset.max(from), t)
                })));
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the record holding the largest timestamp (Kafka's MAX_TIMESTAMP).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let inner = self.lock();
        let hw = self.high_watermark();
        let seg = inner
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= 0 && s.offset_of_max_timestamp < hw)
            .max_by_key(|s| s.max_timestamp)?;
        let batch_answer = (seg.offset_of_max_timestamp, seg.max_timestamp);
        let limit = inner.read_limit(seg);
        let Ok(Some((pos, h))) = seg.position_of(seg.offset_of_max_timestamp, limit) else {
            return Some(batch_answer);
        };
        Some(
            record_in_batch(seg, pos, h, limit, |r| r.timestamp == h.max_timestamp)
                .unwrap_or(batch_answer),
        )
    }

    /// Deletes whole closed segments past the time or size limit. Returns how many were deleted.
    pub fn apply_retention(&self, now: i64, keep_from: Option<i64>) -> Result<usize> {
        let (retention_ms, retention_bytes) = {
            let c = self.config.read().unwrap_or_else(|e| e.into_inner());
            if !c.cleanup.delete {
                return Ok(0);
            }
            (c.retention_ms, c.retention_bytes)
        };
        let mut inner = self.lock();
        let mut deleted = 0;
        let mut total = inner.size();
        while inner.segments.len() > 1 {
            let first = &inner.segments[0];
            if first.base_offset >= inner.durable_seg {
                break;
            }
            // A queue still references records of this segment (or later ones).
            if keep_from.is_some_and(|k| inner.segments[1].base_offset > k) {
                break;
            }
            let too_old = retention_ms >= 0
                && first.max_timestamp >= 0
                && first.max_timestamp < now - retention_ms;
            let too_big =
                retention_bytes >= 0 && total.saturating_sub(first.size) >= retention_bytes as u64;
            if !(too_old || too_big) {
                break;
            }
            let seg = inner.segments.remove(0);
            total -= seg.size;
            seg.delete()?;
            deleted += 1;
            inner.log_start = inner.log_start.max(inner.segments[0].base_offset);
        }
        if deleted > 0 {
            info!(stream = %self.stream, partition = self.index, deleted, log_start = inner.log_start, "retention deleted segments");
        }
        Ok(deleted)
    }

    /// Directory holding this partition's segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the log start offset forward to `offset` (Kafka's DeleteRecords): records before
    /// it are no longer served and whole segments below it are deleted. The new start is on
    /// disk before this returns, so a restart never shows the deleted records again.
    /// Returns the log start offset after the call.
    pub fn delete_before(&self, offset: i64) -> Result<i64> {
        let hw = self.high_watermark();
        let mut inner = self.lock();
        if offset < 0 || offset > hw {
            return Err(StreamError::OffsetOutOfRange {
                offset,
                start: inner.log_start,
                end: hw,
            });
        }
        if offset <= inner.log_start {
            return Ok(inner.log_start);
        }
        write_log_start(&self.dir, offset)?;
        inner.log_start = offset;
        while inner.segments.len() > 1 && inner.segments[1].base_offset <= offset {
            let seg = inner.segments.remove(0);
            seg.delete()?;
        }
        info!(stream = %self.stream, partition = self.index, log_start = offset, "records deleted");
        Ok(offset)
    }
}

/// Suffix of a segment's compacted copy while it is written (renamed over the segment when
/// complete).
const CLEANED_SUFFIX: &str = ".cleaned";
/// File in a partition directory holding the offset up to which the log was compacted.
const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";

impl Partition {
    /// One compaction pass (see [`crate::compaction`]): when the stream compacts and enough
    /// of its closed segments is not compacted yet, builds the key map over the partition up
    /// to its last stable offset and rewrites the closed segments it covers. Returns how many
    /// segments were rewritten.
    pub fn compact(&self, now: i64, txn: Option<&dyn crate::compaction::TxnView>) -> Result<usize> {
        use crate::compaction::{OffsetMap, Place};
        let cleanup = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cleanup
            .clone();
        if !cleanup.compact {
            return Ok(0);
        }
        let checkpoint = read_offset_file(&self.dir, CLEANER_CHECKPOINT)?.unwrap_or(i64::MIN);
        let hw = self.high_watermark();
        // Closed, durable segments: (base, next offset, size, max timestamp).
        let (closed, log_start): (Vec<(i64, i64, u64, i64)>, i64) = {
            let inner = self.lock();
            let closed = inner.segments[..inner.segments.len() - 1]
                .iter()
                .filter(|s| inner.read_limit(s) == s.size)
                .map(|s| (s.base_offset, s.next_offset, s.size, s.max_timestamp))
                .collect();
            (closed, inner.log_start)
        };
        if closed.is_empty() {
            return Ok(0);
        }
        let total: u64 = closed.iter().map(|c| c.2).sum();
        let dirty: u64 = closed
            .iter()
            .filter(|c| c.1 > checkpoint)
            .map(|c| c.2)
            .sum();
        let overdue = cleanup.max_compaction_lag_ms < i64::MAX
            && closed.iter().any(|c| {
                c.1 > checkpoint
                    && c.3 >= 0
                    && c.3 < now.saturating_sub(cleanup.max_compaction_lag_ms)
            });
        if dirty == 0
            || (dirty * 1000 < total * u64::from(cleanup.min_cleanable_dirty_permille) && !overdue)
        {
            return Ok(0);
        }
        let stable = txn.map_or(hw, |t| t.stable_offset(&self.stream, self.index as i32, hw));
        let place = Place {
            stream: &self.stream,
            partition: self.index as i32,
            txn,
        };
        // The map: every key's latest offset, up to the last stable offset.
        let mut map = OffsetMap::starting_at(log_start);
        let mut at = log_start;
        'fill: while at < stable {
            let r = self.read(at, 4 * 1024 * 1024)?;
            if r.data.is_empty() {
                break;
            }
            let mut moved = false;
            for one in batch::split_batches(r.data) {
                let h = batch::parse_header(&one)?;
                if h.last_offset() >= stable {
                    break 'fill;
                }
                if !map.add(&one, &h, place)? {
                    break 'fill;
                }
                at = h.last_offset() + 1;
                moved = true;
            }
            if !moved {
                break;
            }
        }
        // Segments wholly before the map's end, old enough to compact.
        let min_lag_before = now.saturating_sub(cleanup.min_compaction_lag_ms);
        let tombstones_before = now.saturating_sub(cleanup.delete_retention_ms);
        let mut rewritten = 0;
        let mut clean_end = checkpoint;
        for (base, next, _, max_ts) in closed {
            if next > map.end || (cleanup.min_compaction_lag_ms > 0 && max_ts > min_lag_before) {
                break;
            }
            if self.rewrite_segment(base, &map, tombstones_before, place)? {
                rewritten += 1;
            }
            clean_end = clean_end.max(next);
        }
        if clean_end > checkpoint {
            write_offset_file(&self.dir, CLEANER_CHECKPOINT, clean_end)?;
        }
        if rewritten > 0 {
            info!(stream = %self.stream, partition = self.index, segments = rewritten, keys = map.len(), "compacted");
        }
        Ok(rewritten)
    }

    /// Rewrites one closed segment through the cleaner; the copy replaces the segment by an
    /// atomic rename. False when nothing changed (or the segment is gone meanwhile).
    fn rewrite_segment(
        &self,
        base: i64,
        map: &crate::compaction::OffsetMap,
        tombstones_before: i64,
        place: crate::compaction::Place<'_>,
    ) -> Result<bool> {
        use crate::compaction::{clean_batch, Cleaned};
        use std::io::Write;
        let (file, size, path) = {
            let inner = self.lock();
            let Some(seg) = inner.segments.iter().find(|s| s.base_offset == base) else {
                return Ok(false);
            };
            (seg.file()?, seg.size, seg.path.clone())
        };
        let data = segment::read_batches(&file, 0, size as usize, size)?;
        let mut out: Vec<u8> = Vec::with_capacity(data.len());
        let mut changed = false;
        for one in batch::split_batches(data) {
            let h = batch::parse_header(&one)?;
            match clean_batch(&one, &h, map, tombstones_before, place)? {
                Cleaned::Same => out.extend_from_slice(&one),
                Cleaned::Gone => changed = true,
                Cleaned::Rebuilt(b) => {
                    out.extend_from_slice(&b);
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(false);
        }
        let tmp = path.with_file_name(format!("{}{CLEANED_SUFFIX}", segment::file_name(base)));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
        }
        let mut inner = self.lock();
        let Some(i) = inner.segments.iter().position(|s| s.base_offset == base) else {
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        };
        if inner.segments[i].size != size {
            // Closed segments do not grow; a changed size means something else replaced it.
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&self.dir)?.sync_all()?;
        let (seg, _) = Segment::open(&path, base, false, now_ms(), &self.files)?;
        let old = std::mem::replace(&mut inner.segments[i], seg);
        old.close();
        Ok(true)
    }
}

fn read_offset_file(dir: &Path, name: &str) -> Result<Option<i64>> {
    match fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces a small offset file atomically and durably (write, fsync, rename, fsync the dir).
fn write_offset_file(dir: &Path, name: &str, offset: i64) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(offset.to_string().as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// `(offset, timestamp)` of the first record of the batch at `pos` that satisfies `hit`
/// (`None` if the batch cannot be read or decoded, or no record does).
fn record_in_batch(
    seg: &Segment,
    pos: u64,
    h: BatchHeader,
    limit: u64,
    hit: impl Fn(&batch::Record) -> bool,
) -> Option<(i64, i64)> {
    let file = seg.file().ok()?;
    let bytes = segment::read_batches(&file, pos, h.size, limit).ok()?;
    let first = bytes.slice(..h.size.min(bytes.len()));
    batch::decode_records(&first)
        .ok()?
        .into_iter()
        .find(|r| hit(r))
        .map(|r| (r.offset, r.timestamp))
}

/// File in a partition directory holding a log start offset set by DeleteRecords.
const LOG_START_FILE: &str = "log-start-offset";

fn read_log_start(dir: &Path) -> Result<Option<i64>> {
    match fs::read_to_string(dir.join(LOG_START_FILE)) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the log start file atomically and durably (write, fsync, rename, fsync the dir).
fn write_log_start(dir: &Path, offset: i64) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(offset.to_string().as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(LOG_START_FILE))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Producers remembered per partition; past this the least recently written tenth is forgotten
/// (a forgotten producer's next batch is accepted like a new producer's, as in Kafka after
/// `producer.id.expiration.ms`).
const MAX_PRODUCERS: usize = 10_000;

fn forget_oldest_producers(producers: &mut HashMap<i64, ProducerEntry>) {
    let mut last: Vec<(i64, i64)> = producers
        .iter()
        .map(|(id, e)| (e.recent.back().map_or(-1, |b| b.last_offset), *id))
        .collect();
    last.sort_unstable();
    for (_, id) in last.iter().take(MAX_PRODUCERS / 10) {
        producers.remove(id);
    }
}

/// Checks an idempotent producer's batch. `Ok(Some(..))` = duplicate of a stored batch.
fn check_producer(
    producers: &HashMap<i64, ProducerEntry>,
    h: &BatchHeader,
) -> Result<Option<ProducerBatch>> {
    if h.producer_id < 0 || h.base_sequence < 0 {
        return Ok(None);
    }
    let Some(e) = producers.get(&h.producer_id) else {
        return Ok(None);
    };
    if h.producer_epoch < e.epoch {
        return Err(StreamError::ProducerFenced(h.producer_id));
    }
    if h.producer_epoch > e.epoch {
        if h.base_sequence != 0 {
            return Err(StreamError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected: 0,
                got: h.base_sequence,
            });
        }
        return Ok(None);
    }
    let last_seq = h.base_sequence.wrapping_add(h.last_offset_delta);
    if let Some(d) = e
        .recent
        .iter()
        .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
    {
        return Ok(Some(*d));
    }
    let expected = e
        .recent
        .back()
        .map_or(0, |b| b.last_seq.wrapping_add(1) & i32::MAX);
    if h.base_sequence != expected {
        return Err(StreamError::OutOfOrderSequence {
            producer_id: h.producer_id,
            expected,
            got: h.base_sequence,
        });
    }
    Ok(None)
}

fn note_producer(producers: &mut HashMap<i64, ProducerEntry>, h: &BatchHeader, base_offset: i64) {
    if h.producer_id < 0 || h.base_sequence < 0 {
        return;
    }
    if producers.len() >= MAX_PRODUCERS && !producers.contains_key(&h.producer_id) {
        forget_oldest_producers(producers);
    }
    let e = producers.entry(h.producer_id).or_insert(ProducerEntry {
        epoch: h.producer_epoch,
        recent: VecDeque::new(),
    });
    if h.producer_epoch != e.epoch {
        e.epoch = h.producer_epoch;
        e.recent.clear();
    }
    if e.recent.len() == PRODUCER_WINDOW {
        e.recent.pop_front();
    }
    e.recent.push_back(ProducerBatch {
        first_seq: h.base_sequence,
        last_seq: h.base_sequence.wrapping_add(h.last_offset_delta),
        base_offset,
        last_offset: base_offset + i64::from(h.last_offset_delta),
    });
}

impl Syncable for Partition {
    fn sync(&self) -> Result<()> {
        Partition::sync(self)
    }
    fn name(&self) -> (&str, u32) {
        (&self.stream, self.index)
    }
}

impl crate::log::PartitionLog for Partition {
    fn append(&self, data: &[u8], headers: &[BatchHeader]) -> Result<AppendOutcome> {
        Partition::append(self, data, headers)
    }
    fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        Partition::read(self, offset, max_bytes)
    }
    fn high_watermark(&self) -> i64 {
        Partition::high_watermark(self)
    }
    fn log_start_offset(&self) -> i64 {
        Partition::log_start_offset(self)
    }
    fn register_listener(&self, n: &Arc<Notify>) {
        Partition::register_listener(self, n)
    }
    fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        Partition::watch_high_watermark(self)
    }
    fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        Partition::offset_for_timestamp(self, ts)
    }
    fn max_timestamp(&self) -> Option<(i64, i64)> {
        Partition::max_timestamp(self)
    }
    fn size_bytes(&self) -> u64 {
        Partition::size_bytes(self)
    }
    fn set_config(&self, config: StreamConfig) {
        Partition::set_config(self, config)
    }
    fn apply_retention(&self, now_ms: i64, keep_from: Option<i64>) -> Result<usize> {
        Partition::apply_retention(self, now_ms, keep_from)
    }
    fn compact(&self, now_ms: i64, txn: Option<&dyn crate::compaction::TxnView>) -> Result<usize> {
        Partition::compact(self, now_ms, txn)
    }
    fn delete_before(&self, offset: i64) -> Result<i64> {
        Partition::delete_before(self, offset)
    }
    fn flush(&self) -> Result<()> {
        self.sync()
    }
    fn destroy(&self) -> Result<()> {
        for s in &self.lock().segments {
            s.close();
        }
        fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
    fn data_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}
