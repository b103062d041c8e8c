//! AMQP topology on streams: exchanges, queues and bindings, and the names they map to.
//!
//! - A publish to exchange `E` with routing key `R` is a record in stream `E.R`: the exchange
//!   name is one level, each word of the key (split on `.`) one more (levels are written by
//!   the naming rule of [`core_stream::naming`]; an empty key adds none). The default
//!   exchange's streams are the key's words alone, so a publish to queue `task_queue` through
//!   it is a record in stream `task_queue`, and a Kafka topic `orders.eu.new` is what queue
//!   `orders.eu.new` receives.
//! - A binding is a pattern in the core's router: direct `E.<words>`, topic `E.<words>` with
//!   `*` and `#` as wildcards, fanout and headers `E.#` (headers bindings then test the
//!   record's headers). Every queue is also bound to its own name (the default exchange).
//! - Exchange definitions and bindings are records in the metadata store; a queue's
//!   definition rides in the core queue's attachment.

use core_stream::naming;
use serde::{Deserialize, Serialize};

use crate::error::{exchange_ref, AmqpError};

/// The kinds of exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    /// Exact routing key.
    Direct,
    /// Every bound queue.
    Fanout,
    /// Words with `*` and `#`.
    Topic,
    /// Header values.
    Headers,
}

impl ExchangeKind {
    /// The kind named `s` (as `exchange.declare` names it).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => Self::Direct,
            "fanout" => Self::Fanout,
            "topic" => Self::Topic,
            "headers" => Self::Headers,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// An exchange as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Clients cannot publish to it.
    pub internal: bool,
    /// Arguments (field table with its length).
    #[serde(default)]
    pub arguments: Vec<u8>,
}

/// A queue's AMQP definition (kept in the core queue's attachment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Survives a restart.
    pub durable: bool,
    /// Owned by the declaring connection, deleted with it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Arguments (field table with its length).
    #[serde(default)]
    pub arguments: Vec<u8>,
}

/// A binding: `source` exchange → `destination` queue (or exchange).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BindingDef {
    /// Queue or exchange receiving.
    pub destination: String,
    /// True when the destination is an exchange.
    pub to_exchange: bool,
    /// Exchange the messages come from.
    pub source: String,
    /// Binding key.
    pub routing_key: String,
    /// Arguments (field table with its length; headers exchanges match on them).
    pub arguments: Vec<u8>,
}

impl BindingDef {
    /// The binding's key in the metadata store.
    pub fn store_key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The exchanges every vhost has.
pub const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// The exchange whose streams are the whole stream namespace, with no exchange level: a
/// publish to `amq.topic` with key `a.b` is stream `a.b`, and its bindings match every
/// stream, so it carries MQTT topics (`a/b` ↔ key `a.b`) and Kafka topics as RabbitMQ's MQTT
/// plugin does.
pub const GLOBAL_TOPIC: &str = "amq.topic";

/// How a queue got a record: by the default exchange (the whole name is the key), by an
/// exchange's binding (the first level is the exchange), or through `amq.topic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Via {
    /// The default exchange.
    Default = 0,
    /// An exchange with its own level.
    Exchange = 1,
    /// `amq.topic`.
    Global = 2,
}

impl Via {
    /// The way records of exchange `name` arrive.
    pub fn of(exchange: &str) -> Via {
        match exchange {
            "" => Via::Default,
            GLOBAL_TOPIC => Via::Global,
            _ => Via::Exchange,
        }
    }

    /// From its stored byte.
    pub fn from_u8(b: u8) -> Via {
        match b {
            1 => Via::Exchange,
            2 => Via::Global,
            _ => Via::Default,
        }
    }
}

/// The stream level of an exchange name (the whole name is one level).
pub fn exchange_level(name: &str) -> String {
    let mut s = String::new();
    naming::encode_segment(name, &mut s);
    s
}

/// The stream levels of a routing key: one per word; empty for an empty key.
pub fn key_levels(key: &str, out: &mut String) {
    if key.is_empty() {
        return;
    }
    for (i, w) in key.split('.').enumerate() {
        if i > 0 || !out.is_empty() {
            out.push('.');
        }
        naming::encode_segment(w, out);
    }
}

fn checked(name: String) -> Result<String, AmqpError> {
    if name.is_empty() || name.len() > naming::MAX_STREAM_NAME {
        return Err(AmqpError::precondition(format!(
            "exchange and routing key make a stream name of {} characters; at most {} fit",
            name.len(),
            naming::MAX_STREAM_NAME
        )));
    }
    Ok(name)
}

/// The stream a publish to `exchange` with `key` is stored in.
pub fn stream_for(exchange: &str, key: &str) -> Result<String, AmqpError> {
    let mut s = match Via::of(exchange) {
        Via::Exchange => exchange_level(exchange),
        _ => String::new(),
    };
    key_levels(key, &mut s);
    checked(s)
}

/// The router pattern of a binding of `kind` on `exchange` with `key`.
pub fn binding_pattern(kind: ExchangeKind, exchange: &str, key: &str) -> String {
    let mut s = match Via::of(exchange) {
        Via::Exchange => exchange_level(exchange),
        _ => String::new(),
    };
    match kind {
        ExchangeKind::Fanout | ExchangeKind::Headers if s.is_empty() => s.push('#'),
        ExchangeKind::Fanout | ExchangeKind::Headers => s.push_str(".#"),
        ExchangeKind::Direct => key_levels(key, &mut s),
        ExchangeKind::Topic => {
            if !key.is_empty() {
                for w in key.split('.') {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    match w {
                        "*" | "#" => s.push_str(w),
                        _ => naming::encode_segment(w, &mut s),
                    }
                }
            }
        }
    }
    s
}

/// The router pattern of a queue's binding to the default exchange (its own name).
pub fn default_pattern(queue: &str) -> String {
    let mut s = String::new();
    key_levels(queue, &mut s);
    s
}

/// Exchange and routing key a record is delivered with: by an exchange's binding, the first
/// level of its routing name is the exchange and the rest the key; by the default exchange
/// or `amq.topic`, the whole name is the key.
pub fn exchange_and_key(routing_name: &str, via: Via) -> (String, String) {
    let levels = naming::levels(routing_name);
    let join = |ls: &[std::borrow::Cow<'_, str>]| {
        ls.iter()
            .map(|l| l.as_ref())
            .collect::<Vec<&str>>()
            .join(".")
    };
    match via {
        Via::Exchange if !levels.is_empty() => (levels[0].to_string(), join(&levels[1..])),
        Via::Global => (GLOBAL_TOPIC.to_string(), join(&levels)),
        _ => (String::new(), join(&levels)),
    }
}

/// RabbitMQ's check of a redeclare: the same kind and flags, and the same
/// `alternate-exchange`.
pub fn check_exchange_equivalent(old: &ExchangeDef, new: &ExchangeDef) -> Result<(), AmqpError> {
    let diff = |arg: &str, received: &str, current: &str| {
        AmqpError::precondition(format!(
            "inequivalent arg '{arg}' for {}: received '{received}' but current is '{current}'",
            exchange_ref(&old.name)
        ))
    };
    if old.kind != new.kind {
        return Err(diff("type", new.kind.name(), old.kind.name()));
    }
    if old.durable != new.durable {
        return Err(diff(
            "durable",
            &new.durable.to_string(),
            &old.durable.to_string(),
        ));
    }
    if old.auto_delete != new.auto_delete {
        return Err(diff(
            "auto_delete",
            &new.auto_delete.to_string(),
            &old.auto_delete.to_string(),
        ));
    }
    if old.internal != new.internal {
        return Err(diff(
            "internal",
            &new.internal.to_string(),
            &old.internal.to_string(),
        ));
    }
    let ae = |t: &[u8]| {
        crate::props::entries(t)
            .find(|e| e.key == b"alternate-exchange")
            .map(|e| e.value.to_vec())
    };
    if ae(&old.arguments) != ae(&new.arguments) {
        return Err(AmqpError::precondition(format!(
            "inequivalent arg 'alternate-exchange' for {}",
            exchange_ref(&old.name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_streams_and_patterns() {
        assert_eq!(stream_for("orders", "eu.new").unwrap(), "orders.eu.new");
        assert_eq!(stream_for("", "task_queue").unwrap(), "task_queue");
        assert_eq!(stream_for("logs", "").unwrap(), "logs");
        assert_eq!(
            stream_for("amq.direct", "a").unwrap(),
            "__616d712e646972656374.a"
        );
        assert_eq!(stream_for("amq.topic", "sensors.t").unwrap(), "sensors.t");
        assert_eq!(
            binding_pattern(ExchangeKind::Topic, "amq.topic", "sensors.*"),
            "sensors.*"
        );
        assert_eq!(binding_pattern(ExchangeKind::Topic, "amq.topic", "#"), "#");
        assert!(stream_for("", "").is_err());
        assert_eq!(
            binding_pattern(ExchangeKind::Topic, "t", "a.*.#"),
            "t.a.*.#"
        );
        assert_eq!(
            binding_pattern(ExchangeKind::Direct, "d", "a.*"),
            "d.a.__2a"
        );
        assert_eq!(binding_pattern(ExchangeKind::Fanout, "f", "ignored"), "f.#");
        assert_eq!(binding_pattern(ExchangeKind::Topic, "t", ""), "t");
        assert_eq!(default_pattern("q:1"), "__713a31");
        assert_eq!(
            exchange_and_key("orders.eu.new", Via::Exchange),
            ("orders".to_string(), "eu.new".to_string())
        );
        assert_eq!(
            exchange_and_key("orders.eu.new", Via::Default),
            (String::new(), "orders.eu.new".to_string())
        );
    }
}
