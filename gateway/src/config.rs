//! The broker's one typed configuration: TOML file, overridden by `CONFLUX_*` environment
//! variables, overridden by command-line flags. docs/configuration.md lists every field.

use std::path::PathBuf;

use clap::Args;
use core_stream::{CoreConfig, FsyncPolicy};
use serde::{Deserialize, Serialize};

/// Every setting, with its default. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Most segment files kept open at once (the rest are reopened on demand).
    pub max_open_files: usize,
    /// Most client connections each listener keeps open at once.
    pub max_connections: usize,
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
    /// Largest amount of record data one fetch answer carries (Kafka's `fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// Delay before a new consumer group's first rebalance completes (ms).
    pub group_initial_rebalance_delay_ms: u64,
    /// Highest replication factor CreateTopics accepts (topics still have one replica).
    pub kafka_max_replication_factor: i16,
    /// MQTT listener address (TCP); empty = no MQTT listener.
    pub mqtt_listen: String,
    /// MQTT-over-WebSocket listener address (subprotocol `mqtt`); empty = none.
    pub mqtt_ws_listen: String,
    /// Largest MQTT packet accepted (bytes).
    pub mqtt_max_packet_size: u32,
    /// QoS 1/2 messages an MQTT client may have unacknowledged towards the broker.
    pub mqtt_receive_maximum: u16,
    /// QoS 1/2 messages the broker may have unacknowledged towards one MQTT client.
    pub mqtt_max_inflight: u16,
    /// Live buffer of a connected MQTT client; past it messages are dropped.
    pub mqtt_max_queued_messages: usize,
    /// Most QoS 1/2 messages a persistent MQTT session keeps while away.
    pub mqtt_max_queued_messages_persistent: u64,
    /// Largest keep-alive an MQTT client may use (s; 0 = no limit).
    pub mqtt_max_keepalive: u16,
    /// Topic aliases an MQTT client may use towards the broker.
    pub mqtt_topic_alias_maximum: u16,
    /// MQTT topic filters whose subscription is refused (SUBACK 0x80).
    pub mqtt_deny_subscribe: Vec<String>,
    /// Rules mapping many MQTT topics into one keyed stream.
    pub mqtt_mapping: Vec<conflux_mqtt::topics::MappingRule>,
    /// Record key of an MQTT publish no rule keys: `client_id` or `none`.
    pub mqtt_key: conflux_mqtt::KeyPolicy,
    /// AMQP 0-9-1 listener address; empty = no AMQP listener.
    pub amqp_listen: String,
    /// Largest AMQP frame offered to clients (`frame_max`, bytes).
    pub amqp_frame_max: u32,
    /// Most channels per AMQP connection offered to clients.
    pub amqp_channel_max: u16,
    /// AMQP heartbeat interval offered to clients (s; the client's answer is used).
    pub amqp_heartbeat: u16,
    /// Largest AMQP message body accepted (bytes).
    pub amqp_max_message_bytes: u64,
    /// AMQP users, `name:password` each.
    pub amqp_users: Vec<String>,
    /// AMQP users that may only connect from a loopback address.
    pub amqp_loopback_users: Vec<String>,
    /// AMQP virtual hosts clients may open (one shared namespace).
    pub amqp_vhosts: Vec<String>,
    /// AMQP publishers are blocked while the data directory has less free space (bytes; 0 = never).
    pub amqp_disk_free_limit: u64,
    /// AMQP publishers are blocked while the broker's RSS is above this (bytes; 0 = never).
    pub amqp_memory_high_watermark: u64,
    /// Admin HTTP listener address (not built yet).
    pub http_listen: String,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
}

impl Default for Config {
    /// The defaults are the core's and the front-ends' own (one place each), plus the ports.
    fn default() -> Self {
        let core = CoreConfig::new("./data");
        let stream = &core.stream_defaults;
        let kafka = conflux_kafka::KafkaConfig::default();
        let mqtt = conflux_mqtt::MqttConfig::default();
        let amqp = conflux_amqp::AmqpConfig::default();
        Self {
            data_dir: core.data_dir.clone(),
            fsync: core.fsync,
            fsync_interval_ms: core.fsync_interval.as_millis() as u64,
            default_partitions: stream.partitions,
            retention_ms: stream.retention_ms,
            retention_bytes: stream.retention_bytes,
            segment_bytes: stream.segment_bytes,
            retention_check_interval_ms: core.retention_check_interval.as_millis() as u64,
            max_open_files: core.max_open_files,
            max_connections: kafka.max_connections,
            kafka_listen: "0.0.0.0:9092".into(),
            kafka_advertised: String::new(),
            auto_create_topics: kafka.auto_create_topics,
            max_request_bytes: kafka.max_request_bytes,
            max_batch_bytes: core.max_batch_bytes,
            fetch_max_bytes: kafka.fetch_max_bytes,
            group_initial_rebalance_delay_ms: kafka.group_initial_rebalance_delay.as_millis()
                as u64,
            kafka_max_replication_factor: kafka.max_replication_factor,
            mqtt_listen: "0.0.0.0:1883".into(),
            mqtt_ws_listen: "0.0.0.0:8083".into(),
            mqtt_max_packet_size: mqtt.max_packet_size,
            mqtt_receive_maximum: mqtt.receive_maximum,
            mqtt_max_inflight: mqtt.max_inflight,
            mqtt_max_queued_messages: mqtt.max_queued_messages,
            mqtt_max_queued_messages_persistent: mqtt.max_queued_messages_persistent,
            mqtt_max_keepalive: mqtt.max_keepalive,
            mqtt_topic_alias_maximum: mqtt.topic_alias_maximum,
            mqtt_deny_subscribe: mqtt.deny_subscribe,
            mqtt_mapping: mqtt.mapping,
            mqtt_key: mqtt.key,
            amqp_listen: "0.0.0.0:5672".into(),
            amqp_frame_max: amqp.frame_max,
            amqp_channel_max: amqp.channel_max,
            amqp_heartbeat: amqp.heartbeat,
            amqp_max_message_bytes: amqp.max_message_bytes,
            amqp_users: amqp.users.iter().map(|(u, p)| format!("{u}:{p}")).collect(),
            amqp_loopback_users: amqp.loopback_users.clone(),
            amqp_vhosts: amqp.vhosts.clone(),
            amqp_disk_free_limit: amqp.disk_free_limit,
            amqp_memory_high_watermark: amqp.memory_high_watermark,
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
    /// MQTT listener address ("" = none).
    #[arg(long, env = "CONFLUX_MQTT_LISTEN")]
    pub mqtt_listen: Option<String>,
    /// MQTT-over-WebSocket listener address ("" = none).
    #[arg(long, env = "CONFLUX_MQTT_WS_LISTEN")]
    pub mqtt_ws_listen: Option<String>,
    /// Largest MQTT keep-alive a client may use (s; 0 = no limit).
    #[arg(long, env = "CONFLUX_MQTT_MAX_KEEPALIVE")]
    pub mqtt_max_keepalive: Option<u16>,
    /// Largest MQTT packet accepted (bytes).
    #[arg(long, env = "CONFLUX_MQTT_MAX_PACKET_SIZE")]
    pub mqtt_max_packet_size: Option<u32>,
    /// MQTT Receive Maximum offered to clients.
    #[arg(long, env = "CONFLUX_MQTT_RECEIVE_MAXIMUM")]
    pub mqtt_receive_maximum: Option<u16>,
    /// Live buffer of a connected MQTT client (messages).
    #[arg(long, env = "CONFLUX_MQTT_MAX_QUEUED_MESSAGES")]
    pub mqtt_max_queued_messages: Option<usize>,
    /// MQTT topic filter whose subscription is refused (repeatable; the environment variable
    /// takes a comma-separated list).
    #[arg(long, env = "CONFLUX_MQTT_DENY_SUBSCRIBE", value_delimiter = ',')]
    pub mqtt_deny_subscribe: Option<Vec<String>>,
    /// MQTT mapping rule `FILTER=STREAM`, e.g. `devices/+/telemetry=devices.telemetry`
    /// (repeatable; the environment variable takes a comma-separated list).
    #[arg(long, env = "CONFLUX_MQTT_MAPPING", value_delimiter = ',', value_parser = parse_mapping)]
    pub mqtt_mapping: Option<Vec<conflux_mqtt::topics::MappingRule>>,
    /// AMQP listener address ("" = none).
    #[arg(long, env = "CONFLUX_AMQP_LISTEN")]
    pub amqp_listen: Option<String>,
    /// AMQP heartbeat interval offered to clients (s).
    #[arg(long, env = "CONFLUX_AMQP_HEARTBEAT")]
    pub amqp_heartbeat: Option<u16>,
    /// Largest AMQP message body accepted (bytes).
    #[arg(long, env = "CONFLUX_AMQP_MAX_MESSAGE_BYTES")]
    pub amqp_max_message_bytes: Option<u64>,
    /// AMQP user `name:password` (repeatable; the environment variable takes a comma-separated list).
    #[arg(long, env = "CONFLUX_AMQP_USERS", value_delimiter = ',')]
    pub amqp_users: Option<Vec<String>>,
    /// AMQP users that may only connect from loopback (repeatable / comma-separated).
    #[arg(long, env = "CONFLUX_AMQP_LOOPBACK_USERS", value_delimiter = ',')]
    pub amqp_loopback_users: Option<Vec<String>>,
    /// AMQP virtual hosts (repeatable / comma-separated).
    #[arg(long, env = "CONFLUX_AMQP_VHOSTS", value_delimiter = ',')]
    pub amqp_vhosts: Option<Vec<String>>,
    /// Block AMQP publishers below this much free disk (bytes; 0 = never).
    #[arg(long, env = "CONFLUX_AMQP_DISK_FREE_LIMIT")]
    pub amqp_disk_free_limit: Option<u64>,
    /// Block AMQP publishers above this resident memory (bytes; 0 = never).
    #[arg(long, env = "CONFLUX_AMQP_MEMORY_HIGH_WATERMARK")]
    pub amqp_memory_high_watermark: Option<u64>,
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
    /// Background fsync period under fsync=interval (ms).
    #[arg(long, env = "CONFLUX_FSYNC_INTERVAL_MS")]
    pub fsync_interval_ms: Option<u64>,
    /// Default time retention of new streams (ms, -1 = forever).
    #[arg(long, env = "CONFLUX_RETENTION_MS", allow_hyphen_values = true)]
    pub retention_ms: Option<i64>,
    /// Default size retention per partition of new streams (bytes, -1 = unbounded).
    #[arg(long, env = "CONFLUX_RETENTION_BYTES", allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// Default segment file size (bytes).
    #[arg(long, env = "CONFLUX_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// How often retention runs (ms).
    #[arg(long, env = "CONFLUX_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// Most segment files kept open at once.
    #[arg(long, env = "CONFLUX_MAX_OPEN_FILES")]
    pub max_open_files: Option<usize>,
    /// Most client connections each listener keeps open at once.
    #[arg(long, env = "CONFLUX_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Create unknown topics on Metadata/Produce (true/false).
    #[arg(long, env = "CONFLUX_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Largest Kafka request frame (bytes).
    #[arg(long, env = "CONFLUX_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Largest record set one partition of a produce may carry (bytes).
    #[arg(long, env = "CONFLUX_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// Largest amount of record data in one fetch answer (bytes).
    #[arg(long, env = "CONFLUX_FETCH_MAX_BYTES")]
    pub fetch_max_bytes: Option<usize>,
    /// Delay before a new consumer group's first rebalance completes (ms).
    #[arg(long, env = "CONFLUX_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Highest replication factor CreateTopics accepts (topics still have one replica).
    #[arg(long, env = "CONFLUX_KAFKA_MAX_REPLICATION_FACTOR")]
    pub kafka_max_replication_factor: Option<i16>,
}

fn parse_mapping(s: &str) -> Result<conflux_mqtt::topics::MappingRule, String> {
    let (filter, stream) = s
        .split_once('=')
        .ok_or_else(|| format!("mapping rule {s:?} is not FILTER=STREAM"))?;
    Ok(conflux_mqtt::topics::MappingRule {
        filter: filter.to_string(),
        stream: stream.to_string(),
    })
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
        over!(
            fsync_interval_ms,
            retention_ms,
            retention_bytes,
            segment_bytes,
            retention_check_interval_ms,
            auto_create_topics,
            max_open_files,
            max_connections
        );
        over!(
            mqtt_ws_listen,
            mqtt_max_keepalive,
            mqtt_max_packet_size,
            mqtt_receive_maximum,
            mqtt_max_queued_messages,
            mqtt_deny_subscribe,
            mqtt_mapping
        );
        over!(
            amqp_heartbeat,
            amqp_max_message_bytes,
            amqp_users,
            amqp_loopback_users
        );
        over!(
            amqp_vhosts,
            amqp_disk_free_limit,
            amqp_memory_high_watermark
        );
        over!(
            max_request_bytes,
            max_batch_bytes,
            fetch_max_bytes,
            group_initial_rebalance_delay_ms,
            kafka_max_replication_factor
        );
        let checks: [(bool, &str); 13] = [
            (
                c.amqp_users.iter().any(|u| !u.contains(':')),
                "amqp_users entries must be name:password",
            ),
            (
                c.amqp_max_message_bytes + 65536 > c.max_batch_bytes as u64,
                "amqp_max_message_bytes must leave 64 KiB of max_batch_bytes for headers",
            ),
            (
                c.amqp_frame_max < 8192 || c.amqp_channel_max == 0,
                "amqp_frame_max must be at least 8192 and amqp_channel_max at least 1",
            ),
            (
                c.mqtt_receive_maximum == 0,
                "mqtt_receive_maximum must be at least 1",
            ),
            (
                c.mqtt_max_packet_size < 64,
                "mqtt_max_packet_size must be at least 64",
            ),
            (c.max_connections == 0, "max_connections must be at least 1"),
            (c.max_open_files < 16, "max_open_files must be at least 16"),
            (
                c.default_partitions == 0,
                "default_partitions must be at least 1",
            ),
            (
                c.fsync_interval_ms == 0,
                "fsync_interval_ms must be at least 1",
            ),
            (
                c.segment_bytes < 4096,
                "segment_bytes must be at least 4096",
            ),
            (
                c.max_request_bytes < 1024,
                "max_request_bytes must be at least 1024",
            ),
            (
                c.max_batch_bytes < 1024,
                "max_batch_bytes must be at least 1024",
            ),
            (c.fetch_max_bytes == 0, "fetch_max_bytes must be at least 1"),
        ];
        if let Some((_, why)) = checks.iter().find(|(bad, _)| *bad) {
            return Err((*why).to_string());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md has one row per setting, and no row for a setting that is gone.
    #[test]
    fn the_configuration_page_lists_every_setting() {
        let toml = toml::to_string(&Config::default()).unwrap();
        let keys: std::collections::BTreeSet<String> = toml
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
            .filter(|k| !k.contains('.') && !k.starts_with('['))
            .collect();
        let page = include_str!("../../docs/configuration.md");
        let rows: std::collections::BTreeSet<String> = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
            .collect();
        // Lists that are empty by default serialize as `key = []`, so they are in `keys` too.
        assert_eq!(keys, rows, "settings vs docs/configuration.md rows");
    }

    #[test]
    fn file_values_are_overridden_by_flags_and_bad_values_refused() {
        let dir = std::env::temp_dir().join(format!("conflux-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("conflux.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/c\"\ndefault_partitions = 3\nfsync = \"interval\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            default_partitions: Some(5),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(c.default_partitions, 5, "flag beats file");
        assert_eq!(c.fsync, FsyncPolicy::Interval);
        assert_eq!(c.kafka_listen, "0.0.0.0:9092", "default kept");
        std::fs::write(
            &file,
            "mqtt_mapping = [ { filter = \"devices/+/telemetry\", stream = \"devices.telemetry\" } ]\nmqtt_deny_subscribe = [\"test/nosubscribe\"]\n",
        )
        .unwrap();
        let c = Config::load(&ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.mqtt_mapping[0].stream, "devices.telemetry");
        assert_eq!(c.mqtt_deny_subscribe, vec!["test/nosubscribe".to_string()]);
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        assert!(Config::load(&args).unwrap_err().contains("no_such_key"));
        let zero = ServeArgs {
            fsync_interval_ms: Some(0),
            ..Default::default()
        };
        assert!(Config::load(&zero).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
