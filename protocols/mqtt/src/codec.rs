//! The wire: `rmqtt-codec` (DESIGN: pinned, behind a thin layer of our own) turned into this
//! crate's [`Inbound`]/[`Outbound`] packets.
//!
//! What this layer adds around the codec, from a read of its code:
//! - a maximum inbound packet size is always set (the codec's default is unlimited);
//! - a wrong protocol level is told apart from junk, so it gets the spec's CONNACK;
//! - a 5.0 CONNECT with an empty client id and clean start 0 is accepted (5.0 allows it;
//!   the codec does not), and treated as a new session;
//! - the client's maximum packet size is enforced after encoding (the codec's own outbound
//!   limit underflows on small values), and 3.1.1 payloads of 256 MiB or more are refused
//!   before encoding (the codec would panic).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::BytesMut;
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::types::{Publish as RPublish, QoS};
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{v3, v5};
use tokio_util::codec::{Decoder, Encoder as _};

use crate::packet::*;

/// Why the wire cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Refuse the CONNECT with this CONNACK code (3.1.1 return code, or 5.0 reason), then close.
    #[error("connect refused with code {0:#x}")]
    RefuseConnect(u8),
    /// Send DISCONNECT with this reason (5.0) and close; 3.1.1 just closes.
    #[error("protocol violation: reason {0:#x} ({1})")]
    Disconnect(u8, String),
    /// Close without an answer.
    #[error("malformed input: {0}")]
    Close(String),
}

enum State {
    Detect,
    V3(v3::Codec),
    V5(v5::Codec),
}

/// Decodes a client's byte stream into packets.
pub struct Wire {
    state: State,
    max_packet: u32,
    /// The CONNECT was patched from clean start 0 (empty client id, 5.0).
    patched_clean_start: bool,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("version", &self.version())
            .finish()
    }
}

fn varint_at(buf: &[u8], mut at: usize) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for shift in [0, 7, 14, 21] {
        let b = *buf.get(at)?;
        at += 1;
        v |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((v, at));
        }
    }
    None
}

impl Wire {
    /// A wire for a new connection; packets larger than `max_packet` bytes are refused.
    pub fn new(max_packet: u32) -> Self {
        Self {
            state: State::Detect,
            max_packet: max_packet.max(64),
            patched_clean_start: false,
        }
    }

    /// The version, once the CONNECT was seen.
    pub fn version(&self) -> Option<Version> {
        match self.state {
            State::Detect => None,
            State::V3(_) => Some(Version::V3),
            State::V5(_) => Some(Version::V5),
        }
    }

    /// The next packet in `buf` (consumed), or `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, WireError> {
        if let State::Detect = self.state {
            match VersionCodec.decode(buf) {
                Ok(None) => {
                    if buf.len() > 16 * 1024 && buf.first() != Some(&0x10) {
                        return Err(WireError::Close("first packet is not CONNECT".into()));
                    }
                    return Ok(None);
                }
                Ok(Some(ProtocolVersion::MQTT3)) => {
                    self.state = State::V3(v3::Codec::new(self.max_packet));
                }
                Ok(Some(ProtocolVersion::MQTT5)) => {
                    self.patch_empty_client_id(buf);
                    self.state = State::V5(v5::Codec::new(self.max_packet, 0));
                }
                Err(e) => return Err(Self::connect_error(buf, e)),
            }
        }
        let decoded = match &mut self.state {
            State::Detect => unreachable!("set above"),
            State::V3(c) => c.decode(buf).map(|o| o.map(|(p, _)| from_v3(p))),
            State::V5(c) => c.decode(buf).map(|o| o.map(|(p, _)| from_v5(p))),
        };
        match decoded {
            Ok(Some(Ok(mut p))) => {
                if let (Inbound::Connect(c), true) = (&mut p, self.patched_clean_start) {
                    c.clean_start = false;
                }
                Ok(Some(p))
            }
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Ok(None),
            Err(e) => Err(self.packet_error(e)),
        }
    }

    /// Maps a CONNECT that cannot be parsed to the spec's answer.
    fn connect_error(buf: &[u8], e: DecodeError) -> WireError {
        // "MQTT" with a level other than 3, 4, 5: unacceptable protocol version (3.1.1: 0x01).
        if let (DecodeError::InvalidProtocol, Some(0x10)) = (&e, buf.first()) {
            if let Some((_, at)) = varint_at(buf, 1) {
                if buf.get(at..at + 6) == Some(&[0, 4, b'M', b'Q', b'T', b'T'][..]) {
                    return WireError::RefuseConnect(0x01);
                }
            }
        }
        WireError::Close(format!("not an MQTT CONNECT: {e}"))
    }

    fn packet_error(&self, e: DecodeError) -> WireError {
        let code = match e {
            DecodeError::MaxSizeExceeded { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::InvalidClientId => {
                return WireError::RefuseConnect(match self.state {
                    State::V5(_) => reason::CLIENT_ID_NOT_VALID,
                    _ => 0x02,
                })
            }
            DecodeError::UnsupportedProtocolLevel => {
                return WireError::RefuseConnect(match self.state {
                    State::V5(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
                    _ => 0x01,
                })
            }
            DecodeError::InvalidTopicFilter => reason::TOPIC_FILTER_INVALID,
            DecodeError::InvalidTopicName => reason::TOPIC_NAME_INVALID,
            DecodeError::PacketIdRequired | DecodeError::UnsupportedPacketType => {
                reason::PROTOCOL_ERROR
            }
            _ => reason::MALFORMED,
        };
        WireError::Disconnect(code, e.to_string())
    }

    /// 5.0 allows an empty client id with clean start 0 (the codec refuses it): set the clean
    /// start flag in the buffered CONNECT and remember to report it unset.
    fn patch_empty_client_id(&mut self, buf: &mut BytesMut) {
        let Some((_, at)) = varint_at(buf, 1) else {
            return;
        };
        // protocol name (2 + 4), level (1), flags (1), keep alive (2), properties length.
        let flags_at = at + 7;
        let Some((props_len, props_at)) = varint_at(buf, flags_at + 3) else {
            return;
        };
        let id_at = props_at + props_len;
        let (Some(&flags), Some(id_len)) = (buf.get(flags_at), buf.get(id_at..id_at + 2)) else {
            return;
        };
        if id_len == [0, 0] && flags & 0x02 == 0 {
            buf[flags_at] |= 0x02;
            self.patched_clean_start = true;
        }
    }
}

fn qos(q: QoS) -> u8 {
    q as u8
}

fn to_qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn publish_in(p: RPublish) -> Publish {
    let props = p
        .properties
        .map(|pp| PublishProps {
            utf8_payload: pp.is_utf8_payload,
            message_expiry: pp.message_expiry_interval.map(NonZeroU32::get),
            content_type: pp.content_type.map(|s| s.to_string()),
            response_topic: pp.response_topic.map(|s| s.to_string()),
            correlation_data: pp.correlation_data,
            user_properties: pp
                .user_properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            subscription_ids: pp
                .subscription_ids
                .into_iter()
                .map(NonZeroU32::get)
                .collect(),
            topic_alias: pp.topic_alias.map(NonZeroU16::get),
        })
        .unwrap_or_default();
    Publish {
        dup: p.dup,
        qos: qos(p.qos),
        retain: p.retain,
        topic: p.topic.to_string(),
        packet_id: p.packet_id.map(NonZeroU16::get),
        payload: p.payload,
        props,
    }
}

fn from_v3(p: v3::Packet) -> Result<Inbound, WireError> {
    use v3::Packet as P;
    Ok(match p {
        P::Connect(c) => {
            let c = *c;
            Inbound::Connect(Box::new(Connect {
                version: Version::V3,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id.to_string(),
                username: c.username.map(|s| s.to_string()),
                password: c.password,
                will: c.last_will.map(|w| Will {
                    topic: w.topic.to_string(),
                    payload: w.message,
                    qos: qos(w.qos),
                    retain: w.retain,
                    delay: 0,
                    props: PublishProps::default(),
                }),
                session_expiry: if c.clean_session { 0 } else { u32::MAX },
                receive_max: u16::MAX,
                max_packet_size: None,
                topic_alias_max: 0,
                auth_method: None,
            }))
        }
        P::Publish(p) => Inbound::Publish(Box::new(publish_in(*p))),
        P::PublishAck { packet_id } => Inbound::PubAck(packet_id.get()),
        P::PublishReceived { packet_id } => Inbound::PubRec(packet_id.get(), 0),
        P::PublishRelease { packet_id } => Inbound::PubRel(packet_id.get()),
        P::PublishComplete { packet_id } => Inbound::PubComp(packet_id.get()),
        P::Subscribe {
            packet_id,
            topic_filters,
        } => Inbound::Subscribe {
            packet_id: packet_id.get(),
            id: None,
            filters: topic_filters
                .into_iter()
                .map(|(f, q)| SubscribeFilter {
                    filter: f.to_string(),
                    qos: qos(q),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
        },
        P::Unsubscribe {
            packet_id,
            topic_filters,
        } => Inbound::Unsubscribe {
            packet_id: packet_id.get(),
            filters: topic_filters.into_iter().map(|f| f.to_string()).collect(),
        },
        P::PingRequest => Inbound::PingReq,
        P::Disconnect => Inbound::Disconnect(0, None),
        P::ConnectAck(_) | P::SubscribeAck { .. } | P::UnsubscribeAck { .. } | P::PingResponse => {
            return Err(WireError::Close(
                "a server-to-client packet from a client".into(),
            ))
        }
    })
}

fn from_v5(p: v5::Packet) -> Result<Inbound, WireError> {
    use v5::Packet as P;
    Ok(match p {
        P::Connect(c) => {
            let c = *c;
            Inbound::Connect(Box::new(Connect {
                version: Version::V5,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                client_id: c.client_id.to_string(),
                username: c.username.map(|s| s.to_string()),
                password: c.password,
                will: c.last_will.map(|w| Will {
                    topic: w.topic.to_string(),
                    payload: w.message,
                    qos: qos(w.qos),
                    retain: w.retain,
                    delay: w.will_delay_interval_sec.unwrap_or(0),
                    props: PublishProps {
                        utf8_payload: w.is_utf8_payload.unwrap_or(false),
                        message_expiry: w.message_expiry_interval.map(NonZeroU32::get),
                        content_type: w.content_type.map(|s| s.to_string()),
                        response_topic: w.response_topic.map(|s| s.to_string()),
                        correlation_data: w.correlation_data,
                        user_properties: w
                            .user_properties
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        subscription_ids: Vec::new(),
                        topic_alias: None,
                    },
                }),
                session_expiry: c.session_expiry_interval_secs,
                receive_max: c.receive_max.map_or(u16::MAX, NonZeroU16::get),
                max_packet_size: c.max_packet_size.map(NonZeroU32::get),
                topic_alias_max: c.topic_alias_max,
                auth_method: c.auth_method.map(|s| s.to_string()),
            }))
        }
        P::Publish(p) => Inbound::Publish(Box::new(publish_in(*p))),
        P::PublishAck(a) => Inbound::PubAck(a.packet_id.get()),
        P::PublishReceived(a) => Inbound::PubRec(a.packet_id.get(), a.reason_code as u8),
        P::PublishRelease(a) => Inbound::PubRel(a.packet_id.get()),
        P::PublishComplete(a) => Inbound::PubComp(a.packet_id.get()),
        P::Subscribe(s) => Inbound::Subscribe {
            packet_id: s.packet_id.get(),
            id: s.id.map(NonZeroU32::get),
            filters: s
                .topic_filters
                .into_iter()
                .map(|(f, o)| SubscribeFilter {
                    filter: f.to_string(),
                    qos: qos(o.qos),
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    retain_handling: o.retain_handling as u8,
                })
                .collect(),
        },
        P::Unsubscribe(u) => Inbound::Unsubscribe {
            packet_id: u.packet_id.get(),
            filters: u.topic_filters.into_iter().map(|f| f.to_string()).collect(),
        },
        P::PingRequest => Inbound::PingReq,
        P::Disconnect(d) => {
            Inbound::Disconnect(d.reason_code as u8, d.session_expiry_interval_secs)
        }
        P::Auth(a) => Inbound::Auth(a.reason_code as u8),
        P::ConnectAck(_) | P::SubscribeAck(_) | P::UnsubscribeAck(_) | P::PingResponse => {
            return Err(WireError::Disconnect(
                reason::PROTOCOL_ERROR,
                "a server-to-client packet from a client".into(),
            ))
        }
    })
}

/// Why a packet was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Larger than the client accepts: drop it for this client.
    #[error("packet larger than the client's maximum")]
    TooLarge,
    /// The codec refused it.
    #[error("cannot encode: {0}")]
    Invalid(String),
}

/// Encodes packets for one connection.
pub struct Encoder {
    version: Version,
    v3: v3::Codec,
    v5: v5::Codec,
    /// Largest packet the client accepts.
    pub max_packet: Option<u32>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("version", &self.version)
            .finish()
    }
}

fn nz16(v: u16) -> Result<NonZeroU16, EncodeError> {
    NonZeroU16::new(v).ok_or_else(|| EncodeError::Invalid("packet id 0".into()))
}

impl Encoder {
    /// An encoder for `version`.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            v3: v3::Codec::new(u32::MAX),
            v5: v5::Codec::new(u32::MAX, 0),
            max_packet: None,
        }
    }

    /// Appends the encoded packet to `out`.
    pub fn encode(&mut self, p: &Outbound, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let res = match self.version {
            Version::V3 => {
                let pkt = to_v3(p)?;
                self.v3
                    .encode(pkt, out)
                    .map_err(|e| EncodeError::Invalid(e.to_string()))
            }
            Version::V5 => {
                let pkt = to_v5(p)?;
                self.v5
                    .encode(pkt, out)
                    .map_err(|e| EncodeError::Invalid(e.to_string()))
            }
        };
        if let Err(e) = res {
            out.truncate(start);
            return Err(e);
        }
        if self
            .max_packet
            .is_some_and(|m| (out.len() - start) as u64 > u64::from(m))
        {
            out.truncate(start);
            return Err(EncodeError::TooLarge);
        }
        Ok(())
    }
}

fn publish_out(p: &Publish, v5: bool) -> Result<RPublish, EncodeError> {
    let props = v5.then(|| v5::PublishProperties {
        topic_alias: p.props.topic_alias.and_then(NonZeroU16::new),
        correlation_data: p.props.correlation_data.clone(),
        message_expiry_interval: p.props.message_expiry.and_then(NonZeroU32::new),
        content_type: p.props.content_type.as_deref().map(Into::into),
        user_properties: p
            .props
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
        is_utf8_payload: p.props.utf8_payload,
        response_topic: p.props.response_topic.as_deref().map(Into::into),
        subscription_ids: p
            .props
            .subscription_ids
            .iter()
            .filter_map(|i| NonZeroU32::new(*i))
            .collect(),
    });
    Ok(RPublish {
        dup: p.dup,
        retain: p.retain,
        qos: to_qos(p.qos),
        topic: p.topic.as_str().into(),
        packet_id: match p.packet_id {
            Some(id) => Some(nz16(id)?),
            None => None,
        },
        payload: p.payload.clone(),
        properties: props,
    })
}

fn to_v3(p: &Outbound) -> Result<v3::Packet, EncodeError> {
    use v3::Packet as P;
    Ok(match p {
        Outbound::ConnAck(present, code, _) => P::ConnectAck(v3::ConnectAck {
            session_present: *present,
            return_code: v3::ConnectAckReason::try_from(*code)
                .unwrap_or(v3::ConnectAckReason::ServiceUnavailable),
        }),
        Outbound::Publish(p) => {
            if p.payload.len() >= 256 * 1024 * 1024 {
                return Err(EncodeError::TooLarge);
            }
            P::Publish(Box::new(publish_out(p, false)?))
        }
        Outbound::PubAck(id, _) => P::PublishAck {
            packet_id: nz16(*id)?,
        },
        Outbound::PubRec(id, _) => P::PublishReceived {
            packet_id: nz16(*id)?,
        },
        Outbound::PubRel(id, _) => P::PublishRelease {
            packet_id: nz16(*id)?,
        },
        Outbound::PubComp(id, _) => P::PublishComplete {
            packet_id: nz16(*id)?,
        },
        Outbound::SubAck(id, codes) => P::SubscribeAck {
            packet_id: nz16(*id)?,
            status: codes
                .iter()
                .map(|c| match c {
                    0..=2 => v3::SubscribeReturnCode::Success(to_qos(*c)),
                    _ => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Outbound::UnsubAck(id, _) => P::UnsubscribeAck {
            packet_id: nz16(*id)?,
        },
        Outbound::PingResp => P::PingResponse,
        Outbound::Disconnect(_) | Outbound::Auth(_) => {
            return Err(EncodeError::Invalid("no such packet in 3.1.1".into()))
        }
    })
}

fn to_v5(p: &Outbound) -> Result<v5::Packet, EncodeError> {
    use v5::Packet as P;
    let code = |c: u8| c;
    Ok(match p {
        Outbound::ConnAck(present, c, props) => P::ConnectAck(Box::new(v5::ConnectAck {
            session_present: *present,
            reason_code: v5::ConnectAckReason::try_from(code(*c))
                .unwrap_or(v5::ConnectAckReason::UnspecifiedError),
            session_expiry_interval_secs: props.session_expiry,
            receive_max: NonZeroU16::new(props.receive_max).unwrap_or(NonZeroU16::MAX),
            max_packet_size: props.max_packet_size,
            assigned_client_id: props.assigned_client_id.as_deref().map(Into::into),
            topic_alias_max: props.topic_alias_max,
            server_keepalive_sec: props.server_keep_alive,
            reason_string: props.reason.as_deref().map(Into::into),
            ..Default::default()
        })),
        Outbound::Publish(p) => P::Publish(Box::new(publish_out(p, true)?)),
        Outbound::PubAck(id, c) | Outbound::PubRec(id, c) => {
            let ack = v5::PublishAck {
                packet_id: nz16(*id)?,
                reason_code: v5::PublishAckReason::try_from(*c)
                    .unwrap_or(v5::PublishAckReason::UnspecifiedError),
                properties: Vec::new(),
                reason_string: None,
            };
            if matches!(p, Outbound::PubAck(..)) {
                P::PublishAck(ack)
            } else {
                P::PublishReceived(ack)
            }
        }
        Outbound::PubRel(id, c) | Outbound::PubComp(id, c) => {
            let ack = v5::PublishAck2 {
                packet_id: nz16(*id)?,
                reason_code: v5::PublishAck2Reason::try_from(*c)
                    .unwrap_or(v5::PublishAck2Reason::PacketIdNotFound),
                properties: Vec::new(),
                reason_string: None,
            };
            if matches!(p, Outbound::PubRel(..)) {
                P::PublishRelease(ack)
            } else {
                P::PublishComplete(ack)
            }
        }
        Outbound::SubAck(id, codes) => P::SubscribeAck(v5::SubscribeAck {
            packet_id: nz16(*id)?,
            properties: Vec::new(),
            reason_string: None,
            status: codes
                .iter()
                .map(|c| {
                    v5::SubscribeAckReason::try_from(*c)
                        .unwrap_or(v5::SubscribeAckReason::UnspecifiedError)
                })
                .collect(),
        }),
        Outbound::UnsubAck(id, codes) => P::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id: nz16(*id)?,
            properties: Vec::new(),
            reason_string: None,
            status: codes
                .iter()
                .map(|c| {
                    v5::UnsubscribeAckReason::try_from(*c)
                        .unwrap_or(v5::UnsubscribeAckReason::UnspecifiedError)
                })
                .collect(),
        }),
        Outbound::PingResp => P::PingResponse,
        Outbound::Disconnect(c) => P::Disconnect(v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::try_from(*c)
                .unwrap_or(v5::DisconnectReasonCode::UnspecifiedError),
            session_expiry_interval_secs: None,
            server_reference: None,
            reason_string: None,
            user_properties: Vec::new(),
        }),
        Outbound::Auth(c) => P::Auth(v5::Auth {
            reason_code: v5::AuthReasonCode::try_from(*c).unwrap_or(v5::AuthReasonCode::Success),
            ..Default::default()
        }),
    })
}
