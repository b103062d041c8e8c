//! One client connection: CONNECT, then packets both ways until it ends.
//!
//! The reading side decodes packets and acts on them; everything sent goes through a writer
//! task as futures kept in order (a PUBACK resolves when its message is durable; a delivery
//! when its record is), so acknowledgements keep the order of the publishes and a slow fsync
//! never blocks reading. Deliveries are taken only while the client's Receive Maximum allows.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use core_stream::partition::now_ms;
use core_stream::queue::{Delivery, QueueConsumer};
use futures_util::FutureExt;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::broker::MqttBroker;
use crate::codec::{Encoder, Wire, WireError};
use crate::packet::*;
use crate::props;
use crate::session::{self, Outgoing, Session, Subscription};
use crate::topics;
use crate::transport::{Reader, Writer};

/// Time a client has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Writer queue depth (answers and deliveries waiting to be written).
const WRITER_QUEUE: usize = 256;

/// What the writer task does with one entry.
enum Written {
    /// Write these packets.
    Packets(Vec<Outbound>),
    /// A QoS 1 publish could not be stored and 3.1.1 has no way to say so: close.
    Close,
}

type Pending = Pin<Box<dyn Future<Output = Written> + Send>>;

fn ready(p: Outbound) -> Pending {
    Box::pin(std::future::ready(Written::Packets(vec![p])))
}

/// Where an outbound QoS 1/2 message came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Live,
    Queue(i64),
}

#[derive(Debug)]
struct Inflight {
    source: Source,
    /// PUBREC received: waiting for PUBCOMP.
    released: bool,
}

/// Why the connection ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// DISCONNECT with this reason (0: no will; 0x04: with will).
    Disconnect(u8),
    /// The client went away, or broke the protocol: the will is published.
    Abnormal,
    /// Another connection took the session over.
    TakenOver,
    /// The broker stops.
    Shutdown,
}

/// Serves one connection.
pub async fn run<R: Reader, W: Writer>(b: Arc<MqttBroker>, mut rd: R, mut wr: W, peer: SocketAddr) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut wire = Wire::new(b.config.max_packet_size);
    // CONNECT first, within CONNECT_TIMEOUT.
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match wire.decode(&mut buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(WireError::Close("closed before CONNECT".into())),
                Ok(_) => {}
            }
        }
    })
    .await;
    let connect = match first {
        Ok(Ok(Inbound::Connect(c))) => c,
        Ok(Ok(_)) => {
            warn!(%peer, "first packet is not CONNECT; closing");
            return;
        }
        Ok(Err(WireError::RefuseConnect(code))) => {
            let v = wire.version().unwrap_or(Version::V3);
            refuse(&mut wr, v, code).await;
            warn!(%peer, code, "CONNECT refused");
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "closing before CONNECT");
            return;
        }
        Err(_) => {
            debug!(%peer, "no CONNECT in time; closing");
            return;
        }
    };
    let v = connect.version;
    if connect.auth_method.is_some() {
        refuse(&mut wr, v, reason::BAD_AUTH_METHOD).await;
        info!(%peer, "enhanced authentication is not supported; CONNECT refused");
        return;
    }
    if let Some(w) = &connect.will {
        if topics::validate_topic(&w.topic).is_err() {
            refuse(
                &mut wr,
                v,
                if v == Version::V5 {
                    reason::TOPIC_NAME_INVALID
                } else {
                    0x02
                },
            )
            .await;
            return;
        }
    }
    let conn_id = b.next_conn();
    let assigned = connect
        .client_id
        .is_empty()
        .then(|| format!("conflux-{conn_id:x}-{:x}", now_ms()));
    let client_id = assigned
        .clone()
        .unwrap_or_else(|| connect.client_id.clone());
    let persistent = match v {
        Version::V3 => !connect.clean_start,
        Version::V5 => connect.session_expiry > 0,
    };
    let (session, present, live_rx, kick) = b
        .attach(
            &client_id,
            connect.clean_start,
            persistent,
            connect.session_expiry,
            v,
            conn_id,
        )
        .await;
    // Keep alive: the client's, or the server's maximum (told to 5.0 clients).
    let max_ka = b.config.max_keepalive;
    let server_keep_alive =
        (max_ka > 0 && (connect.keep_alive == 0 || connect.keep_alive > max_ka)).then_some(max_ka);
    let keep_alive = server_keep_alive.unwrap_or(connect.keep_alive);
    let props = ConnAckProps {
        assigned_client_id: assigned,
        server_keep_alive: server_keep_alive.filter(|_| v == Version::V5),
        receive_max: b.config.receive_maximum,
        max_packet_size: Some(b.config.max_packet_size),
        topic_alias_max: b.config.topic_alias_maximum,
        session_expiry: None,
        reason: None,
    };
    let mut enc = Encoder::new(v);
    enc.max_packet = connect.max_packet_size;
    let (tx, rx) = mpsc::channel::<Pending>(WRITER_QUEUE);
    let acks_in = Arc::new(AtomicI32::new(0));
    let writer = tokio::spawn(write_loop(
        wr,
        rx,
        enc,
        connect.topic_alias_max,
        acks_in.clone(),
    ));
    let _ = tx
        .send(ready(Outbound::ConnAck(present, 0, Box::new(props))))
        .await;
    debug!(%peer, version = ?v, present, keep_alive, "connected");

    let mut c = Conn {
        b: b.clone(),
        session: session.clone(),
        tx,
        wire,
        v,
        conn_id,
        client_id: client_id.clone(),
        will: connect.will.clone(),
        expiry: connect.session_expiry,
        keep_alive,
        inflight: BTreeMap::new(),
        next_pid: 1,
        credit: connect.receive_max.min(b.config.max_inflight).max(1),
        aliases_in: HashMap::new(),
        acks_in,
        // A resumed session's queued messages are sent even when this connection will not
        // keep the session (MQTT 5 Clean Start 0 with Session Expiry 0: resumed, then ended
        // at disconnect) [MQTT-3.1.2-5].
        consumer: session
            .lock()
            .queue
            .clone()
            .filter(|_| persistent || present)
            .map(QueueConsumer::new),
        held: None,
        staged: Vec::new(),
        topics: HashMap::new(),
    };
    // A resumed session first resends PUBREL for QoS 2 messages that got PUBREC.
    let pubrel: Vec<u16> = session.lock().pubrel.iter().copied().collect();
    for pid in pubrel {
        c.inflight.insert(
            pid,
            Inflight {
                source: Source::Live,
                released: true,
            },
        );
        let _ = c.tx.send(ready(Outbound::PubRel(pid, 0))).await;
    }
    let end = c.serve(&mut rd, &mut buf, live_rx, kick).await;
    // Whatever is unacknowledged goes back to the session's queue.
    drop(c.consumer.take());
    let Conn {
        tx, will, expiry, ..
    } = c;
    match end {
        End::TakenOver if v == Version::V5 => {
            let _ = tx
                .send(ready(Outbound::Disconnect(reason::SESSION_TAKEN_OVER)))
                .await;
        }
        End::Shutdown if v == Version::V5 => {
            let _ = tx
                .send(ready(Outbound::Disconnect(reason::SERVER_SHUTTING_DOWN)))
                .await;
        }
        _ => {}
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    b.detach(&session, conn_id);
    let publish_will = !matches!(end, End::Disconnect(0) | End::Shutdown);
    if let (Some(w), true) = (will, publish_will) {
        let left = if persistent { expiry } else { 0 };
        b.schedule_will(&client_id, w, left);
    }
    // Close gracefully: the writer sent FIN; read and discard what the client still sends
    // (briefly), so it reads our last packets (a DISCONNECT with its reason) instead of a
    // reset.
    if end != End::Disconnect(0) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut total = 0usize;
            while total < 1 << 20 {
                buf.clear();
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }
    debug!(%peer, ?end, "disconnected");
}

async fn refuse<W: Writer>(wr: &mut W, v: Version, code: u8) {
    let mut enc = Encoder::new(v);
    let mut out = BytesMut::new();
    let code = match v {
        Version::V3 if code >= 0x80 => 0x03, // server unavailable
        _ => code,
    };
    if enc
        .encode(&Outbound::ConnAck(false, code, Box::default()), &mut out)
        .is_ok()
    {
        let _ = wr.write(&out).await;
    }
    wr.close().await;
}

/// Encodes and writes, in order, what the connection hands over; batches what is ready.
async fn write_loop<W: Writer>(
    mut wr: W,
    mut rx: mpsc::Receiver<Pending>,
    mut enc: Encoder,
    alias_max: u16,
    acks_in: Arc<AtomicI32>,
) {
    let mut out = BytesMut::new();
    let mut aliases: HashMap<String, u16> = HashMap::new();
    let mut next: Option<Pending> = None;
    'outer: loop {
        let p = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let mut written = p.await;
        loop {
            match written {
                Written::Close => break 'outer,
                Written::Packets(pkts) => {
                    for mut pkt in pkts {
                        if let Outbound::Publish(p) = &mut pkt {
                            alias(p, &mut aliases, alias_max);
                        }
                        if matches!(pkt, Outbound::PubAck(..)) {
                            acks_in.fetch_sub(1, Ordering::AcqRel);
                        }
                        if let Err(e) = enc.encode(&pkt, &mut out) {
                            debug!(error = %e, "packet not sent");
                        }
                    }
                }
            }
            if out.len() > 64 * 1024 {
                break;
            }
            // Take what is already resolved without waiting; stop at the first that is not.
            match rx.try_recv() {
                Ok(mut p) => match (&mut p).now_or_never() {
                    Some(w) => written = w,
                    None => {
                        next = Some(p);
                        break;
                    }
                },
                Err(_) => break,
            }
        }
        if !out.is_empty() {
            if wr.write(&out).await.is_err() {
                break;
            }
            out.clear();
            if rx.is_empty() {
                // Nothing more to write: an idle connection holds no write buffer.
                out = BytesMut::new();
            }
        }
    }
    if !out.is_empty() {
        let _ = wr.write(&out).await;
    }
    wr.close().await;
}

/// Server-side topic aliases: the first PUBLISH of a topic carries the topic and a new alias,
/// later ones only the alias, while the client's Topic Alias Maximum allows.
fn alias(p: &mut Publish, aliases: &mut HashMap<String, u16>, max: u16) {
    if max == 0 || p.topic.is_empty() {
        return;
    }
    match aliases.get(&p.topic) {
        Some(a) => {
            p.props.topic_alias = Some(*a);
            p.topic.clear();
        }
        None if aliases.len() < usize::from(max) => {
            let a = aliases.len() as u16 + 1;
            aliases.insert(p.topic.clone(), a);
            p.props.topic_alias = Some(a);
        }
        None => {}
    }
}

struct Conn {
    b: Arc<MqttBroker>,
    session: Arc<Session>,
    tx: mpsc::Sender<Pending>,
    wire: Wire,
    v: Version,
    conn_id: u64,
    client_id: String,
    will: Option<Will>,
    expiry: u32,
    keep_alive: u16,
    /// Outbound QoS 1/2 messages not yet acknowledged, by packet id.
    inflight: BTreeMap<u16, Inflight>,
    next_pid: u16,
    /// Client's Receive Maximum (capped by `max_inflight`).
    credit: u16,
    /// Inbound topic aliases.
    aliases_in: HashMap<u16, String>,
    /// Inbound QoS 1 messages not yet acknowledged plus QoS 2 not yet released.
    acks_in: Arc<AtomicI32>,
    consumer: Option<QueueConsumer>,
    /// A live message taken while no packet id was free.
    held: Option<Outgoing>,
    /// Publishes read and checked, not yet written (see `flush_publishes`).
    staged: Vec<Staged>,
    /// Topics of routing names seen.
    topics: HashMap<Arc<str>, String>,
}

/// A checked PUBLISH waiting to be written: its target stream and key, or why it is not
/// written (`Err(None)`: a resent QoS 2 message already stored).
struct Staged {
    p: Publish,
    target:
        Result<(crate::topics::Target, Option<bytes::Bytes>), Option<crate::broker::PublishError>>,
}

impl Conn {
    fn room(&self) -> usize {
        usize::from(self.credit).saturating_sub(self.inflight.len())
    }

    async fn serve<R: Reader>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        mut live: mpsc::Receiver<Outgoing>,
        kick: Arc<Notify>,
    ) -> End {
        let ka =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let mut deadline = ka.map(|d| Instant::now() + d);
        let mut shutdown = self.b.shutdown.clone();
        loop {
            // Packets that arrived with the CONNECT, or since the last read.
            loop {
                match self.wire.decode(buf) {
                    Ok(Some(p)) => {
                        if let Some(d) = ka {
                            deadline = Some(Instant::now() + d);
                        }
                        if !matches!(p, Inbound::Publish(_)) {
                            if let Some(end) = self.flush_publishes().await {
                                return end;
                            }
                        }
                        if let Some(end) = self.handle(p).await {
                            return end;
                        }
                    }
                    Ok(None) => {
                        if let Some(end) = self.flush_publishes().await {
                            return end;
                        }
                        if buf.is_empty() && buf.capacity() > 0 {
                            // Everything read was handled: give the buffer back while idle.
                            *buf = BytesMut::new();
                        }
                        break;
                    }
                    Err(e) => {
                        self.flush_publishes().await;
                        return self.protocol_error(e).await;
                    }
                }
            }
            if let Some(m) = self.held.take() {
                if self.room() > 0 || m.qos == 0 {
                    self.deliver_live(m, &mut live).await;
                } else {
                    self.held = Some(m);
                }
            }
            let room = self.room();
            let can_live = self.held.is_none() && room > 0;
            let queue_room = room.min(64);
            tokio::select! {
                biased;
                _ = kick.notified() => return End::TakenOver,
                _ = shutdown.wait() => return End::Shutdown,
                r = rd.read(buf) => match r {
                    Ok(0) | Err(_) => return End::Abnormal,
                    Ok(_) => {}
                },
                m = live.recv(), if can_live => match m {
                    Some(m) => self.deliver_live(m, &mut live).await,
                    None => return End::TakenOver,
                },
                t = next_queued(self.consumer.as_ref(), queue_room), if queue_room > 0 && self.consumer.is_some() => {
                    match t {
                        Ok(ds) => for d in ds { self.deliver_queued(d).await },
                        Err(e) => { warn!(error = %e, "session queue failed"); return End::Abnormal }
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    info!(client_id = %self.client_id, "keep-alive expired; closing");
                    if self.v == Version::V5 {
                        let _ = self.tx.send(ready(Outbound::Disconnect(reason::KEEP_ALIVE_TIMEOUT))).await;
                    }
                    return End::Abnormal;
                }
            }
        }
    }

    async fn protocol_error(&mut self, e: WireError) -> End {
        warn!(client_id = %self.client_id, error = %e, "protocol error; closing");
        if let (WireError::Disconnect(code, _), Version::V5) = (&e, self.v) {
            self.disconnect(*code).await;
        }
        End::Abnormal
    }

    /// Sends DISCONNECT (5.0) and ends.
    async fn disconnect(&mut self, code: u8) {
        if self.v == Version::V5 {
            let _ = self.tx.send(ready(Outbound::Disconnect(code))).await;
        }
    }

    async fn send(&mut self, p: Pending) {
        let _ = self.tx.send(p).await;
    }

    fn next_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    /// Acts on one packet; `Some` ends the connection.
    async fn handle(&mut self, p: Inbound) -> Option<End> {
        match p {
            Inbound::Connect(_) => {
                warn!(client_id = %self.client_id, "second CONNECT; closing");
                self.disconnect(reason::PROTOCOL_ERROR).await;
                return Some(End::Abnormal);
            }
            Inbound::Publish(p) => return self.on_publish(*p).await,
            Inbound::PubAck(pid) => self.on_ack(pid),
            Inbound::PubRec(pid, code) => {
                if code >= 0x80 {
                    self.on_ack(pid);
                } else {
                    if let Some(f) = self.inflight.get_mut(&pid) {
                        f.released = true;
                        if let Source::Queue(id) = f.source {
                            let _ = self.consumer.as_ref().map(|c| c.queue().ack(&[id]));
                        }
                        f.source = Source::Live;
                        self.session.lock().pubrel.insert(pid);
                    }
                    self.send(ready(Outbound::PubRel(pid, 0))).await;
                }
            }
            Inbound::PubComp(pid) => {
                self.inflight.remove(&pid);
                self.session.lock().pubrel.remove(&pid);
            }
            Inbound::PubRel(pid) => {
                let known = self.session.lock().inbound_qos2.remove(&pid);
                if known {
                    self.acks_in.fetch_sub(1, Ordering::AcqRel);
                }
                let code = if known || self.v == Version::V3 {
                    0
                } else {
                    reason::PACKET_ID_NOT_FOUND
                };
                self.send(ready(Outbound::PubComp(pid, code))).await;
            }
            Inbound::Subscribe {
                packet_id,
                id,
                filters,
            } => self.on_subscribe(packet_id, id, filters).await,
            Inbound::Unsubscribe { packet_id, filters } => {
                let mut codes = Vec::new();
                for f in &filters {
                    self.b.remove_subscription(&self.session, f);
                    codes.push(reason::SUCCESS);
                }
                self.persist_subscriptions();
                self.send(ready(Outbound::UnsubAck(packet_id, codes))).await;
            }
            Inbound::PingReq => self.send(ready(Outbound::PingResp)).await,
            Inbound::Disconnect(code, expiry) => {
                if let Some(e) = expiry {
                    if self.expiry == 0 && e > 0 {
                        self.disconnect(reason::PROTOCOL_ERROR).await;
                        return Some(End::Abnormal);
                    }
                    self.expiry = e;
                    let mut st = self.session.lock();
                    st.expiry = e;
                    st.persistent = e > 0;
                }
                return Some(End::Disconnect(code));
            }
            Inbound::Auth(_) => {
                self.disconnect(reason::PROTOCOL_ERROR).await;
                return Some(End::Abnormal);
            }
        }
        None
    }

    fn on_ack(&mut self, pid: u16) {
        if let Some(f) = self.inflight.remove(&pid) {
            if let Source::Queue(id) = f.source {
                if let Some(c) = &self.consumer {
                    let _ = c.queue().ack(&[id]);
                }
            }
        }
    }

    /// Checks a PUBLISH and stages it; staged publishes are written together (one batch per
    /// run of publishes to the same stream and key) when the packets read so far are handled.
    async fn on_publish(&mut self, mut p: Publish) -> Option<End> {
        // Topic alias (5.0): register or resolve.
        if let Some(a) = p.props.topic_alias.take() {
            if a == 0 || a > self.b.config.topic_alias_maximum {
                return self.fatal(reason::TOPIC_ALIAS_INVALID).await;
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(&a) {
                    Some(t) => p.topic = t.clone(),
                    None => return self.fatal(reason::TOPIC_ALIAS_INVALID).await,
                }
            } else {
                self.aliases_in.insert(a, p.topic.clone());
            }
        }
        if topics::validate_topic(&p.topic).is_err() || p.topic.starts_with("$share/") {
            warn!(client_id = %self.client_id, topic = %p.topic, "invalid topic in PUBLISH; closing");
            return self.fatal(reason::TOPIC_NAME_INVALID).await;
        }
        if p.qos > 2 {
            return self.fatal(reason::MALFORMED).await;
        }
        let pid = p.packet_id.unwrap_or(0);
        if p.qos == 2 && self.session.lock().inbound_qos2.contains(&pid) {
            // A resent QoS 2 PUBLISH already stored: acknowledge again (in order), store nothing.
            self.staged.push(Staged {
                p,
                target: Err(None),
            });
            return None;
        }
        if p.qos > 0 {
            let n = self.acks_in.fetch_add(1, Ordering::AcqRel) + 1;
            // MQTT 3.1.1 has no Receive Maximum: its clients are slowed by the bounded writer
            // queue instead (the read waits), as Mosquitto does.
            if self.v == Version::V5 && n > i32::from(self.b.config.receive_maximum) {
                warn!(client_id = %self.client_id, "client exceeded the Receive Maximum; closing");
                return self.fatal(reason::RECEIVE_MAXIMUM_EXCEEDED).await;
            }
        }
        p.props.subscription_ids.clear();
        let target = self.b.target(&p.topic, Some(&self.client_id)).map_err(Some);
        self.staged.push(Staged { p, target });
        None
    }

    /// Sends a DISCONNECT (5.0) after writing what is staged, and ends the connection.
    async fn fatal(&mut self, code: u8) -> Option<End> {
        self.flush_publishes().await;
        self.disconnect(code).await;
        Some(End::Abnormal)
    }

    /// Writes the staged publishes: each run of publishes to the same stream and key is one
    /// appended batch (one durability wait), acknowledged in the order the publishes came.
    async fn flush_publishes(&mut self) -> Option<End> {
        if self.staged.is_empty() {
            return None;
        }
        let staged = std::mem::take(&mut self.staged);
        let now = now_ms();
        let v3 = self.v == Version::V3;
        let mut i = 0;
        while i < staged.len() {
            // The run: consecutive publishes with the same target (duplicates run alone).
            let mut j = i + 1;
            if let Ok((t, k)) = &staged[i].target {
                while j < staged.len()
                    && matches!(&staged[j].target, Ok((t2, k2)) if t2 == t && k2 == k)
                {
                    j += 1;
                }
            }
            let run = &staged[i..j];
            i = j;
            let (target, key) = match &run[0].target {
                Err(None) => {
                    let pid = run[0].p.packet_id.unwrap_or(0);
                    self.send(ready(Outbound::PubRec(pid, 0))).await;
                    continue;
                }
                Err(Some(e)) => {
                    let e = e.clone();
                    if let Some(end) = self.refuse_run(run, e, v3).await {
                        return Some(end);
                    }
                    continue;
                }
                Ok(x) => x.clone(),
            };
            let mut records = Vec::with_capacity(run.len());
            let mut failed = None;
            for s in run {
                if s.p.retain {
                    if let Err(e) = self.b.retain(&s.p, now) {
                        failed = Some(e);
                        break;
                    }
                }
                records.push(self.b.record(&s.p, &target, key.clone(), now));
            }
            let stored = match failed {
                Some(e) => Err(e),
                None => self
                    .b
                    .append(&target.stream, key.as_deref(), &records, self.conn_id),
            };
            let out = match stored {
                Ok(out) => out,
                Err(e) => {
                    if let Some(end) = self.refuse_run(run, e, v3).await {
                        return Some(end);
                    }
                    continue;
                }
            };
            let acks: Vec<(u8, u16)> = run
                .iter()
                .filter(|s| s.p.qos > 0)
                .map(|s| (s.p.qos, s.p.packet_id.unwrap_or(0)))
                .collect();
            if acks.is_empty() {
                continue;
            }
            {
                let mut st = self.session.lock();
                for (q, pid) in &acks {
                    if *q == 2 {
                        st.inbound_qos2.insert(*pid);
                    }
                }
            }
            let ticket = out.durable;
            self.send(Box::pin(async move {
                let ok = ticket.wait().await.is_ok();
                if !ok && v3 {
                    return Written::Close;
                }
                let code = if ok { 0 } else { reason::UNSPECIFIED };
                Written::Packets(
                    acks.into_iter()
                        .map(|(q, pid)| {
                            if q == 1 {
                                Outbound::PubAck(pid, code)
                            } else {
                                Outbound::PubRec(pid, code)
                            }
                        })
                        .collect(),
                )
            }))
            .await;
        }
        None
    }

    /// Answers the publishes of a run that could not be stored: 5.0 gets the reason on each
    /// acknowledgement; 3.1.1 has no way to say so and is closed.
    async fn refuse_run(
        &mut self,
        run: &[Staged],
        e: crate::broker::PublishError,
        v3: bool,
    ) -> Option<End> {
        warn!(client_id = %self.client_id, error = %e, "message not stored");
        if run.iter().all(|s| s.p.qos == 0) {
            return None;
        }
        if v3 {
            return Some(End::Abnormal);
        }
        let code = match e {
            crate::broker::PublishError::Topic(_) => reason::TOPIC_NAME_INVALID,
            crate::broker::PublishError::Storage(_) => reason::UNSPECIFIED,
        };
        for s in run {
            let pid = s.p.packet_id.unwrap_or(0);
            match s.p.qos {
                1 => self.send(ready(Outbound::PubAck(pid, code))).await,
                2 => {
                    self.acks_in.fetch_sub(1, Ordering::AcqRel);
                    self.send(ready(Outbound::PubRec(pid, code))).await
                }
                _ => {}
            }
        }
        None
    }

    async fn on_subscribe(
        &mut self,
        packet_id: u16,
        id: Option<u32>,
        filters: Vec<SubscribeFilter>,
    ) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained_for = Vec::new();
        for f in &filters {
            let shared = topics::shared(&f.filter);
            let check = shared.map_or(f.filter.as_str(), |(_, inner)| inner);
            if topics::validate_filter(check).is_err()
                || (f.filter.starts_with("$share/") && shared.is_none())
                || topics::filter_pattern(check).is_err()
            {
                codes.push(if self.v == Version::V5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    0x80
                });
                continue;
            }
            if self.b.config.deny_subscribe.iter().any(|d| d == &f.filter) {
                codes.push(0x80);
                continue;
            }
            let qos = f.qos.min(2);
            let sub = Subscription::new(&SubscribeFilter { qos, ..f.clone() }, id);
            let new = self.b.add_subscription(&self.session, sub.clone());
            codes.push(qos);
            let send_retained = shared.is_none()
                && match f.retain_handling {
                    0 => true,
                    1 => new,
                    _ => false,
                };
            if send_retained {
                retained_for.push(sub);
            }
        }
        self.persist_subscriptions();
        self.send(ready(Outbound::SubAck(packet_id, codes))).await;
        let now = now_ms();
        for sub in retained_for {
            for (topic, m) in self.b.retained.matching(&sub.filter, now) {
                let qos = m.qos.min(sub.qos);
                let mut props = m.props.clone();
                props.message_expiry = m
                    .expires_at
                    .map(|at| (((at - now).max(0) + 999) / 1000) as u32);
                props.subscription_ids = sub.id.into_iter().collect();
                let packet_id = (qos > 0).then(|| {
                    let pid = self.next_packet_id();
                    self.inflight.insert(
                        pid,
                        Inflight {
                            source: Source::Live,
                            released: false,
                        },
                    );
                    pid
                });
                let p = Publish {
                    dup: false,
                    qos,
                    retain: true,
                    topic,
                    packet_id,
                    payload: m.payload,
                    props,
                };
                self.send(ready(Outbound::Publish(Box::new(p)))).await;
            }
        }
    }

    fn persist_subscriptions(&self) {
        if self.session.lock().persistent {
            let b = self.b.clone();
            crate::blocking(|| b.store_session(&self.session, None));
        }
    }

    /// Sends a live message (QoS 0, or any QoS for a session that ends with its connection).
    async fn deliver_live(&mut self, first: Outgoing, live: &mut mpsc::Receiver<Outgoing>) {
        // Everything already waiting goes out as one batch: one writer entry, one wait for
        // the last record's durability, one write.
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            if m.qos > 0 && self.room() == 0 {
                self.held = Some(m);
                break;
            }
            if let Some(p) = self.prepare_live(m) {
                batch.push(p);
            }
            if batch.len() < 512 {
                next = live.try_recv().ok();
            }
        }
        if batch.is_empty() {
            return;
        }
        self.send(Box::pin(async move {
            let mut out = Vec::with_capacity(batch.len());
            for (p, routed) in batch {
                routed.durable().await;
                out.push(Outbound::Publish(Box::new(p)));
            }
            Written::Packets(out)
        }))
        .await;
    }

    /// The PUBLISH for a live message (packet id taken for QoS 1/2), unless it expired.
    fn prepare_live(&mut self, m: Outgoing) -> Option<(Publish, Arc<core_stream::router::Routed>)> {
        let now = now_ms();
        let carried = props::from_headers(&m.routed.record.headers, now);
        if carried.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        let mut props = carried.props;
        props.subscription_ids = m.sub_ids;
        let packet_id = (m.qos > 0).then(|| {
            let pid = self.next_packet_id();
            self.inflight.insert(
                pid,
                Inflight {
                    source: Source::Live,
                    released: false,
                },
            );
            pid
        });
        let topic = self.topic_of(&m.routed.routing_name);
        let p = Publish {
            dup: false,
            qos: m.qos,
            retain: m.retain,
            topic,
            packet_id,
            payload: m.routed.record.value.clone().unwrap_or_default(),
            props,
        };
        Some((p, m.routed))
    }

    /// The MQTT topic of a routing name (remembered: a subscriber sees few distinct topics).
    fn topic_of(&mut self, routing: &Arc<str>) -> String {
        if let Some(t) = self.topics.get(routing) {
            return t.clone();
        }
        if self.topics.len() > 4096 {
            self.topics.clear();
        }
        let t = topics::routing_topic(routing);
        self.topics.insert(routing.clone(), t.clone());
        t
    }

    /// Sends a message from the session's durable queue.
    async fn deliver_queued(&mut self, d: Delivery) {
        let Some((qos, retain, sub_ids, routing)) = session::read_attachment(d.attachment.clone())
        else {
            if let Some(c) = &self.consumer {
                let _ = c.queue().ack(&[d.id]);
            }
            return;
        };
        let now = now_ms();
        let carried = props::from_headers(&d.record.headers, now);
        if carried.expires_at.is_some_and(|at| at <= now) {
            if let Some(c) = &self.consumer {
                let _ = c.queue().ack(&[d.id]);
            }
            return;
        }
        let mut props = carried.props;
        props.subscription_ids = sub_ids;
        let pid = self.next_packet_id();
        self.inflight.insert(
            pid,
            Inflight {
                source: Source::Queue(d.id),
                released: false,
            },
        );
        let p = Publish {
            dup: d.redelivered,
            qos,
            retain,
            topic: topics::routing_topic(&routing),
            packet_id: Some(pid),
            payload: d.record.value.unwrap_or_default(),
            props,
        };
        self.send(ready(Outbound::Publish(Box::new(p)))).await;
    }
}

async fn next_queued(c: Option<&QueueConsumer>, max: usize) -> core_stream::Result<Vec<Delivery>> {
    match c {
        Some(c) => c.next(max).await.map(|t| t.deliveries),
        None => std::future::pending().await,
    }
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
