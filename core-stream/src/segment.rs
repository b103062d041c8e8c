//! One segment file of a partition log, with its sparse offset and time indexes.
//!
//! A segment is a file of concatenated v2 record batches named after the offset of its first
//! batch (`00000000000000000042.log`). The indexes are kept in memory and rebuilt from the batch
//! headers when the segment is opened; opening the active segment also verifies every batch's
//! CRC and cuts off a torn or corrupt tail.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::Result;
use crate::file_cache::{FileCache, FileId};

/// Bytes of log between two entries of the sparse offset index.
const INDEX_INTERVAL_BYTES: u64 = 4096;
/// Read-ahead used while scanning batch headers.
const SCAN_CHUNK: usize = 256 * 1024;

/// File name of the segment starting at `base_offset`.
pub fn file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// Sparse map from offsets to file positions: one entry every [`INDEX_INTERVAL_BYTES`].
#[derive(Debug, Default)]
pub struct OffsetIndex {
    entries: Vec<(i64, u64)>,
}

impl OffsetIndex {
    fn push(&mut self, offset: i64, pos: u64) {
        self.entries.push((offset, pos));
    }

    /// Position of the last indexed batch starting at or before `offset` (0 if none).
    pub fn floor(&self, offset: i64) -> (i64, u64) {
        let i = self.entries.partition_point(|(o, _)| *o <= offset);
        if i == 0 {
            (i64::MIN, 0)
        } else {
            self.entries[i - 1]
        }
    }
}

/// Sparse map from the running maximum timestamp to the batch where it was reached.
#[derive(Debug, Default)]
pub struct TimeIndex {
    entries: Vec<(i64, i64)>,
}

impl TimeIndex {
    fn push(&mut self, max_ts: i64, offset: i64) {
        if self.entries.last().is_none_or(|(t, _)| max_ts > *t) {
            self.entries.push((max_ts, offset));
        }
    }

    /// Offset from which to scan for the first batch with a timestamp >= `ts`.
    pub fn scan_start(&self, ts: i64) -> Option<i64> {
        let i = self.entries.partition_point(|(t, _)| *t < ts);
        i.checked_sub(1).map(|j| self.entries[j].1)
    }
}

/// One segment file and what is known about its contents.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first batch (also the file name).
    pub base_offset: i64,
    /// The file's id in the open-file cache.
    id: FileId,
    cache: Arc<FileCache>,
    /// Path of the `.log` file.
    pub path: PathBuf,
    /// Bytes of valid batches in the file.
    pub size: u64,
    /// Offset after the last batch.
    pub next_offset: i64,
    /// Largest record timestamp seen, or -1.
    pub max_timestamp: i64,
    /// Last offset of the batch holding `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// Wall-clock ms of the first append into this segment (for time-based roll).
    pub created_ms: i64,
    /// Sparse offset index.
    pub offset_index: OffsetIndex,
    /// Sparse time index.
    pub time_index: TimeIndex,
    bytes_since_index: u64,
}

/// What opening a segment found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Bytes cut off the end because the tail was torn or corrupt.
    pub truncated_bytes: u64,
    /// Headers of every batch, in order (used to rebuild producer state).
    pub headers: Vec<BatchHeader>,
}

impl Segment {
    /// Creates an empty segment file (and fsyncs the directory so the file survives a crash).
    pub fn create(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        cache: &Arc<FileCache>,
    ) -> Result<Self> {
        let path = dir.join(file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        File::open(dir)?.sync_all()?;
        let seg = Self::empty(base_offset, path, now_ms, cache);
        cache.insert(seg.id, file);
        Ok(seg)
    }

    fn empty(base_offset: i64, path: PathBuf, now_ms: i64, cache: &Arc<FileCache>) -> Self {
        Self {
            base_offset,
            id: cache.new_id(),
            cache: cache.clone(),
            path,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: INDEX_INTERVAL_BYTES,
        }
    }

    /// Opens an existing segment, rebuilding its indexes. With `verify`, every batch's CRC is
    /// checked and the file is truncated at the first batch that is torn, corrupt or out of order.
    pub fn open(
        path: &Path,
        base_offset: i64,
        verify: bool,
        now_ms: i64,
        cache: &Arc<FileCache>,
    ) -> Result<(Self, Recovery)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let file_len = file.metadata()?.len();
        let mut seg = Self::empty(base_offset, path.to_path_buf(), now_ms, cache);
        let mut rec = Recovery::default();
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut buf_start = 0u64;
        loop {
            // Ensure the header (and, when verifying, the whole batch) is in the window.
            let need =
                |from: u64, len: usize, buf: &mut Vec<u8>, buf_start: &mut u64| -> Result<bool> {
                    if from + len as u64 > file_len {
                        return Ok(false);
                    }
                    let have_end = *buf_start + buf.len() as u64;
                    if from < *buf_start || from + len as u64 > have_end {
                        // Verifying reads everything anyway: read ahead. Otherwise read just the header.
                        let ahead = if verify { SCAN_CHUNK } else { HEADER_LEN };
                        let want = len.max(ahead).min((file_len - from) as usize);
                        buf.resize(want, 0);
                        file.read_exact_at(buf, from)?;
                        *buf_start = from;
                    }
                    Ok(true)
                };
            if !need(pos, HEADER_LEN, &mut buf, &mut buf_start)? {
                break;
            }
            let at = (pos - buf_start) as usize;
            let header = match batch::parse_header(&buf[at..]) {
                Ok(h) => h,
                Err(_) => break,
            };
            if header.base_offset < seg.next_offset || pos + header.size as u64 > file_len {
                break;
            }
            if verify {
                if !need(pos, header.size, &mut buf, &mut buf_start)? {
                    break;
                }
                let at = (pos - buf_start) as usize;
                if batch::validate_stored(&buf[at..at + header.size]).is_err() {
                    break;
                }
            }
            seg.note_batch(&header, pos);
            rec.headers.push(header);
            pos += header.size as u64;
        }
        if pos < file_len {
            rec.truncated_bytes = file_len - pos;
            file.set_len(pos)?;
            file.sync_all()?;
        }
        // Data may be in the page cache only (written, never acknowledged, then the process
        // died): the log factory makes everything it opened durable in one go before the core
        // serves anything (`LogFactory::recovered`).
        cache.insert(seg.id, file);
        Ok((seg, rec))
    }

    /// The segment's open file (reopened through the cache if it was closed).
    pub fn file(&self) -> std::io::Result<Arc<File>> {
        self.cache.get(self.id, &self.path)
    }

    /// Deletes the file and closes it.
    pub fn delete(&self) -> std::io::Result<()> {
        self.cache.forget(self.id);
        std::fs::remove_file(&self.path)
    }

    /// Closes the file (its partition is going away) without deleting it.
    pub fn close(&self) {
        self.cache.forget(self.id);
    }

    /// Records a batch that now sits at `pos` in the indexes and counters.
    fn note_batch(&mut self, h: &BatchHeader, pos: u64) {
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        // Both indexes are sparse: one entry per INDEX_INTERVAL_BYTES. A time entry holds the
        // running maximum timestamp up to and including its batch, so every batch before the
        // entry is older than it, and a lookup scans forward from the last smaller entry.
        if self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            self.offset_index.push(h.base_offset, pos);
            self.time_index.push(self.max_timestamp, h.base_offset);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size as u64;
        self.size = pos + h.size as u64;
        self.next_offset = h.last_offset() + 1;
    }

    /// Writes already-offset-assigned batch bytes at the end of the file (page cache; not
    /// synced). Returns the handle written through, which the caller fsyncs later.
    pub fn append(&mut self, bytes: &[u8], headers: &[BatchHeader]) -> Result<Arc<File>> {
        let file = self.file()?;
        if let Err(e) = file.write_all_at(bytes, self.size) {
            // A partial write (disk full) leaves bytes after the last whole batch: cut them off,
            // so only whole batches ever follow (best effort; the next write overwrites them).
            let _ = file.set_len(self.size);
            return Err(e.into());
        }
        let mut pos = self.size;
        for h in headers {
            self.note_batch(h, pos);
            pos += h.size as u64;
        }
        Ok(file)
    }

    /// File position of the batch that contains `offset`, scanning headers from the sparse index
    /// entry below it, not past `limit` bytes. `None` if no batch up to `limit` contains it.
    pub fn position_of(&self, offset: i64, limit: u64) -> Result<Option<(u64, BatchHeader)>> {
        let (_, start) = self.offset_index.floor(offset);
        scan_from(&*self.file()?, start, limit, |h| h.last_offset() >= offset)
    }

    /// First batch (from the time index hint) whose max timestamp is >= `ts`, not past `limit`.
    pub fn batch_for_timestamp(&self, ts: i64, limit: u64) -> Result<Option<(u64, BatchHeader)>> {
        let start = match self.time_index.scan_start(ts) {
            Some(off) => self.offset_index.floor(off).1,
            None => 0,
        };
        scan_from(&*self.file()?, start, limit, |h| h.max_timestamp >= ts)
    }
}

/// Scans batch headers from `pos` up to `limit` and returns the first that satisfies `hit`.
fn scan_from(
    file: &File,
    mut pos: u64,
    limit: u64,
    hit: impl Fn(&BatchHeader) -> bool,
) -> Result<Option<(u64, BatchHeader)>> {
    let mut head = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= limit {
        file.read_exact_at(&mut head, pos)?;
        let h = batch::parse_header(&head)?;
        if hit(&h) {
            return Ok(Some((pos, h)));
        }
        pos += h.size as u64;
    }
    Ok(None)
}

/// Reads whole batches from `pos`: at most `max_bytes`, but always the first batch whole, and
/// never past `limit`. Returns the bytes (cut at the last complete batch).
pub fn read_batches(file: &File, pos: u64, max_bytes: usize, limit: u64) -> Result<Bytes> {
    if pos >= limit {
        return Ok(Bytes::new());
    }
    let mut head = [0u8; batch::LOG_OVERHEAD];
    file.read_exact_at(&mut head, pos)?;
    let (_, first) = batch::peek_frame(&head).unwrap_or((0, batch::LOG_OVERHEAD));
    let want = (max_bytes.max(first) as u64).min(limit - pos) as usize;
    let mut buf = BytesMut::zeroed(want);
    file.read_exact_at(&mut buf, pos)?;
    let mut end = 0;
    while let Some((_, size)) = batch::peek_frame(&buf[end..]) {
        if end + size > buf.len() {
            break;
        }
        end += size;
    }
    buf.truncate(end);
    Ok(buf.freeze())
}
