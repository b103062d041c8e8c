//! Response framing: size prefix, response header, body encoded by `kafka-protocol`, plus the
//! hand-built ApiVersions v0 error answer that makes clients downgrade.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseKind;

use crate::errors::code;

/// Encodes one response frame (size prefix included).
pub fn encode_response(
    correlation_id: i32,
    version: i16,
    resp: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    if resp.header_version(version) >= 1 {
        buf.put_u8(0); // no tagged fields in the response header
    }
    resp.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// ApiVersions answer in the v0 format with UNSUPPORTED_VERSION, sent when a client asks with
/// a version this broker cannot parse; the list tells the client which version to retry with.
pub fn api_versions_fallback(correlation_id: i32, apis: &[(i16, i16, i16)]) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + apis.len() * 6);
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    buf.put_i16(code::UNSUPPORTED_VERSION);
    buf.put_i32(apis.len() as i32);
    for (k, min, max) in apis {
        buf.put_i16(*k);
        buf.put_i16(*min);
        buf.put_i16(*max);
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}
