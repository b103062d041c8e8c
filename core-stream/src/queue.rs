//! Durable queues: the second way to read a stream (DESIGN, "two ways to read a stream").
//!
//! A queue holds *references* to records in streams (stream, partition, offset, and the
//! stored batch's CRC as a fingerprint), never a second copy of the payload. Each record is
//! handed to one consumer, acknowledged individually, handed out again after a requeue or
//! when its consumer goes away, and can expire or be dropped by a length limit. MQTT
//! persistent sessions and AMQP queues are both this.
//!
//! Its state lives in its own log (a partition log apart from the streams): entry records,
//! then "done" (acked, expired, dropped), "delivered up to" and "requeued" records. Opening
//! a queue replays that log; entries delivered before a restart and not acknowledged come back
//! marked redelivered. Memory holds only what is being delivered (a read-ahead window, the
//! unacknowledged entries, the requeued ones); the backlog stays on disk, so a queue's depth
//! is bounded by disk, not memory. The log is cut at the oldest entry still pending.
//!
//! Entries are written to the queue log without waiting for the referenced record to be
//! durable (both are fsync'd by the same group commit, and the writer's acknowledgement waits
//! for both). If the machine lost power between the two, the fingerprint tells a reference
//! that now points at a different record, and the entry is dropped instead of delivered.
//! Acknowledgements and delivery marks are not waited for: they survive a process crash (the
//! page cache keeps them) and, at worst after a power loss, a message is delivered again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::warn;

use crate::batch::{self, Record};
use crate::core::Core;
use crate::error::{Result, StreamError};
use crate::log::{DurableTicket, PartitionLog};
use crate::partition::now_ms;
use crate::router::{Refusal, Routed};

/// Entries read ahead from the queue log into memory.
const READAHEAD: usize = 512;
/// Entries per on-disk chunk summary (for retention pins of the backlog).
const CHUNK: usize = 1024;

/// What a queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Overflow {
    /// Drop the oldest entry to make room (AMQP default, `x-overflow=drop-head`).
    #[default]
    DropHead,
    /// Refuse the new entry and tell the writer (`x-overflow=reject-publish`).
    RejectPublish,
    /// Drop the new entry silently (MQTT's session queue limit, as Mosquitto does).
    DropNew,
}

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QueueSettings {
    /// Most entries (ready and unacknowledged); `None` = bounded by disk only.
    pub max_length: Option<u64>,
    /// Most payload bytes; `None` = bounded by disk only.
    pub max_bytes: Option<u64>,
    /// What happens past a limit.
    pub overflow: Overflow,
    /// Entries older than this (ms since enqueued) expire instead of being delivered.
    pub message_ttl_ms: Option<i64>,
    /// False: the queue does not survive a restart (AMQP transient queues).
    pub durable: bool,
    /// Highest message priority (AMQP `x-max-priority`): entries of higher priority are
    /// handed out first among those read ahead; `None` = first in, first out.
    #[serde(default)]
    pub max_priority: Option<u8>,
}

/// A queue as the metadata store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueMeta {
    /// Name, unique in the core.
    pub name: String,
    /// Id of its log.
    pub id: u64,
    /// Settings.
    pub settings: QueueSettings,
    /// Front-end data kept with the queue (AMQP arguments, owner), opaque to the core.
    #[serde(default)]
    pub attachment: Vec<u8>,
}

/// Why an entry left the queue without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Acknowledged by its consumer (not a drop; recorded the same way).
    Acked = 0,
    /// Its time to live passed.
    Expired = 1,
    /// Pushed out by the length limit.
    MaxLength = 2,
    /// Rejected by its consumer without requeue.
    Rejected = 3,
    /// Removed by a purge.
    Purged = 4,
    /// Its referenced record is gone (stream deleted, records deleted, power loss).
    Gone = 5,
}

/// One entry handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The entry's id in the queue (what ack, requeue and reject name).
    pub id: i64,
    /// Stream holding the record.
    pub stream: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// The record.
    pub record: Record,
    /// True when it was handed out before (and not acknowledged).
    pub redelivered: bool,
    /// How many times it has been handed out, this time included.
    pub deliveries: u32,
    /// What the front-end attached at enqueue (MQTT: QoS and subscription ids).
    pub attachment: Bytes,
    /// When it was enqueued (ms since the epoch).
    pub enqueued_ms: i64,
    /// When it expires (ms since the epoch), or 0.
    pub deadline_ms: i64,
}

/// An entry that left the queue without delivery (for dead-lettering by the front-end).
#[derive(Debug, Clone)]
pub struct Dropped {
    /// The entry, with its record when it could still be read.
    pub delivery: Delivery,
    /// Why.
    pub reason: DropReason,
}

#[derive(Debug, Clone)]
struct Entry {
    id: i64,
    stream: Arc<str>,
    partition: i32,
    offset: i64,
    crc: u32,
    enqueued_ms: i64,
    deadline_ms: i64,
    size: u32,
    /// Priority (0 unless the queue has a maximum).
    priority: u8,
    attachment: Bytes,
    /// The decoded record when the entry was enqueued while the queue was caught up.
    routed: Option<Arc<Routed>>,
}

#[derive(Debug, Clone)]
struct Pending {
    entry: Entry,
    deliveries: u32,
}

#[derive(Debug)]
struct Unacked {
    consumer: u64,
    pending: Pending,
}

const REC_ENTRY: u8 = 1;
const REC_DONE: u8 = 2;
const REC_DELIVERED: u8 = 3;
const REC_REQUEUED: u8 = 4;
/// An entry with a priority: the priority octet, then an entry's fields.
const REC_ENTRY_PRIORITY: u8 = 5;

fn encode_entry(e: &Entry) -> Bytes {
    let mut b = BytesMut::with_capacity(49 + e.stream.len() + e.attachment.len());
    if e.priority > 0 {
        b.put_u8(REC_ENTRY_PRIORITY);
        b.put_u8(e.priority);
    } else {
        b.put_u8(REC_ENTRY);
    }
    b.put_i32(e.partition);
    b.put_i64(e.offset);
    b.put_u32(e.crc);
    b.put_i64(e.enqueued_ms);
    b.put_i64(e.deadline_ms);
    b.put_u32(e.size);
    b.put_u16(e.stream.len() as u16);
    b.put_slice(e.stream.as_bytes());
    b.put_slice(&e.attachment);
    b.freeze()
}

/// A record of the queue log, decoded.
enum QueueRecord {
    Entry(Entry),
    /// Entries that left the queue (the reason byte is kept on disk for diagnosis).
    Done(Vec<i64>),
    Delivered(i64),
    Requeued(i64, u32),
}

fn decode(id: i64, mut v: Bytes) -> Option<QueueRecord> {
    let need = |v: &Bytes, n: usize| v.remaining() >= n;
    if !need(&v, 1) {
        return None;
    }
    let mut kind = v.get_u8();
    let mut priority = 0;
    if kind == REC_ENTRY_PRIORITY {
        if !need(&v, 1) {
            return None;
        }
        priority = v.get_u8();
        kind = REC_ENTRY;
    }
    match kind {
        REC_ENTRY => {
            if !need(&v, 4 + 8 + 4 + 8 + 8 + 4 + 2) {
                return None;
            }
            let partition = v.get_i32();
            let offset = v.get_i64();
            let crc = v.get_u32();
            let enqueued_ms = v.get_i64();
            let deadline_ms = v.get_i64();
            let size = v.get_u32();
            let n = v.get_u16() as usize;
            if !need(&v, n) {
                return None;
            }
            let stream = std::str::from_utf8(&v[..n]).ok()?.into();
            v.advance(n);
            Some(QueueRecord::Entry(Entry {
                id,
                stream,
                partition,
                offset,
                crc,
                enqueued_ms,
                deadline_ms,
                size,
                priority,
                attachment: v,
                routed: None,
            }))
        }
        REC_DONE => {
            if !need(&v, 5) {
                return None;
            }
            let _reason = v.get_u8();
            let n = v.get_u32() as usize;
            if !need(&v, n.checked_mul(8)?) {
                return None;
            }
            Some(QueueRecord::Done((0..n).map(|_| v.get_i64()).collect()))
        }
        REC_DELIVERED if need(&v, 8) => Some(QueueRecord::Delivered(v.get_i64())),
        REC_REQUEUED if need(&v, 12) => Some(QueueRecord::Requeued(v.get_i64(), v.get_u32())),
        _ => None,
    }
}

fn one_record_batch(value: Bytes) -> Bytes {
    batch::build_batch(
        &[Record {
            timestamp: now_ms(),
            value: Some(value),
            ..Default::default()
        }],
        None,
    )
}

/// Min referenced offset per (stream, partition) among a set of entries.
type Pins = HashMap<(Arc<str>, i32), i64>;

fn pin(p: &mut Pins, e: &Entry) {
    p.entry((e.stream.clone(), e.partition))
        .and_modify(|o| *o = (*o).min(e.offset))
        .or_insert(e.offset);
}

#[derive(Debug)]
struct State {
    /// Entries handed out before and back in the queue (requeued, released), by id.
    redeliver: BTreeMap<i64, Pending>,
    /// Never-delivered entries read ahead, in order.
    ready: VecDeque<Pending>,
    /// Next queue-log offset not yet read into `ready`.
    cursor: i64,
    /// Handed out and not yet acknowledged, by id.
    unacked: HashMap<i64, Unacked>,
    /// Entries neither done nor acknowledged: ready (memory or disk), requeued, unacked.
    count: u64,
    /// Their payload bytes.
    bytes: u64,
    /// Highest entry id ever handed out (recorded in the log).
    delivered: i64,
    /// Summaries of the backlog still on disk: (first id, pins), in order.
    chunks: VecDeque<(i64, Pins, usize)>,
    /// Delivery counts of entries requeued while they were on disk (replayed).
    counts: HashMap<i64, u32>,
    /// Entries known done but maybe still on disk ahead of the cursor (skipped when read).
    done_ahead: HashSet<i64>,
    /// Done records written since the last cut of the log.
    since_cut: u64,
    /// Entries dropped by `drop-head` during enqueue, handed to the next taker for
    /// dead-lettering.
    dead: Vec<Dropped>,
}

/// A durable queue of references to stream records.
#[derive(Debug)]
pub struct Queue {
    meta: QueueMeta,
    log: Arc<dyn PartitionLog>,
    core: Weak<Core>,
    state: Mutex<State>,
    /// Woken when entries become ready.
    ready: Arc<Notify>,
    /// Set when the queue was deleted: acknowledgements and requeues of entries handed out
    /// before are ignored (its log is gone).
    deleted: std::sync::atomic::AtomicBool,
}

impl Queue {
    /// Opens a queue over its log, replaying the log to rebuild its state.
    pub(crate) fn open(
        meta: QueueMeta,
        log: Arc<dyn PartitionLog>,
        core: Weak<Core>,
    ) -> Result<Arc<Self>> {
        let mut st = State {
            redeliver: BTreeMap::new(),
            ready: VecDeque::new(),
            cursor: log.log_start_offset(),
            unacked: HashMap::new(),
            count: 0,
            bytes: 0,
            delivered: -1,
            chunks: VecDeque::new(),
            counts: HashMap::new(),
            done_ahead: HashSet::new(),
            since_cut: 0,
            dead: Vec::new(),
        };
        // Pass 1: what is done, delivered, requeued.
        let mut done = HashSet::new();
        scan(&*log, log.log_start_offset(), |rec| {
            match rec {
                QueueRecord::Done(ids) => done.extend(ids),
                QueueRecord::Delivered(d) => st.delivered = st.delivered.max(d),
                QueueRecord::Requeued(id, n) => {
                    st.counts.insert(id, n);
                }
                QueueRecord::Entry(_) => {}
            }
            true
        })?;
        // Pass 2: entries delivered before and not done come back; the first never-delivered
        // entry is where reading resumes; the rest is counted and summarised.
        let mut first_new = None;
        let delivered = st.delivered;
        scan(&*log, log.log_start_offset(), |rec| {
            if let QueueRecord::Entry(e) = rec {
                if done.contains(&e.id) {
                    return true;
                }
                st.count += 1;
                st.bytes += u64::from(e.size);
                if e.id <= delivered {
                    let deliveries = st.counts.get(&e.id).copied().unwrap_or(1);
                    st.redeliver.insert(
                        e.id,
                        Pending {
                            entry: e,
                            deliveries,
                        },
                    );
                } else {
                    first_new.get_or_insert(e.id);
                    note_chunk(&mut st.chunks, &e);
                }
            }
            true
        })?;
        st.cursor = first_new.unwrap_or_else(|| log.high_watermark());
        // Done entries ahead of the cursor must be skipped when read.
        st.done_ahead = done.into_iter().filter(|id| *id >= st.cursor).collect();
        Ok(Arc::new(Self {
            meta,
            log,
            core,
            state: Mutex::new(st),
            ready: Arc::new(Notify::new()),
            deleted: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Its stored description.
    pub fn meta(&self) -> &QueueMeta {
        &self.meta
    }

    /// Entries waiting or handed out and not acknowledged.
    pub fn len(&self) -> u64 {
        self.lock().count
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries handed out and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        self.lock().unacked.len() as u64
    }

    /// Entries ready to be handed out (not unacknowledged).
    pub fn ready_count(&self) -> u64 {
        let st = self.lock();
        st.count - st.unacked.len() as u64
    }

    /// A handle that resolves when entries may have become ready.
    pub fn notifier(&self) -> Arc<Notify> {
        self.ready.clone()
    }

    /// [`Queue::notifier`], also woken when the queue's backlog on disk becomes durable and
    /// readable: what a consumer waits on between takes.
    pub fn listen(&self) -> Arc<Notify> {
        self.log.register_listener(&self.ready);
        self.ready.clone()
    }

    /// Appends one record to the queue log. An entry is placed in memory when everything
    /// before it already is (the queue is caught up), else it stays on disk until read ahead.
    fn write(
        &self,
        st: &mut State,
        value: Bytes,
        entry: Option<Entry>,
    ) -> Result<crate::log::AppendOutcome> {
        let data = one_record_batch(value);
        let headers = batch::validate_all(&data)?;
        let out = self.log.append(&data, &headers)?;
        let id = out.base_offset;
        match entry {
            None if st.cursor == id => st.cursor = id + 1,
            None => {}
            Some(mut e) => {
                e.id = id;
                if st.cursor == id && st.ready.len() < READAHEAD {
                    st.ready.push_back(Pending {
                        entry: e,
                        deliveries: 0,
                    });
                    st.cursor = id + 1;
                } else {
                    e.routed = None;
                    note_chunk(&mut st.chunks, &e);
                }
            }
        }
        Ok(out)
    }

    /// Adds a reference to a routed record, with the front-end's `attachment` and an absolute
    /// expiry (`deadline_ms`, 0 = none). Past a limit, the queue's overflow policy applies.
    /// The ticket resolves once the entry is durable.
    pub fn enqueue(
        &self,
        routed: &Arc<Routed>,
        attachment: Bytes,
        deadline_ms: i64,
    ) -> std::result::Result<Option<DurableTicket>, Refusal> {
        self.enqueue_with_priority(routed, attachment, deadline_ms, 0)
    }

    /// [`Queue::enqueue`] with a message priority (capped at the queue's `max_priority`;
    /// ignored when it has none).
    pub fn enqueue_with_priority(
        &self,
        routed: &Arc<Routed>,
        attachment: Bytes,
        deadline_ms: i64,
        priority: u8,
    ) -> std::result::Result<Option<DurableTicket>, Refusal> {
        let priority = self
            .meta
            .settings
            .max_priority
            .map_or(0, |m| priority.min(m));
        let size = routed.record.value.as_ref().map_or(0, |v| v.len()) as u32;
        let mut st = self.lock();
        if self.is_deleted() {
            return Err(Refusal::NotWanted);
        }
        let s = &self.meta.settings;
        let full = |st: &State| {
            s.max_length.is_some_and(|m| st.count >= m)
                || s.max_bytes
                    .is_some_and(|m| st.bytes + u64::from(size) > m && st.count > 0)
        };
        while full(&st) {
            match s.overflow {
                Overflow::DropNew => return Ok(None),
                Overflow::RejectPublish => return Err(Refusal::Full),
                Overflow::DropHead => {
                    let mut dropped = Vec::new();
                    match self.drop_head(&mut st, &mut dropped) {
                        Ok(true) => {}
                        _ => return Err(Refusal::Full),
                    }
                    st.dead.extend(dropped);
                }
            }
        }
        let entry = Entry {
            id: 0,
            stream: routed.stream.clone(),
            partition: routed.partition,
            offset: routed.record.offset,
            crc: routed.batch_crc,
            enqueued_ms: now_ms(),
            deadline_ms,
            size,
            priority,
            attachment,
            routed: Some(routed.clone()),
        };
        let value = encode_entry(&entry);
        match self.write(&mut st, value, Some(entry)) {
            Ok(out) => {
                st.count += 1;
                st.bytes += u64::from(size);
                drop(st);
                self.ready.notify_one();
                Ok(Some(out.durable))
            }
            Err(e) => {
                warn!(queue = %self.meta.name, error = %e, "could not enqueue");
                Err(Refusal::Full)
            }
        }
    }

    /// The next entry to hand out: requeued ones first (oldest first), then in order.
    fn next_pending(&self, st: &mut State) -> Result<Option<Pending>> {
        if let Some((_, p)) = st.redeliver.pop_first() {
            return Ok(Some(p));
        }
        if self.meta.settings.max_priority.is_some() {
            // Highest priority first (oldest first within one), among the entries read ahead.
            if st.ready.len() < READAHEAD / 2 {
                self.fill(st)?;
            }
            let best = st
                .ready
                .iter()
                .enumerate()
                .max_by_key(|(i, p)| (p.entry.priority, std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            return Ok(best.and_then(|i| st.ready.remove(i)));
        }
        if st.ready.is_empty() {
            self.fill(st)?;
        }
        Ok(st.ready.pop_front())
    }

    /// Puts an entry taken by [`Queue::next_pending`] back where it came from.
    fn put_back(st: &mut State, p: Pending) {
        if p.deliveries > 0 {
            st.redeliver.insert(p.entry.id, p);
        } else {
            st.ready.push_front(p);
        }
    }

    /// Reads never-delivered entries from the queue log into memory.
    fn fill(&self, st: &mut State) -> Result<()> {
        if st.cursor >= self.log.high_watermark() {
            return Ok(());
        }
        let mut last = st.cursor;
        let mut got = Vec::new();
        let skip = &mut st.done_ahead;
        scan(&*self.log, st.cursor, |rec| {
            if let QueueRecord::Entry(e) = rec {
                last = e.id + 1;
                if !skip.remove(&e.id) {
                    got.push(e);
                }
            }
            got.len() < READAHEAD
        })?;
        st.cursor = if got.len() < READAHEAD {
            self.log.high_watermark().max(last)
        } else {
            last
        };
        for e in got {
            let deliveries = st.counts.remove(&e.id).unwrap_or(0);
            st.ready.push_back(Pending {
                entry: e,
                deliveries,
            });
        }
        // A summary is no longer needed once every entry it covers was read into memory.
        while st.chunks.len() > 1 && st.chunks[1].0 <= st.cursor {
            st.chunks.pop_front();
        }
        if st.cursor >= self.log.high_watermark() {
            st.chunks.clear();
        }
        Ok(())
    }

    /// Drops the oldest droppable entry (for `drop-head`). False when there is none.
    fn drop_head(&self, st: &mut State, out: &mut Vec<Dropped>) -> Result<bool> {
        let Some(p) = self.next_pending(st)? else {
            return Ok(false);
        };
        self.finish(st, p, DropReason::MaxLength, out)?;
        Ok(true)
    }

    /// Records that an entry left the queue for `reason` (not acknowledged), collecting it
    /// for dead-lettering with its record when that can still be read.
    fn finish(
        &self,
        st: &mut State,
        p: Pending,
        reason: DropReason,
        out: &mut Vec<Dropped>,
    ) -> Result<()> {
        self.done(st, reason, &[p.entry.id])?;
        st.count = st.count.saturating_sub(1);
        st.bytes = st.bytes.saturating_sub(u64::from(p.entry.size));
        if reason != DropReason::Gone {
            if let Some(core) = self.core.upgrade() {
                if let Resolved::Record(record) = resolve(&core, &p.entry, &mut None) {
                    out.push(Dropped {
                        delivery: to_delivery(&p, record),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    fn done(&self, st: &mut State, reason: DropReason, ids: &[i64]) -> Result<()> {
        let mut b = BytesMut::with_capacity(6 + ids.len() * 8);
        b.put_u8(REC_DONE);
        b.put_u8(reason as u8);
        b.put_u32(ids.len() as u32);
        for id in ids {
            b.put_i64(*id);
        }
        self.write(st, b.freeze(), None)?;
        st.since_cut += ids.len() as u64;
        Ok(())
    }

    /// Hands out up to `max` entries to `consumer`: requeued ones first, then in order. Expired
    /// entries and entries whose record is gone are dropped on the way (expired ones are
    /// returned in `dropped`, for dead-lettering). Stops at an entry whose record is not
    /// durable yet, naming it in `wait`.
    pub fn take(&self, consumer: u64, max: usize) -> Result<Take> {
        let core = self.core.upgrade().ok_or(StreamError::ShuttingDown)?;
        let mut out = Take::default();
        let now = now_ms();
        let ttl = self.meta.settings.message_ttl_ms;
        let mut st = self.lock();
        if self.is_deleted() {
            return Ok(out);
        }
        out.dropped = std::mem::take(&mut st.dead);
        let mut max_id = st.delivered;
        let mut cache = None;
        while out.deliveries.len() < max {
            let Some(mut p) = self.next_pending(&mut st)? else {
                break;
            };
            let e = &p.entry;
            let expired = (e.deadline_ms > 0 && e.deadline_ms <= now)
                || ttl.is_some_and(|t| e.enqueued_ms + t <= now);
            if expired {
                self.finish(&mut st, p, DropReason::Expired, &mut out.dropped)?;
                continue;
            }
            match resolve(&core, e, &mut cache) {
                Resolved::Record(record) => {
                    p.deliveries += 1;
                    max_id = max_id.max(p.entry.id);
                    out.deliveries.push(to_delivery(&p, record));
                    st.unacked.insert(
                        p.entry.id,
                        Unacked {
                            consumer,
                            pending: p,
                        },
                    );
                }
                Resolved::NotDurable(log, offset) => {
                    Self::put_back(&mut st, p);
                    out.wait = Some((log, offset));
                    break;
                }
                Resolved::Gone => {
                    warn!(queue = %self.meta.name, stream = %e.stream, partition = e.partition,
                        offset = e.offset, "queued record is gone; dropping its entry");
                    self.finish(&mut st, p, DropReason::Gone, &mut out.dropped)?;
                }
            }
        }
        if max_id > st.delivered {
            let mut b = BytesMut::with_capacity(9);
            b.put_u8(REC_DELIVERED);
            b.put_i64(max_id);
            self.write(&mut st, b.freeze(), None)?;
            st.delivered = max_id;
        }
        let more = !st.redeliver.is_empty()
            || !st.ready.is_empty()
            || st.cursor < self.log.high_watermark();
        self.maybe_cut(&mut st);
        drop(st);
        if more && out.wait.is_none() {
            // Wake the next waiting consumer: there is more for it.
            self.ready.notify_one();
        }
        Ok(out)
    }

    /// Drops the entries at the head of the queue whose time to live passed (as RabbitMQ
    /// does: an expired entry behind one that has not expired waits for it), without a
    /// consumer taking. Returns them, for dead-lettering.
    pub fn drop_expired(&self) -> Result<Vec<Dropped>> {
        let now = now_ms();
        let ttl = self.meta.settings.message_ttl_ms;
        let mut st = self.lock();
        if self.is_deleted() {
            return Ok(Vec::new());
        }
        let mut out = std::mem::take(&mut st.dead);
        while let Some(p) = self.next_pending(&mut st)? {
            let e = &p.entry;
            let expired = (e.deadline_ms > 0 && e.deadline_ms <= now)
                || ttl.is_some_and(|t| e.enqueued_ms + t <= now);
            if !expired {
                Self::put_back(&mut st, p);
                break;
            }
            self.finish(&mut st, p, DropReason::Expired, &mut out)?;
        }
        self.maybe_cut(&mut st);
        Ok(out)
    }

    /// Acknowledges handed-out entries: they leave the queue. Unknown ids are ignored; returns
    /// how many were acknowledged.
    pub fn ack(&self, ids: &[i64]) -> Result<usize> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Ok(0);
        }
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(u) = st.unacked.remove(id) {
                st.count = st.count.saturating_sub(1);
                st.bytes = st.bytes.saturating_sub(u64::from(u.pending.entry.size));
                done.push(*id);
            }
        }
        if !done.is_empty() {
            self.done(&mut st, DropReason::Acked, &done)?;
            self.maybe_cut(&mut st);
        }
        Ok(done.len())
    }

    /// Puts handed-out entries back, to be handed out again (first) marked redelivered.
    pub fn requeue(&self, ids: &[i64]) -> Result<usize> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Ok(0);
        }
        let mut n = 0;
        for id in ids {
            if let Some(u) = st.unacked.remove(id) {
                let mut b = BytesMut::with_capacity(13);
                b.put_u8(REC_REQUEUED);
                b.put_i64(*id);
                b.put_u32(u.pending.deliveries);
                self.write(&mut st, b.freeze(), None)?;
                st.redeliver.insert(*id, u.pending);
                n += 1;
            }
        }
        drop(st);
        if n > 0 {
            self.ready.notify_one();
        }
        Ok(n)
    }

    /// Removes handed-out entries without delivery (a reject without requeue); returns them
    /// with their records, for dead-lettering.
    pub fn reject(&self, ids: &[i64]) -> Result<Vec<Dropped>> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for id in ids {
            if let Some(u) = st.unacked.remove(id) {
                self.finish(&mut st, u.pending, DropReason::Rejected, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Everything `consumer` holds unacknowledged goes back to the queue (it disconnected or
    /// cancelled), to be handed out again marked redelivered.
    pub fn release(&self, consumer: u64) {
        let mut st = self.lock();
        if self.is_deleted() {
            return;
        }
        let ids: Vec<i64> = st
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == consumer)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(u) = st.unacked.remove(id) {
                st.redeliver.insert(*id, u.pending);
            }
        }
        drop(st);
        if !ids.is_empty() {
            self.ready.notify_one();
        }
    }

    /// Removes every entry that is not handed out; returns how many.
    pub fn purge(&self) -> Result<u64> {
        let mut st = self.lock();
        if self.is_deleted() {
            return Ok(0);
        }
        let mut ids: Vec<i64> = st.redeliver.keys().copied().collect();
        st.redeliver.clear();
        ids.extend(st.ready.drain(..).map(|p| p.entry.id));
        if st.cursor < self.log.high_watermark() {
            let skip = &st.done_ahead;
            scan(&*self.log, st.cursor, |rec| {
                if let QueueRecord::Entry(e) = rec {
                    if !skip.contains(&e.id) {
                        ids.push(e.id);
                    }
                }
                true
            })?;
            st.cursor = self.log.high_watermark();
            st.done_ahead.clear();
        }
        st.chunks.clear();
        for chunk in ids.chunks(4096) {
            self.done(&mut st, DropReason::Purged, chunk)?;
        }
        let n = ids.len() as u64;
        st.count = st.unacked.len() as u64;
        st.bytes = st
            .unacked
            .values()
            .map(|u| u64::from(u.pending.entry.size))
            .sum();
        self.maybe_cut(&mut st);
        Ok(n)
    }

    /// The oldest offset of each (stream, partition) this queue still needs (retention must
    /// keep it). The backlog on disk counts at the granularity of its summaries.
    pub fn pins(&self) -> Pins {
        let st = self.lock();
        let mut p = Pins::new();
        st.redeliver.values().for_each(|x| pin(&mut p, &x.entry));
        st.ready.iter().for_each(|x| pin(&mut p, &x.entry));
        st.unacked
            .values()
            .for_each(|x| pin(&mut p, &x.pending.entry));
        for (_, pins, _) in &st.chunks {
            for (k, o) in pins {
                p.entry(k.clone())
                    .and_modify(|x| *x = (*x).min(*o))
                    .or_insert(*o);
            }
        }
        p
    }

    /// Cuts the queue log below the oldest entry still pending, once enough was done.
    fn maybe_cut(&self, st: &mut State) {
        if st.since_cut < 1024 {
            return;
        }
        let floor = [
            st.redeliver.keys().next().copied(),
            st.unacked.keys().min().copied(),
            st.ready.front().map(|p| p.entry.id),
            Some(st.cursor),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(st.cursor)
        .min(self.log.high_watermark());
        if floor <= self.log.log_start_offset() {
            return;
        }
        match self.log.delete_before(floor) {
            Ok(_) => {
                st.since_cut = 0;
                st.counts.retain(|id, _| *id >= floor);
            }
            Err(e) => warn!(queue = %self.meta.name, error = %e, "could not cut the queue log"),
        }
    }

    /// Deletes the queue's log (the queue itself was removed); later acknowledgements and
    /// requeues of entries handed out before are ignored.
    pub(crate) fn destroy(&self) -> Result<()> {
        let _st = self.lock();
        self.deleted
            .store(true, std::sync::atomic::Ordering::Release);
        self.log.destroy()
    }

    /// Makes the queue log durable now (shutdown).
    pub(crate) fn flush(&self) -> Result<()> {
        self.log.flush()
    }
}

/// What [`Queue::take`] handed out.
#[derive(Debug, Default)]
pub struct Take {
    /// Entries for the consumer, in order.
    pub deliveries: Vec<Delivery>,
    /// Entries that expired or were dropped meanwhile, for dead-lettering.
    pub dropped: Vec<Dropped>,
    /// The consumer should wait until this partition's high watermark passes this offset
    /// (the next entry's record is not durable yet), then take again.
    pub wait: Option<(Arc<dyn PartitionLog>, i64)>,
}

/// A consumer of a queue: entries it takes are its own until acknowledged, requeued, or it
/// is dropped (which puts them back).
#[derive(Debug)]
pub struct QueueConsumer {
    queue: Arc<Queue>,
    id: u64,
}

impl QueueConsumer {
    /// A new consumer of `queue`.
    pub fn new(queue: Arc<Queue>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self { queue, id }
    }

    /// The queue consumed.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Takes up to `max` entries now (possibly none).
    pub fn take(&self, max: usize) -> Result<Take> {
        self.queue.take(self.id, max)
    }

    /// Waits until at least one entry (or a dropped one) can be taken, then takes up to `max`.
    pub async fn next(&self, max: usize) -> Result<Take> {
        let notify = self.queue.listen();
        loop {
            let wake = notify.notified();
            let t = self.take(max)?;
            if !t.deliveries.is_empty() || !t.dropped.is_empty() {
                return Ok(t);
            }
            match t.wait {
                Some((log, offset)) => {
                    let mut hw = log.watch_high_watermark();
                    let _ = hw.wait_for(|h| *h > offset).await;
                }
                None => wake.await,
            }
        }
    }
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        self.queue.release(self.id);
    }
}

fn to_delivery(p: &Pending, record: Record) -> Delivery {
    let e = &p.entry;
    Delivery {
        id: e.id,
        stream: e.stream.clone(),
        partition: e.partition,
        record,
        redelivered: p.deliveries > 1,
        deliveries: p.deliveries,
        attachment: e.attachment.clone(),
        enqueued_ms: e.enqueued_ms,
        deadline_ms: e.deadline_ms,
    }
}

enum Resolved {
    Record(Record),
    NotDurable(Arc<dyn PartitionLog>, i64),
    Gone,
}

/// The records of the stored batch read last, kept for one [`Queue::take`]: entries written
/// from one publish batch reference consecutive records of one stored batch, and a backlog
/// read back from disk would otherwise read and decode that whole batch once per entry.
struct BatchCache {
    stream: Arc<str>,
    partition: i32,
    crc: u32,
    /// Decoded records, in offset order.
    records: Vec<Record>,
}

impl BatchCache {
    fn find(&self, e: &Entry) -> Option<Resolved> {
        if self.crc != e.crc || self.partition != e.partition || self.stream != e.stream {
            return None;
        }
        let i = self
            .records
            .binary_search_by_key(&e.offset, |r| r.offset)
            .ok()
            .or_else(|| self.records.iter().position(|r| r.offset == e.offset))?;
        Some(Resolved::Record(self.records[i].clone()))
    }
}

/// Reads the record an entry references, checking its fingerprint. `cache` keeps the batch
/// read from disk for the next entries of the same take.
fn resolve(core: &Core, e: &Entry, cache: &mut Option<BatchCache>) -> Resolved {
    if let Some(r) = &e.routed {
        return if r.log.high_watermark() > e.offset {
            Resolved::Record(r.record.clone())
        } else {
            Resolved::NotDurable(r.log.clone(), e.offset)
        };
    }
    let Some(log) = core
        .stream(&e.stream)
        .and_then(|s| s.partition(e.partition).ok())
    else {
        return Resolved::Gone;
    };
    if e.offset >= log.high_watermark() {
        return Resolved::NotDurable(log, e.offset);
    }
    if let Some(hit) = cache.as_ref().and_then(|c| c.find(e)) {
        return hit;
    }
    // Just the batch holding the record (a read returns at least one whole batch).
    let Ok(r) = log.read(e.offset, 1) else {
        return Resolved::Gone;
    };
    let mut data = r.data;
    while let Some((_, size)) = batch::peek_frame(&data) {
        if size > data.len() {
            break;
        }
        let one = data.split_to(size);
        let Ok(h) = batch::parse_header(&one) else {
            break;
        };
        if h.last_offset() < e.offset {
            continue;
        }
        let crc = u32::from_be_bytes([one[17], one[18], one[19], one[20]]);
        if crc != e.crc {
            return Resolved::Gone;
        }
        let Ok(records) = batch::decode_records(&one) else {
            return Resolved::Gone;
        };
        let c = cache.insert(BatchCache {
            stream: e.stream.clone(),
            partition: e.partition,
            crc,
            records,
        });
        return c.find(e).unwrap_or(Resolved::Gone);
    }
    Resolved::Gone
}

fn note_chunk(chunks: &mut VecDeque<(i64, Pins, usize)>, e: &Entry) {
    match chunks.back_mut() {
        Some((_, pins, n)) if *n < CHUNK => {
            pin(pins, e);
            *n += 1;
        }
        _ => {
            let mut pins = Pins::new();
            pin(&mut pins, e);
            chunks.push_back((e.id, pins, 1));
        }
    }
}

/// Reads every queue record from `from` to the high watermark, calling `f` until it says stop.
fn scan(
    log: &dyn PartitionLog,
    mut from: i64,
    mut f: impl FnMut(QueueRecord) -> bool,
) -> Result<()> {
    let end = log.high_watermark();
    while from < end {
        let r = log.read(from, 1024 * 1024)?;
        if r.data.is_empty() {
            break;
        }
        let mut data = r.data;
        while let Some((_, size)) = batch::peek_frame(&data) {
            if size > data.len() {
                break;
            }
            let one = data.split_to(size);
            for rec in batch::decode_records(&one)? {
                if rec.offset < from {
                    continue;
                }
                from = rec.offset + 1;
                if let Some(q) = rec.value.and_then(|v| decode(rec.offset, v)) {
                    if !f(q) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}
