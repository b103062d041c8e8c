//! ListOffsets (earliest, latest, max timestamp, by timestamp) and OffsetForLeaderEpoch.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use crate::errors::error_code;
use crate::KafkaBroker;

/// Kafka's special timestamps in ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// Earliest offset on local disk (v8+, tiered storage): all data is local here.
const EARLIEST_LOCAL: i64 = -4;
/// Latest offset in tiered storage (v9+): there is none here.
const LATEST_TIERED: i64 = -5;

/// Answers ListOffsets. `read_committed` (isolation level 1) sees the latest offset as the
/// last stable offset (before any open transaction).
pub fn handle(b: &KafkaBroker, ctx: &super::Ctx, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let stream = b.core.stream(&t.name.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let part = super::partition_of(stream.as_ref(), &t.name.0, p.partition_index);
                    let part = match part {
                        Ok(x) => x,
                        Err(e) => {
                            return r
                                .with_error_code(error_code(&e))
                                .with_offset(-1)
                                .with_timestamp(-1)
                        }
                    };
                    let (offset, ts) = match p.timestamp {
                        LATEST if committed => (
                            b.txn.last_stable_offset(
                                &t.name.0,
                                p.partition_index,
                                part.high_watermark(),
                            ),
                            -1,
                        ),
                        LATEST => (part.high_watermark(), -1),
                        EARLIEST | EARLIEST_LOCAL => (part.log_start_offset(), -1),
                        LATEST_TIERED => (-1, -1),
                        MAX_TIMESTAMP => part.max_timestamp().unwrap_or((-1, -1)),
                        ts => match part.offset_for_timestamp(ts) {
                            Ok(found) => found.unwrap_or((-1, -1)),
                            Err(e) => {
                                return r
                                    .with_error_code(error_code(&e))
                                    .with_offset(-1)
                                    .with_timestamp(-1)
                            }
                        },
                    };
                    r.with_offset(offset)
                        .with_timestamp(ts)
                        .with_leader_epoch(if ctx.version >= 4 { 0 } else { -1 })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Answers OffsetForLeaderEpoch: this node has only ever had epoch 0, which ends at the high watermark.
pub fn offset_for_leader_epoch(
    b: &KafkaBroker,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let stream = b.core.stream(&t.topic.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition);
                    match super::partition_of(stream.as_ref(), &t.topic.0, p.partition) {
                        Ok(part) => r
                            .with_leader_epoch(0)
                            .with_end_offset(part.high_watermark()),
                        Err(e) => r
                            .with_error_code(error_code(&e))
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
