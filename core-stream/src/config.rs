//! Typed configuration of the core: durability policy, segment and retention defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every acknowledged write is fsync'd first; concurrent writers share one fsync (group commit).
    #[default]
    Always,
    /// Writes are acknowledged at once and fsync'd every `fsync_interval_ms`; a crash can lose that window.
    Interval,
    /// Never fsync explicitly; the OS writes back when it likes. For throwaway data only.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "interval" => Ok(Self::Interval),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "fsync must be always, interval or never, not {other:?}"
            )),
        }
    }
}

/// Settings of the core, filled from the gateway's config file, flags and environment.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Root of all stored data: `streams/` (segment files) and `meta.redb`.
    pub data_dir: PathBuf,
    /// Durability policy for appends.
    pub fsync: FsyncPolicy,
    /// Period of background fsync under [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
    /// Defaults for streams that are created without explicit settings.
    pub stream_defaults: StreamConfig,
    /// Largest batch (bytes) one append may carry (a Kafka produce's record set for one
    /// partition, an AMQP message, an MQTT publish): room for a 16 MiB AMQP message.
    pub max_batch_bytes: usize,
    /// How often retention is applied.
    pub retention_check_interval: Duration,
    /// Most segment files kept open at once (a bounded cache; the rest reopen on demand).
    pub max_open_files: usize,
}

impl CoreConfig {
    /// Defaults for a data directory: fsync always, one partition, 7 days retention.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(200),
            stream_defaults: StreamConfig::default(),
            max_batch_bytes: 17 * 1024 * 1024,
            retention_check_interval: Duration::from_secs(30),
            max_open_files: 4096,
        }
    }
}

/// Per-stream settings, stored in the metadata store with the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// Delete whole segments older than this (ms); -1 keeps forever.
    pub retention_ms: i64,
    /// Delete oldest segments while the partition is larger than this (bytes); -1 = unbounded.
    pub retention_bytes: i64,
    /// Roll to a new segment file past this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment file when the active one is older than this (ms).
    pub segment_ms: i64,
    /// How old records are removed: deleted by retention, and/or compacted by key.
    #[serde(default)]
    pub cleanup: Cleanup,
    /// Settings a front-end keeps with the stream, by its own names; the core does not
    /// interpret them (the Kafka front-end keeps every topic override here, e.g.
    /// `retention.ms` or `min.insync.replicas`).
    pub extra: BTreeMap<String, String>,
}

/// How a stream sheds old records (Kafka's `cleanup.policy` and the cleaner's settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cleanup {
    /// Delete whole segments past `retention_ms` / `retention_bytes` (policy `delete`).
    pub delete: bool,
    /// Keep only the latest record of each key in closed segments (policy `compact`).
    pub compact: bool,
    /// How long a tombstone (a keyed record without a value) is kept once it is the latest
    /// record of its key (ms).
    pub delete_retention_ms: i64,
    /// Records younger than this are not compacted (ms).
    pub min_compaction_lag_ms: i64,
    /// A segment holding records older than this is compacted whatever the dirty ratio (ms).
    pub max_compaction_lag_ms: i64,
    /// Compact when the share of not yet compacted bytes in closed segments reaches this
    /// (per mille; Kafka's `min.cleanable.dirty.ratio` × 1000).
    pub min_cleanable_dirty_permille: u32,
}

impl Default for Cleanup {
    fn default() -> Self {
        Self {
            delete: true,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_permille: 500,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            cleanup: Cleanup::default(),
            extra: BTreeMap::new(),
        }
    }
}
