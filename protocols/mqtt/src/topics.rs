//! MQTT topic names and filters, and where they live in the stream core.
//!
//! By default one topic is one stream: its levels are the stream's segments, by the core's
//! one reversible naming rule ([`core_stream::naming`]): `sensors/temperature` ↔
//! `sensors.temperature`. A filter becomes a router pattern the same way, `+` → `*`, `#` → `#`.
//!
//! A [`MappingRule`] (from config) instead maps many topics into one keyed stream, as IoT
//! platforms do: `devices/+/telemetry` → stream `devices.telemetry`, record key = the `+`
//! level, the full topic in the `mqtt-topic` header. Kafka records produced to that stream
//! with key `d1` reach MQTT subscribers of `devices/d1/telemetry`.

use core_stream::naming;
use core_stream::router::RoutingTemplate;
use serde::Deserialize;

/// The record header holding an MQTT topic (records of streams fed by mapping rules).
pub const TOPIC_HEADER: &str = "mqtt-topic";

/// Why a topic or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not a valid topic name or filter (wildcards misplaced, empty, NUL).
    #[error("invalid topic or filter: {0}")]
    Invalid(&'static str),
    /// Valid MQTT, but its stream name would be too long.
    #[error("topic maps to a stream name longer than 249 characters")]
    TooLong,
}

/// Checks a topic name of a PUBLISH: non-empty, no wildcards, no NUL.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Invalid("empty topic"));
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::Invalid("wildcards in a topic name"));
    }
    if topic.contains('\0') {
        return Err(TopicError::Invalid("NUL in a topic"));
    }
    Ok(())
}

/// Checks a topic filter: `#` only last and alone in its level, `+` alone in its level.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Invalid("empty filter"));
    }
    if filter.contains('\0') {
        return Err(TopicError::Invalid("NUL in a filter"));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(TopicError::Invalid("# must be the last level, alone"));
        }
        if l.contains('+') && *l != "+" {
            return Err(TopicError::Invalid("+ must be alone in its level"));
        }
    }
    Ok(())
}

/// A shared subscription's group and filter (`$share/{group}/{filter}`), if it is one.
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, f) = rest.split_once('/')?;
    (!group.is_empty() && !group.contains(['+', '#']) && !f.is_empty()).then_some((group, f))
}

/// The router pattern for a filter.
pub fn filter_pattern(filter: &str) -> Result<String, TopicError> {
    let mut out = String::new();
    for (i, l) in filter.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        match l {
            "+" => out.push('*'),
            "#" => out.push('#'),
            level => naming::encode_segment(level, &mut out),
        }
        if out.len() > 2 * naming::MAX_STREAM_NAME {
            return Err(TopicError::TooLong);
        }
    }
    Ok(out)
}

/// The MQTT topic a routing name stands for.
pub fn routing_topic(routing_name: &str) -> String {
    naming::levels(routing_name).join("/")
}

/// A configured mapping of many topics into one keyed stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// Topic filter with exactly one `+` (the key) and otherwise literal levels,
    /// e.g. `devices/+/telemetry`.
    pub filter: String,
    /// Stream the matching topics are written to, e.g. `devices.telemetry`.
    pub stream: String,
}

/// Mapping rules checked and ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    rules: Vec<(Vec<String>, usize, String)>,
}

/// Where a PUBLISH goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Stream name.
    pub stream: String,
    /// Record key from the topic (a rule's `+` level), if a rule matched.
    pub key: Option<String>,
    /// True when the topic must travel in the `mqtt-topic` header.
    pub topic_header: bool,
}

impl Mapping {
    /// Checks the rules: one `+`, no `#`, a valid stream name.
    pub fn new(rules: &[MappingRule]) -> Result<Self, String> {
        let mut out = Vec::new();
        for r in rules {
            validate_filter(&r.filter).map_err(|e| format!("mapping rule {}: {e}", r.filter))?;
            let levels: Vec<String> = r.filter.split('/').map(str::to_string).collect();
            let plus: Vec<usize> = levels
                .iter()
                .enumerate()
                .filter(|(_, l)| *l == "+")
                .map(|(i, _)| i)
                .collect();
            if plus.len() != 1 || levels.iter().any(|l| l == "#") {
                return Err(format!(
                    "mapping rule {}: the filter needs exactly one + (the record key) and no #",
                    r.filter
                ));
            }
            core_stream::validate_name(&r.stream)
                .map_err(|e| format!("mapping rule {}: {e}", r.filter))?;
            out.push((levels, plus[0], r.stream.clone()));
        }
        Ok(Self { rules: out })
    }

    /// Where a topic is written: the first matching rule's stream, else its own stream.
    pub fn target(&self, topic: &str) -> Result<Target, TopicError> {
        let levels: Vec<&str> = topic.split('/').collect();
        for (rule, key_at, stream) in &self.rules {
            if rule.len() == levels.len()
                && rule.iter().zip(&levels).all(|(r, l)| r == "+" || r == l)
            {
                return Ok(Target {
                    stream: stream.clone(),
                    key: Some(levels[*key_at].to_string()),
                    topic_header: true,
                });
            }
        }
        Ok(Target {
            stream: naming::stream_name(levels).map_err(|_| TopicError::TooLong)?,
            key: None,
            topic_header: false,
        })
    }

    /// The routing templates to give the core: records of a rule's stream are routed by
    /// their topic header, or by the key in the `+` level.
    pub fn templates(&self) -> Vec<(String, RoutingTemplate)> {
        self.rules
            .iter()
            .map(|(levels, key_at, stream)| {
                let segments = levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        (i != *key_at).then(|| {
                            let mut s = String::new();
                            naming::encode_segment(l, &mut s);
                            s
                        })
                    })
                    .collect();
                (
                    stream.clone(),
                    RoutingTemplate {
                        segments,
                        header: Some(TOPIC_HEADER.to_string()),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_topics_are_checked_as_the_spec_says() {
        for ok in ["a", "a/b", "#", "+", "a/+/c", "a/#", "/", "+/+", "$SYS/#"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "a/b+", "#/a"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
        assert!(validate_topic("a/b").is_ok());
        assert!(validate_topic("a/+").is_err());
        assert!(validate_topic("").is_err());
        assert_eq!(shared("$share/g/a/+"), Some(("g", "a/+")));
        assert_eq!(shared("$share//a"), None);
        assert_eq!(filter_pattern("sensors/+/#").unwrap(), "sensors.*.#");
        assert_eq!(filter_pattern("/TopicA").unwrap(), "__.TopicA");
    }

    #[test]
    fn rules_map_many_topics_into_one_keyed_stream_and_back() {
        let m = Mapping::new(&[MappingRule {
            filter: "devices/+/telemetry".into(),
            stream: "devices.telemetry".into(),
        }])
        .unwrap();
        let t = m.target("devices/d1/telemetry").unwrap();
        assert_eq!(
            t,
            Target {
                stream: "devices.telemetry".into(),
                key: Some("d1".into()),
                topic_header: true
            }
        );
        let t = m.target("sensors/temperature").unwrap();
        assert_eq!(t.stream, "sensors.temperature");
        assert_eq!(t.key, None);
        let (stream, tpl) = &m.templates()[0];
        assert_eq!(stream, "devices.telemetry");
        assert_eq!(
            tpl.segments,
            vec![
                Some("devices".to_string()),
                None,
                Some("telemetry".to_string())
            ]
        );
        assert!(Mapping::new(&[MappingRule {
            filter: "a/#".into(),
            stream: "a".into()
        }])
        .is_err());
        assert_eq!(
            routing_topic("devices.d1.telemetry"),
            "devices/d1/telemetry"
        );
        assert_eq!(routing_topic("__.TopicA"), "/TopicA");
    }
}
