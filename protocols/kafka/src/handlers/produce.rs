//! Produce: validate each partition's record batches (CRC32C, sizes, counts — nothing trusted),
//! append them as received with only the base offset assigned, and answer once durable.

use std::sync::Arc;

use core_stream::batch;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use tracing::debug;

use super::metadata::resolve_topic;
use super::Ctx;
use crate::errors::{code, error_code};
use crate::KafkaBroker;

enum Slot {
    Done(PartitionProduceResponse),
    Wait(i32, core_stream::AppendOutcome),
}

/// Appends every partition's batches now (in request order) and returns the future answer.
pub fn handle(
    b: Arc<KafkaBroker>,
    ctx: Ctx,
    req: ProduceRequest,
) -> impl std::future::Future<Output = Option<ResponseKind>> + Send {
    let acks = req.acks;
    let version = ctx.version;
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = t.name.0.to_string();
        let stream = resolve_topic(&b, &name, true);
        let mut slots = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let err = |c: i16| Slot::Done(PartitionProduceResponse::default().with_index(p.index).with_error_code(c).with_base_offset(-1));
            if req.transactional_id.is_some() {
                slots.push(err(code::INVALID_REQUEST));
                continue;
            }
            let partition = match stream.as_ref().map_err(error_code).and_then(|s| s.partition(p.index).map_err(|e| error_code(&e))) {
                Ok(x) => x,
                Err(c) => {
                    slots.push(err(c));
                    continue;
                }
            };
            let records = p.records.unwrap_or_default();
            if records.len() > b.core.config().max_batch_bytes {
                slots.push(err(code::MESSAGE_TOO_LARGE));
                continue;
            }
            let appended = batch::validate_all(&records).and_then(|headers| partition.append(&records, &headers));
            match appended {
                Ok(out) => slots.push(Slot::Wait(p.index, out)),
                Err(e) => {
                    debug!(topic = %name, partition = p.index, error = %e, "produce refused");
                    slots.push(err(error_code(&e)));
                }
            }
        }
        topics.push((t.name, slots));
    }
    async move {
        if acks == 0 {
            return None;
        }
        let mut responses = Vec::with_capacity(topics.len());
        for (name, slots) in topics {
            let mut parts = Vec::with_capacity(slots.len());
            for slot in slots {
                parts.push(match slot {
                    Slot::Done(r) => r,
                    Slot::Wait(index, out) => {
                        let r = PartitionProduceResponse::default()
                            .with_index(index)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(if version >= 5 { out.log_start_offset } else { -1 });
                        let base = out.base_offset;
                        match out.durable.wait().await {
                            Ok(()) => r.with_base_offset(base),
                            Err(e) => r.with_error_code(error_code(&e)).with_base_offset(-1),
                        }
                    }
                });
            }
            responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(parts));
        }
        Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
    }
}
