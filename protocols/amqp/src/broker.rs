//! What all AMQP connections share: settings, the topology (exchanges, queues, bindings,
//! restored after a restart), consumers per queue, exclusive ownership, dead-lettering and
//! queue expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use conflux_net::Shutdown;
use core_stream::batch::Record;
use core_stream::partition::now_ms;
use core_stream::queue::{DropReason, Dropped, Overflow, Queue, QueueSettings};
use core_stream::router::SubscriptionId;
use core_stream::Core;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::error::{exchange_ref, queue_ref, AmqpError};
use crate::props::{self, Props};
use crate::sink::{self, BindingMatch, ExchangeSink, HeaderMatch, QueueSink, DEFAULT_TAG};
use crate::topology::{self, BindingDef, ExchangeDef, ExchangeKind, QueueDef, PREDECLARED};

/// Metadata space of exchange definitions.
const EXCHANGES: &str = "amqp.exchange";
/// Metadata space of bindings.
const BINDINGS: &str = "amqp.binding";
/// Prefix of the core queue names of AMQP queues (vhost `/`).
const QUEUE_PREFIX: &str = "amqp/";

/// Settings of the AMQP front-end.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Largest frame offered in `connection.tune` (bytes).
    pub frame_max: u32,
    /// Most channels per connection offered in `connection.tune`.
    pub channel_max: u16,
    /// Heartbeat interval offered in `connection.tune` (s; the client's answer is used).
    pub heartbeat: u16,
    /// Largest message body accepted (bytes); larger closes the channel (406).
    pub max_message_bytes: u64,
    /// Most connections at once.
    pub max_connections: usize,
    /// Users and their passwords (PLAIN / AMQPLAIN).
    pub users: Vec<(String, String)>,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Virtual hosts clients may open. They share one namespace of exchanges and queues.
    pub vhosts: Vec<String>,
    /// Publishing connections are blocked (`connection.blocked`) while the data directory's
    /// file system has less free space than this (bytes; 0 = never).
    pub disk_free_limit: u64,
    /// Publishing connections are blocked while the broker's resident memory is above this
    /// (bytes; 0 = never).
    pub memory_high_watermark: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_bytes: 16 * 1024 * 1024,
            max_connections: 100_000,
            users: vec![("guest".into(), "guest".into())],
            loopback_users: vec!["guest".into()],
            vhosts: vec!["/".into()],
            disk_free_limit: 50 * 1024 * 1024,
            memory_high_watermark: 0,
        }
    }
}

impl AmqpConfig {
    /// Whether `user` with `password` may log in from `peer`: `Err` says why not (for the log).
    pub fn check_login(
        &self,
        user: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Result<(), String> {
        if !self.users.iter().any(|(u, p)| u == user && p == password) {
            return Err(format!("user '{user}': invalid credentials"));
        }
        if !peer.is_loopback() && self.loopback_users.iter().any(|u| u == user) {
            return Err(format!("user '{user}' can only connect via localhost"));
        }
        Ok(())
    }
}

/// Queue arguments the broker acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-dead-letter-exchange`.
    pub dlx: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dlrk: Option<String>,
    /// `x-expires` (ms unused before the queue is deleted).
    pub expires_ms: Option<i64>,
    /// `x-single-active-consumer`.
    pub single_active: bool,
    /// `x-overflow = reject-publish-dlx`.
    pub reject_dlx: bool,
}

fn arg_err(name: &str, queue: &str, what: impl std::fmt::Display) -> AmqpError {
    AmqpError::precondition(format!(
        "invalid arg '{name}' for {}: {what}",
        queue_ref(queue)
    ))
}

/// Reads and checks a queue's arguments (RabbitMQ's rules), giving the core settings and
/// what the front-end acts on.
pub fn parse_queue_args(
    queue: &str,
    def: &QueueDef,
) -> Result<(QueueSettings, QueueArgs), AmqpError> {
    let mut s = QueueSettings {
        durable: def.durable && !def.exclusive,
        ..Default::default()
    };
    let mut a = QueueArgs::default();
    for e in props::entries(&def.arguments) {
        let key = String::from_utf8_lossy(e.key);
        let int = || {
            props::as_int(e.ty, e.value).ok_or_else(|| {
                arg_err(
                    &key,
                    queue,
                    format!("expected integer, got {}", type_name(e.ty)),
                )
            })
        };
        let text = || {
            if e.ty == b'S' {
                Ok(String::from_utf8_lossy(e.value).into_owned())
            } else {
                Err(arg_err(
                    &key,
                    queue,
                    format!("{{unacceptable_type,{}}}", type_name(e.ty)),
                ))
            }
        };
        match key.as_ref() {
            "x-message-ttl" => {
                let v = int()?;
                if v < 0 {
                    return Err(arg_err(&key, queue, format!("{{value_negative,{v}}}")));
                }
                s.message_ttl_ms = Some(v);
            }
            "x-expires" => {
                let v = int()?;
                if v <= 0 {
                    return Err(arg_err(&key, queue, format!("{{value_zero,{v}}}")));
                }
                a.expires_ms = Some(v);
            }
            "x-max-length" => {
                let v = int()?;
                if v < 0 {
                    return Err(arg_err(&key, queue, format!("{{value_negative,{v}}}")));
                }
                s.max_length = Some(v as u64);
            }
            "x-max-length-bytes" => {
                let v = int()?;
                if v < 0 {
                    return Err(arg_err(&key, queue, format!("{{value_negative,{v}}}")));
                }
                s.max_bytes = Some(v as u64);
            }
            "x-overflow" => match text()?.as_str() {
                "drop-head" => s.overflow = Overflow::DropHead,
                "reject-publish" => s.overflow = Overflow::RejectPublish,
                "reject-publish-dlx" => {
                    s.overflow = Overflow::RejectPublish;
                    a.reject_dlx = true;
                }
                _ => return Err(arg_err(&key, queue, "invalid_overflow")),
            },
            "x-dead-letter-exchange" => a.dlx = Some(text()?),
            "x-dead-letter-routing-key" => a.dlrk = Some(text()?),
            "x-max-priority" => {
                let v = int()?;
                if !(0..=255).contains(&v) {
                    return Err(arg_err(&key, queue, format!("{{max_value_exceeded,{v}}}")));
                }
                s.max_priority = (v > 0).then_some(v as u8);
            }
            "x-single-active-consumer" => {
                if e.ty != b't' {
                    return Err(arg_err(
                        &key,
                        queue,
                        format!("{{unacceptable_type,{}}}", type_name(e.ty)),
                    ));
                }
                a.single_active = e.value[0] != 0;
            }
            "x-queue-type" => match text()?.as_str() {
                "classic" | "stream" => {}
                "quorum" => {
                    let bad = if !def.durable {
                        Some("non-durable")
                    } else if def.exclusive {
                        Some("exclusive-owner")
                    } else if def.auto_delete {
                        Some("auto-delete")
                    } else {
                        None
                    };
                    if let Some(p) = bad {
                        return Err(AmqpError::precondition(format!(
                            "invalid property '{p}' for {}",
                            queue_ref(queue)
                        )));
                    }
                }
                other => {
                    return Err(arg_err(
                        &key,
                        queue,
                        format!("unsupported queue type '{other}'"),
                    ))
                }
            },
            _ => {}
        }
    }
    if a.dlrk.is_some() && a.dlx.is_none() {
        return Err(AmqpError::precondition(format!(
            "invalid arg 'x-dead-letter-routing-key' for {}: Key x-dead-letter-exchange should be present",
            queue_ref(queue)
        )));
    }
    Ok((s, a))
}

fn type_name(ty: u8) -> &'static str {
    match ty {
        b'S' => "longstr",
        b't' => "bool",
        b'F' => "table",
        b'A' => "array",
        b'V' => "void",
        b'x' => "binary",
        b'f' | b'd' => "float",
        b'D' => "decimal",
        b'T' => "timestamp",
        _ => "long",
    }
}

/// Arguments RabbitMQ compares when a queue is declared again.
const COMPARED_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
];

fn compared_arg(table: &[u8], name: &str) -> Option<(Option<i64>, Vec<u8>, u8)> {
    props::entries(table)
        .find(|e| e.key == name.as_bytes())
        .map(|e| (props::as_int(e.ty, e.value), e.value.to_vec(), e.ty))
}

/// One consumer as its queue sees it.
#[derive(Debug)]
pub struct ConsumerEntry {
    /// Unique id.
    pub id: u64,
    /// Asked for exclusive use.
    pub exclusive: bool,
    /// Control shared with the consumer's task.
    pub ctl: Arc<ConsumerCtl>,
}

/// What a consumer's task and the rest of the broker tell each other.
#[derive(Debug, Default)]
pub struct ConsumerCtl {
    /// The client cancelled it, or its channel closed.
    pub cancelled: AtomicBool,
    /// The broker cancelled it (its queue was deleted): the client is told.
    pub server_cancelled: AtomicBool,
    /// Woken on cancel, on credit, and when it becomes the single active consumer.
    pub wake: Notify,
    /// Consumer priority (`x-priority`): while a higher one has credit, lower ones wait.
    pub priority: i64,
    /// Whether it can take a delivery now (kept by its task).
    pub has_credit: AtomicBool,
}

impl ConsumerCtl {
    /// True once the consumer must stop.
    pub fn stopped(&self) -> bool {
        self.cancelled.load(Ordering::Acquire) || self.server_cancelled.load(Ordering::Acquire)
    }
}

/// An AMQP queue: the core's durable queue plus its AMQP definition and consumers.
#[derive(Debug)]
pub struct AmqpQueue {
    /// Name.
    pub name: String,
    /// Definition.
    pub def: QueueDef,
    /// Owning connection of an exclusive queue.
    pub owner: Option<u64>,
    /// The core queue.
    pub queue: Arc<Queue>,
    /// Its router sink.
    pub sink: Arc<QueueSink>,
    /// Arguments acted on.
    pub args: QueueArgs,
    /// Subscription of the default exchange's binding.
    default_sub: SubscriptionId,
    /// Consumers, in the order they came.
    pub consumers: Mutex<Vec<ConsumerEntry>>,
    had_consumer: AtomicBool,
    last_used_ms: AtomicI64,
    /// Set once deleted.
    pub deleted: AtomicBool,
}

impl AmqpQueue {
    /// Consumers attached.
    pub fn consumer_count(&self) -> u32 {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u32
    }

    /// Messages ready (not handed out).
    pub fn message_count(&self) -> u32 {
        self.queue.ready_count().min(u64::from(u32::MAX)) as u32
    }

    /// Whether the consumer `id` may take now (with a single active consumer, only the first).
    pub fn may_deliver(&self, id: u64) -> bool {
        if !self.args.single_active {
            return true;
        }
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .is_some_and(|c| c.id == id)
    }

    /// A consumer of higher priority than `priority` that could take a delivery now.
    pub fn higher_with_credit(&self, priority: i64) -> Option<Arc<ConsumerCtl>> {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|c| {
                c.ctl.priority > priority
                    && c.ctl.has_credit.load(Ordering::Acquire)
                    && !c.ctl.stopped()
            })
            .map(|c| c.ctl.clone())
    }

    /// Marks the queue used now (for `x-expires`).
    pub fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct ExchangeState {
    def: ExchangeDef,
    sink: Option<Arc<ExchangeSink>>,
}

#[derive(Debug, Default)]
struct Topology {
    exchanges: HashMap<String, ExchangeState>,
    queues: HashMap<String, Arc<AmqpQueue>>,
    bindings: BTreeMap<BindingDef, (SubscriptionId, u64)>,
    next_tag: u64,
}

/// Shared state of the AMQP front-end.
#[derive(Debug)]
pub struct AmqpBroker {
    /// The stream core.
    pub core: Arc<Core>,
    /// Settings.
    pub config: AmqpConfig,
    /// Stop signal.
    pub shutdown: Shutdown,
    topo: Mutex<Topology>,
    /// Undeclared exchange names found to exist as stream prefixes (Kafka topics, MQTT
    /// topics), cached.
    implicit: RwLock<HashSet<String>>,
    next_id: AtomicU64,
    /// Direct reply-to: channels with an `amq.rabbitmq.reply-to` consumer, by token.
    pub replies: dashmap::DashMap<String, std::sync::Weak<crate::consumer::ChanShared>>,
    /// A resource alarm ("low on disk", "low on memory") while publishers must wait.
    pub alarm: tokio::sync::watch::Sender<Option<&'static str>>,
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn storage(e: core_stream::StreamError) -> AmqpError {
    AmqpError::internal(format!("storage error: {e}"))
}

impl AmqpBroker {
    /// Opens the front-end: the predeclared exchanges, and the durable topology stored
    /// before (exchanges, queues, bindings).
    pub fn open(
        core: Arc<Core>,
        config: AmqpConfig,
        shutdown: Shutdown,
    ) -> Result<Arc<Self>, String> {
        let b = Arc::new(Self {
            core,
            config,
            shutdown,
            topo: Mutex::new(Topology {
                next_tag: 1,
                ..Default::default()
            }),
            implicit: RwLock::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            replies: dashmap::DashMap::new(),
            alarm: tokio::sync::watch::channel(None).0,
        });
        b.restore().map_err(|e| e.to_string())?;
        let weak = Arc::downgrade(&b);
        let mut stop = b.shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = 0u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.wait() => return,
                }
                let Some(b) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || {
                    b.expire_messages();
                    if ticks.is_multiple_of(10) {
                        b.expire_queues();
                        b.check_resources();
                    }
                })
                .await;
                ticks = ticks.wrapping_add(1);
            }
        });
        Ok(b)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Topology> {
        self.topo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new unique id (connections, channels, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn restore(self: &Arc<Self>) -> core_stream::Result<()> {
        let mut t = self.lock();
        for (name, kind) in PREDECLARED {
            t.exchanges.insert(
                name.to_string(),
                ExchangeState {
                    def: ExchangeDef {
                        name: name.to_string(),
                        kind: *kind,
                        durable: true,
                        auto_delete: false,
                        internal: false,
                        arguments: vec![0, 0, 0, 0],
                    },
                    sink: None,
                },
            );
        }
        for (name, bytes) in self.core.records(EXCHANGES)? {
            match serde_json::from_slice::<ExchangeDef>(&bytes) {
                Ok(def) => {
                    t.exchanges.insert(name, ExchangeState { def, sink: None });
                }
                Err(e) => {
                    warn!(exchange = %name, error = %e, "unreadable exchange record; ignored")
                }
            }
        }
        let mut queues = 0;
        for q in self.core.list_queues() {
            let Some(name) = q.name().strip_prefix(QUEUE_PREFIX) else {
                continue;
            };
            let def = match serde_json::from_slice::<QueueDef>(&q.meta().attachment) {
                Ok(d) => d,
                Err(e) => {
                    warn!(queue = %name, error = %e, "unreadable AMQP queue definition; queue kept without consumers' settings");
                    QueueDef {
                        durable: true,
                        exclusive: false,
                        auto_delete: false,
                        arguments: vec![0, 0, 0, 0],
                    }
                }
            };
            let args = parse_queue_args(name, &def)
                .map(|(_, a)| a)
                .unwrap_or_default();
            let aq = self.make_queue(name, def, None, q.clone(), args);
            t.queues.insert(name.to_string(), aq);
            queues += 1;
        }
        let mut bindings = 0;
        for (key, bytes) in self.core.records(BINDINGS)? {
            let Ok(def) = serde_json::from_slice::<BindingDef>(&bytes) else {
                self.core.put_record(BINDINGS, &key, None)?;
                continue;
            };
            let dest_ok = if def.to_exchange {
                t.exchanges.contains_key(&def.destination)
            } else {
                t.queues.contains_key(&def.destination)
            };
            let source = t
                .exchanges
                .get(&def.source)
                .map(|e| e.def.clone())
                .or_else(|| self.implicit_exchange(&def.source));
            match (dest_ok, source) {
                (true, Some(src)) => {
                    if self.subscribe_binding(&mut t, &src, def).is_ok() {
                        bindings += 1;
                    }
                }
                _ => self.core.put_record(BINDINGS, &key, None)?,
            }
        }
        if queues + bindings > 0 || t.exchanges.len() > PREDECLARED.len() {
            info!(
                exchanges = t.exchanges.len() - PREDECLARED.len(),
                queues, bindings, "AMQP topology restored"
            );
        }
        Ok(())
    }

    fn make_queue(
        &self,
        name: &str,
        def: QueueDef,
        owner: Option<u64>,
        queue: Arc<Queue>,
        args: QueueArgs,
    ) -> Arc<AmqpQueue> {
        let sink = QueueSink::new(queue.clone());
        let default_sub = self.core.router().subscribe(
            &topology::default_pattern(name),
            sink.clone(),
            DEFAULT_TAG,
        );
        Arc::new(AmqpQueue {
            name: name.to_string(),
            def,
            owner,
            queue,
            sink,
            args,
            default_sub,
            consumers: Mutex::new(Vec::new()),
            had_consumer: AtomicBool::new(false),
            last_used_ms: AtomicI64::new(now_ms()),
            deleted: AtomicBool::new(false),
        })
    }

    /// An undeclared exchange name that streams live under (`orders` for a Kafka topic
    /// `orders.eu.new`): a durable topic exchange over them.
    fn implicit_exchange(&self, name: &str) -> Option<ExchangeDef> {
        if name.is_empty() || name.starts_with("amq.") {
            return None;
        }
        let def = || ExchangeDef {
            name: name.to_string(),
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: vec![0, 0, 0, 0],
        };
        if self
            .implicit
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
        {
            return Some(def());
        }
        let level = topology::exchange_level(name);
        let prefix = format!("{level}.");
        let found = self
            .core
            .list_streams()
            .iter()
            .any(|s| s.name == level || s.name.starts_with(&prefix));
        if found {
            self.implicit
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string());
            return Some(def());
        }
        None
    }

    /// The exchange named `name`: declared, predeclared, the default (`""`), or implicit.
    pub fn exchange(&self, name: &str) -> Option<ExchangeDef> {
        if name.is_empty() {
            return Some(ExchangeDef {
                name: String::new(),
                kind: ExchangeKind::Direct,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: vec![0, 0, 0, 0],
            });
        }
        if let Some(e) = self.lock().exchanges.get(name) {
            return Some(e.def.clone());
        }
        self.implicit_exchange(name)
    }

    /// `exchange.declare`.
    pub fn declare_exchange(&self, def: ExchangeDef, passive: bool) -> Result<(), AmqpError> {
        if def.name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if passive {
            return match self.exchange(&def.name) {
                Some(_) => Ok(()),
                None => Err(AmqpError::not_found(format!(
                    "no {}",
                    exchange_ref(&def.name)
                ))),
            };
        }
        let mut t = self.lock();
        if let Some(old) = t.exchanges.get(&def.name) {
            return topology::check_exchange_equivalent(&old.def, &def);
        }
        if def.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                def.name
            )));
        }
        if def.durable {
            let bytes = serde_json::to_vec(&def).unwrap_or_default();
            blocking(|| self.core.put_record(EXCHANGES, &def.name, Some(&bytes)))
                .map_err(storage)?;
        }
        t.exchanges
            .insert(def.name.clone(), ExchangeState { def, sink: None });
        Ok(())
    }

    /// `exchange.delete`.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '/' not allowed"
            )));
        }
        let mut t = self.lock();
        if !t.exchanges.contains_key(name) {
            return Ok(());
        }
        if if_unused && t.bindings.keys().any(|b| b.source == name) {
            return Err(AmqpError::precondition(format!(
                "{} in use",
                exchange_ref(name)
            )));
        }
        self.remove_exchange(&mut t, name)
    }

    fn remove_exchange(&self, t: &mut Topology, name: &str) -> Result<(), AmqpError> {
        let gone: Vec<BindingDef> = t
            .bindings
            .keys()
            .filter(|b| b.source == name || (b.to_exchange && b.destination == name))
            .cloned()
            .collect();
        for b in gone {
            self.remove_binding(t, &b)?;
        }
        if let Some(e) = t.exchanges.remove(name) {
            if e.def.durable {
                blocking(|| self.core.put_record(EXCHANGES, name, None)).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// `queue.declare` (the name is resolved: server-named queues are named by the caller).
    /// Returns the message and consumer counts.
    pub fn declare_queue(
        &self,
        conn: u64,
        name: &str,
        passive: bool,
        def: QueueDef,
    ) -> Result<(u32, u32), AmqpError> {
        let mut t = self.lock();
        if let Some(q) = t.queues.get(name) {
            check_owner(q, conn)?;
            if !passive {
                check_queue_equivalent(q, &def)?;
            }
            q.touch();
            return Ok((q.message_count(), q.consumer_count()));
        }
        if passive {
            return Err(AmqpError::not_found(format!("no {}", queue_ref(name))));
        }
        if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let (settings, args) = parse_queue_args(name, &def)?;
        if let Some(dlx) = &args.dlx {
            // RabbitMQ does not check the DLX exists either; just log an obvious typo later.
            let _ = dlx;
        }
        let attachment = serde_json::to_vec(&def).unwrap_or_default();
        let core_name = format!("{QUEUE_PREFIX}{name}");
        let (q, created) = blocking(|| self.core.declare_queue(&core_name, settings, attachment))
            .map_err(storage)?;
        if !created {
            warn!(
                queue = name,
                "queue log existed without its AMQP queue; reused"
            );
        }
        let owner = def.exclusive.then_some(conn);
        let aq = self.make_queue(name, def, owner, q, args);
        t.queues.insert(name.to_string(), aq);
        Ok((0, 0))
    }

    /// The queue `name`, if this connection may use it (404, 405 otherwise).
    pub fn queue(&self, conn: u64, name: &str) -> Result<Arc<AmqpQueue>, AmqpError> {
        let t = self.lock();
        let q = t
            .queues
            .get(name)
            .ok_or_else(|| AmqpError::not_found(format!("no {}", queue_ref(name))))?;
        check_owner(q, conn)?;
        q.touch();
        Ok(q.clone())
    }

    /// `queue.delete`: returns the ready messages it held.
    pub fn delete_queue(
        &self,
        conn: u64,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        let mut t = self.lock();
        let Some(q) = t.queues.get(name).cloned() else {
            return Ok(0);
        };
        check_owner(&q, conn)?;
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition(format!(
                "{} in use",
                queue_ref(name)
            )));
        }
        if if_empty && q.message_count() > 0 {
            return Err(AmqpError::precondition(format!(
                "{} not empty",
                queue_ref(name)
            )));
        }
        let n = q.message_count();
        self.remove_queue(&mut t, &q)?;
        Ok(n)
    }

    fn remove_queue(&self, t: &mut Topology, q: &Arc<AmqpQueue>) -> Result<(), AmqpError> {
        if q.deleted.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let gone: Vec<BindingDef> = t
            .bindings
            .keys()
            .filter(|b| !b.to_exchange && b.destination == q.name)
            .cloned()
            .collect();
        for b in gone {
            self.remove_binding(t, &b)?;
        }
        self.core.router().unsubscribe(q.default_sub);
        t.queues.remove(&q.name);
        let core_name = format!("{QUEUE_PREFIX}{}", q.name);
        if let Err(e) = blocking(|| self.core.delete_queue(&core_name)) {
            warn!(queue = %q.name, error = %e, "could not delete the queue's storage");
        }
        // A server-named queue's stream (what the default exchange wrote for it, typically
        // RPC replies) has no other reader: it goes with the queue.
        if q.name.starts_with("amq.gen-") {
            let stream = topology::default_pattern(&q.name);
            if self.core.stream(&stream).is_some() {
                if let Err(e) = blocking(|| self.core.delete_stream(&stream)) {
                    warn!(stream = %stream, error = %e, "could not delete a server-named queue's stream");
                }
            }
        }
        for c in q
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.ctl.server_cancelled.store(true, Ordering::Release);
            c.ctl.wake.notify_one();
        }
        q.queue.notifier().notify_waiters();
        Ok(())
    }

    /// `queue.purge`: returns how many ready messages were removed.
    pub fn purge_queue(&self, conn: u64, name: &str) -> Result<u32, AmqpError> {
        let q = self.queue(conn, name)?;
        let n = blocking(|| q.queue.purge()).map_err(storage)?;
        Ok(n.min(u64::from(u32::MAX)) as u32)
    }

    fn subscribe_binding(
        &self,
        t: &mut Topology,
        source: &ExchangeDef,
        def: BindingDef,
    ) -> Result<(), AmqpError> {
        let matcher = BindingMatch {
            headers: match source.kind {
                ExchangeKind::Headers => Some(HeaderMatch::parse(&def.arguments)?),
                _ => None,
            },
            via: topology::Via::of(&source.name),
        };
        let pattern = topology::binding_pattern(source.kind, &source.name, &def.routing_key);
        let tag = t.next_tag;
        t.next_tag += 1;
        let sink: Arc<dyn core_stream::router::Sink> = if def.to_exchange {
            let Some(dest) = t.exchanges.get_mut(&def.destination) else {
                return Err(AmqpError::not_found(format!(
                    "no {}",
                    exchange_ref(&def.destination)
                )));
            };
            let s = dest
                .sink
                .get_or_insert_with(|| {
                    Arc::new(ExchangeSink {
                        name: def.destination.clone(),
                        core: Arc::downgrade(&self.core),
                        bindings: RwLock::new(HashMap::new()),
                    })
                })
                .clone();
            s.bindings
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tag, matcher);
            s
        } else {
            let Some(q) = t.queues.get(&def.destination) else {
                return Err(AmqpError::not_found(format!(
                    "no {}",
                    queue_ref(&def.destination)
                )));
            };
            q.sink
                .bindings
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tag, matcher);
            q.sink.clone()
        };
        let id = self.core.router().subscribe(&pattern, sink, tag);
        t.bindings.insert(def, (id, tag));
        Ok(())
    }

    fn remove_binding(&self, t: &mut Topology, def: &BindingDef) -> Result<(), AmqpError> {
        let Some((id, tag)) = t.bindings.remove(def) else {
            return Ok(());
        };
        self.core.router().unsubscribe(id);
        if def.to_exchange {
            if let Some(s) = t
                .exchanges
                .get(&def.destination)
                .and_then(|e| e.sink.as_ref())
            {
                s.bindings
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&tag);
            }
        } else if let Some(q) = t.queues.get(&def.destination) {
            q.sink
                .bindings
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tag);
        }
        blocking(|| self.core.put_record(BINDINGS, &def.store_key(), None)).map_err(storage)?;
        // An auto-delete exchange goes with its last binding.
        let auto = t
            .exchanges
            .get(&def.source)
            .is_some_and(|e| e.def.auto_delete);
        if auto && !t.bindings.keys().any(|b| b.source == def.source) {
            self.remove_exchange(t, &def.source)?;
        }
        Ok(())
    }

    /// `queue.bind` and `exchange.bind`.
    pub fn bind(&self, conn: u64, def: BindingDef) -> Result<(), AmqpError> {
        if def.source.is_empty() || (def.to_exchange && def.destination.is_empty()) {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        // Binding to a name no exchange has yet declares it as a durable topic exchange
        // (Kafka and MQTT topics are exchanges here: a queue may be bound to `alerts` / `high`
        // before the first MQTT publish to `alerts/high`).
        let source = match self.exchange(&def.source) {
            Some(e) => e,
            None if def.source.starts_with("amq.") => {
                return Err(AmqpError::not_found(format!(
                    "no {}",
                    exchange_ref(&def.source)
                )));
            }
            None => ExchangeDef {
                name: def.source.clone(),
                kind: ExchangeKind::Topic,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: vec![0, 0, 0, 0],
            },
        };
        let mut t = self.lock();
        let durable_dest = if def.to_exchange {
            let d = t.exchanges.get(&def.destination).map(|e| e.def.durable);
            d.ok_or_else(|| AmqpError::not_found(format!("no {}", exchange_ref(&def.destination))))?
        } else {
            let q = t.queues.get(&def.destination).ok_or_else(|| {
                AmqpError::not_found(format!("no {}", queue_ref(&def.destination)))
            })?;
            check_owner(q, conn)?;
            q.def.durable && !q.def.exclusive
        };
        if t.bindings.contains_key(&def) {
            return Ok(());
        }
        if !t.exchanges.contains_key(&source.name) {
            // An implicit exchange becomes a declared one once bound.
            if source.durable {
                let bytes = serde_json::to_vec(&source).unwrap_or_default();
                blocking(|| self.core.put_record(EXCHANGES, &source.name, Some(&bytes)))
                    .map_err(storage)?;
            }
            t.exchanges.insert(
                source.name.clone(),
                ExchangeState {
                    def: source.clone(),
                    sink: None,
                },
            );
        }
        let persist = durable_dest && source.durable;
        let key = def.store_key();
        let bytes = serde_json::to_vec(&def).unwrap_or_default();
        self.subscribe_binding(&mut t, &source, def)?;
        if persist {
            blocking(|| self.core.put_record(BINDINGS, &key, Some(&bytes))).map_err(storage)?;
        }
        Ok(())
    }

    /// `queue.unbind` and `exchange.unbind` (a binding that does not exist is fine).
    pub fn unbind(&self, conn: u64, def: BindingDef) -> Result<(), AmqpError> {
        if def.source.is_empty() || (def.to_exchange && def.destination.is_empty()) {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let mut t = self.lock();
        if !def.to_exchange {
            if let Some(q) = t.queues.get(&def.destination) {
                check_owner(q, conn)?;
            }
        }
        self.remove_binding(&mut t, &def)
    }

    /// Registers a consumer of `q` (403 when exclusivity forbids it).
    pub fn add_consumer(&self, q: &AmqpQueue, c: ConsumerEntry) -> Result<(), AmqpError> {
        let mut cs = q.consumers.lock().unwrap_or_else(|e| e.into_inner());
        if q.deleted.load(Ordering::Acquire) {
            return Err(AmqpError::not_found(format!("no {}", queue_ref(&q.name))));
        }
        if cs.iter().any(|x| x.exclusive) || (c.exclusive && !cs.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "{} in exclusive use",
                queue_ref(&q.name)
            )));
        }
        cs.push(c);
        q.had_consumer.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes a consumer of `q`; an auto-delete queue goes with its last consumer.
    pub fn remove_consumer(&self, q: &Arc<AmqpQueue>, id: u64) {
        let (left, next) = {
            let mut cs = q.consumers.lock().unwrap_or_else(|e| e.into_inner());
            let was_first = cs.first().is_some_and(|c| c.id == id);
            cs.retain(|c| c.id != id);
            let next = if was_first {
                cs.first().map(|c| c.ctl.clone())
            } else {
                None
            };
            (cs.len(), next)
        };
        if let Some(n) = next {
            n.wake.notify_one();
        }
        q.touch();
        if left == 0 && q.def.auto_delete && q.had_consumer.load(Ordering::Acquire) {
            let mut t = self.lock();
            if let Err(e) = self.remove_queue(&mut t, q) {
                warn!(queue = %q.name, error = %e, "could not auto-delete queue");
            }
        }
    }

    /// A connection closed: its exclusive queues go.
    pub fn connection_closed(&self, conn: u64) {
        let mut t = self.lock();
        let mine: Vec<Arc<AmqpQueue>> = t
            .queues
            .values()
            .filter(|q| q.owner == Some(conn))
            .cloned()
            .collect();
        for q in mine {
            if let Err(e) = self.remove_queue(&mut t, &q) {
                warn!(queue = %q.name, error = %e, "could not delete exclusive queue");
            }
        }
    }

    /// Dead-letters (or drops) messages whose time to live passed at the head of every
    /// queue, consumed or not (the delayed-retry pattern relies on it).
    fn expire_messages(&self) {
        let queues: Vec<Arc<AmqpQueue>> = self.lock().queues.values().cloned().collect();
        for q in queues {
            match q.queue.drop_expired() {
                Ok(d) if !d.is_empty() => self.dead_letter(&q, d),
                Ok(_) => {}
                Err(e) => warn!(queue = %q.name, error = %e, "could not expire messages"),
            }
        }
    }

    /// Raises or clears the resource alarm that blocks publishers: free space of the data
    /// directory's file system below `disk_free_limit`, resident memory above
    /// `memory_high_watermark`.
    fn check_resources(&self) {
        let low_disk = self.config.disk_free_limit > 0
            && self
                .core
                .disk_space()
                .is_ok_and(|(_, free)| free < self.config.disk_free_limit);
        let high_mem = self.config.memory_high_watermark > 0
            && resident_bytes().is_some_and(|rss| rss > self.config.memory_high_watermark);
        let alarm = if low_disk {
            Some("low on disk")
        } else if high_mem {
            Some("low on memory")
        } else {
            None
        };
        self.alarm.send_if_modified(|a| {
            if *a == alarm {
                return false;
            }
            match alarm {
                Some(r) => warn!(
                    reason = r,
                    "resource alarm: publishing AMQP connections are blocked"
                ),
                None => info!("resource alarm cleared: publishing AMQP connections resume"),
            }
            *a = alarm;
            true
        });
    }

    /// Deletes queues unused for their `x-expires`.
    fn expire_queues(&self) {
        let now = now_ms();
        let mut t = self.lock();
        let due: Vec<Arc<AmqpQueue>> = t
            .queues
            .values()
            .filter(|q| {
                q.args.expires_ms.is_some_and(|ms| {
                    q.consumer_count() == 0 && q.last_used_ms.load(Ordering::Relaxed) + ms <= now
                })
            })
            .cloned()
            .collect();
        for q in due {
            info!(queue = %q.name, "queue expired (x-expires)");
            if let Err(e) = self.remove_queue(&mut t, &q) {
                warn!(queue = %q.name, error = %e, "could not delete expired queue");
            }
        }
    }

    /// Republishes messages a queue dropped (rejected, expired, over its length) to its
    /// dead-letter exchange, with RabbitMQ's `x-death` headers.
    pub fn dead_letter(&self, q: &AmqpQueue, dropped: Vec<Dropped>) {
        let Some(dlx) = &q.args.dlx else {
            return;
        };
        for d in dropped {
            let reason = match d.reason {
                DropReason::Expired => "expired",
                DropReason::MaxLength => "maxlen",
                DropReason::Rejected => "rejected",
                _ => continue,
            };
            if let Err(e) = self.dead_letter_one(q, dlx, &d, reason) {
                warn!(queue = %q.name, dlx = %dlx, error = %e, "message not dead-lettered");
            }
        }
    }

    fn dead_letter_one(
        &self,
        q: &AmqpQueue,
        dlx: &str,
        d: &Dropped,
        reason: &str,
    ) -> Result<(), String> {
        let (via, routing) = sink::read_attachment(&d.delivery.attachment);
        let name = routing.unwrap_or(&d.delivery.stream);
        let (exchange, key) = topology::exchange_and_key(name, via);
        let target_key = q.args.dlrk.clone().unwrap_or_else(|| key.clone());
        if self.exchange(dlx).is_none() {
            return Err(format!("dead-letter exchange '{dlx}' does not exist"));
        }
        let stream = topology::stream_for(dlx, &target_key).map_err(|e| e.text)?;
        let now = now_ms();
        let raw = props::for_delivery(&d.delivery.record.headers, now);
        let mut p = Props::parse(&raw).map_err(str::to_string)?;
        p.expiration = None;
        p.headers = Some(death_headers(
            p.headers.as_deref(),
            &q.name,
            reason,
            &exchange,
            &key,
            now,
        ));
        let raw = p.encode();
        let rec = props::to_record(&p, &raw, now);
        let record = Record {
            timestamp: now,
            key: rec.key.clone().or_else(|| d.delivery.record.key.clone()),
            value: d.delivery.record.value.clone(),
            headers: rec.headers,
            ..Default::default()
        };
        self.core
            .append_records(&stream, record.key.clone().as_deref(), 0, &[record], 0)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// This process's resident memory (bytes), from /proc.
fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system setting.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// 405 unless `conn` may use the queue.
fn check_owner(q: &AmqpQueue, conn: u64) -> Result<(), AmqpError> {
    match q.owner {
        Some(o) if o != conn => Err(AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked {}. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            queue_ref(&q.name)
        ))),
        _ => Ok(()),
    }
}

fn check_queue_equivalent(q: &AmqpQueue, new: &QueueDef) -> Result<(), AmqpError> {
    if q.def.exclusive != new.exclusive {
        return Err(AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked {}. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            queue_ref(&q.name)
        )));
    }
    let diff = |arg: &str, received: bool, current: bool| {
        AmqpError::precondition(format!(
            "inequivalent arg '{arg}' for {}: received '{received}' but current is '{current}'",
            queue_ref(&q.name)
        ))
    };
    if q.def.durable != new.durable {
        return Err(diff("durable", new.durable, q.def.durable));
    }
    if q.def.auto_delete != new.auto_delete {
        return Err(diff("auto_delete", new.auto_delete, q.def.auto_delete));
    }
    for name in COMPARED_ARGS {
        let old = compared_arg(&q.def.arguments, name);
        let new = compared_arg(&new.arguments, name);
        let same = match (&old, &new) {
            (None, None) => true,
            (Some((Some(a), _, _)), Some((Some(b), _, _))) => a == b,
            (Some((_, a, ta)), Some((_, b, tb))) => a == b && ta == tb,
            (None, Some((_, v, b'S'))) | (Some((_, v, b'S')), None) => {
                *name == "x-queue-type" && v == b"classic"
            }
            _ => false,
        };
        if !same {
            let show = |v: &Option<(Option<i64>, Vec<u8>, u8)>| match v {
                None => "none".to_string(),
                Some((Some(i), _, _)) => format!("the value '{i}'"),
                Some((_, b, _)) => format!("the value '{}'", String::from_utf8_lossy(b)),
            };
            return Err(AmqpError::precondition(format!(
                "inequivalent arg '{name}' for {}: received {} but current is {}",
                queue_ref(&q.name),
                show(&new),
                show(&old)
            )));
        }
    }
    Ok(())
}

/// The headers table of a dead-lettered message: `x-death` (one entry per queue and reason,
/// newest first, its `count` raised on a repeat) and `x-first-death-*`, `x-last-death-*`.
fn death_headers(
    old: Option<&[u8]>,
    queue: &str,
    reason: &str,
    exchange: &str,
    key: &str,
    now: i64,
) -> Bytes {
    let old = old.unwrap_or(&[0, 0, 0, 0]);
    let mut count = 1i64;
    let mut first_time = (now / 1000) as u64;
    let mut others: Vec<Vec<u8>> = Vec::new();
    if let Some(e) = props::entries(old).find(|e| e.key == b"x-death" && e.ty == b'A') {
        // Array body: values, each 'F' + table.
        let mut i = 4;
        let arr = e.value;
        while i < arr.len() {
            let Ok(n) = crate::wire::validate_value(&arr[i..], 1, crate::wire::MAX_TABLE_DEPTH)
            else {
                break;
            };
            let v = &arr[i..i + n];
            i += n;
            if v[0] != b'F' {
                continue;
            }
            let t = &v[1..];
            let get = |k: &[u8]| {
                props::entries(t)
                    .find(|e| e.key == k)
                    .map(|e| e.value.to_vec())
            };
            if get(b"queue").as_deref() == Some(queue.as_bytes())
                && get(b"reason").as_deref() == Some(reason.as_bytes())
            {
                count += props::entries(t)
                    .find(|e| e.key == b"count")
                    .and_then(|e| props::as_int(e.ty, e.value))
                    .unwrap_or(0);
                if let Some(ts) = props::entries(t).find(|e| e.key == b"time" && e.ty == b'T') {
                    first_time = u64::from_be_bytes(ts.value.try_into().unwrap_or([0; 8]));
                }
            } else {
                others.push(v.to_vec());
            }
        }
    }
    let keys = {
        let mut a = BytesMut::new();
        a.put_u8(b'S');
        a.put_u32(key.len() as u32);
        a.put_slice(key.as_bytes());
        let mut out = BytesMut::new();
        out.put_u32(a.len() as u32);
        out.put_slice(&a);
        out.freeze()
    };
    let entry = props::build_table([
        (&b"count"[..], b'l', &count.to_be_bytes()[..]),
        (b"reason", b'S', reason.as_bytes()),
        (b"queue", b'S', queue.as_bytes()),
        (b"time", b'T', &first_time.to_be_bytes()[..]),
        (b"exchange", b'S', exchange.as_bytes()),
        (b"routing-keys", b'A', &keys[..]),
    ]);
    let mut arr = BytesMut::new();
    arr.put_u8(b'F');
    arr.put_slice(&entry);
    for o in &others {
        arr.put_slice(o);
    }
    let mut death = BytesMut::new();
    death.put_u32(arr.len() as u32);
    death.put_slice(&arr);
    let mut items: Vec<(Vec<u8>, u8, Vec<u8>)> = Vec::new();
    let mut has_first = false;
    for e in props::entries(old) {
        match e.key {
            b"x-death"
            | b"x-last-death-reason"
            | b"x-last-death-queue"
            | b"x-last-death-exchange" => {}
            k => {
                has_first |= k == b"x-first-death-reason";
                let mut v = e.value.to_vec();
                if matches!(e.ty, b'S' | b'x') {
                    // build_table adds the length back.
                } else {
                    v = e.value.to_vec();
                }
                items.push((k.to_vec(), e.ty, v));
            }
        }
    }
    items.push((b"x-death".to_vec(), b'A', death.to_vec()));
    if !has_first {
        items.push((
            b"x-first-death-reason".to_vec(),
            b'S',
            reason.as_bytes().to_vec(),
        ));
        items.push((
            b"x-first-death-queue".to_vec(),
            b'S',
            queue.as_bytes().to_vec(),
        ));
        items.push((
            b"x-first-death-exchange".to_vec(),
            b'S',
            exchange.as_bytes().to_vec(),
        ));
    }
    items.push((
        b"x-last-death-reason".to_vec(),
        b'S',
        reason.as_bytes().to_vec(),
    ));
    items.push((
        b"x-last-death-queue".to_vec(),
        b'S',
        queue.as_bytes().to_vec(),
    ));
    items.push((
        b"x-last-death-exchange".to_vec(),
        b'S',
        exchange.as_bytes().to_vec(),
    ));
    props::build_table(items.iter().map(|(k, t, v)| (&k[..], *t, &v[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(args: Bytes) -> QueueDef {
        QueueDef {
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: args.to_vec(),
        }
    }

    #[test]
    fn queue_arguments_are_checked() {
        let ok = props::build_table([
            (&b"x-message-ttl"[..], b'I', &1000i32.to_be_bytes()[..]),
            (b"x-max-length", b'l', &5i64.to_be_bytes()[..]),
            (b"x-overflow", b'S', b"reject-publish"),
            (b"x-dead-letter-exchange", b'S', b"dlx"),
        ]);
        let (s, a) = parse_queue_args("q", &def(ok)).unwrap();
        assert_eq!(s.message_ttl_ms, Some(1000));
        assert_eq!(s.max_length, Some(5));
        assert_eq!(s.overflow, Overflow::RejectPublish);
        assert_eq!(a.dlx.as_deref(), Some("dlx"));
        let zero = props::build_table([(&b"x-expires"[..], b'I', &0i32.to_be_bytes()[..])]);
        let e = parse_queue_args("q", &def(zero)).unwrap_err();
        assert_eq!(e.code, 406);
        assert!(e.text.contains("{value_zero,0}"), "{}", e.text);
        let text = props::build_table([(&b"x-max-length"[..], b'S', &b"x"[..])]);
        assert!(parse_queue_args("q", &def(text)).is_err());
    }

    #[test]
    fn death_headers_count_repeats() {
        let h1 = death_headers(None, "q", "rejected", "ex", "k", 5000);
        let h2 = death_headers(Some(&h1), "q", "rejected", "ex", "k", 9000);
        let death = props::entries(&h2).find(|e| e.key == b"x-death").unwrap();
        let arr = death.value;
        // One entry, count 2, first time kept.
        let t = &arr[5..];
        let count = props::entries(t).find(|e| e.key == b"count").unwrap();
        assert_eq!(props::as_int(count.ty, count.value), Some(2));
        let time = props::entries(t).find(|e| e.key == b"time").unwrap();
        assert_eq!(props::as_int(time.ty, time.value), Some(5));
        assert!(props::entries(&h2).any(|e| e.key == b"x-first-death-queue" && e.value == b"q"));
    }
}
