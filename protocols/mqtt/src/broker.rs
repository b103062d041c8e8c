//! What all MQTT connections share: settings, the session registry (attach, takeover,
//! detach, expiry, restore after a restart), subscriptions in the core's router, retained
//! messages, wills, and the publish path into the streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use conflux_net::Shutdown;
use core_stream::batch::Record;
use core_stream::partition::now_ms;
use core_stream::queue::{Overflow, QueueSettings};
use core_stream::{AppendOutcome, Core};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::packet::{Publish, Version, Will};
use crate::props;
use crate::retained::{Retained, RetainedMsg};
use crate::session::{
    self, Link, Outgoing, Session, SharedGroup, SharedGroups, StoredSession, Subscription,
};
use crate::topics::{self, Mapping, MappingRule, Target};

/// What the record key of a PUBLISH is when no mapping rule gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyPolicy {
    /// The publisher's client id: one device's messages stay in one partition, in order.
    #[default]
    ClientId,
    /// No key (records spread over partitions by connection).
    None,
}

/// Settings of the MQTT front-end.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Largest packet accepted (bytes); larger gets DISCONNECT 0x95 (5.0) or a close.
    pub max_packet_size: u32,
    /// QoS 1/2 messages a client may have unacknowledged towards the broker (Receive Maximum).
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages the broker has unacknowledged towards one client.
    pub max_inflight: u16,
    /// Buffer of a connected client's live messages; past it messages are dropped.
    pub max_queued_messages: usize,
    /// Most messages a persistent session queues (durably); past it new ones are dropped.
    pub max_queued_messages_persistent: u64,
    /// Largest keep-alive a client may use (s; 0 = no limit). A client asking for more (or
    /// for none) is told this one (5.0 Server Keep Alive).
    pub max_keepalive: u16,
    /// Topic aliases a client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Topic filters whose subscription is refused (SUBACK 0x80).
    pub deny_subscribe: Vec<String>,
    /// Rules mapping many topics into one keyed stream.
    pub mapping: Vec<MappingRule>,
    /// Record key of a publish no rule keys.
    pub key: KeyPolicy,
    /// Most connections at once (per listener).
    pub max_connections: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            receive_maximum: 100,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_queued_messages_persistent: 100_000,
            max_keepalive: 0,
            topic_alias_maximum: 10,
            deny_subscribe: Vec::new(),
            mapping: Vec::new(),
            key: KeyPolicy::ClientId,
            max_connections: 100_000,
        }
    }
}

/// Shared state of the MQTT front-end.
#[derive(Debug)]
pub struct MqttBroker {
    /// The stream core.
    pub core: Arc<Core>,
    /// Settings.
    pub config: MqttConfig,
    /// Mapping rules, checked.
    pub mapping: Mapping,
    /// Retained messages.
    pub retained: Retained,
    /// Stop signal.
    pub shutdown: Shutdown,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    shared: Mutex<SharedGroups>,
    wills: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    next_conn: AtomicU64,
}

/// Queue name of a persistent session.
fn queue_name(client_id: &str) -> String {
    format!("mqtt/{client_id}")
}

impl MqttBroker {
    /// Opens the front-end's state: retained messages, persistent sessions (re-subscribed,
    /// expired ones removed), mapping rules registered with the core's router.
    pub fn open(
        core: Arc<Core>,
        config: MqttConfig,
        shutdown: Shutdown,
    ) -> Result<Arc<Self>, String> {
        let mapping = Mapping::new(&config.mapping)?;
        for (stream, template) in mapping.templates() {
            core.router().set_template(&stream, template);
        }
        let retained = Retained::load(core.clone()).map_err(|e| e.to_string())?;
        let b = Arc::new(Self {
            core,
            config,
            mapping,
            retained,
            shutdown,
            sessions: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            wills: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        });
        b.restore_sessions().map_err(|e| e.to_string())?;
        Ok(b)
    }

    /// A new connection id (records it writes carry it as their origin).
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn restore_sessions(self: &Arc<Self>) -> core_stream::Result<()> {
        let now = now_ms();
        let mut kept = 0;
        for (id, bytes) in self.core.records(session::SESSIONS)? {
            let Ok(stored) = serde_json::from_slice::<StoredSession>(&bytes) else {
                warn!(client_id = %id, "unreadable session record; removed");
                self.core.put_record(session::SESSIONS, &id, None)?;
                continue;
            };
            let since = stored.disconnected_ms.unwrap_or(now);
            if stored.expiry != u32::MAX && since + i64::from(stored.expiry) * 1000 <= now {
                self.drop_session_storage(&id);
                continue;
            }
            let s = Session::new(&id);
            {
                let mut st = s.lock();
                st.persistent = true;
                st.expiry = stored.expiry;
                st.version = Some(if stored.version == 5 {
                    Version::V5
                } else {
                    Version::V3
                });
                st.queue = self.core.queue(&queue_name(&id));
                st.pubrel = stored.pubrel.iter().copied().collect();
            }
            for sub in stored.subscriptions {
                self.add_subscription(&s, sub);
            }
            if stored.expiry != u32::MAX {
                let left = (since + i64::from(stored.expiry) * 1000 - now).max(0) as u64;
                self.schedule_expiry(&s, Duration::from_millis(left));
            }
            self.lock_sessions().insert(id, s);
            kept += 1;
        }
        if kept > 0 {
            info!(sessions = kept, "persistent MQTT sessions restored");
        }
        Ok(())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a connection to the session of `client_id`, taking it over from a connection
    /// that holds it. Returns the session, whether a stored session was resumed, and the
    /// live buffer's receiving end.
    pub async fn attach(
        self: &Arc<Self>,
        client_id: &str,
        clean_start: bool,
        persistent: bool,
        expiry: u32,
        version: Version,
        conn: u64,
    ) -> (Arc<Session>, bool, mpsc::Receiver<Outgoing>, Arc<Notify>) {
        // A will waiting for its delay is cancelled when the client comes back.
        if let Some(w) = self
            .wills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client_id)
        {
            w.abort();
        }
        let s = self
            .lock_sessions()
            .entry(client_id.to_string())
            .or_insert_with(|| Session::new(client_id))
            .clone();
        // Take the session over from another connection, waiting (bounded) until it detached.
        for _ in 0..50 {
            let wait = s.detached.notified();
            let kick = s.lock().link.as_ref().map(|l| l.kick.clone());
            match kick {
                None => break,
                Some(k) => {
                    k.notify_one();
                    let _ = tokio::time::timeout(Duration::from_millis(40), wait).await;
                }
            }
        }
        if clean_start {
            self.clear_session(&s);
        }
        let (tx, rx) = mpsc::channel(self.config.max_queued_messages.max(16));
        let kick = Arc::new(Notify::new());
        let present;
        {
            let mut st = s.lock();
            present = !clean_start && st.persistent;
            st.persistent = persistent;
            st.expiry = expiry;
            st.version = Some(version);
            st.link = Some(Link {
                conn,
                live: tx,
                kick: kick.clone(),
            });
        }
        if persistent && s.lock().queue.is_none() {
            let settings = QueueSettings {
                max_length: Some(self.config.max_queued_messages_persistent),
                overflow: Overflow::DropNew,
                durable: true,
                ..Default::default()
            };
            match self
                .core
                .declare_queue(&queue_name(client_id), settings, Vec::new())
            {
                Ok((q, _)) => s.lock().queue = Some(q),
                Err(e) => {
                    warn!(client_id, error = %e, "cannot create the session queue; QoS 1/2 messages are not kept while away")
                }
            }
        }
        if persistent {
            self.store_session(&s, None);
        }
        (s, present, rx, kick)
    }

    /// Ends a connection's hold on its session: a session that ends with its connection is
    /// removed; a persistent one is stored and expires later.
    pub fn detach(self: &Arc<Self>, s: &Arc<Session>, conn: u64) {
        let (persistent, expiry) = {
            let mut st = s.lock();
            if st.link.as_ref().is_some_and(|l| l.conn != conn) {
                return; // already taken over
            }
            st.link = None;
            st.detaches += 1;
            (st.persistent && st.expiry > 0, st.expiry)
        };
        s.detached.notify_waiters();
        if persistent {
            self.store_session(s, Some(now_ms()));
            if expiry != u32::MAX {
                self.schedule_expiry(s, Duration::from_secs(u64::from(expiry)));
            }
        } else {
            self.end_session(s);
        }
    }

    fn schedule_expiry(self: &Arc<Self>, s: &Arc<Session>, after: Duration) {
        let b = Arc::downgrade(self);
        let detaches = s.lock().detaches;
        let s = Arc::downgrade(s);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let (Some(b), Some(s)) = (b.upgrade(), s.upgrade()) else {
                return;
            };
            // Only if it stayed away since: a client that came back (and maybe left again,
            // which set a timer of its own) keeps the session.
            let stayed = {
                let st = s.lock();
                st.link.is_none() && st.detaches == detaches
            };
            if stayed {
                b.end_session(&s);
            }
        });
    }

    /// Removes a session entirely: subscriptions, queue, stored record.
    pub fn end_session(self: &Arc<Self>, s: &Arc<Session>) {
        self.clear_session(s);
        let mut map = self.lock_sessions();
        if map.get(&s.client_id).is_some_and(|x| Arc::ptr_eq(x, s)) && s.lock().link.is_none() {
            map.remove(&s.client_id);
        }
    }

    /// Forgets a session's subscriptions and queued messages (clean start, expiry).
    fn clear_session(self: &Arc<Self>, s: &Arc<Session>) {
        let filters: Vec<String> = s.lock().subs.keys().cloned().collect();
        for f in filters {
            self.remove_subscription(s, &f);
        }
        let had_queue = {
            let mut st = s.lock();
            st.persistent = false;
            st.inbound_qos2.clear();
            st.pubrel.clear();
            st.queue.take().is_some()
        };
        let _ = had_queue;
        self.drop_session_storage(&s.client_id);
    }

    fn drop_session_storage(&self, client_id: &str) {
        if self.core.queue(&queue_name(client_id)).is_some() {
            if let Err(e) = self.core.delete_queue(&queue_name(client_id)) {
                warn!(client_id, error = %e, "could not delete the session queue");
            }
        }
        if let Err(e) = self.core.put_record(session::SESSIONS, client_id, None) {
            warn!(client_id, error = %e, "could not delete the session record");
        }
    }

    /// Stores a persistent session's record (durable when it returns).
    pub fn store_session(&self, s: &Session, disconnected_ms: Option<i64>) {
        let stored = s.stored(disconnected_ms);
        match serde_json::to_vec(&stored) {
            Ok(bytes) => {
                if let Err(e) = self
                    .core
                    .put_record(session::SESSIONS, &s.client_id, Some(&bytes))
                {
                    warn!(client_id = %s.client_id, error = %e, "could not store the session");
                }
            }
            Err(e) => warn!(error = %e, "could not encode the session"),
        }
    }

    /// Adds (or replaces) a subscription of a session in the router. Returns whether it is
    /// new (for retain handling 1).
    pub fn add_subscription(&self, s: &Arc<Session>, sub: Subscription) -> bool {
        let existed = self.remove_subscription(s, &sub.filter);
        let filter = sub.filter.clone();
        let router_id = match topics::shared(&filter) {
            Some((group, f)) => {
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                let key = (group.to_string(), f.to_string());
                let g = shared.entry(key).or_insert_with(|| {
                    let g = Arc::new(SharedGroup::default());
                    let pattern = topics::filter_pattern(f).unwrap_or_default();
                    let id = self.core.router().subscribe(&pattern, g.clone(), 0);
                    (g, id)
                });
                g.0.members
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Arc::downgrade(s), filter.clone()));
                None
            }
            None => match topics::filter_pattern(&filter) {
                Ok(p) => Some(
                    self.core
                        .router()
                        .subscribe(&p, s.sink(), session::tag(&filter)),
                ),
                Err(_) => None,
            },
        };
        s.lock().subs.insert(filter, (sub, router_id));
        !existed
    }

    /// Removes a subscription of a session. Returns whether it existed.
    pub fn remove_subscription(&self, s: &Arc<Session>, filter: &str) -> bool {
        let Some((_, router_id)) = s.lock().subs.remove(filter) else {
            return false;
        };
        if let Some(id) = router_id {
            self.core.router().unsubscribe(id);
        }
        if let Some((group, f)) = topics::shared(filter) {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let key = (group.to_string(), f.to_string());
            if let Some((g, id)) = shared.get(&key) {
                let empty = {
                    let mut m = g.members.lock().unwrap_or_else(|e| e.into_inner());
                    m.retain(|(w, fl)| {
                        !(w.as_ptr() == Arc::as_ptr(s) && fl == filter) && w.strong_count() > 0
                    });
                    m.is_empty()
                };
                if empty {
                    self.core.router().unsubscribe(*id);
                    shared.remove(&key);
                }
            }
        }
        true
    }

    /// Where a PUBLISH to `topic` is written, and its record key (`client_key` when no
    /// mapping rule gives one and the key policy uses client ids).
    pub fn target(
        &self,
        topic: &str,
        client_key: Option<&str>,
    ) -> Result<(Target, Option<Bytes>), PublishError> {
        let target = self
            .mapping
            .target(topic)
            .map_err(|e| PublishError::Topic(e.to_string()))?;
        let key = target.key.as_deref().or(match self.config.key {
            KeyPolicy::ClientId => client_key,
            KeyPolicy::None => None,
        });
        let key = key.map(|k| Bytes::copy_from_slice(k.as_bytes()));
        Ok((target, key))
    }

    /// The record a PUBLISH becomes (value = the payload unchanged, properties as headers).
    pub fn record(&self, p: &Publish, target: &Target, key: Option<Bytes>, now: i64) -> Record {
        Record {
            timestamp: now,
            key,
            value: Some(p.payload.clone()),
            headers: props::to_headers(
                &p.props,
                p.qos,
                p.retain,
                target.topic_header.then_some(p.topic.as_str()),
                now,
            ),
            ..Default::default()
        }
    }

    /// Sets or clears the retained message of a retained PUBLISH (durable when it returns).
    pub fn retain(&self, p: &Publish, now: i64) -> Result<(), PublishError> {
        let msg = (!p.payload.is_empty()).then(|| RetainedMsg {
            qos: p.qos,
            payload: p.payload.clone(),
            props: p.props.clone(),
            expires_at: p.props.message_expiry.map(|s| now + i64::from(s) * 1000),
        });
        crate::blocking(|| self.retained.set(&p.topic, msg))
            .map_err(|e| PublishError::Storage(e.to_string()))
    }

    /// Appends records of one target in one batch. Creating a new stream writes the metadata
    /// store, so only then does this step off the async runtime.
    pub fn append(
        &self,
        stream: &str,
        key: Option<&[u8]>,
        records: &[Record],
        origin: u64,
    ) -> Result<AppendOutcome, PublishError> {
        let go = || {
            self.core
                .append_records(stream, key, origin as u32, records, origin)
                .map_err(|e| PublishError::Storage(e.to_string()))
        };
        if self.core.stream(stream).is_some() {
            go()
        } else {
            crate::blocking(go)
        }
    }

    /// Writes one message to its stream (wills; connections batch their publishes).
    pub fn publish(
        &self,
        p: &Publish,
        key: Option<&str>,
        origin: u64,
    ) -> Result<AppendOutcome, PublishError> {
        let now = now_ms();
        let (target, key) = self.target(&p.topic, key)?;
        if p.retain {
            self.retain(p, now)?;
        }
        let record = self.record(p, &target, key.clone(), now);
        self.append(&target.stream, key.as_deref(), &[record], origin)
    }

    /// Publishes a will now, or after its delay (cancelled if the client comes back first).
    /// The delay is cut to the session's expiry: the will goes when the session ends.
    pub fn schedule_will(self: &Arc<Self>, client_id: &str, will: Will, session_expiry: u32) {
        let delay = will.delay.min(session_expiry);
        if delay == 0 {
            self.publish_will(client_id, &will);
            return;
        }
        let b = Arc::downgrade(self);
        let id = client_id.to_string();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            if let Some(b) = b.upgrade() {
                b.wills
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                b.publish_will(&id, &will);
            }
        });
        if let Some(old) = self
            .wills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client_id.to_string(), task)
        {
            old.abort();
        }
    }

    fn publish_will(&self, client_id: &str, will: &Will) {
        let p = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic.clone(),
            packet_id: None,
            payload: will.payload.clone(),
            props: will.props.clone(),
        };
        match self.publish(&p, Some(client_id), 0) {
            Ok(_) => info!(client_id, topic = %will.topic, "will published"),
            Err(e) => warn!(client_id, error = %e, "could not publish the will"),
        }
    }
}

/// Why a publish was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The topic cannot be stored (its stream name would be too long).
    #[error("{0}")]
    Topic(String),
    /// The core refused or failed the write.
    #[error("storage: {0}")]
    Storage(String),
}
