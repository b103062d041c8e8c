//! AMQP basic properties ↔ record headers, by the one table in `docs/mapping.md`.
//!
//! A publish becomes a record whose headers other protocols read: `content-type`,
//! `correlation-id`, `reply-to` and `expires-at` under the shared names of
//! [`core_stream::headers`], the AMQP-only properties as `amqp-…` headers, and each entry of
//! the `headers` table as a header of its own name (strings as they are, numbers and booleans
//! as text), in order.
//!
//! An AMQP consumer must get the properties exactly as published (typed table values,
//! `expiration` as sent). When the headers cannot carry them exactly (a non-string table
//! value, an `expiration`, a table key that is also a property name), the property bytes as
//! sent ride along in one more header, `amqp-properties`, and are delivered verbatim.
//! Otherwise the properties are rebuilt from the headers on delivery, as they are for records
//! written by Kafka and MQTT clients.

use bytes::{BufMut, Bytes, BytesMut};
use core_stream::headers;

/// Header with the AMQP property bytes as published (flags first), when the other headers
/// cannot carry them exactly.
pub const PROPERTIES_HEADER: &str = "amqp-properties";
/// `content-encoding`.
pub const CONTENT_ENCODING: &str = "amqp-content-encoding";
/// `delivery-mode` (1 transient, 2 persistent).
pub const DELIVERY_MODE: &str = "amqp-delivery-mode";
/// `priority`.
pub const PRIORITY: &str = "amqp-priority";
/// `message-id`.
pub const MESSAGE_ID: &str = "amqp-message-id";
/// `timestamp` (seconds since the epoch).
pub const TIMESTAMP: &str = "amqp-timestamp";
/// `type`.
pub const TYPE: &str = "amqp-type";
/// `user-id`.
pub const USER_ID: &str = "amqp-user-id";
/// `app-id`.
pub const APP_ID: &str = "amqp-app-id";
/// `cluster-id`.
pub const CLUSTER_ID: &str = "amqp-cluster-id";
/// Headers-table entry whose value becomes the record key (partitioning, compaction).
pub const KEY_ENTRY: &str = "x-key";

const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;
const FLAG_DELIVERY_MODE: u16 = 1 << 12;
const FLAG_PRIORITY: u16 = 1 << 11;
const FLAG_CORRELATION_ID: u16 = 1 << 10;
const FLAG_REPLY_TO: u16 = 1 << 9;
const FLAG_EXPIRATION: u16 = 1 << 8;
const FLAG_MESSAGE_ID: u16 = 1 << 7;
const FLAG_TIMESTAMP: u16 = 1 << 6;
const FLAG_TYPE: u16 = 1 << 5;
const FLAG_USER_ID: u16 = 1 << 4;
const FLAG_APP_ID: u16 = 1 << 3;
const FLAG_CLUSTER_ID: u16 = 1 << 2;

/// The properties of one message, as views into the bytes it was sent with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// `content-type`.
    pub content_type: Option<Bytes>,
    /// `content-encoding`.
    pub content_encoding: Option<Bytes>,
    /// `headers`: the field table with its 4-byte length.
    pub headers: Option<Bytes>,
    /// `delivery-mode`.
    pub delivery_mode: Option<u8>,
    /// `priority`.
    pub priority: Option<u8>,
    /// `correlation-id`.
    pub correlation_id: Option<Bytes>,
    /// `reply-to`.
    pub reply_to: Option<Bytes>,
    /// `expiration` (milliseconds, decimal text).
    pub expiration: Option<Bytes>,
    /// `message-id`.
    pub message_id: Option<Bytes>,
    /// `timestamp` (seconds).
    pub timestamp: Option<u64>,
    /// `type`.
    pub kind: Option<Bytes>,
    /// `user-id`.
    pub user_id: Option<Bytes>,
    /// `app-id`.
    pub app_id: Option<Bytes>,
    /// `cluster-id`.
    pub cluster_id: Option<Bytes>,
    /// More property flag words followed the first (not defined for class basic).
    pub extended: bool,
}

struct Reader<'a> {
    b: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<Bytes, &'static str> {
        if self.at + n > self.b.len() {
            return Err("truncated properties");
        }
        let s = self.b.slice(self.at..self.at + n);
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn sstr(&mut self) -> Result<Bytes, &'static str> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn table(&mut self) -> Result<Bytes, &'static str> {
        let n = crate::wire::validate_table(&self.b[self.at..], 1, crate::wire::MAX_TABLE_DEPTH)?;
        self.take(n)
    }
}

impl Props {
    /// Reads property bytes (flags first) as a content header carries them.
    pub fn parse(raw: &Bytes) -> Result<Props, &'static str> {
        let mut r = Reader { b: raw, at: 0 };
        let flags = r.u16()?;
        let mut p = Props::default();
        let mut more = flags & 1 != 0;
        while more {
            p.extended = true;
            more = r.u16()? & 1 != 0;
        }
        let opt = |f: u16| flags & f != 0;
        if opt(FLAG_CONTENT_TYPE) {
            p.content_type = Some(r.sstr()?);
        }
        if opt(FLAG_CONTENT_ENCODING) {
            p.content_encoding = Some(r.sstr()?);
        }
        if opt(FLAG_HEADERS) {
            p.headers = Some(r.table()?);
        }
        if opt(FLAG_DELIVERY_MODE) {
            p.delivery_mode = Some(r.u8()?);
        }
        if opt(FLAG_PRIORITY) {
            p.priority = Some(r.u8()?);
        }
        if opt(FLAG_CORRELATION_ID) {
            p.correlation_id = Some(r.sstr()?);
        }
        if opt(FLAG_REPLY_TO) {
            p.reply_to = Some(r.sstr()?);
        }
        if opt(FLAG_EXPIRATION) {
            p.expiration = Some(r.sstr()?);
        }
        if opt(FLAG_MESSAGE_ID) {
            p.message_id = Some(r.sstr()?);
        }
        if opt(FLAG_TIMESTAMP) {
            let s = r.take(8)?;
            p.timestamp = Some(u64::from_be_bytes(s[..].try_into().unwrap_or([0; 8])));
        }
        if opt(FLAG_TYPE) {
            p.kind = Some(r.sstr()?);
        }
        if opt(FLAG_USER_ID) {
            p.user_id = Some(r.sstr()?);
        }
        if opt(FLAG_APP_ID) {
            p.app_id = Some(r.sstr()?);
        }
        if opt(FLAG_CLUSTER_ID) {
            p.cluster_id = Some(r.sstr()?);
        }
        if r.at != raw.len() {
            return Err("trailing bytes after the properties");
        }
        Ok(p)
    }

    /// Writes the properties (flags first).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        let mut flags = 0u16;
        let set = |f: &mut u16, bit: u16, present: bool| {
            if present {
                *f |= bit;
            }
        };
        set(&mut flags, FLAG_CONTENT_TYPE, self.content_type.is_some());
        set(
            &mut flags,
            FLAG_CONTENT_ENCODING,
            self.content_encoding.is_some(),
        );
        set(&mut flags, FLAG_HEADERS, self.headers.is_some());
        set(&mut flags, FLAG_DELIVERY_MODE, self.delivery_mode.is_some());
        set(&mut flags, FLAG_PRIORITY, self.priority.is_some());
        set(
            &mut flags,
            FLAG_CORRELATION_ID,
            self.correlation_id.is_some(),
        );
        set(&mut flags, FLAG_REPLY_TO, self.reply_to.is_some());
        set(&mut flags, FLAG_EXPIRATION, self.expiration.is_some());
        set(&mut flags, FLAG_MESSAGE_ID, self.message_id.is_some());
        set(&mut flags, FLAG_TIMESTAMP, self.timestamp.is_some());
        set(&mut flags, FLAG_TYPE, self.kind.is_some());
        set(&mut flags, FLAG_USER_ID, self.user_id.is_some());
        set(&mut flags, FLAG_APP_ID, self.app_id.is_some());
        set(&mut flags, FLAG_CLUSTER_ID, self.cluster_id.is_some());
        b.put_u16(flags);
        let sstr = |b: &mut BytesMut, v: &Option<Bytes>| {
            if let Some(v) = v {
                let v = &v[..v.len().min(255)];
                b.put_u8(v.len() as u8);
                b.put_slice(v);
            }
        };
        sstr(&mut b, &self.content_type);
        sstr(&mut b, &self.content_encoding);
        if let Some(h) = &self.headers {
            b.put_slice(h);
        }
        if let Some(m) = self.delivery_mode {
            b.put_u8(m);
        }
        if let Some(p) = self.priority {
            b.put_u8(p);
        }
        sstr(&mut b, &self.correlation_id);
        sstr(&mut b, &self.reply_to);
        sstr(&mut b, &self.expiration);
        sstr(&mut b, &self.message_id);
        if let Some(t) = self.timestamp {
            b.put_u64(t);
        }
        sstr(&mut b, &self.kind);
        sstr(&mut b, &self.user_id);
        sstr(&mut b, &self.app_id);
        sstr(&mut b, &self.cluster_id);
        b.freeze()
    }

    /// Milliseconds of `expiration`, if it is set and valid (RabbitMQ refuses others).
    pub fn expiration_ms(&self) -> Result<Option<i64>, String> {
        let Some(e) = &self.expiration else {
            return Ok(None);
        };
        let s = String::from_utf8_lossy(e);
        match s.parse::<i64>() {
            Ok(v) if v >= 0 => Ok(Some(v)),
            Ok(v) => Err(format!("invalid expiration '{s}': {{value_negative,{v}}}")),
            Err(_) => Err(format!("invalid expiration '{s}': no_integer")),
        }
    }
}

/// One entry of a field table: its key, type octet and value bytes (after the type).
pub struct Entry<'a> {
    /// Key.
    pub key: &'a [u8],
    /// Type octet.
    pub ty: u8,
    /// Value bytes (a long string's without its length).
    pub value: &'a [u8],
}

/// Walks a field table (with its length; already validated). Entries come in wire order.
pub fn entries(table: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    let len = table
        .get(..4)
        .map_or(0, |l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
    let body = table.get(4..4 + len).unwrap_or(&[]);
    let mut i = 0;
    std::iter::from_fn(move || {
        let klen = *body.get(i)? as usize;
        let key = body.get(i + 1..i + 1 + klen)?;
        i += 1 + klen;
        let n =
            crate::wire::validate_value(body.get(i..)?, 1, crate::wire::MAX_TABLE_DEPTH).ok()?;
        let ty = body[i];
        let mut value = &body[i + 1..i + n];
        if matches!(ty, b'S' | b'x') {
            value = &value[4..];
        }
        i += n;
        Some(Entry { key, ty, value })
    })
}

fn be<const N: usize>(v: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&v[..N]);
    a
}

/// A table value as header text: strings and bytes as they are, numbers and booleans as
/// decimal text, void as no value. Tables and arrays have no text form (`None` outside).
pub fn render(ty: u8, v: &[u8]) -> Option<Option<Bytes>> {
    let text = |s: String| Some(Some(Bytes::from(s)));
    match ty {
        b'S' | b'x' => Some(Some(Bytes::copy_from_slice(v))),
        b't' => text(if v[0] != 0 { "true" } else { "false" }.into()),
        b'b' => text((v[0] as i8).to_string()),
        b'B' => text(v[0].to_string()),
        b's' | b'U' => text(i16::from_be_bytes(be(v)).to_string()),
        b'u' => text(u16::from_be_bytes(be(v)).to_string()),
        b'I' => text(i32::from_be_bytes(be(v)).to_string()),
        b'i' => text(u32::from_be_bytes(be(v)).to_string()),
        b'l' | b'L' => text(i64::from_be_bytes(be(v)).to_string()),
        b'T' => text(u64::from_be_bytes(be(v)).to_string()),
        b'f' => text(f32::from_be_bytes(be(v)).to_string()),
        b'd' => text(f64::from_be_bytes(be(v)).to_string()),
        b'D' => {
            let scale = v[0] as u32;
            let n = u32::from_be_bytes(be(&v[1..]));
            let s = n.to_string();
            if scale == 0 {
                text(s)
            } else {
                let s = format!("{s:0>width$}", width = scale as usize + 1);
                let (a, b) = s.split_at(s.len() - scale as usize);
                text(format!("{a}.{b}"))
            }
        }
        b'V' => Some(None),
        _ => None,
    }
}

/// A table value as a signed integer, when it is one.
pub fn as_int(ty: u8, v: &[u8]) -> Option<i64> {
    Some(match ty {
        b'b' => v[0] as i8 as i64,
        b'B' => v[0] as i64,
        b's' | b'U' => i16::from_be_bytes(be(v)) as i64,
        b'u' => u16::from_be_bytes(be(v)) as i64,
        b'I' => i32::from_be_bytes(be(v)) as i64,
        b'i' => u32::from_be_bytes(be(v)) as i64,
        b'l' | b'L' => i64::from_be_bytes(be(v)),
        b'T' => u64::from_be_bytes(be(v)) as i64,
        _ => return None,
    })
}

/// Names a header-table key may not take without the properties riding along verbatim
/// (they would be read back as properties).
fn reserved(key: &[u8]) -> bool {
    headers::is_property(key) || key.starts_with(b"amqp-") || key.starts_with(b"mqtt-")
}

type Headers = Vec<(Bytes, Option<Bytes>)>;

fn h(name: &'static str, v: Bytes) -> (Bytes, Option<Bytes>) {
    (Bytes::from_static(name.as_bytes()), Some(v))
}

/// What a publish's properties become in its record.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Record headers.
    pub headers: Headers,
    /// Record key (the `x-key` headers entry).
    pub key: Option<Bytes>,
    /// When the message expires (ms since the epoch), from `expiration`.
    pub expires_at: Option<i64>,
}

/// The record headers of a publish with these properties (`raw` = the bytes as sent).
pub fn to_record(p: &Props, raw: &Bytes, now_ms: i64) -> Recorded {
    let mut out = Recorded::default();
    let hs = &mut out.headers;
    let mut lossy = p.extended || p.expiration.is_some();
    if let Some(v) = &p.content_type {
        hs.push(h(headers::CONTENT_TYPE, v.clone()));
    }
    if let Some(v) = &p.content_encoding {
        hs.push(h(CONTENT_ENCODING, v.clone()));
    }
    if let Some(v) = p.delivery_mode {
        hs.push(h(DELIVERY_MODE, Bytes::from(v.to_string())));
    }
    if let Some(v) = p.priority {
        hs.push(h(PRIORITY, Bytes::from(v.to_string())));
    }
    if let Some(v) = &p.correlation_id {
        hs.push(h(headers::CORRELATION_ID, v.clone()));
    }
    if let Some(v) = &p.reply_to {
        hs.push(h(headers::REPLY_TO, v.clone()));
    }
    if let Ok(Some(ms)) = p.expiration_ms() {
        let at = now_ms.saturating_add(ms);
        out.expires_at = Some(at);
        hs.push(h(headers::EXPIRES_AT, Bytes::from(at.to_string())));
    }
    if let Some(v) = &p.message_id {
        hs.push(h(MESSAGE_ID, v.clone()));
    }
    if let Some(v) = p.timestamp {
        hs.push(h(TIMESTAMP, Bytes::from(v.to_string())));
    }
    if let Some(v) = &p.kind {
        hs.push(h(TYPE, v.clone()));
    }
    if let Some(v) = &p.user_id {
        hs.push(h(USER_ID, v.clone()));
    }
    if let Some(v) = &p.app_id {
        hs.push(h(APP_ID, v.clone()));
    }
    if let Some(v) = &p.cluster_id {
        hs.push(h(CLUSTER_ID, v.clone()));
    }
    if let Some(t) = &p.headers {
        for e in entries(t) {
            if e.ty != b'S' || reserved(e.key) {
                lossy = true;
            }
            let Some(v) = render(e.ty, e.value) else {
                continue;
            };
            if e.key == KEY_ENTRY.as_bytes() {
                out.key = v.clone();
            }
            hs.push((Bytes::copy_from_slice(e.key), v));
        }
    }
    if lossy {
        hs.push(h(PROPERTIES_HEADER, raw.clone()));
    }
    out
}

fn parse_num<T: std::str::FromStr>(v: &Option<Bytes>) -> Option<T> {
    std::str::from_utf8(v.as_deref()?).ok()?.parse().ok()
}

/// The property bytes to deliver a record with: the published ones when the record carries
/// them, else rebuilt from its headers (records from Kafka and MQTT clients, and AMQP
/// publishes the headers carry exactly). An `expires-at` becomes the `expiration` left.
pub fn for_delivery(record_headers: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Bytes {
    if let Some((_, Some(raw))) = record_headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == PROPERTIES_HEADER.as_bytes())
    {
        return raw.clone();
    }
    let mut p = Props::default();
    let mut table = BytesMut::new();
    for (k, v) in record_headers {
        let name = std::str::from_utf8(k).unwrap_or("");
        match name {
            headers::CONTENT_TYPE => p.content_type = v.clone(),
            headers::CORRELATION_ID => p.correlation_id = v.clone(),
            headers::REPLY_TO => p.reply_to = v.clone(),
            headers::EXPIRES_AT => {
                if let Some(at) = parse_num::<i64>(v) {
                    p.expiration = Some(Bytes::from((at - now_ms).max(0).to_string()));
                }
            }
            headers::PAYLOAD_FORMAT => {}
            CONTENT_ENCODING => p.content_encoding = v.clone(),
            DELIVERY_MODE => p.delivery_mode = parse_num(v),
            PRIORITY => p.priority = parse_num(v),
            MESSAGE_ID => p.message_id = v.clone(),
            TIMESTAMP => p.timestamp = parse_num(v),
            TYPE => p.kind = v.clone(),
            USER_ID => p.user_id = v.clone(),
            APP_ID => p.app_id = v.clone(),
            CLUSTER_ID => p.cluster_id = v.clone(),
            _ if k.starts_with(b"mqtt-") || k.starts_with(b"amqp-") || k.len() > 255 => {}
            _ => {
                table.put_u8(k.len() as u8);
                table.put_slice(k);
                match v {
                    Some(v) => {
                        table.put_u8(b'S');
                        table.put_u32(v.len() as u32);
                        table.put_slice(v);
                    }
                    None => table.put_u8(b'V'),
                }
            }
        }
    }
    if !table.is_empty() {
        let mut t = BytesMut::with_capacity(4 + table.len());
        t.put_u32(table.len() as u32);
        t.put_slice(&table);
        p.headers = Some(t.freeze());
    }
    p.encode()
}

/// Builds a field table (with its length) from `(key, type, value bytes)` entries; long
/// strings and byte arrays get their length prefix here.
pub fn build_table<'a>(items: impl IntoIterator<Item = (&'a [u8], u8, &'a [u8])>) -> Bytes {
    let mut body = BytesMut::new();
    for (k, ty, v) in items {
        let k = &k[..k.len().min(255)];
        body.put_u8(k.len() as u8);
        body.put_slice(k);
        body.put_u8(ty);
        if matches!(ty, b'S' | b'x') {
            body.put_u32(v.len() as u32);
        }
        body.put_slice(v);
    }
    let mut t = BytesMut::with_capacity(4 + body.len());
    t.put_u32(body.len() as u32);
    t.put_slice(&body);
    t.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(p: &Props) -> Bytes {
        p.encode()
    }

    #[test]
    fn string_headers_round_trip_through_record_headers() {
        let table = build_table([(&b"tenant"[..], b'S', &b"acme"[..]), (b"a", b'S', b"1")]);
        let p = Props {
            content_type: Some(Bytes::from_static(b"application/json")),
            delivery_mode: Some(2),
            correlation_id: Some(Bytes::from_static(b"c-1")),
            headers: Some(table),
            ..Default::default()
        };
        let r = to_record(&p, &raw(&p), 1000);
        assert!(r
            .headers
            .iter()
            .all(|(k, _)| k.as_ref() != PROPERTIES_HEADER.as_bytes()));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k.as_ref() == b"tenant" && v.as_deref() == Some(&b"acme"[..])));
        let back = for_delivery(&r.headers, 1000);
        assert_eq!(Props::parse(&back).unwrap(), p);
    }

    #[test]
    fn typed_tables_and_expiration_ride_along_verbatim() {
        let table = build_table([(&b"n"[..], b'I', &7i32.to_be_bytes()[..])]);
        let p = Props {
            headers: Some(table),
            expiration: Some(Bytes::from_static(b"60000")),
            ..Default::default()
        };
        let bytes = raw(&p);
        let r = to_record(&p, &bytes, 1000);
        assert_eq!(r.expires_at, Some(61000));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k.as_ref() == b"n" && v.as_deref() == Some(&b"7"[..])));
        assert_eq!(for_delivery(&r.headers, 5000), bytes);
    }

    #[test]
    fn records_without_properties_get_none() {
        let out = for_delivery(&[], 0);
        assert_eq!(&out[..], &[0, 0]);
        let p = Props::parse(&out).unwrap();
        assert!(p.headers.is_none());
        let kafka = vec![
            (
                Bytes::from_static(b"trace"),
                Some(Bytes::from_static(b"t1")),
            ),
            (
                Bytes::from_static(b"mqtt-qos"),
                Some(Bytes::from_static(b"1")),
            ),
            (
                Bytes::from_static(b"expires-at"),
                Some(Bytes::from_static(b"3000")),
            ),
        ];
        let p = Props::parse(&for_delivery(&kafka, 1000)).unwrap();
        assert_eq!(p.expiration.as_deref(), Some(&b"2000"[..]));
        let t = p.headers.unwrap();
        let e: Vec<_> = entries(&t)
            .map(|e| (e.key.to_vec(), e.value.to_vec()))
            .collect();
        assert_eq!(e, vec![(b"trace".to_vec(), b"t1".to_vec())]);
    }

    #[test]
    fn bad_properties_are_refused() {
        assert!(Props::parse(&Bytes::from_static(&[0x80, 0, 5, b'a'])).is_err());
        assert!(Props::parse(&Bytes::from_static(&[0, 0, 1])).is_err());
        assert_eq!(
            render(b'D', &[2, 0, 0, 0, 5]),
            Some(Some(Bytes::from("0.05")))
        );
    }
}
