//! One AMQP channel: its methods (exchange, queue, basic, confirm, tx), content assembly,
//! and the publish path. Publishes of one socket read are staged and appended per stream
//! and partition as one batch; a channel in confirm mode gets `basic.ack` once its records
//! (and the queue entries they made) are durable, from a task of its own so the reader never
//! waits on an fsync.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{access, basic, channel, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::{Bytes, BytesMut};
use core_stream::batch::{self, Record};
use core_stream::log::DurableTicket;
use core_stream::partition::now_ms;
use core_stream::{partition_for_key, Stream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::broker::{AmqpBroker, ConsumerCtl, ConsumerEntry};
use crate::connection::Conn;
use crate::consumer::{self, ChanShared, ConsumerState};
use crate::error::{code, exchange_ref, truncate, AmqpError};
use crate::props::{self, Props};
use crate::topology::{self, BindingDef, ExchangeDef, ExchangeKind, QueueDef};
use crate::wire::{self, frame_type};

/// The pseudo-queue of direct reply-to (RabbitMQ's RPC replies without a queue).
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Staged publish bytes of one channel that trigger an append before the read ends.
const STAGE_LIMIT: usize = 1024 * 1024;
/// Confirm batches in flight per channel before the publisher is slowed.
const CONFIRM_QUEUE: usize = 1024;

fn sstr(s: &str) -> ShortString {
    ShortString::try_new(truncate(s, 255)).unwrap_or_else(|_| "".into())
}

fn table_bytes(t: &FieldTable) -> Vec<u8> {
    match gen_field_table(t)(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.into_inner().0,
        Err(_) => vec![0, 0, 0, 0],
    }
}

/// A random name part as RabbitMQ makes them (`amq.gen-…`, `amq.ctag-…`): 16 random bytes,
/// base64url without padding.
pub fn random_name(prefix: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let mut s = String::with_capacity(prefix.len() + 22);
    s.push_str(prefix);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            s.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        s.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    s
}

/// A message being received: the publish method, then its header, then its body.
#[derive(Debug)]
struct Incoming {
    publish: basic::Publish,
    header: Option<(Bytes, Props, u64)>,
    body: BytesMut,
    single: Option<Bytes>,
}

/// A whole message waiting to be appended.
#[derive(Debug)]
pub struct Staged {
    exchange: String,
    key: String,
    mandatory: bool,
    raw_props: Bytes,
    props: Props,
    body: Bytes,
    /// Confirm sequence number (0 = not confirming).
    seq: u64,
}

/// Publisher confirms of one batch: sequence numbers (with `true` for a nack) and the
/// ticket to wait for first.
struct ConfirmBatch {
    ticket: Option<DurableTicket>,
    seqs: Vec<(u64, bool)>,
}

/// Where a staged message goes: stream and partition (none: unroutable).
type Target = Option<(Arc<Stream>, i32)>;

/// A transaction's buffered work.
#[derive(Debug, Default)]
struct Tx {
    publishes: Vec<Staged>,
    acks: Vec<TxAck>,
}

#[derive(Debug)]
enum TxAck {
    Ack(u64, bool),
    Reject(u64, bool, bool),
}

/// One open channel (the reader task's side).
pub struct Channel {
    /// State shared with consumer tasks.
    pub shared: Arc<ChanShared>,
    /// `channel.close` was sent for an error; only close / close-ok count now.
    closing: bool,
    content: Option<Incoming>,
    confirm: Option<(u64, mpsc::Sender<ConfirmBatch>)>,
    tx: Option<Tx>,
    last_queue: Option<String>,
    /// `basic.qos` without global: the limit of consumers created after it.
    prefetch: u16,
    staged: Vec<Staged>,
    staged_bytes: usize,
}

impl Channel {
    fn new(shared: Arc<ChanShared>) -> Self {
        Self {
            shared,
            closing: false,
            content: None,
            confirm: None,
            tx: None,
            last_queue: None,
            prefetch: 0,
            staged: Vec::new(),
            staged_bytes: 0,
        }
    }

    /// Closes the channel: consumers stopped, held messages back to their queues.
    pub async fn close(self, b: &AmqpBroker) {
        self.shared.close(b).await;
    }

    fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// queue.bind / queue.unbind as a binding: an empty queue name is the channel's last
    /// declared queue, and with it an empty key is that queue's name (as RabbitMQ does).
    fn queue_binding(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        arguments: &FieldTable,
    ) -> Result<BindingDef, AmqpError> {
        let destination = self.queue_name(queue)?;
        let routing_key = if queue.is_empty() && key.is_empty() {
            destination.clone()
        } else {
            key.to_string()
        };
        Ok(BindingDef {
            destination,
            to_exchange: false,
            source: exchange.to_string(),
            routing_key,
            arguments: table_bytes(arguments),
        })
    }
}

/// exchange.bind / exchange.unbind as a binding.
fn exchange_binding(
    destination: &str,
    source: &str,
    key: &str,
    arguments: &FieldTable,
) -> BindingDef {
    BindingDef {
        destination: destination.to_string(),
        to_exchange: true,
        source: source.to_string(),
        routing_key: key.to_string(),
        arguments: table_bytes(arguments),
    }
}

fn ids(m: &AMQPClass) -> (u16, u16) {
    (m.get_amqp_class_id(), m.get_amqp_method_id())
}

impl Conn {
    /// A method on a channel other than 0.
    pub(crate) async fn channel_method(
        &mut self,
        ch: u16,
        m: AMQPClass,
        frame: &[u8],
    ) -> Result<(), AmqpError> {
        let (cid, mid) = ids(&m);
        let Some(chan) = self.channels.get(&ch) else {
            return match m {
                AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                    if ch > self.info.channel_max
                        || self.channels.len() >= usize::from(self.info.channel_max)
                    {
                        return Err(AmqpError::not_allowed(format!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.len(),
                            self.info.channel_max
                        ))
                        .on(cid, mid));
                    }
                    let shared = ChanShared::new(ch, self.b.next_id(), self.info.clone());
                    self.channels.insert(ch, Channel::new(shared));
                    self.send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    )
                    .await;
                    Ok(())
                }
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => Ok(()),
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    )
                    .await;
                    Ok(())
                }
                _ => Err(AmqpError::channel_error("expected 'channel.open'").on(cid, mid)),
            };
        };
        if chan.closing {
            match m {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&ch);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.channels.remove(&ch);
                    self.send_method(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    )
                    .await;
                }
                _ => {}
            }
            return Ok(());
        }
        if chan.content.is_some() {
            return Err(AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            )
            .on(cid, mid));
        }
        // Everything published before this method takes effect before it (a get, a passive
        // declare or a purge sees those messages), as the client sent them in that order.
        if !matches!(m, AMQPClass::Basic(basic::AMQPMethod::Publish(_))) {
            self.flush_all().await?;
        }
        match self.method(ch, m, frame).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = e.on(cid, mid);
                if e.is_hard() {
                    Err(e)
                } else {
                    self.soft_close(ch, e).await;
                    Ok(())
                }
            }
        }
    }

    /// A channel error: `channel.close`; the channel ignores everything until `close-ok`.
    async fn soft_close(&mut self, ch: u16, e: AmqpError) {
        debug!(peer = %self.info.peer, channel = ch, error = %e, "closing channel");
        let _ = self.flush(ch).await;
        let Some(chan) = self.channels.get_mut(&ch) else {
            return;
        };
        chan.closing = true;
        chan.content = None;
        chan.staged.clear();
        let shared = chan.shared.clone();
        shared.close(&self.b).await;
        self.send_method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: sstr(&e.text),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        )
        .await;
    }

    fn chan(&mut self, ch: u16) -> &mut Channel {
        self.channels
            .get_mut(&ch)
            .expect("channel checked by the caller")
    }

    async fn reply(&self, ch: u16, nowait: bool, m: AMQPClass) {
        if !nowait {
            self.send_method(ch, m).await;
        }
    }

    async fn method(&mut self, ch: u16, m: AMQPClass, frame: &[u8]) -> Result<(), AmqpError> {
        let b = self.b.clone();
        let conn = self.info.id;
        match m {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.flush(ch).await?;
                if let Some(c) = self.channels.remove(&ch) {
                    c.close(&b).await;
                }
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                if let Some(c) = self.channels.remove(&ch) {
                    c.close(&b).await;
                }
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: true,
                    })),
                )
                .await;
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send_method(
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) if d.passive => {
                // A passive declare names no type (the Java client sends an empty one).
                if b.exchange(d.exchange.as_str()).is_none() || d.exchange.as_str().is_empty() {
                    return Err(if d.exchange.as_str().is_empty() {
                        AmqpError::access_refused("operation not permitted on the default exchange")
                    } else {
                        AmqpError::not_found(format!("no {}", exchange_ref(d.exchange.as_str())))
                    });
                }
                self.reply(
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
                let kind = ExchangeKind::parse(d.kind.as_str()).ok_or_else(|| {
                    AmqpError::precondition(format!("unknown exchange type '{}'", d.kind.as_str()))
                })?;
                let def = ExchangeDef {
                    name: d.exchange.as_str().to_string(),
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: table_bytes(&d.arguments),
                };
                b.declare_exchange(def, d.passive)?;
                self.reply(
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
                b.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                self.reply(
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(x)) => {
                b.bind(
                    conn,
                    exchange_binding(
                        x.destination.as_str(),
                        x.source.as_str(),
                        x.routing_key.as_str(),
                        &x.arguments,
                    ),
                )?;
                self.reply(
                    ch,
                    x.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(x)) => {
                b.unbind(
                    conn,
                    exchange_binding(
                        x.destination.as_str(),
                        x.source.as_str(),
                        x.routing_key.as_str(),
                        &x.arguments,
                    ),
                )?;
                self.reply(
                    ch,
                    x.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
                let mut name: String = d
                    .queue
                    .as_str()
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\n')
                    .collect();
                if name.is_empty() {
                    name = if d.passive {
                        self.chan(ch).queue_name("")?
                    } else {
                        random_name("amq.gen-")
                    };
                }
                let def = QueueDef {
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: table_bytes(&d.arguments),
                };
                let (messages, consumers) = if name == REPLY_TO {
                    (0, 1)
                } else if let Some(token) = name
                    .strip_prefix(REPLY_TO)
                    .and_then(|t| t.strip_prefix('.'))
                {
                    if b.replies.get(token).and_then(|w| w.upgrade()).is_none() {
                        return Err(AmqpError::not_found(format!(
                            "no {}",
                            crate::error::queue_ref(&name)
                        )));
                    }
                    (0, 1)
                } else {
                    b.declare_queue(conn, &name, d.passive, def)?
                };
                self.chan(ch).last_queue = Some(name.clone());
                self.reply(
                    ch,
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: sstr(&name),
                        message_count: messages,
                        consumer_count: consumers,
                    })),
                )
                .await;
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Bind(x)) => {
                let def = self.chan(ch).queue_binding(
                    x.queue.as_str(),
                    x.exchange.as_str(),
                    x.routing_key.as_str(),
                    &x.arguments,
                )?;
                b.bind(conn, def)?;
                self.reply(
                    ch,
                    x.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Unbind(x)) => {
                let def = self.chan(ch).queue_binding(
                    x.queue.as_str(),
                    x.exchange.as_str(),
                    x.routing_key.as_str(),
                    &x.arguments,
                )?;
                b.unbind(conn, def)?;
                self.send_method(
                    ch,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Purge(p)) => {
                let q = self.chan(ch).queue_name(p.queue.as_str())?;
                let n = b.purge_queue(conn, &q)?;
                self.reply(
                    ch,
                    p.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                        message_count: n,
                    })),
                )
                .await;
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
                let q = self.chan(ch).queue_name(d.queue.as_str())?;
                let n = b.delete_queue(conn, &q, d.if_unused, d.if_empty)?;
                self.reply(
                    ch,
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                        message_count: n,
                    })),
                )
                .await;
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                let p = wire::payload(frame);
                let size = p
                    .get(4..8)
                    .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
                if size != 0 {
                    return Err(AmqpError::not_implemented(format!(
                        "prefetch_size!=0 ({size})"
                    )));
                }
                let c = self.chan(ch);
                if q.global {
                    c.shared
                        .prefetch_global
                        .store(u32::from(q.prefetch_count), Ordering::Release);
                    for x in c.shared.consumer_list() {
                        x.ctl.wake.notify_one();
                    }
                } else {
                    c.prefetch = q.prefetch_count;
                }
                self.send_method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => self.consume(ch, c).await,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                let shared = self.chan(ch).shared.clone();
                let tag = c.consumer_tag.as_str().to_string();
                let found = shared
                    .consumers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&tag);
                if let Some(cs) = found {
                    consumer::stop(&cs).await;
                    b.remove_consumer(&cs.queue, cs.id);
                }
                {
                    let mut r = shared.reply.lock().unwrap_or_else(|e| e.into_inner());
                    if r.as_ref().is_some_and(|(t, _)| *t == tag) {
                        if let Some((_, token)) = r.take() {
                            b.replies.remove(&token);
                        }
                    }
                }
                self.reply(
                    ch,
                    c.nowait,
                    AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                        consumer_tag: sstr(&tag),
                    })),
                )
                .await;
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(_)) => Ok(()),
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                self.published = true;
                if p.immediate {
                    return Err(AmqpError::not_implemented("immediate=true"));
                }
                let name = p.exchange.as_str();
                match b.exchange(name) {
                    None => return Err(AmqpError::not_found(format!("no {}", exchange_ref(name)))),
                    Some(e) if e.internal => {
                        return Err(AmqpError::access_refused(format!(
                            "cannot publish to internal {}",
                            exchange_ref(name)
                        )))
                    }
                    Some(_) => {}
                }
                self.chan(ch).content = Some(Incoming {
                    publish: p,
                    header: None,
                    body: BytesMut::new(),
                    single: None,
                });
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                let name = self.chan(ch).queue_name(g.queue.as_str())?;
                let q = b.queue(conn, &name)?;
                let shared = self.chan(ch).shared.clone();
                if !shared.get(&b, &q, g.no_ack).await? {
                    self.send_method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                    )
                    .await;
                }
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                let c = self.chan(ch);
                if let Some(t) = &mut c.tx {
                    t.acks.push(TxAck::Ack(a.delivery_tag, a.multiple));
                    return Ok(());
                }
                c.shared.ack(a.delivery_tag, a.multiple)
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                let c = self.chan(ch);
                if let Some(t) = &mut c.tx {
                    t.acks.push(TxAck::Reject(r.delivery_tag, false, r.requeue));
                    return Ok(());
                }
                c.shared.reject(&b, r.delivery_tag, false, r.requeue)
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                let c = self.chan(ch);
                if let Some(t) = &mut c.tx {
                    t.acks
                        .push(TxAck::Reject(n.delivery_tag, n.multiple, n.requeue));
                    return Ok(());
                }
                c.shared.reject(&b, n.delivery_tag, n.multiple, n.requeue)
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(r)) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                self.chan(ch).shared.recover();
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Recover(r)) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                self.chan(ch).shared.recover();
                self.send_method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let c = self.chan(ch);
                if c.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                if c.confirm.is_none() {
                    let (tx, rx) = mpsc::channel(CONFIRM_QUEUE);
                    tokio::spawn(confirm_loop(rx, c.shared.clone()));
                    c.confirm = Some((1, tx));
                }
                self.reply(
                    ch,
                    s.nowait,
                    AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                let c = self.chan(ch);
                if c.confirm.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if c.tx.is_none() {
                    c.tx = Some(Tx::default());
                }
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
                    .await;
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => {
                let Some(t) = self.chan(ch).tx.take() else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                self.chan(ch).tx = Some(Tx::default());
                let c = self.chan(ch);
                c.staged_bytes += t.publishes.iter().map(|s| s.body.len()).sum::<usize>();
                c.staged.extend(t.publishes);
                let ticket = self.flush(ch).await?;
                if let Some(ticket) = ticket {
                    ticket
                        .wait()
                        .await
                        .map_err(|e| AmqpError::internal(format!("storage error: {e}")))?;
                }
                let shared = self.chan(ch).shared.clone();
                for a in t.acks {
                    match a {
                        TxAck::Ack(tag, multiple) => shared.ack(tag, multiple)?,
                        TxAck::Reject(tag, multiple, requeue) => {
                            shared.reject(&b, tag, multiple, requeue)?
                        }
                    }
                }
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})))
                    .await;
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => {
                let c = self.chan(ch);
                if c.tx.is_none() {
                    return Err(AmqpError::precondition("channel is not transactional"));
                }
                c.tx = Some(Tx::default());
                self.send_method(
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                )
                .await;
                Ok(())
            }
            AMQPClass::Connection(_) => Err(AmqpError::command_invalid("unimplemented method")),
            _ => Err(AmqpError::command_invalid(
                "unexpected method from a client",
            )),
        }
    }

    async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        let b = self.b.clone();
        if c.queue.as_str() == REPLY_TO {
            return self.consume_replies(ch, c).await;
        }
        let name = self.chan(ch).queue_name(c.queue.as_str())?;
        let q = b.queue(self.info.id, &name)?;
        let shared = self.chan(ch).shared.clone();
        let mut tag = c.consumer_tag.as_str().to_string();
        if tag.is_empty() {
            tag = random_name("amq.ctag-");
        }
        if shared
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&tag)
        {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let priority = c
            .arguments
            .inner()
            .get("x-priority")
            .and_then(|v| match v {
                AMQPValue::ShortShortInt(x) => Some(i64::from(*x)),
                AMQPValue::ShortShortUInt(x) => Some(i64::from(*x)),
                AMQPValue::ShortInt(x) => Some(i64::from(*x)),
                AMQPValue::ShortUInt(x) => Some(i64::from(*x)),
                AMQPValue::LongInt(x) => Some(i64::from(*x)),
                AMQPValue::LongUInt(x) => Some(i64::from(*x)),
                AMQPValue::LongLongInt(x) => Some(*x),
                _ => None,
            })
            .unwrap_or(0);
        let ctl = Arc::new(ConsumerCtl {
            priority,
            ..Default::default()
        });
        let state = Arc::new(ConsumerState {
            id: b.next_id(),
            tag: tag.clone(),
            queue: q.clone(),
            no_ack: c.no_ack,
            prefetch: u32::from(self.chan(ch).prefetch),
            unacked: Default::default(),
            ctl: ctl.clone(),
            task: Default::default(),
        });
        b.add_consumer(
            &q,
            ConsumerEntry {
                id: state.id,
                exclusive: c.exclusive,
                ctl,
            },
        )?;
        shared
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tag.clone(), state.clone());
        self.reply(
            ch,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: sstr(&tag),
            })),
        )
        .await;
        let task = tokio::spawn(consumer::run(b, shared, state.clone()));
        *state.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    /// `basic.consume` of `amq.rabbitmq.reply-to`: this channel's requests may ask for
    /// replies straight to it.
    async fn consume_replies(&mut self, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if !c.no_ack {
            return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
        }
        let shared = self.chan(ch).shared.clone();
        let mut tag = c.consumer_tag.as_str().to_string();
        if tag.is_empty() {
            tag = random_name("amq.ctag-");
        }
        {
            let mut r = shared.reply.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_some() {
                return Err(AmqpError::precondition("reply consumer already set"));
            }
            let token = format!("{:x}.{}", shared.uid, random_name(""));
            self.b
                .replies
                .insert(token.clone(), Arc::downgrade(&shared));
            *r = Some((tag.clone(), token));
        }
        self.reply(
            ch,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: sstr(&tag),
            })),
        )
        .await;
        Ok(())
    }

    /// A content header or body frame.
    pub(crate) async fn content_frame(&mut self, ch: u16, f: Bytes) -> Result<(), AmqpError> {
        let max = self.b.config.max_message_bytes;
        let Some(chan) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::channel_error("expected 'channel.open'"));
        };
        if chan.closing {
            return Ok(());
        }
        let Some(inc) = &mut chan.content else {
            return Err(AmqpError::unexpected_frame(
                "expected method frame, got non method frame instead",
            ));
        };
        let payload = f.slice(7..f.len() - 1);
        if f[0] == frame_type::HEADER {
            if inc.header.is_some() {
                return Err(AmqpError::unexpected_frame(
                    "expected content body, got non content body frame instead",
                ));
            }
            let h = wire::parse_header(&payload).map_err(|e| {
                AmqpError::frame_error(format!("cannot decode content header: {e}"))
            })?;
            if h.class_id != 60 {
                return Err(AmqpError::unexpected_frame(format!(
                    "expected content header for class 60, got one for class {} instead",
                    h.class_id
                )));
            }
            let p = Props::parse(&h.properties)
                .map_err(|e| AmqpError::frame_error(format!("cannot decode properties: {e}")))?;
            if h.body_size > max {
                let e = AmqpError::precondition(format!(
                    "message size {} is larger than configured max size {max}",
                    h.body_size
                ))
                .on(60, 40);
                self.soft_close(ch, e).await;
                return Ok(());
            }
            if let Err(e) = p.expiration_ms() {
                self.soft_close(ch, AmqpError::precondition(e).on(60, 40))
                    .await;
                return Ok(());
            }
            inc.header = Some((h.properties, p, h.body_size));
        } else {
            let Some((_, _, size)) = &inc.header else {
                return Err(AmqpError::unexpected_frame(
                    "expected content header for class 60, got non content header frame instead",
                ));
            };
            let have = inc.body.len() as u64 + inc.single.as_ref().map_or(0, |s| s.len() as u64);
            if have + payload.len() as u64 > *size {
                return Err(AmqpError::frame_error(
                    "content body frame exceeds remaining content size",
                ));
            }
            if have == 0 && payload.len() as u64 == *size {
                inc.single = Some(payload);
            } else {
                if let Some(s) = inc.single.take() {
                    inc.body.extend_from_slice(&s);
                }
                if inc.body.capacity() == 0 {
                    inc.body.reserve((*size).min(4 * 1024 * 1024) as usize);
                }
                inc.body.extend_from_slice(&payload);
            }
        }
        let complete = match &inc.header {
            Some((_, _, size)) => {
                inc.body.len() as u64 + inc.single.as_ref().map_or(0, |s| s.len() as u64) == *size
            }
            None => false,
        };
        if complete {
            let Some(inc) = chan.content.take() else {
                return Ok(());
            };
            let Some((raw_props, props, _)) = inc.header else {
                return Ok(());
            };
            let body = inc.single.unwrap_or_else(|| inc.body.freeze());
            let (mut raw_props, mut props) = (raw_props, props);
            if props.reply_to.as_deref() == Some(REPLY_TO.as_bytes()) {
                let token = chan
                    .shared
                    .reply
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|(_, t)| t.clone());
                let Some(token) = token else {
                    let e =
                        AmqpError::precondition("fast reply consumer does not exist").on(60, 40);
                    self.soft_close(ch, e).await;
                    return Ok(());
                };
                props.reply_to = Some(Bytes::from(format!("{REPLY_TO}.{token}")));
                raw_props = props.encode();
            }
            let seq = match &mut chan.confirm {
                Some((next, _)) => {
                    let s = *next;
                    *next += 1;
                    s
                }
                None => 0,
            };
            let s = Staged {
                exchange: inc.publish.exchange.as_str().to_string(),
                key: inc.publish.routing_key.as_str().to_string(),
                mandatory: inc.publish.mandatory,
                raw_props,
                props,
                body,
                seq,
            };
            if let Some(t) = &mut chan.tx {
                t.publishes.push(s);
            } else {
                chan.staged_bytes += s.body.len();
                chan.staged.push(s);
                if chan.staged_bytes >= STAGE_LIMIT {
                    self.flush(ch).await?;
                }
            }
        }
        Ok(())
    }

    /// Appends every channel's staged publishes.
    pub(crate) async fn flush_all(&mut self) -> Result<(), AmqpError> {
        let ids: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.staged.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.flush(id).await?;
        }
        Ok(())
    }

    /// Appends one channel's staged publishes: one batch per run of messages to the same
    /// stream partition; unroutable mandatory messages are returned; confirms are handed to
    /// the channel's confirm task. Returns the durability ticket of everything appended.
    async fn flush(&mut self, ch: u16) -> Result<Option<DurableTicket>, AmqpError> {
        let Some(chan) = self.channels.get_mut(&ch) else {
            return Ok(None);
        };
        if chan.staged.is_empty() {
            return Ok(None);
        }
        let staged = std::mem::take(&mut chan.staged);
        chan.staged_bytes = 0;
        let confirm = chan.confirm.as_ref().map(|(_, tx)| tx.clone());
        let shared = chan.shared.clone();
        let core = self.b.core.clone();
        let now = now_ms();
        let mut all = DurableTicket::default();
        let mut streams: HashMap<String, Arc<Stream>> = HashMap::new();
        // Resolve each message's stream and partition.
        let mut planned: Vec<(Target, Staged)> = Vec::with_capacity(staged.len());
        for s in staged {
            let target = if s.exchange.is_empty()
                && (s.key.is_empty() || s.key.starts_with(REPLY_TO))
            {
                None
            } else {
                match topology::stream_for(&s.exchange, &s.key) {
                    Ok(name) => {
                        let st = match streams.get(&name) {
                            Some(st) => Some(st.clone()),
                            None => match tokio::task::block_in_place(|| {
                                core.get_or_create_stream(&name)
                            }) {
                                Ok(st) => {
                                    streams.insert(name, st.clone());
                                    Some(st)
                                }
                                Err(e) => {
                                    warn!(stream = %name, error = %e, "cannot create stream for a publish");
                                    None
                                }
                            },
                        };
                        st.map(|st| {
                            let n = st.partition_count() as u32;
                            let key = props::entries(s.props.headers.as_deref().unwrap_or(&[]))
                                .find(|e| e.key == props::KEY_ENTRY.as_bytes())
                                .map(|e| e.value.to_vec());
                            let p = match key {
                                Some(k) => partition_for_key(&k, n),
                                None => (shared.uid % u64::from(n.max(1))) as u32,
                            };
                            (st, p as i32)
                        })
                    }
                    Err(e) => {
                        debug!(exchange = %s.exchange, key = %s.key, error = %e, "publish not stored");
                        None
                    }
                }
            };
            planned.push((target, s));
        }
        let mut confirms: Vec<(u64, bool)> = Vec::new();
        let mut returns: Vec<Vec<u8>> = Vec::new();
        let mut alternates: HashMap<String, Option<String>> = HashMap::new();
        let mut i = 0;
        while i < planned.len() {
            let Some((st, p)) = planned[i].0.clone() else {
                let s = &planned[i].1;
                let reply = s
                    .key
                    .strip_prefix(REPLY_TO)
                    .and_then(|t| t.strip_prefix('.'))
                    .filter(|_| s.exchange.is_empty())
                    .and_then(|token| self.b.replies.get(token).and_then(|w| w.upgrade()));
                let delivered = match reply {
                    Some(target) => target.deliver_reply(&s.key, &s.raw_props, &s.body).await,
                    None => false,
                };
                if s.mandatory && !delivered {
                    returns.push(return_frames(ch, s, shared.info.frame_max));
                }
                if s.seq > 0 {
                    confirms.push((s.seq, false));
                }
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < planned.len()
                && planned[j]
                    .0
                    .as_ref()
                    .is_some_and(|(s2, p2)| Arc::ptr_eq(s2, &st) && *p2 == p)
            {
                j += 1;
            }
            let records: Vec<Record> = planned[i..j]
                .iter()
                .map(|(_, s)| {
                    let r = props::to_record(&s.props, &s.raw_props, now);
                    Record {
                        timestamp: now,
                        key: r.key,
                        value: Some(s.body.clone()),
                        headers: r.headers,
                        ..Default::default()
                    }
                })
                .collect();
            let data = batch::build_batch(&records, None);
            match core.append_from(&st, p, &data, self.info.id) {
                Ok(out) => {
                    for (k, (_, s)) in planned[i..j].iter().enumerate() {
                        let k = k as u32;
                        let refused = out.refused.contains(&k);
                        if !out.routed.contains(&k) && !refused {
                            // Unroutable: its exchange's alternate exchange gets it, else a
                            // mandatory message goes back.
                            let routed = match self.alternate_exchange(&s.exchange, &mut alternates)
                            {
                                Some(ae) => self.publish_alternate(&ae, s, now, &mut all),
                                None => false,
                            };
                            if s.mandatory && !routed {
                                returns.push(return_frames(ch, s, shared.info.frame_max));
                            }
                        }
                        if s.seq > 0 {
                            confirms.push((s.seq, refused));
                        }
                    }
                    all.join(out.durable);
                }
                Err(e) => {
                    warn!(stream = %st.name, error = %e, "publish not stored");
                    for (_, s) in &planned[i..j] {
                        if s.seq > 0 {
                            confirms.push((s.seq, true));
                        }
                    }
                    if confirm.is_none() {
                        return Err(AmqpError::internal(format!(
                            "cannot store the message: {e}"
                        )));
                    }
                }
            }
            i = j;
        }
        for r in returns {
            let _ = shared.info.out.send(Bytes::from(r)).await;
        }
        match confirm {
            Some(tx) if !confirms.is_empty() => {
                let _ = tx
                    .send(ConfirmBatch {
                        ticket: Some(all),
                        seqs: confirms,
                    })
                    .await;
                Ok(None)
            }
            _ => Ok(Some(all)),
        }
    }
}

impl Conn {
    /// The `alternate-exchange` argument of an exchange (cached per flush).
    fn alternate_exchange(
        &self,
        exchange: &str,
        cache: &mut HashMap<String, Option<String>>,
    ) -> Option<String> {
        if exchange.is_empty() {
            return None;
        }
        cache
            .entry(exchange.to_string())
            .or_insert_with(|| {
                let def = self.b.exchange(exchange)?;
                let ae = props::entries(&def.arguments)
                    .find(|e| e.key == b"alternate-exchange" && e.ty == b'S')
                    .map(|e| String::from_utf8_lossy(e.value).into_owned());
                ae
            })
            .clone()
    }

    /// Publishes an unroutable message again through alternate exchange `ae` (and its own
    /// alternate, up to three hops): a record in stream `AE.R`. Whether some queue took it.
    fn publish_alternate(
        &self,
        ae: &str,
        s: &Staged,
        now: i64,
        ticket: &mut DurableTicket,
    ) -> bool {
        let mut target = ae.to_string();
        let mut cache = HashMap::new();
        for _ in 0..3 {
            if self.b.exchange(&target).is_none() {
                return false;
            }
            let Ok(name) = topology::stream_for(&target, &s.key) else {
                return false;
            };
            let Ok(st) = tokio::task::block_in_place(|| self.b.core.get_or_create_stream(&name))
            else {
                return false;
            };
            let r = props::to_record(&s.props, &s.raw_props, now);
            let record = Record {
                timestamp: now,
                key: r.key.clone(),
                value: Some(s.body.clone()),
                headers: r.headers,
                ..Default::default()
            };
            let n = st.partition_count() as u32;
            let p = match &r.key {
                Some(k) => partition_for_key(k, n),
                None => 0,
            };
            let data = batch::build_batch(&[record], None);
            match self.b.core.append_from(&st, p as i32, &data, self.info.id) {
                Ok(out) => {
                    let routed = !out.routed.is_empty();
                    ticket.join(out.durable);
                    if routed {
                        return true;
                    }
                }
                Err(e) => {
                    warn!(stream = %name, error = %e, "alternate-exchange publish not stored");
                    return false;
                }
            }
            match self.alternate_exchange(&target, &mut cache) {
                Some(next) if next != target => target = next,
                _ => return false,
            }
        }
        false
    }
}

/// `basic.return` (312 NO_ROUTE) with the message as published.
fn return_frames(ch: u16, s: &Staged, frame_max: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.raw_props.len() + s.body.len());
    wire::put_method(
        &mut out,
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
            reply_code: code::NO_ROUTE,
            reply_text: "NO_ROUTE".into(),
            exchange: sstr(&s.exchange),
            routing_key: sstr(&s.key),
        })),
    );
    wire::put_content(&mut out, ch, &s.raw_props, &s.body, frame_max);
    out
}

/// Sends a channel's publisher confirms in order, each batch once it is durable.
async fn confirm_loop(mut rx: mpsc::Receiver<ConfirmBatch>, ch: Arc<ChanShared>) {
    while let Some(batch) = rx.recv().await {
        let failed = match batch.ticket {
            Some(t) => t.wait().await.is_err(),
            None => false,
        };
        let mut out = Vec::new();
        let all_ack = !failed && batch.seqs.iter().all(|(_, nack)| !nack);
        if all_ack {
            if let Some((last, _)) = batch.seqs.last() {
                wire::put_method(
                    &mut out,
                    ch.id,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: *last,
                        multiple: batch.seqs.len() > 1,
                    })),
                );
            }
        } else {
            for (seq, nack) in &batch.seqs {
                let m = if failed || *nack {
                    basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: *seq,
                        multiple: false,
                        requeue: false,
                    })
                } else {
                    basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: *seq,
                        multiple: false,
                    })
                };
                wire::put_method(&mut out, ch.id, AMQPClass::Basic(m));
            }
        }
        if ch.info.out.send(Bytes::from(out)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_look_like_rabbitmqs() {
        let n = random_name("amq.gen-");
        assert_eq!(n.len(), "amq.gen-".len() + 22);
        assert!(n["amq.gen-".len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(n, random_name("amq.gen-"));
    }
}
