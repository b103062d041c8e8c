//! Sessions: a client id's subscriptions and what is queued for it, which outlive a
//! connection when the client asks (3.1.1 clean session 0, 5.0 session expiry > 0).
//!
//! A session is one sink of the core's router for all its subscriptions, so overlapping
//! subscriptions give one copy, at the highest QoS they grant, with every subscription
//! identifier. What it receives goes:
//! - to the connected client's bounded live buffer (QoS 0, and everything for sessions that
//!   end with their connection), dropped when the buffer is full (as Mosquitto drops past
//!   `max_queued_messages`);
//! - for a persistent session, QoS 1 and 2 messages into its durable queue in the core
//!   (references into the streams, bounded by `max_queued_messages_persistent`), delivered in
//!   order when the client is connected, kept while it is away and across restarts.
//!
//! The subscriptions of a persistent session are stored in the metadata store, so a restarted
//! broker re-registers them and keeps queueing for clients that are away.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use core_stream::log::DurableTicket;
use core_stream::queue::Queue;
use core_stream::router::{Refusal, Routed, Sink, SubscriptionId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use crate::packet::{SubscribeFilter, Version};
use crate::props;

/// Metadata-store space of persistent sessions.
pub const SESSIONS: &str = "mqtt-session";

/// One subscription of a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subscription {
    /// The filter as the client sent it (a shared one includes `$share/group/`).
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// Skip the client's own publishes.
    pub no_local: bool,
    /// Keep the RETAIN flag as published.
    pub retain_as_published: bool,
    /// Retain handling (0, 1, 2).
    pub retain_handling: u8,
    /// Subscription identifier (5.0).
    pub id: Option<u32>,
}

impl Subscription {
    /// From a SUBSCRIBE's filter and identifier.
    pub fn new(f: &SubscribeFilter, id: Option<u32>) -> Self {
        Self {
            filter: f.filter.clone(),
            qos: f.qos,
            no_local: f.no_local,
            retain_as_published: f.retain_as_published,
            retain_handling: f.retain_handling,
            id,
        }
    }
}

/// A persistent session as the metadata store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StoredSession {
    /// 5 for MQTT 5, else 4.
    pub version: u8,
    /// Session expiry interval (s); `u32::MAX` = never.
    pub expiry: u32,
    /// Subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// When the client went away (ms since the epoch), if it is away.
    pub disconnected_ms: Option<i64>,
    /// Outbound QoS 2 packet ids that got PUBREC and wait for PUBCOMP (PUBREL is resent).
    pub pubrel: Vec<u16>,
}

/// A message for a connected client, decided by the session's subscriptions.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The record.
    pub routed: Arc<Routed>,
    /// QoS to deliver at.
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of every matching subscription.
    pub sub_ids: Vec<u32>,
}

/// What a queued entry carries besides its record: QoS, retain flag, subscription ids and the
/// topic (the routing name; for keyed streams it cannot be told from the stream).
pub fn attachment(qos: u8, retain: bool, sub_ids: &[u32], routing_name: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + sub_ids.len() * 4 + routing_name.len());
    b.put_u8(qos);
    b.put_u8(retain as u8);
    b.put_u16(sub_ids.len() as u16);
    for id in sub_ids {
        b.put_u32(*id);
    }
    b.put_slice(routing_name.as_bytes());
    b.freeze()
}

/// Reads an [`attachment`]: `(qos, retain, sub ids, routing name)`.
pub fn read_attachment(mut a: Bytes) -> Option<(u8, bool, Vec<u32>, String)> {
    if a.remaining() < 4 {
        return None;
    }
    let qos = a.get_u8();
    let retain = a.get_u8() != 0;
    let n = a.get_u16() as usize;
    if a.remaining() < n * 4 {
        return None;
    }
    let ids = (0..n).map(|_| a.get_u32()).collect();
    Some((qos, retain, ids, String::from_utf8(a.to_vec()).ok()?))
}

/// The connection currently attached to a session.
#[derive(Debug)]
pub struct Link {
    /// Its id (records it writes carry it as their origin).
    pub conn: u64,
    /// The live buffer.
    pub live: mpsc::Sender<Outgoing>,
    /// Notified when another connection takes the session over.
    pub kick: Arc<Notify>,
}

/// A session's mutable state.
#[derive(Debug, Default)]
pub struct State {
    /// Subscriptions by filter, with their router registration (none for shared ones, which
    /// the shared group registers).
    pub subs: BTreeMap<String, (Subscription, Option<SubscriptionId>)>,
    /// Persistent: outlives its connection.
    pub persistent: bool,
    /// Session expiry (s).
    pub expiry: u32,
    /// Protocol version of the last connection.
    pub version: Option<Version>,
    /// The durable queue of a persistent session.
    pub queue: Option<Arc<Queue>>,
    /// The attached connection.
    pub link: Option<Link>,
    /// Inbound QoS 2 packet ids stored and not yet released (a resent PUBLISH is not stored
    /// twice).
    pub inbound_qos2: HashSet<u16>,
    /// Outbound QoS 2 packet ids waiting for PUBCOMP.
    pub pubrel: BTreeSet<u16>,
    /// Messages dropped because a buffer or queue was full (logged when it first happens).
    pub dropped: u64,
    /// Times a connection detached: an expiry timer counts only for the detach that set it
    /// (the session expires its interval after the *last* disconnect).
    pub detaches: u64,
}

/// One client id's session.
#[derive(Debug)]
pub struct Session {
    /// Client id.
    pub client_id: String,
    /// State.
    pub state: Mutex<State>,
    /// Woken when the attached connection detaches.
    pub detached: Notify,
    /// This session as the router's sink: one sink for all its subscriptions, so overlapping
    /// ones give one copy.
    sink: Arc<dyn Sink>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: &str) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Session>| Self {
            client_id: client_id.to_string(),
            state: Mutex::new(State::default()),
            detached: Notify::new(),
            sink: Arc::new(SessionSink(me.clone())),
        })
    }

    /// The state, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This session as a router sink.
    pub fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }

    /// The session's record for the metadata store.
    pub fn stored(&self, disconnected_ms: Option<i64>) -> StoredSession {
        let st = self.lock();
        StoredSession {
            version: if st.version == Some(Version::V5) {
                5
            } else {
                4
            },
            expiry: st.expiry,
            subscriptions: st.subs.values().map(|(s, _)| s.clone()).collect(),
            disconnected_ms,
            pubrel: st.pubrel.iter().copied().collect(),
        }
    }

    /// Decides delivery of one routed record matching the subscriptions in `filters` (the
    /// router tags are indexes into them, see [`Session::tag`]).
    pub fn offer(
        &self,
        routed: &Arc<Routed>,
        subs: &[&Subscription],
    ) -> Result<Option<DurableTicket>, Refusal> {
        let mut st = self.lock();
        let own = st
            .link
            .as_ref()
            .is_some_and(|l| l.conn == routed.origin && l.conn != 0);
        let carried = props::from_headers(&routed.record.headers, core_stream::partition::now_ms());
        let mut qos: Option<u8> = None;
        let mut retain = false;
        let mut ids = Vec::new();
        for s in subs {
            if s.no_local && own {
                continue;
            }
            let q = s.qos.min(carried.qos);
            if qos.is_none_or(|old| q > old) {
                qos = Some(q);
            }
            retain |= s.retain_as_published && carried.retain;
            if let Some(id) = s.id {
                ids.push(id);
            }
        }
        let Some(qos) = qos else { return Ok(None) };
        if let Some(at) = carried.expires_at {
            if at <= core_stream::partition::now_ms() {
                return Ok(None);
            }
        }
        if qos > 0 && st.persistent {
            if let Some(q) = &st.queue {
                let att = attachment(qos, retain, &ids, &routed.routing_name);
                return q.enqueue(routed, att, carried.expires_at.unwrap_or(0));
            }
        }
        let msg = Outgoing {
            routed: routed.clone(),
            qos,
            retain,
            sub_ids: ids,
        };
        // QoS 0 to a session that is away is not kept.
        if let Some(l) = &st.link {
            if l.live.try_send(msg).is_err() {
                st.dropped += 1;
                if st.dropped == 1 || st.dropped.is_power_of_two() {
                    tracing::warn!(client_id = %self.client_id, dropped = st.dropped,
                        "subscriber too slow: its buffer is full, messages dropped");
                }
            }
        }
        Ok(None)
    }
}

/// Router tags of a session's subscriptions: the filter's position is not stable, so the tag
/// is a hash of the filter, looked up again on delivery.
pub fn tag(filter: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    filter.hash(&mut h);
    h.finish()
}

/// A session as a router sink (held weakly: a removed session stops receiving).
#[derive(Debug)]
struct SessionSink(Weak<Session>);

impl Sink for SessionSink {
    fn offer(&self, routed: &Arc<Routed>, tags: &[u64]) -> Result<Option<DurableTicket>, Refusal> {
        let Some(s) = self.0.upgrade() else {
            return Ok(None);
        };
        let subs: Vec<Subscription> = {
            let st = s.lock();
            st.subs
                .iter()
                .filter(|(f, _)| tags.contains(&tag(f)))
                .map(|(_, (sub, _))| sub.clone())
                .collect()
        };
        let refs: Vec<&Subscription> = subs.iter().collect();
        s.offer(routed, &refs)
    }
}

/// The sink of one shared subscription (`$share/group/filter`): each record goes to one
/// member, round robin among members whose buffers have room.
#[derive(Debug, Default)]
pub struct SharedGroup {
    /// Members: session and the full filter it subscribed with.
    pub members: Mutex<Vec<(Weak<Session>, String)>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Sink for SharedGroup {
    fn offer(&self, routed: &Arc<Routed>, _tags: &[u64]) -> Result<Option<DurableTicket>, Refusal> {
        let members: Vec<(Arc<Session>, String)> = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(w, f)| w.upgrade().map(|s| (s, f.clone())))
            .collect();
        if members.is_empty() {
            return Ok(None);
        }
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Prefer a connected member; a persistent one that is away still queues.
        let pick = (0..members.len())
            .map(|i| &members[(start + i) % members.len()])
            .find(|(s, _)| s.lock().link.is_some())
            .unwrap_or(&members[start % members.len()]);
        let (s, filter) = pick;
        let sub = s.lock().subs.get(filter).map(|(sub, _)| sub.clone());
        match sub {
            Some(sub) => s.offer(routed, &[&sub]),
            None => Ok(None),
        }
    }
}

/// Shared groups by `(group, filter)`.
pub type SharedGroups = HashMap<(String, String), (Arc<SharedGroup>, SubscriptionId)>;
