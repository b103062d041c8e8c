//! The stream registry every front-end talks to: create, find, delete and grow streams, append
//! and read through partitions, and keep consumer-group positions in the metadata store.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::batch::{self, Record};
use crate::config::{CoreConfig, StreamConfig};
use crate::error::{Result, StreamError};
use crate::log::{AppendOutcome, LogFactory, PartitionLog};
use crate::meta::{GroupOffset, MetadataStore, RedbStore, StreamMeta};
use crate::partition::now_ms;
use crate::queue::{Queue, QueueMeta, QueueSettings};
use crate::router::{Appended, Router};
use crate::segment_logs::SegmentLogs;
use crate::stream::{pattern_matches, validate_name, Stream};

/// Metadata-store space holding queue descriptions.
const QUEUES: &str = "queue";

/// The stream core: one per broker process.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    meta: Arc<dyn MetadataStore>,
    streams: DashMap<String, Arc<Stream>>,
    /// Serialises create/delete/grow so two creators of one name don't race.
    admin: Mutex<()>,
    logs: Arc<dyn LogFactory>,
    closed: AtomicBool,
    /// Set while metadata writes fail, so the failure is logged once per episode.
    meta_fault: AtomicBool,
    retention_stop: RwLock<Option<std::sync::mpsc::Sender<()>>>,
    /// Bumped whenever a stream is created, deleted or grows, so pattern subscribers rescan.
    catalog: watch::Sender<u64>,
    /// Every subscription; matched on each append.
    router: Router,
    /// Durable queues by name.
    queues: DashMap<String, Arc<Queue>>,
    /// Striped locks keeping each partition's appends and routing in one order.
    order: Vec<Mutex<()>>,
    /// What the cleaner knows about transactions (set by the Kafka front-end).
    txn_view: RwLock<Option<Arc<dyn crate::compaction::TxnView>>>,
}

impl Core {
    /// Opens the data directory with the embedded storage (redb metadata, segment logs with
    /// group commit): recovers every stream's partitions, starts the fsync and retention threads.
    pub fn open(config: CoreConfig) -> Result<Arc<Self>> {
        std::fs::create_dir_all(config.data_dir.join("streams"))?;
        let meta: Arc<dyn MetadataStore> =
            Arc::new(RedbStore::open(&config.data_dir.join("meta.redb"))?);
        let logs: Arc<dyn LogFactory> = Arc::new(SegmentLogs::new(
            &config.data_dir,
            config.fsync,
            config.fsync_interval,
            config.max_open_files,
        ));
        Self::with_storage(config, meta, logs)
    }

    /// A core over the given storage: the seam where a distributed engine replaces the
    /// embedded metadata store and partition logs. Opens every stream the store lists.
    pub fn with_storage(
        config: CoreConfig,
        meta: Arc<dyn MetadataStore>,
        logs: Arc<dyn LogFactory>,
    ) -> Result<Arc<Self>> {
        let core = Arc::new(Self {
            config,
            meta,
            streams: DashMap::new(),
            admin: Mutex::new(()),
            logs,
            closed: AtomicBool::new(false),
            meta_fault: AtomicBool::new(false),
            retention_stop: RwLock::new(None),
            catalog: watch::channel(0).0,
            router: Router::default(),
            txn_view: RwLock::new(None),
            queues: DashMap::new(),
            order: (0..64).map(|_| Mutex::new(())).collect(),
        });
        // Opening a partition reads its directory and checks its last segment: with many
        // streams that is mostly waiting on the disk, so it is spread over a few threads.
        let metas = core.meta.streams()?;
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8);
        let per = metas.len().div_ceil(threads).max(1);
        let opened: Vec<Result<Vec<Arc<Stream>>>> = std::thread::scope(|sc| {
            let core = &core;
            let handles: Vec<_> = metas
                .chunks(per)
                .map(|chunk| sc.spawn(move || chunk.iter().map(|m| core.open_stream(m)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(StreamError::Metadata("open panicked".into())))
                })
                .collect()
        });
        for streams in opened {
            for s in streams? {
                core.streams.insert(s.name.clone(), s);
            }
        }
        core.open_queues()?;
        core.logs.recovered()?;
        info!(streams = core.streams.len(), queues = core.queues.len(),
            dir = %core.config.data_dir.display(), "stream core open");
        core.start_retention()?;
        Ok(core)
    }

    fn start_retention(self: &Arc<Self>) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        *self
            .retention_stop
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let weak = Arc::downgrade(self);
        let every = self.config.retention_check_interval;
        std::thread::Builder::new()
            .name("conflux-retention".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let Some(core) = weak.upgrade() else { return };
                    core.apply_retention();
                }
            })?;
        Ok(())
    }

    /// Applies retention to every partition now.
    /// Never deletes what a queue still references.
    pub fn apply_retention(&self) {
        let now = now_ms();
        let mut pins: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        for q in self
            .queues
            .iter()
            .map(|e| e.value().clone())
            .collect::<Vec<_>>()
        {
            for (k, o) in q.pins() {
                pins.entry(k).and_modify(|x| *x = (*x).min(o)).or_insert(o);
            }
        }
        for s in self.list_streams() {
            for (i, p) in s.partitions().iter().enumerate() {
                let keep_from = pins.get(&(Arc::from(s.name.as_str()), i as i32)).copied();
                if let Err(e) = p.apply_retention(now, keep_from) {
                    warn!(stream = %s.name, partition = i, error = %e, "retention failed");
                }
                let txn = self
                    .txn_view
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Err(e) = p.compact(now, txn.as_deref()) {
                    warn!(stream = %s.name, partition = i, error = %e, "compaction failed");
                }
            }
        }
    }

    /// Settings of the logs that hold queues (no retention: a queue cuts its own log).
    fn queue_log_config() -> StreamConfig {
        StreamConfig {
            partitions: 1,
            retention_ms: -1,
            retention_bytes: -1,
            segment_bytes: 16 * 1024 * 1024,
            ..StreamConfig::default()
        }
    }

    /// Opens every durable queue; transient ones (and logs no queue owns) are removed.
    fn open_queues(self: &Arc<Self>) -> Result<()> {
        let mut owned = std::collections::HashSet::new();
        for (name, bytes) in self.meta.records(QUEUES)? {
            let meta: QueueMeta = match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    warn!(queue = %name, error = %e, "unreadable queue record; skipped");
                    continue;
                }
            };
            if !meta.settings.durable {
                self.meta_write(self.meta.put_record(QUEUES, &name, None))?;
                continue;
            }
            owned.insert(meta.id);
            let log = self
                .logs
                .open_queue_log(meta.id, &Self::queue_log_config())?;
            let q = Queue::open(meta, log, Arc::downgrade(self))?;
            self.queues.insert(name, q);
        }
        for id in self.logs.queue_log_ids()? {
            if !owned.contains(&id) {
                self.logs.remove_queue_log(id)?;
            }
        }
        Ok(())
    }

    /// The named queue, created with `settings` if it does not exist. Returns it and whether
    /// it was created (an existing queue keeps its settings; the caller compares them).
    pub fn declare_queue(
        self: &Arc<Self>,
        name: &str,
        settings: QueueSettings,
        attachment: Vec<u8>,
    ) -> Result<(Arc<Queue>, bool)> {
        self.check_open()?;
        let _g = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = self.queues.get(name) {
            return Ok((q.value().clone(), false));
        }
        let id = self.meta_write(self.meta.next_id("queue"))? as u64;
        let meta = QueueMeta {
            name: name.to_string(),
            id,
            settings,
            attachment,
        };
        self.logs.remove_queue_log(id)?;
        let log = self.logs.open_queue_log(id, &Self::queue_log_config())?;
        let bytes = serde_json::to_vec(&meta).map_err(|e| StreamError::Metadata(e.to_string()))?;
        self.meta_write(self.meta.put_record(QUEUES, name, Some(&bytes)))?;
        let q = Queue::open(meta, log, Arc::downgrade(self))?;
        self.queues.insert(name.to_string(), q.clone());
        Ok((q, true))
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.get(name).map(|q| q.value().clone())
    }

    /// Every queue, in name order.
    pub fn list_queues(&self) -> Vec<Arc<Queue>> {
        let mut v: Vec<Arc<Queue>> = self.queues.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Deletes a queue and its log. Consumers still holding it see it empty.
    pub fn delete_queue(&self, name: &str) -> Result<()> {
        let _g = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let (_, q) = self
            .queues
            .remove(name)
            .ok_or_else(|| StreamError::UnknownStream(name.to_string()))?;
        self.meta_write(self.meta.put_record(QUEUES, name, None))?;
        if let Err(e) = q.destroy() {
            warn!(queue = name, error = %e, "could not remove the queue log");
        }
        Ok(())
    }

    /// Stores a front-end's record (session, retained message, exchange) durably under
    /// `(space, key)`; `None` deletes it.
    pub fn put_record(&self, space: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        self.check_open()?;
        self.meta_write(self.meta.put_record(space, key, value))
    }

    /// Several record changes in one atomic, durable write.
    pub fn put_records(&self, changes: &[(&str, &str, Option<&[u8]>)]) -> Result<()> {
        self.check_open()?;
        self.meta_write(self.meta.put_records(changes))
    }

    /// Every record of a space, in key order.
    pub fn records(&self, space: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.meta.records(space)
    }

    /// How many times streams were created, deleted or grown since start.
    pub fn catalog_version(&self) -> u64 {
        *self.catalog.borrow()
    }

    /// The settings the core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The directory holding the streams' data (Kafka's one "log dir").
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.config.data_dir.join("streams")
    }

    /// `(total, available)` bytes of the file system holding the data directory.
    pub fn disk_space(&self) -> Result<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.config.data_dir.as_os_str().as_bytes())
            .map_err(|_| StreamError::Io(std::io::Error::other("data dir path has a NUL byte")))?;
        // SAFETY: statvfs only writes the struct we pass; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let frsize = st.f_frsize as u64;
        Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
    }

    fn open_partition(
        &self,
        name: &str,
        index: u32,
        cfg: &StreamConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        self.logs.open(name, index, cfg)
    }

    fn open_stream(&self, m: &StreamMeta) -> Result<Arc<Stream>> {
        let partitions = (0..m.config.partitions)
            .map(|i| self.open_partition(&m.name, i, &m.config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Stream {
            name: m.name.clone(),
            id: m.id,
            config: RwLock::new(m.config.clone()),
            partitions: RwLock::new(partitions),
        }))
    }

    /// A stream by name.
    pub fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.get(name).map(|s| s.value().clone())
    }

    /// Every stream, in name order.
    pub fn list_streams(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<Arc<Stream>> = self.streams.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Streams whose names match a `*`/`#` pattern (see [`pattern_matches`]).
    pub fn streams_matching(&self, pattern: &str) -> Vec<Arc<Stream>> {
        self.list_streams()
            .into_iter()
            .filter(|s| pattern_matches(pattern, &s.name))
            .collect()
    }

    /// Follows the streams matching a `*`/`#` pattern, including streams created later:
    /// the way MQTT subscriptions and AMQP bindings find their streams.
    pub fn subscribe(self: &Arc<Self>, pattern: &str) -> PatternSubscription {
        PatternSubscription {
            core: self.clone(),
            pattern: pattern.to_string(),
            catalog: self.catalog.subscribe(),
        }
    }

    /// The one gate every write goes through, whichever protocol sent it: refuses writes
    /// after shutdown and batches over `max_batch_bytes`, validates every batch (CRC-32C,
    /// sizes, counts; nothing trusted) and appends them to one partition. The outcome's ticket
    /// resolves once the data is durable.
    ///
    /// The router then matches the new records against every subscription (MQTT filters,
    /// AMQP bindings) and hands them to the matching sinks, in the partition's order: appends
    /// to one partition and their routing happen under one lock, so every subscriber sees a
    /// partition's records in offset order.
    pub fn append(&self, stream: &Stream, partition: i32, data: &[u8]) -> Result<AppendOutcome> {
        self.append_from(stream, partition, data, 0)
    }

    /// [`Core::append`] for a writer that subscribers may want to recognise: `origin` (a
    /// connection's id, 0 for none) travels with the routed records, so an MQTT no-local
    /// subscription can skip its own connection's messages.
    pub fn append_from(
        &self,
        stream: &Stream,
        partition: i32,
        data: &[u8],
        origin: u64,
    ) -> Result<AppendOutcome> {
        self.check_open()?;
        if data.len() > self.config.max_batch_bytes {
            return Err(StreamError::MessageTooLarge(data.len()));
        }
        let headers = batch::validate_all(data)?;
        let log = stream.partition(partition)?;
        if self.router.is_empty() {
            return log.append(data, &headers);
        }
        let _order = self.order_lock(stream, partition);
        let mut out = log.append(data, &headers)?;
        if !out.duplicate {
            let routed = self.router.route(Appended {
                stream: &stream.name,
                partition,
                log: &log,
                data,
                headers: &headers,
                base_offset: out.base_offset,
                origin,
                committed: false,
            });
            for t in routed.tickets {
                out.durable.join(t);
            }
            out.refused = routed.refused;
            out.routed = routed.routed;
        }
        Ok(out)
    }

    /// Routes the records of a committed transaction to subscribers and queues: the
    /// transactional batches of `producer_id` in `[from, to)` of one partition (they were
    /// skipped when appended). Returns the durability tickets of the queue entries made.
    pub fn route_committed(
        &self,
        stream: &str,
        partition: i32,
        producer_id: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::log::DurableTicket>> {
        let mut tickets = Vec::new();
        if self.router.is_empty() {
            return Ok(tickets);
        }
        let Some(s) = self.stream(stream) else {
            return Ok(tickets);
        };
        let log = s.partition(partition)?;
        let mut at = from.max(log.log_start_offset());
        while at < to {
            let r = log.read(at, 1024 * 1024)?;
            if r.data.is_empty() {
                break;
            }
            let mut progressed = false;
            for one in batch::split_batches(r.data) {
                let h = batch::parse_header(&one)?;
                if h.base_offset >= to {
                    at = to;
                    break;
                }
                at = h.last_offset() + 1;
                progressed = true;
                if h.producer_id != producer_id || !h.is_transactional() || h.is_control() {
                    continue;
                }
                let _order = self.order_lock(&s, partition);
                let out = self.router.route(Appended {
                    stream: &s.name,
                    partition,
                    log: &log,
                    data: &one,
                    headers: &[h],
                    base_offset: h.base_offset,
                    origin: 0,
                    committed: true,
                });
                tickets.extend(out.tickets);
            }
            if !progressed {
                break;
            }
        }
        Ok(tickets)
    }

    /// The lock that keeps one partition's appends and their routing in order (striped: a
    /// few partitions share each lock).
    fn order_lock(&self, stream: &Stream, partition: i32) -> std::sync::MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (stream.id, partition).hash(&mut h);
        self.order[(h.finish() as usize) % self.order.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the cleaner about transactions (the Kafka front-end's coordinator): aborted
    /// records are removed, nothing past the last stable offset is compacted.
    pub fn set_txn_view(&self, view: Arc<dyn crate::compaction::TxnView>) {
        *self.txn_view.write().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    /// The subscription router (MQTT subscriptions, AMQP bindings).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Appends records to a named stream (created with defaults if missing), for writers that
    /// are not Kafka clients. The partition is chosen from the key exactly as Kafka clients
    /// choose it (murmur2), so one key lands on one partition whichever protocol wrote it;
    /// records without a key go to `fallback_partition` modulo the partition count.
    /// `origin` is the writer's connection id (see [`Core::append_from`]).
    pub fn append_records(
        &self,
        stream: &str,
        key: Option<&[u8]>,
        fallback_partition: u32,
        records: &[Record],
        origin: u64,
    ) -> Result<AppendOutcome> {
        if records.is_empty() {
            return Err(StreamError::CorruptBatch("empty record set"));
        }
        let s = self.get_or_create_stream(stream)?;
        let n = s.partition_count() as u32;
        let p = match key {
            Some(k) => partition_for_key(k, n),
            None => fallback_partition % n,
        };
        let data: Bytes = batch::build_batch(records, None);
        self.append_from(&s, p as i32, &data, origin)
    }

    /// Default settings for new streams.
    pub fn stream_defaults(&self) -> StreamConfig {
        self.config.stream_defaults.clone()
    }

    /// Creates a stream. Errors with [`StreamError::StreamExists`] if the name is taken.
    pub fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<Stream>> {
        let _g = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        self.check_new_stream(name, &config)?;
        let mut h = DefaultHasher::new();
        (name, now_ms(), std::process::id()).hash(&mut h);
        let a = h.finish();
        name.len().hash(&mut h);
        let b = h.finish();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&a.to_be_bytes());
        id[8..].copy_from_slice(&b.to_be_bytes());
        let meta = StreamMeta {
            name: name.to_string(),
            config,
            id,
        };
        // Leftover directories of a deleted stream of the same name must not resurrect old data.
        for i in 0..meta.config.partitions {
            self.logs.remove(name, i)?;
        }
        let s = self.open_stream(&meta)?;
        self.meta_write(self.meta.put_stream(&meta))?;
        self.streams.insert(name.to_string(), s.clone());
        self.catalog.send_modify(|v| *v += 1);
        info!(
            stream = name,
            partitions = meta.config.partitions,
            "stream created"
        );
        Ok(s)
    }

    /// Checks that a stream could be created now with this name and these settings (what
    /// [`Core::create_stream`] checks; also used to answer validate-only requests).
    pub fn check_new_stream(&self, name: &str, config: &StreamConfig) -> Result<()> {
        validate_name(name)?;
        if config.partitions == 0 || config.partitions > 10_000 {
            return Err(StreamError::InvalidPartitions(format!(
                "{} (must be 1..=10000)",
                config.partitions
            )));
        }
        self.check_open()?;
        if self.streams.contains_key(name) {
            return Err(StreamError::StreamExists(name.to_string()));
        }
        Ok(())
    }

    /// The named stream, created with default settings if it does not exist.
    pub fn get_or_create_stream(&self, name: &str) -> Result<Arc<Stream>> {
        if let Some(s) = self.stream(name) {
            return Ok(s);
        }
        match self.create_stream(name, self.stream_defaults()) {
            Err(StreamError::StreamExists(_)) => self
                .stream(name)
                .ok_or_else(|| StreamError::UnknownStream(name.into())),
            other => other,
        }
    }

    /// Deletes a stream, its data and the group positions on it.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        let _g = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let (_, s) = self
            .streams
            .remove(name)
            .ok_or_else(|| StreamError::UnknownStream(name.into()))?;
        self.meta_write(self.meta.delete_stream(name))?;
        for p in s.partitions() {
            if let Err(e) = p.destroy() {
                warn!(stream = name, error = %e, "could not remove partition directory");
            }
        }
        self.catalog.send_modify(|v| *v += 1);
        info!(stream = name, "stream deleted");
        Ok(())
    }

    /// Grows a stream to `count` partitions (never shrinks).
    pub fn set_partition_count(&self, name: &str, count: u32) -> Result<()> {
        let _g = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let s = self
            .stream(name)
            .ok_or_else(|| StreamError::UnknownStream(name.into()))?;
        let mut cfg = s.config();
        let have = cfg.partitions;
        if count <= have || count > 10_000 {
            return Err(StreamError::InvalidPartitions(format!(
                "{name} has {have} partitions; asked for {count}"
            )));
        }
        let new = (have..count)
            .map(|i| self.open_partition(name, i, &cfg))
            .collect::<Result<Vec<_>>>()?;
        cfg.partitions = count;
        self.meta_write(self.meta.put_stream(&StreamMeta {
            name: name.into(),
            config: cfg.clone(),
            id: s.id,
        }))?;
        s.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(new);
        *s.config.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        self.catalog.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Replaces a stream's settings (not its partition count).
    pub fn set_stream_config(&self, name: &str, cfg: StreamConfig) -> Result<()> {
        self.update_stream_config(name, |c| {
            *c = cfg;
            Ok(())
        })
    }

    /// Changes a stream's settings with `change` applied to the current ones, atomically with
    /// respect to other admin changes (read-modify-write under the admin lock). The partition
    /// count is not changed here (see [`Core::set_partition_count`]).
    pub fn update_stream_config(
        &self,
        name: &str,
        change: impl FnOnce(&mut StreamConfig) -> Result<()>,
    ) -> Result<()> {
        let _g = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let s = self
            .stream(name)
            .ok_or_else(|| StreamError::UnknownStream(name.into()))?;
        let mut cfg = s.config();
        change(&mut cfg)?;
        cfg.partitions = s.config().partitions;
        self.meta_write(self.meta.put_stream(&StreamMeta {
            name: name.into(),
            config: cfg.clone(),
            id: s.id,
        }))?;
        for p in s.partitions() {
            p.set_config(cfg.clone());
        }
        *s.config.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        Ok(())
    }

    /// Stores a consumer group's positions durably.
    pub fn commit_offsets(&self, group: &str, offsets: &[GroupOffset]) -> Result<()> {
        self.check_open()?;
        self.meta_write(self.meta.commit_offsets(group, offsets))
    }

    /// A group's committed positions.
    pub fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        self.meta.group_offsets(group)
    }

    /// Forgets a group's committed positions.
    pub fn delete_group_offsets(&self, group: &str) -> Result<()> {
        self.meta_write(self.meta.delete_group(group))
    }

    /// Groups that have committed positions.
    pub fn groups_with_offsets(&self) -> Result<Vec<String>> {
        self.meta.groups()
    }

    /// A new idempotent-producer id.
    pub fn next_producer_id(&self) -> Result<i64> {
        self.meta_write(self.meta.next_producer_id())
    }

    /// Logs a failing metadata write once per episode (disk full, I/O error), with the errno,
    /// and once more when writes succeed again; passes the result through.
    fn meta_write<T>(&self, r: Result<T>) -> Result<T> {
        match &r {
            Err(StreamError::Io(e)) if !self.meta_fault.swap(true, Ordering::AcqRel) => {
                error!(errno = e.raw_os_error().unwrap_or(0), error = %e,
                    "metadata store writes fail (topic changes, offset commits); retrying on each request");
            }
            Ok(_)
                if self.meta_fault.load(Ordering::Relaxed)
                    && self.meta_fault.swap(false, Ordering::AcqRel) =>
            {
                info!("metadata store writes succeed again");
            }
            _ => {}
        }
        r
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(StreamError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Flushes everything to disk and stops background threads. Appends after this fail.
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(tx) = self
            .retention_stop
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            drop(tx);
        }
        for s in self.list_streams() {
            for (i, p) in s.partitions().iter().enumerate() {
                if let Err(e) = p.flush() {
                    warn!(stream = %s.name, partition = i, error = %e, "final fsync failed");
                }
            }
        }
        for q in self.list_queues() {
            if let Err(e) = q.flush() {
                warn!(queue = %q.name(), error = %e, "final fsync failed");
            }
        }
        self.logs.shutdown();
        info!("stream core closed");
    }
}

/// A live view of the streams matching a pattern (see [`Core::subscribe`]).
#[derive(Debug)]
pub struct PatternSubscription {
    core: Arc<Core>,
    pattern: String,
    catalog: watch::Receiver<u64>,
}

impl PatternSubscription {
    /// The pattern followed.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Streams matching now.
    pub fn matching(&self) -> Vec<Arc<Stream>> {
        self.core.streams_matching(&self.pattern)
    }

    /// Resolves when streams were created, deleted or grown since the last call; then call
    /// [`PatternSubscription::matching`] again. Errors only when the core is gone.
    pub async fn changed(&mut self) -> Result<()> {
        self.catalog
            .changed()
            .await
            .map_err(|_| StreamError::ShuttingDown)
    }
}

/// Kafka's default partitioner: `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// MurmurHash2 (32-bit, seed 0x9747b28c) as Kafka's Java client, kafka-python and
/// librdkafka's `murmur2` partitioner compute it.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}
