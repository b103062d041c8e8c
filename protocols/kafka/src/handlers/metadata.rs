//! Metadata: this single broker, and every requested topic with its partitions (auto-creating
//! unknown topics when allowed).

use std::sync::Arc;

use core_stream::{Stream, StreamError};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};

use super::{s, Ctx};
use crate::errors::error_code;
use crate::KafkaBroker;

/// Cluster id reported to clients.
pub const CLUSTER_ID: &str = "conflux-single-node";

/// ACL operation bits reported when a client asks what it may do (no ACLs here: everything).
/// Topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// Group: READ, DELETE, DESCRIBE.
pub const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// Looks a topic up, creating it when `create` is set and auto-creation is enabled.
pub fn resolve_topic(
    b: &KafkaBroker,
    name: &str,
    create: bool,
) -> Result<Arc<Stream>, StreamError> {
    match b.core.stream(name) {
        Some(s) => Ok(s),
        // Creating writes the metadata store (an fsync'd commit).
        None if create && b.config.auto_create_topics => {
            super::blocking(|| b.core.get_or_create_stream(name))
        }
        None => Err(StreamError::UnknownStream(name.to_string())),
    }
}

/// The partitions of a topic as Metadata describes them (this node leads all, epoch 0).
pub fn topic_entry(b: &KafkaBroker, version: i16, st: &Stream) -> MetadataResponseTopic {
    let node = BrokerId(b.config.node_id);
    let partitions = (0..st.partition_count() as i32)
        .map(|i| {
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(node)
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(st.name.clone()))))
        .with_topic_id(if version >= 10 {
            uuid::Uuid::from_bytes(st.id)
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(partitions)
}

/// Answers a Metadata request.
pub fn handle(b: &KafkaBroker, ctx: &Ctx, req: MetadataRequest) -> MetadataResponse {
    let allow_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let with_ops = req.include_topic_authorized_operations;
    let topics: Vec<MetadataResponseTopic> = match req.topics {
        None => b
            .core
            .list_streams()
            .iter()
            .map(|st| topic_entry(b, ctx.version, st))
            .collect(),
        Some(ts) if ts.is_empty() && ctx.version == 0 => {
            // v0: an empty list means all topics.
            b.core
                .list_streams()
                .iter()
                .map(|st| topic_entry(b, ctx.version, st))
                .collect()
        }
        Some(ts) => ts
            .into_iter()
            .map(|t| {
                let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                match resolve_topic(b, &name, allow_create) {
                    Ok(st) => topic_entry(b, ctx.version, &st),
                    Err(e) => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(s(name))))
                        .with_error_code(error_code(&e)),
                }
            })
            .collect(),
    };
    let topics = topics
        .into_iter()
        .map(|t| {
            if with_ops {
                t.with_topic_authorized_operations(TOPIC_OPERATIONS)
            } else {
                t
            }
        })
        .collect();
    let mut resp = MetadataResponse::default();
    if req.include_cluster_authorized_operations {
        resp = resp.with_cluster_authorized_operations(CLUSTER_OPERATIONS);
    }
    resp.with_brokers(vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(b.config.node_id))
        .with_host(s(b.config.advertised_host.clone()))
        .with_port(i32::from(b.config.advertised_port))])
        .with_cluster_id((ctx.version >= 2).then(|| s(CLUSTER_ID)))
        .with_controller_id(BrokerId(if ctx.version >= 1 {
            b.config.node_id
        } else {
            -1
        }))
        .with_topics(topics)
}

/// DescribeCluster: this one broker (admin clients ask this instead of Metadata when offered).
pub fn describe_cluster(b: &KafkaBroker, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let node = BrokerId(b.config.node_id);
    let mut r = DescribeClusterResponse::default()
        .with_cluster_id(s(CLUSTER_ID))
        .with_controller_id(node)
        .with_endpoint_type(req.endpoint_type)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(s(b.config.advertised_host.clone()))
            .with_port(i32::from(b.config.advertised_port))]);
    if req.include_cluster_authorized_operations {
        r = r.with_cluster_authorized_operations(CLUSTER_OPERATIONS);
    }
    r
}

/// DescribeTopicPartitions (the Java AdminClient's `describeTopics` on 4.x brokers): the named
/// topics (all when none are named) in name order, their partitions paged by
/// `response_partition_limit` with a cursor, as Kafka pages them.
pub fn describe_topic_partitions(
    b: &KafkaBroker,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    use kafka_protocol::messages::describe_topic_partitions_response::{
        Cursor, DescribeTopicPartitionsResponsePartition as Part,
        DescribeTopicPartitionsResponseTopic as Topic,
    };
    let mut names: Vec<String> = if req.topics.is_empty() {
        b.core
            .list_streams()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (c.topic_name.to_string(), c.partition_index.max(0)),
        None => (String::new(), 0),
    };
    let mut budget = if req.response_partition_limit > 0 {
        req.response_partition_limit as usize
    } else {
        2000
    };
    let node = BrokerId(b.config.node_id);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        let t = Topic::default().with_name(Some(TopicName(s(name.clone()))));
        let Some(st) = b.core.stream(&name) else {
            topics.push(t.with_error_code(crate::errors::code::UNKNOWN_TOPIC_OR_PARTITION));
            continue;
        };
        if budget == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(TopicName(s(name))));
            break;
        }
        let first = if name == start_topic {
            start_partition
        } else {
            0
        };
        let count = st.partition_count() as i32;
        let mut parts = Vec::new();
        for i in first..count {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(s(name.clone())))
                        .with_partition_index(i),
                );
                break;
            }
            budget -= 1;
            parts.push(
                Part::default()
                    .with_partition_index(i)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![])),
            );
        }
        topics.push(
            t.with_topic_id(uuid::Uuid::from_bytes(st.id))
                .with_partitions(parts)
                .with_topic_authorized_operations(TOPIC_OPERATIONS),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// Name of the metadata log a KRaft quorum describes.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum (`kafka-metadata-quorum describe`): a single node is its own one-voter
/// quorum and leads it. The high watermark counts the topic changes since start.
pub fn describe_quorum(b: &KafkaBroker, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let node = BrokerId(b.config.node_id);
    let hw = b.core.catalog_version() as i64;
    let now = core_stream::partition::now_ms();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = PartitionData::default().with_partition_index(p.partition_index);
                    if t.topic_name.0.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return r
                            .with_error_code(crate::errors::code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    r.with_leader_id(node)
                        .with_leader_epoch(1)
                        .with_high_watermark(hw)
                        .with_current_voters(vec![ReplicaState::default()
                            .with_replica_id(node)
                            .with_log_end_offset(hw)
                            .with_last_fetch_timestamp(now)
                            .with_last_caught_up_timestamp(now)])
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(topics)
        .with_nodes(vec![Node::default().with_node_id(node).with_listeners(
            vec![Listener::default()
                .with_name(s("PLAINTEXT"))
                .with_host(s(b.config.advertised_host.clone()))
                .with_port(b.config.advertised_port)],
        )])
}
