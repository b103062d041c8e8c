//! Deliveries: consumers (one task each, pushing from its queue as credit allows),
//! `basic.get`, and what the client says back (ack, reject, nack, recover).
//!
//! Delivery tags are per channel and handed out under the channel's delivery lock together
//! with the write, so the client sees them in increasing order whichever consumer sent them.
//! The queue knows entries by channel (its consumer id is the channel's), so closing a
//! channel puts everything it held back in the queue, while cancelling a consumer leaves its
//! unacknowledged messages with the channel, as AMQP wants.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;
use bytes::Bytes;
use core_stream::partition::now_ms;
use core_stream::queue::Delivery;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::broker::{AmqpBroker, AmqpQueue, ConsumerCtl};
use crate::connection::ConnInfo;
use crate::error::AmqpError;
use crate::props;
use crate::sink;
use crate::topology;
use crate::wire;

/// Most deliveries taken from a queue at once.
const TAKE_BATCH: usize = 64;

fn sstr(s: &str) -> ShortString {
    ShortString::try_new(crate::error::truncate(s, 255)).unwrap_or_else(|_| "".into())
}

/// One delivered, unacknowledged message.
#[derive(Debug)]
pub struct Unacked {
    /// Its queue.
    pub queue: Arc<AmqpQueue>,
    /// Entry id in the queue.
    pub id: i64,
    /// The consumer it went to (none for `basic.get`).
    pub consumer: Option<Arc<ConsumerState>>,
}

/// A channel's state that consumer tasks share with the connection's reader.
#[derive(Debug)]
pub struct ChanShared {
    /// Channel number.
    pub id: u16,
    /// Unique id (the queue's consumer id for this channel).
    pub uid: u64,
    /// Connection settings and the writer.
    pub info: ConnInfo,
    /// The next delivery tag; held while a delivery is written, so tags go out in order.
    pub deliver: tokio::sync::Mutex<u64>,
    /// Delivered and not yet acknowledged, by tag.
    pub unacked: Mutex<BTreeMap<u64, Unacked>>,
    /// `basic.qos` with `global`: one limit for all consumers of the channel (0 = none).
    pub prefetch_global: AtomicU32,
    /// Consumers by tag.
    pub consumers: Mutex<HashMap<String, Arc<ConsumerState>>>,
    /// Set when the channel closes.
    pub closed: AtomicBool,
    /// Direct reply-to: the consumer tag of this channel's `amq.rabbitmq.reply-to` consumer
    /// and the token its requests' `reply-to` carries.
    pub reply: Mutex<Option<(String, String)>>,
}

/// One consumer.
#[derive(Debug)]
pub struct ConsumerState {
    /// Unique id.
    pub id: u64,
    /// Consumer tag.
    pub tag: String,
    /// The queue.
    pub queue: Arc<AmqpQueue>,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// Most unacknowledged deliveries (0 = no limit).
    pub prefetch: u32,
    /// Unacknowledged deliveries now.
    pub unacked: AtomicU32,
    /// Cancel and wake-up signals.
    pub ctl: Arc<ConsumerCtl>,
    /// Its task.
    pub task: Mutex<Option<JoinHandle<()>>>,
}

impl ChanShared {
    /// A new channel's shared state.
    pub fn new(id: u16, uid: u64, info: ConnInfo) -> Arc<Self> {
        Arc::new(Self {
            id,
            uid,
            info,
            deliver: tokio::sync::Mutex::new(1),
            unacked: Mutex::new(BTreeMap::new()),
            prefetch_global: AtomicU32::new(0),
            consumers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            reply: Mutex::new(None),
        })
    }

    fn lock_unacked(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Unacked>> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consumers of this channel.
    pub fn consumer_list(&self) -> Vec<Arc<ConsumerState>> {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Deliveries this consumer may get now.
    fn credit(&self, c: &ConsumerState) -> usize {
        if c.no_ack {
            return TAKE_BATCH;
        }
        let mut credit = TAKE_BATCH;
        if c.prefetch > 0 {
            credit =
                credit.min(c.prefetch.saturating_sub(c.unacked.load(Ordering::Acquire)) as usize);
        }
        let global = self.prefetch_global.load(Ordering::Acquire);
        if global > 0 {
            let held = self
                .lock_unacked()
                .values()
                .filter(|u| u.consumer.is_some())
                .count() as u32;
            credit = credit.min(global.saturating_sub(held) as usize);
        }
        credit
    }

    /// Writes deliveries (method, header, body frames) with fresh tags, recording the
    /// unacknowledged ones. Returns false when the connection is gone.
    async fn write_deliveries(&self, consumer: &Arc<ConsumerState>, ds: Vec<Delivery>) -> bool {
        let mut tag = self.deliver.lock().await;
        if consumer.ctl.stopped() || self.closed.load(Ordering::Acquire) {
            // Cancelled meanwhile: these go back unseen.
            let ids: Vec<i64> = ds.iter().map(|d| d.id).collect();
            if consumer.no_ack {
                // Already acknowledged at take; nothing to return.
            } else if let Err(e) = consumer.queue.queue.requeue(&ids) {
                warn!(queue = %consumer.queue.name, error = %e, "could not requeue");
            }
            return true;
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(
            ds.iter()
                .map(|d| 128 + d.record.value.as_ref().map_or(0, |v| v.len()))
                .sum(),
        );
        for d in ds {
            let t = *tag;
            *tag += 1;
            let (exchange, key) = delivery_route(&d);
            wire::put_method(
                &mut out,
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: sstr(&consumer.tag),
                    delivery_tag: t,
                    redelivered: d.redelivered,
                    exchange: sstr(&exchange),
                    routing_key: sstr(&key),
                })),
            );
            let p = props::for_delivery(&d.record.headers, now);
            let body = d.record.value.as_deref().unwrap_or(&[]);
            wire::put_content(&mut out, self.id, &p, body, self.info.frame_max);
            if !consumer.no_ack {
                consumer.unacked.fetch_add(1, Ordering::AcqRel);
                self.lock_unacked().insert(
                    t,
                    Unacked {
                        queue: consumer.queue.clone(),
                        id: d.id,
                        consumer: Some(consumer.clone()),
                    },
                );
            }
        }
        let ok = self.info.out.send(Bytes::from(out)).await.is_ok();
        drop(tag);
        ok
    }

    /// `basic.ack`: the messages leave their queues.
    pub fn ack(&self, tag: u64, multiple: bool) -> Result<(), AmqpError> {
        let taken = self.take_unacked(tag, multiple)?;
        for (q, ids) in group(&taken) {
            if let Err(e) = q.queue.ack(&ids) {
                warn!(queue = %q.name, error = %e, "could not record acknowledgements");
            }
        }
        self.credit_back(&taken);
        Ok(())
    }

    /// `basic.reject` / `basic.nack`: back to the queue (redelivered) or dropped
    /// (dead-lettered when the queue says so).
    pub fn reject(
        &self,
        b: &AmqpBroker,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), AmqpError> {
        let taken = self.take_unacked(tag, multiple)?;
        for (q, ids) in group(&taken) {
            if requeue {
                if let Err(e) = q.queue.requeue(&ids) {
                    warn!(queue = %q.name, error = %e, "could not requeue");
                }
            } else {
                match q.queue.reject(&ids) {
                    Ok(dropped) => b.dead_letter(&q, dropped),
                    Err(e) => warn!(queue = %q.name, error = %e, "could not reject"),
                }
            }
        }
        self.credit_back(&taken);
        Ok(())
    }

    /// `basic.recover` with requeue: every unacknowledged message back to its queue.
    pub fn recover(&self) {
        let taken: Vec<Unacked> = std::mem::take(&mut *self.lock_unacked())
            .into_values()
            .collect();
        for (q, ids) in group(&taken) {
            if let Err(e) = q.queue.requeue(&ids) {
                warn!(queue = %q.name, error = %e, "could not requeue");
            }
        }
        self.credit_back(&taken);
    }

    /// Direct reply-to: delivers a reply straight to this channel's reply consumer (no
    /// queue, no acknowledgement, as RabbitMQ does). False when it has none.
    pub async fn deliver_reply(&self, routing_key: &str, raw_props: &[u8], body: &[u8]) -> bool {
        let Some((ctag, _)) = self.reply.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return false;
        };
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut tag = self.deliver.lock().await;
        let t = *tag;
        *tag += 1;
        let mut out = Vec::with_capacity(96 + raw_props.len() + body.len());
        wire::put_method(
            &mut out,
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: sstr(&ctag),
                delivery_tag: t,
                redelivered: false,
                exchange: "".into(),
                routing_key: sstr(routing_key),
            })),
        );
        wire::put_content(&mut out, self.id, raw_props, body, self.info.frame_max);
        let ok = self.info.out.send(Bytes::from(out)).await.is_ok();
        drop(tag);
        ok
    }

    /// The channel closes: consumers stop, and everything it holds goes back to the queues.
    pub async fn close(&self, b: &AmqpBroker) {
        self.closed.store(true, Ordering::Release);
        if let Some((_, token)) = self.reply.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.replies.remove(&token);
        }
        let consumers: Vec<Arc<ConsumerState>> = self
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in &consumers {
            stop(c).await;
        }
        let taken: Vec<Unacked> = std::mem::take(&mut *self.lock_unacked())
            .into_values()
            .collect();
        let mut queues: Vec<Arc<AmqpQueue>> = consumers.iter().map(|c| c.queue.clone()).collect();
        queues.extend(taken.iter().map(|u| u.queue.clone()));
        queues.sort_by_key(|q| Arc::as_ptr(q) as usize);
        queues.dedup_by_key(|q| Arc::as_ptr(q) as usize);
        for q in &queues {
            q.queue.release(self.uid);
        }
        for c in consumers {
            b.remove_consumer(&c.queue, c.id);
        }
    }

    fn take_unacked(&self, tag: u64, multiple: bool) -> Result<Vec<Unacked>, AmqpError> {
        let mut u = self.lock_unacked();
        if multiple {
            let keep = if tag == 0 {
                BTreeMap::new()
            } else {
                u.split_off(&(tag + 1))
            };
            let taken = std::mem::replace(&mut *u, keep);
            if taken.is_empty() && tag != 0 {
                return Err(AmqpError::precondition(format!(
                    "unknown delivery tag {tag}"
                )));
            }
            Ok(taken.into_values().collect())
        } else {
            u.remove(&tag)
                .map(|x| vec![x])
                .ok_or_else(|| AmqpError::precondition(format!("unknown delivery tag {tag}")))
        }
    }

    fn credit_back(&self, taken: &[Unacked]) {
        let mut woken: Vec<u64> = Vec::new();
        for t in taken {
            if let Some(c) = &t.consumer {
                c.unacked.fetch_sub(1, Ordering::AcqRel);
                if !woken.contains(&c.id) {
                    woken.push(c.id);
                    c.ctl.wake.notify_one();
                }
            }
        }
        if self.prefetch_global.load(Ordering::Acquire) > 0 && !taken.is_empty() {
            for c in self.consumer_list() {
                c.ctl.wake.notify_one();
            }
        }
    }

    /// `basic.get`: one message, or none. Waits briefly for a message whose record is not
    /// durable yet (just published).
    pub async fn get(
        &self,
        b: &AmqpBroker,
        q: &Arc<AmqpQueue>,
        no_ack: bool,
    ) -> Result<bool, AmqpError> {
        let mut tries = 0;
        let d = loop {
            let take = q
                .queue
                .take(self.uid, 1)
                .map_err(|e| AmqpError::internal(format!("storage error: {e}")))?;
            b.dead_letter(q, take.dropped);
            if let Some(d) = take.deliveries.into_iter().next() {
                break Some(d);
            }
            match take.wait {
                Some((log, offset)) if tries < 3 => {
                    tries += 1;
                    let mut hw = log.watch_high_watermark();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), hw.wait_for(|h| *h > offset))
                            .await;
                }
                _ => break None,
            }
        };
        let Some(d) = d else {
            return Ok(false);
        };
        let mut tag = self.deliver.lock().await;
        let t = *tag;
        *tag += 1;
        if no_ack {
            let _ = q.queue.ack(&[d.id]);
        } else {
            self.lock_unacked().insert(
                t,
                Unacked {
                    queue: q.clone(),
                    id: d.id,
                    consumer: None,
                },
            );
        }
        let (exchange, key) = delivery_route(&d);
        let mut out = Vec::new();
        wire::put_method(
            &mut out,
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: t,
                redelivered: d.redelivered,
                exchange: sstr(&exchange),
                routing_key: sstr(&key),
                message_count: q.message_count(),
            })),
        );
        let p = props::for_delivery(&d.record.headers, now_ms());
        wire::put_content(
            &mut out,
            self.id,
            &p,
            d.record.value.as_deref().unwrap_or(&[]),
            self.info.frame_max,
        );
        let _ = self.info.out.send(Bytes::from(out)).await;
        drop(tag);
        Ok(true)
    }
}

/// Exchange and routing key a queue entry is delivered with.
fn delivery_route(d: &Delivery) -> (String, String) {
    let (via, routing) = sink::read_attachment(&d.attachment);
    topology::exchange_and_key(routing.unwrap_or(&d.stream), via)
}

fn group(taken: &[Unacked]) -> Vec<(Arc<AmqpQueue>, Vec<i64>)> {
    let mut out: Vec<(Arc<AmqpQueue>, Vec<i64>)> = Vec::new();
    for u in taken {
        match out.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
            Some((_, ids)) => ids.push(u.id),
            None => out.push((u.queue.clone(), vec![u.id])),
        }
    }
    out
}

/// Stops a consumer's task and waits (briefly) for it to finish.
pub async fn stop(c: &ConsumerState) {
    c.ctl.cancelled.store(true, Ordering::Release);
    c.ctl.wake.notify_one();
    let task = c.task.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut t) = task {
        if tokio::time::timeout(Duration::from_secs(5), &mut t)
            .await
            .is_err()
        {
            t.abort();
        }
    }
}

/// The task of one consumer: takes from its queue as credit allows and writes deliveries.
pub async fn run(b: Arc<AmqpBroker>, ch: Arc<ChanShared>, c: Arc<ConsumerState>) {
    let notify = c.queue.queue.listen();
    loop {
        if c.ctl.stopped() || ch.closed.load(Ordering::Acquire) {
            break;
        }
        let woken = c.ctl.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if !c.queue.may_deliver(c.id) {
            woken.await;
            continue;
        }
        let credit = ch.credit(&c);
        c.ctl.has_credit.store(credit > 0, Ordering::Release);
        if credit == 0 {
            woken.await;
            continue;
        }
        // Consumer priorities: a higher-priority consumer with room goes first.
        if let Some(higher) = c.queue.higher_with_credit(c.ctl.priority) {
            higher.wake.notify_one();
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let ready = notify.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let take = match c.queue.queue.take(ch.uid, credit) {
            Ok(t) => t,
            Err(e) => {
                debug!(queue = %c.queue.name, error = %e, "consumer stops: queue unreadable");
                break;
            }
        };
        if !take.dropped.is_empty() {
            b.dead_letter(&c.queue, take.dropped);
        }
        if take.deliveries.is_empty() {
            match take.wait {
                Some((log, offset)) => {
                    let mut hw = log.watch_high_watermark();
                    tokio::select! {
                        _ = hw.wait_for(|h| *h > offset) => {}
                        _ = &mut woken => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = &mut ready => {}
                        _ = &mut woken => {}
                    }
                }
            }
            continue;
        }
        if c.no_ack {
            let ids: Vec<i64> = take.deliveries.iter().map(|d| d.id).collect();
            if let Err(e) = c.queue.queue.ack(&ids) {
                warn!(queue = %c.queue.name, error = %e, "could not record deliveries");
            }
        }
        if !ch.write_deliveries(&c, take.deliveries).await {
            break;
        }
    }
    if c.ctl.server_cancelled.load(Ordering::Acquire) && !ch.closed.load(Ordering::Acquire) {
        // The queue was deleted: the client is told, and the consumer is gone from the
        // channel (its unacknowledged messages stay with the channel until it closes).
        ch.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&c.tag);
        if ch.info.caps.consumer_cancel_notify {
            let mut out = Vec::new();
            wire::put_method(
                &mut out,
                ch.id,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: sstr(&c.tag),
                    nowait: true,
                })),
            );
            let _ = ch.info.out.send(Bytes::from(out)).await;
        }
    }
}
