//! One AMQP connection: the handshake (protocol header, start/tune/open), the frame loop
//! that reassembles content and dispatches methods to channels, heartbeats, and closing.
//!
//! The reader task owns the connection's state and handles every inbound frame in order.
//! Everything written to the client goes through one bounded queue to a writer task, so
//! replies, deliveries from consumer tasks and publisher confirms keep their order per
//! channel, and a client that does not read slows its consumers instead of growing memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::broker::AmqpBroker;
use crate::channel::Channel;
use crate::error::{code, truncate, AmqpError};
use crate::wire::{self, frame_type, FrameCheck, MethodError};

/// Frames queued for the writer, per connection.
const OUT_QUEUE: usize = 256;
/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for `close-ok` after the broker closed the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The writer's input: encoded frames.
pub type Out = mpsc::Sender<Bytes>;

/// What the client said it can do (`client_properties.capabilities`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// Wants `basic.cancel` when the broker cancels a consumer.
    pub consumer_cancel_notify: bool,
    /// Wants `connection.close` (403) on a failed login rather than a dropped socket.
    pub authentication_failure_close: bool,
    /// Wants `connection.blocked` / `unblocked` when a resource alarm pauses its publishing.
    pub connection_blocked: bool,
}

/// Connection-wide settings every channel needs.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Connection id (owner of exclusive queues, origin of its records).
    pub id: u64,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated channel_max.
    pub channel_max: u16,
    /// Client capabilities.
    pub caps: Caps,
    /// Peer address.
    pub peer: SocketAddr,
    /// The writer.
    pub out: Out,
}

/// Why the reader stops.
enum End {
    /// The client went away or the socket failed.
    Gone,
    /// Closed cleanly (close / close-ok exchanged).
    Closed,
}

/// Runs one connection to completion.
pub async fn run<R, W>(b: Arc<AmqpBroker>, mut rd: R, wr: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut inbuf = BytesMut::with_capacity(8192);
    // Protocol header.
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_at_least(&mut rd, &mut inbuf, 8)).await {
        Ok(Ok(true)) => {}
        _ => {
            debug!(%peer, "no AMQP protocol header; closed");
            return;
        }
    }
    if &inbuf[..8] != wire::PROTOCOL_HEADER {
        debug!(%peer, header = ?&inbuf[..8], "not AMQP 0-9-1; answered with the supported version and closed");
        let mut wr = wr;
        let _ = wr.write_all(wire::PROTOCOL_HEADER).await;
        let _ = wr.shutdown().await;
        return;
    }
    let _ = inbuf.split_to(8);
    let (tx, rx) = mpsc::channel::<Bytes>(OUT_QUEUE);
    let hb_out = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writer = tokio::spawn(write_loop(wr, rx, hb_out.clone()));
    let id = b.next_id();
    let mut c = Conn {
        b: b.clone(),
        info: ConnInfo {
            id,
            frame_max: wire::FRAME_MIN_SIZE,
            channel_max: b.config.channel_max,
            caps: Caps::default(),
            peer,
            out: tx,
        },
        channels: HashMap::new(),
        heartbeat: 0,
        closing: false,
        name: String::new(),
        user: String::new(),
        published: false,
    };
    let end = match tokio::time::timeout(HANDSHAKE_TIMEOUT, c.handshake(&mut rd, &mut inbuf)).await
    {
        Ok(Ok(())) => {
            hb_out.store(u32::from(c.heartbeat), std::sync::atomic::Ordering::Relaxed);
            info!(%peer, conn = id, user = %c.user, name = %c.name, heartbeat = c.heartbeat, frame_max = c.info.frame_max, "AMQP connection open");
            c.serve(&mut rd, &mut inbuf).await
        }
        Ok(Err(e)) => {
            if let Some(e) = e {
                info!(%peer, error = %e, "AMQP handshake refused");
                c.send_connection_close(&e).await;
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, c.await_close_ok(&mut rd, &mut inbuf))
                    .await;
            }
            End::Gone
        }
        Err(_) => {
            debug!(%peer, "AMQP handshake timed out");
            End::Gone
        }
    };
    c.shutdown().await;
    if matches!(end, End::Gone) {
        debug!(%peer, conn = id, "AMQP connection dropped");
    } else {
        debug!(%peer, conn = id, "AMQP connection closed");
    }
    drop(c);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Reads until `buf` holds at least `n` bytes. False at end of stream.
async fn read_at_least<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    n: usize,
) -> std::io::Result<bool> {
    while buf.len() < n {
        buf.reserve(n - buf.len());
        if rd.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes queued frames, coalescing what is ready into one write; sends a heartbeat when
/// nothing else went out for half the heartbeat interval.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    heartbeat: Arc<std::sync::atomic::AtomicU32>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let hb = heartbeat.load(std::sync::atomic::Ordering::Relaxed);
        let first = if hb == 0 {
            rx.recv().await
        } else {
            match tokio::time::timeout(Duration::from_millis(u64::from(hb) * 500), rx.recv()).await
            {
                Ok(m) => m,
                Err(_) => {
                    let mut h = Vec::new();
                    wire::put_heartbeat(&mut h);
                    if wr.write_all(&h).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let Some(first) = first else {
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
            return;
        };
        if rx.is_empty() {
            if wr.write_all(&first).await.is_err() {
                return;
            }
        } else {
            buf.clear();
            buf.extend_from_slice(&first);
            while buf.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => buf.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
    }
}

/// The reader side's state of one connection.
pub struct Conn {
    /// The broker.
    pub b: Arc<AmqpBroker>,
    /// Settings channels share.
    pub info: ConnInfo,
    /// Open channels.
    pub channels: HashMap<u16, Channel>,
    heartbeat: u16,
    /// `connection.close` was sent; only close / close-ok count now.
    closing: bool,
    name: String,
    /// Logged-in user.
    user: String,
    /// This connection has published (a resource alarm blocks only publishers).
    pub published: bool,
}

/// `[authzid] NUL user NUL password` (SASL PLAIN).
fn plain_login(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let (_authz, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

/// AMQPLAIN: a field table without its length, with `LOGIN` and `PASSWORD`.
fn amqplain_login(response: &[u8]) -> Option<(String, String)> {
    let mut table = (response.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(response);
    wire::validate_table(&table, 1, wire::MAX_TABLE_DEPTH).ok()?;
    let get = |k: &[u8]| {
        crate::props::entries(&table)
            .find(|e| e.key == k && e.ty == b'S')
            .and_then(|e| String::from_utf8(e.value.to_vec()).ok())
    };
    Some((get(b"LOGIN")?, get(b"PASSWORD")?))
}

fn method_ids(m: &AMQPClass) -> (u16, u16) {
    (m.get_amqp_class_id(), m.get_amqp_method_id())
}

/// The server properties of `connection.start`, RabbitMQ's capability names included.
fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    p.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
    p.insert("cluster_name".into(), s("conflux"));
    p.insert("copyright".into(), s("Conflux authors"));
    p.insert(
        "information".into(),
        s("Kafka, MQTT and AMQP 0-9-1 over one durable stream core"),
    );
    p.insert("platform".into(), s("Rust"));
    p.insert("product".into(), s("Conflux"));
    p.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    p
}

impl Conn {
    /// Queues one method frame for the writer.
    pub async fn send_method(&self, channel: u16, m: AMQPClass) -> bool {
        let mut out = Vec::with_capacity(64);
        wire::put_method(&mut out, channel, m);
        self.info.out.send(Bytes::from(out)).await.is_ok()
    }

    async fn send_connection_close(&mut self, e: &AmqpError) {
        self.closing = true;
        let text = ShortString::try_new(truncate(&e.text, 255)).unwrap_or_else(|_| "".into());
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: text,
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        )
        .await;
    }

    /// Reads frames until the client's `close-ok` (or `close`), ignoring everything else.
    async fn await_close_ok<R: AsyncRead + Unpin>(&mut self, rd: &mut R, inbuf: &mut BytesMut) {
        loop {
            while let FrameCheck::Complete(n) = wire::check_frame(inbuf, 0) {
                let f = inbuf.split_to(n);
                if f[0] == frame_type::METHOD && wire::channel_of(&f) == 0 {
                    match wire::parse_method(&f) {
                        Ok(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => return,
                        Ok(AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                            self.send_method(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                    connection::CloseOk {},
                                )),
                            )
                            .await;
                            return;
                        }
                        _ => {}
                    }
                }
            }
            if !matches!(wire::check_frame(inbuf, 0), FrameCheck::NeedMore) {
                return;
            }
            inbuf.reserve(4096);
            match rd.read_buf(inbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Reads the next whole frame of the handshake (connection methods on channel 0).
    async fn next_handshake_method<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        inbuf: &mut BytesMut,
    ) -> Result<AMQPClass, Option<AmqpError>> {
        loop {
            match wire::check_frame(inbuf, wire::FRAME_MIN_SIZE) {
                FrameCheck::NeedMore => {
                    inbuf.reserve(4096);
                    match rd.read_buf(inbuf).await {
                        Ok(0) | Err(_) => return Err(None),
                        Ok(_) => continue,
                    }
                }
                FrameCheck::Complete(n) => {
                    let f = inbuf.split_to(n);
                    match f[0] {
                        frame_type::HEARTBEAT => continue,
                        frame_type::METHOD => {
                            return match wire::parse_method(&f) {
                                Ok(m) => Ok(m),
                                Err(MethodError::Unknown(c, m)) => Err(Some(
                                    AmqpError::not_implemented(format!("unknown method {c}.{m}")),
                                )),
                                Err(MethodError::Malformed(c, m, why)) => Err(Some(
                                    AmqpError::frame_error(format!(
                                        "cannot decode method {c}.{m}: {why}"
                                    ))
                                    .on(c, m),
                                )),
                            };
                        }
                        _ => {
                            return Err(Some(AmqpError::unexpected_frame(
                                "expected method frame, got non method frame instead",
                            )))
                        }
                    }
                }
                other => {
                    return Err(Some(AmqpError::frame_error(format!(
                        "bad frame: {other:?}"
                    ))));
                }
            }
        }
    }

    async fn handshake<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        inbuf: &mut BytesMut,
    ) -> Result<(), Option<AmqpError>> {
        let cfg = self.b.config.clone();
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                mechanisms: LongString::from("PLAIN AMQPLAIN".as_bytes().to_vec()),
                locales: LongString::from("en_US".as_bytes().to_vec()),
            })),
        )
        .await;
        let start_ok = match self.next_handshake_method(rd, inbuf).await? {
            AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => s,
            m => {
                let (c, mid) = method_ids(&m);
                return Err(Some(
                    AmqpError::command_invalid("expected connection.start-ok").on(c, mid),
                ));
            }
        };
        if let Some(AMQPValue::FieldTable(caps)) =
            start_ok.client_properties.inner().get("capabilities")
        {
            let flag = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.info.caps.consumer_cancel_notify = flag("consumer_cancel_notify");
            self.info.caps.authentication_failure_close = flag("authentication_failure_close");
            self.info.caps.connection_blocked = flag("connection.blocked");
        }
        if let Some(AMQPValue::LongString(n)) =
            start_ok.client_properties.inner().get("connection_name")
        {
            self.name = String::from_utf8_lossy(n.as_bytes()).into_owned();
        }
        let mechanism = start_ok.mechanism.as_str();
        let login = match mechanism {
            "PLAIN" => plain_login(start_ok.response.as_bytes()),
            "AMQPLAIN" => amqplain_login(start_ok.response.as_bytes()),
            _ => {
                // RabbitMQ drops such a connection during the handshake.
                warn!(peer = %self.info.peer, mechanism, "unknown authentication mechanism; connection closed");
                return Err(None);
            }
        };
        let checked = match &login {
            Some((user, password)) => cfg.check_login(user, password, self.info.peer.ip()),
            None => Err("unreadable credentials".to_string()),
        };
        if let Err(why) = checked {
            warn!(peer = %self.info.peer, mechanism, reason = %why, "AMQP login refused");
            if self.info.caps.authentication_failure_close {
                return Err(Some(AmqpError::access_refused(format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                ))));
            }
            return Err(None);
        }
        self.user = login.map(|(u, _)| u).unwrap_or_default();
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: cfg.channel_max,
                frame_max: cfg.frame_max,
                heartbeat: cfg.heartbeat,
            })),
        )
        .await;
        let tune_ok = loop {
            match self.next_handshake_method(rd, inbuf).await? {
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => break t,
                AMQPClass::Connection(connection::AMQPMethod::SecureOk(_)) => continue,
                m => {
                    let (c, mid) = method_ids(&m);
                    return Err(Some(
                        AmqpError::command_invalid("expected connection.tune-ok").on(c, mid),
                    ));
                }
            }
        };
        if tune_ok.frame_max != 0 && tune_ok.frame_max < wire::FRAME_MIN_SIZE {
            return Err(Some(
                AmqpError::not_allowed(format!(
                    "negotiated frame_max = {} is lower than the minimum allowed value ({})",
                    tune_ok.frame_max,
                    wire::FRAME_MIN_SIZE
                ))
                .on(10, 31),
            ));
        }
        if tune_ok.frame_max == 0 || tune_ok.frame_max > cfg.frame_max {
            return Err(Some(
                AmqpError::not_allowed(format!(
                    "negotiated frame_max = {} is higher than the maximum allowed value ({})",
                    tune_ok.frame_max, cfg.frame_max
                ))
                .on(10, 31),
            ));
        }
        if tune_ok.channel_max == 0 || tune_ok.channel_max > cfg.channel_max {
            return Err(Some(
                AmqpError::not_allowed(format!(
                    "negotiated channel_max = {} is higher than the maximum allowed value ({})",
                    tune_ok.channel_max, cfg.channel_max
                ))
                .on(10, 31),
            ));
        }
        self.info.frame_max = tune_ok.frame_max;
        self.info.channel_max = tune_ok.channel_max;
        self.heartbeat = tune_ok.heartbeat;
        let open = match self.next_handshake_method(rd, inbuf).await? {
            AMQPClass::Connection(connection::AMQPMethod::Open(o)) => o,
            m => {
                let (c, mid) = method_ids(&m);
                return Err(Some(
                    AmqpError::command_invalid("expected connection.open").on(c, mid),
                ));
            }
        };
        if !cfg.vhosts.iter().any(|v| v == open.virtual_host.as_str()) {
            return Err(Some(
                AmqpError::not_allowed(format!("vhost {} not found", open.virtual_host.as_str()))
                    .on(10, 40),
            ));
        }
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        )
        .await;
        Ok(())
    }

    /// The frame loop of an open connection.
    async fn serve<R: AsyncRead + Unpin>(&mut self, rd: &mut R, inbuf: &mut BytesMut) -> End {
        let timeout =
            (self.heartbeat > 0).then(|| Duration::from_secs(u64::from(self.heartbeat) * 2));
        let mut shutdown = self.b.shutdown.clone();
        let mut alarm = self.b.alarm.subscribe();
        let mut blocked: Option<&'static str> = None;
        loop {
            // Handle every whole frame buffered, then flush what they staged.
            loop {
                match wire::check_frame(inbuf, self.info.frame_max) {
                    FrameCheck::NeedMore => break,
                    FrameCheck::Complete(n) => {
                        let f = inbuf.split_to(n).freeze();
                        if let Err(e) = self.frame(f).await {
                            return self.fail(e, rd, inbuf).await;
                        }
                        if self.closing {
                            return End::Closed;
                        }
                    }
                    FrameCheck::TooLarge(size) => {
                        let e = AmqpError::frame_error(format!(
                            "type {}, all octets = <<>>: {{frame_too_large,{size},{}}}",
                            inbuf[0],
                            self.info.frame_max.saturating_sub(8)
                        ));
                        return self.fail(e, rd, inbuf).await;
                    }
                    FrameCheck::BadType(t) => {
                        let e = AmqpError::frame_error(format!("unknown frame type {t}"));
                        return self.fail(e, rd, inbuf).await;
                    }
                    FrameCheck::BadEnd(b) => {
                        let e = AmqpError::frame_error(format!("{{invalid_frame_end_marker,{b}}}"));
                        return self.fail(e, rd, inbuf).await;
                    }
                }
            }
            if let Err(e) = self.flush_all().await {
                return self.fail(e, rd, inbuf).await;
            }
            // A resource alarm pauses a publishing connection (it is told, if it asked to be):
            // nothing more is read from it until the alarm clears.
            let raised = *alarm.borrow_and_update();
            if raised.is_some() && self.published && blocked.is_none() {
                blocked = raised;
                if self.info.caps.connection_blocked {
                    self.send_method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Blocked(
                            connection::Blocked {
                                reason: raised.unwrap_or("").into(),
                            },
                        )),
                    )
                    .await;
                }
            }
            if raised.is_none() && blocked.take().is_some() && self.info.caps.connection_blocked {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                        connection::Unblocked {},
                    )),
                )
                .await;
            }
            if blocked.is_some() {
                tokio::select! {
                    r = alarm.changed() => if r.is_err() { return End::Gone },
                    _ = shutdown.wait() => return End::Closed,
                }
                continue;
            }
            inbuf.reserve(64 * 1024);
            let read = async {
                match timeout {
                    Some(t) => match tokio::time::timeout(t, rd.read_buf(inbuf)).await {
                        Ok(r) => r.map(Some),
                        Err(_) => Ok(None),
                    },
                    None => rd.read_buf(inbuf).await.map(Some),
                }
            };
            tokio::select! {
                r = read => match r {
                    Ok(Some(0)) | Err(_) => return End::Gone,
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        warn!(peer = %self.info.peer, timeout_s = self.heartbeat * 2, "missed heartbeats from client; connection closed");
                        return End::Gone;
                    }
                },
                r = alarm.changed(), if self.published => if r.is_err() { return End::Gone },
                _ = shutdown.wait() => {
                    let e = AmqpError::new(code::CONNECTION_FORCED, "broker shutdown");
                    self.send_connection_close(&e).await;
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.await_close_ok(rd, inbuf)).await;
                    return End::Closed;
                }
            }
        }
    }

    /// A hard error: `connection.close`, then wait briefly for `close-ok`.
    async fn fail<R: AsyncRead + Unpin>(
        &mut self,
        e: AmqpError,
        rd: &mut R,
        inbuf: &mut BytesMut,
    ) -> End {
        warn!(peer = %self.info.peer, conn = self.info.id, error = %e, "closing AMQP connection");
        self.send_connection_close(&e).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.await_close_ok(rd, inbuf)).await;
        End::Closed
    }

    /// One whole frame.
    async fn frame(&mut self, f: Bytes) -> Result<(), AmqpError> {
        let ch = wire::channel_of(&f);
        match f[0] {
            frame_type::HEARTBEAT => {
                if ch != 0 {
                    return Err(AmqpError::unexpected_frame(
                        "heartbeat frame on a non-zero channel",
                    ));
                }
                Ok(())
            }
            frame_type::METHOD => {
                let m = match wire::parse_method(&f) {
                    Ok(m) => m,
                    Err(MethodError::Unknown(c, m)) => {
                        return Err(AmqpError::not_implemented(format!(
                            "unknown method {c}.{m}"
                        )))
                    }
                    Err(MethodError::Malformed(c, m, why)) => {
                        return Err(AmqpError::frame_error(format!(
                            "cannot decode method {c}.{m}: {why}"
                        ))
                        .on(c, m))
                    }
                };
                if ch == 0 {
                    // Publishes sent before a connection method (close above all) are stored.
                    self.flush_all().await?;
                    return self.connection_method(m).await;
                }
                self.channel_method(ch, m, &f).await
            }
            frame_type::HEADER | frame_type::BODY => {
                if ch == 0 {
                    return Err(AmqpError::unexpected_frame(
                        "expected method frame, got non method frame instead",
                    ));
                }
                self.content_frame(ch, f).await
            }
            t => Err(AmqpError::frame_error(format!("unknown frame type {t}"))),
        }
    }

    async fn connection_method(&mut self, m: AMQPClass) -> Result<(), AmqpError> {
        let (c, mid) = method_ids(&m);
        match m {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                debug!(peer = %self.info.peer, code = close.reply_code, text = %close.reply_text, "client closed the connection");
                self.close_channels().await;
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                )
                .await;
                self.closing = true;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                self.closing = true;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                )
                .await;
                Ok(())
            }
            AMQPClass::Connection(
                connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_),
            ) => Ok(()),
            _ => Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .on(c, mid),
            ),
        }
    }

    /// Closes every channel (consumers stopped, unacknowledged messages back to their queues).
    async fn close_channels(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            if let Some(ch) = self.channels.remove(&id) {
                ch.close(&self.b).await;
            }
        }
    }

    /// The connection ends: channels closed, exclusive queues deleted.
    async fn shutdown(&mut self) {
        self.close_channels().await;
        let b = self.b.clone();
        let id = self.info.id;
        b.connection_closed(id);
    }
}
