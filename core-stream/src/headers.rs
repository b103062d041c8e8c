//! Record header names that mean the same thing to every protocol: the rows of the mapping
//! table in `docs/mapping.md`. A front-end writes a message's properties under these names
//! and reads them back, so an MQTT 5 content type is an AMQP content-type is a Kafka header.
//! Every other header is the protocol's free-form part (MQTT user properties, AMQP headers
//! table entries, Kafka headers).

/// MIME type of the value (MQTT Content Type, AMQP content-type).
pub const CONTENT_TYPE: &str = "content-type";
/// Correlation of a request and its reply (MQTT Correlation Data, AMQP correlation-id).
pub const CORRELATION_ID: &str = "correlation-id";
/// Where to send a reply (MQTT Response Topic, AMQP reply-to).
pub const REPLY_TO: &str = "reply-to";
/// When the message expires: milliseconds since the Unix epoch, decimal (MQTT Message Expiry
/// Interval counted from the publish, AMQP expiration).
pub const EXPIRES_AT: &str = "expires-at";
/// `utf-8` when the value is UTF-8 text (MQTT Payload Format Indicator 1).
pub const PAYLOAD_FORMAT: &str = "payload-format";

/// True for the names above: they are properties, not free-form headers.
pub fn is_property(name: &[u8]) -> bool {
    [
        CONTENT_TYPE,
        CORRELATION_ID,
        REPLY_TO,
        EXPIRES_AT,
        PAYLOAD_FORMAT,
    ]
    .iter()
    .any(|n| n.as_bytes() == name)
}
