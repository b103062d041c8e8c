//! Fetch: serve stored batch bytes as they are, long-polling until `min_bytes` arrive or
//! `max_wait_ms` passes. Appends wake waiting fetches through the partitions' listeners; there
//! is no polling loop. Incremental fetch sessions are declined (session id 0), which the
//! protocol allows: clients then send full fetch requests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use core_stream::{PartitionLog, ReadResult, StreamError};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Ctx;
use crate::errors::{code, error_code};
use crate::KafkaBroker;

struct Want {
    topic: String,
    partition: Result<Arc<dyn PartitionLog>, StreamError>,
    index: i32,
    offset: i64,
    max_bytes: usize,
}

/// Answers a Fetch request, waiting for data as the request allows.
pub async fn handle(b: Arc<KafkaBroker>, ctx: Ctx, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        return FetchResponse::default()
            .with_error_code(code::FETCH_SESSION_ID_NOT_FOUND)
            .with_session_id(0);
    }
    // The broker's cap bounds memory per fetch whatever the client asks (<= 0 means "no limit"
    // to some clients: they get the cap).
    let cap = b.config.fetch_max_bytes;
    let max_bytes = match req.max_bytes {
        m if m <= 0 => cap,
        m => (m as usize).min(cap),
    };
    let mut seen = HashSet::new();
    let mut topics: Vec<(TopicName, Vec<Want>)> = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let stream = b.core.stream(&t.topic.0);
        let wants = t
            .partitions
            .into_iter()
            // A partition named twice is answered once.
            .filter(|p| seen.insert((t.topic.0.clone(), p.partition)))
            .map(|p| Want {
                topic: t.topic.0.to_string(),
                partition: super::partition_of(stream.as_ref(), &t.topic.0, p.partition),
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_bytes),
            })
            .collect();
        topics.push((t.topic, wants));
    }
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(b.config.max_fetch_wait);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let committed = req.isolation_level == 1;
    let notify = Arc::new(Notify::new());
    for (_, wants) in &topics {
        for w in wants {
            if let Ok(p) = &w.partition {
                p.register_listener(&notify);
            }
        }
    }
    let mut shutdown = b.shutdown.clone();
    loop {
        let (resp, bytes, errors) = collect(&b, &topics, max_bytes, ctx.version, committed);
        if bytes >= min_bytes || errors || Instant::now() >= deadline || shutdown.is_set() {
            return resp;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.wait() => {}
        }
    }
}

/// The batches of `data` that start before `end` (a read_committed reader stops at the last
/// stable offset).
fn cut_at(data: bytes::Bytes, end: i64) -> bytes::Bytes {
    let mut at = 0;
    while let Some((base, size)) = core_stream::batch::peek_frame(&data[at..]) {
        if base >= end || at + size > data.len() {
            break;
        }
        at += size;
    }
    data.slice(..at)
}

/// Reads every wanted partition once; returns the answer, its data size and whether any partition errored.
fn collect(
    b: &KafkaBroker,
    topics: &[(TopicName, Vec<Want>)],
    max_bytes: usize,
    version: i16,
    committed: bool,
) -> (FetchResponse, usize, bool) {
    let lso = |x: i64| if version >= 5 { x } else { -1 };
    let mut total = 0usize;
    let mut errors = false;
    let mut out = Vec::with_capacity(topics.len());
    for (name, wants) in topics {
        let mut parts = Vec::with_capacity(wants.len());
        for w in wants {
            let pd = PartitionData::default().with_partition_index(w.index);
            let p = match &w.partition {
                Ok(p) => p,
                Err(e) => {
                    errors = true;
                    parts.push(pd.with_error_code(error_code(e)).with_high_watermark(-1));
                    continue;
                }
            };
            let room = max_bytes.saturating_sub(total);
            let res = if room == 0 {
                // Over the request's byte budget: report positions only.
                Ok(ReadResult {
                    data: bytes::Bytes::new(),
                    high_watermark: p.high_watermark(),
                    log_start_offset: p.log_start_offset(),
                })
            } else {
                p.read(w.offset, w.max_bytes.min(room)).map(|mut r| {
                    // Only the first partition with data may exceed the budget (to make progress
                    // past a batch larger than max_bytes), as in Kafka (KIP-74).
                    if total > 0 && r.data.len() > room {
                        r.data = bytes::Bytes::new();
                    }
                    r
                })
            };
            parts.push(match res {
                Ok(mut r) => {
                    let stable = b
                        .txn
                        .last_stable_offset(&w.topic, w.index, r.high_watermark);
                    let aborted = if committed {
                        r.data = cut_at(r.data, stable);
                        Some(
                            b.txn
                                .aborted(&w.topic, w.index, w.offset, stable)
                                .into_iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                })
                                .collect(),
                        )
                    } else {
                        None
                    };
                    total += r.data.len();
                    pd.with_high_watermark(r.high_watermark)
                        .with_last_stable_offset(stable)
                        .with_log_start_offset(lso(r.log_start_offset))
                        .with_aborted_transactions(aborted)
                        .with_records(Some(r.data))
                }
                Err(e) => {
                    errors = true;
                    pd.with_error_code(error_code(&e))
                        .with_high_watermark(p.high_watermark())
                        .with_last_stable_offset(p.high_watermark())
                        .with_log_start_offset(lso(p.log_start_offset()))
                        .with_records(Some(bytes::Bytes::new()))
                }
            });
        }
        out.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(parts),
        );
    }
    (FetchResponse::default().with_responses(out), total, errors)
}
