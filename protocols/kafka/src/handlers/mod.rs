//! Request dispatch: guard, decode, route to the handler for the API, encode the answer.
//!
//! Handlers that finish at once return a [`ResponseKind`]; those that wait (produce for
//! durability, fetch for data, join/sync for the group) return a future of one.

pub mod acls;
pub mod admin;
pub mod api_versions;
pub mod delete_records;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod replicas;
pub mod txn;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tracing::warn;

use crate::codec;
use crate::connection::Pending;
use crate::errors::KafkaError;
use crate::guard::{self, GuardError};
use crate::KafkaBroker;

/// Largest frame accepted for any request other than Produce.
pub const MAX_NON_PRODUCE_FRAME: usize = 1024 * 1024;

/// What a handler knows about the request it answers.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// API version the client used (the answer uses the same).
    pub version: i16,
    /// Client id from the request header.
    pub client_id: String,
}

/// Builds the future that encodes a response once `fut` resolves.
fn respond<F>(corr: i32, version: i16, fut: F) -> Pending
where
    F: Future<Output = Option<ResponseKind>> + Send + 'static,
{
    Box::pin(async move {
        let resp = fut.await?;
        match codec::encode_response(corr, version, &resp) {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(error = %e, "could not encode response");
                None
            }
        }
    })
}

fn ready(corr: i32, version: i16, resp: ResponseKind) -> Pending {
    respond(corr, version, async move { Some(resp) })
}

/// Handles one request frame (without its size prefix). `Err` closes the connection with the reason.
pub fn dispatch(b: &Arc<KafkaBroker>, frame: Bytes) -> Result<Pending, KafkaError> {
    let h = match guard::check_request(&frame) {
        Ok(h) => h,
        Err(GuardError::UnsupportedVersion {
            api_key: 18,
            correlation_id,
            ..
        }) => {
            let apis = api_versions::supported();
            let bytes = codec::api_versions_fallback(correlation_id, &apis);
            return Ok(Box::pin(async move { Some(bytes) }));
        }
        Err(GuardError::UnsupportedVersion {
            api_key: 0,
            api_version: v @ 0..=2,
            correlation_id,
        }) => {
            let answer = produce::legacy_unsupported(&frame, v, correlation_id)?;
            return Ok(Box::pin(async move { answer }));
        }
        Err(e) => return Err(e.into()),
    };
    // Decoded structs are larger than their wire form (a 2-byte topic entry becomes ~80 bytes),
    // so only Produce, whose records stay as shared bytes, may use large frames.
    if h.api_key != 0 && frame.len() > MAX_NON_PRODUCE_FRAME {
        return Err(KafkaError::TooLarge {
            api_key: h.api_key,
            len: frame.len(),
            max: MAX_NON_PRODUCE_FRAME,
        });
    }
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, h.header_version)
        .map_err(|e| KafkaError::Decode(format!("request header: {e}")))?;
    let api = ApiKey::try_from(h.api_key)
        .map_err(|_| KafkaError::NotServed(format!("api key {}", h.api_key)))?;
    let req = RequestKind::decode(api, &mut buf, h.api_version)
        .map_err(|e| KafkaError::Decode(format!("{api:?} v{}: {e}", h.api_version)))?;
    let corr = header.correlation_id;
    let v = h.api_version;
    let ctx = Ctx {
        version: v,
        client_id: header.client_id.map(|s| s.to_string()).unwrap_or_default(),
    };
    let b = b.clone();
    Ok(match req {
        RequestKind::ApiVersions(_) => {
            ready(corr, v, ResponseKind::ApiVersions(api_versions::handle()))
        }
        RequestKind::Metadata(r) => ready(
            corr,
            v,
            ResponseKind::Metadata(metadata::handle(&b, &ctx, r)),
        ),
        RequestKind::Produce(r) => respond(corr, v, produce::handle(b, ctx, r)),
        RequestKind::Fetch(r) => respond(corr, v, async move {
            Some(ResponseKind::Fetch(fetch::handle(b, ctx, r).await))
        }),
        RequestKind::ListOffsets(r) => ready(
            corr,
            v,
            ResponseKind::ListOffsets(list_offsets::handle(&b, &ctx, r)),
        ),
        RequestKind::OffsetForLeaderEpoch(r) => ready(
            corr,
            v,
            ResponseKind::OffsetForLeaderEpoch(list_offsets::offset_for_leader_epoch(&b, r)),
        ),
        RequestKind::FindCoordinator(r) => ready(
            corr,
            v,
            ResponseKind::FindCoordinator(groups::find_coordinator(&b, &ctx, r)),
        ),
        RequestKind::JoinGroup(r) => {
            let joined = groups::join(&b, ctx, r);
            respond(corr, v, async move {
                Some(ResponseKind::JoinGroup(joined.await))
            })
        }
        RequestKind::SyncGroup(r) => {
            let synced = groups::sync(&b, ctx, r);
            respond(corr, v, async move {
                Some(ResponseKind::SyncGroup(synced.await))
            })
        }
        RequestKind::Heartbeat(r) => {
            ready(corr, v, ResponseKind::Heartbeat(groups::heartbeat(&b, r)))
        }
        RequestKind::LeaveGroup(r) => ready(
            corr,
            v,
            ResponseKind::LeaveGroup(groups::leave(&b, &ctx, r)),
        ),
        RequestKind::OffsetCommit(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::OffsetCommit(groups::offset_commit(&b, r))),
        ),
        RequestKind::OffsetFetch(r) => ready(
            corr,
            v,
            ResponseKind::OffsetFetch(groups::offset_fetch(&b, &ctx, r)),
        ),
        RequestKind::ListGroups(r) => ready(
            corr,
            v,
            ResponseKind::ListGroups(groups::list_groups(&b, &ctx, r)),
        ),
        RequestKind::DescribeGroups(r) => ready(
            corr,
            v,
            ResponseKind::DescribeGroups(groups::describe_groups(&b, r)),
        ),
        RequestKind::CreateTopics(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::CreateTopics(admin::create_topics(&b, &ctx, r))),
        ),
        RequestKind::DeleteTopics(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::DeleteTopics(admin::delete_topics(&b, &ctx, r))),
        ),
        RequestKind::CreatePartitions(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::CreatePartitions(admin::create_partitions(&b, r))),
        ),
        RequestKind::DescribeConfigs(r) => ready(
            corr,
            v,
            ResponseKind::DescribeConfigs(admin::describe_configs(&b, &ctx, r)),
        ),
        RequestKind::InitProducerId(r) => respond(corr, v, async move {
            Some(ResponseKind::InitProducerId(
                txn::init_producer_id(b, r).await,
            ))
        }),
        RequestKind::AddPartitionsToTxn(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::AddPartitionsToTxn(txn::add_partitions(&b, r))),
        ),
        RequestKind::AddOffsetsToTxn(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::AddOffsetsToTxn(txn::add_offsets(&b, r))),
        ),
        RequestKind::TxnOffsetCommit(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(&b, r))),
        ),
        RequestKind::EndTxn(r) => respond(corr, v, async move {
            Some(ResponseKind::EndTxn(txn::end_txn(b, r).await))
        }),
        RequestKind::DescribeTransactions(r) => ready(
            corr,
            v,
            ResponseKind::DescribeTransactions(txn::describe(&b, r)),
        ),
        RequestKind::ListTransactions(r) => {
            ready(corr, v, ResponseKind::ListTransactions(txn::list(&b, r)))
        }
        RequestKind::AlterConfigs(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::AlterConfigs(admin::alter_configs(&b, r))),
        ),
        RequestKind::IncrementalAlterConfigs(r) => ready(
            corr,
            v,
            blocking(|| {
                ResponseKind::IncrementalAlterConfigs(admin::incremental_alter_configs(&b, r))
            }),
        ),
        RequestKind::DeleteGroups(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::DeleteGroups(groups::delete_groups(&b, r))),
        ),
        RequestKind::DescribeCluster(r) => ready(
            corr,
            v,
            ResponseKind::DescribeCluster(metadata::describe_cluster(&b, r)),
        ),
        RequestKind::DeleteRecords(r) => ready(
            corr,
            v,
            blocking(|| ResponseKind::DeleteRecords(delete_records::handle(&b, r))),
        ),
        RequestKind::DescribeLogDirs(r) => ready(
            corr,
            v,
            ResponseKind::DescribeLogDirs(replicas::describe_log_dirs(&b, &ctx, r)),
        ),
        RequestKind::AlterReplicaLogDirs(r) => ready(
            corr,
            v,
            ResponseKind::AlterReplicaLogDirs(replicas::alter_replica_log_dirs(&b, r)),
        ),
        RequestKind::ElectLeaders(r) => ready(
            corr,
            v,
            ResponseKind::ElectLeaders(replicas::elect_leaders(&b, r)),
        ),
        RequestKind::ListPartitionReassignments(r) => ready(
            corr,
            v,
            ResponseKind::ListPartitionReassignments(replicas::list_partition_reassignments(&b, r)),
        ),
        RequestKind::AlterPartitionReassignments(r) => ready(
            corr,
            v,
            ResponseKind::AlterPartitionReassignments(replicas::alter_partition_reassignments(
                &b, r,
            )),
        ),
        RequestKind::DescribeTopicPartitions(r) => ready(
            corr,
            v,
            ResponseKind::DescribeTopicPartitions(metadata::describe_topic_partitions(&b, r)),
        ),
        RequestKind::DescribeQuorum(r) => ready(
            corr,
            v,
            ResponseKind::DescribeQuorum(metadata::describe_quorum(&b, r)),
        ),
        RequestKind::DescribeAcls(r) => {
            ready(corr, v, ResponseKind::DescribeAcls(acls::describe(r)))
        }
        RequestKind::CreateAcls(r) => ready(corr, v, ResponseKind::CreateAcls(acls::create(r))),
        RequestKind::DeleteAcls(r) => ready(corr, v, ResponseKind::DeleteAcls(acls::delete(r))),
        _ => return Err(KafkaError::NotServed(format!("{api:?}"))),
    })
}

/// Runs a handler that writes the metadata store (a redb commit with fsync) in request order,
/// while letting the runtime move other tasks off this worker thread meanwhile.
/// (On a current-thread runtime, where that is impossible, it simply runs.)
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Partition `index` of a topic looked up once per request topic (`None`: unknown topic).
pub(crate) fn partition_of(
    stream: Option<&Arc<core_stream::Stream>>,
    topic: &str,
    index: i32,
) -> Result<Arc<dyn core_stream::PartitionLog>, core_stream::StreamError> {
    match stream {
        Some(s) => s.partition(index),
        None => Err(core_stream::StreamError::UnknownStream(topic.to_string())),
    }
}

/// Kafka string from a Rust string.
pub(crate) fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}
