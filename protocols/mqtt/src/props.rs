//! MQTT message properties ↔ record headers, by the one table in `docs/mapping.md`.
//!
//! Content type, correlation data, response topic, message expiry and the payload format go
//! under the shared header names of [`core_stream::headers`]; user properties are headers
//! of their own name, in order, duplicates kept. Three headers are MQTT's own: `mqtt-qos`
//! (the publish QoS, so a subscriber gets at most that), `mqtt-retain` (set when the publish
//! was retained, for retain-as-published) and `mqtt-topic` (the full topic, for streams fed
//! by mapping rules). A record without `mqtt-qos` (written by Kafka or AMQP) counts as QoS 1.

use bytes::Bytes;
use core_stream::headers;

use crate::packet::PublishProps;
use crate::topics::TOPIC_HEADER;

/// Header holding the publish QoS.
pub const QOS_HEADER: &str = "mqtt-qos";
/// Header present when the publish was retained.
pub const RETAIN_HEADER: &str = "mqtt-retain";

type Headers = Vec<(Bytes, Option<Bytes>)>;

fn h(name: &str, value: impl Into<Bytes>) -> (Bytes, Option<Bytes>) {
    (Bytes::copy_from_slice(name.as_bytes()), Some(value.into()))
}

/// The headers of a record written for a PUBLISH.
pub fn to_headers(
    props: &PublishProps,
    qos: u8,
    retain: bool,
    topic: Option<&str>,
    now_ms: i64,
) -> Headers {
    let mut out = Vec::with_capacity(2 + props.user_properties.len());
    out.push(h(
        QOS_HEADER,
        Bytes::from_static(match qos {
            0 => b"0",
            1 => b"1",
            _ => b"2",
        }),
    ));
    if retain {
        out.push(h(RETAIN_HEADER, Bytes::from_static(b"1")));
    }
    if let Some(t) = topic {
        out.push(h(TOPIC_HEADER, Bytes::copy_from_slice(t.as_bytes())));
    }
    if let Some(ct) = &props.content_type {
        out.push(h(
            headers::CONTENT_TYPE,
            Bytes::copy_from_slice(ct.as_bytes()),
        ));
    }
    if let Some(cd) = &props.correlation_data {
        out.push(h(headers::CORRELATION_ID, cd.clone()));
    }
    if let Some(rt) = &props.response_topic {
        out.push(h(headers::REPLY_TO, Bytes::copy_from_slice(rt.as_bytes())));
    }
    if let Some(secs) = props.message_expiry {
        let at = now_ms + i64::from(secs) * 1000;
        out.push(h(headers::EXPIRES_AT, at.to_string()));
    }
    if props.utf8_payload {
        out.push(h(headers::PAYLOAD_FORMAT, Bytes::from_static(b"utf-8")));
    }
    for (k, v) in &props.user_properties {
        out.push(h(k, Bytes::copy_from_slice(v.as_bytes())));
    }
    out
}

/// What a record's headers say about the message it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// MQTT properties (message expiry = the time left).
    pub props: PublishProps,
    /// The publish QoS (1 for records not written by MQTT).
    pub qos: u8,
    /// The publish was retained.
    pub retain: bool,
    /// Absolute expiry (ms since the epoch), if any.
    pub expires_at: Option<i64>,
}

fn text(v: &Option<Bytes>) -> String {
    v.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Reads a record's headers back into MQTT terms.
pub fn from_headers(hs: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Carried {
    let mut c = Carried {
        qos: 1,
        ..Default::default()
    };
    for (k, v) in hs {
        match &k[..] {
            b"mqtt-qos" => {
                c.qos = v
                    .as_deref()
                    .map_or(1, |b| b.first().map_or(1, |d| d.wrapping_sub(b'0').min(2)))
            }
            b"mqtt-retain" => c.retain = true,
            b"mqtt-topic" => {}
            k if k == headers::CONTENT_TYPE.as_bytes() => c.props.content_type = Some(text(v)),
            k if k == headers::CORRELATION_ID.as_bytes() => {
                c.props.correlation_data = Some(v.clone().unwrap_or_default())
            }
            k if k == headers::REPLY_TO.as_bytes() => c.props.response_topic = Some(text(v)),
            k if k == headers::EXPIRES_AT.as_bytes() => {
                c.expires_at = text(v).parse().ok();
            }
            k if k == headers::PAYLOAD_FORMAT.as_bytes() => {
                c.props.utf8_payload = text(v).eq_ignore_ascii_case("utf-8")
            }
            k => c
                .props
                .user_properties
                .push((String::from_utf8_lossy(k).into_owned(), text(v))),
        }
    }
    if let Some(at) = c.expires_at {
        let left_ms = at - now_ms;
        c.props.message_expiry = Some(((left_ms.max(0) + 999) / 1000) as u32);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_headers() {
        let props = PublishProps {
            utf8_payload: true,
            message_expiry: Some(60),
            content_type: Some("application/json".into()),
            response_topic: Some("replies/1".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![
                ("a".into(), "2".into()),
                ("c".into(), "3".into()),
                ("a".into(), "4".into()),
            ],
            ..Default::default()
        };
        let hs = to_headers(&props, 2, true, None, 1_000);
        let back = from_headers(&hs, 11_000);
        assert_eq!(back.qos, 2);
        assert!(back.retain);
        assert_eq!(back.props.message_expiry, Some(50), "the time left");
        assert_eq!(
            back.props.user_properties, props.user_properties,
            "order and duplicates kept"
        );
        assert_eq!(back.props.content_type, props.content_type);
        assert_eq!(back.props.correlation_data, props.correlation_data);
        assert_eq!(back.props.response_topic, props.response_topic);
        assert!(back.props.utf8_payload);
        // A Kafka record's headers are user properties; it counts as QoS 1.
        let k = from_headers(
            &[(Bytes::from_static(b"trace"), Some(Bytes::from_static(b"x")))],
            0,
        );
        assert_eq!(k.qos, 1);
        assert_eq!(
            k.props.user_properties,
            vec![("trace".to_string(), "x".to_string())]
        );
    }
}
