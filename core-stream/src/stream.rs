//! A stream: a named set of partitions, plus the naming and pattern rules shared by all protocols.

use std::sync::{Arc, RwLock};

use crate::config::StreamConfig;
use crate::error::{Result, StreamError};
use crate::log::PartitionLog;

/// A named, partitioned, append-only log.
#[derive(Debug)]
pub struct Stream {
    /// Dot-separated name (`sensors.temperature`).
    pub name: String,
    /// Stable id (Kafka topic id).
    pub id: [u8; 16],
    pub(crate) config: RwLock<StreamConfig>,
    pub(crate) partitions: RwLock<Vec<Arc<dyn PartitionLog>>>,
}

impl Stream {
    /// Reads the current settings in place (no copy): for per-request checks on hot paths.
    pub fn with_config<R>(&self, f: impl FnOnce(&StreamConfig) -> R) -> R {
        f(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Current settings.
    pub fn config(&self) -> StreamConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// All partitions, in index order.
    pub fn partitions(&self) -> Vec<Arc<dyn PartitionLog>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> usize {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// One partition by index.
    pub fn partition(&self, index: i32) -> Result<Arc<dyn PartitionLog>> {
        let ps = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        usize::try_from(index)
            .ok()
            .and_then(|i| ps.get(i).cloned())
            .ok_or_else(|| StreamError::UnknownPartition(self.name.clone(), index))
    }
}

/// Checks a stream name against the rules every protocol can carry (Kafka's topic rules).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why| Err(StreamError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Matches a dot-separated stream name against a pattern where `*` is exactly one segment and
/// `#` is zero or more segments (AMQP topic-exchange rules; MQTT `+`/`#` map onto these).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[&str], n: &[&str]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((&"#", rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((&seg, rest)) => match n.split_first() {
                Some((first, nrest)) => (seg == "*" || seg == *first) && go(rest, nrest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let n: Vec<&str> = name.split('.').collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segment_wise() {
        assert!(pattern_matches("sensors.*", "sensors.temperature"));
        assert!(!pattern_matches("sensors.*", "sensors.a.b"));
        assert!(pattern_matches("sensors.#", "sensors"));
        assert!(pattern_matches("sensors.#", "sensors.a.b"));
        assert!(pattern_matches("#", "anything.at.all"));
        assert!(pattern_matches("orders.*.new", "orders.eu.new"));
        assert!(!pattern_matches("orders.*.new", "orders.eu.old"));
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("orders.eu-new_1").is_ok());
        assert!(validate_name("..").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }
}
