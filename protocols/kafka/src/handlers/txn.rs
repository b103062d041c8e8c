//! Wire side of transactions: InitProducerId (transactional and idempotent),
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions and
//! ListTransactions. The coordinator itself is [`crate::txn`].

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{code, error_code};
use crate::txn::PendingOffset;
use crate::KafkaBroker;

/// InitProducerId: a transactional producer gets its id and the next epoch from the
/// coordinator; an idempotent one a fresh id (or, KIP-360, the next epoch of its own).
pub async fn init_producer_id(
    b: Arc<KafkaBroker>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default();
    let fail = |c: i16| {
        InitProducerIdResponse::default()
            .with_error_code(c)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = req.transactional_id.as_ref().filter(|id| !id.0.is_empty()) {
        let given = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        return match b
            .txn
            .init_producer_id(&id.0, req.transaction_timeout_ms, given)
            .await
        {
            Ok((pid, epoch)) => r
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(c) => fail(c),
        };
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
        return r
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    let core = b.core.clone();
    match tokio::task::spawn_blocking(move || core.next_producer_id()).await {
        Ok(Ok(id)) => r.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Ok(Err(e)) => fail(error_code(&e)),
        Err(_) => fail(code::UNKNOWN_SERVER_ERROR),
    }
}

/// AddPartitionsToTxn (v0-v3: one transaction per request).
pub fn add_partitions(
    b: &KafkaBroker,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let id = req.v3_and_below_transactional_id.0.to_string();
    let mut known = Vec::new();
    let mut results = Vec::new();
    for t in &req.v3_and_below_topics {
        let stream = b.core.stream(&t.name.0);
        for p in &t.partitions {
            let ok = stream
                .as_ref()
                .is_some_and(|s| *p >= 0 && (*p as usize) < s.partition_count());
            if ok {
                known.push((t.name.0.to_string(), *p));
            }
            results.push((t.name.clone(), *p, ok));
        }
    }
    // Kafka answers every partition with the one error when any is unknown.
    let all_known = results.iter().all(|(_, _, ok)| *ok);
    let outcome = if all_known {
        b.txn.add_partitions(
            &id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &known,
        )
    } else {
        Ok(())
    };
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (name, p, ok) in results {
        let c = match (&outcome, all_known, ok) {
            (_, false, false) => code::UNKNOWN_TOPIC_OR_PARTITION,
            (_, false, true) => OPERATION_NOT_ATTEMPTED,
            (Ok(()), true, _) => code::NONE,
            (Err(c), true, _) => *c,
        };
        let pr = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(c);
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.results_by_partition.push(pr),
            None => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(name)
                    .with_results_by_partition(vec![pr]),
            ),
        }
    }
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

/// Kafka's OPERATION_NOT_ATTEMPTED: a partition of a request that failed for another one.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// AddOffsetsToTxn.
pub fn add_offsets(b: &KafkaBroker, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let c = match b.txn.add_offsets(
        &req.transactional_id.0,
        req.producer_id.0,
        req.producer_epoch,
        &req.group_id.0,
    ) {
        Ok(()) => code::NONE,
        Err(c) => c,
    };
    AddOffsetsToTxnResponse::default().with_error_code(c)
}

/// TxnOffsetCommit: offsets held by the transaction until it commits.
pub fn txn_offset_commit(b: &KafkaBroker, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let mut pending = Vec::new();
    let mut topics: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
    for t in &req.topics {
        let stream = b.core.stream(&t.name.0);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let c = match super::partition_of(stream.as_ref(), &t.name.0, p.partition_index) {
                Ok(_) => code::NONE,
                Err(e) => error_code(&e),
            };
            if c == code::NONE {
                pending.push(PendingOffset {
                    group: group.clone(),
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    attachment: super::groups::attachment(
                        p.committed_leader_epoch,
                        p.committed_metadata.as_deref().unwrap_or(""),
                    ),
                });
            }
            parts.push((p.partition_index, c));
        }
        topics.push((t.name.clone(), parts));
    }
    let outcome = b.txn.commit_offsets(
        &req.transactional_id.0,
        req.producer_id.0,
        req.producer_epoch,
        &group,
        pending,
    );
    TxnOffsetCommitResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, parts)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(i, c)| {
                                let c = match (&outcome, c) {
                                    (_, c) if c != code::NONE => c,
                                    (Ok(()), _) => code::NONE,
                                    (Err(e), _) => *e,
                                };
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(i)
                                    .with_error_code(c)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// EndTxn: commit or abort; answered once the markers are durable.
pub async fn end_txn(b: Arc<KafkaBroker>, req: EndTxnRequest) -> EndTxnResponse {
    let c = match b
        .txn
        .end(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await
    {
        Ok(()) => code::NONE,
        Err(c) => c,
    };
    EndTxnResponse::default()
        .with_error_code(c)
        .with_producer_id(req.producer_id)
        .with_producer_epoch(req.producer_epoch)
}

/// Kafka's TRANSACTIONAL_ID_NOT_FOUND.
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// DescribeTransactions.
pub fn describe(b: &KafkaBroker, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let s = TransactionState::default().with_transactional_id(id.clone());
            match b.txn.describe(&id.0) {
                None => s.with_error_code(TRANSACTIONAL_ID_NOT_FOUND),
                Some(r) => s
                    .with_transaction_state(StrBytes::from_static_str(r.state.name()))
                    .with_transaction_timeout_ms(r.timeout_ms)
                    .with_transaction_start_time_ms(if r.started_ms > 0 {
                        r.started_ms
                    } else {
                        -1
                    })
                    .with_producer_id(ProducerId(r.producer_id))
                    .with_producer_epoch(r.epoch)
                    .with_topics(
                        r.partitions
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(t)))
                                    .with_partitions(ps.into_keys().collect())
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions.
pub fn list(b: &KafkaBroker, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let now = core_stream::partition::now_ms();
    let known = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|s| !known.contains(&s.as_str()))
        .cloned()
        .collect();
    let states = b
        .txn
        .list()
        .into_iter()
        .filter(|(_, r)| {
            req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == r.state.name())
        })
        .filter(|(_, r)| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == r.producer_id)
        })
        .filter(|(_, r)| {
            req.duration_filter < 0
                || (r.state == crate::txn::TxnState::Ongoing
                    && now - r.started_ms >= req.duration_filter)
        })
        .map(|(id, r)| {
            ListedState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(r.producer_id))
                .with_transaction_state(StrBytes::from_static_str(r.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
