//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs) and

use core_stream::{StreamConfig, StreamError};
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, TopicName,
};

use super::{s, Ctx};
use crate::configs;
use crate::errors::{code, error_code};
use crate::KafkaBroker;

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn topic_config(
    b: &KafkaBroker,
    num_partitions: i32,
    configs: &[(String, Option<String>)],
) -> Result<StreamConfig, StreamError> {
    let mut cfg = b.core.stream_defaults();
    if num_partitions != -1 {
        if num_partitions <= 0 {
            return Err(StreamError::InvalidPartitions(format!("{num_partitions}")));
        }
        cfg.partitions = num_partitions as u32;
    }
    for (k, v) in configs {
        if let Some(v) = v {
            configs::set(&mut cfg, k, v)?;
        }
    }
    Ok(cfg)
}

/// Checks a CreateTopics manual replica assignment as Kafka does, for a cluster whose only
/// broker is `node`: partitions numbered 0..n, each with exactly one replica, this broker.
/// Returns the partition count.
fn manual_assignment(
    assignments: &[kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment],
    num_partitions: i32,
    replication_factor: i16,
    node: i32,
) -> Result<i32, (i16, String)> {
    if num_partitions != -1 || replication_factor != -1 {
        return Err((
            code::INVALID_REQUEST,
            "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
        ));
    }
    let mut indexes: Vec<i32> = assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
        return Err((
            code::INVALID_REPLICA_ASSIGNMENT,
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    for a in assignments {
        let ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        if ids.as_slice() != [node] {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "partition {} is assigned to brokers {ids:?}; this cluster has one broker ({node}), so each partition has exactly that one replica",
                    a.partition_index
                ),
            ));
        }
    }
    Ok(assignments.len() as i32)
}

/// Creates topics (replication factor -1, or 1 up to `max_replication_factor`: this is a
/// single node).
pub fn create_topics(b: &KafkaBroker, ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let r = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_message(None);
            let fail = |c: i16, msg: String| {
                r.clone()
                    .with_error_code(c)
                    .with_error_message((ctx.version >= 1).then(|| s(msg)))
            };
            let max_rf = b.config.max_replication_factor.max(1);
            if t.replication_factor != -1 && !(1..=max_rf).contains(&t.replication_factor) {
                return fail(
                    code::INVALID_REPLICATION_FACTOR,
                    format!("this broker has one node: replication factor must be 1 (at most {max_rf} with kafka_max_replication_factor)"),
                );
            }
            let mut num_partitions = t.num_partitions;
            if !t.assignments.is_empty() {
                let node = b.config.node_id;
                match manual_assignment(
                    &t.assignments,
                    t.num_partitions,
                    t.replication_factor,
                    node,
                ) {
                    Ok(n) => num_partitions = n,
                    Err((c, msg)) => return fail(c, msg),
                }
            }
            let configs: Vec<(String, Option<String>)> = t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            let cfg = match topic_config(b, num_partitions, &configs) {
                Ok(c) => c,
                Err(e) => return fail(error_code(&e), e.to_string()),
            };
            let result = if req.validate_only {
                b.core.check_new_stream(&name, &cfg).map(|_| None)
            } else {
                b.core.create_stream(&name, cfg.clone()).map(Some)
            };
            match result {
                Ok(st) => {
                    let mut r = r;
                    if let (Some(st), true) = (st, ctx.version >= 7) {
                        r = r.with_topic_id(uuid::Uuid::from_bytes(st.id));
                    }
                    if ctx.version >= 5 {
                        r = r
                            .with_num_partitions(cfg.partitions as i32)
                            .with_replication_factor(1);
                        // Every topic config, by name, with its source (KIP-525), as Kafka does.
                        r = r.with_configs(Some(
                            configs::topic_entries(&cfg, &broker_defaults(b))
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(s(e.name))
                                        .with_value(Some(s(e.value)))
                                        .with_config_source(e.source)
                                        .with_read_only(false)
                                        .with_is_sensitive(false)
                                })
                                .collect(),
                        ));
                    }
                    r
                }
                Err(e) => fail(error_code(&e), e.to_string()),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Deletes topics by name (topic-id deletes are answered as unknown).
pub fn delete_topics(b: &KafkaBroker, ctx: &Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let names: Vec<TopicName> = req
        .topic_names
        .into_iter()
        .chain(req.topics.into_iter().filter_map(|t| t.name))
        .collect();
    let responses = names
        .into_iter()
        .map(|n| {
            let r = DeletableTopicResult::default().with_name(Some(n.clone()));
            match b.core.delete_stream(&n.0) {
                Ok(()) => {
                    b.txn.topic_deleted(&n.0);
                    r
                }
                Err(e) => r
                    .with_error_code(error_code(&e))
                    .with_error_message((ctx.version >= 5).then(|| s(e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Grows topics' partition counts.
pub fn create_partitions(
    b: &KafkaBroker,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let res = if t.count <= 0 {
                Err(StreamError::InvalidPartitions(format!("{}", t.count)))
            } else if req.validate_only {
                match b.core.stream(&t.name.0) {
                    None => Err(StreamError::UnknownStream(t.name.0.to_string())),
                    Some(st) if st.partition_count() as i32 >= t.count => {
                        Err(StreamError::InvalidPartitions(format!(
                            "{} has {} partitions",
                            st.name,
                            st.partition_count()
                        )))
                    }
                    Some(_) => Ok(()),
                }
            } else {
                b.core.set_partition_count(&t.name.0, t.count as u32)
            };
            match res {
                Ok(()) => r,
                Err(e) => r
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// What this broker's settings make the defaults of topic configs.
pub(crate) fn broker_defaults(b: &KafkaBroker) -> configs::BrokerDefaults {
    configs::BrokerDefaults {
        stream: b.core.stream_defaults(),
        max_batch_bytes: b.core.config().max_batch_bytes,
    }
}

fn broker_settings(b: &KafkaBroker) -> configs::BrokerSettings {
    let c = &b.config;
    configs::BrokerSettings {
        node_id: c.node_id,
        listener: format!("PLAINTEXT://{}", c.listener),
        advertised: format!("PLAINTEXT://{}:{}", c.advertised_host, c.advertised_port),
        log_dir: b.core.log_dir().display().to_string(),
        auto_create_topics: c.auto_create_topics,
        max_request_bytes: c.max_request_bytes,
        fetch_max_bytes: c.fetch_max_bytes,
        group_initial_rebalance_delay_ms: c.group_initial_rebalance_delay.as_millis() as u64,
        retention_check_interval_ms: b.core.config().retention_check_interval.as_millis() as u64,
        defaults: broker_defaults(b),
    }
}

/// One DescribeConfigs entry before filtering and encoding.
struct Entry {
    name: &'static str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    ty: configs::ConfigType,
    synonyms: Vec<(&'static str, Option<String>, i8)>,
    doc: &'static str,
}

/// The entries of one described resource, or the error answer for it.
fn describe_resource(
    b: &KafkaBroker,
    resource_type: i8,
    name: &str,
) -> Result<Vec<Entry>, (i16, Option<String>)> {
    match resource_type {
        RESOURCE_TOPIC => {
            let st = b
                .core
                .stream(name)
                .ok_or((code::UNKNOWN_TOPIC_OR_PARTITION, None))?;
            let defaults = broker_defaults(b);
            Ok(configs::topic_entries(&st.config(), &defaults)
                .into_iter()
                .map(|e| {
                    // Synonyms in Kafka's order: the topic override, then the broker setting
                    // that supplies the default.
                    let mut synonyms = Vec::new();
                    if e.source == configs::source::TOPIC {
                        synonyms.push((e.name, Some(e.value.clone()), configs::source::TOPIC));
                    }
                    if let Some(syn) = e.def.broker_synonym {
                        synonyms.push((syn, Some(defaults.value(e.def)), configs::source::DEFAULT));
                    }
                    Entry {
                        name: e.name,
                        value: Some(e.value),
                        source: e.source,
                        read_only: false,
                        ty: e.def.ty,
                        synonyms,
                        doc: e.def.doc,
                    }
                })
                .collect())
        }
        RESOURCE_BROKER => {
            // Kafka answers its own id, and "" (dynamic cluster defaults: none here).
            if name.is_empty() {
                return Ok(Vec::new());
            }
            match name.parse::<i32>() {
                Ok(id) if id == b.config.node_id => {}
                Ok(id) => {
                    return Err((
                        code::INVALID_REQUEST,
                        Some(format!(
                            "Unexpected broker id, expected {} or empty string, but received {id}",
                            b.config.node_id
                        )),
                    ))
                }
                Err(_) => {
                    return Err((
                        code::INVALID_REQUEST,
                        Some(format!("Broker id must be an integer, but it is: {name}")),
                    ))
                }
            }
            Ok(configs::broker_entries(&broker_settings(b))
                .into_iter()
                .map(|e| Entry {
                    name: e.name,
                    synonyms: vec![(e.name, e.value.clone(), e.source)],
                    value: e.value,
                    source: e.source,
                    read_only: e.read_only,
                    ty: e.ty,
                    doc: e.doc,
                })
                .collect())
        }
        _ => Err((
            code::INVALID_REQUEST,
            Some("only topic and broker resources are described".into()),
        )),
    }
}

/// DescribeConfigs for topics (every Kafka topic config, its value, source and type) and for
/// this broker (the settings clients look for, with their real values), as Kafka 4.x fills
/// them: synonyms only when asked for, documentation only when asked for.
pub fn describe_configs(
    b: &KafkaBroker,
    ctx: &Ctx,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let entries = match describe_resource(b, res.resource_type, &res.resource_name) {
                Ok(e) => e,
                Err((c, msg)) => return r.with_error_code(c).with_error_message(msg.map(s)),
            };
            // A null or empty key list means every key.
            let wanted: Option<Vec<String>> = res
                .configuration_keys
                .filter(|ks| !ks.is_empty())
                .map(|ks| ks.iter().map(|k| k.to_string()).collect());
            let configs = entries
                .into_iter()
                .filter(|e| {
                    wanted
                        .as_ref()
                        .is_none_or(|w| w.iter().any(|k| k == e.name))
                })
                .map(|e| {
                    let synonyms = if req.include_synonyms {
                        e.synonyms
                            .into_iter()
                            .map(|(n, v, src)| {
                                DescribeConfigsSynonym::default()
                                    .with_name(s(n))
                                    .with_value(v.map(s))
                                    .with_source(src)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    DescribeConfigsResourceResult::default()
                        .with_name(s(e.name))
                        .with_value(e.value.map(s))
                        .with_read_only(e.read_only)
                        .with_config_source(e.source)
                        .with_is_sensitive(false)
                        .with_synonyms(synonyms)
                        .with_config_type(if ctx.version >= 3 { e.ty as i8 } else { 0 })
                        .with_documentation(
                            (req.include_documentation && ctx.version >= 3).then(|| s(e.doc)),
                        )
                })
                .collect();
            r.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// One requested change to a topic setting.
enum ConfigOp {
    Set(String, String),
    Unset(String),
}

/// Applies setting changes to a topic (`replace`: AlterConfigs semantics, every setting not
/// named returns to its default). Broker settings come from the config file and are refused.
fn alter_topic(
    b: &KafkaBroker,
    resource_type: i8,
    name: &str,
    ops: Vec<ConfigOp>,
    replace: bool,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            code::INVALID_REQUEST,
            "only topic configs can be altered; broker settings come from the config file".into(),
        ));
    }
    let defaults = b.core.stream_defaults();
    let apply = |cfg: &mut StreamConfig| -> core_stream::Result<()> {
        if replace {
            *cfg = StreamConfig {
                partitions: cfg.partitions,
                ..defaults.clone()
            };
        }
        for op in &ops {
            match op {
                ConfigOp::Set(k, v) => configs::set(cfg, k, v)?,
                ConfigOp::Unset(k) => configs::unset(cfg, k, &defaults),
            }
        }
        Ok(())
    };
    let res = match b.core.stream(name) {
        None => Err(StreamError::UnknownStream(name.to_string())),
        Some(st) if validate_only => apply(&mut st.config()),
        Some(_) => b.core.update_stream_config(name, apply),
    };
    res.map_err(|e| (error_code(&e), e.to_string()))
}

fn alter_result(
    r: AlterConfigsResourceResponse,
    res: Result<(), (i16, String)>,
) -> AlterConfigsResourceResponse {
    match res {
        Ok(()) => r,
        Err((c, msg)) => r.with_error_code(c).with_error_message(Some(s(msg))),
    }
}

/// AlterConfigs: replaces a topic's settings (those not named return to their defaults).
pub fn alter_configs(b: &KafkaBroker, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let ops = res
                .configs
                .into_iter()
                .map(|c| match c.value {
                    Some(v) => ConfigOp::Set(c.name.to_string(), v.to_string()),
                    None => ConfigOp::Unset(c.name.to_string()),
                })
                .collect();
            alter_result(
                r,
                alter_topic(
                    b,
                    res.resource_type,
                    &res.resource_name,
                    ops,
                    true,
                    req.validate_only,
                ),
            )
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: SET (0) and DELETE (1) per setting; APPEND/SUBTRACT (2/3) for
/// the list setting `cleanup.policy`.
pub fn incremental_alter_configs(
    b: &KafkaBroker,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as Resp;
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let r = Resp::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let current = (res.resource_type == 2)
                .then(|| b.core.stream(&res.resource_name))
                .flatten()
                .and_then(|st| st.config().extra.get("cleanup.policy").cloned())
                .unwrap_or_else(|| "delete".to_string());
            let list_op = |add: bool, v: &str| {
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect();
                for x in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    if add && !items.iter().any(|i| i == x) {
                        items.push(x.to_string());
                    } else if !add {
                        items.retain(|i| i != x);
                    }
                }
                items.join(",")
            };
            let ops: Result<Vec<ConfigOp>, (i16, String)> = res
                .configs
                .into_iter()
                .map(|c| match (c.config_operation, c.value) {
                    (0, Some(v)) => Ok(ConfigOp::Set(c.name.to_string(), v.to_string())),
                    (1, _) => Ok(ConfigOp::Unset(c.name.to_string())),
                    (op @ (2 | 3), Some(v)) if c.name.as_str() == "cleanup.policy" => Ok(
                        ConfigOp::Set(c.name.to_string(), list_op(op == 2, v.as_str())),
                    ),
                    (op, _) => Err((
                        code::INVALID_CONFIG,
                        format!("operation {op} is not valid for {}", c.name.as_str()),
                    )),
                })
                .collect();
            let res = ops.and_then(|ops| {
                alter_topic(
                    b,
                    res.resource_type,
                    &res.resource_name,
                    ops,
                    false,
                    req.validate_only,
                )
            });
            match res {
                Ok(()) => r,
                Err((c, msg)) => r.with_error_code(c).with_error_message(Some(s(msg))),
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
