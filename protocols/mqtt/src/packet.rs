//! MQTT packets as this front-end uses them: one set of types for 3.1.1 and 5.0, so the
//! session logic is written once. [`crate::codec`] converts them to and from the wire.

use bytes::Bytes;

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 and 3.1.1.
    V3,
    /// MQTT 5.0.
    V5,
}

/// The properties a PUBLISH (or a will) carries. Empty for 3.1.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProps {
    /// Payload is UTF-8 (payload format indicator 1).
    pub utf8_payload: bool,
    /// Message expiry interval (s).
    pub message_expiry: Option<u32>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order, duplicates kept.
    pub user_properties: Vec<(String, String)>,
    /// Subscription identifiers (server to client only).
    pub subscription_ids: Vec<u32>,
    /// Topic alias.
    pub topic_alias: Option<u16>,
}

/// A PUBLISH, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Resent.
    pub dup: bool,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retained.
    pub retain: bool,
    /// Topic name (empty when a topic alias stands for it).
    pub topic: String,
    /// Packet identifier (QoS 1 and 2).
    pub packet_id: Option<u16>,
    /// Payload.
    pub payload: Bytes,
    /// 5.0 properties.
    pub props: PublishProps,
}

/// A will message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: u8,
    /// Retained.
    pub retain: bool,
    /// Will delay interval (s, 5.0).
    pub delay: u32,
    /// Properties (5.0).
    pub props: PublishProps,
}

/// A CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Version.
    pub version: Version,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive (s).
    pub keep_alive: u16,
    /// Client id (may be empty).
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will.
    pub will: Option<Will>,
    /// Session expiry interval (s; 5.0). 3.1.1: 0 for a clean session, "never" otherwise.
    pub session_expiry: u32,
    /// How many QoS 1/2 messages the client accepts unacknowledged (5.0; 65535 otherwise).
    pub receive_max: u16,
    /// Largest packet the client accepts (5.0).
    pub max_packet_size: Option<u32>,
    /// Topic aliases the client accepts (5.0).
    pub topic_alias_max: u16,
    /// Authentication method (5.0 enhanced authentication).
    pub auth_method: Option<String>,
}

/// One filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// Do not send back the client's own publishes (5.0).
    pub no_local: bool,
    /// Keep the RETAIN flag as published (5.0).
    pub retain_as_published: bool,
    /// 0: send retained at subscribe; 1: only if new; 2: never (5.0).
    pub retain_handling: u8,
}

/// A packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(Box<Connect>),
    /// PUBLISH.
    Publish(Box<Publish>),
    /// PUBACK.
    PubAck(u16),
    /// PUBREC (packet id, reason code).
    PubRec(u16, u8),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        packet_id: u16,
        /// Subscription identifier (5.0).
        id: Option<u32>,
        /// Filters.
        filters: Vec<SubscribeFilter>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        packet_id: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT (reason code, new session expiry).
    Disconnect(u8, Option<u32>),
    /// AUTH (reason code).
    Auth(u8),
}

/// CONNACK properties (5.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProps {
    /// Client id the server assigned.
    pub assigned_client_id: Option<String>,
    /// Keep alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// Receive maximum of the server.
    pub receive_max: u16,
    /// Largest packet the server accepts.
    pub max_packet_size: Option<u32>,
    /// Topic aliases the server accepts.
    pub topic_alias_max: u16,
    /// Session expiry the server uses, when it differs from the request.
    pub session_expiry: Option<u32>,
    /// Reason string.
    pub reason: Option<String>,
}

/// A packet to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// CONNACK (session present, reason code: 3.1.1 return code or 5.0 reason).
    ConnAck(bool, u8, Box<ConnAckProps>),
    /// PUBLISH.
    Publish(Box<Publish>),
    /// PUBACK (packet id, reason).
    PubAck(u16, u8),
    /// PUBREC (packet id, reason).
    PubRec(u16, u8),
    /// PUBREL (packet id, reason).
    PubRel(u16, u8),
    /// PUBCOMP (packet id, reason).
    PubComp(u16, u8),
    /// SUBACK (packet id, one code per filter).
    SubAck(u16, Vec<u8>),
    /// UNSUBACK (packet id, one code per filter; 5.0).
    UnsubAck(u16, Vec<u8>),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5.0 reason code).
    Disconnect(u8),
    /// AUTH (reason code).
    Auth(u8),
}

/// MQTT 5 reason codes used here.
pub mod reason {
    /// Success / granted QoS 0 / normal disconnection.
    pub const SUCCESS: u8 = 0x00;
    /// Disconnect with will message.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0x80;
    /// Malformed packet.
    pub const MALFORMED: u8 = 0x81;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    /// Unsupported protocol version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// Client identifier not valid.
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// Bad user name or password.
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server busy.
    pub const SERVER_BUSY: u8 = 0x89;
    /// Bad authentication method.
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Topic filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Packet identifier not found.
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// Receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    /// Shared subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
}
