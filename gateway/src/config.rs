//! The broker's one typed configuration: TOML file, overridden by `CONFLUX_*` environment
//! variables, overridden by command-line flags. docs/configuration.md lists every field.

use std::path::PathBuf;

use clap::Args;
use core_stream::FsyncPolicy;
use serde::Deserialize;

/// Every setting, with its default. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where segment files and the metadata store live.
    pub data_dir: PathBuf,
    /// `always` (fsync before every acknowledgement, group-committed), `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// Background fsync period under `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Partitions of streams created without an explicit count (auto-created topics).
    pub default_partitions: u32,
    /// Default time retention of new streams (ms, -1 = forever).
    pub retention_ms: i64,
    /// Default size retention per partition of new streams (bytes, -1 = unbounded).
    pub retention_bytes: i64,
    /// Default segment file size.
    pub segment_bytes: u64,
    /// How often retention runs (ms).
    pub retention_check_interval_ms: u64,
    /// Kafka listener address.
    pub kafka_listen: String,
    /// `host:port` given to Kafka clients in Metadata; empty = the bound address.
    pub kafka_advertised: String,
    /// Create unknown topics on Metadata/Produce.
    pub auto_create_topics: bool,
    /// Largest Kafka request frame (bytes).
    pub max_request_bytes: usize,
    /// Largest record batch one produce may append (bytes).
    pub max_batch_bytes: usize,
    /// Delay before a new consumer group's first rebalance completes (ms).
    pub group_initial_rebalance_delay_ms: u64,
    /// MQTT listener address (front-end not built yet).
    pub mqtt_listen: String,
    /// AMQP 0-9-1 listener address (front-end not built yet).
    pub amqp_listen: String,
    /// Admin HTTP listener address (not built yet).
    pub http_listen: String,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 200,
            default_partitions: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 128 * 1024 * 1024,
            retention_check_interval_ms: 30_000,
            kafka_listen: "0.0.0.0:9092".into(),
            kafka_advertised: String::new(),
            auto_create_topics: true,
            max_request_bytes: 16 * 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            group_initial_rebalance_delay_ms: 300,
            mqtt_listen: "0.0.0.0:1883".into(),
            amqp_listen: "0.0.0.0:5672".into(),
            http_listen: "0.0.0.0:8080".into(),
            log: "info".into(),
        }
    }
}

/// Flags of `conflux serve`; each also reads a `CONFLUX_*` variable.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "CONFLUX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "CONFLUX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener address, e.g. 0.0.0.0:9092.
    #[arg(long, env = "CONFLUX_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// host:port advertised to Kafka clients.
    #[arg(long, env = "CONFLUX_KAFKA_ADVERTISED")]
    pub kafka_advertised: Option<String>,
    /// MQTT listener address.
    #[arg(long, env = "CONFLUX_MQTT_LISTEN")]
    pub mqtt_listen: Option<String>,
    /// AMQP listener address.
    #[arg(long, env = "CONFLUX_AMQP_LISTEN")]
    pub amqp_listen: Option<String>,
    /// Admin HTTP listener address.
    #[arg(long, env = "CONFLUX_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Partitions of auto-created streams.
    #[arg(long, env = "CONFLUX_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// always | interval | never.
    #[arg(long, env = "CONFLUX_FSYNC")]
    pub fsync: Option<FsyncPolicy>,
    /// Log filter, e.g. info or conflux_kafka=debug.
    #[arg(long, env = "CONFLUX_LOG")]
    pub log: Option<String>,
}

impl Config {
    /// Loads the file named by `--config` (if any), then applies flags and environment.
    pub fn load(args: &ServeArgs) -> Result<Self, String> {
        let mut c = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("bad config {}: {e}", p.display()))?
            }
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &args.$f { c.$f = v.clone(); } )* };
        }
        over!(
            data_dir,
            kafka_listen,
            kafka_advertised,
            mqtt_listen,
            amqp_listen,
            http_listen,
            default_partitions,
            fsync,
            log
        );
        if c.default_partitions == 0 {
            return Err("default_partitions must be at least 1".into());
        }
        Ok(c)
    }
}
