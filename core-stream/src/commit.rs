//! Group commit: one thread fsyncs every partition that has unsynced appends, so all writers
//! that arrived while the previous fsync ran share the next one.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::error;

use crate::error::Result;

/// Something with written data to make durable: a partition log.
pub trait Syncable: Send + Sync {
    /// Fsyncs what is written and publishes it to readers.
    fn sync(&self) -> Result<()>;
    /// Stream name and partition index, for logs.
    fn name(&self) -> (&str, u32);
}

#[derive(Default)]
struct Queue {
    urgent: Vec<Arc<dyn Syncable>>,
    lazy: Vec<Arc<dyn Syncable>>,
    stop: bool,
}

/// The fsync thread and its queue of partitions with unsynced data.
pub struct Syncer {
    queue: Mutex<Queue>,
    wake: Condvar,
    interval: Duration,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").finish_non_exhaustive()
    }
}

/// Most threads fsyncing at once in one round.
const SYNC_THREADS: usize = 8;

/// Fsyncs every partition of a round. Several at once: a journaling file system (ext4's jbd2,
/// xfs) folds concurrent fsyncs into one journal commit, where one after the other each
/// pays its own, so a round over many streams (MQTT makes one per topic) costs about one.
fn sync_all(batch: &[Arc<dyn Syncable>]) {
    let one = |p: &Arc<dyn Syncable>| {
        if let Err(e) = p.sync() {
            // The partition refuses further writes and fails its waiting writers.
            let (stream, partition) = p.name();
            let errno = match &e {
                crate::error::StreamError::Io(io) => io.raw_os_error().unwrap_or(0),
                _ => 0,
            };
            error!(stream, partition, errno, error = %e, "fsync failed; the partition accepts no more writes");
        }
    };
    if batch.len() <= 1 {
        batch.iter().for_each(one);
        return;
    }
    // Helpers are started once and kept (a round every millisecond must not create threads).
    let pool = helpers();
    let per = batch.len().div_ceil(SYNC_THREADS);
    let mut chunks = batch.chunks(per);
    let mine = chunks.next().unwrap_or(&[]);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut sent = 0;
    for chunk in chunks {
        let job: Job = (chunk.to_vec(), done_tx.clone());
        match pool.send(job) {
            Ok(()) => sent += 1,
            Err(std::sync::mpsc::SendError((chunk, _))) => chunk.iter().for_each(one),
        }
    }
    mine.iter().for_each(one);
    for _ in 0..sent {
        let _ = done_rx.recv();
    }
}

/// A share of a round's fsyncs for a helper thread, and where to say it is done.
type Job = (Vec<Arc<dyn Syncable>>, std::sync::mpsc::Sender<()>);

/// The fsync helper threads (started on first use): they take jobs from one shared queue.
fn helpers() -> &'static std::sync::mpsc::SyncSender<Job> {
    static POOL: std::sync::OnceLock<std::sync::mpsc::SyncSender<Job>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(SYNC_THREADS * 2);
        let rx = Arc::new(Mutex::new(rx));
        for i in 1..SYNC_THREADS {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("conflux-fsync-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((parts, done)) = job else { return };
                    for p in &parts {
                        if let Err(e) = p.sync() {
                            let (stream, partition) = p.name();
                            error!(stream, partition, error = %e, "fsync failed; the partition accepts no more writes");
                        }
                    }
                    let _ = done.send(());
                });
        }
        tx
    })
}

impl Syncer {
    /// Starts the fsync thread. `interval` paces syncs of partitions queued with [`Syncer::enqueue_lazy`].
    pub fn start(interval: Duration) -> Arc<Self> {
        let s = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            interval,
            thread: Mutex::new(None),
        });
        let s2 = s.clone();
        let h = std::thread::Builder::new()
            .name("conflux-fsync".into())
            .spawn(move || s2.run())
            .expect("spawn fsync thread");
        *s.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        s
    }

    /// Queues a partition whose writers are waiting for durability: synced as soon as possible.
    pub fn enqueue(&self, p: Arc<dyn Syncable>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.stop {
            // After shutdown nobody else will sync: do it here so no writer waits forever.
            drop(q);
            if let Err(e) = p.sync() {
                let (stream, partition) = p.name();
                error!(stream, partition, error = %e, "fsync failed");
            }
            return;
        }
        q.urgent.push(p);
        self.wake.notify_one();
    }

    /// Queues a partition for the next interval sync (nobody waits on it).
    pub fn enqueue_lazy(&self, p: Arc<dyn Syncable>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.lazy.push(p);
    }

    fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if q.urgent.is_empty() && !q.stop {
                let (g, _) = self
                    .wake
                    .wait_timeout(q, self.interval)
                    .unwrap_or_else(|e| e.into_inner());
                q = g;
            }
            let mut batch = std::mem::take(&mut q.urgent);
            batch.append(&mut q.lazy);
            let stop = q.stop;
            drop(q);
            sync_all(&batch);
            q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if stop && q.urgent.is_empty() && q.lazy.is_empty() {
                return;
            }
        }
    }

    /// Syncs everything still queued and stops the thread.
    pub fn shutdown(&self) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.stop = true;
            self.wake.notify_one();
        }
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}
