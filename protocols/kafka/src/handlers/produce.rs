//! Produce: validate each partition's record batches (CRC32C, sizes, counts — nothing trusted),
//! append them as received with only the base offset assigned (and, on a `LogAppendTime`
//! topic, the broker's time stamped into each batch header), and answer once durable.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use super::metadata::resolve_topic;
use super::Ctx;
use crate::errors::{code, error_code};
use crate::KafkaBroker;

enum Slot {
    Done(PartitionProduceResponse),
    /// Partition index, the append, and the log append time stamped into it (-1: none).
    Wait(i32, core_stream::AppendOutcome, i64),
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
            let err = |c: i16| {
                Slot::Done(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(c)
                        .with_base_offset(-1),
                )
            };
            let stream = match &stream {
                Ok(st) => st,
                Err(e) => {
                    slots.push(err(error_code(e)));
                    continue;
                }
            };
            let mut records = p.records.unwrap_or_default();
            let (compact, stamp) =
                stream.with_config(|c| (c.cleanup.compact, crate::configs::log_append_time(c)));
            // A compacted topic keeps the latest record per key: a record without one is
            // refused (INVALID_RECORD with the index of each, as Kafka answers).
            if compact {
                if let Some(keyless) = keyless_records(&records) {
                    let errors = keyless
                        .into_iter()
                        .map(|i| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(i)
                                .with_batch_index_error_message(Some(StrBytes::from_static_str(
                                    "Compacted topic cannot accept message without key",
                                )))
                        })
                        .collect();
                    slots.push(Slot::Done(
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(code::INVALID_RECORD)
                            .with_base_offset(-1)
                            .with_record_errors(errors)
                            .with_error_message(Some(StrBytes::from_static_str(
                                "One or more records have been rejected due to missing keys for a compacted topic",
                            ))),
                    ));
                    continue;
                }
            }
            // A transactional produce: its producer must own the open transaction, which
            // must hold this partition.
            let tid = req.transactional_id.as_ref().map(|t| t.0.to_string());
            if let Some(tid) = &tid {
                let checked = match core_stream::batch::parse_header(&records) {
                    Ok(h) if h.is_transactional() => {
                        b.txn
                            .check_produce(tid, h.producer_id, h.producer_epoch, &name, p.index)
                    }
                    _ => Err(code::INVALID_REQUEST),
                };
                if let Err(c) = checked {
                    slots.push(err(c));
                    continue;
                }
            }
            let mut append_time = -1;
            if stamp {
                append_time = now_ms();
                records = core_stream::batch::stamp_log_append_time(&records, append_time);
            }
            let appended = b.core.append(stream, p.index, &records);
            if let (Some(tid), Ok(out)) = (&tid, &appended) {
                let noted =
                    super::blocking(|| b.txn.note_appended(tid, &name, p.index, out.base_offset));
                if let Err(c) = noted {
                    slots.push(err(c));
                    continue;
                }
            }
            match appended {
                Ok(out) => slots.push(Slot::Wait(p.index, out, append_time)),
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
                    Slot::Wait(index, out, append_time) => {
                        let r = PartitionProduceResponse::default()
                            .with_index(index)
                            .with_log_append_time_ms(append_time)
                            .with_log_start_offset(if version >= 5 {
                                out.log_start_offset
                            } else {
                                -1
                            });
                        let base = out.base_offset;
                        match out.durable.wait().await {
                            Ok(()) => r.with_base_offset(base),
                            Err(e) => r.with_error_code(error_code(&e)).with_base_offset(-1),
                        }
                    }
                });
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(parts),
            );
        }
        Some(ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        ))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Indexes (over the record set) of records without a key, or `None` when every record has
/// one. A batch that cannot be decoded is left to the append's validation.
fn keyless_records(records: &bytes::Bytes) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    let mut index = 0i32;
    for one in core_stream::batch::split_batches(records.clone()) {
        if core_stream::batch::parse_header(&one).is_ok_and(|h| h.is_control()) {
            continue;
        }
        let Ok(recs) = core_stream::batch::decode_records(&one) else {
            return None;
        };
        for r in recs {
            if r.key.is_none() {
                out.push(index);
            }
            index += 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Answers a Produce v0-v2 request (advertised for old librdkafka, KAFKA-18659, but carrying
/// message formats 0/1 that this broker does not store) with UNSUPPORTED_VERSION for every
/// partition. `frame` is the whole request; every length is checked before use.
pub fn legacy_unsupported(
    frame: &[u8],
    version: i16,
    correlation_id: i32,
) -> Result<Option<bytes::Bytes>, crate::errors::KafkaError> {
    legacy_answer(frame, version, correlation_id)
        .ok_or(crate::errors::KafkaError::MalformedLegacyProduce(version))
}

fn legacy_answer(frame: &[u8], version: i16, correlation_id: i32) -> Option<Option<bytes::Bytes>> {
    use bytes::BufMut;
    struct Cur<'a>(&'a [u8]);
    impl<'a> Cur<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Option<i32> {
            self.take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        fn string(&mut self) -> Option<&'a [u8]> {
            let n = self.i16()?;
            if n < 0 {
                return Some(&[]);
            }
            self.take(n as usize)
        }
        fn count(&mut self) -> Option<usize> {
            let n = self.i32()?;
            // Each element needs at least 4 bytes: a count beyond that is a lie.
            (n >= 0 && n as usize <= self.0.len() / 4).then_some(n as usize)
        }
    }
    let mut c = Cur(frame);
    c.take(8)?; // api key, version, correlation id
    c.string()?; // client id
    let acks = c.i16()?;
    c.i32()?; // timeout
    let mut out = bytes::BytesMut::with_capacity(64);
    out.put_i32(0);
    out.put_i32(correlation_id);
    let topics = c.count()?;
    out.put_i32(topics as i32);
    for _ in 0..topics {
        let name = c.string()?;
        out.put_i16(name.len() as i16);
        out.put_slice(name);
        let parts = c.count()?;
        out.put_i32(parts as i32);
        for _ in 0..parts {
            out.put_i32(c.i32()?);
            let n = c.i32()?;
            if n > 0 {
                c.take(n as usize)?;
            }
            out.put_i16(code::UNSUPPORTED_VERSION);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    if acks == 0 {
        return Some(None);
    }
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Some(Some(out.freeze()))
}
