//! A bounded cache of open segment files.
//!
//! Every partition has at least one segment, and small `segment.bytes` or many streams (one
//! MQTT topic per stream by default) make many more: keeping each file open would run into the
//! process's open-file limit. Segments therefore ask this cache for their file when they need
//! it; at most `capacity` files stay open, the least recently used are closed first. A handle
//! given out stays valid while its holder keeps it (an `Arc<File>`), so a reader or the fsync
//! thread never loses a file under it; eviction only drops the cache's own reference.

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Identifies one segment file in the cache for its lifetime.
pub type FileId = u64;

/// Open files shared by every partition of a core.
#[derive(Debug)]
pub struct FileCache {
    open: Mutex<LruCache<FileId, Arc<File>>>,
    next_id: AtomicU64,
}

impl FileCache {
    /// A cache keeping at most `capacity` files open (at least 16).
    pub fn new(capacity: usize) -> Arc<Self> {
        let cap = NonZeroUsize::new(capacity.max(16)).expect("non-zero");
        Arc::new(Self {
            open: Mutex::new(LruCache::new(cap)),
            next_id: AtomicU64::new(1),
        })
    }

    /// A fresh id for a segment file.
    pub fn new_id(&self) -> FileId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The open file `id` (at `path`), opening it for read and write if it is not open.
    pub fn get(&self, id: FileId, path: &Path) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.lock().get(&id) {
            return Ok(f.clone());
        }
        // Open outside the lock: another thread may race us, and both handles are valid.
        let f = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
        self.lock().put(id, f.clone());
        Ok(f)
    }

    /// Registers a file that was just opened or created, so it need not be opened again.
    pub fn insert(&self, id: FileId, file: File) -> Arc<File> {
        let f = Arc::new(file);
        self.lock().put(id, f.clone());
        f
    }

    /// Closes the cache's handle of `id` (the file was deleted or its partition closed).
    pub fn forget(&self, id: FileId) {
        self.lock().pop(&id);
    }

    /// Files held open by the cache now.
    pub fn open_files(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<FileId, Arc<File>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_open_and_reopens_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(16);
        let ids: Vec<(FileId, std::path::PathBuf)> = (0..40)
            .map(|i| {
                let p = dir.path().join(format!("{i}.log"));
                std::fs::write(&p, format!("file {i}")).unwrap();
                (cache.new_id(), p)
            })
            .collect();
        for (id, p) in &ids {
            cache.get(*id, p).unwrap();
        }
        assert_eq!(cache.open_files(), 16);
        let held = cache.get(ids[0].0, &ids[0].1).unwrap();
        for (id, p) in &ids[1..] {
            cache.get(*id, p).unwrap();
        }
        // Evicted from the cache, but the holder's handle still reads.
        let mut buf = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&*held, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"file 0");
        cache.forget(ids[39].0);
        assert_eq!(cache.open_files(), 15);
    }
}
