//! Bindings as the router's sinks. Each queue is one sink for all its bindings (a record
//! matching several gives one copy); each exchange that is the destination of
//! exchange-to-exchange bindings is one sink that routes on through its own bindings.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use core_stream::headers;
use core_stream::log::DurableTicket;
use core_stream::queue::Queue;
use core_stream::router::{Refusal, Routed, Sink};
use core_stream::Core;

use crate::error::AmqpError;
use crate::props;
use crate::topology::{exchange_level, Via};

/// Router tag of a queue's binding to the default exchange.
pub const DEFAULT_TAG: u64 = 0;

/// What a headers binding asks of a message's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// `any` (else `all`).
    pub any: bool,
    /// Arguments: key and the value wanted (`None`: present with any value).
    pub args: Vec<(Bytes, Option<Option<Bytes>>)>,
}

impl HeaderMatch {
    /// Reads `x-match` and the arguments of a headers binding.
    pub fn parse(arguments: &[u8]) -> Result<Self, AmqpError> {
        let mut any = false;
        let mut with_x = false;
        if let Some(e) = props::entries(arguments).find(|e| e.key == b"x-match") {
            match (e.ty, e.value) {
                (b'S', b"all") => {}
                (b'S', b"any") => any = true,
                (b'S', b"all-with-x") => with_x = true,
                (b'S', b"any-with-x") => {
                    any = true;
                    with_x = true;
                }
                (_, v) => {
                    return Err(AmqpError::precondition(format!(
                        "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                        String::from_utf8_lossy(v)
                    )))
                }
            }
        }
        let args = props::entries(arguments)
            .filter(|e| e.key != b"x-match" && (with_x || !e.key.starts_with(b"x-")))
            .map(|e| {
                let want = if e.ty == b'V' {
                    None
                } else {
                    // Tables and arrays have no header form: they never match.
                    Some(
                        props::render(e.ty, e.value)
                            .unwrap_or(Some(Bytes::from_static(b"\0table"))),
                    )
                };
                (Bytes::copy_from_slice(e.key), want)
            })
            .collect();
        Ok(Self { any, args })
    }

    /// Whether a record's headers satisfy the binding.
    pub fn matches(&self, hs: &[(Bytes, Option<Bytes>)]) -> bool {
        let found = |(k, want): &(Bytes, Option<Option<Bytes>>)| {
            hs.iter()
                .any(|(hk, hv)| hk == k && want.as_ref().is_none_or(|w| w == hv))
        };
        if self.any {
            self.args.iter().any(found)
        } else {
            self.args.iter().all(found)
        }
    }
}

/// How one binding decides, and how records it matches arrived.
#[derive(Debug, Clone)]
pub struct BindingMatch {
    /// A headers binding's test (none: the router pattern decides alone).
    pub headers: Option<HeaderMatch>,
    /// Its source exchange's kind of stream names.
    pub via: Via,
}

impl BindingMatch {
    fn wants(&self, r: &Routed) -> bool {
        self.headers
            .as_ref()
            .is_none_or(|m| m.matches(&r.record.headers))
    }
}

/// When a record expires, from its `expires-at` header (ms since the epoch).
pub fn expires_at(r: &Routed) -> Option<i64> {
    r.record
        .headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == headers::EXPIRES_AT.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok()?.parse().ok())
}

/// How a queue entry was routed, kept with it: how it arrived (see [`Via`]), and the
/// routing name when it is not the stream's.
pub fn entry_attachment(via: Via, r: &Routed) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + r.routing_name.len());
    b.put_u8(via as u8);
    if *r.routing_name != *r.stream {
        b.put_slice(r.routing_name.as_bytes());
    }
    b.freeze()
}

/// Reads [`entry_attachment`]: `(via, routing name if not the stream's)`.
pub fn read_attachment(a: &Bytes) -> (Via, Option<&str>) {
    let via = Via::from_u8(a.first().copied().unwrap_or(0));
    let name = a.get(1..).filter(|n| !n.is_empty());
    (via, name.and_then(|n| std::str::from_utf8(n).ok()))
}

/// A queue's bindings as one router sink.
#[derive(Debug)]
pub struct QueueSink {
    /// The queue.
    pub queue: Arc<Queue>,
    /// Bindings by router tag.
    pub bindings: RwLock<HashMap<u64, BindingMatch>>,
}

impl QueueSink {
    /// A sink for `queue` with no bindings yet.
    pub fn new(queue: Arc<Queue>) -> Arc<Self> {
        Arc::new(Self {
            queue,
            bindings: RwLock::new(HashMap::new()),
        })
    }
}

impl Sink for QueueSink {
    fn offer(&self, r: &Arc<Routed>, tags: &[u64]) -> Result<Option<DurableTicket>, Refusal> {
        let mut wanted = false;
        let mut via = Via::Default;
        {
            let b = self.bindings.read().unwrap_or_else(|e| e.into_inner());
            for t in tags {
                if *t == DEFAULT_TAG {
                    wanted = true;
                } else if let Some(m) = b.get(t).filter(|m| m.wants(r)) {
                    wanted = true;
                    if via != Via::Exchange {
                        via = m.via;
                    }
                }
            }
        }
        if !wanted {
            return Err(Refusal::NotWanted);
        }
        let deadline = expires_at(r).unwrap_or(0);
        let priority = r
            .record
            .headers
            .iter()
            .find(|(k, _)| k.as_ref() == props::PRIORITY.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok()?.parse::<u8>().ok())
            .unwrap_or(0);
        self.queue
            .enqueue_with_priority(r, entry_attachment(via, r), deadline, priority)
    }
}

thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Deepest chain of exchange-to-exchange bindings followed (cycles end here).
const MAX_HOPS: u32 = 8;

/// An exchange that is the destination of exchange-to-exchange bindings: records matching
/// those bindings are routed on through the exchange's own bindings.
#[derive(Debug)]
pub struct ExchangeSink {
    /// The destination exchange.
    pub name: String,
    /// The core (for its router).
    pub core: Weak<Core>,
    /// Bindings by router tag.
    pub bindings: RwLock<HashMap<u64, BindingMatch>>,
}

impl Sink for ExchangeSink {
    fn offer(&self, r: &Arc<Routed>, tags: &[u64]) -> Result<Option<DurableTicket>, Refusal> {
        let wanted = {
            let b = self.bindings.read().unwrap_or_else(|e| e.into_inner());
            tags.iter()
                .filter_map(|t| b.get(t).filter(|m| m.wants(r)))
                .map(|m| m.via)
                .next()
        };
        let Some(core) = self.core.upgrade() else {
            return Err(Refusal::NotWanted);
        };
        let depth = DEPTH.with(|d| d.get());
        let Some(via) = wanted.filter(|_| depth < MAX_HOPS) else {
            return Err(Refusal::NotWanted);
        };
        // The same key, under this exchange's name.
        let rest = match via {
            Via::Exchange => r.routing_name.split_once('.').map(|(_, k)| k),
            _ => Some(&*r.routing_name),
        };
        let mut name = match Via::of(&self.name) {
            Via::Exchange => exchange_level(&self.name),
            _ => String::new(),
        };
        if let Some(k) = rest {
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(k);
        }
        DEPTH.with(|d| d.set(depth + 1));
        let mut ticket: Option<DurableTicket> = None;
        let mut taken = false;
        let mut full = false;
        for (sink, tags) in core.router().matches(&name) {
            match sink.offer(r, &tags) {
                Ok(t) => {
                    taken = true;
                    if let Some(t) = t {
                        ticket.get_or_insert_with(DurableTicket::default).join(t);
                    }
                }
                Err(Refusal::Full) => full = true,
                Err(Refusal::NotWanted) => {}
            }
        }
        DEPTH.with(|d| d.set(depth));
        match (taken, full) {
            (true, _) => Ok(ticket),
            (false, true) => Err(Refusal::Full),
            (false, false) => Err(Refusal::NotWanted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(items: &[(&str, &str)]) -> Vec<(Bytes, Option<Bytes>)> {
        items
            .iter()
            .map(|(k, v)| (Bytes::from(k.to_string()), Some(Bytes::from(v.to_string()))))
            .collect()
    }

    #[test]
    fn headers_bindings_match_all_or_any() {
        let all = props::build_table([
            (&b"format"[..], b'S', &b"pdf"[..]),
            (b"type", b'S', b"report"),
        ]);
        let m = HeaderMatch::parse(&all).unwrap();
        assert!(m.matches(&hs(&[("format", "pdf"), ("type", "report"), ("x", "y")])));
        assert!(!m.matches(&hs(&[("format", "pdf")])));
        let any = props::build_table([
            (&b"x-match"[..], b'S', &b"any"[..]),
            (b"format", b'S', b"pdf"),
            (b"n", b'I', &5i32.to_be_bytes()[..]),
            (b"x-skip", b'S', b"1"),
        ]);
        let m = HeaderMatch::parse(&any).unwrap();
        assert!(m.matches(&hs(&[("n", "5")])));
        assert!(!m.matches(&hs(&[("format", "zip"), ("x-skip", "1")])));
        let present = props::build_table([(&b"k"[..], b'V', &b""[..])]);
        assert!(HeaderMatch::parse(&present)
            .unwrap()
            .matches(&hs(&[("k", "anything")])));
        let bad = props::build_table([(&b"x-match"[..], b'S', &b"foo"[..])]);
        assert_eq!(HeaderMatch::parse(&bad).unwrap_err().code, 406);
        let none_any = props::build_table([(&b"x-match"[..], b'S', &b"any"[..])]);
        assert!(!HeaderMatch::parse(&none_any).unwrap().matches(&[]));
        assert!(HeaderMatch::parse(&[0, 0, 0, 0]).unwrap().matches(&[]));
    }
}
