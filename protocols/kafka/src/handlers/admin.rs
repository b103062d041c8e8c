//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs) and
//! InitProducerId for idempotent producers.

use core_stream::{StreamConfig, StreamError};
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
    TopicName,
};

use super::{s, Ctx};
use crate::errors::{code, error_code};
use crate::KafkaBroker;

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

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
            cfg.set(k, v)?;
        }
    }
    Ok(cfg)
}

/// Creates topics (replication factor must be 1 or -1: this is a single node).
pub fn create_topics(b: &KafkaBroker, ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let r = CreatableTopicResult::default().with_name(t.name.clone());
            let fail = |c: i16, msg: String| {
                r.clone()
                    .with_error_code(c)
                    .with_error_message((ctx.version >= 1).then(|| s(msg)))
            };
            if t.replication_factor != -1 && t.replication_factor != 1 {
                return fail(
                    code::INVALID_REPLICATION_FACTOR,
                    "this broker has one node: replication factor must be 1".into(),
                );
            }
            if !t.assignments.is_empty() {
                return fail(
                    code::INVALID_REQUEST,
                    "manual replica assignment is not supported".into(),
                );
            }
            let configs: Vec<(String, Option<String>)> = t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            let cfg = match topic_config(b, t.num_partitions, &configs) {
                Ok(c) => c,
                Err(e) => return fail(error_code(&e), e.to_string()),
            };
            let result = if req.validate_only {
                core_stream::validate_name(&name).and_then(|_| match b.core.stream(&name) {
                    Some(_) => Err(StreamError::StreamExists(name.clone())),
                    None => Ok(None),
                })
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
                        r = r.with_configs(Some(
                            cfg.entries()
                                .into_iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(s(k))
                                        .with_value(Some(s(v)))
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
                Ok(()) => r,
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

/// Describes topic configs (retention and friends) and a few broker settings.
pub fn describe_configs(b: &KafkaBroker, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let defaults = b.core.stream_defaults();
    let results =
        req.resources
            .into_iter()
            .map(|res| {
                let name = res.resource_name.to_string();
                let r = DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let entries: Vec<(String, String, i8)> =
                    match res.resource_type {
                        RESOURCE_TOPIC => match b.core.stream(&name) {
                            Some(st) => {
                                let def: std::collections::HashMap<_, _> =
                                    defaults.entries().into_iter().collect();
                                st.config()
                                    .entries()
                                    .into_iter()
                                    .map(|(k, v)| {
                                        let src = if def.get(&k) == Some(&v) {
                                            SOURCE_DEFAULT
                                        } else {
                                            SOURCE_TOPIC
                                        };
                                        (k, v, src)
                                    })
                                    .collect()
                            }
                            None => {
                                return r
                                    .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                                    .with_error_message(Some(s(format!("unknown topic {name}"))))
                            }
                        },
                        RESOURCE_BROKER => vec![
                            (
                                "num.partitions".into(),
                                defaults.partitions.to_string(),
                                SOURCE_DEFAULT,
                            ),
                            (
                                "auto.create.topics.enable".into(),
                                b.config.auto_create_topics.to_string(),
                                SOURCE_DEFAULT,
                            ),
                            (
                                "log.retention.ms".into(),
                                defaults.retention_ms.to_string(),
                                SOURCE_DEFAULT,
                            ),
                            (
                                "log.segment.bytes".into(),
                                defaults.segment_bytes.to_string(),
                                SOURCE_DEFAULT,
                            ),
                        ],
                        _ => {
                            return r.with_error_code(code::INVALID_REQUEST).with_error_message(
                                Some(s("only topic and broker resources are described")),
                            )
                        }
                    };
                let wanted = res
                    .configuration_keys
                    .map(|ks| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                let configs = entries
                    .into_iter()
                    .filter(|(k, _, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
                    .map(|(k, v, src)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                            .with_config_source(src)
                    })
                    .collect();
                r.with_configs(configs)
            })
            .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Hands out a producer id for idempotent producers. Transactions are not supported.
pub fn init_producer_id(b: &KafkaBroker, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        return r
            .with_error_code(code::INVALID_REQUEST)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // A client bumping the epoch of its own id (KIP-360) gets the next epoch of the same id.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
        return r
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match b.core.next_producer_id() {
        Ok(id) => r.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => r
            .with_error_code(error_code(&e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
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
                ConfigOp::Set(k, v) => cfg.set(k, v)?,
                ConfigOp::Unset(k) => cfg.unset(k, &defaults),
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

/// IncrementalAlterConfigs: SET (0) and DELETE (1) per setting; APPEND/SUBTRACT (2/3) apply
/// only to list settings, which topics here do not have.
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
            let ops: Result<Vec<ConfigOp>, (i16, String)> = res
                .configs
                .into_iter()
                .map(|c| match (c.config_operation, c.value) {
                    (0, Some(v)) => Ok(ConfigOp::Set(c.name.to_string(), v.to_string())),
                    (1, _) => Ok(ConfigOp::Unset(c.name.to_string())),
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
