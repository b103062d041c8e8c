//! Typed configuration of the core: durability policy, segment and retention defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StreamError};

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
    /// Largest batch (bytes) one append may carry.
    pub max_batch_bytes: usize,
    /// How often retention is applied.
    pub retention_check_interval: Duration,
}

impl CoreConfig {
    /// Defaults for a data directory: fsync always, one partition, 7 days retention.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(200),
            stream_defaults: StreamConfig::default(),
            max_batch_bytes: 8 * 1024 * 1024,
            retention_check_interval: Duration::from_secs(30),
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
    /// Other settings a client set (kept and echoed, not interpreted), e.g. `min.insync.replicas`.
    pub extra: BTreeMap<String, String>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            extra: BTreeMap::new(),
        }
    }
}

/// Settings that are Kafka-named on the wire and interpreted by the core.
pub const RETENTION_MS: &str = "retention.ms";
/// See [`RETENTION_MS`].
pub const RETENTION_BYTES: &str = "retention.bytes";
/// See [`RETENTION_MS`].
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// See [`RETENTION_MS`].
pub const SEGMENT_MS: &str = "segment.ms";
/// Smallest `segment.bytes` a client may set: every segment keeps a file open.
pub const MIN_SEGMENT_BYTES: i64 = 1024 * 1024;
/// Smallest `segment.ms` a client may set, for the same reason.
pub const MIN_SEGMENT_MS: i64 = 60_000;
/// Only `delete` is supported; compaction is not built.
pub const CLEANUP_POLICY: &str = "cleanup.policy";

impl StreamConfig {
    /// Applies one named setting (Kafka topic config names), validating its value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = |why: &str| StreamError::InvalidConfig(name.to_string(), why.to_string());
        let int = || value.parse::<i64>().map_err(|_| bad("not an integer"));
        match name {
            RETENTION_MS => self.retention_ms = int()?.max(-1),
            RETENTION_BYTES => self.retention_bytes = int()?.max(-1),
            SEGMENT_BYTES => {
                let v = int()?;
                if v < MIN_SEGMENT_BYTES {
                    return Err(bad("must be at least 1048576"));
                }
                self.segment_bytes = v as u64;
            }
            SEGMENT_MS => {
                let v = int()?;
                if v < MIN_SEGMENT_MS {
                    return Err(bad("must be at least 60000"));
                }
                self.segment_ms = v;
            }
            CLEANUP_POLICY => {
                if value != "delete" {
                    return Err(bad("only cleanup.policy=delete is supported"));
                }
            }
            _ => {
                self.extra.insert(name.to_string(), value.to_string());
            }
        }
        Ok(())
    }

    /// Returns one named setting to its default (`defaults` = the broker's stream defaults).
    pub fn unset(&mut self, name: &str, defaults: &StreamConfig) {
        match name {
            RETENTION_MS => self.retention_ms = defaults.retention_ms,
            RETENTION_BYTES => self.retention_bytes = defaults.retention_bytes,
            SEGMENT_BYTES => self.segment_bytes = defaults.segment_bytes,
            SEGMENT_MS => self.segment_ms = defaults.segment_ms,
            _ => {
                self.extra.remove(name);
            }
        }
    }

    /// All settings as (name, value) pairs for describe-style answers.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (CLEANUP_POLICY.to_string(), "delete".to_string()),
            (RETENTION_MS.to_string(), self.retention_ms.to_string()),
            (
                RETENTION_BYTES.to_string(),
                self.retention_bytes.to_string(),
            ),
            (SEGMENT_BYTES.to_string(), self.segment_bytes.to_string()),
            (SEGMENT_MS.to_string(), self.segment_ms.to_string()),
        ];
        v.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        v
    }
}
