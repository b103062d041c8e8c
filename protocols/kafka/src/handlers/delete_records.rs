//! DeleteRecords: moves a partition's log start offset forward (the admin `delete_records`
//! call). Records before it are no longer served; whole segments below it are deleted.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::errors::{code, error_code};
use crate::KafkaBroker;

/// `offset = -1` in a request means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Answers DeleteRecords; the new start offsets are durable when the answer goes out.
pub fn handle(b: &KafkaBroker, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let stream = b.core.stream(&t.name.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let part =
                        match super::partition_of(stream.as_ref(), &t.name.0, p.partition_index) {
                            Ok(part) => part,
                            Err(e) => return r.with_error_code(error_code(&e)),
                        };
                    let offset = match p.offset {
                        HIGH_WATERMARK => part.high_watermark(),
                        o if o < 0 => return r.with_error_code(code::OFFSET_OUT_OF_RANGE),
                        o => o,
                    };
                    match part.delete_before(offset) {
                        Ok(start) => r.with_low_watermark(start),
                        Err(e) => r.with_error_code(error_code(&e)),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
