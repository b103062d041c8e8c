//! The AMQP 0-9-1 wire: the protocol header, frame boundaries, and the frames the broker
//! writes. Method frames are decoded and encoded by amq-protocol; content header and body
//! frames are read and written here, so a message's property bytes and body travel without
//! being re-encoded.
//!
//! amq-protocol trusts what it reads: it buffers whatever size a frame header claims, and it
//! parses nested field tables recursively without a depth limit (a few kilobytes of nested
//! tables overflow the stack and abort the process). So every frame is checked here first:
//! its size against the negotiated `frame_max` from the 7-byte header alone, before anything
//! is buffered, and the tables of the methods and headers that carry them against a nesting
//! limit, before amq-protocol sees them.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::AMQPClass;

/// The only protocol header served: AMQP 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Last octet of every frame.
pub const FRAME_END: u8 = 0xCE;
/// Frame size allowed before `connection.tune-ok` (the spec's minimum frame_max).
pub const FRAME_MIN_SIZE: u32 = 8192;
/// Deepest nesting of field tables and arrays accepted.
pub const MAX_TABLE_DEPTH: u32 = 32;

/// Frame types.
pub mod frame_type {
    /// Method frame.
    pub const METHOD: u8 = 1;
    /// Content header frame.
    pub const HEADER: u8 = 2;
    /// Content body frame.
    pub const BODY: u8 = 3;
    /// Heartbeat frame.
    pub const HEARTBEAT: u8 = 8;
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameCheck {
    /// Not a whole frame yet: read more.
    NeedMore,
    /// A whole frame of this many bytes (header, payload, end octet).
    Complete(usize),
    /// The frame header announces a payload larger than `frame_max`.
    TooLarge(u32),
    /// Not a frame type of AMQP 0-9-1.
    BadType(u8),
    /// The frame does not end with 0xCE.
    BadEnd(u8),
}

/// Looks at the 7-byte header of the next frame before buffering its payload.
pub fn check_frame(buf: &[u8], frame_max: u32) -> FrameCheck {
    if buf.len() < 7 {
        return FrameCheck::NeedMore;
    }
    let ty = buf[0];
    if !matches!(ty, 1 | 2 | 3 | 8) {
        return FrameCheck::BadType(ty);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    // The payload may be frame_max - 8; RabbitMQ allows 8 bytes of slack, so does this.
    if frame_max != 0 && size > frame_max {
        return FrameCheck::TooLarge(size);
    }
    let total = 7 + size as usize + 1;
    if buf.len() < total {
        return FrameCheck::NeedMore;
    }
    if buf[total - 1] != FRAME_END {
        return FrameCheck::BadEnd(buf[total - 1]);
    }
    FrameCheck::Complete(total)
}

/// Channel of a whole frame.
pub fn channel_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[1], frame[2]])
}

/// Payload of a whole frame (between the header and the end octet).
pub fn payload(frame: &[u8]) -> &[u8] {
    &frame[7..frame.len() - 1]
}

fn rd_u32(b: &[u8], at: usize) -> Result<u32, &'static str> {
    let s = b.get(at..at + 4).ok_or("truncated length")?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Checks a field table (with its 4-byte length) without building it: well formed, and
/// nested at most `max` deep. Returns its size.
pub fn validate_table(b: &[u8], depth: u32, max: u32) -> Result<usize, &'static str> {
    if depth > max {
        return Err("field tables nested too deep");
    }
    let len = rd_u32(b, 0)? as usize;
    let body = b.get(4..4 + len).ok_or("truncated table")?;
    let mut i = 0;
    while i < body.len() {
        let klen = body[i] as usize;
        i += 1 + klen;
        if i > body.len() {
            return Err("truncated table key");
        }
        i += validate_value(&body[i..], depth, max)?;
    }
    Ok(4 + len)
}

fn validate_array(b: &[u8], depth: u32, max: u32) -> Result<usize, &'static str> {
    if depth > max {
        return Err("field arrays nested too deep");
    }
    let len = rd_u32(b, 0)? as usize;
    let body = b.get(4..4 + len).ok_or("truncated array")?;
    let mut i = 0;
    while i < body.len() {
        i += validate_value(&body[i..], depth, max)?;
    }
    Ok(4 + len)
}

/// Checks one typed value; returns its size with the type octet.
pub fn validate_value(b: &[u8], depth: u32, max: u32) -> Result<usize, &'static str> {
    let t = *b.first().ok_or("missing field type")?;
    let rest = &b[1..];
    let n = match t {
        b't' | b'b' | b'B' => 1,
        b's' | b'u' | b'U' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        b'S' | b'x' => 4 + rd_u32(rest, 0)? as usize,
        b'F' => validate_table(rest, depth + 1, max)?,
        b'A' => validate_array(rest, depth + 1, max)?,
        _ => return Err("unknown field type"),
    };
    if n > rest.len() {
        return Err("truncated field value");
    }
    Ok(1 + n)
}

/// A cursor over a method payload, for the few fields read before amq-protocol parses it.
struct Cur<'a>(&'a [u8], usize);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let s = self.0.get(self.1..self.1 + n).ok_or("truncated method")?;
        self.1 += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn sstr(&mut self) -> Result<(), &'static str> {
        let n = self.take(1)?[0] as usize;
        self.take(n).map(|_| ())
    }
}

/// Checks the field tables of a method or content header payload before it is parsed (the
/// nine methods with tables, and the `headers` property).
pub fn guard_payload(ty: u8, p: &[u8]) -> Result<(), &'static str> {
    let mut c = Cur(p, 0);
    let at = match ty {
        frame_type::METHOD => match (c.u16()?, c.u16()?) {
            (10, 10) => {
                c.take(2)?;
                Some(c.1)
            }
            (10, 11) => Some(c.1),
            (40, 10) => {
                c.u16()?;
                c.sstr()?;
                c.sstr()?;
                c.take(1)?;
                Some(c.1)
            }
            (40, 30) | (40, 40) | (50, 20) => {
                c.u16()?;
                c.sstr()?;
                c.sstr()?;
                c.sstr()?;
                c.take(1)?;
                Some(c.1)
            }
            (50, 10) => {
                c.u16()?;
                c.sstr()?;
                c.take(1)?;
                Some(c.1)
            }
            (50, 50) => {
                c.u16()?;
                c.sstr()?;
                c.sstr()?;
                c.sstr()?;
                Some(c.1)
            }
            (60, 20) => {
                c.u16()?;
                c.sstr()?;
                c.sstr()?;
                c.take(1)?;
                Some(c.1)
            }
            _ => None,
        },
        frame_type::HEADER => {
            c.take(12)?;
            let flags = c.u16()?;
            if flags & 0x8000 != 0 {
                c.sstr()?;
            }
            if flags & 0x4000 != 0 {
                c.sstr()?;
            }
            (flags & 0x2000 != 0).then_some(c.1)
        }
        _ => None,
    };
    if let Some(at) = at {
        validate_table(&p[at..], 1, MAX_TABLE_DEPTH)?;
    }
    Ok(())
}

/// Why a method frame could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum MethodError {
    /// A (class, method) this protocol does not have.
    Unknown(u16, u16),
    /// Fields that do not decode (truncated, bad UTF-8, trailing bytes, too deep).
    Malformed(u16, u16, &'static str),
}

/// Whether a (class, method) pair is one of AMQP 0-9-1's (amq-protocol decodes exactly these).
fn known_method(class: u16, method: u16) -> bool {
    matches!(
        (class, method),
        (
            10,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ) | (20, 10 | 11 | 20 | 21 | 40 | 41)
            | (30, 10 | 11)
            | (40, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51)
            | (50, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51)
            | (
                60,
                10 | 11
                    | 20
                    | 21
                    | 30
                    | 31
                    | 40
                    | 50
                    | 60
                    | 70
                    | 71
                    | 72
                    | 80
                    | 90
                    | 100
                    | 110
                    | 111
                    | 120
            )
            | (85, 10 | 11)
            | (90, 10 | 11 | 20 | 21 | 30 | 31)
    )
}

/// Decodes a whole method frame (checked by [`check_frame`]).
pub fn parse_method(frame: &[u8]) -> Result<AMQPClass, MethodError> {
    let p = payload(frame);
    if p.len() < 4 {
        return Err(MethodError::Malformed(0, 0, "method frame too short"));
    }
    let class = u16::from_be_bytes([p[0], p[1]]);
    let method = u16::from_be_bytes([p[2], p[3]]);
    if !known_method(class, method) {
        return Err(MethodError::Unknown(class, method));
    }
    guard_payload(frame_type::METHOD, p).map_err(|e| MethodError::Malformed(class, method, e))?;
    match parse_frame(frame) {
        Ok((&[], AMQPFrame::Method(_, m))) => Ok(m),
        _ => Err(MethodError::Malformed(class, method, "cannot decode")),
    }
}

/// A content header frame: the class, the body size, and the property bytes as sent
/// (flags first).
#[derive(Debug, Clone)]
pub struct ContentHeader {
    /// Class id (60 for basic).
    pub class_id: u16,
    /// Total body size.
    pub body_size: u64,
    /// Property flags and fields, as sent.
    pub properties: bytes::Bytes,
}

/// Reads a content header frame's payload (the properties are checked by
/// [`crate::props::Props::parse`] when used).
pub fn parse_header(p: &bytes::Bytes) -> Result<ContentHeader, &'static str> {
    if p.len() < 14 {
        return Err("content header too short");
    }
    guard_payload(frame_type::HEADER, p)?;
    let class_id = u16::from_be_bytes([p[0], p[1]]);
    let body_size = u64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]]);
    Ok(ContentHeader {
        class_id,
        body_size,
        properties: p.slice(12..),
    })
}

/// Appends a method frame.
pub fn put_method(out: &mut Vec<u8>, channel: u16, method: AMQPClass) {
    let frame = AMQPFrame::Method(channel, method);
    let buf = std::mem::take(out);
    let res = gen_frame(&frame)(WriteContext::from(buf)).map(|ctx| ctx.into_inner().0);
    match res {
        Ok(v) => *out = v,
        // Only the broker's own values are encoded here; a failure is a bug worth a log line.
        Err(e) => tracing::error!(error = %e, ?frame, "cannot encode a method frame"),
    }
}

fn put_frame_header(out: &mut Vec<u8>, ty: u8, channel: u16, size: usize) {
    out.push(ty);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(size as u32).to_be_bytes());
}

/// Appends a content header frame (class basic) with `properties` as they are (flags
/// first), then the body split into frames of at most `frame_max - 8` bytes.
pub fn put_content(
    out: &mut Vec<u8>,
    channel: u16,
    properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    out.reserve(7 + 12 + properties.len() + 1 + body.len() + 8 * (1 + body.len() / 4096));
    put_frame_header(out, frame_type::HEADER, channel, 12 + properties.len());
    out.extend_from_slice(&60u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(properties);
    out.push(FRAME_END);
    let chunk = if frame_max == 0 {
        usize::MAX
    } else {
        (frame_max as usize).saturating_sub(8).max(1)
    };
    for part in body.chunks(chunk) {
        put_frame_header(out, frame_type::BODY, channel, part.len());
        out.extend_from_slice(part);
        out.push(FRAME_END);
    }
}

/// Appends a heartbeat frame.
pub fn put_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[frame_type::HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, queue};

    fn nested(depth: usize) -> Vec<u8> {
        let mut t: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 0..depth {
            let mut e = vec![1u8, b'k', b'F'];
            e.extend_from_slice(&t);
            let mut n = (e.len() as u32).to_be_bytes().to_vec();
            n.extend_from_slice(&e);
            t = n;
        }
        t
    }

    fn declare_with(args: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        p.extend_from_slice(args);
        let mut f = vec![1, 0, 1];
        f.extend_from_slice(&(p.len() as u32).to_be_bytes());
        f.extend_from_slice(&p);
        f.push(FRAME_END);
        f
    }

    #[test]
    fn frame_size_is_checked_before_buffering() {
        assert_eq!(
            check_frame(&[1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF], 131072),
            FrameCheck::TooLarge(u32::MAX)
        );
        assert_eq!(
            check_frame(&[b'A', b'M', b'Q', b'P', 0, 0, 9], 8192),
            FrameCheck::BadType(b'A')
        );
        assert_eq!(
            check_frame(&[1, 0, 1, 0, 0, 0, 1, 9, 0], 8192),
            FrameCheck::BadEnd(0)
        );
        assert_eq!(check_frame(&[8, 0, 0, 0, 0, 0], 8192), FrameCheck::NeedMore);
    }

    #[test]
    fn deep_tables_are_refused_before_parsing() {
        let f = declare_with(&nested(10_000));
        assert!(matches!(
            parse_method(&f),
            Err(MethodError::Malformed(50, 10, _))
        ));
        let f = declare_with(&nested(5));
        assert!(matches!(
            parse_method(&f),
            Ok(AMQPClass::Queue(queue::AMQPMethod::Declare(_)))
        ));
        let mut hp = vec![0u8, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 0];
        hp.extend(nested(3000));
        assert!(parse_header(&bytes::Bytes::from(hp)).is_err());
    }

    #[test]
    fn unknown_methods_are_named() {
        let f = [1u8, 0, 1, 0, 0, 0, 4, 0, 60, 0, 99, FRAME_END];
        assert_eq!(parse_method(&f), Err(MethodError::Unknown(60, 99)));
        let f = [1u8, 0, 1, 0, 0, 0, 2, 0, 60, FRAME_END];
        assert!(matches!(parse_method(&f), Err(MethodError::Malformed(..))));
    }

    #[test]
    fn content_is_split_by_frame_max() {
        let mut out = Vec::new();
        put_method(
            &mut out,
            1,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "t".into(),
                delivery_tag: 1,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
            })),
        );
        let body = vec![7u8; 300_000];
        put_content(&mut out, 1, &[0, 0], &body, 131072);
        let mut rest: &[u8] = &out;
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            let (r, f) = parse_frame(rest).expect("frame");
            if let AMQPFrame::Body(_, b) = f {
                sizes.push(b.len());
            }
            rest = r;
        }
        assert_eq!(sizes, vec![131064, 131064, 37872]);
    }
}
