//! Retained messages: the last retained PUBLISH of each topic, delivered to new subscribers.
//! Kept in memory for matching and in the metadata store (written before the publisher is
//! acknowledged), so they survive restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use core_stream::{Core, Result};
use serde::{Deserialize, Serialize};

use crate::packet::PublishProps;

/// Metadata-store space of retained messages.
const RETAINED: &str = "mqtt-retained";

/// One retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMsg {
    /// QoS it was published with.
    pub qos: u8,
    /// Payload.
    pub payload: Bytes,
    /// Its properties.
    pub props: PublishProps,
    /// When it expires (ms since the epoch), if it does.
    pub expires_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    qos: u8,
    payload: Vec<u8>,
    utf8: bool,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation: Option<Vec<u8>>,
    user: Vec<(String, String)>,
    expires_at: Option<i64>,
}

/// The store.
#[derive(Debug)]
pub struct Retained {
    core: Arc<Core>,
    map: RwLock<BTreeMap<String, RetainedMsg>>,
}

impl Retained {
    /// Loads what the metadata store holds.
    pub fn load(core: Arc<Core>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (topic, bytes) in core.records(RETAINED)? {
            if let Ok(s) = serde_json::from_slice::<Stored>(&bytes) {
                map.insert(
                    topic,
                    RetainedMsg {
                        qos: s.qos,
                        payload: Bytes::from(s.payload),
                        props: PublishProps {
                            utf8_payload: s.utf8,
                            content_type: s.content_type,
                            response_topic: s.response_topic,
                            correlation_data: s.correlation.map(Bytes::from),
                            user_properties: s.user,
                            ..Default::default()
                        },
                        expires_at: s.expires_at,
                    },
                );
            }
        }
        Ok(Self {
            core,
            map: RwLock::new(map),
        })
    }

    /// Sets (or, with an empty payload, clears) the retained message of `topic`; durable when
    /// it returns.
    pub fn set(&self, topic: &str, msg: Option<RetainedMsg>) -> Result<()> {
        match &msg {
            Some(m) => {
                let s = Stored {
                    qos: m.qos,
                    payload: m.payload.to_vec(),
                    utf8: m.props.utf8_payload,
                    content_type: m.props.content_type.clone(),
                    response_topic: m.props.response_topic.clone(),
                    correlation: m.props.correlation_data.as_ref().map(|b| b.to_vec()),
                    user: m.props.user_properties.clone(),
                    expires_at: m.expires_at,
                };
                let bytes = serde_json::to_vec(&s)
                    .map_err(|e| core_stream::StreamError::Metadata(e.to_string()))?;
                self.core.put_record(RETAINED, topic, Some(&bytes))?;
            }
            None => self.core.put_record(RETAINED, topic, None)?,
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match msg {
            Some(m) => map.insert(topic.to_string(), m),
            None => map.remove(topic),
        };
        Ok(())
    }

    /// Retained messages whose topic matches `filter`, unexpired, in topic order.
    pub fn matching(&self, filter: &str, now_ms: i64) -> Vec<(String, RetainedMsg)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(t, m)| m.expires_at.is_none_or(|at| at > now_ms) && topic_matches(filter, t))
            .map(|(t, m)| (t.clone(), m.clone()))
            .collect()
    }

    /// How many topics have a retained message.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an MQTT filter matches a topic (wildcards at the first level do not match `$`
/// topics).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn filters_match_as_the_spec_says() {
        assert!(topic_matches("sport/#", "sport"));
        assert!(topic_matches("sport/#", "sport/tennis/player1"));
        assert!(topic_matches("+/+", "/finance"));
        assert!(topic_matches("+", "finance"));
        assert!(!topic_matches("+", "/finance"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/B", "$TopicA/B"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }
}
