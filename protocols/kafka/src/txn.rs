//! The transaction coordinator: transactional ids, their producer id and epoch (fencing), the
//! partitions and consumer offsets of the open transaction, and its end — commit or abort
//! markers written into every partition, offsets made visible at commit, the aborted ranges
//! kept for `read_committed` readers, and the last stable offset of each partition.
//!
//! A transaction's state is a record in the metadata store, written (fsync'd) before each
//! step is acknowledged. Ending one goes through `PrepareCommit` / `PrepareAbort` (stored)
//! before the markers are written, so a restart finishes what was decided; a transaction that
//! was still open when the broker stopped is aborted at start, before anything is served.
//! Records of a transaction reach MQTT subscribers and AMQP queues when its commit marker is
//! written (the core's router skips them on append), never when it aborts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use core_stream::batch;
use core_stream::partition::now_ms;
use core_stream::{CommittedOffset, Core, DurableTicket, GroupOffset};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::errors::code;

/// Metadata space of transaction records.
const TXNS: &str = "kafka.txn";
/// Metadata space of aborted-transaction ranges, per partition.
const ABORTED: &str = "kafka.aborted";
/// Largest `transaction.timeout.ms` accepted (Kafka's `transaction.max.timeout.ms`).
pub const MAX_TIMEOUT_MS: i32 = 900_000;
/// Most open transactions at once; more get `CONCURRENT_TRANSACTIONS` until some end.
pub const MAX_OPEN: usize = 10_000;
/// Aborted ranges kept per partition (oldest dropped first; a reader that old sees the
/// aborted records, as after Kafka's index retention).
const MAX_ABORTED_PER_PARTITION: usize = 100_000;

/// Where a transactional id is in its life (Kafka's names, as DescribeTransactions shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// Partitions or offsets added, not ended.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// Last transaction committed.
    CompleteCommit,
    /// Last transaction aborted.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }
}

/// A consumer offset committed inside a transaction (visible at commit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingOffset {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka attachment (leader epoch, metadata).
    pub attachment: Vec<u8>,
}

/// One transactional id as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnRecord {
    /// Producer id.
    pub producer_id: i64,
    /// Current epoch (older ones are fenced).
    pub epoch: i16,
    /// `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// State.
    pub state: TxnState,
    /// When the open transaction started (ms since the epoch).
    pub started_ms: i64,
    /// Partitions of the open transaction: topic → partition → first offset written (-1 none).
    pub partitions: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Groups whose offsets the transaction commits.
    pub groups: BTreeSet<String>,
    /// Offsets committed in the transaction.
    pub offsets: Vec<PendingOffset>,
}

/// An aborted transaction's range in one partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AbortedRange {
    /// Producer id.
    pub producer_id: i64,
    /// First offset the transaction wrote in the partition.
    pub first_offset: i64,
    /// Offset of its abort marker.
    pub last_offset: i64,
}

#[derive(Debug, Default)]
struct State {
    txns: HashMap<String, TxnRecord>,
    /// Transactional ids whose end is being written.
    ending: BTreeSet<String>,
    aborted: HashMap<(String, i32), Vec<AbortedRange>>,
}

/// The coordinator of every transactional id (this broker is the coordinator of all).
#[derive(Debug)]
pub struct TxnCoordinator {
    core: Arc<Core>,
    state: Mutex<State>,
}

fn put(core: &Core, id: &str, r: Option<&TxnRecord>) -> Result<(), i16> {
    let bytes = r.map(|r| serde_json::to_vec(r).unwrap_or_default());
    core.put_record(TXNS, id, bytes.as_deref())
        .map_err(|e| crate::errors::error_code(&e))
}

fn aborted_key(topic: &str, partition: i32) -> String {
    format!("{topic}\u{0}{partition}")
}

/// Why a request about a transaction was refused.
pub type TxnResult<T> = Result<T, i16>;

impl TxnCoordinator {
    /// Loads the stored transactions and aborted ranges, and finishes what a stop interrupted:
    /// prepared commits and aborts are completed, open transactions aborted.
    pub async fn open(core: Arc<Core>) -> Arc<Self> {
        let mut st = State::default();
        match core.records(TXNS) {
            Ok(rs) => {
                for (id, bytes) in rs {
                    match serde_json::from_slice::<TxnRecord>(&bytes) {
                        Ok(r) => {
                            st.txns.insert(id, r);
                        }
                        Err(e) => {
                            warn!(transactional_id = %id, error = %e, "unreadable transaction record; ignored")
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read transaction records"),
        }
        if let Ok(rs) = core.records(ABORTED) {
            for (key, bytes) in rs {
                let Some((topic, p)) = key.split_once('\u{0}') else {
                    continue;
                };
                let (Ok(p), Ok(list)) = (
                    p.parse::<i32>(),
                    serde_json::from_slice::<Vec<AbortedRange>>(&bytes),
                ) else {
                    continue;
                };
                st.aborted.insert((topic.to_string(), p), list);
            }
        }
        let c = Arc::new(Self {
            core,
            state: Mutex::new(st),
        });
        let unfinished: Vec<(String, TxnState)> = c
            .lock()
            .txns
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .map(|(id, r)| (id.clone(), r.state))
            .collect();
        for (id, state) in &unfinished {
            if *state != TxnState::Ongoing {
                continue;
            }
            let mut st = c.lock();
            let Some(r) = st.txns.get_mut(id) else {
                continue;
            };
            let (pid, started) = (r.producer_id, r.started_ms);
            for (topic, parts) in r.partitions.iter_mut() {
                for (p, first) in parts.iter_mut() {
                    if *first < 0 {
                        *first = first_txn_offset(&c.core, topic, *p, pid, started).unwrap_or(-1);
                    }
                }
            }
        }
        for (id, state) in unfinished {
            let commit = state == TxnState::PrepareCommit;
            info!(transactional_id = %id, state = state.name(), "completing a transaction interrupted by a stop: {}", if commit { "commit" } else { "abort" });
            if let Err(e) = c.finish(&id, commit, state == TxnState::Ongoing).await {
                warn!(transactional_id = %id, error = e, "could not complete the transaction");
            }
        }
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a request's producer id and epoch against the transactional id.
    fn check<'a>(
        st: &'a mut State,
        id: &str,
        pid: i64,
        epoch: i16,
    ) -> TxnResult<&'a mut TxnRecord> {
        let r = st
            .txns
            .get_mut(id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        if r.producer_id != pid {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if epoch < r.epoch {
            return Err(code::PRODUCER_FENCED);
        }
        if epoch > r.epoch {
            return Err(code::INVALID_PRODUCER_EPOCH);
        }
        Ok(r)
    }

    /// InitProducerId with a transactional id: a new producer id, or the same with the next
    /// epoch (fencing older producers); an open transaction is aborted first.
    pub async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        given: Option<(i64, i16)>,
    ) -> TxnResult<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(code::INVALID_TRANSACTION_TIMEOUT);
        }
        let open = {
            let st = self.lock();
            if st.ending.contains(id) {
                return Err(code::CONCURRENT_TRANSACTIONS);
            }
            match st.txns.get(id) {
                Some(r) => {
                    if let Some((pid, epoch)) = given {
                        if pid != r.producer_id || epoch != r.epoch {
                            return Err(code::PRODUCER_FENCED);
                        }
                    }
                    matches!(
                        r.state,
                        TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                    )
                    .then_some(r.state)
                }
                None => {
                    if st.txns.len() >= MAX_OPEN * 10 {
                        return Err(code::CONCURRENT_TRANSACTIONS);
                    }
                    None
                }
            }
        };
        if let Some(state) = open {
            // A new producer for the id: what the old one left open is aborted (a prepared
            // commit is completed).
            self.finish(id, state == TxnState::PrepareCommit, false)
                .await?;
        }
        let fresh = if self.lock().txns.contains_key(id) {
            None
        } else {
            Some(
                self.core
                    .next_producer_id()
                    .map_err(|e| crate::errors::error_code(&e))?,
            )
        };
        let mut st = self.lock();
        let r = st.txns.entry(id.to_string()).or_insert_with(|| TxnRecord {
            producer_id: fresh.unwrap_or(-1),
            epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            started_ms: 0,
            partitions: BTreeMap::new(),
            groups: BTreeSet::new(),
            offsets: Vec::new(),
        });
        if r.epoch >= i16::MAX - 1 {
            r.producer_id = self
                .core
                .next_producer_id()
                .map_err(|e| crate::errors::error_code(&e))?;
            r.epoch = 0;
        } else {
            r.epoch += 1;
        }
        r.timeout_ms = timeout_ms;
        r.state = TxnState::Empty;
        let out = (r.producer_id, r.epoch);
        let r = r.clone();
        put(&self.core, id, Some(&r))?;
        Ok(out)
    }

    /// Starts the transaction if it is not open yet.
    fn begin(r: &mut TxnRecord) -> TxnResult<()> {
        match r.state {
            TxnState::Ongoing => Ok(()),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                r.state = TxnState::Ongoing;
                r.started_ms = now_ms();
                r.partitions.clear();
                r.groups.clear();
                r.offsets.clear();
                Ok(())
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(code::CONCURRENT_TRANSACTIONS),
        }
    }

    fn open_count(st: &State) -> usize {
        st.txns
            .values()
            .filter(|r| r.state == TxnState::Ongoing)
            .count()
    }

    /// AddPartitionsToTxn: the partitions join the open transaction.
    pub fn add_partitions(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(String, i32)],
    ) -> TxnResult<()> {
        let mut st = self.lock();
        if st.ending.contains(id) {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        let open = Self::open_count(&st);
        let r = Self::check(&mut st, id, pid, epoch)?;
        if r.state != TxnState::Ongoing && open >= MAX_OPEN {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        Self::begin(r)?;
        let mut changed = false;
        for (t, p) in parts {
            changed |= r
                .partitions
                .entry(t.clone())
                .or_default()
                .insert(*p, -1)
                .is_none();
        }
        let r = r.clone();
        drop(st);
        if changed || r.partitions.is_empty() {
            put(&self.core, id, Some(&r))?;
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed by the transaction.
    pub fn add_offsets(&self, id: &str, pid: i64, epoch: i16, group: &str) -> TxnResult<()> {
        let mut st = self.lock();
        if st.ending.contains(id) {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        let r = Self::check(&mut st, id, pid, epoch)?;
        Self::begin(r)?;
        r.groups.insert(group.to_string());
        let r = r.clone();
        drop(st);
        put(&self.core, id, Some(&r))
    }

    /// TxnOffsetCommit: offsets held until the transaction commits.
    pub fn commit_offsets(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<PendingOffset>,
    ) -> TxnResult<()> {
        let mut st = self.lock();
        if st.ending.contains(id) {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        let r = Self::check(&mut st, id, pid, epoch)?;
        if r.state != TxnState::Ongoing || !r.groups.contains(group) {
            return Err(code::INVALID_TXN_STATE);
        }
        for o in offsets {
            r.offsets.retain(|x| {
                !(x.group == o.group && x.topic == o.topic && x.partition == o.partition)
            });
            r.offsets.push(o);
        }
        let r = r.clone();
        drop(st);
        put(&self.core, id, Some(&r))
    }

    /// Checks a transactional produce to one partition (before it is appended).
    pub fn check_produce(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> TxnResult<()> {
        let mut st = self.lock();
        let r = match Self::check(&mut st, id, pid, epoch) {
            Ok(r) => r,
            // Produce answers fencing with INVALID_PRODUCER_EPOCH, as Kafka does.
            Err(code::PRODUCER_FENCED) => return Err(code::INVALID_PRODUCER_EPOCH),
            Err(e) => return Err(e),
        };
        let added = r
            .partitions
            .get(topic)
            .is_some_and(|ps| ps.contains_key(&partition));
        if r.state != TxnState::Ongoing || !added {
            return Err(code::INVALID_TXN_STATE);
        }
        Ok(())
    }

    /// Notes where a transaction first wrote in a partition. Kept in memory (stored with the
    /// decision at EndTxn); a restart that finds the transaction open finds it again in the
    /// log ([`first_txn_offset`]).
    pub fn note_appended(
        &self,
        id: &str,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> TxnResult<()> {
        let mut st = self.lock();
        if let Some(first) = st
            .txns
            .get_mut(id)
            .and_then(|r| r.partitions.get_mut(topic))
            .and_then(|ps| ps.get_mut(&partition))
        {
            if *first < 0 {
                *first = base_offset;
            }
        }
        Ok(())
    }

    /// EndTxn: commit or abort the open transaction.
    pub async fn end(&self, id: &str, pid: i64, epoch: i16, commit: bool) -> TxnResult<()> {
        {
            let mut st = self.lock();
            if st.ending.contains(id) {
                return Err(code::CONCURRENT_TRANSACTIONS);
            }
            let r = Self::check(&mut st, id, pid, epoch)?;
            match (r.state, commit) {
                (TxnState::Ongoing, _) => {}
                // A retried EndTxn whose first attempt completed.
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                    return Ok(())
                }
                (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {}
                _ => return Err(code::INVALID_TXN_STATE),
            }
        }
        self.finish(id, commit, false).await
    }

    /// Decides (stored), writes the markers, then makes the outcome visible and stores the
    /// completed state. `fence`: bump the epoch too (a timed-out or interrupted transaction).
    async fn finish(&self, id: &str, commit: bool, fence: bool) -> TxnResult<()> {
        let r = {
            let mut st = self.lock();
            if !st.ending.insert(id.to_string()) {
                return Err(code::CONCURRENT_TRANSACTIONS);
            }
            let Some(r) = st.txns.get_mut(id) else {
                st.ending.remove(id);
                return Ok(());
            };
            r.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            if fence && r.epoch < i16::MAX - 1 {
                r.epoch += 1;
            }
            r.clone()
        };
        let res = self.write_outcome(id, &r, commit).await;
        let mut st = self.lock();
        st.ending.remove(id);
        res?;
        if !commit {
            for (topic, parts) in &r.partitions {
                for (p, first) in parts {
                    if *first < 0 {
                        continue;
                    }
                    // The marker offset was recorded in `write_outcome`.
                    let _ = (topic, p);
                }
            }
        }
        if let Some(x) = st.txns.get_mut(id) {
            x.state = if commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            };
            x.epoch = r.epoch;
            x.partitions.clear();
            x.groups.clear();
            x.offsets.clear();
            let x = x.clone();
            drop(st);
            put(&self.core, id, Some(&x))?;
        }
        Ok(())
    }

    /// Stores the decision, writes a marker into every partition of the transaction (and
    /// waits until they are durable), then commits its offsets or records its aborted ranges,
    /// and hands committed records to the router.
    async fn write_outcome(&self, id: &str, r: &TxnRecord, commit: bool) -> TxnResult<()> {
        put(&self.core, id, Some(r))?;
        let now = now_ms();
        let marker = batch::build_control_batch(r.producer_id, r.epoch, commit, now);
        let mut ticket = DurableTicket::default();
        let mut written: Vec<(String, i32, i64, i64)> = Vec::new();
        for (topic, parts) in &r.partitions {
            let Some(stream) = self.core.stream(topic) else {
                continue;
            };
            for (p, first) in parts {
                match self.core.append(&stream, *p, &marker) {
                    Ok(out) => {
                        written.push((topic.clone(), *p, *first, out.base_offset));
                        ticket.join(out.durable);
                    }
                    Err(e) => {
                        warn!(transactional_id = %id, topic = %topic, partition = p, error = %e, "could not write a transaction marker");
                        return Err(crate::errors::error_code(&e));
                    }
                }
            }
        }
        ticket
            .wait()
            .await
            .map_err(|e| crate::errors::error_code(&e))?;
        if commit {
            let mut by_group: BTreeMap<&str, Vec<GroupOffset>> = BTreeMap::new();
            for o in &r.offsets {
                by_group.entry(&o.group).or_default().push(GroupOffset {
                    stream: o.topic.clone(),
                    partition: o.partition,
                    committed: CommittedOffset {
                        offset: o.offset,
                        attachment: o.attachment.clone(),
                    },
                });
            }
            for (g, offs) in by_group {
                self.core
                    .commit_offsets(g, &offs)
                    .map_err(|e| crate::errors::error_code(&e))?;
            }
            let mut queued = DurableTicket::default();
            for (topic, p, first, marker_at) in &written {
                if *first < 0 {
                    continue;
                }
                match self
                    .core
                    .route_committed(topic, *p, r.producer_id, *first, *marker_at)
                {
                    Ok(ts) => ts.into_iter().for_each(|t| queued.join(t)),
                    Err(e) => {
                        warn!(topic = %topic, partition = p, error = %e, "committed records not routed")
                    }
                }
            }
            let _ = queued.wait().await;
        } else {
            let mut changed = Vec::new();
            {
                let mut st = self.lock();
                for (topic, p, first, marker_at) in &written {
                    if *first < 0 {
                        continue;
                    }
                    let list = st.aborted.entry((topic.clone(), *p)).or_default();
                    let range = AbortedRange {
                        producer_id: r.producer_id,
                        first_offset: *first,
                        last_offset: *marker_at,
                    };
                    if !list.contains(&range) {
                        list.push(range);
                    }
                    if list.len() > MAX_ABORTED_PER_PARTITION {
                        let over = list.len() - MAX_ABORTED_PER_PARTITION;
                        list.drain(..over);
                    }
                    changed.push((topic.clone(), *p, list.clone()));
                }
            }
            for (topic, p, list) in changed {
                let bytes = serde_json::to_vec(&list).unwrap_or_default();
                self.core
                    .put_record(ABORTED, &aborted_key(&topic, p), Some(&bytes))
                    .map_err(|e| crate::errors::error_code(&e))?;
            }
        }
        Ok(())
    }

    /// Last stable offset of a partition: the first offset of its oldest open transaction,
    /// else the high watermark.
    pub fn last_stable_offset(&self, topic: &str, partition: i32, hw: i64) -> i64 {
        let st = self.lock();
        st.txns
            .values()
            .filter(|r| {
                matches!(
                    r.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .filter_map(|r| r.partitions.get(topic)?.get(&partition).copied())
            .filter(|first| *first >= 0)
            .min()
            .map_or(hw, |first| first.min(hw))
    }

    /// Aborted transactions overlapping `[from, to)` of a partition (for read_committed
    /// fetches).
    pub fn aborted(&self, topic: &str, partition: i32, from: i64, to: i64) -> Vec<AbortedRange> {
        let st = self.lock();
        st.aborted
            .get(&(topic.to_string(), partition))
            .map(|l| {
                l.iter()
                    .filter(|a| a.last_offset >= from && a.first_offset < to)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a deleted topic's aborted ranges.
    pub fn topic_deleted(&self, topic: &str) {
        let keys: Vec<(String, i32)> = {
            let mut st = self.lock();
            let keys: Vec<(String, i32)> = st
                .aborted
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect();
            for k in &keys {
                st.aborted.remove(k);
            }
            keys
        };
        for (t, p) in keys {
            let _ = self.core.put_record(ABORTED, &aborted_key(&t, p), None);
        }
    }

    /// Transactions for DescribeTransactions / ListTransactions.
    pub fn describe(&self, id: &str) -> Option<TxnRecord> {
        self.lock().txns.get(id).cloned()
    }

    /// Every transactional id with its record.
    pub fn list(&self) -> Vec<(String, TxnRecord)> {
        let mut v: Vec<(String, TxnRecord)> = self
            .lock()
            .txns
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Aborts (and fences) transactions open longer than their timeout.
    pub async fn expire(&self) {
        let now = now_ms();
        let due: Vec<String> = self
            .lock()
            .txns
            .iter()
            .filter(|(_, r)| {
                r.state == TxnState::Ongoing && r.started_ms + i64::from(r.timeout_ms) <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            info!(transactional_id = %id, "transaction timed out; aborted, producer fenced");
            if let Err(e) = self.finish(&id, false, true).await {
                warn!(transactional_id = %id, error = e, "could not abort a timed-out transaction");
            }
        }
    }
}

impl core_stream::compaction::TxnView for TxnCoordinator {
    fn is_aborted(&self, stream: &str, partition: i32, producer_id: i64, offset: i64) -> bool {
        let st = self.lock();
        st.aborted
            .get(&(stream.to_string(), partition))
            .is_some_and(|l| {
                l.iter().any(|a| {
                    a.producer_id == producer_id
                        && a.first_offset <= offset
                        && offset <= a.last_offset
                })
            })
    }

    fn stable_offset(&self, stream: &str, partition: i32, hw: i64) -> i64 {
        self.last_stable_offset(stream, partition, hw)
    }
}

/// Where an open transaction of `producer_id` started writing in a partition, found in the
/// log: its first transactional batch after the producer's last marker, searched from a
/// minute before the transaction started (batch timestamps are the client's).
fn first_txn_offset(
    core: &Core,
    topic: &str,
    partition: i32,
    producer_id: i64,
    started_ms: i64,
) -> Option<i64> {
    let log = core.stream(topic)?.partition(partition).ok()?;
    let from = log
        .offset_for_timestamp(started_ms.saturating_sub(60_000))
        .ok()
        .flatten()
        .map_or_else(|| log.high_watermark(), |(o, _)| o)
        .max(log.log_start_offset());
    let hw = log.high_watermark();
    let mut at = from;
    let mut first = None;
    while at < hw {
        let r = log.read(at, 1024 * 1024).ok()?;
        if r.data.is_empty() {
            break;
        }
        let mut moved = false;
        for one in batch::split_batches(r.data) {
            let h = batch::parse_header(&one).ok()?;
            at = h.last_offset() + 1;
            moved = true;
            if h.producer_id != producer_id || !h.is_transactional() {
                continue;
            }
            if h.is_control() {
                first = None; // an earlier transaction ended here
            } else if first.is_none() {
                first = Some(h.base_offset);
            }
        }
        if !moved {
            break;
        }
    }
    first
}

/// Runs the timeout check until the broker stops.
pub async fn run_timeouts(c: Arc<TxnCoordinator>, mut stop: conflux_net::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => c.expire().await,
            _ = stop.wait() => return,
        }
    }
}
