//! Replica and log-directory administration, answered truthfully for a single node: every
//! partition has exactly one replica (this broker), which leads it, in one log directory
//! (`<data dir>/streams`). DescribeLogDirs, AlterReplicaLogDirs, ElectLeaders,
//! ListPartitionReassignments and AlterPartitionReassignments answer as a one-broker Kafka
//! cluster does.

use std::sync::Arc;

use core_stream::Stream;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{s, Ctx};
use crate::errors::code;
use crate::KafkaBroker;

/// The requested partitions (`None` = every partition of every topic), resolved against the
/// core: `(topic, [(partition, exists)])`, or `None` for an unknown topic.
fn requested(
    b: &KafkaBroker,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Vec<(TopicName, Option<Arc<Stream>>, Vec<i32>)> {
    match topics {
        None => b
            .core
            .list_streams()
            .into_iter()
            .map(|st| {
                let parts = (0..st.partition_count() as i32).collect();
                (TopicName(s(st.name.clone())), Some(st), parts)
            })
            .collect(),
        Some(ts) => ts
            .into_iter()
            .map(|(name, parts)| {
                let st = b.core.stream(&name.0);
                (name, st, parts)
            })
            .collect(),
    }
}

fn exists(st: &Option<Arc<Stream>>, partition: i32) -> bool {
    st.as_ref()
        .is_some_and(|st| partition >= 0 && (partition as usize) < st.partition_count())
}

/// DescribeLogDirs: the one log directory, its partitions with their sizes, and (v4) the
/// file system's total and usable bytes.
pub fn describe_log_dirs(
    b: &KafkaBroker,
    ctx: &Ctx,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic, t.partitions))
            .collect::<Vec<_>>()
    });
    let topics = requested(b, wanted)
        .into_iter()
        .filter_map(|(name, st, parts)| {
            let st = st?;
            let partitions: Vec<_> = parts
                .into_iter()
                .filter_map(|i| {
                    let p = st.partition(i).ok()?;
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(i)
                            .with_partition_size(p.size_bytes() as i64)
                            .with_offset_lag(0)
                            .with_is_future_key(false),
                    )
                })
                .collect();
            Some(
                DescribeLogDirsTopic::default()
                    .with_name(name)
                    .with_partitions(partitions),
            )
        })
        .collect();
    let (total, usable) = match (ctx.version >= 4, b.core.disk_space()) {
        (true, Ok((t, u))) => (t as i64, u as i64),
        _ => (-1, -1),
    };
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(s(b.core.log_dir().display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
}

/// AlterReplicaLogDirs: moving a replica to the directory it is already in succeeds at once;
/// any other directory does not exist here (`LOG_DIR_NOT_FOUND`).
pub fn alter_replica_log_dirs(
    b: &KafkaBroker,
    req: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let ours = b.core.log_dir();
    let results = req
        .dirs
        .into_iter()
        .flat_map(|d| {
            let same_dir = std::path::Path::new(d.path.as_str()) == ours;
            let topics: Vec<_> = d
                .topics
                .into_iter()
                .map(|t| (t.name, t.partitions))
                .collect();
            requested(b, Some(topics))
                .into_iter()
                .map(move |(name, st, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|i| {
                            let err = if !exists(&st, i) {
                                code::UNKNOWN_TOPIC_OR_PARTITION
                            } else if same_dir {
                                code::NONE
                            } else {
                                code::LOG_DIR_NOT_FOUND
                            };
                            AlterReplicaLogDirPartitionResult::default()
                                .with_partition_index(i)
                                .with_error_code(err)
                        })
                        .collect();
                    AlterReplicaLogDirTopicResult::default()
                        .with_topic_name(name)
                        .with_partitions(partitions)
                })
        })
        .collect();
    AlterReplicaLogDirsResponse::default().with_results(results)
}

/// ElectLeaders: this broker is every partition's only replica and already its leader, so
/// no election is ever needed (`ELECTION_NOT_NEEDED`, as Kafka answers for a partition led
/// by its preferred replica). With no partitions named (all), Kafka lists none.
pub fn elect_leaders(b: &KafkaBroker, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let Some(named) = req.topic_partitions else {
        return ElectLeadersResponse::default();
    };
    let wanted = named.into_iter().map(|t| (t.topic, t.partitions)).collect();
    let results = requested(b, Some(wanted))
        .into_iter()
        .map(|(name, st, parts)| {
            let partition_result = parts
                .into_iter()
                .map(|i| {
                    let (err, msg) = if exists(&st, i) {
                        (
                            code::ELECTION_NOT_NEEDED,
                            "Leader election not needed for topic partition.",
                        )
                    } else {
                        (
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                            "This server does not host this topic-partition.",
                        )
                    };
                    PartitionResult::default()
                        .with_partition_id(i)
                        .with_error_code(err)
                        .with_error_message(Some(s(msg)))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(name)
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// ListPartitionReassignments: a single node never has a reassignment in progress.
pub fn list_partition_reassignments(
    _b: &KafkaBroker,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default()
}

/// AlterPartitionReassignments: reassigning a partition to its current replica set (this
/// broker) completes at once; naming any other broker is `INVALID_REPLICA_ASSIGNMENT`;
/// cancelling (null replicas) finds nothing to cancel.
pub fn alter_partition_reassignments(
    b: &KafkaBroker,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let node = b.config.node_id;
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let st = b.core.stream(&t.name.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let (err, msg) = if !exists(&st, p.partition_index) {
                        (
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                            Some("The partition does not exist.".to_string()),
                        )
                    } else {
                        match p.replicas {
                            None => (
                                code::NO_REASSIGNMENT_IN_PROGRESS,
                                Some("No reassignment is in progress for this partition.".into()),
                            ),
                            Some(rs) if rs.len() == 1 && rs[0].0 == node => (code::NONE, None),
                            Some(rs) => (
                                code::INVALID_REPLICA_ASSIGNMENT,
                                Some(format!(
                                    "replicas {:?}: this cluster has one broker ({node}) and one replica per partition",
                                    rs.iter().map(|r| r.0).collect::<Vec<_>>()
                                )),
                            ),
                        }
                    };
                    r.with_error_code(err).with_error_message(msg.map(s))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}
