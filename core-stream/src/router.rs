//! The subscription router: one index of every subscription (MQTT topic filters, AMQP
//! bindings), matched once per append whichever protocol wrote the records, pushing the
//! matching records to each subscriber's sink.
//!
//! Records are matched by their *routing name*: dot-separated segments like a stream name
//! (see [`crate::naming`]). For most streams it is the stream name. A stream can instead have
//! a [`RoutingTemplate`] (many MQTT topics mapped into one keyed stream): its records are
//! routed by the name in a header they carry, or else by the template with the record key in
//! place (`devices.{key}.telemetry`).
//!
//! Patterns use `*` for exactly one segment and `#` for zero or more (AMQP topic rules; MQTT's
//! `+` and `#` map onto them). A pattern starting with a wildcard does not match a name whose
//! first segment stands for a `$` level (MQTT's rule for system topics).
//!
//! Cost follows the subscriptions: an append to a stream no pattern can match costs one walk
//! of the index and nothing else; records are decoded only when some pattern may match.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::batch::{self, Record};
use crate::log::{DurableTicket, PartitionLog};
use crate::naming;

/// A record matched by at least one subscription, shared by every sink it goes to.
#[derive(Debug)]
pub struct Routed {
    /// Stream the record is stored in.
    pub stream: Arc<str>,
    /// Partition index.
    pub partition: i32,
    /// The record (offset, timestamp, key, value, headers).
    pub record: Record,
    /// The name it was matched by (dot-separated segments).
    pub routing_name: Arc<str>,
    /// Batch CRC-32C of the stored batch holding the record: a fingerprint that lets a queue
    /// check, after a crash, that its reference still points at this record.
    pub batch_crc: u32,
    /// The partition, to wait until the record is durable before handing it out.
    pub log: Arc<dyn PartitionLog>,
    /// The writer's connection id, or 0 (see [`crate::Core::append_from`]).
    pub origin: u64,
}

impl Routed {
    /// Waits until the record is durable (readers never see what a crash could take back).
    pub async fn durable(&self) {
        if self.log.high_watermark() > self.record.offset {
            return;
        }
        let mut hw = self.log.watch_high_watermark();
        let _ = hw.wait_for(|h| *h > self.record.offset).await;
    }
}

/// Why a sink did not take a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The subscriber's queue is full and its policy is to refuse new records (the writer
    /// should be told, e.g. AMQP `x-overflow=reject-publish`).
    Full,
    /// The sink looked and does not want this record (e.g. an AMQP headers binding whose
    /// arguments the record's headers do not match): it does not count as routed.
    NotWanted,
}

/// Where a subscription's matching records go: a connected subscriber's bounded buffer, or a
/// durable queue.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Takes one record that matched this sink's subscriptions carrying `tags` (every matching
    /// subscription of this sink, so overlapping subscriptions give one copy). Never blocks.
    /// Returns a ticket when taking it wrote something durable the writer must wait for.
    fn offer(&self, record: &Arc<Routed>, tags: &[u64]) -> Result<Option<DurableTicket>, Refusal>;
}

/// Handle of one subscription in the router.
pub type SubscriptionId = u64;

#[derive(Debug, Clone)]
struct Entry {
    id: SubscriptionId,
    sink: Arc<dyn Sink>,
    tag: u64,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Subscriptions whose pattern ends here.
    here: Vec<Entry>,
    /// Subscriptions whose pattern ends with `#` after this node.
    hash: Vec<Entry>,
    /// Patterns with `#` here followed by more segments (AMQP topic bindings like `a.#.b`):
    /// the rest of the pattern, matched against every suffix of the rest of the name.
    hash_then: Option<Box<Node>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
            && self.hash_then.is_none()
    }

    fn insert(&mut self, segs: &[&str], e: Entry) {
        match segs.split_first() {
            None => self.here.push(e),
            Some((&"#", [])) => self.hash.push(e),
            Some((&"#", rest)) => self
                .hash_then
                .get_or_insert_with(Default::default)
                .insert(rest, e),
            Some((&"*", rest)) => self
                .star
                .get_or_insert_with(Default::default)
                .insert(rest, e),
            Some((s, rest)) => self
                .children
                .entry((*s).into())
                .or_default()
                .insert(rest, e),
        }
    }

    fn remove(&mut self, segs: &[&str], id: SubscriptionId) -> bool {
        let found = match segs.split_first() {
            None => remove_id(&mut self.here, id),
            Some((&"#", [])) => remove_id(&mut self.hash, id),
            Some((&"#", rest)) => match &mut self.hash_then {
                Some(n) => {
                    let f = n.remove(rest, id);
                    if n.is_empty() {
                        self.hash_then = None;
                    }
                    f
                }
                None => false,
            },
            Some((&"*", rest)) => match &mut self.star {
                Some(n) => {
                    let f = n.remove(rest, id);
                    if n.is_empty() {
                        self.star = None;
                    }
                    f
                }
                None => false,
            },
            Some((s, rest)) => match self.children.get_mut(*s) {
                Some(n) => {
                    let f = n.remove(rest, id);
                    if n.is_empty() {
                        self.children.remove(*s);
                    }
                    f
                }
                None => false,
            },
        };
        found
    }

    /// Every entry whose pattern matches `name` (`first`: at the root, for the `$` rule).
    fn collect<'a>(&'a self, name: &[&str], first: bool, dollar: bool, out: &mut Vec<&'a Entry>) {
        let wild_ok = !(first && dollar);
        if wild_ok {
            out.extend(self.hash.iter());
            if let Some(n) = &self.hash_then {
                for skip in 0..=name.len() {
                    n.collect(&name[skip..], false, dollar, out);
                }
            }
        }
        match name.split_first() {
            None => out.extend(self.here.iter()),
            Some((seg, rest)) => {
                if let Some(n) = self.children.get(*seg) {
                    n.collect(rest, false, dollar, out);
                }
                if let (Some(n), true) = (&self.star, wild_ok) {
                    n.collect(rest, false, dollar, out);
                }
            }
        }
    }

    /// Whether some pattern may match a name shaped like `template` (where `None` segments
    /// stand for any one segment).
    fn may_match(&self, template: &[Option<&str>]) -> bool {
        if !self.hash.is_empty() || self.hash_then.is_some() {
            return true;
        }
        match template.split_first() {
            None => !self.here.is_empty(),
            Some((seg, rest)) => {
                if self.star.as_ref().is_some_and(|n| n.may_match(rest)) {
                    return true;
                }
                match seg {
                    Some(s) => self.children.get(*s).is_some_and(|n| n.may_match(rest)),
                    None => self.children.values().any(|n| n.may_match(rest)),
                }
            }
        }
    }
}

fn remove_id(v: &mut Vec<Entry>, id: SubscriptionId) -> bool {
    let before = v.len();
    v.retain(|e| e.id != id);
    v.len() != before
}

/// How the records of one stream get their routing names when it is not the stream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTemplate {
    /// Segments of the routing name; `None` is the record key (as one level).
    pub segments: Vec<Option<String>>,
    /// A record header holding the routing name's levels joined by `/` (the full MQTT topic),
    /// used in preference to the template when present.
    pub header: Option<String>,
}

/// One append as the router sees it.
#[derive(Debug)]
pub struct Appended<'a> {
    /// Stream appended to.
    pub stream: &'a str,
    /// Partition index.
    pub partition: i32,
    /// The partition's log (deliveries wait on its high watermark).
    pub log: &'a Arc<dyn PartitionLog>,
    /// The batches as the writer sent them.
    pub data: &'a [u8],
    /// Their validated headers.
    pub headers: &'a [batch::BatchHeader],
    /// Offset the first record was stored at.
    pub base_offset: i64,
    /// The writer's connection id, or 0.
    pub origin: u64,
    /// The batches are of a committed transaction: route their transactional records (an
    /// append routes only non-transactional ones; a transaction's records are routed when its
    /// commit marker is written, and an aborted one's never).
    pub committed: bool,
}

/// What routing one append did.
#[derive(Debug, Default)]
pub struct RouteOutcome {
    /// Durability tickets of the sinks that wrote something (queue entries).
    pub tickets: Vec<DurableTicket>,
    /// Indexes (in append order, from 0) of the records some sink took.
    pub routed: Vec<u32>,
    /// Indexes of the records a full sink refused (`reject-publish`).
    pub refused: Vec<u32>,
}

/// The index of subscriptions. One per core.
#[derive(Debug, Default)]
pub struct Router {
    root: RwLock<Node>,
    patterns: RwLock<HashMap<SubscriptionId, String>>,
    templates: RwLock<HashMap<String, RoutingTemplate>>,
    next_id: AtomicU64,
}

/// Splits a pattern or name into its segments.
fn segments(s: &str) -> Vec<&str> {
    s.split('.').collect()
}

impl Router {
    /// Adds a subscription: records whose routing name matches `pattern` go to `sink`, marked
    /// with `tag` (the sink's own meaning: an MQTT subscription identifier, a binding).
    pub fn subscribe(&self, pattern: &str, sink: Arc<dyn Sink>, tag: u64) -> SubscriptionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Entry { id, sink, tag };
        self.root
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(&segments(pattern), entry);
        self.patterns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pattern.to_string());
        id
    }

    /// Removes a subscription. Returns false if it was not there.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(p) = self
            .patterns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        else {
            return false;
        };
        self.root
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&segments(&p), id)
    }

    /// Subscriptions in the index.
    pub fn len(&self) -> usize {
        self.patterns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// True when nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives `stream`'s records routing names from `template` instead of the stream name.
    pub fn set_template(&self, stream: &str, template: RoutingTemplate) {
        self.templates
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream.to_string(), template);
    }

    /// The routing template of a stream, if it has one.
    pub fn template(&self, stream: &str) -> Option<RoutingTemplate> {
        self.templates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned()
    }

    /// `(sink, tags)` of every subscription matching `name`, one entry per sink.
    pub fn matches(&self, name: &str) -> Vec<(Arc<dyn Sink>, Vec<u64>)> {
        let segs = segments(name);
        let dollar = segs.first().is_some_and(|s| naming::is_dollar_segment(s));
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        let mut found = Vec::new();
        root.collect(&segs, true, dollar, &mut found);
        group(found)
    }

    /// Routes the records of one append (see [`Appended`]). Returns the durability tickets of
    /// the sinks that wrote something, and whether some sink refused a record because it was
    /// full. Decodes (and copies) the records only when a pattern may match.
    pub fn route(&self, a: Appended<'_>) -> RouteOutcome {
        let Appended {
            stream,
            partition,
            log,
            data,
            headers,
            base_offset,
            origin,
            committed,
        } = a;
        let mut out = RouteOutcome::default();
        if self.is_empty() {
            return out;
        }
        let template = self.template(stream);
        let candidates = match &template {
            None => {
                let m = self.matches(stream);
                if m.is_empty() {
                    return out;
                }
                Some(m)
            }
            Some(t) => {
                let shape: Vec<Option<&str>> = t.segments.iter().map(|s| s.as_deref()).collect();
                let root = self.root.read().unwrap_or_else(|e| e.into_inner());
                if !root.may_match(&shape) && t.header.is_none() {
                    return out;
                }
                None
            }
        };
        // The stored copy has offsets assigned; rebuild them on one copy of the input.
        let mut buf = bytes::BytesMut::from(data);
        let (mut pos, mut next) = (0usize, base_offset);
        for h in headers {
            batch::set_base_offset(&mut buf[pos..], next);
            pos += h.size;
            next += i64::from(h.last_offset_delta) + 1;
        }
        let mut rest = buf.freeze();
        let stream_arc: Arc<str> = Arc::from(stream);
        let mut index = 0u32;
        for h in headers {
            let one = rest.split_to(h.size);
            if h.is_control() || (h.is_transactional() && !committed) {
                index += u32::try_from(h.last_offset_delta).map_or(0, |d| d + 1);
                continue;
            }
            let crc = u32::from_be_bytes([one[17], one[18], one[19], one[20]]);
            let records = match batch::decode_records(&one) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(stream, partition, error = %e, "records not routed: cannot decode their batch");
                    index += u32::try_from(h.last_offset_delta).map_or(0, |d| d + 1);
                    continue;
                }
            };
            for record in records {
                let i = index;
                index += 1;
                let (name, matched) = match (&template, &candidates) {
                    (None, Some(m)) => (stream_arc.clone(), m.clone()),
                    (Some(t), _) => {
                        let Some(name) = templated_name(t, &record) else {
                            continue;
                        };
                        let m = self.matches(&name);
                        (Arc::from(name), m)
                    }
                    (None, None) => continue,
                };
                if matched.is_empty() {
                    continue;
                }
                let routed = Arc::new(Routed {
                    stream: stream_arc.clone(),
                    partition,
                    record,
                    routing_name: name,
                    batch_crc: crc,
                    log: log.clone(),
                    origin,
                });
                let mut taken = false;
                let mut full = false;
                for (sink, tags) in &matched {
                    match sink.offer(&routed, tags) {
                        Ok(t) => {
                            taken = true;
                            out.tickets.extend(t);
                        }
                        Err(Refusal::Full) => full = true,
                        Err(Refusal::NotWanted) => {}
                    }
                }
                if taken {
                    out.routed.push(i);
                }
                if full {
                    out.refused.push(i);
                }
            }
        }
        out
    }
}

/// The routing name of a record of a templated stream: from its header if it has one, else
/// the template with its key in place (`None` when it has neither).
fn templated_name(t: &RoutingTemplate, r: &Record) -> Option<String> {
    if let Some(h) = &t.header {
        if let Some((_, Some(v))) = r.headers.iter().find(|(k, _)| k.as_ref() == h.as_bytes()) {
            let topic = std::str::from_utf8(v).ok()?;
            return naming::stream_name(topic.split('/')).ok();
        }
    }
    let key = std::str::from_utf8(r.key.as_deref()?).ok()?;
    let mut out = String::new();
    for (i, seg) in t.segments.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match seg {
            Some(s) => out.push_str(s),
            None => naming::encode_segment(key, &mut out),
        }
    }
    Some(out)
}

/// Groups entries by sink (pointer identity), keeping every tag once (a pattern with `#` in
/// the middle can match one name in several ways). Sorting keeps this O(n log n) for a topic
/// with many subscribers.
fn group(mut found: Vec<&Entry>) -> Vec<(Arc<dyn Sink>, Vec<u64>)> {
    let key = |e: &Entry| Arc::as_ptr(&e.sink) as *const () as usize;
    found.sort_by_key(|e| (key(e), e.id));
    found.dedup_by_key(|e| e.id);
    let mut out: Vec<(Arc<dyn Sink>, Vec<u64>)> = Vec::with_capacity(found.len());
    let mut last = None;
    for e in found {
        if last == Some(key(e)) {
            if let Some((_, tags)) = out.last_mut() {
                tags.push(e.tag);
            }
        } else {
            last = Some(key(e));
            out.push((e.sink.clone(), vec![e.tag]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<(String, Vec<u64>)>>);
    impl Sink for Collect {
        fn offer(&self, r: &Arc<Routed>, tags: &[u64]) -> Result<Option<DurableTicket>, Refusal> {
            self.0
                .lock()
                .unwrap()
                .push((r.routing_name.to_string(), tags.to_vec()));
            Ok(None)
        }
    }

    /// The tags per sink matching `name`, sorted (match order is not part of the contract).
    fn names(router: &Router, name: &str) -> Vec<Vec<u64>> {
        let mut v: Vec<Vec<u64>> = router
            .matches(name)
            .into_iter()
            .map(|(_, mut t)| {
                t.sort_unstable();
                t
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_match_segment_wise_and_one_copy_per_sink() {
        let r = Router::default();
        let a: Arc<dyn Sink> = Arc::new(Collect::default());
        let b: Arc<dyn Sink> = Arc::new(Collect::default());
        r.subscribe("sensors.*", a.clone(), 1);
        r.subscribe("sensors.#", a.clone(), 2);
        let id = r.subscribe("#", b.clone(), 3);
        r.subscribe("orders.*.new", b.clone(), 4);
        assert_eq!(names(&r, "sensors.temperature"), vec![vec![1, 2], vec![3]]);
        assert_eq!(names(&r, "sensors"), vec![vec![2], vec![3]]);
        assert_eq!(names(&r, "sensors.a.b"), vec![vec![2], vec![3]]);
        assert_eq!(names(&r, "orders.eu.new"), vec![vec![3, 4]]);
        assert!(r.unsubscribe(id));
        assert!(!r.unsubscribe(id));
        assert!(names(&r, "orders.eu.old").is_empty());
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn hash_in_the_middle_matches_zero_or_more_segments() {
        let r = Router::default();
        let a: Arc<dyn Sink> = Arc::new(Collect::default());
        let id = r.subscribe("x.a.#.b", a.clone(), 1);
        r.subscribe("x.#.#", a.clone(), 2);
        r.subscribe("x.*.#.c", a.clone(), 3);
        assert_eq!(names(&r, "x.a.b"), vec![vec![1, 2]]);
        assert_eq!(names(&r, "x.a.q.r.b"), vec![vec![1, 2]]);
        assert_eq!(names(&r, "x.a.q"), vec![vec![2]]);
        assert_eq!(names(&r, "x.a.c"), vec![vec![2, 3]]);
        assert_eq!(names(&r, "x.a.b.b"), vec![vec![1, 2]]);
        assert!(names(&r, "y.a.b").is_empty());
        assert!(r.unsubscribe(id));
        assert_eq!(names(&r, "x.a.b"), vec![vec![2]]);
    }

    #[test]
    fn leading_wildcards_do_not_match_dollar_names() {
        let r = Router::default();
        let a: Arc<dyn Sink> = Arc::new(Collect::default());
        r.subscribe("#", a.clone(), 1);
        r.subscribe("*.B", a.clone(), 2);
        let dollar = naming::stream_name(["$TopicA", "B"]).unwrap();
        assert!(names(&r, &dollar).is_empty());
        r.subscribe(&dollar, a.clone(), 3);
        r.subscribe(
            &format!("{}.#", dollar.split('.').next().unwrap()),
            a.clone(),
            4,
        );
        assert_eq!(names(&r, &dollar), vec![vec![3, 4]]);
    }

    #[test]
    fn template_streams_are_matched_by_key_or_header() {
        let r = Router::default();
        let t = RoutingTemplate {
            segments: vec![Some("devices".into()), None, Some("telemetry".into())],
            header: Some("mqtt.topic".into()),
        };
        let rec = |key: Option<&str>, header: Option<&str>| Record {
            key: key.map(|k| bytes::Bytes::copy_from_slice(k.as_bytes())),
            headers: header
                .map(|h| {
                    vec![(
                        bytes::Bytes::from_static(b"mqtt.topic"),
                        Some(bytes::Bytes::copy_from_slice(h.as_bytes())),
                    )]
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        assert_eq!(
            templated_name(&t, &rec(Some("d1"), None)).unwrap(),
            "devices.d1.telemetry"
        );
        assert_eq!(
            templated_name(&t, &rec(Some("x"), Some("devices/d 2/telemetry"))).unwrap(),
            "devices.__642032.telemetry"
        );
        assert!(templated_name(&t, &rec(None, None)).is_none());
        let a: Arc<dyn Sink> = Arc::new(Collect::default());
        r.subscribe("devices.d1.*", a, 1);
        let shape: Vec<Option<&str>> = t.segments.iter().map(|s| s.as_deref()).collect();
        assert!(r.root.read().unwrap().may_match(&shape));
        let other = [Some("other"), None];
        assert!(!r.root.read().unwrap().may_match(&other));
    }
}
