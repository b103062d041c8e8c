//! Kafka's named configs: which topic settings exist, how they are validated and stored on a
//! stream, and how DescribeConfigs and CreateTopics report them.
//!
//! The core keeps a stream's settings as typed fields (retention, segment size) plus an opaque
//! map; Kafka names belong here. Every topic override a client sets is kept in that map under
//! its Kafka name (so "was this set on the topic?" has an answer, as Kafka's config source
//! needs), and the ones the core acts on also set the typed field.
//!
//! Reports follow Apache Kafka 4.x: every topic config Kafka defines is listed with its type;
//! the source is `TOPIC_CONFIG` (1) for an override, else `DEFAULT_CONFIG` (5), or
//! `STATIC_BROKER_CONFIG` (4) for broker settings that come from the broker's own
//! configuration (listeners, node id, data directory).

use core_stream::{StreamConfig, StreamError};

/// Kafka's `ConfigType` ids, reported in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    /// `true` / `false`.
    Boolean = 1,
    /// Free text or one of a set of names.
    String = 2,
    /// 32-bit integer.
    Int = 3,
    /// 16-bit integer.
    Short = 4,
    /// 64-bit integer.
    Long = 5,
    /// Floating point.
    Double = 6,
    /// Comma-separated list.
    List = 7,
}

/// Kafka's `ConfigSource` ids.
pub mod source {
    /// Set on the topic.
    pub const TOPIC: i8 = 1;
    /// From the broker's own configuration (file, flags, environment).
    pub const STATIC_BROKER: i8 = 4;
    /// Built-in default.
    pub const DEFAULT: i8 = 5;
}

/// How a value is validated (Kafka's validators for the topic configs).
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Integer of the config's type, at least this.
    AtLeast(i64),
    /// Integer of the config's type, within this range.
    Range(i64, i64),
    /// One of these names.
    OneOf(&'static [&'static str]),
    /// A list whose items are each one of these names.
    ListOf(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// A number within this range.
    Fraction(f64, f64),
    /// Anything (list of replica throttles).
    Any,
}

/// One topic config as Kafka defines it.
#[derive(Debug)]
pub struct TopicConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// Value type.
    pub ty: ConfigType,
    /// Kafka's built-in default, as Kafka prints it.
    pub default: &'static str,
    /// The broker setting that provides the default (Kafka's first synonym), if any.
    pub broker_synonym: Option<&'static str>,
    check: Check,
    /// What it does here (DescribeConfigs documentation).
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: &'static str,
    broker_synonym: Option<&'static str>,
    check: Check,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        ty,
        default,
        broker_synonym,
        check,
        doc,
    }
}

use ConfigType::{Boolean as B, Double as D, Int as I, List as L, Long as Lg, String as S};

const LONG_MAX: &str = "9223372036854775807";
const IGNORED: &str = "Accepted and reported for compatibility; Conflux does not act on it.";

/// Every topic config of Apache Kafka 4.x, by name. The ones Conflux acts on say how.
pub static TOPIC_CONFIGS: [TopicConfigDef; 33] = [
    def("cleanup.policy", L, "delete", Some("log.cleanup.policy"), Check::ListOf(&["delete", "compact"]),
        "How old data is removed: delete (whole segments by age and size) and/or compact (the latest record of each key is kept in closed segments)."),
    def("compression.gzip.level", I, "-1", Some("compression.gzip.level"), Check::Range(-1, 9), IGNORED),
    def("compression.lz4.level", I, "9", Some("compression.lz4.level"), Check::Range(1, 17), IGNORED),
    def("compression.type", S, "producer", Some("compression.type"),
        Check::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        "Codec of stored batches. Conflux always stores batches as the producer compressed them (producer)."),
    def("compression.zstd.level", I, "3", Some("compression.zstd.level"), Check::Range(-131072, 22), IGNORED),
    def("delete.retention.ms", Lg, "86400000", Some("log.cleaner.delete.retention.ms"), Check::AtLeast(0),
        "How long a tombstone of a compacted topic is kept once it is the latest record of its key."),
    def("file.delete.delay.ms", Lg, "60000", Some("log.segment.delete.delay.ms"), Check::AtLeast(0), IGNORED),
    def("flush.messages", Lg, LONG_MAX, Some("log.flush.interval.messages"), Check::AtLeast(1),
        "Conflux fsyncs every acknowledged write (group commit) under fsync=always, whatever this says."),
    def("flush.ms", Lg, LONG_MAX, Some("log.flush.interval.ms"), Check::AtLeast(0),
        "Conflux fsyncs every acknowledged write (group commit) under fsync=always, whatever this says."),
    def("follower.replication.throttled.replicas", L, "", None, Check::Any, IGNORED),
    def("index.interval.bytes", I, "4096", Some("log.index.interval.bytes"), Check::AtLeast(0), IGNORED),
    def("leader.replication.throttled.replicas", L, "", None, Check::Any, IGNORED),
    def("local.retention.bytes", Lg, "-2", Some("log.local.retention.bytes"), Check::AtLeast(-2), IGNORED),
    def("local.retention.ms", Lg, "-2", Some("log.local.retention.ms"), Check::AtLeast(-2), IGNORED),
    def("max.compaction.lag.ms", Lg, LONG_MAX, Some("log.cleaner.max.compaction.lag.ms"), Check::AtLeast(1),
        "A closed segment with records older than this is compacted whatever the dirty ratio."),
    def("max.message.bytes", I, "1048588", Some("message.max.bytes"), Check::AtLeast(0),
        "Largest record batch a produce may carry. Conflux enforces the broker's max_batch_bytes."),
    def("message.timestamp.after.max.ms", Lg, "3600000", Some("log.message.timestamp.after.max.ms"), Check::AtLeast(0), IGNORED),
    def("message.timestamp.before.max.ms", Lg, LONG_MAX, Some("log.message.timestamp.before.max.ms"), Check::AtLeast(0), IGNORED),
    def("message.timestamp.type", S, "CreateTime", Some("log.message.timestamp.type"),
        Check::OneOf(&["CreateTime", "LogAppendTime"]),
        "CreateTime: records keep the producer's timestamps. LogAppendTime: each produced batch is stamped with the broker's time when it is appended."),
    def("min.cleanable.dirty.ratio", D, "0.5", Some("log.cleaner.min.cleanable.ratio"), Check::Fraction(0.0, 1.0),
        "Compaction runs when this share of the closed segments' bytes is not compacted yet."),
    def("min.compaction.lag.ms", Lg, "0", Some("log.cleaner.min.compaction.lag.ms"), Check::AtLeast(0),
        "Records younger than this are not compacted."),
    def("min.insync.replicas", I, "1", Some("min.insync.replicas"), Check::AtLeast(1),
        "In-sync replicas needed for acks=all. A single node always has exactly one."),
    def("preallocate", B, "false", Some("log.preallocate"), Check::Bool, IGNORED),
    def("remote.log.copy.disable", B, "false", None, Check::Bool, IGNORED),
    def("remote.log.delete.on.disable", B, "false", None, Check::Bool, IGNORED),
    def("remote.storage.enable", B, "false", None, Check::OneOf(&["false"]),
        "Tiered storage is not available in Conflux."),
    def("retention.bytes", Lg, "-1", Some("log.retention.bytes"), Check::AtLeast(i64::MIN),
        "Largest size of a partition before its oldest segments are deleted; -1 = unbounded."),
    def("retention.ms", Lg, "604800000", Some("log.retention.ms"), Check::AtLeast(-1),
        "Age after which whole segments are deleted; -1 keeps data forever."),
    def("segment.bytes", I, "1073741824", Some("log.segment.bytes"), Check::AtLeast(14),
        "Size at which a partition starts a new segment file. Open files are bounded by a cache, so small values are fine."),
    def("segment.index.bytes", I, "10485760", Some("log.index.size.max.bytes"), Check::AtLeast(4), IGNORED),
    def("segment.jitter.ms", Lg, "0", Some("log.roll.jitter.ms"), Check::AtLeast(0), IGNORED),
    def("segment.ms", Lg, "604800000", Some("log.roll.ms"), Check::AtLeast(1),
        "Age at which a partition starts a new segment file even if the current one is not full."),
    def("unclean.leader.election.enable", B, "false", Some("unclean.leader.election.enable"), Check::Bool, IGNORED),
];

/// Topic configs of Kafka 3.x that Kafka 4.0 removed. Clients and tools written for 3.x still
/// set them (librdkafka's 0092 sets `message.format.version`), and Kafka 3.x accepts them while
/// ignoring the message format since 3.0; Conflux accepts them too, ignores them, and reports
/// them only where a topic sets them.
pub static LEGACY_TOPIC_CONFIGS: [TopicConfigDef; 3] = [
    def("message.downconversion.enable", B, "true", Some("log.message.downconversion.enable"), Check::Bool,
        "Kafka 3.x only (removed in 4.0): accepted and ignored; records are always served as stored (v2)."),
    def("message.format.version", S, "3.0-IV1", Some("log.message.format.version"), Check::Any,
        "Kafka 3.x only (removed in 4.0): accepted and ignored, as Kafka 3.x ignores it; records are always v2."),
    def("message.timestamp.difference.max.ms", Lg, LONG_MAX, Some("log.message.timestamp.difference.max.ms"),
        Check::AtLeast(0), "Kafka 3.x only (removed in 4.0): accepted and ignored."),
];

/// Whether a topic's batches get the broker's append time (`message.timestamp.type=LogAppendTime`).
pub fn log_append_time(cfg: &StreamConfig) -> bool {
    cfg.extra
        .get("message.timestamp.type")
        .is_some_and(|v| v == "LogAppendTime")
}

/// Kafka 4.1's hidden override of `segment.bytes` (no lower bound), accepted as Kafka does.
const INTERNAL_SEGMENT_BYTES: &str = "internal.segment.bytes";

/// The definition of a topic config by name (Kafka 4.x's, or a removed 3.x one still accepted).
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .chain(LEGACY_TOPIC_CONFIGS.iter())
        .find(|d| d.name == name)
}

fn invalid(name: &str, why: impl Into<String>) -> StreamError {
    StreamError::InvalidConfig(name.to_string(), why.into())
}

fn validate(d: &TopicConfigDef, value: &str) -> Result<(), StreamError> {
    let int = |lo: i64, hi: i64| -> Result<(), StreamError> {
        let v: i64 = value
            .trim()
            .parse()
            .map_err(|_| invalid(d.name, format!("{value:?} is not a number")))?;
        let (tlo, thi) = match d.ty {
            ConfigType::Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        if v < lo.max(tlo) || v > hi.min(thi) {
            return Err(invalid(
                d.name,
                format!("value {v} is outside [{}, {}]", lo.max(tlo), hi.min(thi)),
            ));
        }
        Ok(())
    };
    match d.check {
        Check::AtLeast(lo) => int(lo, i64::MAX),
        Check::Range(lo, hi) => int(lo, hi),
        Check::OneOf(names) if names.contains(&value) => Ok(()),
        Check::OneOf(names) => Err(invalid(
            d.name,
            format!(
                "{value:?} is not supported here; allowed: {}",
                names.join(", ")
            ),
        )),
        Check::ListOf(names) => {
            match value.split(',').map(str::trim).find(|v| !names.contains(v)) {
                None => Ok(()),
                Some(v) => Err(invalid(
                    d.name,
                    format!("{v:?} is not supported here; allowed: {}", names.join(", ")),
                )),
            }
        }
        Check::Bool if value == "true" || value == "false" => Ok(()),
        Check::Bool => Err(invalid(d.name, format!("{value:?} is not true or false"))),
        Check::Fraction(lo, hi) => match value.trim().parse::<f64>() {
            Ok(v) if (lo..=hi).contains(&v) => Ok(()),
            _ => Err(invalid(
                d.name,
                format!("{value:?} is not a number in [{lo}, {hi}]"),
            )),
        },
        Check::Any => Ok(()),
    }
}

/// Sets one topic config on a stream's settings, validated as Kafka validates it. Unknown
/// names are refused (`INVALID_CONFIG`), as Kafka refuses them.
pub fn set(cfg: &mut StreamConfig, name: &str, value: &str) -> Result<(), StreamError> {
    let parse = || {
        value
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid(name, "not a number"))
    };
    if name == INTERNAL_SEGMENT_BYTES {
        cfg.segment_bytes = parse()?.max(1) as u64;
    } else {
        let d = topic_config(name)
            .ok_or_else(|| invalid(name, format!("Unknown topic config name: {name}")))?;
        validate(d, value)?;
        match name {
            "retention.ms" => cfg.retention_ms = parse()?,
            "retention.bytes" => cfg.retention_bytes = parse()?.max(-1),
            "segment.bytes" => cfg.segment_bytes = parse()? as u64,
            "segment.ms" => cfg.segment_ms = parse()?,
            "cleanup.policy" => {
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                cfg.cleanup.delete = policies.contains(&"delete");
                cfg.cleanup.compact = policies.contains(&"compact");
            }
            "delete.retention.ms" => cfg.cleanup.delete_retention_ms = parse()?,
            "min.compaction.lag.ms" => cfg.cleanup.min_compaction_lag_ms = parse()?,
            "max.compaction.lag.ms" => cfg.cleanup.max_compaction_lag_ms = parse()?,
            "min.cleanable.dirty.ratio" => {
                let r: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(name, "not a number"))?;
                cfg.cleanup.min_cleanable_dirty_permille =
                    (r * 1000.0).round().clamp(0.0, 1000.0) as u32;
            }
            _ => {}
        }
    }
    cfg.extra.insert(name.to_string(), value.to_string());
    Ok(())
}

/// Removes a topic override: the setting returns to the broker default in `defaults`.
pub fn unset(cfg: &mut StreamConfig, name: &str, defaults: &StreamConfig) {
    match name {
        "retention.ms" => cfg.retention_ms = defaults.retention_ms,
        "retention.bytes" => cfg.retention_bytes = defaults.retention_bytes,
        "segment.bytes" | INTERNAL_SEGMENT_BYTES => cfg.segment_bytes = defaults.segment_bytes,
        "segment.ms" => cfg.segment_ms = defaults.segment_ms,
        "cleanup.policy" => {
            cfg.cleanup.delete = defaults.cleanup.delete;
            cfg.cleanup.compact = defaults.cleanup.compact;
        }
        "delete.retention.ms" => {
            cfg.cleanup.delete_retention_ms = defaults.cleanup.delete_retention_ms
        }
        "min.compaction.lag.ms" => {
            cfg.cleanup.min_compaction_lag_ms = defaults.cleanup.min_compaction_lag_ms
        }
        "max.compaction.lag.ms" => {
            cfg.cleanup.max_compaction_lag_ms = defaults.cleanup.max_compaction_lag_ms
        }
        "min.cleanable.dirty.ratio" => {
            cfg.cleanup.min_cleanable_dirty_permille = defaults.cleanup.min_cleanable_dirty_permille
        }
        _ => {}
    }
    cfg.extra.remove(name);
}

/// What the broker's own settings make the default of each topic config.
#[derive(Debug, Clone)]
pub struct BrokerDefaults {
    /// Settings new streams get.
    pub stream: StreamConfig,
    /// Largest batch a produce may append (`message.max.bytes`).
    pub max_batch_bytes: usize,
}

impl BrokerDefaults {
    /// The default value of a topic config on this broker.
    pub fn value(&self, d: &TopicConfigDef) -> String {
        match d.name {
            "retention.ms" => self.stream.retention_ms.to_string(),
            "retention.bytes" => self.stream.retention_bytes.to_string(),
            "segment.bytes" => self.stream.segment_bytes.to_string(),
            "segment.ms" => self.stream.segment_ms.to_string(),
            "max.message.bytes" => self.max_batch_bytes.to_string(),
            _ => d.default.to_string(),
        }
    }
}

/// One reported topic config.
#[derive(Debug, Clone)]
pub struct Reported {
    /// Kafka's name.
    pub name: &'static str,
    /// Effective value.
    pub value: String,
    /// [`source::TOPIC`] or [`source::DEFAULT`].
    pub source: i8,
    /// The definition (type, synonym, documentation).
    pub def: &'static TopicConfigDef,
}

/// Every topic config of a stream with its effective value and source, sorted by name.
pub fn topic_entries(cfg: &StreamConfig, broker: &BrokerDefaults) -> Vec<Reported> {
    let legacy_set = LEGACY_TOPIC_CONFIGS
        .iter()
        .filter(|d| cfg.extra.contains_key(d.name));
    let mut out: Vec<Reported> = TOPIC_CONFIGS
        .iter()
        .chain(legacy_set)
        .map(|d| {
            let typed = match d.name {
                "retention.ms" => Some(cfg.retention_ms.to_string()),
                "retention.bytes" => Some(cfg.retention_bytes.to_string()),
                "segment.bytes" => Some(cfg.segment_bytes.to_string()),
                "segment.ms" => Some(cfg.segment_ms.to_string()),
                _ => None,
            };
            let overridden = cfg.extra.get(d.name);
            let value = typed
                .or_else(|| overridden.cloned())
                .unwrap_or_else(|| broker.value(d));
            Reported {
                name: d.name,
                value,
                source: if overridden.is_some() {
                    source::TOPIC
                } else {
                    source::DEFAULT
                },
                def: d,
            }
        })
        .collect();
    out.sort_by_key(|r| r.name);
    out
}

/// One broker setting as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEntry {
    /// Kafka's name.
    pub name: &'static str,
    /// Value (`None`: not set and no default, as Kafka reports it).
    pub value: Option<String>,
    /// Type.
    pub ty: ConfigType,
    /// Only changeable by restarting with new settings (Kafka's non-dynamic configs).
    pub read_only: bool,
    /// [`source::STATIC_BROKER`] or [`source::DEFAULT`].
    pub source: i8,
    /// What it is here.
    pub doc: &'static str,
}

/// The broker's own settings that DescribeConfigs reports, with their real values.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// This broker's node id.
    pub node_id: i32,
    /// `PLAINTEXT://host:port` the Kafka listener is bound to.
    pub listener: String,
    /// `PLAINTEXT://host:port` given to clients.
    pub advertised: String,
    /// The one log directory.
    pub log_dir: String,
    /// Create topics on first use.
    pub auto_create_topics: bool,
    /// Largest request frame.
    pub max_request_bytes: usize,
    /// Largest fetch answer.
    pub fetch_max_bytes: usize,
    /// First-rebalance delay of new groups (ms).
    pub group_initial_rebalance_delay_ms: u64,
    /// How often retention runs (ms).
    pub retention_check_interval_ms: u64,
    /// Topic defaults.
    pub defaults: BrokerDefaults,
}

/// Every broker setting reported for the broker resource, in name order.
pub fn broker_entries(b: &BrokerSettings) -> Vec<BrokerEntry> {
    use ConfigType::{Boolean, Int, List, Long, Short, String as Str};
    let st = &b.defaults.stream;
    let fixed = |name, value: &str, ty, read_only, doc| BrokerEntry {
        name,
        value: Some(value.to_string()),
        ty,
        read_only,
        source: source::DEFAULT,
        doc,
    };
    let configured = |name, value: String, ty, read_only, doc| BrokerEntry {
        name,
        value: Some(value),
        ty,
        read_only,
        source: source::STATIC_BROKER,
        doc,
    };
    let hours = |ms: i64| if ms < 0 { ms } else { ms / 3_600_000 };
    let mut v = vec![
        configured(
            "advertised.listeners",
            b.advertised.clone(),
            Str,
            true,
            "Address given to clients in metadata (kafka_advertised).",
        ),
        fixed(
            "auto.create.topics.enable",
            &b.auto_create_topics.to_string(),
            Boolean,
            true,
            "Create unknown topics on Metadata and Produce (auto_create_topics).",
        ),
        fixed(
            "auto.leader.rebalance.enable",
            "true",
            Boolean,
            true,
            "A single node always leads every partition.",
        ),
        configured(
            "broker.id",
            b.node_id.to_string(),
            Int,
            true,
            "This broker's id (the node id).",
        ),
        fixed(
            "compression.type",
            "producer",
            Str,
            false,
            "Batches are stored as the producer compressed them.",
        ),
        fixed(
            "default.replication.factor",
            "1",
            Int,
            true,
            "A single node keeps one replica of each partition.",
        ),
        fixed(
            "delete.topic.enable",
            "true",
            Boolean,
            true,
            "Topics can be deleted.",
        ),
        fixed(
            "fetch.max.bytes",
            &b.fetch_max_bytes.to_string(),
            Int,
            true,
            "Largest amount of record data in one fetch answer (fetch_max_bytes).",
        ),
        fixed(
            "group.initial.rebalance.delay.ms",
            &b.group_initial_rebalance_delay_ms.to_string(),
            Int,
            true,
            "Wait before a new group's first rebalance completes.",
        ),
        fixed(
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT",
            Str,
            false,
            "Only plaintext listeners exist.",
        ),
        configured(
            "listeners",
            b.listener.clone(),
            Str,
            false,
            "The Kafka listener's bound address (kafka_listen).",
        ),
        fixed(
            "log.cleaner.enable",
            "true",
            Boolean,
            true,
            "Topics with cleanup.policy=compact are compacted (checked with retention, every retention_check_interval_ms).",
        ),
        fixed(
            "log.cleanup.policy",
            "delete",
            List,
            false,
            "Default cleanup policy of new topics.",
        ),
        configured(
            "log.dir",
            b.log_dir.clone(),
            Str,
            true,
            "Directory holding the partitions (data_dir/streams).",
        ),
        configured(
            "log.dirs",
            b.log_dir.clone(),
            Str,
            true,
            "Directory holding the partitions (data_dir/streams).",
        ),
        fixed(
            "log.retention.bytes",
            &st.retention_bytes.to_string(),
            Long,
            false,
            "Default retention.bytes of new topics (retention_bytes).",
        ),
        fixed(
            "log.retention.check.interval.ms",
            &b.retention_check_interval_ms.to_string(),
            Long,
            true,
            "How often retention runs.",
        ),
        fixed(
            "log.retention.hours",
            &hours(st.retention_ms).to_string(),
            Int,
            true,
            "Default retention of new topics, in hours.",
        ),
        fixed(
            "log.retention.ms",
            &st.retention_ms.to_string(),
            Long,
            false,
            "Default retention.ms of new topics (retention_ms).",
        ),
        fixed(
            "log.roll.hours",
            &hours(st.segment_ms).to_string(),
            Int,
            true,
            "Default segment age, in hours.",
        ),
        fixed(
            "log.roll.ms",
            &st.segment_ms.to_string(),
            Long,
            false,
            "Default segment.ms of new topics.",
        ),
        fixed(
            "log.segment.bytes",
            &st.segment_bytes.to_string(),
            Int,
            false,
            "Default segment.bytes of new topics (segment_bytes).",
        ),
        fixed(
            "message.max.bytes",
            &b.defaults.max_batch_bytes.to_string(),
            Int,
            false,
            "Largest record batch one produce may append (max_batch_bytes).",
        ),
        fixed(
            "min.insync.replicas",
            "1",
            Int,
            false,
            "A single node: acks=all means this broker's fsync.",
        ),
        configured(
            "node.id",
            b.node_id.to_string(),
            Int,
            true,
            "This broker's node id.",
        ),
        fixed(
            "num.partitions",
            &st.partitions.to_string(),
            Int,
            true,
            "Partitions of auto-created topics (default_partitions).",
        ),
        fixed(
            "offsets.topic.replication.factor",
            "1",
            Short,
            true,
            "Group offsets live in the metadata store of this node.",
        ),
        configured(
            "process.roles",
            "broker,controller".into(),
            List,
            true,
            "One node that is both broker and controller.",
        ),
        fixed(
            "socket.request.max.bytes",
            &b.max_request_bytes.to_string(),
            Int,
            true,
            "Largest request frame (max_request_bytes).",
        ),
        fixed(
            "transaction.state.log.replication.factor",
            "1",
            Short,
            true,
            "A single node keeps one copy.",
        ),
        fixed(
            "unclean.leader.election.enable",
            "false",
            Boolean,
            false,
            "A single node has no other replica to elect.",
        ),
    ];
    v.sort_by_key(|e| e.name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kafka_default_passes_its_own_validator() {
        for d in &TOPIC_CONFIGS {
            if matches!(d.check, Check::OneOf(_) | Check::ListOf(_)) && d.name != "cleanup.policy" {
                continue; // narrowed to what Conflux supports
            }
            validate(d, d.default).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        }
        let names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "kept in name order, as Kafka reports them");
    }

    #[test]
    fn set_keeps_the_override_and_unset_returns_to_the_default() {
        let defaults = StreamConfig::default();
        let mut cfg = defaults.clone();
        set(&mut cfg, "retention.ms", "1000").unwrap();
        set(&mut cfg, "min.insync.replicas", "1").unwrap();
        set(&mut cfg, "segment.bytes", "20000").unwrap();
        assert_eq!(cfg.retention_ms, 1000);
        assert_eq!(cfg.segment_bytes, 20000);
        let broker = BrokerDefaults {
            stream: defaults.clone(),
            max_batch_bytes: 1 << 20,
        };
        let e = topic_entries(&cfg, &broker);
        let r = e.iter().find(|r| r.name == "retention.ms").unwrap();
        assert_eq!((r.value.as_str(), r.source), ("1000", source::TOPIC));
        let r = e.iter().find(|r| r.name == "retention.bytes").unwrap();
        assert_eq!((r.value.as_str(), r.source), ("-1", source::DEFAULT));
        unset(&mut cfg, "retention.ms", &defaults);
        assert_eq!(cfg.retention_ms, defaults.retention_ms);
        assert!(!cfg.extra.contains_key("retention.ms"));
        assert!(set(&mut cfg, "no.such.config", "1").is_err());
        assert!(set(&mut cfg, "segment.bytes", "13").is_err());
        assert!(set(&mut cfg, "retention.ms", "-2").is_err());
        set(&mut cfg, "cleanup.policy", "compact,delete").unwrap();
        assert!(cfg.cleanup.compact && cfg.cleanup.delete);
        set(&mut cfg, "min.cleanable.dirty.ratio", "0.01").unwrap();
        assert_eq!(cfg.cleanup.min_cleanable_dirty_permille, 10);
        assert!(set(&mut cfg, "cleanup.policy", "shred").is_err());
        assert!(set(&mut cfg, "min.cleanable.dirty.ratio", "1.5").is_err());
    }

    #[test]
    fn kafka_3_topic_configs_are_accepted_and_reported_only_where_set() {
        let defaults = StreamConfig::default();
        let broker = BrokerDefaults {
            stream: defaults.clone(),
            max_batch_bytes: 1 << 20,
        };
        let mut cfg = defaults.clone();
        let listed = |cfg: &StreamConfig| {
            topic_entries(cfg, &broker)
                .iter()
                .any(|r| r.name == "message.format.version")
        };
        assert!(
            !listed(&cfg),
            "not reported by default (Kafka 4.x removed it)"
        );
        set(&mut cfg, "message.format.version", "0.10.0.0").unwrap();
        let e = topic_entries(&cfg, &broker);
        let r = e
            .iter()
            .find(|r| r.name == "message.format.version")
            .unwrap();
        assert_eq!((r.value.as_str(), r.source), ("0.10.0.0", source::TOPIC));
        let names: Vec<_> = e.iter().map(|r| r.name).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "still in name order");
        assert!(set(&mut cfg, "message.downconversion.enable", "maybe").is_err());
        unset(&mut cfg, "message.format.version", &defaults);
        assert!(!listed(&cfg));
    }
}
