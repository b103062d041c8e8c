//! The embedded storage: segment files under `<data dir>/streams/<stream>-<partition>/`, made
//! durable by one group-commit thread, with a bounded cache of open files.

use std::path::PathBuf;
use std::sync::Arc;

use crate::commit::Syncer;
use crate::config::{FsyncPolicy, StreamConfig};
use crate::error::Result;
use crate::file_cache::FileCache;
use crate::log::{LogFactory, PartitionLog};
use crate::partition::Partition;

/// The embedded default: segment files under `<data dir>/streams/<stream>-<partition>/`
/// (queue logs under `<data dir>/queues/<id>/`), made durable by one group-commit thread.
#[derive(Debug)]
pub struct SegmentLogs {
    root: PathBuf,
    queues: PathBuf,
    fsync: FsyncPolicy,
    syncer: Arc<Syncer>,
    files: Arc<FileCache>,
}

impl SegmentLogs {
    /// Logs under `data_dir` with the given durability policy, keeping at most
    /// `max_open_files` segment files open; starts the fsync thread.
    pub fn new(
        data_dir: &std::path::Path,
        fsync: FsyncPolicy,
        fsync_interval: std::time::Duration,
        max_open_files: usize,
    ) -> Self {
        Self {
            root: data_dir.join("streams"),
            queues: data_dir.join("queues"),
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

    fn open_queue_log(&self, id: u64, config: &StreamConfig) -> Result<Arc<dyn PartitionLog>> {
        let p = Partition::open(
            &format!("queue-{id}"),
            0,
            self.queues.join(id.to_string()),
            config.clone(),
            self.fsync,
            self.syncer.clone(),
            self.files.clone(),
        )?;
        Ok(p)
    }

    fn queue_log_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&self.queues) {
            for e in dir.flatten() {
                if let Some(id) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    fn remove_queue_log(&self, id: u64) -> Result<()> {
        let d = self.queues.join(id.to_string());
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        Ok(())
    }

    fn recovered(&self) -> Result<()> {
        // One syncfs for the whole file system instead of one fsync per segment file: with
        // many streams that is most of the restart time. (Linux reports write-back errors
        // through syncfs since 5.8.)
        let dir = std::fs::File::open(self.root.parent().unwrap_or(&self.root))?;
        // SAFETY: syncfs only reads the descriptor, which stays open for the call.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    fn shutdown(&self) {
        self.syncer.shutdown();
    }
}
